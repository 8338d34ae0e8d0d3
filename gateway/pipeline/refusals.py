"""Refusals the gateway makes itself, in the shape each kind of client expects.

What TF Serving would refuse (its URL grammar, a body its parser rejects) is answered with TF
Serving's own status and body, so a drop-in client sees no difference; everything else the
gateway refuses (no key, a body too large, a header it cannot read, data it cannot inspect)
is a problem+json body that names the problem and what would make the request pass.
"""

from __future__ import annotations

from gateway.pipeline.state import Refusal, Reply, RequestState
from gateway.request.problems import PROBLEM_CONTENT_TYPE, gateway_problem, problem_bytes
from gateway.tfserving import ERROR_CONTENT_TYPE, TfsError, error_body

__all__ = ["gateway_refusal", "json_parse_refusal", "tfs_refusal"]


def tfs_refusal(error: TfsError) -> Refusal:
    """TF Serving's own answer for a request it would refuse."""
    headers = {"Connection": "close"} if error.close_connection else {}
    reply = Reply(error.status, error.body, error.content_type or None, headers)
    return Refusal(reply, outcome="reject", reason=error.reason)


def json_parse_refusal(message: str) -> Refusal:
    """TF Serving's 400 for a body that is not acceptable JSON (the same body and message;
    the decision id travels in the `X-Decision-Id` header)."""
    return tfs_refusal(
        TfsError(400, ERROR_CONTENT_TYPE, error_body(message), "invalid_json", message)
    )


def gateway_refusal(
    state: RequestState,
    status: int,
    code: str,
    title: str,
    detail: str,
    hint: str | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> Refusal:
    """A problem+json refusal of the gateway's own: `code`, what went wrong, and a `hint`."""
    body = gateway_problem(
        operator=state.snap.config.operator,
        status=status,
        title=title,
        detail=detail,
        decision_id=state.decision_id,
        code=code,
        hint=hint,
    )
    reply = Reply(status, problem_bytes(body), PROBLEM_CONTENT_TYPE, headers or {})
    return Refusal(reply, outcome="reject", reason=code)
