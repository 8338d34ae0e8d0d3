"""Golden diagnostics: each tests/policy/golden/<case>.yaml, loaded with the shipped
vocabulary, must print exactly <case>.expected.txt.

Regenerate after an intended change with `JURISGATE_UPDATE_GOLDEN=1 pytest tests/policy`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import format_diagnostics
from gateway.policy import load_policy_set
from tests.policy.conftest import HERE, VOCABULARY

GOLDEN = HERE / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_golden_diagnostics(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN)
    vocabulary = Path(os.path.relpath(VOCABULARY, GOLDEN))
    result = load_policy_set([vocabulary, Path(f"{case}.yaml")])
    assert result.policy_set is None
    got = format_diagnostics(result.diagnostics, cap=None) + "\n"
    expected = GOLDEN / f"{case}.expected.txt"
    if os.environ.get("JURISGATE_UPDATE_GOLDEN"):
        expected.write_text(got, encoding="utf-8")
    assert got == expected.read_text(encoding="utf-8")


def test_every_golden_case_has_its_expectation() -> None:
    assert CASES and all((GOLDEN / f"{c}.expected.txt").exists() for c in CASES)
