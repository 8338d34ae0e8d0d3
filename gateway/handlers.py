"""The request pipeline: every TF Serving call goes through `handle_tfserving`.

Order (each step may end the request):

1. Parse the target with TF Serving's own URL grammar; what TF Serving would refuse
   (HTML 404, "Malformed request") is answered here, identically, and audited.
2. Read the body under the size limit, inflate a compressed body under its own limit, parse
   it strictly (the backend receives exactly the JSON that was inspected).
3. Who: the tenant (API key, bound network or the configured default tenant; a wrong key
   is a 401). Where: the client IP through trusted proxies only, its region, and untrusted
   region claims. Why: the declared headers.
4. Personal data in every string of the body and in the configured headers.
5. Evaluate the policy set pinned at the start of the request (a reload swaps the set for
   later requests, never for this one).
6. Choose a backend within the decision's routing constraint (none left: 451).
7. Write-ahead: the signed `decision` record is durable before anything is forwarded or
   refused; an audit failure is a 503 and nothing is forwarded.
8. Deny: problem+json (451 legal, 403 licence). Allow: mask, forward, apply output
   obligations (headers, marks in a generated image's metadata).
9. The `outcome` record is durable before the response leaves; decision events go to the
   sinks the decision did not suppress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from gateway import strictjson
from gateway.app_state import DECISION_ID, RUNTIME, Runtime, Snapshot
from gateway.audit import AuditError, AuditUnavailable
from gateway.context import ClientFacts, ContextError, RouteFacts, build_context, find_licence
from gateway.marks import ImageMarkError, mark_predict_response, marks_for_obligations
from gateway.policy import Decision
from gateway.privacy import MaskRule, apply_masks, scan, scan_headers
from gateway.problems import PROBLEM_CONTENT_TYPE, decision_problem, gateway_problem, problem_bytes
from gateway.proxy import BackendSpec, UpstreamError, is_rerouted, select_backend
from gateway.tenants import AuthFailure
from gateway.tfserving import (
    ERROR_CONTENT_TYPE,
    Route,
    TfsError,
    build_backend_path,
    error_body,
    parse_request_target,
)

__all__ = ["handle_tfserving"]

log = logging.getLogger("jurisgate")

_JSON = "application/json"
#: Request headers relayed to the backend (TF Serving reads none, but a custom backend may).
_FORWARDED_HEADERS = frozenset({"content-type", "accept"})


class _Refusal(Exception):
    """Ends the pipeline with a gateway-made response, after auditing it."""

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        outcome: str,
        reason: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.outcome = outcome
        self.reason = reason
        self.headers = dict(headers or {})


def _tfs_refusal(error: TfsError, outcome: str) -> _Refusal:
    headers = {"Connection": "close"} if error.close_connection else {}
    return _Refusal(
        error.status,
        error.body,
        error.content_type or "",
        outcome=outcome,
        reason=error.reason,
        headers=headers,
    )


def _gateway_refusal(
    snap: Snapshot,
    decision_id: str,
    status: int,
    code: str,
    title: str,
    detail: str,
    hint: str | None = None,
) -> _Refusal:
    body = gateway_problem(
        operator=snap.config.operator,
        status=status,
        title=title,
        detail=detail,
        decision_id=decision_id,
        code=code,
        hint=hint,
    )
    return _Refusal(
        status, problem_bytes(body), PROBLEM_CONTENT_TYPE, outcome="reject", reason=code
    )


async def _read_body(request: web.Request, snap: Snapshot, decision_id: str) -> bytes:
    limits = snap.config.limits
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        raise _gateway_refusal(
            snap, decision_id, 413, "body_too_large", "Payload Too Large",
            f"request body of {declared} bytes is over the limit of {limits.max_body_bytes}",
            "send a smaller batch of instances",
        )  # fmt: skip
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _gateway_refusal(
                snap, decision_id, 413, "body_too_large", "Payload Too Large",
                f"request body is over the limit of {limits.max_body_bytes} bytes",
                "send a smaller batch of instances",
            )  # fmt: skip
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("Content-Encoding")
    if encoding:
        try:
            body = strictjson.inflate(body, encoding, max_size=limits.max_inflated_bytes)
        except strictjson.UnsupportedEncodingError as exc:
            raise _gateway_refusal(
                snap, decision_id, 415, "unsupported_encoding", "Unsupported Media Type",
                str(exc), "send the body uncompressed, or with gzip or deflate",
            ) from None  # fmt: skip
        except strictjson.BodyTooLargeError as exc:
            raise _gateway_refusal(
                snap, decision_id, 413, "body_too_large", "Payload Too Large", str(exc),
                "send a smaller batch of instances",
            ) from None  # fmt: skip
        except strictjson.CorruptBodyError as exc:
            raise _gateway_refusal(
                snap, decision_id, 400, "corrupt_encoding", "Bad Request", str(exc),
                "check the Content-Encoding header matches the body",
            ) from None  # fmt: skip
    return body


def _parse_json(body: bytes, snap: Snapshot, decision_id: str) -> strictjson.ParsedBody:
    if not body.strip():
        raise _tfs_refusal(_tfs_json_error("JSON Parse error: The document is empty"), "reject")
    try:
        return strictjson.parse_body(body, max_depth=snap.config.limits.max_json_depth)
    except strictjson.StrictJsonError as exc:
        raise _tfs_refusal(
            _tfs_json_error(_tf_serving_parse_message(body) or f"JSON Parse error: {exc.message}"),
            "reject",
        ) from None


def _tf_serving_parse_message(body: bytes) -> str | None:
    """TF Serving's own message for a body its parser (rapidjson) also rejects, else None.

    A body TF Serving would accept but the gateway refuses (duplicate keys, trailing data,
    invalid UTF-8) keeps the gateway's own, more precise message.
    """
    try:
        # Cold path only; the rapidjson-compatible parser ships with the model server.
        from model_server.rest_json import parse_exact
    except ImportError:
        return None
    try:
        parse_exact(body)
    except Exception as exc:  # noqa: BLE001 - its error carries TF Serving's exact text
        return str(exc)
    return None


def _tfs_json_error(message: str) -> TfsError:
    # Same body as TF Serving (the decision id travels in the X-Decision-Id header).
    return TfsError(400, ERROR_CONTENT_TYPE, error_body(message), "invalid_json", message)


def _mask_rules(decision: Decision) -> dict[str, MaskRule]:
    rules: dict[str, MaskRule] = {}
    for category, action in decision.obligations.mask.items():
        method = action.method
        if method == "keep_last":
            rules[category] = MaskRule(method="keep_last", keep=action.keep or 4)
        elif method in ("hash", "hmac", "keyed_hash"):
            rules[category] = MaskRule(method="hash")
        else:
            rules[category] = MaskRule(method="redact")
    return rules


def _allowed_regions(decision: Decision) -> frozenset[str] | None:
    routing = decision.obligations.routing
    if routing is None:
        return None
    return frozenset(routing.allowed_regions)


async def handle_tfserving(request: web.Request) -> web.StreamResponse:
    """Run one TF Serving request through the whole pipeline (see the module docstring)."""
    runtime: Runtime = request.app[RUNTIME]
    snap = runtime.snapshot  # SECURITY: pinned; a reload mid-request does not change the rules
    decision_id: str = request[DECISION_ID]
    started = time.perf_counter()
    record: dict[str, Any] = {
        "type": "decision",
        "decision_id": decision_id,
        # The client's path is not recorded as sent (it could carry anything); a TF Serving
        # route is recorded in its canonical form once parsed.
        "route": request.method[:16],
        "policy": snap.policy_set.revision,
    }
    try:
        return await _pipeline(request, runtime, snap, decision_id, record, started)
    except _Refusal as refusal:
        record.update(decision=refusal.outcome, status=refusal.status, reason=refusal.reason)
        record.setdefault("retention_days", snap.config.audit.retention_default_days)
        await _append(runtime, record, snap, decision_id)
        runtime.metrics.count_request(refusal.outcome, refusal.status)
        response = web.Response(status=refusal.status, body=refusal.body, headers=refusal.headers)
        if refusal.content_type:
            response.content_type = refusal.content_type
        return response


async def _append(runtime: Runtime, record: Mapping[str, Any], snap: Snapshot, did: str) -> None:
    try:
        await runtime.audit.append(record)
    except AuditError as exc:
        if not isinstance(exc, AuditUnavailable):
            log.error("audit record refused for %s: %s", did, exc)
        runtime.metrics.audit_failures.inc()
        raise web.HTTPServiceUnavailable(
            body=error_body(
                "Audit log unavailable: the request was not processed", decision_id=did
            ),
            content_type=_JSON,
            headers={"Retry-After": "5"},
        ) from None


async def _pipeline(
    request: web.Request,
    runtime: Runtime,
    snap: Snapshot,
    decision_id: str,
    record: dict[str, Any],
    started: float,
) -> web.StreamResponse:
    config = snap.config
    metrics = runtime.metrics
    parsed = parse_request_target(
        request.method, request.raw_path, origin=request.headers.get("Origin")
    )
    if isinstance(parsed, TfsError):
        raise _tfs_refusal(parsed, "reject")
    route: Route = parsed
    record["model"] = route.model[:200]
    record["route"] = f"{route.http_method} {build_backend_path(route)[:300]}"

    body = b""
    document: Any = None
    strings: tuple[str, ...] | None = None
    if route.http_method == "POST":
        body = await _read_body(request, snap, decision_id)
        document, strings = _parse_json(body, snap, decision_id)

    # Who and where.
    client = snap.resolve_client(request.remote, request.headers)
    client_ip = client.ip or ""
    region = client.region
    claims = tuple(dict.fromkeys(c for c in client.region_claims if c != region))
    record["caller_region"] = region
    record["untrusted_region_claims"] = list(claims)
    if client.anomalies:
        record["forwarding_anomalies"] = list(client.anomalies)
    record["client_ip"], record["client_ip_mac"] = runtime.client_ip_fields(client_ip)

    auth = snap.tenants.authenticate(request.headers.get(config.headers.api_key), client_ip)
    if isinstance(auth, AuthFailure):
        raise _gateway_refusal(
            snap, decision_id, 401, "unauthenticated", "Unauthorized", auth.message,
            f"send a valid key in the {config.headers.api_key} header",
        )  # fmt: skip
    tenant = auth.tenant
    tenant_view = tenant.context_view() if tenant is not None else None
    record["tenant"] = tenant.id if tenant is not None else None
    end_user = request.headers.get(config.headers.end_user)
    if end_user:
        record["end_user_mac"] = runtime.keyed_digest(end_user.encode())

    # What data.
    t0 = time.perf_counter()
    hints = [r for r in (region, tenant.established_in if tenant else None) if r]
    subject_hint = request.headers.get(config.headers.subject_region)
    if subject_hint and len(subject_hint) <= 6:
        hints.append(subject_hint.strip().upper())
    findings = (
        scan(document, region_hints=hints, value_strings=strings) if document is not None else None
    )
    if findings is not None and not findings.complete:
        # SECURITY: what the scan budget left unread may hold personal data; never forward it.
        raise _gateway_refusal(
            snap, decision_id, 413, "scan_budget_exceeded", "Payload Too Large",
            "the request holds more text than the gateway inspects in one request",
            "split the text into smaller requests",
        )  # fmt: skip
    header_findings = (
        scan_headers(request.headers.items(), config.scan_headers, region_hints=hints)
        if config.scan_headers
        else None
    )
    found: list[tuple[str, str]] = []
    for group in (findings, header_findings):
        if group:
            found.extend((f.category, f.path) for f in group)
    metrics.observe_stage("scan", time.perf_counter() - t0)
    record["detected_personal_data"] = [{"type": c, "path": p} for c, p in dict.fromkeys(found)]

    # Decide.
    candidates = snap.backends_for(route.model)
    model_attrs = snap.model_attributes(route.model)
    licence = find_licence(config.licences, tenant.id if tenant else None, route.model)
    try:
        context = build_context(
            now=runtime.clock(),
            tenant=tenant_view,
            client=ClientFacts(ip=client_ip, region=region, region_claims=claims),
            headers=request.headers,
            names=config.headers,
            route=RouteFacts(route.model, route.version, route.label, route.verb),
            findings=found,
            model=model_attrs,
            licence=licence,
            backends=[b.context_view() for b in candidates],
            sinks=snap.sink_views,
        )
    except ContextError as exc:
        raise _gateway_refusal(
            snap, decision_id, 400, "bad_header", "Bad Request", str(exc),
            f"fix the {exc.header} header: {exc.expected}",
        ) from None  # fmt: skip
    t0 = time.perf_counter()
    decision = snap.policy_set.evaluate(context)
    metrics.observe_stage("policy", time.perf_counter() - t0)
    record["rules"] = list(decision.rules)
    if decision.dry_run:
        record["dry_run_rules"] = list(decision.dry_run)
    record["legal_basis"] = [{"regime": b.regime, "ref": b.ref} for b in decision.legal_basis]
    audit_duty = decision.obligations.audit
    record["retention_days"] = max(
        config.audit.retention_default_days, audit_duty.retention_days_min or 0
    )
    storage_region = audit_duty.storage_region or config.audit.storage_region
    if storage_region:
        record["storage_region"] = storage_region
    if decision.errors:
        record["errors"] = [e.code for e in decision.errors]
    record["purpose"] = context["request"]["purpose"]
    record["req_mac"] = runtime.keyed_digest(body) if body else None

    if not candidates and (decision.allowed or decision.status == 403):
        # No backend serves this model: answer as TF Serving does for an unknown model. Legal
        # refusals (451) still take precedence, so a sanctioned caller learns nothing more.
        message = (
            f"Could not find any versions of model {route.model}"
            if route.verb == "status"
            else f"Servable not found for request: Latest({route.model})"
        )
        raise _Refusal(
            404, error_body(message), _JSON,
            outcome="reject", reason="unknown_model",
        )  # fmt: skip
    backend: BackendSpec | None = None
    rerouted = False
    if decision.allowed:
        backend = select_backend(
            candidates,
            route.model,
            allowed_regions=_allowed_regions(decision),
            caller_region=region,
            preferred=tenant.default_backend if tenant else None,
            region_routing_default=config.routing_default,
            unavailable=runtime.unavailable_backends,
        )
        if backend is None:
            decision = snap.residency_denial(decision)
        else:
            rerouted = is_rerouted(
                backend,
                candidates,
                route.model,
                caller_region=region,
                preferred=tenant.default_backend if tenant else None,
                region_routing_default=config.routing_default,
                unavailable=runtime.unavailable_backends,
            )

    if not decision.allowed:
        return await _deny(request, runtime, snap, decision, record, decision_id, started)

    # Allowed: mask, forward, obligations.
    forward_body = body
    masked: list[Any] = []
    rules = _mask_rules(decision)
    if rules and findings:
        new_document, masked = apply_masks(
            document, findings, rules, hash_key=config.privacy_hmac_key or runtime.masking_key
        )
        if masked:
            forward_body = orjson.dumps(new_document)
            for entry in masked:
                metrics.count_masked(entry["category"])
    assert backend is not None
    transformed = bool(masked) or rerouted or bool(decision.obligations.headers)
    transformed = transformed or bool(decision.obligations.image_marks)
    record["decision"] = "transform" if transformed else "allow"
    record["status"] = 200
    record["backend"] = backend.id
    record["transformations"] = [dict(m) for m in masked]
    if rerouted:
        record["rerouted"] = True
    metrics.count_decision(record["decision"], _first(decision.rules))
    await _append(runtime, record, snap, decision_id)

    t0 = time.perf_counter()
    try:
        upstream = await runtime.upstream.forward(
            backend,
            route.http_method,
            build_backend_path(route),
            forward_body if route.http_method == "POST" else None,
            [
                *((k, v) for k, v in request.headers.items() if k.lower() in _FORWARDED_HEADERS),
                ("X-Decision-Id", decision_id),
            ],
        )
    except UpstreamError as exc:
        metrics.observe_backend(backend.id, exc.status, time.perf_counter() - t0)
        await _append(
            runtime,
            {
                "type": "outcome",
                "decision_id": decision_id,
                "tenant": record.get("tenant"),
                "status": exc.status,
                "upstream_error": exc.kind,
                "backend": backend.id,
                "lat_us": int((time.perf_counter() - started) * 1e6),
            },
            snap,
            decision_id,
        )
        metrics.count_request("upstream_error", exc.status)
        err = exc.to_tfs_error(decision_id=decision_id)
        return web.Response(status=err.status, body=err.body, content_type=_JSON)
    metrics.observe_backend(backend.id, upstream.status, time.perf_counter() - t0)

    response_body = upstream.body
    marked_paths: list[str] = []
    if decision.obligations.image_marks and upstream.status == 200:
        try:
            marks = marks_for_obligations(
                decision.obligations.image_marks,
                content_producer=config.operator.name,
                produce_id=decision_id,
                substantially_alters_input=bool(
                    (model_attrs or {}).get("substantially_alters_input")
                ),
            )
            response_body, marked = mark_predict_response(response_body, marks)
            marked_paths = list(marked)
        except ImageMarkError as exc:
            # SECURITY: an output the law says must carry a mark never leaves unmarked.
            await _append(
                runtime,
                {
                    "type": "outcome",
                    "decision_id": decision_id,
                    "tenant": record.get("tenant"),
                    "status": 502,
                    "upstream_error": "unmarkable_output",
                    "backend": backend.id,
                },
                snap,
                decision_id,
            )
            body_502 = error_body(
                f"Model output could not be labelled as required: {exc.code}",
                decision_id=decision_id,
            )
            return web.Response(status=502, body=body_502, content_type=_JSON)

    outcome: dict[str, Any] = {
        "type": "outcome",
        "decision_id": decision_id,
        "tenant": record.get("tenant"),
        "status": upstream.status,
        "backend": backend.id,
        "lat_us": int((time.perf_counter() - started) * 1e6),
        "resp_mac": runtime.keyed_digest(response_body),
    }
    if marked_paths:
        outcome["marked"] = marked_paths
    await _append(runtime, outcome, snap, decision_id)

    headers: dict[str, str] = {}
    for name, value in upstream.headers:
        if name.lower() != "content-length":
            headers[name] = value
    for name, value in decision.obligations.headers:
        headers[name] = value
    runtime.emit_event(
        snap,
        decision_id=decision_id,
        tenant=record.get("tenant"),
        outcome=record["decision"],
        rules=decision.rules,
        categories=sorted({c for c, _ in found}),
        suppression=decision.obligations.suppress_sinks,
    )
    metrics.count_request(record["decision"], upstream.status)
    return web.Response(status=upstream.status, body=response_body, headers=headers)


def _first(rules: Sequence[str]) -> str:
    return rules[0] if rules else "(default)"


async def _deny(
    request: web.Request,
    runtime: Runtime,
    snap: Snapshot,
    decision: Decision,
    record: dict[str, Any],
    decision_id: str,
    started: float,
) -> web.StreamResponse:
    config = snap.config
    status, body, headers = decision_problem(
        operator=config.operator,
        decision=decision,
        regimes=snap.policy_set.vocabulary.regimes,
        decision_id=decision_id,
        applies_to=request.path,
        audit_rules=snap.policy_set.audit_rule_ids,
    )
    record["decision"] = "deny"
    record["status"] = status
    record["legal_basis"] = [{"regime": b.regime, "ref": b.ref} for b in decision.legal_basis]
    record["lat_us"] = int((time.perf_counter() - started) * 1e6)
    runtime.metrics.count_decision("deny", _first(decision.rules))
    await _append(runtime, record, snap, decision_id)
    runtime.emit_event(
        snap,
        decision_id=decision_id,
        tenant=record.get("tenant"),
        outcome="deny",
        rules=decision.rules,
        categories=[],
        suppression=decision.obligations.suppress_sinks,
    )
    runtime.metrics.count_request("deny", status)
    return web.Response(
        status=status,
        body=problem_bytes(body),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )
