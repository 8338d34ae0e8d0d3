"""The evaluator's shortcuts (candidate masks, memoised texts, inlined time tests) decide
exactly as the reference forms do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from gateway.policy import PolicySet
from gateway.policy.codegen import positions_of
from gateway.policy.state import EvalError, EvalState
from gateway.policy.times import parse_interval
from tests.policy.conftest import context
from tests.policy.strategies import contexts

Build = Callable[..., PolicySet]


def test_positions_of_lists_the_set_bits_in_order() -> None:
    assert positions_of(0) == []
    assert positions_of(0b1011) == [0, 1, 3]
    assert positions_of(1 << 70 | 1 << 2) == [2, 70]


def _without_explanation(decision: Any) -> dict[str, Any]:
    return decision._replace(explanation=None).to_json()  # type: ignore[no-any-return]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctx=contexts())
def test_fast_and_explained_evaluations_agree(shipped: PolicySet, ctx: dict[str, Any]) -> None:
    # `explain=True` records every outcome; the plain path skips that bookkeeping and
    # memoises texts. Evaluating twice also exercises the memo on a warm cache.
    plain = shipped.evaluate(ctx)
    again = shipped.evaluate(ctx)
    explained = shipped.evaluate(ctx, explain=True)
    assert plain == again
    assert plain.to_json() == _without_explanation(explained)


def test_memoised_texts_follow_the_values_they_render(shipped: PolicySet) -> None:
    base = context(licence={"id": "L1", "model": "other-model", "commercial_use": "allowed"})
    first = shipped.evaluate(base)
    second = shipped.evaluate(context(licence={**base["licence"], "id": "L2"}))
    assert first.effect == second.effect == "deny"
    assert [b.ref for b in first.legal_basis] != [b.ref for b in second.legal_basis]
    assert all(b.ref.startswith("L1") for b in first.legal_basis if ":" in b.ref)
    assert all(b.ref.startswith("L2") for b in second.legal_basis if ":" in b.ref)
    # 1 and True render differently: the memo key keeps their types apart.
    as_int = shipped.evaluate(context(licence={**base["licence"], "id": 1}))
    as_bool = shipped.evaluate(context(licence={**base["licence"], "id": True}))
    assert as_int.to_json() != as_bool.to_json()


TIME_REF = """
kind: pack
id: times
stage: licence
regime: GDPR
rules:
  - id: t-{op}
    effect: allow
    when: {{licence.valid_from: {{{op}: {{field: licence.valid_until}}}}}}
"""


@pytest.mark.parametrize("op", ["lt", "le", "gt", "ge", "eq", "ne"])
def test_generated_time_field_comparisons_match_the_reference(
    compile_packs: Build, op: str
) -> None:
    ps = compile_packs(a=TIME_REF.format(op=op))
    (rule,) = ps.rules
    assert rule.node is not None
    generated = rule.rest if rule.rest is not None else rule.node.fn
    values = [None, "2026-11-27", "2026-11-28", "2026-11-27T23:59:59Z", "not a time", 7]
    for start in values:
        for end in values:
            ctx = context(licence={"id": "L1", "valid_from": start, "valid_until": end})
            st = EvalState(parse_interval(ctx["now"]), ps.vocabulary)  # type: ignore[arg-type]
            st.load_sections(ctx)
            outcomes = []
            for fn in (rule.node.fn, generated):
                try:
                    outcomes.append(bool(fn(ctx, st)))
                except EvalError as exc:
                    outcomes.append(exc.code)  # type: ignore[arg-type]
            assert outcomes[0] == outcomes[1], (op, start, end)


def test_a_chunk_whose_later_check_raises_is_rerun_without_duplicates(
    compile_packs: Build,
) -> None:
    # Both rules land in one generated chunk: the first matches, the second raises, so
    # the runner's partial result is rolled back and the general loop records the error.
    body = """
  - id: not-acme
    effect: deny
    when: {caller.tenant: {ne: acme}}
    basis: [{ref: "Art. 6"}]
  - id: kids
    effect: deny
    when: {subject.age: {lt: 16}}
    basis: [{ref: "Art. 8(1)"}]
"""
    grant = "kind: pack\nid: grant\nstage: licence\nrules:\n  - id: grant\n    effect: allow\n"
    packs = f"kind: pack\nid: kids\nstage: lawful_basis\nregime: GDPR\nrules:\n{body}"
    ps = compile_packs(g=grant, a=packs)
    ctx = context(caller={"tenant": "other"}, subject={"age": "15"})
    plain = ps.evaluate(ctx)
    assert plain.rules == ("not-acme", "kids")
    assert [e.rule for e in plain.errors] == ["kids"]
    assert plain.to_json() == _without_explanation(ps.evaluate(ctx, explain=True))
    assert ps.evaluate(ctx) == plain
