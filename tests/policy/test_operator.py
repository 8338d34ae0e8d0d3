"""The operator's declarations in the settings: its establishment, the sanctions programmes
it applies (the sanctions packs apply exactly those), and the EU Blocking Statute warning for
an EU-established operator applying the US Cuba or Iran programme without a recorded US
nexus or authorisation."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from gateway.policy import PolicySet, load_policy_set
from tests.policy.conftest import POLICIES, context


def _policies(tmp_path: Path, **operator: object) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(POLICIES, root)
    settings = yaml.safe_load((root / "settings.yaml").read_text(encoding="utf-8"))
    settings["operator"] = operator
    (root / "settings.yaml").write_text(yaml.safe_dump(settings, allow_unicode=True))
    return root


def test_the_shipped_operator_is_in_every_context(shipped: PolicySet) -> None:
    assert shipped.operator == {"established_in": "DE", "sanctions_programs": ["EU", "US-OFAC"]}


def test_only_the_declared_programmes_apply(tmp_path: Path) -> None:
    result = load_policy_set([_policies(tmp_path, established_in="DE", sanctions_programs=["EU"])])
    policy_set = result.policy_set
    assert policy_set is not None, [d.text() for d in result.diagnostics]
    assert not any(r.spec.pack == "sanctions-us" for r in policy_set.rules)
    # Iran is a US programme only: not refused by an operator that does not apply it.
    assert policy_set.evaluate(context(caller={"region": "IR"})).effect == "allow"
    # Crimea is under the EU measures too.
    crimea = policy_set.evaluate(context(caller={"region": "UA-43"}))
    assert crimea.effect == "deny"
    assert {b.regime for b in crimea.legal_basis} == {"SANCTIONS-EU"}


def test_an_unknown_programme_is_an_error(tmp_path: Path) -> None:
    result = load_policy_set([_policies(tmp_path, sanctions_programs=["EU", "US-OFCA"])])
    assert result.policy_set is None
    assert any(
        "US-OFCA" in d.message and d.help and "US-OFAC" in d.help for d in result.diagnostics
    )


def test_eu_operator_applying_us_cuba_and_iran_programmes_is_warned(tmp_path: Path) -> None:
    result = load_policy_set(
        [_policies(tmp_path, established_in="FR", sanctions_programs=["EU", "US-OFAC"])]
    )
    assert result.policy_set is not None  # a warning, not an error
    (warning,) = [d for d in result.diagnostics if d.code == "policy_blocking_statute"]
    assert "31 CFR Part 515" in warning.message and "31 CFR Part 560" in warning.message
    assert warning.help is not None and "2271/96" in warning.help
    assert warning.location is not None and warning.location.file.endswith("settings.yaml")


def test_no_warning_with_a_recorded_us_nexus_or_outside_the_eu(tmp_path: Path) -> None:
    for operator in (
        {"established_in": "DE", "sanctions_programs": ["EU", "US-OFAC"], "us_nexus": "US parent"},
        {"established_in": "US", "sanctions_programs": ["EU", "US-OFAC"]},
        {"established_in": "DE", "sanctions_programs": ["EU"]},
    ):
        root = _policies(tmp_path / str(len(list(tmp_path.iterdir()))), **operator)
        result = load_policy_set([root])
        assert result.policy_set is not None
        assert not [d for d in result.diagnostics if d.code == "policy_blocking_statute"]


def test_a_context_may_bring_its_own_operator(shipped: PolicySet) -> None:
    # The section is there for rules to read; a context that brings one is not overridden.
    ctx = context(operator={"established_in": "US", "sanctions_programs": ["US-OFAC"]})
    assert shipped.evaluate(ctx).effect == "allow"


def test_rules_reading_the_operator_see_the_declared_section(tmp_path: Path) -> None:
    root = _policies(tmp_path, established_in="DE", sanctions_programs=["EU", "US-OFAC"])
    (root / "operator-rule.yaml").write_text(
        """
kind: pack
version: 1
id: operator-rule
regime: GDPR
rules:
  - id: eu-processor-notice
    stage: output
    effect: obligate
    when: {operator.established_in: {in: [EU]}}
    basis: [{ref: "Art. 3(1)"}]
    obligations: {headers: {X-Processor-Established: "${operator.established_in}"}}
""",
        encoding="utf-8",
    )
    policy_set = load_policy_set([root]).policy_set
    assert policy_set is not None
    decision = policy_set.evaluate(context())
    assert ("X-Processor-Established", "DE") in decision.obligations.headers
