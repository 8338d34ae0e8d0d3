"""Obligations of an allowed request: routing to eligible backends, audit duties, and the
merge of every matching rule's masking, headers, image marks and sink suppressions.

Rule 1: merging takes the strictest duty of the rules that matched: the stronger masking
method per category, the intersection of allowed regions, the longest audit retention.
Rule 2: results that depend only on the rules (region intersections, audit merges) are
memoised in the policy set's bounded memo.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.policy.decision import (
    EMPTY_OBLIGATIONS,
    AuditObligation,
    DecisionError,
    ImageMark,
    MaskAction,
    Obligations,
    Routing,
    SinkSuppression,
)
from gateway.policy.ir import CompiledObligations, CompiledRule
from gateway.policy.memo import BoundedMemo
from gateway.policy.state import EvalError, EvalState
from gateway.policy.vocabulary import Vocabulary, region_in

__all__ = ["NO_AUDIT", "ObligationMerger"]

_MASK_RANK = {"redact": 3, "hash": 2, "keep_last": 1}
NO_AUDIT = AuditObligation()


class ObligationMerger:
    """The routing and obligation steps of `PolicySet` (a base class: its state is the
    policy set's)."""

    __slots__ = ()
    vocabulary: Vocabulary
    _cache: BoundedMemo[Any, Any]

    # ------------------------------------------------------------------ routing

    def _route(
        self, ctx: Mapping[str, Any], matched: Sequence[CompiledRule]
    ) -> tuple[Routing | None, bool]:
        routes = [r.obligations.route for r in matched if r.obligations.route is not None]
        if not routes:  # most requests: nothing to route
            return None, False
        if len(routes) == 1:
            regions, mechanisms = routes[0]
        else:
            regions = routes[0][0]
            for other, _mechs in routes[1:]:
                regions = self._intersect(regions, other)
            mechanisms = frozenset().union(*(m for _r, m in routes))
        candidates, eligible = _eligible_backends(ctx.get("backends"), routes)
        key = ("routing", regions, mechanisms)
        shown = self._cache.get(key)
        if shown is None:
            shown = self._cache.remember(
                key, (tuple(self._compress(regions)), tuple(sorted(mechanisms)))
            )
        routing = Routing(shown[0], eligible, shown[1])
        if candidates:
            denied = not eligible
        else:  # no candidate list: only an empty region intersection without a fallback
            denied = not regions and not all(m for _r, m in routes)
        return routing, denied

    def _intersect(self, a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
        key = ("intersect", a, b)
        hit: frozenset[str] | None = self._cache.get(key)
        if hit is None:
            hit = self._cache.remember(key, self.vocabulary.intersect(a, b))
        return hit

    def _compress(self, regions: frozenset[str]) -> list[str]:
        key = ("compress", regions)
        hit: list[str] | None = self._cache.get(key)
        if hit is None:
            hit = self._cache.remember(key, self.vocabulary.compress(regions))
        return hit

    # ------------------------------------------------------------------ outcomes

    def _audit(self, hits: Sequence[CompiledRule]) -> tuple[AuditObligation, list[DecisionError]]:
        if not hits:
            return NO_AUDIT, []
        # The merge depends only on which audit rules matched: memoise it.
        key = ("audit", *[r.pos for r in hits])
        found = self._cache.get(key)
        if found is None:
            found = self._cache.remember(key, self._merge_audit(hits))
        audit, errors = found
        return audit, list(errors)

    def _merge_audit(
        self, hits: Sequence[CompiledRule]
    ) -> tuple[AuditObligation, tuple[DecisionError, ...]]:
        retention: int | None = None
        storage: frozenset[str] | None = None
        for rule in hits:
            ob = rule.obligations
            if ob.retention_days is not None:
                retention = max(retention or 0, ob.retention_days)
            if ob.storage_region is not None:
                storage = (
                    ob.storage_region
                    if storage is None
                    else self._intersect(storage, ob.storage_region)
                )
        region = None
        errors: list[DecisionError] = []
        if storage is not None:
            names = self._compress(storage)
            if len(names) == 1:
                region = names[0]
            else:
                errors.append(
                    DecisionError(
                        "audit_storage_conflict",
                        "audit rules require incompatible storage regions",
                        hits[-1].id,
                    )
                )
        return AuditObligation(retention, region), tuple(errors)

    def _merge(
        self,
        ctx: Mapping[str, Any],
        st: EvalState,
        matched: Sequence[CompiledRule],
        audit: AuditObligation,
        routing: Routing | None,
    ) -> Obligations:
        if routing is None and audit is NO_AUDIT:
            for rule in matched:
                if not rule.obligations.empty:
                    break
            else:
                return EMPTY_OBLIGATIONS
        mask: dict[str, MaskAction] = {}
        mask_paths: dict[str, MaskAction] = {}
        headers: dict[tuple[str, str], None] = {}
        marks: dict[ImageMark, None] = {}
        sink_categories: set[str] = set()
        sale_or_share = False
        found: frozenset[str] | None = None
        any_sinks = False
        for rule in matched:
            ob = rule.obligations
            if ob.empty:
                continue
            try:
                if ob.mask:
                    if found is None:
                        found = frozenset(st.pd)  # validated by `load_sections`
                    _add_masks(ob, found, mask, mask_paths)
                _add_rendered(ob, ctx, st, headers, marks)
            except EvalError as exc:
                exc.rule = rule.id  # type: ignore[attr-defined]
                raise
            if ob.sinks is not None:
                any_sinks = True
                sink_categories |= ob.sinks[0]
                sale_or_share = sale_or_share or ob.sinks[1]
        suppression = None
        if any_sinks:
            suppression = SinkSuppression(
                tuple(sorted(sink_categories)),
                sale_or_share,
                _suppressed_sinks(ctx.get("sinks"), sink_categories, sale_or_share),
            )
        if not (mask or mask_paths or headers or marks or suppression or routing) and (
            audit is NO_AUDIT
        ):
            return EMPTY_OBLIGATIONS
        return Obligations(
            mask=dict(sorted(mask.items())),
            mask_paths=dict(sorted(mask_paths.items())),
            routing=routing,
            headers=tuple(headers),
            image_marks=tuple(marks),
            suppress_sinks=suppression,
            audit=audit,
        )


def _add_masks(
    ob: CompiledObligations,
    found: frozenset[str],
    mask: dict[str, MaskAction],
    mask_paths: dict[str, MaskAction],
) -> None:
    """Merge a rule's masking duties: per category found in the request, and per path."""
    for categories, paths, action in ob.mask:
        for cat in categories:
            if cat in found:
                mask[cat] = _stronger(mask.get(cat), action)
        for path in paths:
            mask_paths[path] = _stronger(mask_paths.get(path), action)


def _add_rendered(
    ob: CompiledObligations,
    ctx: Mapping[str, Any],
    st: EvalState,
    headers: dict[tuple[str, str], None],
    marks: dict[ImageMark, None],
) -> None:
    """Render a rule's headers and image-mark fields into the merged sets."""
    for name, template in ob.headers:
        headers[(name, template.render(ctx, st))] = None
    for scheme, value, fields in ob.image_marks:
        rendered = tuple((k, t.render(ctx, st)) for k, t in fields)
        marks[ImageMark(scheme, value, rendered)] = None


def _stronger(current: MaskAction | None, new: MaskAction) -> MaskAction:
    if current is None:
        return new
    a, b = _MASK_RANK[current.method], _MASK_RANK[new.method]
    if a != b:
        return current if a > b else new
    if current.keep is not None and new.keep is not None and new.keep < current.keep:
        return new
    return current


def _eligible_backends(
    raw: object, routes: Sequence[tuple[frozenset[str], frozenset[str]]]
) -> tuple[int, tuple[str, ...]]:
    """Count the candidate backends and list those every route constraint allows."""
    if raw is None:
        return 0, ()
    if raw.__class__ is not list:
        raise EvalError("context_type_error", "`backends` must be a list")
    eligible = []
    for item in raw:
        if item.__class__ is not dict and not isinstance(item, Mapping):
            raise EvalError("context_type_error", "each backend must be an object")
        backend_id = item.get("id")
        region = item.get("region")
        mechs = item.get("transfer_mechanisms") or ()
        if (
            backend_id.__class__ is not str
            or (region is not None and region.__class__ is not str)
            or (mechs and mechs.__class__ is not list)
        ):
            raise EvalError(
                "context_type_error", "a backend has a malformed id, region or mechanisms"
            )
        for mech in mechs:
            if mech.__class__ is not str:
                raise EvalError("context_type_error", f"backend `{backend_id}` has a bad mechanism")
        for allowed, allowed_mechs in routes:
            if region is not None and region_in(region, allowed):
                continue
            if allowed_mechs and any(m in allowed_mechs for m in mechs):
                continue
            break
        else:
            eligible.append(backend_id)
    return len(raw), tuple(eligible)


def _suppressed_sinks(raw: object, categories: set[str], sale_or_share: bool) -> tuple[str, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        raise EvalError("context_type_error", "`sinks` must be a list")
    out = []
    for item in raw:
        if not isinstance(item, Mapping) or type(item.get("id")) is not str:
            raise EvalError("context_type_error", "each sink needs a string `id`")
        if item.get("category") in categories or (
            sale_or_share and item.get("is_sale_or_share") is True
        ):
            out.append(item["id"])
    return tuple(out)
