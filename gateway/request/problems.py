"""Response bodies the gateway makes itself: RFC 9457 problems and TF Serving error shapes.

Every body keeps an `error` member, so TF Serving clients, which print `error`, show the
reason; problem bodies add the members a compliance officer needs (which rule, which law,
what would make the request pass, the decision id to quote).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.config.loader import OperatorConfig
from gateway.policy.decision import Decision
from gateway.policy.vocabulary import RegimeInfo

__all__ = [
    "EVALUATION_ERROR_STATUS",
    "PROBLEM_CONTENT_TYPE",
    "decision_problem",
    "denial_problem",
    "evaluation_problem",
    "gateway_problem",
    "problem_bytes",
    "refusing_jurisdictions",
]

#: A policy that cannot be evaluated is the gateway's fault, not a legal demand: the request
#: is refused (fail closed) with a server error, never with 451 and a legal basis.
EVALUATION_ERROR_STATUS = 500

PROBLEM_CONTENT_TYPE = "application/problem+json"

_TITLES = {
    451: "Unavailable For Legal Reasons",
    403: "Forbidden by licence",
}


def denial_problem(
    *,
    operator: OperatorConfig,
    status: int,
    problem_kind: str,
    title: str | None,
    detail: str,
    remedy: str | None,
    rules: Sequence[str],
    legal_basis: Sequence[Mapping[str, Any]],
    jurisdiction: Sequence[str],
    applies_to: str,
    decision_id: str,
    stage: str | None,
    demanding_party: str | None = None,
) -> dict[str, Any]:
    """The problem+json body of a policy denial (451 legal, 403 licence).

    RFC 7725 §3: `demanding_party` is the party making the legal demand (the deciding
    regime's), never the operator; the operator, the entity implementing the block, is only
    the `blocked_by` target (and the `Link: rel="blocked-by"` header, §4).
    """
    body: dict[str, Any] = {
        "type": operator.problem_types.get(problem_kind, operator.problem_types["legal"]),
        "title": title or _TITLES.get(status, "Refused by policy"),
        "status": status,
        "detail": detail,
        "error": detail,
        "rules": list(rules),
        "legal_basis": [dict(item) for item in legal_basis],
        "jurisdiction": list(jurisdiction),
        "applies_to": applies_to,
        "demanding_party": demanding_party,
        "audit_id": decision_id,
        "decision_id": decision_id,
    }
    if stage:
        body["stage"] = stage
    if remedy:
        body["remedy"] = remedy
    if status == 451:
        body["blocked_by"] = operator.blocking_entity_uri
    return body


def refusing_jurisdictions(
    legal_basis: Sequence[Any], regimes: Mapping[str, RegimeInfo]
) -> list[str]:
    """The jurisdiction of every regime that refuses, in the order the bases cite them."""
    out: list[str] = []
    for basis in legal_basis:
        info = regimes.get(basis.regime)
        place = info.jurisdiction if info and info.jurisdiction else basis.regime
        if place not in out:
            out.append(place)
    return out


def _demanding_parties(legal_basis: Sequence[Any], regimes: Mapping[str, RegimeInfo]) -> str | None:
    parties: list[str] = []
    for basis in legal_basis:
        info = regimes.get(basis.regime)
        if info and info.demanding_party and info.demanding_party not in parties:
            parties.append(info.demanding_party)
    return "; ".join(parties) or None


def evaluation_problem(
    *, operator: OperatorConfig, decision: Decision, decision_id: str
) -> dict[str, Any]:
    """The 500 problem of a request the policies could not evaluate (refused, fail closed)."""
    codes = [e.code for e in decision.errors]
    rules = sorted({e.rule for e in decision.errors if e.rule})
    detail = (
        "the gateway could not evaluate its policies for this request "
        f"({', '.join(codes) or 'policy_internal_error'}); it is refused and recorded. This "
        "is a fault in the gateway's policies, not a legal restriction"
    )
    return {
        "type": operator.problem_types.get("gateway", "about:blank") + "#policy-evaluation-error",
        "title": "Policy evaluation error",
        "status": EVALUATION_ERROR_STATUS,
        "detail": detail,
        "error": detail,
        "code": "policy_evaluation_error",
        "errors": codes,
        "rules": rules,
        "audit_id": decision_id,
        "decision_id": decision_id,
        "remedy": f"quote audit id {decision_id} to the gateway operator",
    }


def decision_problem(
    *,
    operator: OperatorConfig,
    decision: Decision,
    regimes: Mapping[str, RegimeInfo],
    decision_id: str,
    applies_to: str,
    audit_rules: frozenset[str] = frozenset(),
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, problem body and headers of a refused decision.

    An evaluation error is a 500 of its own type; a denial is 451 (law) or 403 (licence)
    with the deciding regime as the demanding party and every refusing regime's
    jurisdiction. `rules` names the rules that decided; the `audit_rules` among the
    decision's rules (record keeping, which never decides) are listed as `audit_duties`.
    """
    headers = {"Cache-Control": "no-store"}
    if decision.errors:
        body = evaluation_problem(operator=operator, decision=decision, decision_id=decision_id)
        return EVALUATION_ERROR_STATUS, body, headers
    problem = decision.problem
    status = decision.status if decision.status in (451, 403) else 451
    jurisdictions = refusing_jurisdictions(decision.legal_basis, regimes)
    if not jurisdictions and problem and problem.jurisdiction:
        jurisdictions = [problem.jurisdiction]
    party = problem.demanding_party if problem and problem.demanding_party else None
    body = denial_problem(
        operator=operator,
        status=status,
        problem_kind=problem.type if problem else "legal",
        title=problem.title if problem else None,
        detail=problem.detail if problem else "refused by policy",
        remedy=problem.remedy.text if problem and problem.remedy else None,
        rules=[r for r in decision.rules if r not in audit_rules],
        legal_basis=[b.to_json() for b in decision.legal_basis],
        jurisdiction=jurisdictions,
        applies_to=problem.applies_to if problem and problem.applies_to else applies_to,
        decision_id=decision_id,
        stage=decision.stage,
        demanding_party=party or _demanding_parties(decision.legal_basis, regimes),
    )
    if problem and problem.remedy and problem.remedy.header:
        body["remedy_header"] = problem.remedy.header
    duties = [r for r in decision.rules if r in audit_rules]
    if duties:
        body["audit_duties"] = duties
    if status == 451:
        headers["Link"] = f'<{operator.blocking_entity_uri}>; rel="blocked-by"'
    return status, body, headers


def gateway_problem(
    *,
    operator: OperatorConfig,
    status: int,
    title: str,
    detail: str,
    decision_id: str,
    code: str,
    hint: str | None = None,
) -> dict[str, Any]:
    """A problem body for a gateway-made refusal that is not a policy decision (401, 400...)."""
    body: dict[str, Any] = {
        "type": operator.problem_types.get("gateway", "about:blank") + "#" + code,
        "title": title,
        "status": status,
        "detail": detail,
        "error": detail,
        "code": code,
        "decision_id": decision_id,
    }
    if hint:
        body["remedy"] = hint
    return body


def problem_bytes(body: Mapping[str, Any]) -> bytes:
    """Serialise a problem body (indented like TF Serving's JSON, for people reading curl)."""
    return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"
