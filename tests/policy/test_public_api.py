"""The public surface the gateway relies on stays put."""

from __future__ import annotations

import inspect

import gateway.policy as policy
from gateway.policy import Decision, LoadResult, PolicySet


def test_all_is_pinned() -> None:
    assert sorted(policy.__all__) == sorted(
        [
            "STAGES",
            "AuditObligation",
            "Decision",
            "DecisionError",
            "Diagnostic",
            "Explanation",
            "ImageMark",
            "LegalBasis",
            "LoadResult",
            "Location",
            "MaskAction",
            "Obligations",
            "PolicySet",
            "Problem",
            "Remedy",
            "Routing",
            "SinkSuppression",
            "Waiver",
            "context_json_schema",
            "load_policy_set",
            "policy_json_schema",
        ]
    )
    for name in policy.__all__:
        assert getattr(policy, name) is not None


def test_signatures() -> None:
    assert list(inspect.signature(policy.load_policy_set).parameters) == ["paths"]
    evaluate = inspect.signature(PolicySet.evaluate)
    assert list(evaluate.parameters) == ["self", "context", "explain"]
    assert evaluate.parameters["explain"].kind is inspect.Parameter.KEYWORD_ONLY
    assert set(LoadResult.__dataclass_fields__) == {"policy_set", "diagnostics"}
    assert Decision._fields == (
        "effect",
        "status",
        "stage",
        "rules",
        "dry_run",
        "legal_basis",
        "problem",
        "obligations",
        "errors",
        "policy_revision",
        "waivers",
        "explanation",
    )


def test_stages_in_order() -> None:
    assert policy.STAGES == (
        "sanctions",
        "licence",
        "lawful_basis",
        "residency",
        "minimisation",
        "output",
        "audit",
    )
