"""The gRPC edge: TF Serving's PredictionService and ModelService, through the same pipeline.

A gRPC client (`tensorflow_serving`'s `PredictionServiceStub`, Java and Go stubs) calls the
gateway as it would call TF Serving. Each call is wrapped in a `RequestState` (metadata as
headers, the peer as the client address, the serialised message as the body), runs the gRPC
step table of `gateway.pipeline`, and the reply is written back:

* an answer: the backend's serialised response, relayed byte for byte;
* a backend's own error: its status code and message, unchanged;
* a refusal of the gateway's: a status code per class, with `grpc-status-details-bin`
  holding a `google.rpc.Status` whose details are an `ErrorInfo` (reason, domain, metadata:
  rules, decision id), a `Help` (the legal bases' links) and a `LocalizedMessage`.

Response headers a decision adds (an attribution, a licence link) arrive as trailing metadata
of an answered call.

Status codes (docs/operations.md justifies them): a legal restriction (HTTP 451) is
FAILED_PRECONDITION, as services answer a request that is refused for where or for what it
is made until its circumstances change; a licence refusal (403) is PERMISSION_DENIED; the
gateway's other refusals take their natural codes (401 UNAUTHENTICATED, 400/415/422
INVALID_ARGUMENT, 404 NOT_FOUND, 408 and 504 DEADLINE_EXCEEDED, 413 RESOURCE_EXHAUSTED,
503 UNAVAILABLE, 500 and 502 INTERNAL). Every answer carries `x-decision-id` in its initial
metadata.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import grpc
import orjson
from multidict import CIMultiDict

from gateway.config.loader import GrpcListener
from gateway.pipeline import Reply, RequestState, run_steps
from gateway.pipeline.grpc_steps import GRPC_VERBS
from gateway.pipeline.run import GRPC_STEPS
from gateway.tfserving.protos import (
    MODEL_SERVICE,
    PREDICTION_SERVICE,
    ErrorInfo,
    Help,
    LocalizedMessage,
    RpcMethod,
    Status,
    methods,
)

__all__ = ["GrpcFrontDoor", "grpc_status_of", "peer_address"]

log = logging.getLogger("jurisgate")

_CODE_BY_HTTP: Final = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    451: grpc.StatusCode.FAILED_PRECONDITION,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CODE_BY_NUMBER: Final = {code.value[0]: code for code in grpc.StatusCode}
_REASONS: Final = {451: "LEGAL_RESTRICTION", 403: "LICENCE_RESTRICTION"}
_DETAILS_KEY: Final = "grpc-status-details-bin"
_TYPE_PREFIX: Final = "type.googleapis.com/"


def peer_address(peer: str) -> str | None:
    """The IP address of a gRPC peer string (`ipv4:192.0.2.1:5000`, `ipv6:[::1]:5000`)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        return host.strip("[]") or None
    return None


def grpc_status_of(reply: Reply, *, domain: str) -> tuple[grpc.StatusCode, str, bytes | None]:
    """The gRPC status code, message and rich details of a reply that is not an answer."""
    if reply.rpc_status is not None:
        number, message = reply.rpc_status
        return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN), message, None
    code = _CODE_BY_HTTP.get(reply.status, grpc.StatusCode.UNKNOWN)
    try:
        body = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("detail") or body.get("error") or reply.status)
    if "type" not in body:  # TF Serving's own error shape: no rich details to add
        return code, message, None
    return code, message, _rich_details(code, message, reply.status, body, domain)


def _rich_details(
    code: grpc.StatusCode, message: str, http_status: int, problem: dict[str, Any], domain: str
) -> bytes:
    status = Status(code=code.value[0], message=message)
    info = ErrorInfo(
        reason=_REASONS.get(http_status) or str(problem.get("code") or "REFUSED").upper(),
        domain=domain,
    )
    for key in ("decision_id", "stage", "remedy_header"):
        if problem.get(key):
            info.metadata[key] = str(problem[key])
    if problem.get("rules"):
        info.metadata["rules"] = ",".join(problem["rules"])
    if problem.get("jurisdiction"):
        info.metadata["jurisdiction"] = ",".join(problem["jurisdiction"])
    help_links = Help()
    for basis in problem.get("legal_basis") or ():
        link = help_links.links.add()
        link.description = f"{basis.get('regime')} {basis.get('ref')}"
        link.url = basis.get("url") or ""
    if problem.get("type"):
        link = help_links.links.add()
        link.description = str(problem.get("title") or "problem type")
        link.url = str(problem["type"])
    text = message if not problem.get("remedy") else f"{message}; {problem['remedy']}"
    localized = LocalizedMessage(locale="en-US", message=text)
    for detail in (info, help_links, localized):
        packed = status.details.add()
        packed.type_url = _TYPE_PREFIX + detail.DESCRIPTOR.full_name
        packed.value = detail.SerializeToString()
    serialised: bytes = status.SerializeToString()
    return serialised


class GrpcFrontDoor:
    """The gateway's gRPC server: every TF Serving method, one pipeline per call."""

    def __init__(
        self,
        runtime: Any,
        listener: GrpcListener,
        new_decision_id: Callable[[], str],
    ) -> None:
        self._runtime = runtime
        self._listener = listener
        self._new_decision_id = new_decision_id
        self._methods: dict[str, RpcMethod] = {}
        for service in (PREDICTION_SERVICE, MODEL_SERVICE):
            for rpc in methods(service).values():
                # SECURITY: reloading a backend's configuration is the operator's business,
                # never a client's: that method is not served (UNIMPLEMENTED).
                if rpc.name in GRPC_VERBS:
                    self._methods[rpc.path] = rpc
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        """Listen; return the bound port (useful with port 0)."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 2**31 - 1),
                ("grpc.max_send_message_length", 2**31 - 1),
                # A second gateway on a port in use must fail, unless it is a sibling worker
                # (`jurisgate serve` with several workers): the kernel spreads connections.
                ("grpc.so_reuseport", 1 if self._listener.reuse_port else 0),
            ]
        )
        server.add_generic_rpc_handlers((_Handlers(self),))
        address = f"{self._listener.host}:{self._listener.port}"
        if self._listener.tls_cert_file is not None and self._listener.tls_key_file is not None:
            credentials = grpc.ssl_server_credentials(
                [
                    (
                        self._listener.tls_key_file.read_bytes(),
                        self._listener.tls_cert_file.read_bytes(),
                    )
                ]
            )
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting calls; calls in flight get `grace_s` to finish."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    def handler_for(self, path: str) -> grpc.RpcMethodHandler | None:
        """The unary handler of `path`, or None for a method TF Serving does not have."""
        rpc = self._methods.get(path)
        if rpc is None:
            return None

        async def behaviour(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._call(rpc, request, context)

        return grpc.unary_unary_rpc_method_handler(behaviour)

    async def _call(
        self, rpc: RpcMethod, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        runtime = self._runtime
        decision_id = self._new_decision_id()
        await context.send_initial_metadata((("x-decision-id", decision_id),))
        headers = _metadata_headers(context.invocation_metadata() or ())
        state = RequestState(
            runtime=runtime,
            snap=runtime.snapshot,  # SECURITY: pinned; a reload mid-call changes nothing here
            decision_id=decision_id,
            started=time.perf_counter(),
            method="POST",
            target=rpc.path,
            path=rpc.path,
            headers=headers,
            peer=_client_peer(context, headers),
            read_body=_no_body,
            rpc=rpc,
            body=request,
        )
        reply = await run_steps(state, GRPC_STEPS)
        if reply.status == 200 and reply.rpc_status is None:
            # Response headers a decision adds (a disclosure, an attribution, a licence link)
            # travel as trailing metadata, the only place left once the call has started.
            headers_out = tuple((name.lower(), value) for name, value in reply.headers.items())
            if headers_out:
                context.set_trailing_metadata(headers_out)
            return reply.body
        code, message, details = grpc_status_of(reply, domain=state.snap.config.deployment)
        trailing = ((_DETAILS_KEY, details),) if details is not None else ()
        await context.abort(code, message, trailing_metadata=trailing)
        raise AssertionError("abort returned")  # pragma: no cover


def _client_peer(context: grpc.aio.ServicerContext, headers: CIMultiDict[str]) -> str | None:
    """The TCP peer's address (trusted-proxy rules then apply to its forwarding metadata)."""
    return peer_address(context.peer() or "")


async def _no_body(state: RequestState) -> bytes:
    return state.body


def _metadata_headers(metadata: Sequence[tuple[str, str | bytes]]) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in metadata:
        if isinstance(value, str) and not key.endswith("-bin"):
            headers.add(key, value)
    return headers


class _Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, door: GrpcFrontDoor) -> None:
        self._door = door

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self._door.handler_for(handler_call_details.method)
