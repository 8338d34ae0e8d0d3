"""The editor JSON Schema accepts every shipped file and rejects typical mistakes; the
context schema accepts the scenario contexts."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.policy import context_json_schema, policy_json_schema
from gateway.policy.cases import load_case_file, to_json_data
from tests.policy.conftest import HERE, POLICIES

POLICY_VALIDATOR = jsonschema.Draft202012Validator(policy_json_schema())
CONTEXT_VALIDATOR = jsonschema.Draft202012Validator(context_json_schema())
FILES = sorted(POLICIES.rglob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(POLICIES).as_posix() for p in FILES])
def test_shipped_files_match_the_editor_schema(path: Path) -> None:
    data = to_json_data(yaml.safe_load(path.read_text(encoding="utf-8")))
    errors = [e.message for e in POLICY_VALIDATOR.iter_errors(data)]
    assert not errors, errors[:3]


@pytest.mark.parametrize(
    "rule",
    [
        {"id": "x", "effect": "alow"},
        {"id": "x", "effect": "deny", "when": {"caller.region": {"inn": ["EU"]}}},
        {"id": "x", "effect": "deny", "colour": "red"},
        {"id": "X Y", "effect": "deny"},
    ],
)
def test_editor_schema_rejects_mistakes(rule: dict[str, object]) -> None:
    doc = {"kind": "pack", "id": "p", "rules": [rule]}
    assert not POLICY_VALIDATOR.is_valid(doc)


def test_a_mistake_is_reported_inside_its_document_kind() -> None:
    doc = {"kind": "pack", "id": "p", "rules": [{"id": "x", "effect": "alow"}]}
    error = jsonschema.exceptions.best_match(POLICY_VALIDATOR.iter_errors(doc))
    assert error is not None
    assert list(error.absolute_path) == ["rules", 0, "effect"], error.message
    unknown = jsonschema.exceptions.best_match(POLICY_VALIDATOR.iter_errors({"kind": "pak"}))
    assert unknown is not None and list(unknown.absolute_path) == ["kind"]


def test_scenario_contexts_match_the_context_schema() -> None:
    cases = load_case_file(HERE / "scenario_contexts.yaml").cases
    assert cases
    for case in cases:
        assert CONTEXT_VALIDATOR.is_valid(case.context), case.id
