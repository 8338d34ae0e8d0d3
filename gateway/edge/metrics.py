"""Prometheus metrics, on a registry owned by each app (never the global one).

Names follow the Prometheus conventions: counters end in `_total`, durations are histograms
named `..._duration_seconds`, state owned elsewhere (the audit writer, witnesses, sinks) is
read by a collector at scrape time instead of being copied into gauges, and no `_created`
series doubles the output. Labels are bounded: effect, rule id, stage, backend id, status
code, reload result, witness and sink ids. No tenant, no client address, no model input ever
becomes a label value.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector

from gateway import __version__

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics", "ScrapeState", "WitnessState"]

# `_created` series carry no information an operator uses and double every counter's output;
# the switch is process-wide, and the gateway process owns its exposition.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
_APPEND_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
)  # fmt: skip


@dataclass(frozen=True)
class WitnessState:
    """One witness as seen at scrape time."""

    name: str
    lag_seconds: float
    lag_records: int
    alarm: bool
    refusals: dict[int, int]


@dataclass(frozen=True)
class ScrapeState:
    """Everything the collector exposes, read at once at scrape time."""

    audit_queue_depth: int
    audit_last_fsync_seconds: float
    witnesses: tuple[WitnessState, ...] = ()
    sink_dropped: dict[str, int] = field(default_factory=dict)
    sink_delivered: dict[str, int] = field(default_factory=dict)
    sink_failed: dict[str, int] = field(default_factory=dict)


class _StateCollector(Collector):
    """Reads the audit writer, witnesses and sinks when Prometheus scrapes."""

    def __init__(self) -> None:
        self.source: Callable[[], ScrapeState | None] = lambda: None

    def collect(self) -> Iterator[Metric]:
        state = self.source()
        if state is None:
            return
        yield GaugeMetricFamily(
            "jurisgate_audit_queue_depth",
            "Records waiting for the audit writer",
            value=state.audit_queue_depth,
        )
        yield GaugeMetricFamily(
            "jurisgate_audit_last_fsync_duration_seconds",
            "Duration of the last audit fsync",
            value=state.audit_last_fsync_seconds,
        )
        lag_s = GaugeMetricFamily(
            "jurisgate_witness_lag_seconds",
            "Age of the oldest audit record the witness has not cosigned",
            labels=["witness"],
        )
        lag_n = GaugeMetricFamily(
            "jurisgate_witness_lag_records",
            "Audit records not yet covered by the witness's cosignature",
            labels=["witness"],
        )
        alarm = GaugeMetricFamily(
            "jurisgate_witness_alarm",
            "1 while the witness refuses the log's checkpoints (rollback, fork, unknown key)",
            labels=["witness"],
        )
        refusals = CounterMetricFamily(
            "jurisgate_witness_refusals",
            "Answers other than 200 from the witness, by HTTP status",
            labels=["witness", "status"],
        )
        for w in state.witnesses:
            lag_s.add_metric([w.name], w.lag_seconds)
            lag_n.add_metric([w.name], w.lag_records)
            alarm.add_metric([w.name], 1 if w.alarm else 0)
            for code, count in sorted(w.refusals.items()):
                refusals.add_metric([w.name, str(code)], count)
        yield from (lag_s, lag_n, alarm, refusals)
        for name, help_text, values in (
            ("jurisgate_sink_dropped_events", "Events dropped by a full sink queue",
             state.sink_dropped),
            ("jurisgate_sink_delivered_events", "Events delivered to a sink",
             state.sink_delivered),
            ("jurisgate_sink_failed_events", "Events a sink gave up on", state.sink_failed),
        ):  # fmt: skip
            family = CounterMetricFamily(name, help_text, labels=["sink"])
            for sink, count in sorted(values.items()):
                family.add_metric([sink], count)
            yield family


@dataclass
class GatewayMetrics:
    """All gateway metrics, registered on one private registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        build = Gauge(
            "jurisgate_build_info",
            "Always 1; the labels name the running build",
            ["version", "python"],
            registry=r,
        )
        build.labels(version=__version__, python=platform.python_version()).set(1)
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
            "jurisgate_stage_duration_seconds",
            "Time spent in each pipeline stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_latency = Histogram(
            "jurisgate_backend_request_duration_seconds",
            "Backend round-trip time",
            ["backend", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_append_latency = Histogram(
            "jurisgate_audit_append_duration_seconds",
            "Time from handing a record to the audit log to its durable, signed append",
            buckets=_APPEND_BUCKETS,
            registry=r,
        )
        self.backend_up = Gauge(
            "jurisgate_backend_up",
            "1 when the backend served all its models at the last readiness probe",
            ["backend"],
            registry=r,
        )
        self.audit_failures = Counter(
            "jurisgate_audit_failures",
            "Requests refused because the audit log failed",
            registry=r,
        )
        self.reloads = Counter(
            "jurisgate_reloads",
            "Reloads of configuration, policies and tenants, by result",
            ["result"],
            registry=r,
        )
        self.policy_info = Gauge(
            "jurisgate_policy_revision_info",
            "Always 1; the label names the serving policy revision",
            ["revision"],
            registry=r,
        )
        self.masked_fields = Counter(
            "jurisgate_masked_fields",
            "Personal-data values masked before forwarding",
            ["category"],
            registry=r,
        )
        self._state = _StateCollector()
        r.register(self._state)

        # Label children are cached: `labels()` costs microseconds on every request.
        self._children: dict[tuple[object, ...], Any] = {}

    def read_state_from(self, source: Callable[[], ScrapeState | None]) -> None:
        """Expose the live state `source` returns at every scrape."""
        self._state.source = source

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

    def observe_audit_append(self, seconds: float) -> None:
        """One record appended (durably, when `audit.durability` is strict)."""
        self.audit_append_latency.observe(seconds)

    def count_masked(self, category: str) -> None:
        """One personal-data value masked before forwarding."""
        self._child(self.masked_fields, category).inc()

    def count_reload(self, result: str) -> None:
        """One reload, `ok` or `error`."""
        self._child(self.reloads, result).inc()

    def set_policy_revision(self, revision: str) -> None:
        """Expose exactly one serving revision."""
        with warnings.catch_warnings():
            # Workers (`workers` > 1) expose the revision from each process's own registry,
            # where clearing works; prometheus_client warns because its files cannot.
            warnings.simplefilter("ignore", UserWarning)
            self.policy_info.clear()
        self.policy_info.labels(revision=revision).set(1)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
