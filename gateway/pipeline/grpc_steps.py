"""The steps only a gRPC request needs: its message, its tensors, its backend call.

A gRPC request carries no URL and no JSON: the model comes from the message's `ModelSpec`,
the text the model reads is in `string_val` tensors (Predict) and `bytes_list` features
(Classify, Regress, MultiInference), and the backend is called over gRPC. Everything else
(client, tenant, decision, routing, records) is the REST pipeline's own steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError

from gateway.pipeline.audit import append
from gateway.pipeline.records import outcome_record
from gateway.pipeline.state import Refusal, Reply, RequestState
from gateway.pipeline.steps import (
    emit_decision_event,
    masking,
    region_hints,
    settle_findings,
)
from gateway.pipeline.upstream import GrpcUpstreamError
from gateway.privacy import scan_byte_values
from gateway.privacy.findings import Location
from gateway.privacy.masking import mask_byte_values
from gateway.tfserving import Route, error_body
from gateway.tfserving.protos import DataType

__all__ = [
    "GRPC_VERBS",
    "forward_rpc",
    "mask_tensors",
    "parse_rpc",
    "record_rpc_outcome",
    "scan_tensors",
]

#: The policy verb of each TF Serving RPC (the request context's `request.method`).
GRPC_VERBS: Final = {
    "Predict": "predict",
    "Classify": "classify",
    "Regress": "regress",
    "MultiInference": "classify",
    "GetModelMetadata": "metadata",
    "GetModelStatus": "status",
}
_DT_STRING: Final = DataType.Value("DT_STRING")
#: gRPC status codes the gateway answers with (grpc.StatusCode values).
INVALID_ARGUMENT: Final = grpc.StatusCode.INVALID_ARGUMENT.value[0]
_INTERNAL: Final = grpc.StatusCode.INTERNAL.value[0]
#: The gateway's own upstream failures: unavailable, too slow, an answer too large.
_GATEWAY_CODES: Final = {
    503: grpc.StatusCode.UNAVAILABLE.value[0],
    504: grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
    502: _INTERNAL,
}


#: A backend's gRPC status -> the HTTP status TF Serving's REST API gives the same error
#: (what the records and metrics count).
_HTTP_STATUS: Final = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def _http_status(code: grpc.StatusCode) -> int:
    return _HTTP_STATUS.get(code, 500)


def parse_rpc(state: RequestState) -> None:
    """The request message and the model it addresses (TF Serving's own checks first)."""
    rpc = state.rpc
    assert rpc is not None
    try:
        message = rpc.request_class.FromString(state.body)
    except DecodeError:
        raise _invalid(state, "Failed to parse the request message") from None
    state.message = message
    if rpc.name == "MultiInference":
        # Every task names the same model (TF Serving refuses mixed ones); the first decides.
        if not message.tasks:
            raise _invalid(state, "Inference task list is empty.")
        holder = message.tasks[0]
    else:
        holder = message
    if not holder.HasField("model_spec"):
        raise _invalid(state, "Missing ModelSpec")
    spec = holder.model_spec
    if not spec.name:
        raise _invalid(state, "ModelSpec has no name specified.")
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
    state.route = Route(spec.name, version, label or None, GRPC_VERBS[rpc.name])  # type: ignore[arg-type]


def _invalid(state: RequestState, message: str) -> Refusal:
    reply = Reply(
        400, error_body(message), "application/json", rpc_status=(INVALID_ARGUMENT, message)
    )
    return Refusal(reply, outcome="reject", reason="invalid_argument")


def _byte_values(message: Any, verb: str) -> Iterator[tuple[Location, bytes]]:
    """Every byte string of the request the model reads, with its location."""
    if verb == "predict":
        for name in sorted(message.inputs):
            tensor = message.inputs[name]
            if tensor.dtype == _DT_STRING:
                for index, value in enumerate(tensor.string_val):
                    yield ("inputs", name, "string_val", index), value
        return
    if verb not in ("classify", "regress") or not message.HasField("input"):
        return  # status and metadata calls carry no data
    kind = message.input.WhichOneof("kind")
    if kind is None:
        return
    holder = getattr(message.input, kind)
    groups = [("examples", holder.examples)]
    if kind == "example_list_with_context":
        groups.append(("context", [holder.context]))
    for group, examples in groups:
        for number, example in enumerate(examples):
            for name in sorted(example.features.feature):
                feature = example.features.feature[name]
                if feature.WhichOneof("kind") == "bytes_list":
                    for index, value in enumerate(feature.bytes_list.value):
                        yield ("input", kind, group, number, name, index), value


def scan_tensors(state: RequestState) -> None:
    """Personal data in every string tensor and `bytes_list` feature, and in the configured
    metadata, read as the model reads them."""
    started = time.perf_counter()
    assert state.route is not None and state.message is not None
    hints = region_hints(state)
    state.byte_values = dict(_byte_values(state.message, state.route.verb))
    state.findings = scan_byte_values(state.byte_values.items(), region_hints=hints)
    settle_findings(state, state.findings, hints, started)


def mask_tensors(state: RequestState) -> None:
    """The masking obligations, written into the tensors; an unmasked request is forwarded as
    the exact bytes the client sent."""
    assert state.message is not None
    state.forward_body = state.body
    replacements = masking(
        state, partial(mask_byte_values, state.byte_values),
        "send the text as a UTF-8 string, or remove it from the binary value",
    )  # fmt: skip
    if not replacements:
        return
    for location, value in replacements.items():
        _set_value(state.message, location, value)
    state.forward_body = state.message.SerializeToString()


def _set_value(message: Any, location: Location, value: bytes) -> None:
    if location[0] == "inputs":
        _, name, _, index = location
        message.inputs[name].string_val[index] = value
        return
    _, kind, group, number, name, index = location
    holder = getattr(message.input, str(kind))
    example = holder.context if group == "context" else holder.examples[number]
    example.features.feature[name].bytes_list.value[index] = value


async def forward_rpc(state: RequestState) -> Reply | None:
    """The call to the chosen backend's gRPC port; its own errors pass through unchanged."""
    assert state.backend is not None and state.rpc is not None
    backend, runtime = state.backend, state.runtime
    upstream = runtime.grpc_upstream
    assert upstream is not None
    started = time.perf_counter()
    try:
        reply = await upstream.call(
            backend, state.rpc.path, state.forward_body,
            metadata=(("x-decision-id", state.decision_id),),
        )  # fmt: skip
    except GrpcUpstreamError as exc:
        runtime.metrics.observe_backend(backend.id, exc.status, time.perf_counter() - started)
        code = _GATEWAY_CODES.get(exc.status, _INTERNAL)
        return await _upstream_failed(state, exc.status, exc.kind, code, exc.message)
    status = _http_status(reply.code)
    runtime.metrics.observe_backend(backend.id, status, time.perf_counter() - started)
    if reply.payload is None:
        # TF Serving's own error (an unknown signature, a bad tensor): relayed unchanged.
        return await _upstream_failed(state, status, "backend_status", reply.code.value[0],
                                      reply.details)  # fmt: skip
    state.response_body = reply.payload
    return None


async def _upstream_failed(
    state: RequestState, status: int, kind: str, code: int, message: str
) -> Reply:
    lat_us = int((time.perf_counter() - state.started) * 1e6)
    await append(state, outcome_record(state, status, upstream_error=kind, lat_us=lat_us))
    state.runtime.metrics.count_request("upstream_error", status)
    return Reply(status, error_body(message), "application/json", rpc_status=(code, message))


async def record_rpc_outcome(state: RequestState) -> Reply:
    """The signed `outcome` record, durable before the response message leaves."""
    decision = state.decision
    assert decision is not None
    runtime = state.runtime
    if decision.obligations.image_marks:
        # SECURITY: marking generated images in gRPC tensors is not supported yet; an output
        # the law says must carry a mark never leaves unmarked.
        await append(state, outcome_record(state, 502, upstream_error="unmarkable_output"))
        message = "Model output could not be labelled as required: grpc_outputs_unmarkable"
        return Reply(502, error_body(message), "application/json", rpc_status=(_INTERNAL, message))
    lat_us = int((time.perf_counter() - state.started) * 1e6)
    await append(
        state,
        outcome_record(
            state, 200, lat_us=lat_us, resp_mac=runtime.keyed_digest(state.response_body)
        ),
    )
    outcome = state.outcome
    emit_decision_event(state, outcome, sorted({c for c, _ in state.found}))
    runtime.metrics.count_request(outcome, 200)
    return Reply(200, state.response_body, None, dict(decision.obligations.headers))
