"""The case files next to the shipped packs pass (what `jurisgate policy test policies/` runs),
and the case runner reports what it should."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import PolicySet
from gateway.policy.cases import check_case, load_case_file
from gateway.policy.loader import discover_files
from tests.policy.conftest import POLICIES

CASE_FILES = [f.path for f in discover_files([POLICIES], cases=True)[0]]


def test_every_regime_folder_has_cases() -> None:
    folders = {p.parent.name for p in CASE_FILES}
    assert folders >= {"sanctions", "licensing", "eu", "cn", "us", "br", "in", "ru"}


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.parent.name for p in CASE_FILES])
def test_shipped_cases_pass(shipped: PolicySet, path: Path) -> None:
    case_file = load_case_file(path)
    assert case_file.ok, [d.text() for d in case_file.diagnostics]
    for case in case_file.cases:
        result = check_case(shipped, case)
        assert result.passed, (
            case.label,
            result.failures,
            result.decision.explanation.text() if result.decision.explanation else "",
        )


def test_failures_are_described(shipped: PolicySet, tmp_path: Path) -> None:
    path = tmp_path / "x.cases.yaml"
    path.write_text(
        """
kind: cases
defaults: {context: {now: "2026-11-28T10:00:00Z", caller: {region: IR}}}
cases:
  - name: wrong on purpose
    context: {}
    want:
      effect: allow
      status: 200
      rules: [nope]
      legal_basis: [{regime: GDPR, ref: "Art. 1"}]
      remedy_mentions: X-Consent
      obligations: {routing: {backends: [x]}}
""",
        encoding="utf-8",
    )
    (case,) = load_case_file(path).cases
    failures = check_case(shipped, case).failures
    assert [f.split(":")[0] for f in failures] == [
        "effect",
        "status",
        "rules",
        "legal_basis",
        "problem",
        "obligations.routing",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: cases\ncases: []\n", "`cases` must be a non-empty list"),
        (
            "kind: cases\ncases:\n  - {name: a, context: {}, want: {efect: allow}}\n",
            "unknown expectation `efect`",
        ),
        (
            "kind: cases\ncases:\n  - {name: a, context: {caller: {region: NO}}, want: {}}\n",
            "context False is not of type 'string', 'null'",
        ),
        (
            "kind: cases\ncases:\n  - {name: a, context: {now: 5}, want: {}}\n",
            "context 5 is not of type 'string'",
        ),
        ("kind: cases\ncases:\n  - {name: a, want: {}}\n", "case is missing `context`"),
    ],
)
def test_broken_case_files_are_diagnosed(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.cases.yaml"
    path.write_text(text, encoding="utf-8")
    case_file = load_case_file(path)
    assert not case_file.ok
    assert any(message in d.message for d in case_file.diagnostics), [
        d.text() for d in case_file.diagnostics
    ]
    assert all(d.location is not None and d.location.line >= 1 for d in case_file.diagnostics)
