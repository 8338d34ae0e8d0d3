"""The steps of one request, each small and named; `run.py` runs them in order.

A step reads what earlier steps put in the `RequestState`, adds what it establishes, and may
end the request: by returning a `Reply` (the request was answered, its records written) or
by raising `Refusal` (the runner writes the refusal's record and answers it). Pure steps are
plain functions; steps that write the audit log or talk to a backend are coroutines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from gateway.marks import ImageMarkError, mark_predict_response, marks_for_obligations
from gateway.pipeline.audit import append
from gateway.pipeline.records import allowed_record, denied_record, outcome_record
from gateway.pipeline.refusals import gateway_refusal, json_parse_refusal, tfs_refusal
from gateway.pipeline.state import Reply, RequestState
from gateway.pipeline.upstream import UpstreamError
from gateway.policy import Decision
from gateway.policy.combine import stricter
from gateway.privacy import Findings, MaskRule, scan, scan_headers
from gateway.privacy.masking import UnmaskableValue, mask_values
from gateway.request import strictjson
from gateway.request.context import (
    ClientFacts,
    ContextError,
    RouteFacts,
    build_context,
    find_licence,
    inferred_alternative,
)
from gateway.request.jsonsplice import replace_strings
from gateway.request.problems import PROBLEM_CONTENT_TYPE, decision_problem, problem_bytes
from gateway.request.routing import is_rerouted, select_backend
from gateway.request.tenants import AuthFailure
from gateway.tfserving import TfsError, build_backend_path, error_body, parse_request_target
from gateway.tfserving.jsonparse import JsonParseError, parse_exact
from gateway.tfserving.notfound import unknown_model_error

__all__ = [
    "choose_backend",
    "decide",
    "deny",
    "emit_decision_event",
    "forward",
    "identify",
    "locate",
    "mask",
    "mask_rules",
    "masking",
    "region_hints",
    "settle_findings",
    "parse_body",
    "parse_target",
    "read_body",
    "record_decision",
    "record_outcome",
    "scan_payload",
]

_JSON = "application/json"
#: Request headers relayed to the backend (TF Serving reads none, but a custom backend may).
_FORWARDED_HEADERS = frozenset({"content-type", "accept"})


def parse_target(state: RequestState) -> None:
    """TF Serving's URL grammar: what TF Serving would refuse is answered as it would be."""
    parsed = parse_request_target(state.method, state.target, origin=state.headers.get("Origin"))
    if isinstance(parsed, TfsError):
        raise tfs_refusal(parsed)
    state.route = parsed


async def read_body(state: RequestState) -> None:
    """The body, within the size and time limits the edge enforces (POST only)."""
    assert state.route is not None
    if state.route.http_method == "POST":
        state.body = await state.read_body(state)


def parse_body(state: RequestState) -> None:
    """Strict JSON (the backend receives exactly the document that was inspected)."""
    assert state.route is not None
    if state.route.http_method != "POST":
        return
    body = state.body
    if not body.strip():
        raise json_parse_refusal("JSON Parse error: The document is empty")
    try:
        parsed = strictjson.parse_body(body, max_depth=state.snap.config.limits.max_json_depth)
    except strictjson.StrictJsonError as exc:
        raise json_parse_refusal(
            _tf_serving_parse_message(body) or f"JSON Parse error: {exc.message}"
        ) from None
    state.document = parsed.value
    if parsed.strings is not None and parsed.keys is not None:
        state.strings = parsed.strings + parsed.keys


def _tf_serving_parse_message(body: bytes) -> str | None:
    """TF Serving's own message for a body its parser (rapidjson) also rejects, else None.

    A body TF Serving would accept but the gateway refuses (duplicate keys, trailing data,
    invalid UTF-8) keeps the gateway's own, more precise message.
    """
    try:
        parse_exact(body)
    except JsonParseError as exc:
        return exc.message
    return None


def locate(state: RequestState) -> None:
    """The client address through trusted proxies only, its region and untrusted claims."""
    client = state.snap.resolve_client(state.peer, state.headers)
    state.client_ip = client.ip or ""
    state.region = client.region
    state.region_claims = tuple(
        dict.fromkeys(c for c in client.region_claims if c != client.region)
    )
    state.forwarding_anomalies = tuple(client.anomalies)
    state.located = True


def identify(state: RequestState) -> None:
    """The tenant: API key, bound network or default tenant; a wrong key is a 401."""
    names = state.snap.config.headers
    auth = state.snap.tenants.authenticate(state.headers.get(names.api_key), state.client_ip)
    if isinstance(auth, AuthFailure):
        raise gateway_refusal(
            state, 401, "unauthenticated", "Unauthorized", auth.message,
            f"send a valid key in the {names.api_key} header",
        )  # fmt: skip
    state.tenant = auth.tenant
    state.authenticated = True


def region_hints(state: RequestState) -> list[str]:
    """Regions that tell detectors how national numbers are written (caller, tenant,
    declared subjects)."""
    tenant = state.tenant
    hints = [r for r in (state.region, tenant.established_in if tenant else None) if r]
    subject_hint = state.headers.get(state.snap.config.headers.subject_region)
    if subject_hint and len(subject_hint) <= 6:
        hints.append(subject_hint.strip().upper())
    return hints


def scan_payload(state: RequestState) -> None:
    """Personal data in every string (read as the backend reads it) and configured header."""
    started = time.perf_counter()
    hints = region_hints(state)
    findings = None
    if state.document is not None:
        findings = scan(state.document, region_hints=hints, value_strings=state.strings)
    state.findings = findings
    if findings is not None and findings.undecodable:
        # SECURITY: what the gateway cannot decode it cannot inspect; never forward it.
        raise gateway_refusal(
            state, 400, "undecodable_value", "Bad Request",
            f"the b64 value at {findings.undecodable[0]} is not base64",
            "encode binary values in standard or URL-safe base64",
        )  # fmt: skip
    settle_findings(state, findings, hints, started)


def settle_findings(
    state: RequestState, findings: Findings | None, hints: list[str], started: float
) -> None:
    """Refuse a scan the budget cut short; add the configured headers' findings; record
    what was found (categories and paths) for the decision and its record."""
    if findings is not None and not findings.complete:
        # SECURITY: what the scan budget left unread may hold personal data; never forward it.
        raise gateway_refusal(
            state, 413, "scan_budget_exceeded", "Payload Too Large",
            "the request holds more text than the gateway inspects in one request",
            "split the text into smaller requests",
        )  # fmt: skip
    config = state.snap.config
    header_findings = (
        scan_headers(state.headers.items(), config.scan_headers, region_hints=hints)
        if config.scan_headers
        else None
    )
    for group in (findings, header_findings):
        if group:
            state.found.extend((f.category, f.path) for f in group)
    state.scanned = True
    state.runtime.metrics.observe_stage("scan", time.perf_counter() - started)


def decide(state: RequestState) -> None:
    """The decision of the snapshot pinned at the start (the stricter of two readings when
    a tenant declared a subject region it does not attest)."""
    assert state.route is not None
    snap, route, tenant = state.snap, state.route, state.tenant
    state.candidates = snap.backends_for(route.model)
    if state.rpc is not None:
        # A gRPC call goes to a backend's gRPC port: only backends that have one can serve it.
        state.candidates = tuple(b for b in state.candidates if b.grpc is not None)
    try:
        context = build_context(
            now=state.runtime.clock(),
            tenant=tenant.context_view() if tenant is not None else None,
            client=ClientFacts(ip=state.client_ip, region=state.region,
                               region_claims=state.region_claims),
            headers=state.headers,
            names=snap.config.headers,
            route=RouteFacts(route.model, route.version, route.label, route.verb),
            findings=state.found,
            model=snap.model_attributes(route.model),
            licence=find_licence(snap.config.licences, tenant.id if tenant else None, route.model),
            backends=[b.context_view() for b in state.candidates],
            sinks=snap.sink_views,
            binary_inputs=state.findings.media_types if state.findings is not None else (),
        )  # fmt: skip
    except ContextError as exc:
        raise gateway_refusal(
            state, 400, "bad_header", "Bad Request", str(exc),
            f"fix the {exc.header} header: {exc.expected}",
        ) from None  # fmt: skip
    started = time.perf_counter()
    decision = snap.policy_set.evaluate(context)
    state.attested = tenant is not None and "subject_region" in tenant.attests
    alternative = inferred_alternative(context, attested=state.attested)
    if alternative is not None:
        # SECURITY: an unattested declaration adds to the inferred region, never replaces it.
        decision = stricter(decision, snap.policy_set.evaluate(alternative))
    state.runtime.metrics.observe_stage("policy", time.perf_counter() - started)
    state.context, state.decision = context, decision


def choose_backend(state: RequestState) -> None:
    """A backend inside the decision's routing constraint (none left: a residency denial)."""
    assert state.route is not None and state.decision is not None
    decision, route, tenant = state.decision, state.route, state.tenant
    if not state.candidates and (decision.allowed or decision.status == 403):
        # No backend serves this model: answer as TF Serving does for an unknown model, body,
        # label and version checks first. Legal refusals (451) still take precedence, so a
        # sanctioned caller learns nothing more.
        if state.rpc is not None and route.verb != "status":
            # gRPC carries no JSON body to check first: the label and version checks remain.
            route = replace(route, verb="metadata")
        raise tfs_refusal(unknown_model_error(route, state.document))
    if not decision.allowed:
        return
    routing = decision.obligations.routing
    preferred = tenant.default_backend if tenant else None
    routing_default = state.snap.config.routing_default
    unavailable = state.runtime.unavailable_backends
    state.backend = select_backend(
        state.candidates,
        route.model,
        allowed_regions=frozenset(routing.allowed_regions) if routing is not None else None,
        caller_region=state.region,
        preferred=preferred,
        region_routing_default=routing_default,
        groups=state.snap.region_groups,
        unavailable=unavailable,
    )
    if state.backend is None:
        state.decision = state.snap.residency_denial(decision)
        return
    state.rerouted = is_rerouted(
        state.backend,
        state.candidates,
        route.model,
        caller_region=state.region,
        preferred=preferred,
        region_routing_default=routing_default,
        groups=state.snap.region_groups,
        unavailable=unavailable,
    )


def _first(rules: Sequence[str]) -> str:
    return rules[0] if rules else "(default)"


async def deny(state: RequestState) -> Reply | None:
    """A refused decision: its record, then problem+json (451 legal, 403 licence, and 500 for
    a policy that could not be evaluated)."""
    decision = state.decision
    assert decision is not None
    if decision.allowed:
        return None
    runtime, snap = state.runtime, state.snap
    status, body, headers = decision_problem(
        operator=snap.config.operator,
        decision=decision,
        regimes=snap.policy_set.vocabulary.regimes,
        decision_id=state.decision_id,
        applies_to=state.path,
        audit_rules=snap.policy_set.audit_rule_ids,
    )
    runtime.metrics.count_decision("deny", _first(decision.rules))
    await append(state, denied_record(state, status))
    state.decision_written = True
    emit_decision_event(state, "deny", [])
    runtime.metrics.count_request("deny", status)
    return Reply(status, problem_bytes(body), PROBLEM_CONTENT_TYPE, headers)


def mask_rules(decision: Decision) -> dict[str, MaskRule]:
    """The masking rule of every category the decision says to mask."""
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


def masking(
    state: RequestState,
    masker: Callable[..., tuple[dict[Any, Any], list[dict[str, str]]]],
    hint: str,
) -> dict[Any, Any]:
    """The new values `masker(findings, rules, hash_key=...)` gives for the decision's masking
    obligations (empty when nothing is to be masked); personal data that cannot be rewritten
    is refused, never forwarded."""
    assert state.decision is not None
    rules = mask_rules(state.decision)
    if not rules or not state.findings:
        return {}
    runtime = state.runtime
    key = state.snap.config.privacy_hmac_key or runtime.masking_key
    try:
        replacements, state.masked = masker(state.findings, rules, hash_key=key)
    except UnmaskableValue as exc:
        raise gateway_refusal(
            state, 422, "unmaskable_personal_data", "Unprocessable Content", str(exc), hint
        ) from None
    for entry in state.masked:
        runtime.metrics.count_masked(entry["category"])
    return replacements


def mask(state: RequestState) -> None:
    """The masking obligations, spliced into the body as sent (numbers, NaN, order stay)."""
    replacements = masking(
        state, partial(mask_values, state.document),
        "send the text as a JSON string, or remove it from the binary value",
    )  # fmt: skip
    state.forward_body = replace_strings(state.body, replacements)


async def record_decision(state: RequestState) -> None:
    """Write-ahead: the signed `decision` record is durable before anything is forwarded."""
    assert state.decision is not None
    state.runtime.metrics.count_decision(state.outcome, _first(state.decision.rules))
    await append(state, allowed_record(state))
    state.decision_written = True


async def forward(state: RequestState) -> Reply | None:
    """The request to the chosen backend; an upstream failure is recorded and answered."""
    assert state.route is not None and state.backend is not None
    route, backend, runtime = state.route, state.backend, state.runtime
    started = time.perf_counter()
    relayed = [(k, v) for k, v in state.headers.items() if k.lower() in _FORWARDED_HEADERS]
    try:
        state.upstream = await runtime.upstream.forward(
            backend,
            route.http_method,
            build_backend_path(route),
            state.forward_body if route.http_method == "POST" else None,
            [*relayed, ("X-Decision-Id", state.decision_id)],
        )
    except UpstreamError as exc:
        runtime.metrics.observe_backend(backend.id, exc.status, time.perf_counter() - started)
        lat_us = int((time.perf_counter() - state.started) * 1e6)
        await append(
            state, outcome_record(state, exc.status, upstream_error=exc.kind, lat_us=lat_us)
        )
        runtime.metrics.count_request("upstream_error", exc.status)
        err = exc.to_tfs_error(decision_id=state.decision_id)
        return Reply(err.status, err.body, _JSON)
    runtime.metrics.observe_backend(
        backend.id, state.upstream.status, time.perf_counter() - started
    )
    state.response_body = state.upstream.body
    return None


async def apply_output_obligations(state: RequestState) -> Reply | None:
    """Marks a law requires in generated images; an output that cannot carry them never
    leaves."""
    decision, upstream = state.decision, state.upstream
    assert decision is not None and upstream is not None and state.route is not None
    if not decision.obligations.image_marks or upstream.status != 200:
        return None
    attributes = state.snap.model_attributes(state.route.model) or {}
    try:
        marks = marks_for_obligations(
            decision.obligations.image_marks,
            content_producer=state.snap.config.operator.name,
            produce_id=state.decision_id,
            substantially_alters_input=bool(attributes.get("substantially_alters_input")),
        )
        state.response_body, marked = mark_predict_response(state.response_body, marks)
        state.marked_paths = list(marked)
    except ImageMarkError as exc:
        # SECURITY: an output the law says must carry a mark never leaves unmarked.
        await append(state, outcome_record(state, 502, upstream_error="unmarkable_output"))
        body = error_body(
            f"Model output could not be labelled as required: {exc.code}",
            decision_id=state.decision_id,
        )
        return Reply(502, body, _JSON)
    return None


async def record_outcome(state: RequestState) -> Reply:
    """The signed `outcome` record, durable before the answer leaves; events to the sinks."""
    decision, upstream = state.decision, state.upstream
    assert decision is not None and upstream is not None
    runtime = state.runtime
    fields: dict[str, object] = {
        "lat_us": int((time.perf_counter() - state.started) * 1e6),
        "resp_mac": runtime.keyed_digest(state.response_body),
    }
    if state.marked_paths:
        fields["marked"] = state.marked_paths
    await append(state, outcome_record(state, upstream.status, **fields))
    headers = {name: value for name, value in upstream.headers if name.lower() != "content-length"}
    headers.update(decision.obligations.headers)
    outcome = state.outcome
    emit_decision_event(state, outcome, sorted({c for c, _ in state.found}))
    runtime.metrics.count_request(outcome, upstream.status)
    return Reply(upstream.status, state.response_body, None, headers)


def emit_decision_event(state: RequestState, outcome: str, categories: list[str]) -> None:
    """The decision event for the sinks this decision did not suppress."""
    decision = state.decision
    assert decision is not None
    state.runtime.emit_event(
        state.snap,
        decision_id=state.decision_id,
        tenant=state.tenant.id if state.tenant is not None else None,
        outcome=outcome,
        rules=decision.rules,
        categories=categories,
        suppression=decision.obligations.suppress_sinks,
    )
