"""The gateway's state: an immutable `Snapshot` per revision and the long-lived `Runtime`.

Rule 1: everything a request evaluates under (config, compiled policies, tenants, region
table, backends) lives in one frozen `Snapshot`. A reload builds a complete new snapshot
and swaps one reference, so a request that started under revision A finishes under A.
Rule 2: the `Runtime` owns the I/O objects that outlive reloads: the one upstream
`ClientSession` pool, the audit writer, the event sinks, the metrics registry.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.audit import AuditLog, PayloadDigester, minimise_ip
from gateway.config.loader import GatewayConfig
from gateway.config.webhooks import SALE_OR_SHARE
from gateway.edge.metrics import GatewayMetrics
from gateway.edge.proxy import UpstreamPool
from gateway.edge.sinks import EventSinks
from gateway.lru import LruCache
from gateway.policy import Decision, LegalBasis, PolicySet, Problem, Remedy
from gateway.policy.decision import SinkSuppression
from gateway.request.clientip import ClientIPConfig, ClientResolution, resolve_client
from gateway.request.geo import RegionLookup
from gateway.request.regions import RegionGroups
from gateway.request.routing import BackendSpec
from gateway.request.tenants import TenantRegistry
from gateway.witness.client import CheckpointWitnessing

if TYPE_CHECKING:
    # Imported when the app starts (it loads grpc); commands without a server never do.
    from gateway.edge.grpc_upstream import GrpcUpstreams

__all__ = ["DECISION_ID", "RUNTIME", "Runtime", "Snapshot", "build_backends"]

_IP_CACHE_SIZE = 65536

DECISION_ID = web.RequestKey("jurisgate.decision_id", str)


def build_backends(config: GatewayConfig) -> tuple[BackendSpec, ...]:
    """Backends with the catalogue attributes of each model they serve."""
    return tuple(
        BackendSpec(
            id=b.id,
            url=b.url,
            region=b.region,
            models={name: dict(config.models.get(name, {"id": name})) for name in b.models},
            transfer_mechanisms=b.transfer_mechanisms,
            weight=b.weight,
            grpc=b.grpc,
        )
        for b in config.backends
    )


@dataclass(frozen=True)
class Snapshot:
    """Everything one request is evaluated under; replaced whole on reload."""

    config: GatewayConfig
    policy_set: PolicySet
    tenants: TenantRegistry
    regions: RegionLookup
    client_ip: ClientIPConfig
    backends: tuple[BackendSpec, ...]
    sink_views: tuple[Mapping[str, Any], ...] = ()
    _by_model: Mapping[str, tuple[BackendSpec, ...]] = field(default_factory=dict, repr=False)
    _client_headers: tuple[str, ...] = field(default=(), repr=False)
    _by_peer: LruCache[str | None, ClientResolution] = field(
        default_factory=lambda: LruCache(_IP_CACHE_SIZE), repr=False
    )

    def __post_init__(self) -> None:
        by_model: dict[str, list[BackendSpec]] = {}
        for backend in self.backends:
            for model in backend.models:
                by_model.setdefault(model, []).append(backend)
        object.__setattr__(self, "_by_model", {k: tuple(v) for k, v in by_model.items()})
        names = ["X-Forwarded-For", "Forwarded", *self.client_ip.claim_headers]
        if self.client_ip.trusted_region_header:
            names.append(self.client_ip.trusted_region_header)
        object.__setattr__(self, "_client_headers", tuple(names))

    @cached_property
    def region_groups(self) -> RegionGroups:
        """The routing groups of the policy vocabulary in force (read once per snapshot)."""
        return RegionGroups.from_vocabulary(self.policy_set.vocabulary.groups)

    def resolve_client(self, peer: str | None, headers: Mapping[str, str]) -> ClientResolution:
        """`clientip.resolve_client` under this snapshot's settings.

        A request without any forwarding or region header resolves from its TCP peer alone,
        so that answer is kept per peer (bounded; the snapshot is replaced on reload, and
        the region table with it). `headers` must match names case-insensitively, as
        aiohttp's request headers do.
        """
        for name in self._client_headers:
            if name in headers:
                return resolve_client(peer, headers, self.client_ip, self.regions)
        known = self._by_peer.get(peer)
        if known is None:
            known = resolve_client(peer, (), self.client_ip, self.regions)
            self._by_peer.put(peer, known)
        return known

    def region_lookup(self, ip: str) -> str | None:
        """The region of a client address (CIDR table, then GeoIP database)."""
        return self.regions.region_of(ip)

    def backends_for(self, model: str) -> tuple[BackendSpec, ...]:
        """Backends that serve `model`, in configuration order."""
        return self._by_model.get(model, ())

    def model_attributes(self, model: str) -> Mapping[str, Any] | None:
        """The catalogue record of `model` (kind, output, placed on market, ...)."""
        attrs = self.config.models.get(model)
        return attrs if attrs is not None else None

    def residency_denial(self, decision: Decision) -> Decision:
        """Turn an allow whose routing constraint no backend meets into a 451."""
        routing = decision.obligations.routing
        regions = ", ".join(routing.allowed_regions) if routing else "(none)"
        basis = decision.legal_basis or (
            LegalBasis("GATEWAY", "no backend in an allowed region", None),
        )
        problem = Problem(
            type="legal",
            title="No backend in an allowed region",
            detail=f"the data of this request may only be processed in {regions}, and no "
            "backend serving this model is there",
            remedy=Remedy(
                text="ask the operator for a backend in an allowed region, or send data "
                "whose residency rules allow the available regions"
            ),
        )
        return decision._replace(
            effect="deny",
            status=451,
            stage="residency",
            problem=problem,
            legal_basis=tuple(basis),
        )


@dataclass
class Runtime:
    """Long-lived state of one gateway process."""

    snapshot: Snapshot
    upstream: UpstreamPool
    audit: AuditLog
    sinks: EventSinks | None
    metrics: GatewayMetrics
    digester: PayloadDigester
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """UTC clock; injectable so tests can pin `now` (licence dates, commencement dates)."""
    unavailable_backends: Collection[str] = field(default_factory=frozenset)
    #: Pooled gRPC channels to the backends' gRPC addresses (`backends[].grpc`).
    grpc_upstream: GrpcUpstreams | None = None
    last_reload: dict[str, Any] = field(default_factory=dict)
    #: The payload HMAC key (the digester's); also the keyed-hash masking key when
    #: `privacy.hmac_key` is not configured.
    masking_key: bytes = b""
    #: The port the gRPC front door listens on (0 when it is off).
    grpc_port: int = 0
    #: The background submitter of audit checkpoints to witnesses (None: none configured).
    witnessing: CheckpointWitnessing | None = None
    _ip_fields: LruCache[str, tuple[str | None, str | None]] = field(
        default_factory=lambda: LruCache(_IP_CACHE_SIZE)
    )

    def keyed_digest(self, payload: bytes) -> str:
        """Keyed (HMAC) digest of payload bytes: never the payload itself.

        The digester's: the audit record's `req_mac`, `resp_mac` and `end_user_mac`.
        """
        return self.digester.digest(payload)

    def client_ip_fields(self, ip: str) -> tuple[str | None, str | None]:
        """The address as the audit record keeps it: network prefix and keyed digest.

        Cached per address: clients repeat, and the work is the same every time.
        """
        cached = self._ip_fields.get(ip)
        if cached is not None:
            return cached
        if not ip:
            return (None, None)
        try:
            prefix: str | None = minimise_ip(ip)
        except ValueError:
            prefix = None
        fields = (prefix, self.keyed_digest(ip.encode()))
        self._ip_fields.put(ip, fields)
        return fields

    def emit_event(
        self,
        snap: Snapshot,
        *,
        decision_id: str,
        tenant: str | None,
        outcome: str,
        rules: Sequence[str],
        categories: Sequence[str],
        suppression: SinkSuppression | None,
    ) -> list[str]:
        """Queue a decision event for the sinks this decision did not suppress.

        A denied request reaches no third party: sale-or-share sinks get nothing for it.
        """
        if self.sinks is None:
            return []
        suppressed: set[str] = set()
        suppressed_ids: tuple[str, ...] = ()
        if suppression is not None:
            suppressed.update(suppression.categories)
            suppressed_ids = suppression.sinks
            if suppression.sale_or_share:
                suppressed.add(SALE_OR_SHARE)
        if outcome == "deny":
            suppressed.add(SALE_OR_SHARE)
        shared: Sequence[str] = ()
        if tenant is not None:
            record = snap.tenants.get(tenant)
            if record is not None:
                shared = record.shares_with
        return self.sinks.emit(
            {
                "decision_id": decision_id,
                "tenant": tenant,
                "effect": outcome,
                "rules": list(rules),
                "personal_data": list(categories),
            },
            suppressed_categories=frozenset(suppressed),
            suppressed_sinks=suppressed_ids,
            shared_with=shared,
        )


RUNTIME = web.AppKey("jurisgate.runtime", Runtime)
