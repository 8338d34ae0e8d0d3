"""Explanations for a compliance officer's questions: "why not this rule" (`--rule ID`) for
any decision, the routing step with each candidate backend, effective dates of inactive and
dry-run rules, audit-only rules kept apart from the rules that decided a denial, and
`--explain fails` trimming the JSON as it trims the text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.policy import PolicySet
from tests.policy.conftest import POLICIES, context

EMOTION_WITHOUT_CONTEXT: dict[str, Any] = context(
    caller={"tenant": "hr-analytics-de", "registered_purposes": ["emotion_recognition"]},
    request={"purpose": "emotion_recognition", "exposed_persons_informed": True},
)


def _eval(tmp_path: Path, ctx: dict[str, Any], *extra: str) -> int:
    path = tmp_path / "ctx.json"
    path.write_text(json.dumps(ctx), encoding="utf-8")
    return main(["policy", "eval", "--policies", str(POLICIES), "--context", str(path), *extra])


def test_rule_explains_the_emotion_ban_without_a_deployment_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _eval(
        tmp_path,
        EMOTION_WITHOUT_CONTEXT,
        "--explain",
        "--rule",
        "euaia-emotion-recognition-workplace",
    )
    out = capsys.readouterr()
    assert code == 1
    lines = out.err.strip().splitlines()
    assert len(lines) <= 15
    assert "rule `euaia-emotion-recognition-workplace`" in lines[1] and "matched" in lines[1]
    assert "why: it decided this request" in lines[2]
    assert "X-Deployment-Context was not declared" in lines[2]


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("gdpr-transfers", "stage `residency` did not run: stage `lawful_basis` decided first"),
        (
            "dpdp-children-tracking",
            "not in force at 2026-11-28T10:00:00Z (effective from 2027-05-13",
        ),
        (
            "gdpr-purpose-limitation",
            "`request.purpose not_in field caller.registered_purposes` was false",
        ),
        ("no-such-rule", "no rule `no-such-rule`"),
    ],
)
def test_rule_answers_why_not_for_any_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str, why: str
) -> None:
    _eval(tmp_path, EMOTION_WITHOUT_CONTEXT, "--rule", rule)
    assert why in capsys.readouterr().err


def test_routing_is_explained_backend_by_backend(shipped: PolicySet) -> None:
    ctx = context(request={"personal_data": ["email"]})
    decision = shipped.evaluate(ctx, explain=True)
    assert decision.explanation is not None
    text = decision.explanation.text()
    assert "routing:" in text
    assert "backend `be-de` eligible: region DE is allowed" in text
    assert "backend `be-us` not eligible: region US is outside" in text
    assert "eu_scc" in text  # the mechanism that would have made it eligible


def test_effective_dates_are_shown_for_dry_run_and_inactive_rules(shipped: PolicySet) -> None:
    ctx = context(
        caller={
            "region": "IN",
            "established_in": "IN",
            "registered_purposes": ["targeted_advertising"],
        },
        subject={"region": "IN", "age": 15},
        request={"purpose": "targeted_advertising"},
    )
    text = shipped.evaluate(ctx, explain=True).explanation.text("full")  # type: ignore[union-attr]
    preview = next(line for line in text.splitlines() if "`dpdp-children-tracking-preview`" in line)
    assert "dry-run" in preview and "effective from the start until 2027-05-12" in preview
    inactive = next(line for line in text.splitlines() if "`dpdp-children-tracking`" in line)
    assert "inactive" in inactive and "effective from 2027-05-13" in inactive


def test_audit_rules_are_not_listed_among_the_deciding_rules(shipped: PolicySet) -> None:
    ctx = context(caller={"region": "IN", "established_in": "IN"}, licence=None)
    decision = shipped.evaluate(ctx, explain=True)
    assert decision.effect == "deny"
    assert "certin-log-retention" in decision.rules  # the record-keeping duty still applies
    summary = decision.explanation.summary  # type: ignore[union-attr]
    deciding = summary.split("(rules: ", 1)[1].split(")", 1)[0]
    assert "certin-log-retention" not in deciding
    assert "audit duties: certin-log-retention" in summary


def test_explain_fails_trims_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _eval(tmp_path, EMOTION_WITHOUT_CONTEXT, "--explain", "fails")
    fails = json.loads(capsys.readouterr().out)["explanation"]["rules"]
    _eval(tmp_path, EMOTION_WITHOUT_CONTEXT, "--explain", "full")
    full = json.loads(capsys.readouterr().out)["explanation"]["rules"]
    assert 0 < len(fails) < len(full)
    assert {r["outcome"] for r in fails} <= {"matched", "error", "waived"}
