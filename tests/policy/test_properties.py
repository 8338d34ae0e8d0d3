"""Property tests: no input crashes the loader or the evaluator; every input yields a
decision or located diagnostics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import PolicySet, load_policy_set
from gateway.policy.parse import parse_document
from gateway.source import load_yaml
from tests.policy.conftest import VOCABULARY
from tests.policy.strategies import contexts, junk

FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 500),
    st.text(max_size=8),
    st.sampled_from(
        [
            "NO",
            "1.10",
            "2025-02-02",
            "EU",
            "IR",
            "deny",
            "allow",
            "lawful_basis",
            "caller.region",
            "in",
            "${x}",
        ]
    ),
)
yaml_data = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.text(max_size=6)
            | st.sampled_from(
                [
                    "kind",
                    "id",
                    "rules",
                    "effect",
                    "when",
                    "stage",
                    "basis",
                    "obligations",
                    "all",
                    "any",
                    "not",
                    "caller.region",
                ]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


@FAST
@given(text=st.text(max_size=200))
def test_loader_never_raises_on_text(text: str) -> None:
    doc = load_yaml(text, "fuzz.yaml")
    assert doc.ok or doc.diagnostics
    for d in doc.diagnostics:
        assert d.location is not None and d.location.file == "fuzz.yaml"
        assert "\n" not in d.message


@FAST
@given(data=yaml_data)
def test_parser_never_raises_and_locates_its_diagnostics(data: Any) -> None:
    doc = load_yaml(yaml.safe_dump({"kind": "pack", "id": "p", "rules": [data]}), "p.yaml")
    parsed = parse_document(doc)
    for d in parsed.diagnostics:
        assert d.location is not None and d.location.line >= 1


@FAST
@given(
    rule=st.fixed_dictionaries(
        {
            "id": st.sampled_from(["r1", "R 2"]),
            "effect": st.sampled_from(["deny", "allow", "obligate", "x"]),
        },
        optional={
            "stage": st.sampled_from(["sanctions", "licence", "output", "audit", "nope"]),
            "when": yaml_data,
            "basis": yaml_data,
            "obligations": yaml_data,
            "status": st.sampled_from([451, 403, 200]),
            "mode": yaml_scalars,
            "effective_from": yaml_scalars,
            "exceptions": yaml_data,
        },
    )
)
def test_any_pack_compiles_or_gives_located_diagnostics(
    tmp_path_factory: Any, rule: dict[str, Any]
) -> None:
    root: Path = tmp_path_factory.mktemp("fuzz")
    (root / "vocabulary.yaml").write_bytes(VOCABULARY.read_bytes())
    (root / "pack.yaml").write_text(
        yaml.safe_dump(
            {"kind": "pack", "id": "p", "stage": "lawful_basis", "regime": "GDPR", "rules": [rule]}
        ),
        encoding="utf-8",
    )
    result = load_policy_set([root])
    if result.policy_set is None:
        assert result.diagnostics
        assert all(
            d.location is not None and d.location.file.endswith(".yaml") for d in result.diagnostics
        )
    else:
        assert result.policy_set.evaluate({"now": "2026-11-28T10:00:00Z"}).effect in (
            "allow",
            "deny",
        )


@FAST
@given(ctx=contexts())
def test_every_context_gets_a_consistent_decision(shipped: PolicySet, ctx: dict[str, Any]) -> None:
    d = shipped.evaluate(ctx)
    assert d.effect in ("allow", "deny")
    assert (d.status == 200) == (d.effect == "allow")
    assert (d.problem is not None) == (d.effect == "deny")
    if d.errors:
        assert d.effect == "deny"
    assert d.policy_revision == shipped.revision
    d.to_json()


@FAST
@given(
    ctx=st.one_of(
        junk,
        st.dictionaries(
            st.sampled_from(
                ["now", "caller", "subject", "request", "licence", "model", "backends", "sinks"]
            ),
            junk,
        ),
    )
)
def test_hostile_contexts_are_denied_not_raised(shipped: PolicySet, ctx: Any) -> None:
    d = shipped.evaluate(ctx, explain=True)
    assert d.effect == "deny" and d.errors


@FAST
@given(ctx=contexts())
def test_explanations_never_fail_and_agree_with_the_decision(
    shipped: PolicySet, ctx: dict[str, Any]
) -> None:
    plain = shipped.evaluate(ctx)
    explained = shipped.evaluate(ctx, explain=True)
    assert explained._replace(explanation=None) == plain
    if plain.errors and plain.stage is None:
        return
    assert explained.explanation is not None
    matched = {r.rule for r in explained.explanation.rules if r.outcome == "matched"}
    assert set(plain.rules) <= matched | {e.rule for e in plain.errors}
