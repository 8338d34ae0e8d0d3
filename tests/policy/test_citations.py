"""Every `ref` in the shipped packs follows the citation convention (legal-rules.md §8,
docs/policy-language.md "Citations"): one form per regime, so compared strings are exact and a
lawyer finds the words from the ref alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.policy import PolicySet
from gateway.policy.cases import load_case_file
from gateway.policy.loader import discover_files
from tests.policy.conftest import POLICIES

_ARTICLE = r"Art\. \d+[a-z]?(\(\d+[a-z]?\))*(\([a-z]+\))?(-\d+)?"
_BRAZIL = r"Art\. \d+(, [IVXLC]+)?(, §\d+)?"
_CALIFORNIA = r"Civ\. Code §1798\.\d+(\([a-z0-9]+\))*|11 CCR §\d+"
_US_FEDERAL = r"(EO \d+; )?31 CFR (Part \d+|§\d+\.\d+)|EO \d+"
_INDIA = (
    r"[sr]\.\d+[A-Z]?(\([0-9a-z]+\))*"
    r"|[A-Z][A-Za-z-]*( [A-Z][A-Za-z-]*)* \d{4} s\.\d+[A-Z]?(\([0-9a-z]+\))*"
)
_EU_REGULATION = r"Reg\. \(EU\) (\d{4}/\d+|No \d+/\d{4})( Art\. \d+[a-z]*(\(\d+\))*)?"
_LICENCE = r"(\$\{licence\.id\}|[A-Z0-9][A-Z0-9-]*|no licence): \S.*"

#: Regime -> the ref form of its instrument.
FORMS: dict[str, str] = {
    "GDPR": _ARTICLE,
    "EU-AI-ACT": _ARTICLE,
    "CN-PIPL": _ARTICLE,
    "CN-GENAI-2023": _ARTICLE,
    "CN-LABEL-2025": _ARTICLE,
    "CN-CSL": _ARTICLE,
    "RU-152FZ": _ARTICLE,
    "BR-LGPD": _BRAZIL,
    "BR-MARCO-CIVIL": _BRAZIL,
    "US-CA-CCPA": _CALIFORNIA,
    "SANCTIONS-US": _US_FEDERAL,
    "SANCTIONS-EU": _EU_REGULATION,
    "IN-DPDP": _INDIA,
    "IN-AADHAAR": _INDIA,
    "IN-CERTIN": _INDIA,
    "LICENCE": _LICENCE,
}


def _refs(policy_set: PolicySet) -> list[tuple[str, str, str]]:
    return [(r.id, b.regime, b.ref) for r in policy_set.rules for b in r.spec.basis]


def test_every_regime_has_a_form(shipped: PolicySet) -> None:
    assert set(shipped.vocabulary.regimes) <= set(FORMS)


def test_every_ref_in_the_packs_follows_its_regimes_form(shipped: PolicySet) -> None:
    wrong = [
        (rule, regime, ref)
        for rule, regime, ref in _refs(shipped)
        if not re.fullmatch(FORMS[regime], ref)
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("regime", "ref"),
    [
        ("US-CA-CCPA", "§1798.120"),
        ("LICENCE", "non-commercial use only"),
        ("SANCTIONS-EU", "Reg. (EU) 833/2014 Art. 5n"),
        ("IN-CERTIN", "Directions of 28 April 2022, para (iv)"),
        ("CN-LABEL-2025", "GB 45438-2025"),
        ("BR-LGPD", "Resolução CD/ANPD nº 19/2024"),
    ],
)
def test_the_forms_refuse_the_old_refs(regime: str, ref: str) -> None:
    assert not re.fullmatch(FORMS[regime], ref)


def test_territorial_triggers_are_cited(shipped: PolicySet) -> None:
    """A rule of a regime with a territorial scope article cites the provision that brings it
    into play, one per rule (two triggers with different provisions are two rules)."""
    triggers = {
        "gdpr": {"Art. 3(1)", "Art. 3(2)"},
        "eu-ai-act": {"Art. 2(1)(b)", "Art. 2(1)(c)"},
        "cn-pipl": {"Art. 3(1)", "Art. 3(2)"},
        "br-lgpd": {"Art. 3, I", "Art. 3, II"},
        "in-dpdp": {"s.3(a)", "s.3(b)"},
    }
    for rule in shipped.rules:
        for pack, wanted in triggers.items():
            if rule.spec.pack != pack:
                continue
            cited = {b.ref for b in rule.spec.basis} & wanted
            assert len(cited) == 1, (rule.id, cited)


CASE_FILES = [f.path for f in discover_files([POLICIES], cases=True)[0]]


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.parent.name for p in CASE_FILES])
def test_rendered_licence_refs_name_the_licence_and_the_value(
    shipped: PolicySet, path: Path
) -> None:
    for case in load_case_file(path).cases:
        decision = shipped.evaluate(case.context)
        licence = case.context.get("licence") or {}
        for basis in decision.legal_basis:
            assert re.fullmatch(FORMS[basis.regime], basis.ref), (case.label, basis)
            if basis.regime != "LICENCE" or not licence:
                continue
            assert basis.ref.startswith(f"{licence['id']}: "), (case.label, basis.ref)
            clause = basis.ref.split(": ", 1)[1]
            assert clause not in ("term", "territory", "licensed model"), basis.ref


def test_a_bare_card_number_is_not_sensitive_personal_information(shipped: PolicySet) -> None:
    from tests.policy.conftest import context

    ctx = context(
        caller={
            "established_in": "US-CA",
            "region": "US-CA",
            "flags": {"mask_pd_in_free_text": True},
        },
        request={"personal_data": ["payment_card"]},
    )
    decision = shipped.evaluate(ctx)
    refs = {(b.regime, b.ref) for b in decision.legal_basis}
    assert ("US-CA-CCPA", "Civ. Code §1798.100(c)") in refs
    assert not any("1798.121" in ref for _, ref in refs)
    assert decision.obligations.mask["payment_card"].method == "keep_last"
