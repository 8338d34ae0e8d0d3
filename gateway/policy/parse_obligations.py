"""Located YAML -> the obligations of a rule: masking, routing, headers, image marks, sink
suppressions and audit duties (shape only; the compiler checks them against the stage)."""

from __future__ import annotations

from gateway.policy.ast import (
    AuditSpec,
    HeaderSpec,
    ImageMarkSpec,
    MaskSpec,
    ObligationsSpec,
    RouteSpec,
    SinkSuppressionSpec,
)
from gateway.policy.codes import SHAPE
from gateway.policy.language import IMAGE_MARK_SCHEMES, MASK_METHODS
from gateway.policy.reader import HEADER_NAME, Reader
from gateway.source import DataPath, format_path

__all__ = [
    "parse_obligations",
]


_OBLIGATION_KEYS = ("mask", "route", "headers", "image_marks", "suppress_sinks", "audit")


def parse_obligations(r: Reader, raw: object, path: DataPath) -> ObligationsSpec:
    """Read a rule's `obligations` mapping; a bad entry is reported and left out."""
    data = r.mapping(raw, path, what="obligations", optional=_OBLIGATION_KEYS)
    if data is None:
        return ObligationsSpec()
    masks = _parse_masks(r, data["mask"], (*path, "mask")) if "mask" in data else []
    route = _parse_route(r, data["route"], (*path, "route")) if "route" in data else None
    headers = _parse_headers(r, data["headers"], (*path, "headers")) if "headers" in data else []
    marks: list[ImageMarkSpec] = []
    if "image_marks" in data:
        sub = (*path, "image_marks")
        for i, item in enumerate(r.listing(data["image_marks"], sub, "image_marks")):
            mark = _parse_mark(r, item, (*sub, i))
            if mark is not None:
                marks.append(mark)
    sinks = (
        _parse_sinks(r, data["suppress_sinks"], (*path, "suppress_sinks"))
        if "suppress_sinks" in data
        else None
    )
    audit = _parse_audit(r, data["audit"], (*path, "audit")) if "audit" in data else None
    return ObligationsSpec(tuple(masks), route, tuple(headers), tuple(marks), sinks, audit)


def _parse_masks(r: Reader, raw: object, sub: DataPath) -> list[MaskSpec]:
    """One masking duty or a list of them."""
    masks: list[MaskSpec] = []
    items = raw if isinstance(raw, list) else [raw]
    base = sub if not isinstance(raw, list) else None
    for i, item in enumerate(items):
        ipath = base if base is not None else (*sub, i)
        spec = _parse_mask(r, item, ipath)
        if spec is not None:
            masks.append(spec)
    return masks


def _parse_headers(r: Reader, raw: object, sub: DataPath) -> list[HeaderSpec]:
    """Response headers: a mapping of header names to template values."""
    headers: list[HeaderSpec] = []
    hd = r.keyed(raw, sub, "headers")
    for name, value in (hd or {}).items():
        if not HEADER_NAME.match(name):
            r.error(SHAPE, f"invalid header name `{name}`", (*sub, name), at_key=True)
            continue
        text = r.string(value, (*sub, name), f"header `{name}`")
        if text is not None:
            headers.append(HeaderSpec(name, text, r.loc((*sub, name)), format_path((*sub, name))))
    return headers


def _parse_sinks(r: Reader, raw: object, sub: DataPath) -> SinkSuppressionSpec | None:
    """Which sinks the response must not reach: categories, and sinks that sell or share."""
    sd = r.mapping(raw, sub, what="suppress_sinks", optional=("categories", "sale_or_share"))
    if sd is None:
        return None
    cats = r.string_list(sd.get("categories", []), (*sub, "categories"), "categories")
    sale = r.boolean(sd.get("sale_or_share", False), (*sub, "sale_or_share"), "sale_or_share")
    if not cats and not sale:
        r.error(SHAPE, "suppress_sinks names no categories and not sale_or_share", sub)
    return SinkSuppressionSpec(tuple(cats), bool(sale), r.loc(sub), format_path(sub))


def _parse_audit(r: Reader, raw: object, sub: DataPath) -> AuditSpec | None:
    """Record keeping: retention in days and where the record is stored."""
    ad = r.mapping(raw, sub, what="audit", optional=("retention_days", "storage_region"))
    if ad is None:
        return None
    days = (
        r.integer(ad["retention_days"], (*sub, "retention_days"), "retention_days", minimum=1)
        if "retention_days" in ad
        else None
    )
    region = r.optional_string(ad, "storage_region", sub, "storage_region")
    if "retention_days" not in ad and "storage_region" not in ad:
        r.error(SHAPE, "audit sets neither retention_days nor storage_region", sub)
    return AuditSpec(days, region, r.loc(sub), format_path(sub))


def _parse_mask(r: Reader, raw: object, path: DataPath) -> MaskSpec | None:
    data = r.mapping(
        raw, path, what="mask", required=("method",), optional=("categories", "paths", "keep")
    )
    if data is None:
        return None
    method = (
        r.string(data.get("method"), (*path, "method"), "mask method", choices=MASK_METHODS)
        if "method" in data
        else None
    )
    cats = r.string_list(data.get("categories", []), (*path, "categories"), "categories")
    paths = r.string_list(data.get("paths", []), (*path, "paths"), "paths")
    if not cats and not paths:
        r.error(SHAPE, "mask names no categories and no paths", path)
        return None
    keep = None
    if method == "keep_last":
        if "keep" not in data:
            r.error(SHAPE, "`keep_last` needs `keep` (how many characters stay visible)", path)
            return None
        keep = r.integer(data["keep"], (*path, "keep"), "keep", minimum=1)
    elif "keep" in data:
        r.error(
            SHAPE,
            f"`keep` only applies to `keep_last`, not `{method}`",
            (*path, "keep"),
            at_key=True,
        )
    if method is None:
        return None
    return MaskSpec(tuple(cats), tuple(paths), method, keep, r.loc(path), format_path(path))


def _parse_route(r: Reader, raw: object, path: DataPath) -> RouteSpec | None:
    data = r.mapping(raw, path, what="route", required=("regions",), optional=("or_mechanisms",))
    if data is None:
        return None
    regions = r.string_list(
        data.get("regions", []), (*path, "regions"), "region", allow_empty=False
    )
    mechanisms = r.string_list(
        data.get("or_mechanisms", []), (*path, "or_mechanisms"), "transfer mechanism"
    )
    return RouteSpec(tuple(regions), tuple(mechanisms), r.loc(path), format_path(path))


def _parse_mark(r: Reader, raw: object, path: DataPath) -> ImageMarkSpec | None:
    data = r.mapping(
        raw, path, what="image mark", required=("scheme",), optional=("value", "fields")
    )
    if data is None:
        return None
    scheme = (
        r.string(
            data.get("scheme"), (*path, "scheme"), "image mark scheme", choices=IMAGE_MARK_SCHEMES
        )
        if "scheme" in data
        else None
    )
    value = r.optional_string(data, "value", path, "value")
    fields: list[tuple[str, str]] = []
    if "fields" in data:
        sub = (*path, "fields")
        fd = r.keyed(data["fields"], sub, "fields")
        for key, val in (fd or {}).items():
            text = r.string(val, (*sub, key), f"field `{key}`")
            if text is not None:
                fields.append((key, text))
    if scheme is None:
        return None
    return ImageMarkSpec(scheme, value, tuple(fields), r.loc(path), format_path(path))
