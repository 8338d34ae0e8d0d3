"""Absent declared facts: which facts a rule reads, and the `when_absent` check.

A deny rule that reads a fact the caller declares (`DECLARED_FACTS`) must say what the
fact's absence means, so that leaving a header out is never a way around a rule; `ask`
rules are rewritten to hold when the fact is absent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.policy.ast import AllOf, AnyOf, Condition, FieldRef, Not, RuleSpec, Test
from gateway.policy.codes import ABSENCE, REF, SHAPE
from gateway.policy.compilation import Compilation
from gateway.policy.language import DECLARED_FACTS, declared_fact_of
from gateway.policy.templates import template_fields

__all__ = [
    "check_absence",
    "declared_facts_read",
    "fields_read",
]


def walk_tests(cond: Condition | None) -> Iterable[Test]:
    """Every test of a condition, depth first (none for no condition)."""
    if cond is None:
        return
    if isinstance(cond, Test):
        yield cond
    elif isinstance(cond, Not):
        yield from walk_tests(cond.item)
    else:
        for item in cond.items:
            yield from walk_tests(item)


def fields_read(rule: RuleSpec) -> frozenset[str]:
    """Every context field a rule reads: in tests, field operands and templates."""
    names: set[str] = set()
    for cond in (rule.when, *(e.when for e in rule.exceptions)):
        for test in walk_tests(cond):
            names.add(test.field)
            if isinstance(test.operand, FieldRef):
                names.add(test.operand.path)
    texts = [b.ref for b in rule.basis] + [h.value for h in rule.obligations.headers]
    if rule.problem is not None:
        texts += [rule.problem.detail or "", rule.problem.title or ""]
        texts += [rule.problem.remedy.text] if rule.problem.remedy else []
    for text in texts:
        names.update(template_fields(text))
    return frozenset(names)


def declared_facts_read(cond: Condition | None) -> frozenset[str]:
    """The declared facts a condition reads, directly or through a derived field."""
    facts = {declared_fact_of(t.field) for t in walk_tests(cond)}
    return frozenset(f for f in facts if f is not None)


def check_absence(c: Compilation) -> None:
    """Check each rule's `when_absent` and rewrite the conditions of the facts it asks for.

    A deny rule that asks for fact F holds whenever it could hold for some value of an
    absent F: a test on F (or on a field derived from F) counts as holding where it would
    make the rule match (as `F absent or test`; under `not`, as `F present and test`).
    """
    for i, rule in enumerate(c.rules):
        reads = declared_facts_read(rule.when)
        stated = {a.fact: a for a in rule.when_absent}
        can_deny = rule.effect == "deny" or rule.obligations.route is not None
        if rule.when_absent and not can_deny:
            c.error(
                SHAPE,
                "`when_absent` only applies to deny rules and routing rules",
                rule.when_absent[0].location,
                rule.when_absent[0].path,
                "remove it: only a refusal can be evaded by leaving a header out",
            )
            continue
        for absence in rule.when_absent:
            if absence.fact not in reads:
                c.error(
                    REF,
                    f"rule does not read `{absence.fact}`",
                    absence.location,
                    absence.path,
                    "remove the entry, or test the fact in `when`",
                )
        if can_deny:
            what = "deny" if rule.effect == "deny" else "routing"
            for fact in sorted(reads - stated.keys()):
                header = DECLARED_FACTS[fact]
                c.error(
                    ABSENCE,
                    f"{what} rule `{rule.id}` reads `{fact}` ({header}) but does not say what "
                    "its absence means",
                    rule.location,
                    rule.path,
                    f"add `when_absent: {{{fact}: ask}}` to refuse and ask for {header}, or "
                    f"`{{{fact}: {{not_applicable: <why>}}}}`",
                    severity="warning",
                )
        asks = {a.fact: a for a in rule.when_absent if a.mode == "ask"}
        if asks and rule.when is not None:
            c.rules[i] = dataclasses.replace(rule, when=_assume_absent(rule.when, asks, True))


def _holds_on_null(test: Test) -> bool:
    """Whether a test holds when its field is null (see the null semantics of the docs)."""
    if isinstance(test.operand, FieldRef):
        return False
    if test.op in ("not_in", "contains_none"):
        return True
    if test.op in ("ne", "eq"):
        return (test.operand is None) == (test.op == "eq")
    if test.op in ("exists", "empty"):
        return test.operand is (test.op == "empty")
    return False


def _assume_absent(cond: Condition, asks: Mapping[str, Any], positive: bool) -> Condition:
    if isinstance(cond, Test):
        fact = declared_fact_of(cond.field)
        absence = asks.get(fact) if fact is not None else None
        if absence is None or fact is None:
            return cond
        # A test on the fact itself that already says what absence needs is kept as it is
        # (fewer nodes on the hot path); derived fields may not be null when the fact is.
        if cond.field == fact and _holds_on_null(cond) == positive:
            return cond
        where = (absence.location, tuple(str(absence.path).split(".")))
        if positive:
            return AnyOf((Test(fact, "exists", False, *where), cond), cond.location)
        return AllOf((Test(fact, "exists", True, *where), cond), cond.location)
    if isinstance(cond, Not):
        return Not(_assume_absent(cond.item, asks, not positive), cond.location)
    items = tuple(_assume_absent(item, asks, positive) for item in cond.items)
    if isinstance(cond, AnyOf):
        return AnyOf(items, cond.location)
    return AllOf(items, cond.location)
