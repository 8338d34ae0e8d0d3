"""The admin application: `/metrics` open, `/admin/v1/*` behind the bearer token.

Decide-and-explain without forwarding (`/admin/v1/decide`), the serving revision
(`/admin/v1/policy`), a reload (`/admin/v1/reload`) and a replay of recent decisions
(`/admin/v1/replay`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway.edge.metrics import CONTENT_TYPE_LATEST
from gateway.edge.reload import reload_snapshot
from gateway.edge.runtime import RUNTIME, Runtime, Snapshot
from gateway.edge.workers import WORKER_SIDE
from gateway.errors import format_diagnostics
from gateway.policy import load_policy_set
from gateway.replay.revisions import STORE_DIR
from gateway.request.context import (
    ClientFacts,
    ContextError,
    RouteFacts,
    build_context,
    find_licence,
)

__all__ = ["create_admin_app"]


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

    from gateway.replay.decisions import iter_decision_records, policy_impact, replay_log
    from gateway.replay.revisions import load_revision

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
