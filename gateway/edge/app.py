"""Build and run the gateway: the aiohttp applications, their lifetimes and reloads.

Two listeners:
* the public one speaks the TF Serving REST surface (every path goes through the policy
  pipeline; `/healthz` and `/readyz` are the only gateway-owned paths on it);
* the admin one (loopback by default) serves `/metrics` and, with the bearer token,
  `/admin/v1/*`: decide-and-explain without forwarding, revision, reload.

`cleanup_ctx` owns the one `ClientSession` pool, the gRPC channels to the backends, the audit
writer and the event sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.audit import AuditError, AuditLog, AuditOptions
from gateway.audit.witness import CosignerKey
from gateway.config.loader import ConfigError, GatewayConfig, load_config
from gateway.edge.admin import create_admin_app
from gateway.edge.audit_keys import load_signer, payload_digester
from gateway.edge.handlers import handle_tfserving
from gateway.edge.health import healthz, readyz, scrape_state
from gateway.edge.http_server import make_runner
from gateway.edge.metrics import GatewayMetrics
from gateway.edge.middleware import decision_id_middleware, new_decision_id
from gateway.edge.proxy import UpstreamPool
from gateway.edge.reload import (
    SnapshotError,
    build_snapshot,
    keep_revision,
    settle_heap,
    watch_for_reloads,
)
from gateway.edge.runtime import RUNTIME, Runtime, Snapshot
from gateway.edge.sinks import EventSinks
from gateway.edge.workers import WORKER_SIDE, worker_side_for
from gateway.errors import format_diagnostics
from gateway.witness.client import CheckpointWitnessing, WitnessEndpoint, witnessed_heads

__all__ = ["create_app", "run_gateway"]


log = logging.getLogger("jurisgate")


def _audit_options(config: GatewayConfig, clock: Callable[[], datetime] | None) -> AuditOptions:
    """The audit writer's options from the `audit` section (and a test clock, if any)."""
    options = AuditOptions(
        durability="strict" if config.audit.durability == "strict" else "relaxed-no-fsync",
        max_batch_records=config.audit.group_commit_max_records,
        max_batch_delay=config.audit.group_commit_max_delay_ms / 1000.0,
        record_signatures=config.audit.per_record_signatures,
        default_retention_days=config.audit.retention_default_days,
        max_unsynced_records=config.audit.max_unsynced_records,
    )
    return options if clock is None else replace(options, clock=clock)


def _upstream_pool(config: GatewayConfig) -> UpstreamPool:
    """The REST upstream pool, bounded as the `timeouts` and `pool` sections say."""
    return UpstreamPool(
        connect_timeout=config.connect_timeout_s,
        read_timeout=config.read_timeout_s,
        limit=config.pool.limit,
        limit_per_host=config.pool.limit_per_host,
        keepalive_timeout=config.pool.keepalive_timeout_s,
        max_response_bytes=config.pool.max_response_bytes,
    )


def _event_sinks(config: GatewayConfig, upstream: UpstreamPool) -> EventSinks | None:
    """The decision-event webhooks of the `sinks` section, over the upstream pool's session."""
    if not config.sinks:
        return None
    return EventSinks(upstream.session, config.sinks)


async def _start_grpc_front_door(
    runtime: Runtime, config: GatewayConfig
) -> Callable[[], Awaitable[None]]:
    """Start the gRPC front door; returns its `stop`. A port in use is a `SnapshotError`."""
    from gateway.edge.grpc_server import GrpcFrontDoor

    front_door = GrpcFrontDoor(runtime, config.grpc, new_decision_id)
    try:
        runtime.grpc_port = await front_door.start()
    except (RuntimeError, OSError) as exc:
        raise SnapshotError(
            f"{config.source}: grpc: cannot listen on "
            f"{config.grpc.host}:{config.grpc.port}: {exc}\n"
            "  help: change grpc.port (or grpc.tls), or stop what holds the port"
        ) from None
    return front_door.stop


def create_app(
    config: GatewayConfig,
    *,
    clock: Callable[[], datetime] | None = None,
    snapshot: Snapshot | None = None,
) -> web.Application:
    """The public application (TF Serving surface + health); its runtime starts with it."""
    # The pipeline reads bodies itself under `limits.max_body_bytes`; aiohttp's own buffered
    # `request.read()` is never used on this app, so its limit is set to refuse everything.
    app = web.Application(middlewares=[decision_id_middleware], client_max_size=1)
    snap = snapshot or build_snapshot(config)
    metrics = GatewayMetrics()
    metrics.set_policy_revision(snap.policy_set.revision)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        signer = load_signer(config)
        digester, masking_key = payload_digester(config)
        options = _audit_options(config, clock)
        endpoints = [
            WitnessEndpoint(CosignerKey.from_vkey(w.key), w.url) for w in config.audit.witnesses
        ]
        # Every resource is registered for closing as soon as it is open, so a start that
        # fails half-way (a gRPC port in use, a refused audit recovery) closes what it had
        # opened; the callbacks run in reverse, the order a normal shutdown needs.
        async with contextlib.AsyncExitStack() as resources:
            witness_session = aiohttp.ClientSession() if endpoints else None
            if witness_session is not None:
                resources.push_async_callback(witness_session.close)
            witnessing: CheckpointWitnessing | None = None

            async def close_witnessing() -> None:
                if witnessing is not None:
                    # Once more, with the `stop` record's checkpoint.
                    await witnessing.close()

            resources.push_async_callback(close_witnessing)
            witnessed = (
                await witnessed_heads(
                    witness_session,
                    config.audit.directory,
                    endpoints,
                    config.origin,
                    config.audit.witness_timeout_s,
                )
                if witness_session is not None
                else []
            )
            audit = await AuditLog.open(
                config.audit.directory,
                signer,
                origin=config.origin,
                options=options,
                witnessed=witnessed,
            )
            resources.push_async_callback(audit.close)
            if witness_session is not None:
                witnessing = CheckpointWitnessing(
                    audit,
                    endpoints,
                    witness_session,
                    interval=config.audit.witness_interval_s,
                    timeout=config.audit.witness_timeout_s,
                )
                witnessing.start()
            from gateway.edge.grpc_upstream import GrpcUpstreams

            # Channels open on first use: a gateway without gRPC traffic starts none.
            grpc_upstream = GrpcUpstreams(
                connect_timeout=config.connect_timeout_s, read_timeout=config.read_timeout_s
            )
            resources.push_async_callback(grpc_upstream.close)
            upstream = _upstream_pool(config)
            await upstream.start()
            resources.push_async_callback(upstream.close)
            sinks = _event_sinks(config, upstream)
            if sinks is not None:
                resources.push_async_callback(sinks.close)
                sinks.start()
            runtime = Runtime(
                snapshot=snap,
                upstream=upstream,
                audit=audit,
                sinks=sinks,
                metrics=metrics,
                digester=digester,
                masking_key=masking_key,
                grpc_upstream=grpc_upstream,
                witnessing=witnessing,
            )
            if clock is not None:
                runtime.clock = clock
            metrics.read_state_from(lambda: scrape_state(runtime))
            runtime.last_reload = {"result": "ok", "trigger": "start",
                                   "revision": snap.policy_set.revision}  # fmt: skip
            app[RUNTIME] = runtime
            keep_revision(snap)
            if config.grpc.enabled:
                resources.push_async_callback(await _start_grpc_front_door(runtime, config))
            yield

    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_route("*", "/{tail:.*}", handle_tfserving)
    return app


def _start_failure(config: GatewayConfig, exc: SnapshotError | AuditError | OSError) -> str:
    """What to print when the public app cannot start (no traceback: it would bury it)."""
    if isinstance(exc, SnapshotError):
        return exc.diagnostics_text
    if isinstance(exc, AuditError):
        # A refused recovery, a wrong passphrase, a locked log: the message says what and where.
        return f"{config.source}: audit: {exc}"
    return (
        f"{config.source}: audit.directory `{config.audit.directory}`: cannot start: "
        f"{exc.strerror or exc} (errno {exc.errno}, {exc.filename or 'no path'})\n"
        "  help: the gateway needs to create and write files there"
    )


async def _start_admin(app: web.Application, config: GatewayConfig) -> web.AppRunner | None:
    """Start the admin listener when the configuration enables it."""
    if not config.admin.enabled:
        return None
    admin_runner = make_runner(create_admin_app(app), config.client_timeouts, access_log=None)
    await admin_runner.setup()
    # Sibling workers (`workers` > 1) listen on the same ports; the kernel spreads connections.
    await web.TCPSite(
        admin_runner, config.admin.host, config.admin.port, reuse_port=config.worker is not None
    ).start()
    return admin_runner


async def run_gateway(
    config_path: Path,
    *,
    ready: Callable[[str], None] | None = None,
    shutdown_deadline_s: float = 20.0,
) -> int:
    """Run the gateway until SIGTERM/SIGINT; reload on SIGHUP and on file changes."""
    try:
        config = load_config(config_path)
        snapshot = build_snapshot(config)
    except ConfigError as exc:
        print(format_diagnostics(exc.diagnostics(), cap=None), flush=True)
        return 3
    except SnapshotError as exc:
        print(exc.diagnostics_text, flush=True)
        return 3
    app = create_app(config, snapshot=snapshot)
    # SECURITY: bodies are inflated by the gateway under its own limit, never by aiohttp.
    runner = make_runner(
        app,
        config.client_timeouts,
        auto_decompress=False,
        access_log=None,
        shutdown_timeout=shutdown_deadline_s,
        handle_signals=False,
    )
    try:
        await runner.setup()
    except (SnapshotError, AuditError, OSError) as exc:
        print(_start_failure(config, exc), flush=True)
        return 3
    site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True,
                       reuse_port=config.worker is not None)  # fmt: skip
    await site.start()
    runtime = app[RUNTIME]
    worker_side = worker_side_for(config, runtime.metrics)
    if worker_side is not None:
        app[WORKER_SIDE] = worker_side
    admin_runner = await _start_admin(app, config)
    if worker_side is not None:
        await worker_side.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reload_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    watcher = asyncio.create_task(watch_for_reloads(runtime, reload_requested))
    settle_heap()
    if ready is not None:
        ready(f"http://{config.listen_host}:{config.listen_port}")
    await stop.wait()
    log.info("shutting down: finishing requests in flight")
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    if worker_side is not None:
        await worker_side.close()
    if admin_runner is not None:
        await admin_runner.cleanup()
    await runner.cleanup()  # stops accepting, waits for in-flight requests, closes the log
    return 0


def replace_snapshot_for_tests(runtime: Runtime, **changes: Any) -> None:
    """Swap fields of the serving snapshot (tests that simulate a reload)."""
    runtime.snapshot = replace(runtime.snapshot, **changes)
