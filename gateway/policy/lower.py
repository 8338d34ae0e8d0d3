"""The `lower` compile stage: conditions to closures (and their generated form), templates,
legal bases, problems and obligations prepared for the evaluator.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from gateway.policy.ast import AllOf, Condition, Not, ObligationsSpec, ProblemSpec, RuleSpec, Test
from gateway.policy.codegen import TypedLeaf, fast_template
from gateway.policy.compilation import Compilation
from gateway.policy.decision import LegalBasis, MaskAction, Problem, Remedy
from gateway.policy.index import guard_of
from gateway.policy.ir import (
    CNode,
    CompiledBasis,
    CompiledException,
    CompiledObligations,
    CompiledProblem,
    CompiledRule,
    IndexGuard,
)
from gateway.policy.language import CONTEXT_FIELDS, DECLARED_FACTS, STAGES
from gateway.policy.predicates import make_getter, make_predicate
from gateway.policy.state import Predicate
from gateway.policy.templates import compile_template
from gateway.policy.times import interval_of
from gateway.policy.vocabulary import Vocabulary

__all__ = [
    "lower",
    "lower_problem",
]


_DEFAULT_STATUS = {"licence": 403}


def _and(fns: Sequence[Predicate]) -> Predicate | None:
    if not fns:
        return None
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        return lambda ctx, st: a(ctx, st) and b(ctx, st)
    if len(fns) == 3:
        a, b, d = fns
        return lambda ctx, st: a(ctx, st) and b(ctx, st) and d(ctx, st)
    head = _and(fns[:3])
    tail = _and(fns[3:])
    assert head is not None and tail is not None
    return lambda ctx, st: head(ctx, st) and tail(ctx, st)


def _or(fns: Sequence[Predicate]) -> Predicate:
    if not fns:
        return lambda ctx, st: False
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        return lambda ctx, st: a(ctx, st) or b(ctx, st)
    head = _or(fns[:2])
    tail = _or(fns[2:])
    return lambda ctx, st: head(ctx, st) or tail(ctx, st)


def _lower_condition(c: Compilation, cond: Condition) -> CNode:
    vocab = c.vocabulary
    if isinstance(cond, Test):
        typed = c.typed[id(cond)]
        get = make_getter(typed.test.field, vocab)
        ref_get = make_getter(typed.ref, vocab) if typed.ref else None
        fn = make_predicate(
            typed.ftype, cond.op, get, typed.operand, cond.field, vocab, ref_get, typed.ref_type
        )
        leaf = TypedLeaf(cond.field, typed.ftype, cond.op, typed.operand, typed.ref, typed.ref_type)
        return CNode("test", typed.text, cond.location, fn, (), get, guard_of(typed, vocab), leaf)
    if isinstance(cond, Not):
        child = _lower_condition(c, cond.item)
        inner = child.fn
        return CNode("not", "not", cond.location, lambda ctx, st: not inner(ctx, st), (child,))
    children = tuple(_lower_condition(c, item) for item in cond.items)
    if isinstance(cond, AllOf):
        fn = _and([ch.fn for ch in children]) or (lambda ctx, st: True)
        return CNode("all", "all", cond.location, fn, children)
    guard = None
    if children and all(ch.guard is not None for ch in children):
        guard = IndexGuard(tuple(alt for ch in children for alt in ch.guard.alternatives))  # type: ignore[union-attr]
    return CNode(
        "any", "any", cond.location, _or([ch.fn for ch in children]), children, None, guard
    )


def _window(value: dt.date | dt.datetime | None, end: bool) -> dt.datetime | None:
    if value is None:
        return None
    iv = interval_of(value)
    return iv[1] if end else iv[0]


def lower(c: Compilation) -> None:
    """The `lower` stage: compile every rule in evaluation order."""
    vocab = c.vocabulary
    for pos, rule in enumerate(_ordered_rules(c.rules)):
        node = _lower_condition(c, rule.when) if rule.when is not None else None
        exceptions = []
        for exc in rule.exceptions:
            exc_node = _lower_condition(c, exc.when) if exc.when is not None else None
            exceptions.append(
                CompiledException(
                    interval_of(exc.until)[1],
                    exc.until.isoformat(),
                    exc.ticket,
                    exc_node.fn if exc_node else None,
                )
            )
        basis = tuple(_lower_basis(vocab, b.regime, b.ref, b.url) for b in rule.basis)
        status = rule.status or _DEFAULT_STATUS.get(rule.stage, 451)
        problem = None
        if rule.effect == "deny":
            problem = _lower_problem(c, rule.problem, status, rule)
            # List facts (consents) are never null in a gateway context: their own remedy
            # names the header, and a list would make the denial's memo key unhashable.
            asks = tuple(
                (a.fact, DECLARED_FACTS[a.fact], make_getter(a.fact, vocab))
                for a in rule.when_absent
                if a.mode == "ask" and not CONTEXT_FIELDS[a.fact].type.startswith("list:")
            )
            if asks:
                problem = dataclasses.replace(
                    problem, asks=asks, static=None, about=rule.description
                )
        c.compiled.append(
            CompiledRule(
                spec=rule,
                pos=pos,
                stage_index=STAGES.index(rule.stage),
                node=node,
                rest=None,
                guard=None,
                start=_window(rule.effective_from, False),
                end=_window(rule.effective_until, True),
                exceptions=tuple(exceptions),
                basis=basis,
                status=status,
                problem=problem,
                obligations=_lower_obligations(c, rule.obligations),
                id=rule.id,
                timed=rule.effective_from is not None or rule.effective_until is not None,
                enforced=rule.mode == "enforce",
                denies=rule.effect == "deny",
                allows=rule.effect == "allow",
            )
        )


def _lower_basis(vocab: Vocabulary, regime: str, ref: str, url: str | None) -> CompiledBasis:
    template = fast_template(compile_template(ref, vocab), vocab)
    url = url or (vocab.regimes[regime].url if regime in vocab.regimes else None)
    static = LegalBasis(regime, ref, url) if not template.fields else None
    return CompiledBasis(regime, template, url, static)


def _ordered_rules(rules: Sequence[RuleSpec]) -> list[RuleSpec]:
    """Stage-major order; within a stage, the order of files then of rules in a file."""
    return sorted(rules, key=lambda r: (STAGES.index(r.stage), r.location.file, r.index))


def lower_problem(
    vocab: Vocabulary,
    spec: ProblemSpec | None,
    status: int,
    description: str | None,
    applies_to: str | None,
    regime: str | None,
) -> CompiledProblem:
    """Prepare a problem (from a deny rule or the settings default)."""
    ptype = (spec.type if spec and spec.type else None) or ("licence" if status == 403 else "legal")
    default_title = (
        "Forbidden by the model licence" if ptype == "licence" else "Unavailable For Legal Reasons"
    )
    title = (spec.title if spec and spec.title else None) or default_title
    detail = (spec.detail if spec and spec.detail else None) or description or title
    remedy = spec.remedy if spec else None
    info = vocab.regimes.get(regime) if regime else None
    compiled = CompiledProblem(
        type=ptype,
        title=title,
        detail=fast_template(compile_template(detail, vocab), vocab),
        remedy_text=fast_template(compile_template(remedy.text, vocab), vocab) if remedy else None,
        remedy_header=remedy.header if remedy else None,
        remedy_value=remedy.value if remedy else None,
        demanding_party=info.demanding_party if info else None,
        applies_to=applies_to or description,
        jurisdiction=info.jurisdiction if info else None,
    )
    if not compiled.detail.fields and not (
        compiled.remedy_text is not None and compiled.remedy_text.fields
    ):
        remedy_text = compiled.remedy_text
        static_remedy = (
            Remedy(remedy_text.source, compiled.remedy_header, compiled.remedy_value)
            if remedy_text is not None
            else None
        )
        static = Problem(
            compiled.type,
            compiled.title,
            compiled.detail.source,
            static_remedy,
            compiled.demanding_party,
            compiled.applies_to,
            compiled.jurisdiction,
        )
        compiled = dataclasses.replace(compiled, static=static)
    return compiled


def _lower_problem(
    c: Compilation, spec: ProblemSpec | None, status: int, rule: RuleSpec
) -> CompiledProblem:
    regime = rule.basis[0].regime if rule.basis else None
    return lower_problem(c.vocabulary, spec, status, rule.description, rule.applies_to, regime)


def _lower_obligations(c: Compilation, ob: ObligationsSpec) -> CompiledObligations:
    vocab = c.vocabulary
    masks = tuple((m.categories, m.paths, MaskAction(m.method, m.keep)) for m in ob.mask)
    route = None
    if ob.route is not None:
        route = (vocab.expand(ob.route.regions), frozenset(ob.route.mechanisms))
    headers = tuple(
        (h.name, fast_template(compile_template(h.value, vocab), vocab)) for h in ob.headers
    )
    marks = tuple(
        (
            m.scheme,
            m.value,
            tuple((k, fast_template(compile_template(v, vocab), vocab)) for k, v in m.fields),
        )
        for m in ob.image_marks
    )
    sinks = None
    if ob.suppress_sinks is not None:
        sinks = (frozenset(ob.suppress_sinks.categories), ob.suppress_sinks.sale_or_share)
    retention = ob.audit.retention_days if ob.audit else None
    storage = None
    if ob.audit is not None and ob.audit.storage_region is not None:
        storage = vocab.expand([ob.audit.storage_region])
    lowered = CompiledObligations(masks, route, headers, marks, sinks, retention, storage)
    empty = not (masks or route or headers or marks or sinks or retention or storage)
    return dataclasses.replace(lowered, empty=empty)
