"""The twelve legal scenarios at the engine level (shipped packs + scenario_contexts.yaml).

`scenario_contexts.yaml` holds the context the gateway builds for each scenario of
../shared/scenarios/legal-scenarios.yaml; here the shipped packs must decide it as the
scenario expects. A scenario's "transform" is an allow whose obligations change the exchange
(masking, headers, marks) or route it away from the backend the tenant would otherwise use.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gateway.policy import Decision, PolicySet
from gateway.policy.cases import Case, check_case, load_case_file
from tests.policy.conftest import HERE, ROOT

SCENARIO_CONTEXTS = HERE / "scenario_contexts.yaml"
SHARED = ROOT.parent / "shared" / "scenarios" / "legal-scenarios.yaml"
CASES = load_case_file(SCENARIO_CONTEXTS)


def test_scenario_file_is_valid_and_complete() -> None:
    assert CASES.ok, [d.text() for d in CASES.diagnostics]
    assert [c.id for c in CASES.cases] == [
        "S01",
        "S02",
        "S04",
        "S05",
        "S08",
        "S13",
        "S14",
        "S15",
        "S18",
        "S19",
        "S21",
        "S23",
    ]


@pytest.mark.parametrize("case", CASES.cases, ids=[c.id or c.name for c in CASES.cases])
def test_scenario(shipped: PolicySet, case: Case) -> None:
    result = check_case(shipped, case)
    explanation = result.decision.explanation.text("full") if result.decision.explanation else ""
    assert result.passed, "\n".join([*result.failures, explanation])
    decision = result.decision
    label = case.meta["decision"]
    assert decision.status == case.meta["status"]
    if label == "deny":
        assert decision.effect == "deny" and decision.problem is not None
    elif label == "allow":
        assert decision.effect == "allow" and not _transforms(decision, case.context)
    else:
        assert decision.effect == "allow" and _transforms(decision, case.context)
    if decision.effect == "allow" and decision.obligations.routing is not None:
        assert case.meta["backend"] in decision.obligations.routing.backends


def _transforms(decision: Decision, context: dict[str, Any]) -> bool:
    routing = decision.obligations.routing
    default = context["caller"].get("default_backend")
    rerouted = routing is not None and default is not None and default not in routing.backends
    return decision.obligations.changes_exchange() or rerouted


def test_the_child_of_s04_passes_in_france(shipped: PolicySet) -> None:
    (s04,) = [c for c in CASES.cases if c.id == "S04"]
    context = {**s04.context, "subject": {**s04.context["subject"], "region": "FR"}}
    assert shipped.evaluate(context).effect == "allow"


@pytest.mark.skipif(not SHARED.exists(), reason="shared scenario file not present")
def test_contexts_match_the_scenario_fixtures() -> None:
    spec = yaml.safe_load(SHARED.read_text(encoding="utf-8"))
    fixtures = spec["fixtures"]
    tenants = {t["id"]: t for t in fixtures["tenants"]}
    licences = {(lic["licensee"], lic["model"]): lic for lic in fixtures["licences"]}
    scenarios = {s["id"]: s for s in spec["scenarios"]}
    assert set(scenarios) == {c.id for c in CASES.cases}
    for case in CASES.cases:
        scenario = scenarios[case.id]
        caller, request = case.context["caller"], case.context["request"]
        tenant = tenants[caller["tenant"]]
        assert scenario["request"]["headers"]["X-Api-Key"] == tenant["api_key"], case.id
        assert caller["established_in"] == tenant["established_in"]
        assert caller["registered_purposes"] == tenant["registered_purposes"]
        for flag, value in caller["flags"].items():
            assert tenant.get(flag, False) == value, (case.id, flag)
        assert request["purpose"] == scenario["request"]["headers"].get("X-Purpose")
        assert scenario["request"]["path"] == f"/v1/models/{request['model']}:predict"
        record = licences[(caller["tenant"], request["model"])]
        assert case.context["licence"]["id"] == record["id"]
        assert case.context["licence"]["valid_until"] == record["valid_until"]
        expected = scenario["expect"]
        assert case.meta["decision"] == expected["decision"], case.id
        assert case.meta["status"] == expected["status"], case.id
        assert case.meta["backend"] == expected["backend"], case.id
        want = {(b["regime"], b["ref"]) for b in case.want.get("legal_basis", [])}
        assert want == {(b["regime"], b["ref"]) for b in expected["legal_basis"]}, case.id
