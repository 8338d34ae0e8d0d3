"""The `index` compile stage: per rule, one top-level equality or membership test becomes an
index guard, and one generated lookup per group of stages gives the candidate rules as a
bit mask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from gateway.policy.codegen import (
    CodeBuilder,
    generate_candidates,
    generate_predicate,
    leaf_source,
    positions_of,
)
from gateway.policy.compilation import Compilation, TypedTest
from gateway.policy.ir import CNode, CompiledRule, IndexGuard
from gateway.policy.language import STAGES
from gateway.policy.predicates import make_getter, make_key_function
from gateway.policy.state import ABSENT, PRESENT, Predicate
from gateway.policy.vocabulary import Vocabulary

__all__ = [
    "LOOKUP_GROUPS",
    "guard_of",
    "index",
    "node_source",
]


#: Stages whose index lookups are generated together, evaluated in this order. The audit
#: stage rides with the first group because it runs on every decision.
LOOKUP_GROUPS: tuple[tuple[str, ...], ...] = (
    ("sanctions", "audit"),
    ("licence",),
    ("lawful_basis", "residency", "minimisation", "output"),
)
_INDEXABLE_OPS = frozenset({"eq", "in", "contains", "contains_any"})


def guard_of(typed: TypedTest, vocab: Vocabulary | None = None) -> IndexGuard | None:
    """The index guard a typed test offers: the keys a context must hold for it to match
    (None when the test cannot be indexed)."""
    op = typed.test.op
    if op == "exists" and not typed.ftype.startswith("list:"):
        marker = PRESENT if typed.operand else ABSENT
        return IndexGuard(((typed.test.field, typed.ftype, frozenset([marker])),))
    if typed.ref is not None or op not in _INDEXABLE_OPS or typed.ftype in ("time", "object"):
        return None
    name, ftype = typed.test.field, typed.ftype
    if (
        op == "eq"
        and name.startswith("purpose.")
        and type(typed.operand) is bool
        and vocab is not None
    ):
        # `purpose.X: true` holds exactly for the declared purposes whose attribute X is
        # true, so it shares the `request.purpose` table instead of adding one per attribute.
        attribute = name[len("purpose.") :]
        want = typed.operand
        if attribute == "known":
            chosen = frozenset(vocab.purposes) if want else frozenset()
        else:
            chosen = frozenset(
                p for p, attrs in vocab.purposes.items() if attrs.get(attribute, False) is want
            )
        if not chosen:
            return None
        return IndexGuard((("request.purpose", "purpose", chosen),))
    if op == "eq":
        if typed.operand is None:
            return None
        return IndexGuard(((name, ftype, frozenset([typed.operand])),))
    if ftype == "list:region":
        keys: frozenset[Any] = frozenset().union(*typed.operand)
        return IndexGuard(((name, ftype, keys),))
    return IndexGuard(((name, ftype, frozenset(typed.operand)),))


def node_source(b: CodeBuilder, node: CNode) -> str:
    """Python expression for a compiled condition (see `codegen`)."""
    if node.kind == "test":
        assert node.leaf is not None
        return leaf_source(b, node.leaf, node.fn)
    if node.kind == "not":
        return f"(not {node_source(b, node.children[0])})"
    parts = [node_source(b, child) for child in node.children]
    if node.kind == "all":
        return "(" + " and ".join(parts) + ")" if parts else "True"
    return "(" + " or ".join(parts) + ")" if parts else "False"


def _choose_guard(
    vocab: Vocabulary, node: CNode | None, name: str
) -> tuple[IndexGuard | None, Predicate | None]:
    if node is None:
        return None, None
    conjuncts = list(node.children) if node.kind == "all" else [node]
    best: int | None = None
    for i, part in enumerate(conjuncts):
        if part.guard is None:
            continue
        if best is None or part.guard.size < conjuncts[best].guard.size:  # type: ignore[union-attr]
            best = i
    rest = [p for i, p in enumerate(conjuncts) if i != best]
    if not rest:
        return (conjuncts[best].guard if best is not None else None), None
    b = CodeBuilder(vocab)
    fn = generate_predicate(b, " and ".join(node_source(b, p) for p in rest), name)
    return (conjuncts[best].guard if best is not None else None), fn


def index(c: Compilation) -> None:
    """The `index` stage: choose each rule's guard and generate the candidate lookups."""
    vocab = c.vocabulary
    tables: dict[str, dict[Any, list[int]]] = {}
    types: dict[str, str] = {}
    always: list[int] = []
    final: list[CompiledRule] = []
    for rule in c.compiled:
        guard, rest = _choose_guard(vocab, rule.node, f"rule_{rule.pos}")
        rebuilt = dataclasses.replace(rule, rest=rest, guard=guard)
        final.append(rebuilt)
        if guard is None:
            always.append(rule.pos)
            continue
        for name, ftype, keys in guard.alternatives:
            types[name] = ftype
            table = tables.setdefault(name, {})
            for key in keys:
                entries = table.setdefault(key, [])
                if rule.pos not in entries:
                    entries.append(rule.pos)
    index = tuple(
        (
            name,
            make_key_function(types[name], make_getter(name, vocab), name),
            {k: tuple(sorted(v)) for k, v in table.items()},
        )
        for name, table in sorted(tables.items())
    )
    c.result.rules = tuple(final)
    c.result.index = index
    c.result.always = tuple(always)
    # One generated lookup per group of stages (`LOOKUP_GROUPS`): a denial in an early
    # group spares the later lookups, and few groups keep the per-call cost low.
    groups: list[Callable[..., int]] = []
    for stages in LOOKUP_GROUPS:
        members = {r.pos for r in final if STAGES[r.stage_index] in stages}
        group_tables = []
        for name, _keys, full in index:
            sub = {k: tuple(p for p in v if p in members) for k, v in full.items()}
            sub = {k: v for k, v in sub.items() if v}
            if sub:
                group_tables.append((name, types[name], sub))
        groups.append(generate_candidates(vocab, group_tables, [p for p in always if p in members]))
    c.result.masks = tuple(groups)
    c.result.lookups = tuple(_positions_lookup(g) for g in groups)


def _positions_lookup(masks: Callable[..., int]) -> Callable[..., list[int]]:
    def lookup(ctx: Mapping[str, Any], st: Any) -> list[int]:
        return positions_of(masks(ctx, st))

    return lookup
