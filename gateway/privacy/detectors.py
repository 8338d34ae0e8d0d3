"""Personal-data detectors: a cheap candidate regex, then a validator; only valid values count.

Rule 1 — a detector reports a span only after its validator accepted the value (checksum,
date, number plan): a wrong-checksum identifier is not personal data.

Rule 2 — candidate regexes never use `\\b`: Python treats CJK characters as word characters,
so `身份证11010519491231002X手机` would hide the ID. Boundaries are explicit lookarounds on
ASCII digits and letters.

Rule 3 — every regex is linear in the text: bounded repetitions, no nested unbounded groups,
and the e-mail matcher anchors on `@` instead of trying every start position.

Rule 4 — `min_digits` and `marker` are promises: a value of the category always holds a run
of at least `min_digits` ASCII digits (separated by at most three of ` .-/()`) and, when set,
the `marker` character. The scanner uses them to skip detectors before running any regex.

Rule 5 — every validator call and phone-matcher call is paid from the scan's `ScanState`
budget, so a hostile body costs bounded CPU: when the budget runs out `spend` raises
`ScanBudgetExceeded` and the scan reports itself incomplete instead of taking seconds.
After a candidate fails validation the search resumes one character later (never past the
candidate), so a valid value right behind a look-alike is still found.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from stdnum import luhn
from stdnum.br import cpf as stdnum_cpf
from stdnum.cn import ric as stdnum_ric
from stdnum.de import idnr as stdnum_idnr
from stdnum.es import dni as stdnum_dni
from stdnum.eu import vat as stdnum_vat
from stdnum.fr import nir as stdnum_nir
from stdnum.in_ import aadhaar as stdnum_aadhaar
from stdnum.in_ import pan as stdnum_pan
from stdnum.it import codicefiscale as stdnum_codicefiscale
from stdnum.nl import bsn as stdnum_bsn
from stdnum.pl import pesel as stdnum_pesel
from stdnum.ru import inn as stdnum_inn
from stdnum.us import ssn as stdnum_ssn

from gateway.privacy.detector import Detector
from gateway.privacy.matchers import (
    SEPARATORS,
    EmailDetector,
    IbanDetector,
    PatternDetector,
    PhoneDetector,
)


def _stdnum_check(module: object) -> Callable[[str], bool]:
    is_valid: Callable[[str], object] = module.is_valid  # type: ignore[attr-defined]

    def check(value: str) -> bool:
        return bool(is_valid(value))

    return check


def _valid_cpf(value: str) -> bool:
    digits = re.sub(r"[^0-9]", "", value)
    # The Receita Federal treats repeated-digit numbers as invalid although they pass the
    # checksum; counting them would mask order numbers like 000.000.000-00.
    return len(set(digits)) > 1 and bool(stdnum_cpf.is_valid(digits))


def _valid_ssn(value: str) -> bool:
    return bool(stdnum_ssn.is_valid(re.sub(r"[^0-9]", "", value)))


# Issuer identification ranges (ISO/IEC 7812 as published by the card schemes): first digits
# (as a range of integers over `width` digits) and the allowed lengths.
_CARD_RANGES: Final[tuple[tuple[int, int, int, frozenset[int]], ...]] = (
    (4, 4, 1, frozenset({13, 16, 19})),  # Visa
    (51, 55, 2, frozenset({16})),  # Mastercard
    (2221, 2720, 4, frozenset({16})),  # Mastercard 2-series
    (34, 34, 2, frozenset({15})),  # American Express
    (37, 37, 2, frozenset({15})),
    (300, 305, 3, frozenset(range(14, 20))),  # Diners Club
    (36, 36, 2, frozenset(range(14, 20))),
    (38, 39, 2, frozenset(range(16, 20))),
    (6011, 6011, 4, frozenset(range(16, 20))),  # Discover
    (644, 649, 3, frozenset(range(16, 20))),
    (65, 65, 2, frozenset(range(16, 20))),
    (3528, 3589, 4, frozenset(range(16, 20))),  # JCB
    (62, 62, 2, frozenset(range(16, 20))),  # UnionPay
    (2200, 2204, 4, frozenset(range(16, 20))),  # Mir
    (50, 50, 2, frozenset(range(12, 20))),  # Maestro
    (56, 69, 2, frozenset(range(12, 20))),
    (60, 60, 2, frozenset({16})),  # RuPay
    (81, 82, 2, frozenset({16})),
    (508, 508, 3, frozenset({16})),
)


def _valid_card(value: str) -> bool:
    digits = SEPARATORS.sub("", value)
    if not digits.isdigit():
        return False
    in_range = any(
        len(digits) in lengths and low <= int(digits[:width]) <= high
        for low, high, width, lengths in _CARD_RANGES
    )
    return in_range and bool(luhn.is_valid(digits))


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


EMAIL: Final = EmailDetector()
PHONE: Final = PhoneDetector()
IBAN: Final = IbanDetector()
PAYMENT_CARD: Final = PatternDetector(
    category="payment_card",
    # 13-19 digits written compact, in groups of four (16 or 19 digits), or 4-6-5 / 4-6-4
    # (American Express, Diners); one separator kind per number. 12-digit Maestro numbers are
    # rare and look like too many other things.
    pattern=_compile(
        r"(?<![0-9])(?:[0-9]{13,19}"
        r"|[0-9]{4}([ \-])[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1[0-9]{3})?"
        r"|[0-9]{4}([ \-])[0-9]{6}\2[0-9]{4,5})(?![0-9])"
    ),
    validate=_valid_card,
    priority=70,
    min_digits=13,
    cost=1,
)
CN_RESIDENT_ID: Final = PatternDetector(
    category="cn_resident_id",
    pattern=_compile(
        r"(?<![0-9])[1-9][0-9]{5} ?(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
        r" ?[0-9]{3}[0-9Xx](?![0-9A-Za-z])"
    ),
    validate=_stdnum_check(stdnum_ric),
    priority=30,
    min_digits=17,
)
IN_AADHAAR: Final = PatternDetector(
    category="in_aadhaar",
    pattern=_compile(r"(?<![0-9+])[2-9][0-9]{3}([ \-]?)[0-9]{4}\1[0-9]{4}(?![0-9])"),
    validate=_stdnum_check(stdnum_aadhaar),
    priority=40,
    min_digits=12,
)
BR_CPF: Final = PatternDetector(
    category="br_cpf",
    pattern=_compile(r"(?<![0-9.])[0-9]{3}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}(?![0-9])"),
    validate=_valid_cpf,
    priority=50,
    min_digits=11,
)
BR_CPF_BARE: Final = PatternDetector(
    category="br_cpf",
    pattern=_compile(r"(?<![0-9])[0-9]{11}(?![0-9])"),
    validate=_valid_cpf,
    priority=51,
    min_digits=11,
    context=_compile(r"(?i)\bCPF\b"),
)
US_SSN: Final = PatternDetector(
    category="us_ssn",
    # A dash next to the number ends it unless a digit follows (`536-22-1234-ok` is an SSN,
    # `536-22-1234-5` is part of a longer number).
    pattern=_compile(r"(?<![0-9])(?<![0-9]-)[0-9]{3}-[0-9]{2}-[0-9]{4}(?!-?[0-9])"),
    validate=_valid_ssn,
    priority=60,
    min_digits=9,
)
US_SSN_BARE: Final = PatternDetector(
    category="us_ssn",
    pattern=_compile(r"(?<![0-9])[0-9]{3} ?[0-9]{2} ?[0-9]{4}(?![0-9])"),
    validate=_valid_ssn,
    priority=61,
    min_digits=9,
    context=_compile(r"(?i)\b(?:SSN|social security|soc\.? ?sec)"),
)
IN_PAN: Final = PatternDetector(
    category="in_pan",
    pattern=_compile(r"(?<![A-Za-z0-9])[A-Z]{5}[0-9]{4}[A-Z](?![A-Za-z0-9])"),
    validate=_stdnum_check(stdnum_pan),
    priority=80,
    min_digits=4,
)
EU_VAT: Final = PatternDetector(
    category="eu_vat",
    pattern=_compile(
        r"(?<![A-Za-z0-9])(?:AT|BE|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|"
        r"PT|RO|SE|SI|SK|XI) ?[0-9A-Z]{8,12}(?![A-Za-z0-9])"
    ),
    validate=_stdnum_check(stdnum_vat),
    priority=85,
    min_digits=7,
)


# National identifiers and network addresses (vocabulary categories). National ids are
# matched only next to a keyword naming them (short numeric ids have many look-alikes);
# python-stdnum validates each candidate.


def _valid_ip(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    # The unspecified, loopback, multicast and reserved addresses (0.0.0.0, ::, 127.0.0.1,
    # ff02::1, `::a` in the reserved ::/8) identify no one's device.
    return not (
        address.is_unspecified or address.is_loopback or address.is_multicast or address.is_reserved
    )


def _valid_inn(value: str) -> bool:
    # Only the 12-digit INN of a natural person is personal data (10 digits: a company).
    return len(value) == 12 and bool(stdnum_inn.is_valid(value))


IP_V4: Final = PatternDetector(
    category="ip_address",
    # A dotted quad right after "version" or "v" is a version number, not an address.
    pattern=_compile(
        r"(?<![0-9.])(?<![Vv])(?<![Vv]ersion )(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9]|\.[0-9])"
    ),
    validate=_valid_ip,
    priority=25,
    min_digits=4,
    marker=".",
    cost=1,
)
IP_V6: Final = PatternDetector(
    category="ip_address",
    # Hex digits and colons with two colons at least; `ipaddress` decides (times such as
    # 12:30:45 are not addresses).
    pattern=_compile(
        r"(?<![0-9A-Za-z:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,8}(?![0-9A-Za-z:])"
    ),
    validate=_valid_ip,
    priority=26,
    min_digits=0,
    marker=":",
    cost=1,
)
RU_INN: Final = PatternDetector(
    category="ru_inn",
    pattern=_compile(r"(?<![0-9])[0-9]{12}(?![0-9])"),
    validate=_valid_inn,
    priority=45,
    min_digits=12,
    context=_compile(r"(?i)(?:ИНН|(?<![A-Za-z])INN(?![A-Za-z]))"),
)
DE_IDNR: Final = PatternDetector(
    category="de_idnr",
    pattern=_compile(r"(?<![0-9])[0-9]{2} ?[0-9]{3} ?[0-9]{3} ?[0-9]{3}(?![0-9])"),
    validate=_stdnum_check(stdnum_idnr),
    priority=52,
    min_digits=11,
    context=_compile(r"(?i)(?:Steuer-?ID|Steuer-?Identifikationsnummer|IdNr|Tax ?ID)"),
    context_window=32,
)
FR_NIR: Final = PatternDetector(
    category="fr_nir",
    pattern=_compile(
        r"(?<![0-9])[12] ?[0-9]{2} ?[0-9]{2} ?(?:[0-9]{2}|2[ABab]) ?[0-9]{3} ?[0-9]{3} ?[0-9]{2}"
        r"(?![0-9])"
    ),
    validate=_stdnum_check(stdnum_nir),
    priority=53,
    min_digits=6,
    context=_compile(r"(?i)(?:NIR|s[ée]curit[ée] sociale|INSEE|n° ?SS)"),
    context_window=32,
)
ES_DNI: Final = PatternDetector(
    category="es_dni",
    pattern=_compile(r"(?<![0-9A-Za-z])[0-9]{8}-?[A-Za-z](?![0-9A-Za-z])"),
    validate=_stdnum_check(stdnum_dni),
    priority=54,
    min_digits=8,
    context=_compile(r"(?i)(?:DNI|NIF|documento nacional)"),
)
IT_CODICE_FISCALE: Final = PatternDetector(
    category="it_codice_fiscale",
    # Omocodia replaces digits with letters, so a code may hold no digit at all.
    pattern=_compile(
        r"(?<![A-Za-z0-9])[A-Za-z]{6}[0-9LMNPQRSTUVlmnpqrstuv]{2}[ABCDEHLMPRSTabcdehlmprst]"
        r"[0-9LMNPQRSTUVlmnpqrstuv]{2}[A-Za-z][0-9LMNPQRSTUVlmnpqrstuv]{3}[A-Za-z](?![A-Za-z0-9])"
    ),
    validate=_stdnum_check(stdnum_codicefiscale),
    priority=55,
    min_digits=0,
)
NL_BSN: Final = PatternDetector(
    category="nl_bsn",
    pattern=_compile(r"(?<![0-9])[0-9]{4}\.?[0-9]{2}\.?[0-9]{3}(?![0-9])"),
    validate=_stdnum_check(stdnum_bsn),
    priority=56,
    min_digits=9,
    context=_compile(r"(?i)(?:BSN|burgerservicenummer|sofi-?nummer)"),
)
PL_PESEL: Final = PatternDetector(
    category="pl_pesel",
    pattern=_compile(r"(?<![0-9])[0-9]{11}(?![0-9])"),
    validate=_stdnum_check(stdnum_pesel),
    priority=57,
    min_digits=11,
    context=_compile(r"(?i)PESEL"),
)


#: Detectors by configuration name. `eu_vat` is opt-in: VAT numbers mostly identify companies.
BUILTIN_DETECTORS: Final[dict[str, tuple[Detector, ...]]] = {
    "email": (EMAIL,),
    "phone": (PHONE,),
    "iban": (IBAN,),
    "payment_card": (PAYMENT_CARD,),
    "cn_resident_id": (CN_RESIDENT_ID,),
    "in_aadhaar": (IN_AADHAAR,),
    "br_cpf": (BR_CPF, BR_CPF_BARE),
    "us_ssn": (US_SSN, US_SSN_BARE),
    "in_pan": (IN_PAN,),
    "eu_vat": (EU_VAT,),
    "ip_address": (IP_V4, IP_V6),
    "ru_inn": (RU_INN,),
    "de_idnr": (DE_IDNR,),
    "fr_nir": (FR_NIR,),
    "es_dni": (ES_DNI,),
    "it_codice_fiscale": (IT_CODICE_FISCALE,),
    "nl_bsn": (NL_BSN,),
    "pl_pesel": (PL_PESEL,),
}

DEFAULT_DETECTOR_NAMES: Final[tuple[str, ...]] = (
    "email",
    "phone",
    "iban",
    "payment_card",
    "cn_resident_id",
    "in_aadhaar",
    "br_cpf",
    "us_ssn",
    "in_pan",
    "ip_address",
    "ru_inn",
    "de_idnr",
    "fr_nir",
    "es_dni",
    "it_codice_fiscale",
    "nl_bsn",
    "pl_pesel",
)


class UnknownDetectorError(ValueError):
    """A configured detector name that does not exist; `suggestion` is the closest name."""

    def __init__(self, name: str, suggestion: str | None) -> None:
        self.name = name
        self.suggestion = suggestion
        hint = f"; did you mean `{suggestion}`?" if suggestion else ""
        super().__init__(f"unknown personal-data detector `{name}`{hint}")


def detectors_named(
    names: Iterable[str] = DEFAULT_DETECTOR_NAMES, *, phone_regions: Sequence[str] = ()
) -> tuple[Detector, ...]:
    """The built-in detectors for configuration `names`, phone detection with `phone_regions`."""
    selected: list[Detector] = []
    for name in names:
        if name not in BUILTIN_DETECTORS:
            close = difflib.get_close_matches(name, BUILTIN_DETECTORS, n=1)
            raise UnknownDetectorError(name, close[0] if close else None)
        for detector in BUILTIN_DETECTORS[name]:
            if isinstance(detector, PhoneDetector) and phone_regions:
                detector = PhoneDetector(regions=tuple(phone_regions))
            if detector not in selected:
                selected.append(detector)
    return tuple(selected)


DEFAULT_DETECTORS: Final[tuple[Detector, ...]] = detectors_named()


def emitted_categories() -> frozenset[str]:
    """Every personal-data category some built-in detector emits."""
    return frozenset(d.category for group in BUILTIN_DETECTORS.values() for d in group)
