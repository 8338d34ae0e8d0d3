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
import gc
import hmac
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.app_state import DECISION_ID, RUNTIME, Runtime, Snapshot, build_backends
from gateway.audit import AuditError, AuditLog, AuditOptions, PayloadDigester, Signer
from gateway.audit.payload_key import LEGACY_KEY_FILE as LEGACY_PAYLOAD_KEY_FILE
from gateway.audit.payload_key import load_or_create_payload_key
from gateway.audit.witness import CosignerKey
from gateway.clientip import CachedRegionLookup, ClientIPConfig, RegionTable
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.context import ClientFacts, ContextError, RouteFacts, build_context, find_licence
from gateway.errors import DiagnosticError, format_diagnostics
from gateway.handlers import handle_tfserving
from gateway.http_server import make_runner
from gateway.logs import ACCESS_LOGGER, describe_exception
from gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics, ScrapeState, WitnessState
from gateway.policy import load_policy_set
from gateway.policy.loader import tree_files
from gateway.policy_revisions import STORE_DIR, store_revision
from gateway.proxy import UpstreamPool
from gateway.sinks import EventSinks, SinkSpec
from gateway.tenants import TenantRegistry
from gateway.tfserving import error_body
from gateway.witness.client import CheckpointWitnessing, WitnessEndpoint, witnessed_heads

__all__ = [
    "build_snapshot",
    "create_admin_app",
    "create_app",
    "reload_snapshot",
    "run_gateway",
]

log = logging.getLogger("jurisgate")

DECISION_HEADER = "X-Decision-Id"


class _DecisionIds:
    """Random (version 4) UUIDs, with the operating system's randomness fetched in blocks.

    One `getrandom` call per 256 ids instead of one per request: each call also lets go of
    the GIL, and under load the audit writer's threads take it, so the event loop waits.
    Called from the event loop only.
    """

    _BLOCK = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0

    def __call__(self) -> str:
        start = self._next
        if start >= len(self._pool):
            self._pool = os.urandom(self._BLOCK)
            start = 0
        self._next = start + 16
        return str(uuid.UUID(bytes=self._pool[start : start + 16], version=4))


_new_decision_id = _DecisionIds()


@web.middleware
async def decision_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give every request a decision id, return it in `X-Decision-Id`, and turn crashes into
    TF-Serving-shaped 500s that carry it (never a stack trace)."""
    decision_id = _new_decision_id()
    request[DECISION_ID] = decision_id
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            exc.headers[DECISION_HEADER] = decision_id
            raise
        # aiohttp's own refusals (e.g. a malformed request line) in TF Serving's error shape.
        response = web.Response(
            status=exc.status,
            body=error_body(exc.reason or "error", decision_id=decision_id),
            content_type="application/json",
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # SECURITY: the exception's text may quote the request; log its type and place only.
        log.error("request failed: %s", describe_exception(exc), extra={"decision_id": decision_id})
        response = web.Response(
            status=500,
            body=error_body("Internal gateway error", decision_id=decision_id),
            content_type="application/json",
        )
    response.headers[DECISION_HEADER] = decision_id
    runtime = request.app.get(RUNTIME)
    if runtime is not None and runtime.snapshot.config.access_log:
        _log_access(request, response, decision_id, time.perf_counter() - started)
    return response


_access_log = logging.getLogger(ACCESS_LOGGER)


def _log_access(
    request: web.Request, response: web.StreamResponse, decision_id: str, seconds: float
) -> None:
    # No client address, query string or header value: the path (model, version, method)
    # and the outcome are what an operator correlates with the audit record.
    _access_log.info(
        "%s %s %d",
        request.method,
        request.rel_url.path,
        response.status,
        extra={
            "method": request.method,
            "path": request.rel_url.path,
            "status": response.status,
            "duration_ms": round(seconds * 1000, 3),
            "bytes": response.content_length,
            "decision_id": decision_id,
        },
    )


class SnapshotError(Exception):
    """Building a snapshot failed; `diagnostics_text` is ready to print."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.diagnostics_text = text


def build_snapshot(config: GatewayConfig) -> Snapshot:
    """Compile policies, load tenants and the region table for `config`.

    Raises `SnapshotError` with every diagnostic; nothing is half-applied.
    """
    result = load_policy_set(list(config.policy_paths))
    if result.policy_set is None:
        raise SnapshotError(format_diagnostics(result.diagnostics, cap=None))
    try:
        tenants = (
            TenantRegistry.load(config.tenants_file, default_tenant=config.default_tenant)
            if config.tenants_file is not None
            else TenantRegistry.empty(default_tenant=config.default_tenant)
        )
    except DiagnosticError as exc:
        raise SnapshotError(format_diagnostics(exc.diagnostics(), cap=None)) from None
    try:
        regions = RegionTable.from_sources(
            entries=config.geoip_entries,
            table_file=config.geoip_table,
            mmdb_file=config.geoip_mmdb,
        )
    except DiagnosticError as exc:
        raise SnapshotError(format_diagnostics(exc.diagnostics(), cap=None)) from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{config.source}: network.geoip: {exc}") from None
    sinks = tuple(
        {"id": s.id, "category": s.category, "is_sale_or_share": s.is_sale_or_share}
        for s in config.sinks
    )
    return Snapshot(
        config=config,
        policy_set=result.policy_set,
        tenants=tenants,
        regions=CachedRegionLookup(regions),
        client_ip=ClientIPConfig(
            trusted_proxies=config.trusted_proxies,
            forwarded_header="forwarded"
            if config.forwarded_header == "forwarded"
            else "x-forwarded-for",
            claim_headers=(config.headers.geo_claim,),
            trusted_region_header=config.trusted_region_header,
        ),
        backends=build_backends(config),
        sink_views=sinks,
    )


def _keep_revision(snapshot: Snapshot) -> None:
    """File the serving policy revision beside the audit log, so its decisions can be
    re-derived (`jurisgate audit verify --replay`)."""
    config = snapshot.config
    try:
        store_revision(
            config.audit.directory / STORE_DIR,
            list(config.policy_paths),
            snapshot.policy_set.revision,
        )
    except OSError as exc:
        log.error(
            "could not keep policy revision %s in %s: %s",
            snapshot.policy_set.revision, config.audit.directory / STORE_DIR, exc.strerror,
        )  # fmt: skip


async def reload_snapshot(runtime: Runtime, *, trigger: str) -> dict[str, Any]:
    """Reload configuration, policies and tenants; keep the old snapshot on any error.

    A successful reload that changes the policy revision writes a `policy_change` record.
    """
    old = runtime.snapshot
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        config = load_config(old.config.source, old.config.environ)
        if config.audit.directory != old.config.audit.directory:
            raise SnapshotError(
                f"{config.source}: audit.directory cannot change while running "
                f"(`{old.config.audit.directory}` -> `{config.audit.directory}`); restart"
            )
        snapshot = build_snapshot(config)
    except ConfigError as exc:
        text = format_diagnostics(exc.diagnostics(), cap=None)
        return _reload_failed(runtime, trigger, started, text)
    except SnapshotError as exc:
        return _reload_failed(runtime, trigger, started, exc.diagnostics_text)
    except Exception as exc:  # noqa: BLE001 - nothing may escape the reload boundary
        log.exception("reload (%s): unexpected error", trigger)
        text = f"{old.config.source}: reload failed: {type(exc).__name__}: {exc}"
        return _reload_failed(runtime, trigger, started, text)
    if snapshot.policy_set.revision != old.policy_set.revision:
        _keep_revision(snapshot)
        await runtime.audit.append(
            {
                "type": "policy_change",
                "policy": snapshot.policy_set.revision,
                "previous_policy": old.policy_set.revision,
                "trigger": trigger,
            }
        )
    runtime.snapshot = snapshot
    _settle_heap()
    runtime.metrics.count_reload("ok")
    runtime.metrics.set_policy_revision(snapshot.policy_set.revision)
    runtime.last_reload = {
        "result": "ok",
        "trigger": trigger,
        "at": started,
        "revision": snapshot.policy_set.revision,
    }
    log.info("reloaded (%s): policy revision %s", trigger, snapshot.policy_set.revision)
    return runtime.last_reload


def _reload_failed(runtime: Runtime, trigger: str, started: str, text: str) -> dict[str, Any]:
    runtime.metrics.count_reload("error")
    runtime.last_reload = {
        "result": "error",
        "trigger": trigger,
        "at": started,
        "revision": runtime.snapshot.policy_set.revision,
        "diagnostics": text.splitlines(),
    }
    log.error("reload (%s) failed; still serving %s:\n%s", trigger,
              runtime.snapshot.policy_set.revision, text)  # fmt: skip
    return runtime.last_reload


def _load_signer(config: GatewayConfig) -> Signer:
    passphrase = config.audit.passphrase.encode() if config.audit.passphrase else None
    path = config.audit.signing_key
    if not path.exists():
        raise SnapshotError(
            f"{config.source}: audit.signing_key: `{path}` does not exist\n"
            f"  help: create one with `jurisgate keys generate --out {path} "
            f"--name {config.deployment}`"
        )
    return Signer.from_pem_file(path, config.deployment, passphrase)


def _digester(config: GatewayConfig) -> tuple[PayloadDigester, bytes]:
    key = config.audit.hmac_key
    if key is None:
        # Keep digests linkable across restarts without putting a secret in the config,
        # and keep the key with the signing key: never inside the log directory.
        passphrase = config.audit.passphrase.encode() if config.audit.passphrase else None
        path = config.audit.hmac_key_file or (
            config.audit.signing_key.parent / LEGACY_PAYLOAD_KEY_FILE
        )
        loaded = load_or_create_payload_key(path, config.audit.directory, passphrase)
        if loaded.migrated_from is not None:
            log.warning(
                "moved the payload HMAC key out of the audit log directory: %s -> %s "
                "(copies of the log made before hold the key; change audit.hmac_key_version "
                "if they left this host)",
                loaded.migrated_from,
                loaded.path,
            )
        key = loaded.key
    return PayloadDigester(key, config.audit.hmac_key_version), key


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
        signer = _load_signer(config)
        digester, masking_key = _digester(config)
        options = AuditOptions(
            durability="strict" if config.audit.durability == "strict" else "relaxed-no-fsync",
            max_batch_records=config.audit.group_commit_max_records,
            max_batch_delay=config.audit.group_commit_max_delay_ms / 1000.0,
            record_signatures=config.audit.per_record_signatures,
            default_retention_days=config.audit.retention_default_days,
            max_unsynced_records=config.audit.max_unsynced_records,
        )
        if clock is not None:
            options = replace(options, clock=clock)
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
            from gateway.grpc_upstream import GrpcUpstreams

            # Channels open on first use: a gateway without gRPC traffic starts none.
            grpc_upstream = GrpcUpstreams(
                connect_timeout=config.connect_timeout_s, read_timeout=config.read_timeout_s
            )
            resources.push_async_callback(grpc_upstream.close)
            upstream = UpstreamPool(
                connect_timeout=config.connect_timeout_s,
                read_timeout=config.read_timeout_s,
                limit=config.pool.limit,
                limit_per_host=config.pool.limit_per_host,
                keepalive_timeout=config.pool.keepalive_timeout_s,
                max_response_bytes=config.pool.max_response_bytes,
            )
            await upstream.start()
            resources.push_async_callback(upstream.close)
            sinks = None
            if config.sinks:
                sinks = EventSinks(
                    upstream.session,
                    [
                        SinkSpec(
                            id=s.id,
                            url=s.url,
                            category=s.category,
                            is_sale_or_share=s.is_sale_or_share,
                            tenant_opt_in=s.tenant_opt_in,
                            timeout_s=s.timeout_s,
                            queue_size=s.queue_size,
                            max_attempts=s.max_attempts,
                            backoff_initial_s=s.backoff_initial_s,
                            backoff_max_s=s.backoff_max_s,
                            headers=s.headers,
                        )
                        for s in config.sinks
                    ],
                )
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
            _keep_revision(snap)
            if config.grpc.enabled:
                from gateway.grpc_server import GrpcFrontDoor

                front_door = GrpcFrontDoor(runtime, config.grpc, _new_decision_id)
                try:
                    runtime.grpc_port = await front_door.start()
                except (RuntimeError, OSError) as exc:
                    raise SnapshotError(
                        f"{config.source}: grpc: cannot listen on "
                        f"{config.grpc.host}:{config.grpc.port}: {exc}\n"
                        "  help: change grpc.port (or grpc.tls), or stop what holds the port"
                    ) from None
                resources.push_async_callback(front_door.stop)
            yield

    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_route("*", "/{tail:.*}", handle_tfserving)
    return app


async def _healthz(request: web.Request) -> web.Response:
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


async def _readyz(request: web.Request) -> web.Response:
    report = await readiness(request.app[RUNTIME])
    return web.json_response(report, status=200 if report["ready"] else 503)


# -- admin ---------------------------------------------------------------------------------


def _replay_handler(
    public: web.Application,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`POST /admin/v1/replay`: re-derive the recent decisions of this gateway's log with
    their own revisions, or (`{"candidate": DIR}`) report what a candidate policy would change;
    `limit` (default 10,000) recent decisions, optionally of `tenants`."""

    async def replay(request: web.Request) -> web.Response:
        runtime = public[RUNTIME]
        try:
            payload = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError as exc:
            return web.json_response({"error": f"invalid JSON: {exc}"}, status=400)
        if not isinstance(payload, dict):
            return web.json_response({"error": "send a JSON object"}, status=400)
        limit = payload.get("limit", 10_000)
        if not isinstance(limit, int) or not 0 < limit <= 1_000_000:
            return web.json_response({"error": "limit must be 1 to 1000000"}, status=400)
        candidate = payload.get("candidate")
        tenants = frozenset(str(t) for t in payload.get("tenants") or ())
        directory = runtime.snapshot.config.audit.directory
        body, status = await asyncio.to_thread(_replay_now, directory, candidate, limit, tenants)
        return web.json_response(body, status=status)

    return replay


def _replay_now(
    directory: Path, candidate: Any, limit: int, tenants: frozenset[str]
) -> tuple[dict[str, Any], int]:
    from collections import deque

    from gateway.policy_revisions import load_revision
    from gateway.replay import iter_decision_records, policy_impact, replay_log

    recent = deque(iter_decision_records(directory), maxlen=limit)
    if tenants:
        recent = deque(r for r in recent if r.get("tenant") in tenants)
    if candidate is None:
        store = directory / STORE_DIR
        report = replay_log(recent, lambda rev: load_revision(store, rev))
        return {
            "replayed": report.replayed,
            "not_replayable": report.not_replayable,
            "mismatches": [m.text() for m in report.mismatches],
            "missing_revisions": report.missing_revisions,
            "ok": report.ok,
        }, 200
    result = load_policy_set([Path(str(candidate))])
    if result.policy_set is None:
        text = format_diagnostics(result.diagnostics, cap=None)
        return {"error": "the candidate policies do not load", "diagnostics": text}, 422
    impact = policy_impact(recent, result.policy_set)
    return {"candidate": result.policy_set.revision, **impact.to_json()}, 200


def create_admin_app(public: web.Application) -> web.Application:
    """The admin application: `/metrics` open, `/admin/v1/*` behind the bearer token."""
    from gateway.workers import WORKER_SIDE

    @web.middleware
    async def require_token(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/admin/"):
            token = public[RUNTIME].snapshot.config.admin.token
            sent = request.headers.get("Authorization", "")
            expected = f"Bearer {token}" if token else None
            # SECURITY: constant-time comparison; no token configured means admin is closed.
            if expected is None or not hmac.compare_digest(sent.encode(), expected.encode()):
                return web.json_response(
                    {"error": "admin token missing or wrong",
                     "remedy": "send Authorization: Bearer <admin token>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="jurisgate-admin"'},
                )  # fmt: skip
        return await handler(request)

    admin = web.Application(middlewares=[require_token])

    async def metrics(request: web.Request) -> web.Response:
        runtime = public[RUNTIME]
        worker_side = public.get(WORKER_SIDE)
        body = runtime.metrics.render() if worker_side is None else await worker_side.render()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def revision(request: web.Request) -> web.Response:
        runtime = public[RUNTIME]
        return web.json_response(
            {
                "policy_revision": runtime.snapshot.policy_set.revision,
                "last_reload": runtime.last_reload,
            }
        )

    async def reload(request: web.Request) -> web.Response:
        result = await reload_snapshot(public[RUNTIME], trigger="admin")
        worker_side = public.get(WORKER_SIDE)
        if worker_side is not None:
            worker_side.pass_reload_on()
        return web.json_response(result, status=200 if result["result"] == "ok" else 422)

    async def decide(request: web.Request) -> web.Response:
        runtime = public[RUNTIME]
        snap = runtime.snapshot
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return web.json_response({"error": f"invalid JSON: {exc}"}, status=400)
        if not isinstance(payload, dict):
            return web.json_response({"error": "send a JSON object"}, status=400)
        if "context" in payload:
            context = payload["context"]
        else:
            try:
                context = _context_from_request_description(snap, runtime, payload)
            except ContextError as exc:
                return web.json_response({"error": str(exc)}, status=400)
        decision = snap.policy_set.evaluate(context, explain=True)
        body = decision.to_json(include_explanation=True)
        body["context"] = context
        return web.json_response(body, dumps=lambda o: json.dumps(o, default=str))

    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/admin/v1/policy", revision)
    admin.router.add_post("/admin/v1/reload", reload)
    admin.router.add_post("/admin/v1/decide", decide)
    admin.router.add_post("/admin/v1/replay", _replay_handler(public))
    return admin


def _context_from_request_description(
    snap: Snapshot, runtime: Runtime, payload: dict[str, Any]
) -> dict[str, Any]:
    """Build a context from `{model, method, headers, client_ip, tenant}` without forwarding."""
    config = snap.config
    headers = {str(k): str(v) for k, v in (payload.get("headers") or {}).items()}
    client_ip = str(payload.get("client_ip", "127.0.0.1"))
    model = str(payload.get("model", ""))
    tenant_id = payload.get("tenant")
    tenant = snap.tenants.get(str(tenant_id)) if tenant_id else None
    region = snap.region_lookup(client_ip)
    candidates = snap.backends_for(model)
    return build_context(
        now=runtime.clock(),
        tenant=tenant.context_view() if tenant else None,
        client=ClientFacts(ip=client_ip, region=region),
        headers=headers,
        names=config.headers,
        route=RouteFacts(model, None, None, str(payload.get("method", "predict"))),
        findings=[(str(c), str(p)) for c, p in payload.get("personal_data", [])],
        model=snap.model_attributes(model),
        licence=find_licence(config.licences, tenant.id if tenant else None, model),
        backends=[b.context_view() for b in candidates],
        sinks=snap.sink_views,
    )


# -- running ---------------------------------------------------------------------------------


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
    except SnapshotError as exc:
        print(exc.diagnostics_text, flush=True)
        return 3
    except AuditError as exc:
        # A refused recovery, a wrong passphrase, a locked log: the message says what and
        # where; a traceback would bury it.
        print(f"{config.source}: audit: {exc}", flush=True)
        return 3
    except OSError as exc:
        print(
            f"{config.source}: audit.directory `{config.audit.directory}`: cannot start: "
            f"{exc.strerror or exc} (errno {exc.errno}, {exc.filename or 'no path'})\n"
            "  help: the gateway needs to create and write files there",
            flush=True,
        )
        return 3
    # Sibling workers (`workers` > 1) listen on the same ports; the kernel spreads connections.
    shared_ports = config.worker is not None
    site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True,
                       reuse_port=shared_ports)  # fmt: skip
    await site.start()
    runtime = app[RUNTIME]
    from gateway.workers import WORKER_SIDE, worker_side_for

    worker_side = worker_side_for(config, runtime.metrics)
    if worker_side is not None:
        app[WORKER_SIDE] = worker_side
    admin_runner: web.AppRunner | None = None
    if config.admin.enabled:
        admin_runner = make_runner(create_admin_app(app), config.client_timeouts, access_log=None)
        await admin_runner.setup()
        await web.TCPSite(admin_runner, config.admin.host, config.admin.port,
                          reuse_port=shared_ports).start()  # fmt: skip
    if worker_side is not None:
        await worker_side.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reload_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)

    async def watch() -> None:
        last = _fingerprint(runtime)
        while True:
            try:
                last = await watch_once(last)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the watcher outlives any one failed reload
                log.exception("configuration watcher: unexpected error; still watching")
                await asyncio.sleep(1.0)

    async def watch_once(
        last: tuple[tuple[str, int, int], ...],
    ) -> tuple[tuple[str, int, int], ...]:
        while True:
            try:
                await asyncio.wait_for(reload_requested.wait(), timeout=1.0)
                reload_requested.clear()
                await reload_snapshot(runtime, trigger="sighup")
                return _fingerprint(runtime)
            except TimeoutError:
                pass
            if not runtime.snapshot.config.watch_policies:
                continue
            now = _fingerprint(runtime)
            if now != last:
                await reload_snapshot(runtime, trigger="file-change")
                return now

    watcher = asyncio.create_task(watch())
    _settle_heap()
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


def _settle_heap() -> None:
    """Take what is alive now (compiled policies, tenants, tables, imported code) out of the
    cyclic collector's reach.

    Those objects live as long as their snapshot, yet every full collection traversed them
    all again: about a tenth of the gateway's CPU under load. Unfreezing first lets the
    collector reclaim the cycles of a snapshot a reload has just replaced.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _fingerprint(runtime: Runtime) -> tuple[tuple[str, int, int], ...]:
    """Modification stamps of every file a reload would read."""
    config = runtime.snapshot.config
    paths: list[Path] = [config.source]
    if config.tenants_file is not None:
        paths.append(config.tenants_file)
    if config.geoip_table is not None:
        paths.append(config.geoip_table)
    for root in config.policy_paths:
        if root.is_dir():
            # The files the loader reads (a ConfigMap volume's hidden copies are not among
            # them; its link swap changes the stamps of the linked files).
            paths.extend(p for p in tree_files(root) if p.suffix in (".yaml", ".yml"))
        else:
            paths.append(root)
    stamps: list[tuple[str, int, int]] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            stamps.append((str(path), -1, -1))
            continue
        stamps.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(stamps)


def replace_snapshot_for_tests(runtime: Runtime, **changes: Any) -> None:
    """Swap fields of the serving snapshot (tests that simulate a reload)."""
    runtime.snapshot = replace(runtime.snapshot, **changes)
