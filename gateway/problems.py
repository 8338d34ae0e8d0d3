"""Response bodies the gateway makes itself: RFC 9457 problems and TF Serving error shapes.

Every body keeps an `error` member, so TF Serving clients, which print `error`, show the
reason; problem bodies add the members a compliance officer needs (which rule, which law,
what would make the request pass, the decision id to quote).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.config import OperatorConfig

__all__ = ["PROBLEM_CONTENT_TYPE", "denial_problem", "gateway_problem", "problem_bytes"]

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
) -> dict[str, Any]:
    """The problem+json body of a policy denial (451 legal, 403 licence)."""
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
        "demanding_party": operator.name,
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
