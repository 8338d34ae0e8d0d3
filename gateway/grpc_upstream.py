"""Calling backends over gRPC: one pooled channel per backend, raw message bytes both ways.

The gateway relays the serialised request (masked or as sent) and the serialised response
without re-encoding them, so a backend's answer reaches the client byte for byte. Timeouts
are the backends' own (`timeouts.connect_s` to get a connection, `timeouts.read_s` for the
call); the idempotent calls (GetModelStatus, GetModelMetadata) are retried once when the
backend was unavailable. Errors keep the backend's status code and message for the client,
and carry the HTTP status the gateway's records and metrics use.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import grpc

from gateway.proxy import BackendSpec

__all__ = ["GrpcUpstream", "GrpcUpstreamError", "http_status_of"]

#: gRPC status code -> the HTTP status TF Serving's REST API gives the same error.
_HTTP_STATUS: Final = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
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
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_IDEMPOTENT: Final = frozenset(
    {
        "/tensorflow.serving.ModelService/GetModelStatus",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
    }
)
#: TF Serving answers messages up to 2 GiB; the gateway relays what the client may send.
_MESSAGE_LIMIT: Final = 2**31 - 1


def http_status_of(code: grpc.StatusCode) -> int:
    """The HTTP status of a gRPC status code (as TF Serving's REST API maps it)."""
    return _HTTP_STATUS.get(code, 500)


@dataclass(frozen=True)
class GrpcUpstreamError(Exception):
    """A backend call that did not succeed.

    `kind` is `unavailable` or `timeout` when the gateway could not get an answer (the
    message names the backend id, never its address), else `backend_status`: the backend's
    own error, relayed to the client unchanged.
    """

    code: int
    code_name: str
    message: str
    kind: str
    http_status: int


class GrpcUpstream:
    """One channel per backend, opened on first use and closed with `close()`."""

    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
                    ("grpc.max_send_message_length", _MESSAGE_LIMIT),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
            self._channels[address] = channel
        return channel

    async def call(
        self, backend: BackendSpec, path: str, request: bytes, *, decision_id: str
    ) -> bytes:
        """The serialised response of `path` on `backend` for the serialised `request`."""
        if backend.grpc is None:
            raise GrpcUpstreamError(
                grpc.StatusCode.UNAVAILABLE.value[0], "UNAVAILABLE",
                f"Backend {backend.id} has no gRPC address", "unavailable", 503,
            )  # fmt: skip
        attempts = 2 if path in _IDEMPOTENT else 1
        for attempt in range(attempts):
            try:
                return await self._call_once(backend, path, request, decision_id)
            except GrpcUpstreamError as error:
                if error.kind != "unavailable" or attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    async def _call_once(
        self, backend: BackendSpec, path: str, request: bytes, decision_id: str
    ) -> bytes:
        assert backend.grpc is not None
        channel = self._channel(backend.grpc)
        method = channel.unary_unary(path)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await channel.channel_ready()
        except TimeoutError:
            raise GrpcUpstreamError(
                grpc.StatusCode.UNAVAILABLE.value[0], "UNAVAILABLE",
                f"Backend {backend.id} is unavailable", "unavailable", 503,
            ) from None  # fmt: skip
        try:
            response: bytes = await method(
                request,
                timeout=self._read_timeout_s,
                metadata=(("x-decision-id", decision_id),),
            )
        except grpc.aio.AioRpcError as error:
            raise _upstream_error(backend, error) from None
        return response

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


def _upstream_error(backend: BackendSpec, error: grpc.aio.AioRpcError) -> GrpcUpstreamError:
    code = error.code()
    number, name = code.value[0], code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        return GrpcUpstreamError(
            number, name, f"Backend {backend.id} is unavailable", "unavailable", 503
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return GrpcUpstreamError(
            number, name, f"Backend {backend.id} did not answer in time", "timeout", 504
        )
    return GrpcUpstreamError(
        number, name, error.details() or "", "backend_status", http_status_of(code)
    )
