"""The evaluator's memo caches (denial texts, allow results) never change a decision."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from gateway.policy import PolicySet
from gateway.policy.codegen import generate_key_reader
from gateway.policy.state import EvalState
from gateway.policy.times import parse_interval
from tests.policy.conftest import context
from tests.policy.strategies import contexts


def _state(shipped: PolicySet, ctx: dict[str, Any]) -> EvalState:
    now = parse_interval(ctx["now"])
    assert now is not None
    return EvalState.read(now, shipped.vocabulary, ctx)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctx=contexts())
def test_warm_and_cold_caches_decide_alike(shipped: PolicySet, ctx: dict[str, Any]) -> None:
    # The shared set's caches hold results of earlier examples: a key that left out a
    # value the texts or obligations read would hand this context another one's result.
    warm = shipped.evaluate(ctx)
    shipped._cache.clear()
    cold = shipped.evaluate(ctx)
    assert warm == cold
    assert warm.to_json() == cold.to_json()


def test_key_reader_reads_values_with_their_classes(shipped: PolicySet) -> None:
    ctx = context(caller={"tenant": "t1", "region": "DE"}, licence={"id": 1})
    read = generate_key_reader(shipped.vocabulary, ["caller.tenant", "licence.id"])
    assert read(ctx, _state(shipped, ctx)) == (str, "t1", int, 1)
    as_bool = context(caller={"tenant": "t1", "region": "DE"}, licence={"id": True})
    assert read(as_bool, _state(shipped, as_bool)) != read(ctx, _state(shipped, ctx))


def test_key_reader_declines_values_it_cannot_key(shipped: PolicySet) -> None:
    read = generate_key_reader(shipped.vocabulary, ["licence.id"])
    listed = context(licence={"id": ["a"]})
    assert read(listed, _state(shipped, listed)) is None
    nested = context(licence={"id": ([1],)})
    assert read(nested, _state(shipped, nested)) is None
    unreadable = generate_key_reader(shipped.vocabulary, ["licence.attribution.text"])
    bad_parent = context(licence={"attribution": "not an object"})
    assert unreadable(bad_parent, _state(shipped, bad_parent)) is None


def test_key_reader_without_fields_reads_nothing(shipped: PolicySet) -> None:
    ctx = context()
    assert generate_key_reader(shipped.vocabulary, [])(ctx, _state(shipped, ctx)) == ()
