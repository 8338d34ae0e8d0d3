"""Detectors for every personal-data category the vocabulary declares: network addresses
(validated with `ipaddress`), the Russian INN and EU national identifiers (validated with
python-stdnum, matched next to their keyword), and `policy check` refusing a masking rule
that names a category no detector emits."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from gateway.policy import load_policy_set
from gateway.privacy import scan
from gateway.privacy.detectors import emitted_categories

ROOT = Path(__file__).resolve().parents[2]
VOCABULARY = ROOT / "policies" / "vocabulary.yaml"


def _found(text: str) -> list[tuple[str, str]]:
    return [(f.category, text[f.start : f.end]) for f in scan({"v": text}).items]


def test_every_declared_category_is_emitted_by_a_detector() -> None:
    declared = set(yaml.safe_load(VOCABULARY.read_text(encoding="utf-8"))["personal_data"])
    assert declared <= emitted_categories()


@pytest.mark.parametrize(
    ("text", "category", "value"),
    [
        ("client 192.0.2.10 called", "ip_address", "192.0.2.10"),
        ("from 2001:db8::1 via proxy", "ip_address", "2001:db8::1"),
        ("gateway 10.0.0.1 forwarded", "ip_address", "10.0.0.1"),
        ("ИНН 500100732259 клиента", "ru_inn", "500100732259"),
        ("INN: 500100732259", "ru_inn", "500100732259"),
        ("Steuer-ID 86 095 742 719", "de_idnr", "86 095 742 719"),
        ("NIR 2 95 10 99 126 111 93", "fr_nir", "2 95 10 99 126 111 93"),
        ("DNI 54362315K", "es_dni", "54362315K"),
        ("codice fiscale RCCMNL83S18D969H", "it_codice_fiscale", "RCCMNL83S18D969H"),
        ("BSN 111222333", "nl_bsn", "111222333"),
        ("PESEL 44051401359", "pl_pesel", "44051401359"),
    ],
)
def test_valid_values_are_found(text: str, category: str, value: str) -> None:
    assert (category, value) in _found(text)


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3.4.5 and 999.1.1.1",  # not an address
        "at 12:30:45 and ab:cd",  # a time, not an address
        "ИНН 500100732250",  # wrong check digits
        "order 500100732259",  # no keyword
        "Steuer-ID 86 095 742 718",
        "DNI 54362315Z",
        "codice fiscale RCCMNL83S18D969X",
        "BSN 111222334",
        "PESEL 44051401358",
        "0.0.0.0 binds everything",
    ],
)
def test_invalid_or_uncontexted_values_are_not(text: str) -> None:
    assert _found(text) == []


def test_policy_check_refuses_masking_a_category_no_detector_emits(tmp_path: Path) -> None:
    vocabulary = yaml.safe_load(VOCABULARY.read_text(encoding="utf-8"))
    vocabulary["personal_data"]["passport_number"] = "passport number (no detector)"
    (tmp_path / "vocabulary.yaml").write_text(yaml.safe_dump(vocabulary, allow_unicode=True))
    (tmp_path / "pack.yaml").write_text(
        textwrap.dedent(
            """
            kind: pack
            version: 1
            id: p
            regime: GDPR
            rules:
              - id: mask-passports
                stage: minimisation
                effect: obligate
                when: {request.personal_data: {contains: passport_number}}
                basis: [{ref: "Art. 5(1)(c)"}]
                obligations: {mask: {method: redact, categories: [passport_number]}}
            """
        )
    )
    result = load_policy_set([tmp_path])
    assert result.policy_set is None
    (diag,) = [d for d in result.diagnostics if d.severity == "error"]
    assert "no detector emits personal-data category `passport_number`" in diag.message
    assert diag.location is not None and diag.location.file.endswith("pack.yaml")


def test_a_phone_number_before_a_claimed_identifier_is_still_found() -> None:
    # The phone matcher reads the CPF as the number's extension; the CPF detector claims it
    # first, so the number alone must be checked again.
    text = "x +49 30 23125000 x 390.533.447-05 x +86 138 0013 8000 x"
    assert _found(text) == [
        ("phone", "+49 30 23125000"),
        ("br_cpf", "390.533.447-05"),
        ("phone", "+86 138 0013 8000"),
    ]
