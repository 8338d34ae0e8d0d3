"""Fixtures for the policy engine tests: the shipped packs and small synthetic pack sets."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.policy import PolicySet, load_policy_set

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
VOCABULARY = POLICIES / "vocabulary.yaml"
HERE = Path(__file__).resolve().parent

#: A context most synthetic tests start from (every section present, nothing special).
BASE_CONTEXT: dict[str, Any] = {
    "now": "2026-11-28T10:00:00Z",
    "caller": {
        "tenant": "t1",
        "established_in": "DE",
        "region": "DE",
        "region_claims": [],
        "registered_purposes": ["product_catalog_tagging"],
        "flags": {},
    },
    "subject": {"region": None, "citizenship": None, "age": None},
    "request": {
        "model": "m1",
        "method": "predict",
        "purpose": "product_catalog_tagging",
        "consents": [],
        "personal_data": [],
    },
    "licence": {"id": "L1", "model": "m1", "commercial_use": "allowed"},
    "model": {"id": "m1", "kind": "classifier", "output": "labels"},
    "backends": [
        {"id": "be-de", "region": "DE", "transfer_mechanisms": []},
        {"id": "be-us", "region": "US", "transfer_mechanisms": []},
    ],
    "sinks": [],
}


def context(**sections: Any) -> dict[str, Any]:
    """BASE_CONTEXT with sections shallow-merged (`caller={"region": "IR"}`)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_CONTEXT.items()}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


@pytest.fixture(scope="session")
def shipped() -> PolicySet:
    """The shipped policy packs, compiled once per session."""
    result = load_policy_set([POLICIES])
    assert result.policy_set is not None, [d.text() for d in result.diagnostics]
    return result.policy_set


PackWriter = Callable[..., Path]


@pytest.fixture
def write_packs(tmp_path: Path) -> PackWriter:
    """Write YAML documents into a fresh policy directory with the shipped vocabulary.

    Usage: `write_packs(main="kind: pack ...", settings="kind: settings ...")`; returns the
    directory. Text is dedented.
    """

    def write(*, vocabulary: str | None = None, **files: str) -> Path:
        root = tmp_path / "policies"
        root.mkdir(exist_ok=True)
        (root / "vocabulary.yaml").write_text(
            textwrap.dedent(vocabulary)
            if vocabulary is not None
            else VOCABULARY.read_text(encoding="utf-8"),
            encoding="utf-8",
        )
        for name, text in files.items():
            (root / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
        return root

    return write


@pytest.fixture
def compile_packs(write_packs: PackWriter) -> Callable[..., PolicySet]:
    """Write packs (see `write_packs`) and compile them; fails the test on diagnostics."""

    def build(**files: str) -> PolicySet:
        result = load_policy_set([write_packs(**files)])
        assert result.policy_set is not None, "\n".join(d.text() for d in result.diagnostics)
        return result.policy_set

    return build
