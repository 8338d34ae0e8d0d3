"""Problem bodies of refused requests (RFC 9457 members, RFC 7725 semantics).

The demanding party is the deciding regime's, never the operator (who is only the
`blocked-by` target); `jurisdiction` lists every refusing regime; a policy evaluation error is
a 500 of its own type, never a 451 with a legal basis.
"""

from __future__ import annotations

from typing import Any

from gateway.config.loader import OperatorConfig
from gateway.policy import PolicySet, load_policy_set
from gateway.request.problems import decision_problem
from tests.policy.conftest import PackWriter, context

OPERATOR = OperatorConfig(
    name="Example MaaS Gateway Operator",
    blocking_entity_uri="https://gateway.example/legal/blocking-entity",
)


def _problem(
    policy_set: PolicySet, ctx: dict[str, Any]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    decision = policy_set.evaluate(ctx)
    assert decision.effect == "deny"
    return decision_problem(
        operator=OPERATOR,
        decision=decision,
        regimes=policy_set.vocabulary.regimes,
        decision_id="d-1",
        applies_to="/v1/models/m1:predict",
    )


def test_several_refusing_regimes_are_all_listed(shipped: PolicySet) -> None:
    status, body, headers = _problem(shipped, context(caller={"region": "UA-43"}))
    assert status == 451
    regimes = {b["regime"] for b in body["legal_basis"]}
    assert regimes == {"SANCTIONS-US", "SANCTIONS-EU"}
    assert body["jurisdiction"] == ["US", "EU"] or body["jurisdiction"] == ["EU", "US"]
    assert body["demanding_party"] != OPERATOR.name
    assert body["demanding_party"] in {
        shipped.vocabulary.regimes["SANCTIONS-US"].demanding_party,
        shipped.vocabulary.regimes["SANCTIONS-EU"].demanding_party,
    }
    assert body["blocked_by"] == OPERATOR.blocking_entity_uri
    assert headers["Link"] == f'<{OPERATOR.blocking_entity_uri}>; rel="blocked-by"'


def test_the_demanding_party_is_the_deciding_regimes(shipped: PolicySet) -> None:
    ctx = context(
        request={"purpose": "emotion_recognition", "deployment_context": "workplace"},
        caller={"registered_purposes": ["emotion_recognition"]},
    )
    status, body, _ = _problem(shipped, ctx)
    assert status == 451
    assert body["demanding_party"] == shipped.vocabulary.regimes["EU-AI-ACT"].demanding_party
    assert body["jurisdiction"] == ["EU"]


def test_an_evaluation_error_is_a_500_of_its_own_type(write_packs: PackWriter) -> None:
    root = write_packs(
        main="""
        kind: pack
        version: 1
        id: p
        regime: GDPR
        rules:
          - id: needs-age
            stage: lawful_basis
            effect: deny
            when_absent: {subject.age: ask}
            when: {subject.age: {lt: 16}}
            basis: [{ref: "Art. 8(1)"}]
          - id: grant
            stage: licence
            effect: allow
        """
    )
    policy_set = load_policy_set([root]).policy_set
    assert policy_set is not None
    status, body, headers = _problem(policy_set, context(subject={"age": "15"}))
    assert status == 500
    assert body["status"] == 500
    assert body["type"].endswith("#policy-evaluation-error")
    assert "legal_basis" not in body and "demanding_party" not in body
    assert body["errors"] and body["audit_id"] == "d-1"
    assert "Link" not in headers and headers["Cache-Control"] == "no-store"


def test_audit_rules_are_duties_not_deciding_rules(shipped: PolicySet) -> None:
    decision = shipped.evaluate(
        context(caller={"region": "IN", "established_in": "IN"}, licence=None)
    )
    assert "certin-log-retention" in decision.rules
    status, body, _ = decision_problem(
        operator=OPERATOR,
        decision=decision,
        regimes=shipped.vocabulary.regimes,
        decision_id="d-2",
        applies_to="/v1/models/m1:predict",
        audit_rules=shipped.audit_rule_ids,
    )
    assert status == 403
    assert body["rules"] == ["licence-required"]
    assert body["audit_duties"] == ["certin-log-retention"]
