"""Absent declared facts have a stated meaning: leaving a header out never evades a rule.

The property: for every shipped case whose context is denied, removing any declared fact the
context holds keeps the request denied, unless a deciding rule (a deny rule, or a routing
rule of a routing denial) states why the absence of that fact does not bring it into play
(`when_absent: {fact: {not_applicable: why}}`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.policy import PolicySet, load_policy_set
from gateway.policy.cases import load_case_file
from gateway.policy.language import DECLARED_FACTS
from gateway.policy.loader import discover_files
from tests.policy.conftest import POLICIES, PackWriter, context

CASE_FILES = [f.path for f in discover_files([POLICIES], cases=True)[0]]


def _without(ctx: dict[str, Any], fact: str) -> dict[str, Any]:
    out = copy.deepcopy(ctx)
    section, name = fact.split(".")
    if isinstance(out.get(section), dict):
        out[section].pop(name, None)
    return out


def _denied_cases() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in CASE_FILES:
        for case in load_case_file(path).cases:
            if case.want.get("effect") == "deny":
                found.append((f"{path.parent.name}: {case.label}", dict(case.context)))
    return found


DENIED = _denied_cases()


def test_there_are_denied_cases_to_check() -> None:
    assert len(DENIED) >= 20


@pytest.mark.parametrize("label,ctx", DENIED, ids=[label for label, _ in DENIED])
def test_removing_a_declared_fact_keeps_the_denial(
    shipped: PolicySet, label: str, ctx: dict[str, Any]
) -> None:
    before = shipped.evaluate(ctx)
    assert before.effect == "deny", label
    statements = {rule.id: {a.fact: a for a in rule.spec.when_absent} for rule in shipped.rules}
    deciding = [r for r in before.rules if r in statements and _can_deny(shipped, r)]
    for fact in DECLARED_FACTS:
        section, name = fact.split(".")
        if ctx.get(section, {}).get(name) in (None, [], False):
            continue  # nothing to remove
        excused = any(
            (a := statements[r].get(fact)) is not None and a.mode == "not_applicable"
            for r in deciding
        )
        if excused:
            continue
        after = shipped.evaluate(_without(ctx, fact))
        assert after.effect == "deny", (label, fact, after.rules)


def _can_deny(policy_set: PolicySet, rule_id: str) -> bool:
    return any(
        r.id == rule_id and (r.denies or r.obligations.route is not None) for r in policy_set.rules
    )


def test_the_workplace_ban_asks_for_the_deployment_context(shipped: PolicySet) -> None:
    decision = shipped.evaluate(
        context(
            request={"purpose": "emotion_recognition", "exposed_persons_informed": True},
            caller={"registered_purposes": ["emotion_recognition"]},
        )
    )
    assert decision.effect == "deny"
    assert "euaia-emotion-recognition-workplace" in decision.rules
    assert decision.problem is not None and decision.problem.remedy is not None
    assert decision.problem.remedy.header == "X-Deployment-Context"
    assert "X-Deployment-Context" in decision.problem.detail


def test_every_shipped_deny_rule_states_its_absence_behaviour() -> None:
    result = load_policy_set([POLICIES])
    implicit = [d.text() for d in result.diagnostics if d.code == "policy_absence_implicit"]
    assert implicit == []


_PACK = """
kind: pack
version: 1
id: p
regime: GDPR
rules:
  - id: child
    stage: lawful_basis
    effect: deny
    {absent}
    when:
      subject.age: {{lt: 16}}
      not: {{request.lawful_basis: contract}}
    basis: [{{ref: "Art. 8(1)"}}]
  - id: grant
    stage: licence
    effect: allow
"""


def _load(write_packs: PackWriter, absent: str) -> Any:
    return load_policy_set([write_packs(main=_PACK.format(absent=absent))])


def test_check_reports_each_fact_with_implicit_absence(write_packs: PackWriter) -> None:
    result = _load(write_packs, "")
    assert result.policy_set is not None  # a warning, not an error
    messages = [d.message for d in result.diagnostics if d.code == "policy_absence_implicit"]
    assert len(messages) == 2
    assert any("subject.age" in m and "X-Data-Subject-Age" in m for m in messages)


def test_ask_holds_for_an_absent_fact_under_negation(write_packs: PackWriter) -> None:
    result = _load(write_packs, "when_absent: {subject.age: ask, request.lawful_basis: ask}")
    assert result.policy_set is not None, [d.text() for d in result.diagnostics]
    ps = result.policy_set
    # Age undeclared: refused, asking for the header.
    decision = ps.evaluate(context(request={"lawful_basis": "consent"}))
    assert decision.effect == "deny" and decision.rules == ("child",)
    assert decision.problem is not None and decision.problem.remedy is not None
    assert decision.problem.remedy.header == "X-Data-Subject-Age"
    # Declared adult: allowed; declared contract basis: the `not` excludes it.
    assert ps.evaluate(context(subject={"age": 30})).effect == "allow"
    assert (
        ps.evaluate(context(subject={"age": 10}, request={"lawful_basis": "contract"})).effect
        == "allow"
    )
    # Basis undeclared (null under `not`): refused, the declared age holds.
    decision = ps.evaluate(context(subject={"age": 10}, request={"lawful_basis": None}))
    assert decision.effect == "deny"


def test_not_applicable_needs_a_reason_and_a_read_fact(
    write_packs: PackWriter, tmp_path: Path
) -> None:
    result = _load(
        write_packs,
        "when_absent: {subject.age: {not_applicable: ''}, request.purpose: ask, subject.size: ask}",
    )
    codes = sorted(d.code for d in result.diagnostics if d.severity == "error")
    messages = " | ".join(d.message for d in result.diagnostics)
    assert result.policy_set is None
    assert "not_applicable reason must not be empty" in messages
    assert "`subject.size` is not a declared fact" in messages
    assert "policy_schema_error" in codes
