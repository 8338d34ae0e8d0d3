"""Canonical JSON (RFC 8785, JCS) for audit records: the only place bytes-to-hash are made.

Rule 1: a value is *JCS-safe* when it is built only from `dict` (ASCII string keys),
`list`, `str` (no lone surrogates), `int` with |i| < 2**53, `bool` and `None`. No floats.

Rule 2: on JCS-safe values, `canonical_dumps` (orjson with sorted keys, compact, UTF-8)
produces exactly the bytes of `rfc8785.dumps`. With ASCII keys, code-point order equals
UTF-16 code-unit order; without floats, ECMAScript number formatting is plain decimal;
orjson and JCS escape strings identically (tests/audit/test_canonical.py proves it with
a property test). orjson is about ten times faster than `json.dumps`, which gives the
same bytes on this subset and is kept as `json_dumps_canonical` for reference.

Rule 3: verifiers never re-canonicalize to repair. They require the stored bytes to be
canonical already, and hash the stored bytes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import rfc8785

from gateway.audit.errors import MalformedJSON

__all__ = [
    "MAX_DEPTH",
    "SAFE_INT_LIMIT",
    "canonical_dumps",
    "canonicalize",
    "fast_loads",
    "is_canonical_form",
    "is_jcs_safe",
    "jcs_violation",
    "json_dumps_canonical",
    "strict_loads",
]

#: Integers must satisfy |i| < SAFE_INT_LIMIT (I-JSON, RFC 7493 section 2.2).
SAFE_INT_LIMIT = 2**53
#: Nesting deeper than this is rejected, so validation never hits the recursion limit.
MAX_DEPTH = 32

_SORT = orjson.OPT_SORT_KEYS
_STRICT_SORT = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def _str_ok(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _item_safe(item: object, depth: int) -> bool:
    # Inlined scalar checks: records are mostly flat, so recursion is the rare case.
    kind = type(item)
    if kind is str:
        return item.isascii() or _str_ok(item)  # type: ignore[attr-defined, arg-type]
    if kind is int:
        return -SAFE_INT_LIMIT < item < SAFE_INT_LIMIT  # type: ignore[operator]
    if kind is dict or kind is list:
        return _safe(item, depth)
    return item is None or kind is bool


def _safe(value: object, depth: int) -> bool:
    kind = type(value)
    if kind is dict:
        if depth >= MAX_DEPTH:
            return False
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key.isascii():
                return False
            if type(item) is str:
                if not item.isascii() and not _str_ok(item):
                    return False
            elif not _item_safe(item, depth + 1):
                return False
        return True
    if kind is list:
        if depth >= MAX_DEPTH:
            return False
        for item in value:  # type: ignore[attr-defined]
            if not _item_safe(item, depth + 1):
                return False
        return True
    return _item_safe(value, depth)


def is_jcs_safe(value: object) -> bool:
    """Return True when `value` is in the JCS-safe subset (see the module docstring)."""
    return _safe(value, 0)


def _scalar_violation(where: str, item: object) -> str | None:
    kind = type(item)
    if kind is str:
        if not _str_ok(item):  # type: ignore[arg-type]
            return f"{where}: string contains a lone surrogate"
    elif kind is int:
        if not -SAFE_INT_LIMIT < item < SAFE_INT_LIMIT:  # type: ignore[operator]
            return f"{where}: integer {item} is outside +-(2**53 - 1)"
    elif kind is float:
        return f"{where}: floats are not allowed (use integers, e.g. microseconds)"
    elif item is not None and kind is not bool:
        return f"{where}: values of type {kind.__name__} are not allowed"
    return None


def _children(
    where: str, item: object, depth: int
) -> tuple[str | None, list[tuple[str, object, int]]]:
    """A container's problem of its own (depth, keys) or its children to look at."""
    if depth >= MAX_DEPTH:
        return f"{where}: nested deeper than {MAX_DEPTH}", []
    found: list[tuple[str, object, int]] = []
    if type(item) is list:
        for index, sub in enumerate(item):
            found.append((f"{where}[{index}]", sub, depth + 1))
        return None, found
    for key, sub in item.items():  # type: ignore[attr-defined]
        if type(key) is not str:
            return f"{where}: object key {key!r} is not a string", []
        if not key.isascii():
            return f"{where}: object key `{key}` is not ASCII", []
        found.append((f"{where}.{key}", sub, depth + 1))
    return None, found


def jcs_violation(value: object, path: str = "$") -> str | None:
    """Describe the first reason `value` is not JCS-safe, or return None.

    Slower than `is_jcs_safe` because it tracks the JSON path; call it to explain a
    failure, not on the hot path.
    """
    stack: list[tuple[str, object, int]] = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if type(item) is dict or type(item) is list:
            problem, children = _children(where, item, depth)
            stack.extend(children)
        else:
            problem = _scalar_violation(where, item)
        if problem is not None:
            return problem
    return None


def _no_floats(value: object, depth: int) -> bool:
    if depth >= MAX_DEPTH:
        return False
    for item in value.values() if type(value) is dict else value:  # type: ignore[attr-defined]
        kind = type(item)
        # Strings first: most values are; then the other scalars orjson makes.
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float or not _no_floats(item, depth + 1):  # else a dict or a list
            return False
    return True


def is_canonical_form(value: object, data: bytes) -> bool:
    """True when `data` is the canonical form (RFC 8785) of a JCS-safe `value` that
    `orjson.loads` parsed from `data` (the verifier's per-record check).

    Equal to `is_jcs_safe(value) and canonical_dumps(value) == data`, cheaper: the
    53-bit integer limit is orjson's own; bytes that are ASCII and re-serialize to
    themselves hold no non-ASCII key (an escaped one would not re-serialize the same),
    and orjson rejects lone surrogates when parsing; only floats and depth are left.
    """
    try:
        if orjson.dumps(value, option=_STRICT_SORT) != data:
            return False
    except orjson.JSONEncodeError:
        return False
    if data.isascii():
        return _no_floats(value, 0) if type(value) in (dict, list) else type(value) is not float
    return _safe(value, 0)


def canonical_dumps(value: Any) -> bytes:
    """Canonical bytes of a value already known to be JCS-safe (no check made here)."""
    return orjson.dumps(value, option=_SORT)


def json_dumps_canonical(value: Any) -> bytes:
    """The `json.dumps` formulation of the fast path; equal to `canonical_dumps` on safe values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonicalize(value: Any) -> bytes:
    """RFC 8785 bytes of any I-JSON value: the fast path when safe, else `rfc8785`."""
    if _safe(value, 0):
        return orjson.dumps(value, option=_SORT)
    result: bytes = rfc8785.dumps(value)
    return result


def fast_loads(data: bytes) -> Any:
    """Parse JSON quickly. Rejects NaN, bad UTF-8 and lone surrogates, keeps the last of
    duplicate keys; callers compare the re-serialization with `data` to catch those."""
    return orjson.loads(data)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedJSON(f"duplicate object key `{key}`")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise MalformedJSON(f"`{name}` is not JSON")


def strict_loads(data: bytes) -> Any:
    """Parse strict I-JSON: valid UTF-8, no duplicate keys, no NaN/Infinity, no lone
    surrogates, integers within +-(2**53 - 1)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise MalformedJSON(f"invalid JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise MalformedJSON("nested too deeply") from None
    problem = jcs_violation(value)
    if problem is not None and "floats" not in problem:
        raise MalformedJSON(problem)
    return value
