"""The generated fast path agrees with the reference closures (the explain interpreter)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from gateway.policy import PolicySet
from gateway.policy.state import EvalError, EvalState
from gateway.policy.times import parse_interval
from tests.policy.strategies import contexts


def outcome(fn: Any, ctx: dict[str, Any], state: EvalState) -> object:
    try:
        return bool(fn(ctx, state))
    except EvalError:
        return "error"


def state_for(ps: PolicySet, ctx: dict[str, Any]) -> EvalState | None:
    st = EvalState(parse_interval(ctx["now"]), ps.vocabulary)  # type: ignore[arg-type]
    try:
        st.load_sections(ctx)
    except EvalError:
        return None
    return st


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctx=contexts())
def test_generated_predicates_match_the_reference(shipped: PolicySet, ctx: dict[str, Any]) -> None:
    st = state_for(shipped, ctx)
    if st is None:
        return
    try:
        candidates = set(shipped.candidates(ctx, st))
    except EvalError:
        return
    compared = 0
    for rule in shipped.rules:
        if rule.node is None or rule.rest is None or rule.pos not in candidates:
            continue
        reference = outcome(rule.node.fn, ctx, st)
        if reference == "error":
            continue
        # A candidate's guard holds, so the rest of the condition decides alone.
        assert outcome(rule.rest, ctx, st) == reference, rule.id
        compared += 1
    assert compared > 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctx=contexts())
def test_generated_index_matches_the_reference(shipped: PolicySet, ctx: dict[str, Any]) -> None:
    st = state_for(shipped, ctx)
    if st is None:
        return
    try:
        reference = set(shipped.candidates(ctx, st))
    except EvalError:
        reference = None
    generated: set[int] | None = set()
    try:
        for lookup in shipped._lookups:  # noqa: SLF001 - the generated lookups under test
            if lookup is not None:
                assert generated is not None
                generated |= set(lookup(ctx, st))
    except EvalError:
        generated = None
    if reference is None or generated is None:
        # Type errors are found by both, though not necessarily on the same stage.
        return
    assert generated == reference
    # Every rule whose full condition holds must be a candidate (the index never hides one).
    for rule in shipped.rules:
        if rule.node is not None and outcome(rule.node.fn, ctx, st) is True:
            assert rule.pos in generated, rule.id
