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
    files = sorted((ROOT / "policies").rglob("*.yaml"))
    assert files
    for path in files:
        # YAML dates are strings to the gateway's loader, as JSON has no date type.
        data = json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))
        errors = [e.message for e in validator.iter_errors(data)]
        assert not errors, (path, errors[:3])


def test_shipped_files_name_their_schema_for_editors() -> None:
    files = [
        *sorted((ROOT / "policies").rglob("*.yaml")),
        *sorted((ROOT / "deploy").glob("*.yaml")),
    ]
    for path in files:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert target.is_file() and target.parent == ROOT / "schemas", (path, target)


def test_shipped_tenants_file_validates_and_the_schema_refuses_what_the_reader_refuses() -> None:
    schema = json.loads((ROOT / "schemas" / "tenants.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(
        validator.iter_errors(yaml.safe_load((ROOT / "deploy" / "tenants.yaml").read_text()))
    )
    from gateway.errors import DiagnosticError
    from gateway.request.tenants import TenantRegistry

    refused = [
        "tenants: [{id: 'acme corp'}]",
        "tenants: [{id: a, api_key: jg_plain}]",
        "tenants: [{id: a, api_key_hashes: ['md5:00']}]",
        "tenants: [{id: a, established_in: Germany}]",
        "tenants: [{id: a, registered_purposes: ['two words']}]",
        "tenants: [{id: a, attests: [caller_region]}]",
        "tenants: [{id: a, flags: [1, 2]}]",
        "tenants: [{established_in: DE}]",
        "default_tenant: a\ntenants: []",
        "tenants: {id: a}",
    ]
    for text in refused:
        assert list(validator.iter_errors(yaml.safe_load(text))), text
        with pytest.raises(DiagnosticError):
            TenantRegistry.from_text(text, "t.yaml")
    accepted = (
        "tenants: [{id: a, established_in: us-ca, mask_pd_in_free_text: true,"
        " attests: [subject_region]}]"
    )
    assert not list(validator.iter_errors(yaml.safe_load(accepted)))
    assert len(TenantRegistry.from_text(accepted, "t.yaml")) == 1


def test_files_written_by_up_name_schemas_that_exist_and_validate(tmp_path: Path) -> None:
    import argparse

    from gateway.commands.up import _prepare

    args = argparse.Namespace(
        workdir=tmp_path, host="127.0.0.1", port=8501, grpc_port=8500, admin_port=8601,
        backend_port=8511, backend_grpc_port=8510,
    )  # fmt: skip
    config, _ = _prepare(args, ROOT / "policies")
    for path in (config, tmp_path / "tenants.yaml"):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = path.parent / first.split("$schema=", 1)[1]
        assert target.read_text(encoding="utf-8") == render(target.name.split(".")[0])
        validator = jsonschema.Draft202012Validator(json.loads(target.read_text()))
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path, errors)
