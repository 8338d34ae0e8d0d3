"""Personal-data detection and masking: scenario notes, validators, look-alikes, properties."""

from __future__ import annotations

import base64
import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.jsonpath import json_path
from gateway.privacy import (
    DEFAULT_DETECTORS,
    Findings,
    MaskRule,
    PhoneDetector,
    ScanBudgetExceeded,
    UnknownDetectorError,
    apply_masks,
    detectors_named,
    mask_headers,
    scan,
    scan_headers,
    scan_text,
)
from tests.documents import string_values

IMAGE_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
COMPARED = {"email", "phone", "iban", "cn_resident_id", "us_ssn", "payment_card", "in_aadhaar",
            "br_cpf"}  # fmt: skip

# The request notes of legal-scenarios.yaml with the categories each must yield (exact over the
# compared types), the region hints the gateway would pass (caller/subject/tenant regions), and
# the scenario's forwarded_* expectations after masking.
SCENARIOS: dict[str, dict[str, Any]] = {
    "S01": {
        "note": "SKU 4711 red sneaker, batch 2026-11",
        "hints": ["DE"],
        "want": set(),
    },
    "S02": {
        "note": "Rückruf an anna.schmidt@example.de oder +49 30 23125000, Erstattung auf "
        "DE89 3704 0044 0532 0130 00",
        "hints": ["DE"],
        "want": {"email", "phone", "iban"},
        "must_not_contain": ["anna.schmidt@example.de", "DE89 3704 0044 0532 0130 00"],
        "must_not_contain_digits": ["493023125000", "DE89370400440532013000"],
        "must_contain": ["Rückruf an"],
    },
    "S08": {
        "note": "客户身份证11010519491231002X手机+86 138 0013 8000",
        "hints": ["CN"],
        "want": {"cn_resident_id", "phone"},
        "must_not_contain": ["11010519491231002X"],
        "must_not_contain_digits": ["8613800138000", "11010519491231002"],
    },
    "S13": {
        "note": "CPF do cliente 390.533.447-05",
        "hints": ["BR", "CN"],
        "want": {"br_cpf"},
        "must_not_contain": ["390.533.447-05"],
        "must_not_contain_digits": ["39053344705"],
    },
    "S15": {
        "note": "Aadhaar 2341 2341 2346 verified",
        "hints": ["IN"],
        "want": {"in_aadhaar"},
        "must_contain": ["XXXX XXXX 2346"],
        "must_not_contain": ["2341 2341 2346"],
        "must_not_contain_digits": ["234123412346"],
    },
}

# The masking the shipped policies ask for: redaction, Aadhaar to the last four digits.
SCENARIO_RULES = {category: MaskRule() for category in COMPARED}
SCENARIO_RULES["in_aadhaar"] = MaskRule(method="keep_last", keep=4)


def _request(note: str) -> dict[str, Any]:
    return {"instances": [{"image_bytes": {"b64": IMAGE_B64}, "note": note}]}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []


def _alnum(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "", text)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_notes_are_detected_exactly(scenario: str) -> None:
    case = SCENARIOS[scenario]
    findings = scan(_request(case["note"]), region_hints=case["hints"])
    assert {f.category for f in findings} & COMPARED == case["want"]
    assert all(f.path == "instances[0].note" for f in findings)
    assert findings.summary() == [
        {"type": f.category, "path": "instances[0].note"} for f in findings
    ]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_masking_meets_the_forwarded_expectations(scenario: str) -> None:
    case = SCENARIOS[scenario]
    request = _request(case["note"])
    findings = scan(request, region_hints=case["hints"])
    forwarded, masked = apply_masks(request, findings, SCENARIO_RULES)
    strings = _strings(forwarded)
    for text in case.get("must_not_contain", []):
        assert not any(text in s for s in strings)
    for digits in case.get("must_not_contain_digits", []):
        assert not any(digits in _alnum(s) for s in strings)
    for text in case.get("must_contain", []):
        assert any(text in s for s in strings)
    assert forwarded["instances"][0]["image_bytes"]["b64"] == IMAGE_B64
    assert {entry["category"] for entry in masked} == case["want"]
    assert all(entry["path"] == "instances[0].note" for entry in masked)
    if not case["want"]:
        assert forwarded is request


def test_scenario_file_notes_match_this_table() -> None:
    path = Path(__file__).resolve().parents[1] / "scenarios" / "legal-scenarios.yaml"
    scenarios = yaml.safe_load(path.read_text(encoding="utf-8"))["scenarios"]
    for scenario in scenarios:
        if scenario["id"] not in SCENARIOS:
            continue
        note = scenario["request"]["body"]["instances"][0]["note"]
        assert note == SCENARIOS[scenario["id"]]["note"]
        want = {item["type"] for item in scenario["expect"]["detected_personal_data"]}
        assert want == SCENARIOS[scenario["id"]]["want"]


def test_national_mobile_number_next_to_cjk_needs_the_region_hint() -> None:
    text = "客户身份证11010519491231002X手机13800138000"
    with_hint = scan_text(text, region_hints=["CN"])
    assert [(c, text[s:e]) for c, (s, e) in with_hint] == [
        ("cn_resident_id", "11010519491231002X"),
        ("phone", "13800138000"),
    ]
    assert [c for c, _ in scan_text(text)] == ["cn_resident_id"]


# ---------------------------------------------------------------------------------------------
# Validated values per detector (text, hints, expected (category, value) pairs)

POSITIVES: list[tuple[str, list[str], list[tuple[str, str]]]] = [
    ("mail anna.schmidt@example.de now", [], [("email", "anna.schmidt@example.de")]),
    ("x+tag@sub.example.co.uk", [], [("email", "x+tag@sub.example.co.uk")]),
    ("jürgen@müller.de", [], [("email", "jürgen@müller.de")]),
    ("邮箱zhang.wei@example.cn电话", [], [("email", "zhang.wei@example.cn")]),
    ("<mailto:anna@example.org>.", [], [("email", "anna@example.org")]),
    ("+49 30 23125000", [], [("phone", "+49 30 23125000")]),
    ("call +1 212 555 0123 today", [], [("phone", "+1 212 555 0123")]),
    ("tel:+4930231250000", [], [("phone", "+4930231250000")]),
    ("030 23125000", ["DE"], [("phone", "030 23125000")]),
    ("(212) 555-0123", ["US-CA"], [("phone", "(212) 555-0123")]),
    ("手机13800138000。", ["CN"], [("phone", "13800138000")]),
    ("DE89 3704 0044 0532 0130 00", [], [("iban", "DE89 3704 0044 0532 0130 00")]),
    ("DE89370400440532013000", [], [("iban", "DE89370400440532013000")]),
    ("GB82 WEST 1234 5698 7654 32", [], [("iban", "GB82 WEST 1234 5698 7654 32")]),
    ("FR14 2004 1010 0505 0001 3M02 606", [], [("iban", "FR14 2004 1010 0505 0001 3M02 606")]),
    (
        "IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX",
        [],
        [("iban", "DE89 3704 0044 0532 0130 00")],
    ),
    ("card 4111 1111 1111 1111", [], [("payment_card", "4111 1111 1111 1111")]),
    ("5555-5555-5555-4444", [], [("payment_card", "5555-5555-5555-4444")]),
    ("amex 378282246310005", [], [("payment_card", "378282246310005")]),
    ("2223003122003222", [], [("payment_card", "2223003122003222")]),
    ("order 12 4111 1111 1111 1111", [], [("payment_card", "4111 1111 1111 1111")]),
    ("身份证11010519491231002X", [], [("cn_resident_id", "11010519491231002X")]),
    ("id 440301199003071230.", [], [("cn_resident_id", "440301199003071230")]),
    ("SSN 536-22-1234", [], [("us_ssn", "536-22-1234")]),
    ("ssn: 536 22 1234", [], [("us_ssn", "536 22 1234")]),
    ("Social Security 536221234", [], [("us_ssn", "536221234")]),
    ("Aadhaar 2341 2341 2346", [], [("in_aadhaar", "2341 2341 2346")]),
    ("2341-2341-2346", [], [("in_aadhaar", "2341-2341-2346")]),
    ("234123412346", [], [("in_aadhaar", "234123412346")]),
    ("CPF 390.533.447-05", [], [("br_cpf", "390.533.447-05")]),
    ("CPF: 39053344705", [], [("br_cpf", "39053344705")]),
    ("PAN ABCPE1234F", [], [("in_pan", "ABCPE1234F")]),
    (
        "a@b.de, c@d.fr und +49 30 23125000",
        [],
        [("email", "a@b.de"), ("email", "c@d.fr"), ("phone", "+49 30 23125000")],
    ),
]


@pytest.mark.parametrize(("text", "hints", "expected"), POSITIVES)
def test_valid_values_are_found(
    text: str, hints: list[str], expected: list[tuple[str, str]]
) -> None:
    found = [
        (category, text[start:end])
        for category, (start, end) in scan_text(text, region_hints=hints)
    ]
    assert found == expected


# Look-alikes: wrong checksums, dates, area codes, formats, or values without their context.
NEGATIVES: list[str] = [
    "SKU 4711 red sneaker, batch 2026-11",
    "version 1.2.3.4 released 2026-11-28 10:00:00",
    "price 1234567.89 EUR, qty 3",
    "DE89 3704 0044 0532 0130 01",  # IBAN check digits wrong
    "GB82 WEST 1234 5698 7654 33",
    "4111 1111 1111 1112",  # Luhn fails
    "1234 5678 9012 3456",  # Luhn-invalid, no issuer
    "0000 0000 0000 0000",  # Luhn-valid but no issuer range
    "110105194912310021",  # CN ID checksum wrong
    "110105194902300012",  # checksum right, 30 February
    "990105194912310023",  # checksum right, unknown area code
    "078-05-1120",  # the Woolworth wallet SSN
    "666-12-1234",
    "123-00-4567",
    "536221234",  # bare 9 digits, no SSN context
    "2341 2341 2347",  # Aadhaar Verhoeff fails
    "2341 2341-2346",  # mixed separators
    "1341 2341 2346",  # Aadhaar never starts with 0 or 1
    "390.533.447-06",  # CPF check digits wrong
    "111.111.111-11",  # repeated digits pass mod 11 but are not issued
    "39053344705",  # bare 11 digits, no CPF context
    "ABCDE1234F",  # PAN holder type D does not exist
    "a..b@example.de",
    "anna@example",
    "@example.de",
    ".anna@example.de-",
    "127.0.0.1",  # loopback identifies no one (other addresses are ip_address)
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes_do_not_count(text: str) -> None:
    assert scan_text(text) == []


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes_do_not_count_as_their_own_category_with_hints(text: str) -> None:
    found = scan_text(text, region_hints=["DE", "US", "CN", "IN", "BR"])
    assert all(category == "phone" for category, _ in found)


def test_overlapping_candidates_resolve_by_priority() -> None:
    # IBAN digits are a valid German phone number for the matcher; the IBAN wins.
    text = "DE89 3704 0044 0532 0130 00"
    assert [c for c, _ in scan_text(text, region_hints=["DE"])] == ["iban"]
    # A card number inside an e-mail local part is part of the address.
    text = "4111111111111111@example.com"
    assert [c for c, _ in scan_text(text)] == ["email"]


# ---------------------------------------------------------------------------------------------
# Documents: paths, base64, non-string values


def test_paths_follow_the_scenario_form() -> None:
    document = {
        "signature_name": "serving_default",
        "instances": [
            {"note": "a@b.de"},
            {"meta": {"contact": ["x", "mail c@d.de"]}, "odd key": "e@f.de"},
        ],
        "inputs": {"x": [[1, 2]], "label-1": "g@h.de"},
    }
    findings = scan(document)
    assert [f.path for f in findings] == [
        "instances[0].note",
        "instances[1].meta.contact[1]",
        'instances[1]["odd key"]',
        'inputs["label-1"]',
    ]
    assert [f.location for f in findings][1] == ("instances", 1, "meta", "contact", 1)
    assert findings.paths_by_category() == {
        "email": [
            "instances[0].note",
            "instances[1].meta.contact[1]",
            'instances[1]["odd key"]',
            'inputs["label-1"]',
        ]
    }
    assert findings.categories == ("email",)


def test_top_level_strings_and_lists() -> None:
    assert [f.path for f in scan("mail a@b.de")] == [""]
    assert [f.path for f in scan(["x", "a@b.de"])] == ["[1]"]
    assert scan(42).items == ()
    assert scan(None).items == ()


def test_json_path_escapes_keys() -> None:
    assert json_path(("a", 0, "b c", 'q"uote', "ü")) == 'a[0]["b c"]["q\\"uote"]["ü"]'


def test_b64_objects_are_scanned_as_the_text_they_carry() -> None:
    text = "anna@example.de 4111 1111 1111 1111"
    hidden = {"b64": base64.b64encode(text.encode()).decode()}
    found = scan({"instances": [hidden]})
    assert [(f.category, f.path, f.encoding) for f in found] == [
        ("email", "instances[0].b64", "b64"),
        ("payment_card", "instances[0].b64", "b64"),
    ]
    # An object with more than the one b64 key is ordinary data.
    assert [f.category for f in scan({"b64": "a@b.de", "note": "x"})] == ["email"]


def test_long_base64_looking_strings_and_data_urls_are_scanned() -> None:
    # Formerly skipped as "binary": a sentence joined with dashes is text.
    joined = "Please-charge-card-4111111111111111-for-the-order-of-the-customer-thanks"
    assert [f.category for f in scan({"note": joined})] == ["payment_card"]
    blob = base64.b64encode(b"iban DE89 3704 0044 0532 0130 00 in a file").decode()
    found = scan({"image": "data:text/plain;base64," + blob})
    assert [(f.category, f.encoding) for f in found] == [("iban", "data_url")]


def test_numeric_tensors_are_skipped_but_strings_in_mixed_lists_are_not() -> None:
    tensor = [[[0.1, 0.2], [0.3, float("nan")]]] * 50
    assert scan({"instances": tensor}).items == ()
    mixed = [[1, 2], [3, "call +49 30 23125000"]]
    assert [f.path for f in scan({"inputs": mixed})] == ["inputs[1][1]"]


def test_deep_documents_do_not_hit_the_recursion_limit() -> None:
    document: Any = "mail a@b.de"
    for _ in range(5000):
        document = [document]
    findings = scan(document)
    assert len(findings) == 1
    assert findings[0].path == "[0]" * 5000


def test_non_string_keys_and_values_are_ignored() -> None:
    document = {1: "a@b.de", "n": 4111111111111111, "ok": True, "none": None}
    assert scan(document).items == ()


# ---------------------------------------------------------------------------------------------
# Headers


def test_selected_headers_are_scanned_case_insensitively() -> None:
    headers = [
        ("X-Note", "call +49 30 23125000"),
        ("X-Api-Key", "a@b.de"),
        ("x-note", "mail c@d.de"),
    ]
    findings = scan_headers(headers, ["X-NOTE"])
    assert [(f.category, f.path, f.location, f.source) for f in findings] == [
        ("phone", 'headers["x-note"]', (0,), "header"),
        ("email", 'headers["x-note"]', (2,), "header"),
    ]
    masked, entries = mask_headers(headers, findings, {"phone": MaskRule(), "email": MaskRule()})
    assert masked == [
        ("X-Note", "call [PHONE]"),
        ("X-Api-Key", "a@b.de"),
        ("x-note", "mail [EMAIL]"),
    ]
    assert entries == [
        {"path": 'headers["x-note"]', "category": "phone", "method": "redact"},
        {"path": 'headers["x-note"]', "category": "email", "method": "redact"},
    ]


def test_header_findings_are_not_applied_to_the_body() -> None:
    findings = scan_headers({"X-Note": "a@b.de"}, ["x-note"])
    document = {"note": "a@b.de"}
    assert apply_masks(document, findings, {"email": MaskRule()}) == (document, [])


# ---------------------------------------------------------------------------------------------
# Masking


def test_redact_keep_last_and_hash() -> None:
    text = "Aadhaar 2341 2341 2346, mail anna@example.de, call +49 30 23125000"
    document = {"note": text}
    findings = scan(document)
    rules = {
        "in_aadhaar": MaskRule("keep_last", keep=4),
        "email": MaskRule("hash"),
        "phone": MaskRule("redact", token="<tel>"),
    }
    masked, entries = apply_masks(document, findings, rules, hash_key=b"k" * 32)
    note = masked["note"]
    assert note.startswith("Aadhaar XXXX XXXX 2346, mail [EMAIL:")
    assert note.endswith("], call <tel>")
    token = re.search(r"\[EMAIL:([a-p]{16})\]", note)
    assert token is not None
    assert [e["method"] for e in entries] == ["keep_last", "hash", "redact"]


def test_keep_last_preserves_separators_and_never_keeps_half() -> None:
    assert _mask_one("+86 138 0013 8000", "phone", MaskRule("keep_last", 4)) == "+XX XXX XXXX 8000"
    assert _mask_one("536-22-1234", "us_ssn", MaskRule("keep_last", 20)) == "XXX-XX-1234"
    assert _mask_one("2341 2341 2346", "in_aadhaar", MaskRule("keep_last", 0)) == "XXXX XXXX XXXX"
    assert _mask_one("a@b.de", "email", MaskRule("keep_last", 4)) == "X@X.de"


def _mask_one(value: str, category: str, rule: MaskRule) -> str:
    findings = scan({"v": value}, detectors_named([category]), region_hints=["CN", "US", "IN"])
    assert [f.category for f in findings] == [category]
    masked, _ = apply_masks({"v": value}, findings, {category: rule}, hash_key=b"key")
    result: str = masked["v"]
    return result


def test_hash_is_keyed_deterministic_and_normalised() -> None:
    rule = MaskRule("hash")
    spaced = _mask_one("DE89 3704 0044 0532 0130 00", "iban", rule)
    compact = _mask_one("DE89370400440532013000", "iban", rule)
    assert spaced == compact
    assert not re.search(r"[0-9]", spaced)
    other_key, _ = apply_masks(
        {"v": "DE89370400440532013000"},
        scan({"v": "DE89370400440532013000"}),
        {"iban": rule},
        hash_key=b"other",
    )
    assert other_key["v"] != compact


def test_hash_without_key_is_an_error() -> None:
    document = {"v": "a@b.de"}
    with pytest.raises(ValueError, match="hash_key"):
        apply_masks(document, scan(document), {"email": MaskRule("hash")})


def test_mask_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="digits"):
        MaskRule(token="[ID-1]")
    with pytest.raises(ValueError, match="method"):
        MaskRule(method="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep"):
        MaskRule("keep_last", keep=-1)


def test_categories_without_rules_are_kept_and_input_is_not_modified() -> None:
    document = {
        "instances": [{"note": "a@b.de / +49 30 23125000"}, {"other": "x"}],
        "tensor": [[1.0]],
    }
    original = copy.deepcopy(document)
    findings = scan(document)
    masked, entries = apply_masks(document, findings, {"phone": MaskRule()})
    assert document == original
    assert masked["instances"][0]["note"] == "a@b.de / [PHONE]"
    assert entries == [{"path": "instances[0].note", "category": "phone", "method": "redact"}]
    # Untouched branches are shared, touched ones copied.
    assert masked["tensor"] is document["tensor"]
    assert masked["instances"][1] is document["instances"][1]
    assert masked["instances"] is not document["instances"]


def test_findings_from_another_document_are_refused() -> None:
    findings = scan({"note": "a@b.de"})
    with pytest.raises(ValueError, match="does not"):
        apply_masks({"other": "a@b.de"}, findings, {"email": MaskRule()})
    with pytest.raises(ValueError, match="does not"):
        apply_masks({"note": 5}, findings, {"email": MaskRule()})


def test_masked_documents_scan_clean() -> None:
    for case in SCENARIOS.values():
        request = _request(case["note"])
        findings = scan(request, region_hints=case["hints"])
        rules = {category: MaskRule("hash") for category in COMPARED}
        masked, _ = apply_masks(request, findings, rules, hash_key=b"k")
        assert scan(masked, region_hints=case["hints"]).items == ()


# ---------------------------------------------------------------------------------------------
# Configuration


def test_detectors_named() -> None:
    assert detectors_named(["email"])[0].category == "email"
    assert [d.category for d in detectors_named(["br_cpf"])] == ["br_cpf", "br_cpf"]
    phone = detectors_named(["phone"], phone_regions=["CN"])[0]
    assert isinstance(phone, PhoneDetector) and phone.regions == ("CN",)
    with pytest.raises(UnknownDetectorError, match="did you mean `iban`"):
        detectors_named(["ibam"])
    assert "eu_vat" not in {d.category for d in DEFAULT_DETECTORS}
    assert [c for c, _ in scan_text("VAT DE136695976", detectors_named(["eu_vat"]))] == ["eu_vat"]


def test_phone_detector_regions_apply_without_scan_hints() -> None:
    detectors = detectors_named(["phone"], phone_regions=["DE"])
    assert [c for c, _ in scan_text("030 23125000", detectors)] == ["phone"]


def test_findings_concatenate() -> None:
    body = scan({"a": "a@b.de"})
    headers = scan_headers({"X-N": "c@d.de"}, ["x-n"])
    both = body + headers
    assert isinstance(both, Findings)
    assert [f.source for f in both] == ["body", "header"]
    assert both[0].category == "email" and len(both[1:]) == 1


@pytest.mark.parametrize(
    "text",
    [
        "1234 5678 " * 10_000,
        "4 1 1 1 " * 12_500,
        "+1 212 555 0123 " * 6_250,
        "DE89 3704 0044 0532 0130 01 " * 3_600,
        "ab.cd@ef.gh " * 8_000,
        "(0) 12-34/56 " * 7_700,
    ],
    ids=["digit-groups", "spaced-digits", "phones", "ibans", "mails", "phone-like"],
)
def test_hostile_texts_stop_at_the_budget(text: str) -> None:
    findings = scan({"note": text}, region_hints=["DE", "CN", "US"], budget=2_000)
    if not findings.complete:
        assert findings.unscanned == ("note",)
    with pytest.raises(ScanBudgetExceeded):
        scan_text(text, region_hints=["DE", "CN", "US"], budget=0 if findings.complete else 2_000)


def test_budget_exhaustion_stops_the_walk_and_keeps_earlier_findings() -> None:
    document = {"a": "mail a@b.de", "b": ["+49 30 23125000"] * 50, "c": "mail c@d.de"}
    findings = scan(document, budget=100)
    assert not findings.complete
    assert findings.unscanned[0].startswith("b[")
    assert findings[0].path == "a"
    assert "c" not in {f.path for f in findings}
    assert scan(document).complete


def test_long_texts_stay_cheap_to_scan_for_phones() -> None:
    filler = "lorem ipsum dolor sit amet " * 400
    text = filler + "call +49 30 23125000 now " + filler + " 2026-11-28 10:00:00 " + filler
    assert [text[s:e] for _, (s, e) in scan_text(text, region_hints=["DE"])] == ["+49 30 23125000"]


# ---------------------------------------------------------------------------------------------
# Properties

VALUES = [
    ("email", "anna.schmidt@example.de"),
    ("email", "zhang.wei@example.cn"),
    ("phone", "+49 30 23125000"),
    ("phone", "+86 138 0013 8000"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82WEST12345698765432"),
    ("payment_card", "4111 1111 1111 1111"),
    ("payment_card", "378282246310005"),
    ("cn_resident_id", "11010519491231002X"),
    ("us_ssn", "536-22-1234"),
    ("in_aadhaar", "2341 2341 2346"),
    ("br_cpf", "390.533.447-05"),
    ("in_pan", "ABCPE1234F"),
]
FILLER = st.text(
    alphabet=st.sampled_from(list("abcdefgh XYZ,.;:!?-/()客户手机éü")), max_size=12
).map(lambda s: s.strip(" -./:()") or "x")


@given(st.lists(st.tuples(FILLER, st.sampled_from(VALUES)), min_size=1, max_size=4), FILLER)
@settings(max_examples=150, deadline=None)
def test_inserted_values_are_found_and_masked_away(
    parts: list[tuple[str, tuple[str, str]]], tail: str
) -> None:
    text = " ".join(f"{filler} {value}" for filler, (_, value) in parts) + " " + tail
    document = {"instances": [{"note": text, "image_bytes": {"b64": IMAGE_B64}}]}
    findings = scan(document)
    found = {(f.category, text[f.start : f.end]) for f in findings}
    for category, value in (pair for _, pair in parts):
        assert (category, value) in found
    rules = {category: MaskRule() for category, _ in VALUES}
    masked, _ = apply_masks(document, findings, rules)
    note = masked["instances"][0]["note"]
    for _, (_, value) in parts:
        assert value not in note
        digits = re.sub(r"[^0-9]", "", value)
        if len(digits) >= 4:
            assert digits not in re.sub(r"[^0-9]", "", note)
    assert scan(masked).items == ()


json_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
    | st.text(alphabet="0123456789 +-.()@abcXde/:"),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_documents, st.lists(st.sampled_from(["DE", "CN", "US-CA", "IN", "??", ""]), max_size=3))
@settings(max_examples=200, deadline=None)
def test_scan_and_mask_never_crash_and_masked_values_are_gone(
    document: Any, hints: list[str]
) -> None:
    findings = scan(document, region_hints=hints)
    rules = {
        "email": MaskRule("hash"),
        "phone": MaskRule("keep_last", keep=2),
        **{c: MaskRule() for c in COMPARED - {"email", "phone"}},
        "in_pan": MaskRule(),
    }
    masked, entries = apply_masks(document, findings, rules, hash_key=b"key")
    assert len(entries) <= len(findings)
    for finding in findings:
        value = _at(document, finding.location)[finding.start : finding.end]
        assert value not in _at(masked, finding.location)


documents_with_values = st.recursive(
    st.sampled_from([value for _, value in VALUES])
    | FILLER
    | st.floats(allow_nan=False)
    | st.builds(lambda v: {"b64": v[1]}, st.sampled_from(VALUES)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@given(documents_with_values | json_documents, st.sampled_from([(), ("DE",), ("CN", "IN")]))
@settings(max_examples=250, deadline=None)
def test_string_values_given_up_front_change_nothing(document: Any, hints: tuple[str]) -> None:
    walked = scan(document, region_hints=hints)
    assert scan(document, region_hints=hints, value_strings=string_values(document)) == walked


def test_the_walk_is_skipped_only_when_the_strings_hold_nothing() -> None:
    document = {"instances": [{"image": [[0.5] * 28] * 28, "note": "grey running shoe"}]}
    assert scan(document, value_strings=["grey running shoe"]).items == ()
    # A card number in a `b64` object is skipped by the walk, never by the up-front pass.
    binary = {"instances": [{"image": {"b64": "4111 1111 1111 1111"}}]}
    assert scan(binary, value_strings=["4111 1111 1111 1111"]).items == ()
    noted = {"instances": [{"note": "call +49 30 23125000"}]}
    found = scan(noted, region_hints=["DE"], value_strings=["call +49 30 23125000"])
    assert [(f.category, f.path) for f in found] == [("phone", "instances[0].note")]
    budget_spent = scan(noted, region_hints=["DE"], budget=1, value_strings=string_values(noted))
    assert not budget_spent.complete


def _at(document: Any, location: tuple[str | int, ...]) -> Any:
    for step in location:
        document = document[step]
    return document


def test_pure_modules_do_not_import_aiohttp() -> None:
    code = (
        "import sys\n"
        "import gateway.privacy, gateway.request.strictjson\n"
        "import gateway.request.clientip, gateway.request.tenants\n"
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
