"""The stricter of two decisions, for a request that can be read two ways.

When a caller declares a fact the gateway also infers (the data subjects' region) and is not
trusted to replace the inference, the request is evaluated under both readings. Declared
facts may only tighten, so the result must be at least as strict as each reading:

Rule 1 — a deny wins over an allow; of two denials the first (the declared reading) is kept.
Rule 2 — two allows merge their obligations: every masking duty of either (the stronger
method where both mask a category: redact over hash over keep_last, fewer characters kept
over more), routing only to regions both allow, every header, image mark and sink
suppression of either, the longer retention.
Rule 3 — rule ids, dry-run ids, legal bases and waivers of both are listed, each once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TypeVar

from gateway.policy.decision import (
    AuditObligation,
    Decision,
    MaskAction,
    Obligations,
    Routing,
    SinkSuppression,
)

__all__ = ["stricter"]

_T = TypeVar("_T")
_METHOD_STRENGTH = {"keep_last": 0, "hash": 1, "redact": 2}


def stricter(first: Decision, second: Decision) -> Decision:
    """A decision at least as strict as both `first` and `second` (see the module rules)."""
    if not first.allowed:
        return first
    if not second.allowed:
        return second
    return first._replace(
        rules=_union(first.rules, second.rules),
        dry_run=_union(first.dry_run, second.dry_run),
        legal_basis=_union(first.legal_basis, second.legal_basis),
        waivers=_union(first.waivers, second.waivers),
        obligations=_merge_obligations(first.obligations, second.obligations),
    )


def _union(first: Iterable[_T], second: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def _stronger(first: MaskAction, second: MaskAction) -> MaskAction:
    rank_first = _METHOD_STRENGTH.get(first.method, 2)
    rank_second = _METHOD_STRENGTH.get(second.method, 2)
    if rank_first != rank_second:
        return first if rank_first > rank_second else second
    if first.method == "keep_last" and (second.keep or 4) < (first.keep or 4):
        return second
    return first


def _merge_masks(
    first: Mapping[str, MaskAction], second: Mapping[str, MaskAction]
) -> Mapping[str, MaskAction]:
    merged = dict(first)
    for key, action in second.items():
        merged[key] = _stronger(merged[key], action) if key in merged else action
    return MappingProxyType(merged)


def _merge_routing(first: Routing | None, second: Routing | None) -> Routing | None:
    if first is None or second is None:
        return first if second is None else second
    allowed = tuple(region for region in first.allowed_regions if region in second.allowed_regions)
    backends = tuple(backend for backend in first.backends if backend in second.backends)
    return Routing(allowed, backends, _union(first.mechanisms, second.mechanisms))


def _merge_suppression(
    first: SinkSuppression | None, second: SinkSuppression | None
) -> SinkSuppression | None:
    if first is None or second is None:
        return first if second is None else second
    return SinkSuppression(
        _union(first.categories, second.categories),
        first.sale_or_share or second.sale_or_share,
        _union(first.sinks, second.sinks),
    )


def _merge_audit(first: AuditObligation, second: AuditObligation) -> AuditObligation:
    days = [d for d in (first.retention_days_min, second.retention_days_min) if d is not None]
    return AuditObligation(
        max(days) if days else None, first.storage_region or second.storage_region
    )


def _merge_obligations(first: Obligations, second: Obligations) -> Obligations:
    names = {name for name, _ in first.headers}
    return Obligations(
        mask=_merge_masks(first.mask, second.mask),
        mask_paths=_merge_masks(first.mask_paths, second.mask_paths),
        routing=_merge_routing(first.routing, second.routing),
        headers=(*first.headers, *(h for h in second.headers if h[0] not in names)),
        image_marks=_union(first.image_marks, second.image_marks),
        suppress_sinks=_merge_suppression(first.suppress_sinks, second.suppress_sinks),
        audit=_merge_audit(first.audit, second.audit),
    )
