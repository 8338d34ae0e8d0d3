"""What a backend call gives the pipeline: the backend's response, or an `UpstreamError`.

The edge's clients (`edge.proxy.UpstreamPool` for REST, `edge.grpc_upstream.GrpcUpstreams`
for gRPC) raise and return these; the pipeline's steps only read them, so the pipeline
needs nothing from the edge at run time.

Upstream failures become `UpstreamError` at the edge: connection refused or DNS failure ->
503 `unavailable`, any timeout -> 504 `timeout`, a broken or oversized response -> 502
`bad_response`. A backend's own error responses are not errors: they are relayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from gateway.tfserving import TfsError, tfs_error

if TYPE_CHECKING:
    import grpc

__all__ = ["GrpcUpstreamError", "UpstreamError", "UpstreamErrorKind", "UpstreamResponse"]

UpstreamErrorKind = Literal["unavailable", "timeout", "bad_response"]


class UpstreamError(Exception):
    """A backend could not be reached or did not answer properly.

    `message` is safe to show to clients (it names the backend id, never its URL); `detail`
    carries the underlying exception text for logs.
    """

    def __init__(
        self, kind: UpstreamErrorKind, status: int, message: str, *, backend_id: str, detail: str
    ) -> None:
        super().__init__(message)
        self.kind: UpstreamErrorKind = kind
        self.status = status
        self.message = message
        self.backend_id = backend_id
        self.detail = detail

    def to_tfs_error(self, **extra: str | int | bool | None) -> TfsError:
        """This error as a TF Serving error response (`{"error": ...}` plus `extra` members)."""
        return tfs_error(self.status, self.message, reason=f"upstream_{self.kind}", **extra)


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A backend's response: status, the relayed headers, and the body bytes unchanged."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)

    @property
    def content_type(self) -> str | None:
        """The Content-Type header, if the backend sent one."""
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value
        return None


class GrpcUpstreamError(UpstreamError):
    """A gRPC backend could not be reached or did not answer in time.

    `code` and `details` are the gRPC status that caused it (the backend's, when it answered
    UNAVAILABLE or DEADLINE_EXCEEDED itself), None for a failed or slow connection.
    """

    def __init__(
        self,
        kind: UpstreamErrorKind,
        status: int,
        message: str,
        *,
        backend_id: str,
        detail: str,
        code: grpc.StatusCode | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(kind, status, message, backend_id=backend_id, detail=detail)
        self.code = code
        self.details = details
