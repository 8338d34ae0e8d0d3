"""Lower typed conditions and the rule index into generated Python functions (the hot path).

Rule 1: generated source never contains text from a policy or a context. Field names,
literals and sets are bound as constants (`K0`, `K1`, ...) in the function's namespace;
the source only holds identifiers and operators produced here.
Rule 2: the generated code has exactly the semantics of `predicates.make_predicate` (the
reference interpreter used for explanations): same null rules, same strict type checks,
same short-circuit order. `tests/policy/test_codegen.py` checks both agree on random inputs.
Rule 3: sections (`caller`, `subject`, `request`, `licence`, `model`) are read once per
evaluation into `EvalState`; a test reads `st.c.get("region")` instead of walking the
context, and type checks are inline, so the happy path makes no function calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.policy.predicates import make_getter, read_time
from gateway.policy.state import ABSENT, PRESENT, EvalError, EvalState, Getter, Predicate
from gateway.policy.templates import Template, render_value
from gateway.policy.times import TIME_COMPARE
from gateway.policy.vocabulary import Vocabulary, region_in

__all__ = [
    "ABSENT",
    "PRESENT",
    "SECTIONS",
    "CodeBuilder",
    "fast_template",
    "TypedLeaf",
    "KEYABLE",
    "generate_candidates",
    "generate_key_reader",
    "generate_predicate",
    "leaf_source",
    "positions_of",
]


#: Context sections prefetched into `EvalState` attributes.
SECTIONS: dict[str, str] = {
    "caller": "c",
    "subject": "s",
    "request": "r",
    "licence": "l",
    "model": "m",
}

_PY_TYPES = {"string": "str", "region": "str", "integer": "int", "boolean": "bool"}


def _bad(path: str, expected: str) -> Any:
    raise EvalError("context_type_error", f"`{path}` must be {expected}")


def _list(value: object, path: str) -> Any:
    if value is None:
        return ()
    if type(value) is not list:
        raise EvalError("context_type_error", f"`{path}` must be a list")
    for item in value:
        if type(item) is not str:
            raise EvalError("context_type_error", f"`{path}` must hold strings")
    return value


def _dig(value: object, key: str, path: str) -> Any:
    if value is None:
        return None
    try:
        return value.get(key)  # type: ignore[attr-defined]
    except AttributeError:
        raise EvalError(
            "context_type_error", f"`{path}` is unreadable: a parent is not an object"
        ) from None


def _region_hits(values: Sequence[str], sets: Sequence[frozenset[str]]) -> int:
    """How many of the expanded sets contain at least one of the values."""
    return sum(1 for s in sets if any(region_in(v, s) for v in values))


def _member(
    value: object, items: Sequence[str], inside: bool, vocabulary: Vocabulary | None
) -> bool:
    """`value in items` (regions: inside any listed term); null is in no list."""
    if value is None:
        return not inside
    if vocabulary is not None:
        return region_in(value, _expand(vocabulary, tuple(items))) is inside  # type: ignore[arg-type]
    return (value in items) is inside


def _time_ref(a: Any, b: Any, op: str) -> bool:
    """Compare two time intervals read from fields (nulls as in `predicates`)."""
    if a is None or b is None:
        if (a is None) != (b is None):
            return op == "ne"
        return op == "eq"
    return bool(TIME_COMPARE[op](a, b))


_EXPANDED: dict[tuple[int, tuple[str, ...]], frozenset[str]] = {}


def _expand(vocabulary: Vocabulary, items: tuple[str, ...]) -> frozenset[str]:
    key = (id(vocabulary), items)
    hit = _EXPANDED.get(key)
    if hit is None:
        if len(_EXPANDED) > 1024:
            _EXPANDED.clear()
        hit = _EXPANDED[key] = vocabulary.expand(items)
    return hit


#: List fields `EvalState.load_sections` has read and validated already.
_PREFETCHED_LISTS = {"request.personal_data": "st.pd", "request.consents": "st.consents"}


def fast_template(template: Template, vocabulary: Vocabulary) -> Template:
    """Attach a generated renderer to a template (same output as the reference)."""
    if not template.fields:
        return template
    b = CodeBuilder(vocabulary)
    pieces = []
    for part in template.parts:
        if isinstance(part, str):
            pieces.append(b.const(part))
        else:
            name = part[0]
            pieces.append(f"TEXT({b.read(name)}, {b.const(name)}, null)")
    source = "def render(ctx, st, null):\n    return " + " + ".join(pieces) + "\n"
    # SECURITY: literal text of the template is bound as constants (Rule 1).
    template.fast = define(source, "render", b.constants, "template")
    return template


_HELPERS: dict[str, Any] = {
    "BAD": _bad,
    "TIME": read_time,
    "LIST": _list,
    "DIG": _dig,
    "RHITS": _region_hits,
    "MEMBER": _member,
    "TEXT": render_value,
    "TREF": _time_ref,
}


class TypedLeaf:
    """What codegen needs about one test (built by the compiler from its typed tests)."""

    __slots__ = ("field", "ftype", "op", "operand", "ref", "ref_type")

    def __init__(
        self, field: str, ftype: str, op: str, operand: Any, ref: str | None, ref_type: str | None
    ) -> None:
        self.field = field
        self.ftype = ftype
        self.op = op
        self.operand = operand
        self.ref = ref
        self.ref_type = ref_type


class CodeBuilder:
    """Accumulates constants and unique variable names for one generated function."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.constants: dict[str, Any] = dict(_HELPERS)
        self.counter = 0

    def const(self, value: Any) -> str:
        """Bind a constant and return its name."""
        name = f"K{len(self.constants)}"
        self.constants[name] = value
        return name

    def var(self) -> str:
        """A fresh local name."""
        self.counter += 1
        return f"_v{self.counter}"

    def read(self, path: str) -> str:
        """Expression that reads a field (derived fields go through their getter)."""
        if path == "now":
            return "st.now"
        if path == "subject.presumed_region":
            return "st.presumed"
        if path == "request.has_personal_data":
            return "st.has_pd"
        if path == "purpose.known":
            return "(st.purpose is not None)"
        parts = path.split(".")
        if parts[:2] == ["caller", "flags"] and len(parts) == 3:
            return f"st.f.get({self.const(parts[2])})"
        if parts[0] == "purpose" and len(parts) == 2:
            return (
                f"(st.purpose.get({self.const(parts[1])}, False) "
                "if st.purpose is not None else None)"
            )
        derived = (
            path in ("subject.presumed_region", "request.has_personal_data", "purpose.known")
            or parts[0] == "purpose"
        )
        if derived or parts[0] not in SECTIONS:
            if len(parts) == 1:
                return f"ctx.get({self.const(parts[0])})"
            getter: Getter = make_getter(path, self.vocabulary)
            return f"{self.const(getter)}(ctx, st)"
        expr = f"st.{SECTIONS[parts[0]]}"
        if len(parts) == 1:
            return f"ctx.get({self.const(parts[0])})"
        expr = f"{expr}.get({self.const(parts[1])})"
        for i, part in enumerate(parts[2:], start=2):
            expr = f"DIG({expr}, {self.const(part)}, {self.const('.'.join(parts[: i + 1]))})"
        return expr

    def checked(self, path: str, ftype: str, var: str) -> str:
        """Expression evaluating to the type-checked value (also bound to `var`)."""
        read = self.read(path)
        if ftype == "time":
            if path == "now":  # the clock is always an interval already
                return f"({var} := st.now)"
            return f"({var} := TIME({read}, {self.const(path)}))"
        py = _PY_TYPES.get(ftype, "str") if ftype != "object" else None
        if py is None:
            return f"({var} := {read})"
        expected = {"str": "a string", "int": "an integer", "bool": "a boolean"}[py]
        return (
            f"({var} if ({var} := {read}) is None or {var}.__class__ is {py} "
            f"else BAD({self.const(path)}, {self.const(expected)}))"
        )


def _base(ftype: str) -> str:
    if ftype in ("integer", "boolean", "time", "region", "object"):
        return ftype
    return "string"


def leaf_source(b: CodeBuilder, leaf: TypedLeaf, reference: Predicate) -> str:
    """Python expression for one test. Field-reference operands call the reference closure."""
    if leaf.ref is not None:
        return _ref_source(b, leaf, reference)
    op, ftype = leaf.op, leaf.ftype
    if ftype.startswith("list:"):
        return _list_source(b, leaf)
    kind = _base(ftype)
    v = b.var()
    if op == "exists":
        if kind == "object":
            return f"(({b.read(leaf.field)}) is {'not ' if leaf.operand else ''}None)"
        return f"({b.checked(leaf.field, kind, v)} is {'not ' if leaf.operand else ''}None)"
    value = b.checked(leaf.field, kind, v)
    if kind == "time":
        return _time_source(b, op, value, v, leaf.operand)
    k = b.const(leaf.operand)
    if op == "eq":
        return f"({value} == {k})"
    if op == "ne":
        return f"({value} != {k})"
    if op in ("in", "not_in"):
        if kind == "region":
            member = f"({v} in {k} or ('-' in {v} and {v}.partition('-')[0] in {k}))"
        else:
            member = f"({v} in {k})"
        if op == "in":
            return f"({value} is not None and {member})"
        return f"({value} is None or not {member})"
    if op == "between":
        lo, hi = leaf.operand
        return f"({value} is not None and {b.const(lo)} <= {v} <= {b.const(hi)})"
    symbol = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
    return f"({value} is not None and {v} {symbol} {k})"


def _ref_source(b: CodeBuilder, leaf: TypedLeaf, reference: Predicate) -> str:
    """A test whose operand is another field (same evaluation order as the reference)."""
    op, kind = leaf.op, _base(leaf.ftype)
    assert leaf.ref is not None and leaf.ref_type is not None
    if leaf.ftype.startswith("list:"):
        return f"{b.const(reference)}(ctx, st)"  # list-to-list tests are rare
    first = b.var()
    value = b.checked(leaf.field, kind, first)
    if op in ("in", "not_in"):
        items = f"LIST({b.read(leaf.ref)}, {b.const('operand of ' + leaf.field)})"
        vocab = b.const(b.vocabulary) if kind == "region" else "None"
        return f"MEMBER({value}, {items}, {op == 'in'}, {vocab})"
    ref_kind = _base(leaf.ref_type)
    second = b.var()
    other = b.checked(leaf.ref, ref_kind, second)
    if kind == "time" and ref_kind == "time":
        # Both sides are read (and checked) before either null test, as in the reference.
        compare = _TIME_REF_SOURCE[op].format(a=first, c=second)
        if op == "eq":  # two nulls are equal
            null_result = f"({first} is None) is ({second} is None)"
        elif op == "ne":
            null_result = f"({first} is None) is not ({second} is None)"
        else:
            null_result = "False"
        return (
            f"(({compare}) if (({value} is not None) & ({other} is not None)) else {null_result})"
        )
    if kind == "time":
        return f"TREF({value}, {other}, {b.const(op)})"
    if op == "eq":
        return f"({value} == {other})"
    if op == "ne":
        return f"({value} != {other})"
    a, c = b.var(), b.var()
    symbol = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
    return f"(({a} := {value}) is not None and ({c} := {other}) is not None and {a} {symbol} {c})"


_TIME_REF_SOURCE = {
    "lt": "{a}[1] <= {c}[0]",
    "le": "{a}[0] < {c}[1]",
    "gt": "{a}[0] >= {c}[1]",
    "ge": "{a}[1] > {c}[0]",
    "eq": "{a}[0] < {c}[1] and {a}[1] > {c}[0]",
    "ne": "not ({a}[0] < {c}[1] and {a}[1] > {c}[0])",
}


_TIME_SOURCE = {
    "lt": "{v}[1] <= {k}[0]",
    "le": "{v}[0] < {k}[1]",
    "gt": "{v}[0] >= {k}[1]",
    "ge": "{v}[1] > {k}[0]",
    "eq": "({v}[0] < {k}[1] and {v}[1] > {k}[0])",
    "ne": "not ({v}[0] < {k}[1] and {v}[1] > {k}[0])",
}


def _time_source(b: CodeBuilder, op: str, value: str, v: str, operand: Any) -> str:
    if op in ("eq", "ne") and operand is None:
        return f"({value} is {'' if op == 'eq' else 'not '}None)"
    if op == "between":
        lo, hi = b.const(operand[0]), b.const(operand[1])
        return f"({value} is not None and {v}[1] > {lo}[0] and {v}[0] < {hi}[1])"
    k = b.const(operand)
    compare = _TIME_SOURCE[op].format(v=v, k=k)
    if op == "ne":
        return f"({value} is None or {compare})"
    return f"({value} is not None and {compare})"


def _list_source(b: CodeBuilder, leaf: TypedLeaf) -> str:
    op = leaf.op
    read = b.read(leaf.field)
    if op == "exists":
        return f"(({read}) is {'not ' if leaf.operand else ''}None)"
    values = _PREFETCHED_LISTS.get(leaf.field) or f"LIST({read}, {b.const(leaf.field)})"
    if op == "empty":
        return f"((not {values}) is {bool(leaf.operand)})"
    k = b.const(leaf.operand)
    if leaf.ftype == "list:region":
        if op == "contains_all":
            return f"(RHITS({values}, {k}) == {len(leaf.operand)})"
        hits = f"RHITS({values}, {k})"
        return f"({hits} == 0)" if op == "contains_none" else f"({hits} > 0)"
    if op in ("contains", "contains_any"):
        return f"(not {k}.isdisjoint({values}))"
    if op == "contains_none":
        return f"{k}.isdisjoint({values})"
    return f"{k}.issubset({values})"


def define(source: str, name: str, constants: Mapping[str, Any], label: str) -> Any:
    """Execute generated `source` with `constants` bound and return its function `name`.

    SECURITY: callers build `source` only from identifiers and operators they chose; every
    value from a policy or a context is one of `constants` (Rule 1). The function's
    docstring is its source, for debugging and `tests/policy/test_codegen.py`.
    """
    namespace = dict(constants)
    exec(compile(source, f"<policy:{label}>", "exec"), namespace)
    fn = namespace[name]
    fn.__doc__ = source
    return fn


def generate_predicate(b: CodeBuilder, expression: str, name: str) -> Predicate:
    """Compile an expression over `(ctx, st)` into a function."""
    # SECURITY: `expression` is built only from identifiers and operators chosen above;
    # every literal from a policy is a bound constant (Rule 1).
    source = f"def {name}(ctx, st):\n    return {expression}\n"
    fn: Predicate = define(source, name, b.constants, name)
    return fn


def _keyed_lines(b: CodeBuilder, field: str, ftype: str, t: str, p: str) -> list[str]:
    """The lookup lines that add the rules keyed by the value (or each element) of `v`:
    `t` names the key -> mask table, `p` the field path."""
    if ftype.startswith("list:"):
        lines = []
        if field in _PREFETCHED_LISTS:  # already validated by `load_sections`
            lines.append("        for k in v:")
        else:
            lines.append("        if v.__class__ is not list: BAD(" + p + ", 'a list')")
            lines.append("        for k in v:")
            lines.append("            if k.__class__ is not str: BAD(" + p + ", 'strings')")
        lines.append(f"            found |= {t}.get(k, 0)")
        if ftype == "list:region":
            lines.append("            if '-' in k:")
            lines.append(f"                found |= {t}.get(k.partition('-')[0], 0)")
        return lines
    py = _PY_TYPES.get(_base(ftype), "str")
    expected = b.const({"str": "a string", "int": "an integer", "bool": "a boolean"}[py])
    lines = [
        f"        if v.__class__ is not {py}: BAD({p}, {expected})",
        f"        found |= {t}.get(v, 0)",
    ]
    if ftype == "region":
        lines.append("        if '-' in v:")
        lines.append(f"            found |= {t}.get(v.partition('-')[0], 0)")
    return lines


def generate_candidates(
    vocabulary: Vocabulary,
    tables: Sequence[tuple[str, str, Mapping[Any, tuple[int, ...]]]],
    always: Sequence[int],
) -> Callable[[Mapping[str, Any], EvalState], int]:
    """Generate the index lookup: a bit mask (bit `p` for position `p`) of the rules the
    index cannot rule out.

    A mask costs one `|` per hit and no allocation; the evaluator maps each distinct mask
    to its precomputed plan once (`positions_of` lists the positions).
    """
    b = CodeBuilder(vocabulary)

    def mask(positions: Sequence[int]) -> str:
        return b.const(sum(1 << p for p in set(positions)))

    lines = ["def candidates(ctx, st):", f"    found = {mask(always)}"]
    for field, ftype, table in tables:
        t = b.const({k: sum(1 << p for p in set(v)) for k, v in table.items()})
        p = b.const(field)
        lines.append(f"    v = {_PREFETCHED_LISTS.get(field) or b.read(field)}")
        if ABSENT in table:
            lines.append("    if v is None:")
            lines.append(f"        found |= {mask(table[ABSENT])}")
        if ftype == "object":
            if PRESENT in table:
                lines.append("    if v is not None:")
                lines.append(f"        found |= {mask(table[PRESENT])}")
            continue
        lines.append("    if v is not None:")
        if PRESENT in table:
            if _base(ftype) == "time":
                lines.append(f"        TIME(v, {p})")
            else:
                py = _PY_TYPES.get(_base(ftype), "str")
                lines.append(f"        if v.__class__ is not {py}: BAD({p}, {b.const(py)})")
            lines.append(f"        found |= {mask(table[PRESENT])}")
        if not [k for k in table if k is not PRESENT and k is not ABSENT]:
            lines.append("        pass")
            continue
        lines.extend(_keyed_lines(b, field, ftype, t, p))
    lines.append("    return found")
    source = "\n".join(lines) + "\n"
    # SECURITY: see Rule 1; table keys and field names are bound constants.
    fn: Callable[[Mapping[str, Any], EvalState], int] = define(
        source, "candidates", b.constants, "candidates"
    )
    return fn


def positions_of(mask: int) -> list[int]:
    """The positions (set bits) of a candidate mask, in evaluation order."""
    out = []
    position = 0
    while mask:
        if mask & 1:
            out.append(position)
        mask >>= 1
        position += 1
    return out


#: Value classes a memo key may hold: hashable, and rendered the same whenever equal
#: (the class is part of the key, so `1` and `True` stay apart).
KEYABLE = frozenset({str, int, bool, float, type(None), tuple})


def _no_reads(ctx: Mapping[str, Any], st: EvalState) -> tuple[Any, ...]:
    return ()


def generate_key_reader(
    vocabulary: Vocabulary, paths: Sequence[str]
) -> Callable[[Mapping[str, Any], EvalState], tuple[Any, ...] | None]:
    """Generate a reader of the values some templates render, as a memo key part.

    It returns `(class, value, ...)` for `paths` in order, read with the same expressions
    as the generated template renderers, or None when a value is unreadable, of a class
    outside `KEYABLE` or unhashable (the caller then renders without memoising).
    """
    if not paths:
        return _no_reads
    b = CodeBuilder(vocabulary)
    keyable = b.const(KEYABLE)
    lines = ["def key(ctx, st):", "    try:"]
    names = [f"v{i}" for i in range(len(paths))]
    for name, path in zip(names, paths, strict=True):
        lines.append(f"        {name} = {b.read(path)}")
    lines.append("    except Exception:")
    lines.append("        return None")
    for name in names:
        lines.append(f"    if {name}.__class__ not in {keyable}:")
        lines.append("        return None")
    parts = ", ".join(f"{n}.__class__, {n}" for n in names)
    lines.append(f"    out = ({parts},)")
    nested = " or ".join(f"{n}.__class__ is tuple" for n in names)
    lines.append(f"    if {nested}:")
    lines.append("        try:")
    lines.append("            hash(out)")
    lines.append("        except Exception:")
    lines.append("            return None")
    lines.append("    return out")
    source = "\n".join(lines) + "\n"
    # SECURITY: field names are bound constants (Rule 1).
    fn: Callable[[Mapping[str, Any], EvalState], tuple[Any, ...] | None] = define(
        source, "key", b.constants, "key"
    )
    return fn
