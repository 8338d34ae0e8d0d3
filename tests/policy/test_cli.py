"""`jurisgate policy check|test|eval|schema`: output and exit codes (0 / 1 / 2 / 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from gateway.cli import main
from tests.policy.conftest import HERE, POLICIES

IRAN = {
    "now": "2026-11-28T10:00:00Z",
    "caller": {
        "tenant": "globalapp-sg",
        "established_in": "SG",
        "region": "IR",
        "region_claims": [],
        "registered_purposes": ["product_catalog_tagging"],
    },
    "request": {
        "model": "imgcls-resnet50",
        "method": "predict",
        "purpose": "product_catalog_tagging",
        "personal_data": [],
    },
    "licence": {"id": "LIC-1", "model": "imgcls-resnet50", "valid_from": "2025-01-01"},
    "model": {"id": "imgcls-resnet50", "kind": "classifier", "output": "labels"},
}


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped packs and their cases."""
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


def test_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(POLICIES)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {POLICIES} (") and "sha256:" in out


def test_check_reports_diagnostics_with_exit_3(
    policy_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = policy_copy / "eu" / "gdpr.yaml"
    pack.write_text(
        pack.read_text(encoding="utf-8").replace("effect: deny", "effect: dney", 1),
        encoding="utf-8",
    )
    assert main(["policy", "check", str(policy_copy)]) == 3
    err = capsys.readouterr().err
    assert f"{pack}:" in err and "policy_schema_error: unknown effect `dney`" in err
    assert "help: did you mean `deny`?" in err and err.rstrip().endswith(f"FAIL: {policy_copy}")


def test_check_json(policy_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (policy_copy / "extra.yaml").write_text(
        "kind: pack\nid: x\nrules: [{id: y}]\n", encoding="utf-8"
    )
    assert main(["policy", "check", "--format", "json", str(policy_copy)]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["revision"] is None
    assert {d["code"] for d in report["diagnostics"]} == {"policy_schema_error"}
    assert all(d["line"] for d in report["diagnostics"])


def test_test_passes_on_the_shipped_packs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(POLICIES)]) == 0
    out = capsys.readouterr().out
    assert "OK: " in out and out.rstrip().endswith(" passed, 0 failed")


def test_failing_case_prints_its_explanation_and_exits_3(
    policy_copy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = policy_copy / "sanctions" / "sanctions.cases.yaml"
    text = cases.read_text(encoding="utf-8")
    cases.write_text(
        text.replace(
            "rules: [sanctions-us-iran], legal_basis", "rules: [sanctions-us-cuba], legal_basis", 1
        ),
        encoding="utf-8",
    )
    assert main(["policy", "test", str(policy_copy)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL: {cases}" in out
    assert "case_failed: case `a caller in Iran is refused under the ITSR` failed" in out
    assert "rules: want ['sanctions-us-cuba'], got ['sanctions-us-iran']" in out
    assert "decision: deny 451 at stage `sanctions`" in out
    assert "rule `sanctions-us-iran` (sanctions, deny): matched" in out
    assert '`caller.region in [IR]` was true (`"IR"`)' in out
    assert out.rstrip().endswith("1 failed")


def test_broken_case_file_is_an_error(
    policy_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (policy_copy / "broken.cases.yaml").write_text(
        "kind: cases\ncases:\n  - {name: a}\n", encoding="utf-8"
    )
    assert main(["policy", "test", str(policy_copy)]) == 3
    err = capsys.readouterr().err
    assert "case is missing `context`" in err and "ERROR: " in err


def test_test_with_broken_policies_exits_3(policy_copy: Path) -> None:
    (policy_copy / "vocabulary.yaml").write_text("kind: vocabulary\n", encoding="utf-8")
    assert main(["policy", "test", str(policy_copy)]) == 3


def test_test_json_and_a_single_case_file(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = HERE / "scenario_contexts.yaml"
    assert (
        main(["policy", "test", "--format", "json", "--policies", str(POLICIES), str(scenario)])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 12 and report["failed"] == 0


def test_eval_deny_exits_1_with_the_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = tmp_path / "ctx.json"
    ctx.write_text(json.dumps(IRAN), encoding="utf-8")
    assert main(["policy", "eval", "--policies", str(POLICIES), "--context", str(ctx)]) == 1
    decision = json.loads(capsys.readouterr().out)
    assert decision["effect"] == "deny" and decision["status"] == 451
    assert decision["rules"] == ["sanctions-us-iran"] and "explanation" not in decision


def test_eval_allow_with_explanation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = tmp_path / "ctx.yaml"
    ctx.write_text(
        json.dumps({**IRAN, "caller": {**IRAN["caller"], "region": "SG"}}), encoding="utf-8"
    )
    assert (
        main(
            [
                "policy",
                "eval",
                "--policies",
                str(POLICIES),
                "--context",
                str(ctx),
                "--explain",
                "full",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    decision = json.loads(captured.out)
    assert decision["effect"] == "allow"
    assert decision["explanation"]["rules"][0]["rule"] == "sanctions-eu-crimea"
    assert "rule `licence-grant` (licence, allow): matched" in captured.err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "context_json_error"),
        (json.dumps({"caller": {}}), "'now' is a required property"),
        (json.dumps({**IRAN, "subject": {"age": "15"}}), "case_context_error"),
    ],
)
def test_eval_rejects_bad_contexts_with_exit_3(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = tmp_path / "ctx.json"
    ctx.write_text(content, encoding="utf-8")
    assert main(["policy", "eval", "--policies", str(POLICIES), "--context", str(ctx)]) == 3
    assert message in capsys.readouterr().err


def test_schema_is_a_valid_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert main(["policy", "schema", "--context"]) == 0
    context_schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(context_schema)
    assert "caller" in context_schema["properties"]


def test_policy_without_subcommand_is_a_usage_error() -> None:
    assert main(["policy"]) == 2
