"""The schemas committed under `schemas/` are the generated ones, and the shipped files
validate against them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.config.json_schemas import SCHEMAS, render

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_matches_the_generated_one(name: str) -> None:
    committed = ROOT / "schemas" / f"{name}.schema.json"
    assert committed.read_text(encoding="utf-8") == render(name), (
        f"{committed} is stale: run `python -m gateway.config.json_schemas`"
    )


def test_shipped_configuration_validates_against_the_committed_schema() -> None:
    schema = json.loads((ROOT / "schemas" / "config.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    data = yaml.safe_load((ROOT / "deploy" / "jurisgate.yaml").read_text())
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(data))
    data["backends"][0]["weight"] = -1
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(data))


def test_shipped_policy_files_validate_against_the_committed_schema() -> None:
    schema = json.loads((ROOT / "schemas" / "policy.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    files = [p for p in sorted((ROOT / "policies").rglob("*.yaml"))
             if not p.name.endswith(".cases.yaml")]  # fmt: skip
    assert files
    for path in files:
        # YAML dates are strings to the gateway's loader, as JSON has no date type.
        data = json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))
        errors = [e.message for e in validator.iter_errors(data)]
        assert not errors, (path, errors[:3])


def test_shipped_files_name_their_schema_for_editors() -> None:
    files = [*sorted((ROOT / "policies").rglob("*.yaml")), ROOT / "deploy" / "jurisgate.yaml"]
    for path in files:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert target.is_file() and target.parent == ROOT / "schemas", (path, target)
