"""Health and readiness: `/healthz`, `/readyz`, and the live state `/metrics` reads."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.edge.metrics import ScrapeState, WitnessState
from gateway.edge.runtime import RUNTIME, Runtime

__all__ = ["healthz", "readiness", "readyz", "scrape_state"]


async def healthz(request: web.Request) -> web.Response:
    """`GET /healthz`: the process answers."""
    return web.json_response({"status": "ok"})


async def readiness(runtime: Runtime) -> dict[str, Any]:
    """Readiness: policies loaded, audit writer healthy, a backend serving each model."""
    snap = runtime.snapshot
    models: dict[str, bool] = {}
    probes = await asyncio.gather(*(runtime.upstream.probe_backend(b) for b in snap.backends))
    unavailable: set[str] = set()
    for backend, result in zip(snap.backends, probes, strict=True):
        up = all(result.values()) if result else False
        runtime.metrics.backend_up.labels(backend=backend.id).set(1 if up else 0)
        if not up:
            unavailable.add(backend.id)
        for model, ok in result.items():
            models[model] = models.get(model, False) or ok
    audit_ok = runtime.audit.healthy
    ready = audit_ok and all(models.values()) and bool(models)
    stats = runtime.audit.stats()
    reasons: list[str] = []
    if not audit_ok:
        reasons.append(f"audit log unavailable: {runtime.audit.failure or 'closed'}")
    witnesses: dict[str, Any] = {}
    if runtime.witnessing is not None:
        witnesses = runtime.witnessing.report()
        alarms = runtime.witnessing.alarms()
        reasons.extend(alarms)
        ready = ready and not alarms
    return {
        "ready": ready,
        "reasons": reasons,
        "policy_revision": snap.policy_set.revision,
        "audit": {"healthy": audit_ok, "size": stats.size, "failure": runtime.audit.failure},
        "models": models,
        "unavailable_backends": sorted(unavailable),
        "witnesses": witnesses,
    }


def scrape_state(runtime: Runtime) -> ScrapeState:
    """The live state `/metrics` exposes, read when Prometheus scrapes."""
    stats = runtime.audit.stats()
    witnesses: list[WitnessState] = []
    if runtime.witnessing is not None:
        witnessing = runtime.witnessing
        for status in witnessing.statuses:
            witnesses.append(
                WitnessState(
                    name=status.endpoint.name,
                    lag_seconds=witnessing.lag_seconds(status),
                    lag_records=max(stats.size - (status.size or 0), 0),
                    alarm=bool(status.alarm),
                    refusals=dict(status.refusals),
                )
            )
    sinks = runtime.sinks.stats() if runtime.sinks is not None else {}
    return ScrapeState(
        audit_queue_depth=stats.queue_depth,
        audit_last_fsync_seconds=stats.last_fsync_seconds,
        witnesses=tuple(witnesses),
        sink_dropped={k: v.dropped for k, v in sinks.items()},
        sink_delivered={k: v.delivered for k, v in sinks.items()},
        sink_failed={k: v.failed for k, v in sinks.items()},
    )


async def readyz(request: web.Request) -> web.Response:
    """`GET /readyz`: 200 when ready, 503 with the reasons otherwise."""
    report = await readiness(request.app[RUNTIME])
    return web.json_response(report, status=200 if report["ready"] else 503)
