"""Running the steps of one request, and the answers when a step ends it early.

`REST_STEPS` is the table of a TF Serving REST request, `GRPC_STEPS` of a gRPC call. A step
returns a `Reply` to end the request after writing its own records, or raises `Refusal`;
anything else a step raises is a failure of the gateway, answered with an audited 500 (every
request ends decided, recorded and counted). When the audit log itself fails, the answer is
a 503 and nothing is forwarded.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from gateway.errors import describe_exception
from gateway.pipeline import grpc_steps, steps
from gateway.pipeline.audit import AuditDown, append
from gateway.pipeline.records import failed_record, refused_record
from gateway.pipeline.state import Refusal, Reply, RequestState
from gateway.request.problems import PROBLEM_CONTENT_TYPE, gateway_problem, problem_bytes

__all__ = ["GRPC_STEPS", "REST_STEPS", "Step", "run_steps"]

log = logging.getLogger("jurisgate")

Step = Callable[[RequestState], "Reply | None | Awaitable[Reply | None]"]

#: A TF Serving REST request, in order.
REST_STEPS: Final[tuple[Step, ...]] = (
    steps.parse_target,
    steps.read_body,
    steps.parse_body,
    steps.locate,
    steps.identify,
    steps.scan_payload,
    steps.decide,
    steps.choose_backend,
    steps.deny,
    steps.mask,
    steps.record_decision,
    steps.forward,
    steps.apply_output_obligations,
    steps.record_outcome,
)


#: A TF Serving gRPC call, in order: the same client, tenant, decision, routing and records.
GRPC_STEPS: Final[tuple[Step, ...]] = (
    grpc_steps.parse_rpc,
    steps.locate,
    steps.identify,
    grpc_steps.scan_tensors,
    steps.decide,
    steps.choose_backend,
    steps.deny,
    grpc_steps.mask_tensors,
    steps.record_decision,
    grpc_steps.forward_rpc,
    grpc_steps.record_rpc_outcome,
)


async def run_steps(state: RequestState, table: tuple[Step, ...] = REST_STEPS) -> Reply:
    """Run `table` on `state` until a step answers; every path ends with a reply."""
    try:
        for step in table:
            result = step(state)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                return result
        raise RuntimeError("the request pipeline ended without an answer")
    except AuditDown as down:
        return down.reply
    except Refusal as refusal:
        return await _refused(state, refusal)
    except Exception as exc:  # noqa: BLE001 - every request ends decided, audited and counted
        return await _failed(state, exc)


async def _refused(state: RequestState, refusal: Refusal) -> Reply:
    try:
        await append(state, refused_record(state, refusal))
    except AuditDown as down:
        return down.reply
    state.runtime.metrics.count_request(refusal.outcome, refusal.reply.status)
    return refusal.reply


async def _failed(state: RequestState, exc: Exception) -> Reply:
    """An audited 500 for a failure inside the pipeline (a bug, or input nobody foresaw)."""
    # SECURITY: the exception's message may quote the request; only its type and place are
    # logged, and the record names the type.
    log.error(
        "request %s failed inside the gateway: %s", state.decision_id, describe_exception(exc)
    )
    try:
        await append(state, failed_record(state, exc))
    except AuditDown as down:
        return down.reply
    state.runtime.metrics.count_request("error", 500)
    body = gateway_problem(
        operator=state.snap.config.operator,
        status=500,
        title="Internal Server Error",
        detail="the gateway failed while handling this request; the failure is recorded",
        decision_id=state.decision_id,
        code="internal_error",
        hint="retry later; quote the decision id when reporting it",
    )
    return Reply(500, problem_bytes(body), PROBLEM_CONTENT_TYPE)
