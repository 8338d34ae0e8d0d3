"""Audit records built from a request's state, one function per kind of record.

A record holds only what the steps established (a request refused at its URL has no tenant,
one refused for its key has no findings), never a payload, a personal-data value, a header
value or a full address: categories and paths, keyed digests, network prefixes.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.pipeline.state import Refusal, RequestState
from gateway.tfserving import build_backend_path

__all__ = [
    "END_USER_MARKER",
    "allowed_record",
    "decision_facts",
    "denied_record",
    "evaluation_input",
    "failed_record",
    "outcome_record",
    "refused_record",
]


def _elapsed_us(state: RequestState) -> int:
    return int((time.perf_counter() - state.started) * 1e6)


def decision_facts(state: RequestState) -> dict[str, Any]:
    """The `decision` record's facts so far (without its verdict)."""
    snap = state.snap
    record: dict[str, Any] = {
        "type": "decision",
        "decision_id": state.decision_id,
        # The client's path is not recorded as sent (it could carry anything); a TF Serving
        # route is recorded in its canonical form once parsed.
        "route": state.method[:16],
        "policy": snap.policy_set.revision,
    }
    route = state.route
    if route is not None:
        record["model"] = route.model[:200]
        record["route"] = f"{route.http_method} {build_backend_path(route)[:300]}"
    if state.rpc is not None:
        record["route"] = f"GRPC {state.rpc.path}"
    if state.located:
        record["caller_region"] = state.region
        record["untrusted_region_claims"] = list(state.region_claims)
        if state.forwarding_anomalies:
            record["forwarding_anomalies"] = list(state.forwarding_anomalies)
        record["client_ip"], record["client_ip_mac"] = state.runtime.client_ip_fields(
            state.client_ip
        )
    if state.authenticated:
        record["tenant"] = state.tenant.id if state.tenant is not None else None
        end_user = state.headers.get(snap.config.headers.end_user)
        if end_user:
            record["end_user_mac"] = state.runtime.keyed_digest(end_user.encode())
    if state.scanned:
        record["detected_personal_data"] = [
            {"type": c, "path": p} for c, p in dict.fromkeys(state.found)
        ]
        if state.findings is not None and state.findings.binary:
            record["binary_inputs"] = [item.to_json() for item in state.findings.binary]
    _decision_fields(state, record)
    return record


def _decision_fields(state: RequestState, record: dict[str, Any]) -> None:
    decision, context = state.decision, state.context
    if decision is None or context is None:
        return
    config = state.snap.config
    declared_region = context["subject"]["region"]
    if declared_region is not None:
        record["declared_subject_region"] = {"region": declared_region, "attested": state.attested}
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
    record["req_mac"] = state.runtime.keyed_digest(state.body) if state.body else None
    record["input"], floats = evaluation_input(state)
    if floats:
        record["input_floats"] = True


def evaluation_input(state: RequestState) -> tuple[dict[str, Any], bool]:
    """The request context as the engine evaluated it, minimised for the record, and whether
    floats had to be encoded.

    What the policies read, so that anyone holding the revision can decide again: categories
    and paths of personal data, regions, purposes, flags. Never a full address (the client's
    IP is dropped; the record keeps its prefix and keyed digest) nor a header's content (an
    end-user reference becomes a marker). Derived fields the engine computes itself are not
    there to begin with. Floats, which records cannot hold, are written as `{"float": text}`
    (and the record says `input_floats: true`).
    """
    context = state.context
    assert context is not None
    caller = {**context["caller"], "client_ip": None}
    request = dict(context["request"])
    if request.get("end_user") is not None:
        request["end_user"] = END_USER_MARKER
    recorded: dict[str, Any] = {**context, "caller": caller, "request": request}
    unavailable = state.runtime.unavailable_backends
    if unavailable:
        recorded["unavailable_backends"] = sorted(unavailable)
    # One walk on the hot path: most contexts hold no float at all.
    if not _has_float(recorded):
        return recorded, False
    encoded: dict[str, Any] = _without_floats(recorded)
    return encoded, True


#: What an end-user reference is recorded as (its keyed digest is the record's `end_user_mac`).
END_USER_MARKER = "(recorded as end_user_mac)"


def _has_float(value: Any) -> bool:
    # A loop over a stack, not recursion: this runs on every decision record's context.
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            pending.extend(item.values())
        elif kind is list or kind is tuple:
            pending.extend(item)
        elif kind not in _SCALARS:
            if isinstance(item, dict):
                pending.extend(item.values())
            elif isinstance(item, list | tuple):
                pending.extend(item)
    return False


_SCALARS: frozenset[type] = frozenset({str, int, bool, type(None)})


def _without_floats(value: Any) -> Any:
    if type(value) is float:
        return {"float": repr(value)}
    if isinstance(value, dict):
        return {str(key): _without_floats(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_floats(item) for item in value]
    return value


def allowed_record(state: RequestState) -> dict[str, Any]:
    """The `decision` record of a request about to be forwarded."""
    assert state.backend is not None
    record = decision_facts(state)
    record.update(
        decision=state.outcome,
        status=200,
        backend=state.backend.id,
        transformations=[dict(entry) for entry in state.masked],
    )
    if state.rerouted:
        record["rerouted"] = True
    return record


def denied_record(state: RequestState, status: int) -> dict[str, Any]:
    """The `decision` record of a request the policies refused (451, 403, or 500)."""
    record = decision_facts(state)
    record.update(decision="deny", status=status, lat_us=_elapsed_us(state))
    return record


def refused_record(state: RequestState, refusal: Refusal) -> dict[str, Any]:
    """The `decision` record of a request the gateway itself refused (bad input, no key...)."""
    record = decision_facts(state)
    record.update(decision=refusal.outcome, status=refusal.reply.status, reason=refusal.reason)
    record.setdefault("retention_days", state.snap.config.audit.retention_default_days)
    return record


def failed_record(state: RequestState, exc: BaseException) -> dict[str, Any]:
    """The record of a failure inside the pipeline: a `decision` record, or an `outcome`
    record when the decision was already written."""
    if state.decision_written:
        return outcome_record(
            state, 500, upstream_error="gateway_error", error_type=type(exc).__name__
        )
    record = decision_facts(state)
    record.update(
        decision="error", status=500, reason="internal_error", error_type=type(exc).__name__
    )
    record.setdefault("retention_days", state.snap.config.audit.retention_default_days)
    return record


def outcome_record(state: RequestState, status: int, **fields: Any) -> dict[str, Any]:
    """The `outcome` record of a forwarded request (`fields`: what the answer was)."""
    record: dict[str, Any] = {
        "type": "outcome",
        "decision_id": state.decision_id,
        "tenant": state.tenant.id if state.tenant is not None else None,
        "status": status,
    }
    if state.backend is not None:
        record["backend"] = state.backend.id
    record.update(fields)
    return record
