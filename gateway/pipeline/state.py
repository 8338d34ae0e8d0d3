"""What one request carries through the pipeline, whatever door it came in by.

`RequestState` starts with what the edge (REST or gRPC) knows: the pinned snapshot, the
decision id, the headers or metadata, the peer address and how to read the body. Each step
fills the fields it establishes; later steps and the record builders only read them. A step
ends the request by returning a `Reply` or raising `Refusal`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.privacy import Findings
from gateway.tfserving import Route

if TYPE_CHECKING:
    from gateway.edge.runtime import Runtime, Snapshot
    from gateway.pipeline.upstream import UpstreamResponse
    from gateway.policy import Decision
    from gateway.request.routing import BackendSpec
    from gateway.request.tenants import Tenant
    from gateway.tfserving.protos import RpcMethod

__all__ = ["Refusal", "Reply", "RequestState"]


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to send, in transport-neutral terms (the edge writes it)."""

    status: int
    body: bytes
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: A gRPC status to answer with as it is (a backend's own error, TF Serving's message
    #: for a malformed request): `(code, message)`.
    rpc_status: tuple[int, str] | None = None


class Refusal(Exception):
    """Ends the pipeline with a gateway-made answer, after a record of it is written.

    `outcome` is the record's `decision` (`reject` for gateway refusals); `reason` is a stable
    code (`unauthenticated`, `body_too_large`, ...).
    """

    def __init__(self, reply: Reply, *, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.outcome = outcome
        self.reason = reason


@dataclass(slots=True)
class RequestState:
    """One request's facts as the steps establish them (see the module docstring)."""

    runtime: Runtime
    snap: Snapshot
    decision_id: str
    started: float
    method: str
    #: The request target as sent (percent-encoded, with any query) and its decoded path.
    target: str
    path: str
    headers: Mapping[str, str]
    peer: str | None
    #: Reads the whole body (the edge knows how; it enforces size and time limits).
    read_body: Callable[[RequestState], Awaitable[bytes]]

    #: The TF Serving RPC of a gRPC request (None for REST).
    rpc: RpcMethod | None = None
    #: The parsed request message of a gRPC request.
    message: Any = None
    #: The byte strings of a gRPC request the model reads, by location.
    byte_values: dict[tuple[str | int, ...], bytes] = field(default_factory=dict)
    route: Route | None = None
    body: bytes = b""
    document: Any = None
    #: Every string value and key of `document`, when the parser had them (scan shortcut).
    strings: tuple[str, ...] | None = None
    located: bool = False
    client_ip: str = ""
    region: str | None = None
    region_claims: tuple[str, ...] = ()
    forwarding_anomalies: tuple[str, ...] = ()
    tenant: Tenant | None = None
    authenticated: bool = False
    scanned: bool = False
    findings: Findings | None = None
    found: list[tuple[str, str]] = field(default_factory=list)
    context: dict[str, Any] | None = None
    attested: bool = False
    decision: Decision | None = None
    candidates: tuple[BackendSpec, ...] = ()
    backend: BackendSpec | None = None
    rerouted: bool = False
    forward_body: bytes = b""
    masked: list[dict[str, str]] = field(default_factory=list)
    decision_written: bool = False
    upstream: UpstreamResponse | None = None
    response_body: bytes = b""
    marked_paths: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """The record's `decision` for an allowed request: `transform` when anything changed."""
        decision = self.decision
        changed = bool(self.masked) or self.rerouted
        if decision is not None:
            changed = changed or bool(decision.obligations.headers)
            changed = changed or bool(decision.obligations.image_marks)
        return "transform" if changed else "allow"
