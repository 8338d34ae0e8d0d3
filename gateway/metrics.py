"""Prometheus metrics, on a registry owned by each app (never the global one).

Labels are bounded: effect, rule id, stage, backend id, status code, reload outcome. No
tenant, no client address, no model input ever becomes a label value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass
class GatewayMetrics:
    """All gateway metrics, registered on one private registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "jurisgate_requests",
            "Requests answered, by outcome and status",
            ["outcome", "status"],
            registry=r,
        )
        self.decisions = Counter(
            "jurisgate_decisions",
            "Policy decisions by effect and deciding rule",
            ["effect", "rule"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "jurisgate_stage_seconds",
            "Latency of each pipeline stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_latency = Histogram(
            "jurisgate_backend_seconds",
            "Backend round-trip time",
            ["backend", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_up = Gauge(
            "jurisgate_backend_up",
            "1 when the backend serves all its models",
            ["backend"],
            registry=r,
        )
        self.audit_queue_depth = Gauge(
            "jurisgate_audit_queue_depth", "Records waiting for the audit writer", registry=r
        )
        self.audit_fsync_seconds = Gauge(
            "jurisgate_audit_last_fsync_seconds", "Duration of the last audit fsync", registry=r
        )
        self.witness_lag_seconds = Gauge(
            "jurisgate_witness_lag_seconds",
            "Age of the oldest audit record the witness has not cosigned",
            ["witness"],
            registry=r,
        )
        self.witness_lag_records = Gauge(
            "jurisgate_witness_lag_records",
            "Audit records not yet covered by the witness's cosignature",
            ["witness"],
            registry=r,
        )
        self.witness_alarm = Gauge(
            "jurisgate_witness_alarm",
            "1 while the witness refuses the log's checkpoints (rollback, fork, unknown key)",
            ["witness"],
            registry=r,
        )
        self.witness_refusals = Gauge(
            "jurisgate_witness_refusals",
            "Answers other than 200 from the witness, by HTTP status, since start",
            ["witness", "status"],
            registry=r,
        )
        self.audit_failures = Counter(
            "jurisgate_audit_failures",
            "Requests refused because the audit log failed",
            registry=r,
        )
        self.reloads = Counter(
            "jurisgate_reloads",
            "Reloads of policies, tenants and configuration",
            ["what", "result"],
            registry=r,
        )
        self.policy_info = Gauge(
            "jurisgate_policy_revision_info",
            "The serving policy revision",
            ["revision"],
            registry=r,
        )
        self.sink_dropped = Gauge(
            "jurisgate_sink_dropped_events",
            "Events dropped by a full sink queue",
            ["sink"],
            registry=r,
        )
        self.masked_fields = Counter(
            "jurisgate_masked_fields",
            "Personal-data values masked before forwarding",
            ["category"],
            registry=r,
        )

        # Label children are cached: `labels()` costs microseconds on every request.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def count_request(self, outcome: str, status: int) -> None:
        """One answered request."""
        self._child(self.requests, outcome, str(status)).inc()

    def count_decision(self, effect: str, rule: str) -> None:
        """One policy decision and the rule that decided it."""
        self._child(self.decisions, effect, rule).inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Time spent in one pipeline stage."""
        self._child(self.stage_latency, stage).observe(seconds)

    def observe_backend(self, backend: str, status: int, seconds: float) -> None:
        """One backend round trip."""
        self._child(self.backend_latency, backend, str(status)).observe(seconds)

    def count_masked(self, category: str) -> None:
        """One personal-data value masked before forwarding."""
        self._child(self.masked_fields, category).inc()

    def set_policy_revision(self, revision: str) -> None:
        """Expose exactly one serving revision."""
        self.policy_info.clear()
        self.policy_info.labels(revision=revision).set(1)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
