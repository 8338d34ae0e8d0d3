"""Closures that read context fields and test them: the lowered form of conditions.

Rule 1: a closure takes `(context, state)` and returns a bool or raises `EvalError`; it
never touches I/O and never mutates the context.
Rule 2: every value is type-checked where it is read (strict JSON types: `True` is not an
integer, `"15"` is not an age); a wrong type raises `EvalError`, which the evaluator turns
into a deny (fail closed).
Rule 3: null semantics: `eq`/`ne` compare null like any value; `in`, `lt`/`le`/`gt`/`ge`,
`between` and `contains*` are false on null (a null list is empty); `not_in` and
`contains_none` are their negations, so they hold on null.
Rule 4: times are intervals (`times.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.policy.state import ABSENT, PRESENT, EvalError, EvalState, Getter, Predicate
from gateway.policy.times import TIME_COMPARE, Interval, parse_interval
from gateway.policy.vocabulary import Vocabulary, region_in

__all__ = ["make_getter", "make_key_function", "make_predicate", "read_time"]


def read_time(value: object, path: str) -> Interval | None:
    """Read a context time (the clock or an RFC 3339 string) as an interval; None if null."""
    if value is None:
        return None
    if type(value) is tuple:
        return value  # the clock, already an interval
    if type(value) is str:
        iv = parse_interval(value)
        if iv is not None:
            return iv
        raise EvalError("context_type_error", f"`{path}` is not an RFC 3339 time: `{value}`")
    raise EvalError("context_type_error", f"`{path}` must be a time string")


# --------------------------------------------------------------------------- getters


def make_getter(path: str, vocabulary: Vocabulary) -> Getter:
    """Compile a dotted context path (or a derived field) into a fast reader."""
    if path == "now":
        return lambda ctx, st: st.now
    if path == "subject.presumed_region":
        subject_region = _plain_getter(("subject", "region"))
        caller_region = _plain_getter(("caller", "region"))

        def presumed(ctx: Mapping[str, Any], st: EvalState) -> Any:
            value = subject_region(ctx, st)
            return value if value is not None else caller_region(ctx, st)

        return presumed
    purpose = _plain_getter(("request", "purpose"))
    if path == "request.has_personal_data":
        found = _plain_getter(("request", "personal_data"))

        check_found = _list_checker("list:personal_data", "request.personal_data")

        def has_pd(ctx: Mapping[str, Any], st: EvalState) -> bool:
            if check_found(found(ctx, st)):
                return True
            return vocabulary.purpose_attribute(purpose(ctx, st), "personal_data") is True

        return has_pd
    if path == "purpose.known":
        return lambda ctx, st: isinstance(p := purpose(ctx, st), str) and p in vocabulary.purposes
    if path.startswith("purpose."):
        attribute = path[len("purpose.") :]
        return lambda ctx, st: vocabulary.purpose_attribute(purpose(ctx, st), attribute)
    return _plain_getter(tuple(path.split(".")))


def _plain_getter(parts: Sequence[str]) -> Getter:
    dotted = ".".join(parts)

    def unreachable(exc: Exception) -> EvalError:
        return EvalError(
            "context_type_error",
            f"`{dotted}` is unreadable: a parent is not an object ({type(exc).__name__})",
        )

    if len(parts) == 1:
        (a,) = parts

        def get1(ctx: Mapping[str, Any], st: EvalState) -> Any:
            return ctx.get(a)

        return get1
    if len(parts) == 2:
        return _getter2(parts[0], parts[1], unreachable)
    if len(parts) == 3:
        return _getter3(parts[0], parts[1], parts[2], unreachable)

    def getn(ctx: Mapping[str, Any], st: EvalState) -> Any:
        v: Any = ctx
        try:
            for part in parts:
                v = v.get(part)
                if v is None:
                    return None
        except AttributeError as exc:
            raise unreachable(exc) from None
        return v

    return getn


def _getter2(a: str, b: str, unreachable: Callable[[Exception], EvalError]) -> Getter:
    def get2(ctx: Mapping[str, Any], st: EvalState) -> Any:
        v = ctx.get(a)
        if v is None:
            return None
        try:
            return v.get(b)
        except AttributeError as exc:
            raise unreachable(exc) from None

    return get2


def _getter3(a: str, b: str, c: str, unreachable: Callable[[Exception], EvalError]) -> Getter:
    def get3(ctx: Mapping[str, Any], st: EvalState) -> Any:
        v = ctx.get(a)
        if v is None:
            return None
        try:
            v = v.get(b)
            return None if v is None else v.get(c)
        except AttributeError as exc:
            raise unreachable(exc) from None

    return get3


# --------------------------------------------------------------------------- type checks

_SCALAR_PY: dict[str, type] = {"string": str, "integer": int, "boolean": bool}


def _scalar_kind(ftype: str) -> str:
    if ftype in ("integer", "boolean", "time", "region", "object"):
        return ftype
    return "string"  # strings and every vocabulary-backed enum


def _checker(ftype: str, path: str) -> Callable[[object], object]:
    """Return a function that validates (and returns) a value of this field type."""
    kind = _scalar_kind(ftype)
    if kind == "time":
        return lambda v: read_time(v, path)
    if kind == "object":
        return lambda v: v
    expected = str if kind in ("string", "region") else _SCALAR_PY[kind]
    name = {
        "string": "a string",
        "region": "a region code string",
        "integer": "an integer",
        "boolean": "a boolean",
    }[kind]

    def check(v: object) -> object:
        if v is None or type(v) is expected:
            return v
        raise EvalError("context_type_error", f"`{path}` must be {name}, got {type(v).__name__}")

    return check


def _list_checker(ftype: str, path: str) -> Callable[[object], list[Any]]:
    element = ftype.split(":", 1)[1]

    def check(v: object) -> list[Any]:
        if v is None:
            return []
        if type(v) is not list:
            raise EvalError("context_type_error", f"`{path}` must be a list")
        for item in v:
            if type(item) is not str:
                raise EvalError("context_type_error", f"`{path}` must hold {element} strings")
        return v

    return check


# --------------------------------------------------------------------------- predicates


def make_predicate(
    ftype: str,
    op: str,
    get: Getter,
    operand: Any,
    path: str,
    vocabulary: Vocabulary,
    ref_get: Getter | None = None,
    ref_type: str | None = None,
) -> Predicate:
    """Build the closure for `field op operand`.

    `operand` is the normalised literal (see `typecheck.py`): a scalar, an `Interval`,
    a frozenset (expanded for regions), a pair of bounds, or a bool. With `ref_get`, the
    operand is read from another field at evaluation time instead.
    """
    if ftype.startswith("list:"):
        return _list_predicate(ftype, op, get, operand, path, vocabulary, ref_get, ref_type)
    check = _checker(ftype, path)
    if op == "exists":
        want = bool(operand)
        if ftype == "object":
            return lambda ctx, st: (get(ctx, st) is not None) is want
        return lambda ctx, st: (check(get(ctx, st)) is not None) is want
    if ref_get is not None:
        return _ref_predicate(ftype, op, get, check, ref_get, ref_type or ftype, path, vocabulary)
    kind = _scalar_kind(ftype)
    if kind == "time":
        return _time_predicate(op, get, operand, path)
    if op in ("eq", "ne"):
        want_eq = op == "eq"
        lit = operand

        def eq(ctx: Mapping[str, Any], st: EvalState) -> bool:
            return (check(get(ctx, st)) == lit) is want_eq

        return eq
    if op in ("in", "not_in"):
        return _member_predicate(kind, op, get, check, operand)
    return _ordered_predicate(op, get, check, operand)


def _member_predicate(
    kind: str, op: str, get: Getter, check: Callable[[object], object], operand: Any
) -> Predicate:
    """`in` / `not_in` a set of scalars (regions: in a set of region terms)."""
    members: frozenset[Any] = operand
    inside = op == "in"
    if kind == "region":

        def region_member(ctx: Mapping[str, Any], st: EvalState) -> bool:
            v = check(get(ctx, st))
            if v is None:
                return not inside
            return region_in(v, members) is inside  # type: ignore[arg-type]

        return region_member

    def member(ctx: Mapping[str, Any], st: EvalState) -> bool:
        v = check(get(ctx, st))
        if v is None:
            return not inside
        return (v in members) is inside

    return member


def _ordered_predicate(
    op: str, get: Getter, check: Callable[[object], object], operand: Any
) -> Predicate:
    """Ordered integers: `between`, `lt`, `le`, `gt`, `ge`."""
    if op == "between":
        lo, hi = operand

        def between(ctx: Mapping[str, Any], st: EvalState) -> bool:
            v = check(get(ctx, st))
            return v is not None and lo <= v <= hi

        return between
    compare = _INT_COMPARE[op]
    bound = operand

    def ordered(ctx: Mapping[str, Any], st: EvalState) -> bool:
        v = check(get(ctx, st))
        return v is not None and compare(v, bound)

    return ordered


_INT_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


def _time_predicate(op: str, get: Getter, operand: Any, path: str) -> Predicate:
    if op == "between":
        lo, hi = operand
        ge, le = TIME_COMPARE["ge"], TIME_COMPARE["le"]

        def between(ctx: Mapping[str, Any], st: EvalState) -> bool:
            v = read_time(get(ctx, st), path)
            return v is not None and ge(v, lo) and le(v, hi)

        return between
    if op in ("eq", "ne") and operand is None:
        want_none = op == "eq"
        return lambda ctx, st: (read_time(get(ctx, st), path) is None) is want_none
    compare = TIME_COMPARE[op]
    bound: Interval = operand
    null_result = op == "ne"

    def timed(ctx: Mapping[str, Any], st: EvalState) -> bool:
        v = read_time(get(ctx, st), path)
        if v is None:
            return null_result
        return compare(v, bound)

    return timed


def _ref_predicate(
    ftype: str,
    op: str,
    get: Getter,
    check: Callable[[object], object],
    ref_get: Getter,
    ref_type: str,
    path: str,
    vocabulary: Vocabulary,
) -> Predicate:
    kind = _scalar_kind(ftype)
    if op in ("in", "not_in"):
        inside = op == "in"
        ref_check = _list_checker(ref_type, "operand of " + path)

        def member(ctx: Mapping[str, Any], st: EvalState) -> bool:
            v = check(get(ctx, st))
            items = ref_check(ref_get(ctx, st))
            if v is None:
                return not inside
            if kind == "region":
                return region_in(v, _expand_cached(vocabulary, tuple(items))) is inside  # type: ignore[arg-type]
            return (v in items) is inside

        return member
    ref_check_scalar = _checker(ref_type, "operand of " + path)
    if kind == "time":
        compare = TIME_COMPARE[op]
        null_result = op == "ne"

        def timed(ctx: Mapping[str, Any], st: EvalState) -> bool:
            a = read_time(get(ctx, st), path)
            b = read_time(ref_get(ctx, st), path)
            if a is None or b is None:
                return null_result if (a is None) != (b is None) else op == "eq"
            return compare(a, b)

        return timed
    if op in ("eq", "ne"):
        want_eq = op == "eq"
        return lambda ctx, st: (
            (check(get(ctx, st)) == ref_check_scalar(ref_get(ctx, st))) is want_eq
        )
    compare_int = _INT_COMPARE[op]

    def ordered(ctx: Mapping[str, Any], st: EvalState) -> bool:
        a = check(get(ctx, st))
        b = ref_check_scalar(ref_get(ctx, st))
        return a is not None and b is not None and compare_int(a, b)

    return ordered


def _list_predicate(
    ftype: str,
    op: str,
    get: Getter,
    operand: Any,
    path: str,
    vocabulary: Vocabulary,
    ref_get: Getter | None,
    ref_type: str | None,
) -> Predicate:
    check = _list_checker(ftype, path)
    is_region = ftype == "list:region"
    if op == "exists":
        want = bool(operand)
        return lambda ctx, st: (get(ctx, st) is not None) is want
    if op == "empty":
        want_empty = bool(operand)
        return lambda ctx, st: (not check(get(ctx, st))) is want_empty
    ref_check = _list_checker(ref_type or ftype, "operand of " + path)

    def terms(ctx: Mapping[str, Any], st: EvalState) -> Any:
        if ref_get is None:
            return operand
        items = tuple(ref_check(ref_get(ctx, st)))
        if is_region:
            return tuple(_expand_cached(vocabulary, (t,)) for t in items)
        return frozenset(items)

    if is_region:
        # Literal operands arrive as a tuple of expanded sets, one per listed term.
        def hits(values: list[str], expanded: frozenset[str]) -> bool:
            return any(region_in(v, expanded) for v in values)

        if op in ("contains", "contains_any", "contains_none"):
            negate = op == "contains_none"

            def any_region(ctx: Mapping[str, Any], st: EvalState) -> bool:
                values = check(get(ctx, st))
                found = any(hits(values, e) for e in terms(ctx, st))
                return found is not negate

            return any_region

        def all_regions(ctx: Mapping[str, Any], st: EvalState) -> bool:
            values = check(get(ctx, st))
            return all(hits(values, e) for e in terms(ctx, st))

        return all_regions
    if op in ("contains", "contains_any", "contains_none"):
        negate = op == "contains_none"

        def any_of(ctx: Mapping[str, Any], st: EvalState) -> bool:
            values = check(get(ctx, st))
            wanted = terms(ctx, st)
            return (not wanted.isdisjoint(values)) is not negate

        return any_of

    def all_of(ctx: Mapping[str, Any], st: EvalState) -> bool:
        values = check(get(ctx, st))
        return bool(terms(ctx, st) <= set(values))

    return all_of


@functools.lru_cache(maxsize=1024)
def _expand_cached_inner(vocabulary: Vocabulary, items: tuple[str, ...]) -> frozenset[str]:
    return vocabulary.expand(items)


def _expand_cached(vocabulary: Vocabulary, items: tuple[str, ...]) -> frozenset[str]:
    return _expand_cached_inner(vocabulary, items)


# --------------------------------------------------------------------------- index keys


def make_key_function(
    ftype: str, get: Getter, path: str
) -> Callable[[Mapping[str, Any], EvalState], tuple[Any, ...]]:
    """Keys under which a context value is looked up in the rule index (reference form).

    A null value yields `ABSENT`; a present one yields `PRESENT` plus its own keys (a
    region also its country; a list each element). Type checks happen here too: an indexed
    field with a wrong type raises `EvalError` (the evaluator denies), so a malformed value
    can never skip the rules indexed on it.
    """
    if ftype == "object":
        return lambda ctx, st: (ABSENT,) if get(ctx, st) is None else (PRESENT,)
    if ftype.startswith("list:"):
        check_list = _list_checker(ftype, path)

        def list_keys(ctx: Mapping[str, Any], st: EvalState) -> tuple[Any, ...]:
            raw = get(ctx, st)
            if raw is None:
                return (ABSENT,)
            keys: list[Any] = [PRESENT]
            for v in check_list(raw):
                keys.append(v)
                if ftype == "list:region" and "-" in v:
                    keys.append(v.partition("-")[0])
            return tuple(keys)

        return list_keys
    check = _checker(ftype, path)

    def keys(ctx: Mapping[str, Any], st: EvalState) -> tuple[Any, ...]:
        v = check(get(ctx, st))
        if v is None:
            return (ABSENT,)
        if ftype == "region" and "-" in v:  # type: ignore[operator]
            return (PRESENT, v, v.partition("-")[0])  # type: ignore[attr-defined]
        return (PRESENT, v)

    return keys
