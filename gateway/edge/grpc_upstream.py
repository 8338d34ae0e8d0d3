"""Upstream over gRPC: one pooled `grpc.aio` channel per backend gRPC address.

The gRPC counterpart of `proxy.UpstreamPool`, for TF Serving's `PredictionService` and
`ModelService`. It forwards serialized request messages and returns the backend's answer
unparsed, so that what the backend said reaches the client unchanged. The gRPC front door's
forwarding step (`pipeline.grpc_steps`) calls it.

Channels are opened on first use (so an app with no gRPC traffic never starts gRPC's threads)
and closed with the app (`close()`, from the app's `cleanup_ctx`). Each call is bounded in two
phases, as REST's pool bounds them:

* connect: the channel must become READY within `timeouts.connect_s`. A refused or failed
  connection is `unavailable` (503) at once; a connection that does not complete in time is
  `timeout` (504), as aiohttp's connect timeout is for REST.
* call: the RPC's deadline is `timeouts.read_s`. The backend's UNAVAILABLE is `unavailable`
  (503) and DEADLINE_EXCEEDED is `timeout` (504), with the backend's own code and message kept
  on the error (`GrpcUpstreamError.code`, `.details`); a response larger than the message limit
  is `bad_response` (502). Every other status is the backend's answer (`GrpcReply`).

Idempotent calls (GetModelStatus, GetModelMetadata) are retried on `unavailable`, a few times
with a short backoff, within the connect plus read budget; Predict, Classify, Regress and
MultiInference never are (a request that reached a model may have cost it work). Only TF
Serving's own methods can be called: a path is checked against the descriptor pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import grpc
import grpc.aio

from gateway.pipeline.upstream import GrpcUpstreamError, UpstreamErrorKind
from gateway.request.routing import BackendSpec
from gateway.tfserving import protos

__all__ = [
    "IDEMPOTENT_PATHS",
    "METHOD_PATHS",
    "GrpcReply",
    "GrpcUpstreams",
]

#: Every method path the gateway may call upstream, by `:path`.
METHOD_PATHS: Final[dict[str, protos.RpcMethod]] = {
    method.path: method
    for service in (protos.PREDICTION_SERVICE, protos.MODEL_SERVICE)
    for method in protos.methods(service).values()
    # SECURITY: reloading a backend's configuration is the operator's, never a client's.
    if method.name != "HandleReloadConfigRequest"
}

#: Methods without effects on the backend, retried when it is unavailable.
IDEMPOTENT_PATHS: Final = frozenset(
    {
        f"/{protos.MODEL_SERVICE}/GetModelStatus",
        f"/{protos.PREDICTION_SERVICE}/GetModelMetadata",
    }
)

Metadata = Sequence[tuple[str, str | bytes]]

_RECONNECT_BACKOFF_MS: Final = (100, 2000)  # first and longest wait between connect attempts


@dataclass(frozen=True, slots=True)
class GrpcReply:
    """A backend's answer to one call: its status, the response bytes (OK only), metadata.

    `code` is the backend's own status; a non-OK code is TF Serving's error (NOT_FOUND for an
    unknown model, INVALID_ARGUMENT...), relayed like a REST error response.
    """

    code: grpc.StatusCode
    details: str
    payload: bytes | None = field(repr=False)
    initial_metadata: tuple[tuple[str, str | bytes], ...] = ()
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()
    response_class: Any = field(default=None, repr=False, compare=False)

    def message(self) -> Any:
        """The response parsed with the gateway's own classes (OK replies only)."""
        if self.payload is None or self.response_class is None:
            raise ValueError(f"no response message: the backend answered {self.code.name}")
        return self.response_class.FromString(self.payload)


class GrpcUpstreams:
    """The gateway's gRPC channels to its backends, one per address, shared by all requests.

    Use as an async context manager or call `close()` when the app stops.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 40.0,
        max_message_bytes: int = 128 * 1024 * 1024,
        idempotent_retries: int = 2,
        retry_backoff: float = 0.05,
    ) -> None:
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got `{value}`")
        if idempotent_retries < 0 or retry_backoff < 0:
            raise ValueError("idempotent_retries and retry_backoff must be >= 0")
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_message_bytes = max_message_bytes
        self._retries = idempotent_retries
        self._backoff = retry_backoff
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closed = False

    async def close(self) -> None:
        """Close every channel; calls still running fail as cancelled."""
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels))

    async def __aenter__(self) -> GrpcUpstreams:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def channel(self, backend: BackendSpec) -> grpc.aio.Channel:
        """The pooled channel to `backend`'s gRPC address, opened on first use."""
        if backend.grpc is None:
            raise ValueError(f"backend `{backend.id}` has no gRPC address")
        if self._closed:
            raise RuntimeError("GrpcUpstreams is closed")
        channel = self._channels.get(backend.grpc)
        if channel is None:
            first, longest = _RECONNECT_BACKOFF_MS
            channel = grpc.aio.insecure_channel(
                backend.grpc,
                options=[
                    ("grpc.max_receive_message_length", self._max_message_bytes),
                    ("grpc.max_send_message_length", self._max_message_bytes),
                    # A backend that comes back is used again within seconds, not minutes.
                    # (Not grpc.min_reconnect_backoff_ms: it also caps each connection
                    # attempt, which would turn a slow connect into a failed one.)
                    ("grpc.initial_reconnect_backoff_ms", first),
                    ("grpc.max_reconnect_backoff_ms", longest),
                    # Retries are decided here, per method, not by gRPC's own policy.
                    ("grpc.enable_retries", 0),
                ],
            )
            self._channels[backend.grpc] = channel
        return channel

    async def call(
        self,
        backend: BackendSpec,
        path: str,
        payload: bytes,
        *,
        metadata: Metadata = (),
    ) -> GrpcReply:
        """Send one serialized request to `backend`; return its answer or raise.

        Raises `GrpcUpstreamError` (an `UpstreamError`) when the backend is unavailable, slow
        or answers too much, and ValueError for a path that is not a TF Serving method.
        """
        method = METHOD_PATHS.get(path)
        if method is None:
            raise ValueError(f"refusing to call `{path[:100]}`: not a TF Serving method")
        channel = self.channel(backend)
        attempts = 1 + (self._retries if path in IDEMPOTENT_PATHS else 0)
        for attempt in range(attempts):
            try:
                await self._connected(backend, channel)
                return await self._call(backend, channel, method, payload, metadata)
            except GrpcUpstreamError as error:
                if error.kind != "unavailable" or attempt + 1 == attempts:
                    raise
            await asyncio.sleep(self._backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def call_message(
        self, backend: BackendSpec, path: str, request: Any, *, metadata: Metadata = ()
    ) -> GrpcReply:
        """`call` for a request message (the gateway's or any protobuf class of the type)."""
        return await self.call(backend, path, request.SerializeToString(), metadata=metadata)

    async def _connected(self, backend: BackendSpec, channel: grpc.aio.Channel) -> None:
        """Return once `channel` is READY; raise unavailable (failed) or timeout (slow)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        state = channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.READY:
            if state in (
                grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                grpc.ChannelConnectivity.SHUTDOWN,
            ):
                raise _error(backend, "unavailable", f"connect failed: channel {state.name}")
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                raise _error(
                    backend, "timeout", f"connect timeout after {self._connect_timeout:g} s"
                ) from None
            state = channel.get_state(try_to_connect=True)

    async def _call(
        self,
        backend: BackendSpec,
        channel: grpc.aio.Channel,
        method: protos.RpcMethod,
        payload: bytes,
        metadata: Metadata,
    ) -> GrpcReply:
        # No serializers: the request and response bytes pass through unparsed.
        call = channel.unary_unary(method.path)(
            payload, timeout=self._read_timeout, metadata=tuple(metadata) or None
        )
        try:
            response = await call
        except grpc.aio.AioRpcError as rpc_error:
            code = rpc_error.code()
            details = rpc_error.details() or ""
            if code is grpc.StatusCode.UNAVAILABLE:
                raise _error(backend, "unavailable", details, code=code) from None
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _error(backend, "timeout", details, code=code) from None
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
                raise _error(backend, "bad_response", details, code=code) from None
            return GrpcReply(
                code,
                details,
                None,
                tuple(rpc_error.initial_metadata() or ()),
                tuple(rpc_error.trailing_metadata() or ()),
                method.response_class,
            )
        return GrpcReply(
            grpc.StatusCode.OK,
            "",
            bytes(response),
            tuple(await call.initial_metadata() or ()),
            tuple(await call.trailing_metadata() or ()),
            method.response_class,
        )


_STATUS: Final[dict[UpstreamErrorKind, tuple[int, str]]] = {
    "unavailable": (503, "Backend {} is unavailable"),
    "timeout": (504, "Backend {} did not answer in time"),
    "bad_response": (502, "Backend {} sent an invalid response"),
}


def _error(
    backend: BackendSpec,
    kind: UpstreamErrorKind,
    detail: str,
    *,
    code: grpc.StatusCode | None = None,
) -> GrpcUpstreamError:
    status, message = _STATUS[kind]
    return GrpcUpstreamError(
        kind,
        status,
        message.format(backend.id),
        backend_id=backend.id,
        detail=f"grpc {code.name}: {detail}" if code is not None else detail,
        code=code,
        details=detail if code is not None else None,
    )
