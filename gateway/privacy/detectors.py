"""Personal-data detectors: a cheap candidate regex, then a validator; only valid values count.

Rule 1 — a detector reports a span only after its validator accepted the value (checksum,
date, number plan): a wrong-checksum identifier is not personal data (legal-rules.md §3.2).

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

import bisect
import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

import phonenumbers
from stdnum import iban as stdnum_iban
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

Span = tuple[int, int]


class SpanSet:
    """Non-overlapping labelled spans, kept sorted; `add` refuses overlaps in O(log n)."""

    __slots__ = ("_ends", "_labels", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._labels: list[str] = []

    def add(self, start: int, end: int, label: str = "") -> bool:
        """Insert `[start, end)` unless it overlaps a span already held."""
        index = bisect.bisect_right(self._starts, start)
        if index > 0 and self._ends[index - 1] > start:
            return False
        if index < len(self._starts) and self._starts[index] < end:
            return False
        self._starts.insert(index, start)
        self._ends.insert(index, end)
        self._labels.insert(index, label)
        return True

    def overlaps(self, start: int, end: int) -> bool:
        """Whether `[start, end)` overlaps a held span."""
        index = bisect.bisect_right(self._starts, start)
        if index > 0 and self._ends[index - 1] > start:
            return True
        return index < len(self._starts) and self._starts[index] < end

    def spans(self) -> list[Span]:
        """The spans in order."""
        return list(zip(self._starts, self._ends, strict=True))

    def hits(self) -> list[tuple[str, int, int]]:
        """`(label, start, end)` in order."""
        return list(zip(self._labels, self._starts, self._ends, strict=True))


class ScanBudgetExceeded(Exception):
    """The scan's work budget is spent; the remaining text is not scanned."""


class ScanState:
    """Per-scan inputs shared by the detectors: region hints and the work budget (units of
    about 10 microseconds; see the `*_COST` constants)."""

    __slots__ = ("region_hints", "remaining", "taken")

    def __init__(self, region_hints: tuple[str, ...] = (), budget: int = 50_000) -> None:
        self.region_hints = region_hints
        self.remaining = budget
        #: Spans already claimed in the current text by higher-priority detectors; a detector
        #: skips candidates that overlap them (they would lose anyway).
        self.taken = SpanSet()

    def spend(self, units: int = 1) -> None:
        """Pay `units`, or raise `ScanBudgetExceeded` when the budget is gone."""
        self.remaining -= units
        if self.remaining < 0:
            raise ScanBudgetExceeded


# Work units, calibrated on a 2-core machine: one unit is about 10 microseconds.
#: A python-stdnum validation (checksum, date and area tables).
STDNUM_COST: Final = 3
#: One phone-matcher call per digit run and region (the matcher is thorough and slow).
PHONE_MATCH_COST: Final = 30
#: One `phonenumbers.parse` plus validity check.
PHONE_PARSE_COST: Final = 4


@runtime_checkable
class Detector(Protocol):
    """Finds validated values of one personal-data category in a text."""

    @property
    def category(self) -> str:
        """Category name reported in findings, e.g. `email`, `in_aadhaar`."""

    @property
    def priority(self) -> int:
        """Overlap order: when spans of two categories overlap, the lower priority wins."""

    @property
    def min_digits(self) -> int:
        """Every value holds a run of at least this many ASCII digits, consecutive digits
        separated by at most three of ` .-/()` (`+49 (0)30 / 2312` is a run of 9)."""

    @property
    def marker(self) -> str | None:
        """A character every value holds (`@` for e-mail), or None."""

    def find(self, text: str, state: ScanState) -> Iterable[Span]:
        """Yield `(start, end)` character spans of validated values in `text`."""


# ---------------------------------------------------------------------------------------------
# Pattern + validator detectors


@dataclass(frozen=True)
class PatternDetector:
    """Regex candidates, each checked by `validate`; optional keyword context.

    `context`, when set, must match within `context_window` characters before a candidate:
    identifiers without a check digit or with many look-alikes (bare 9-digit SSNs, bare
    11-digit CPFs) count only next to their keyword.
    """

    category: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool]
    priority: int
    min_digits: int
    marker: str | None = None
    context: re.Pattern[str] | None = None
    context_window: int = 24
    cost: int = STDNUM_COST

    def find(self, text: str, state: ScanState) -> Iterator[Span]:
        """Yield spans of candidates that pass the validator (and the context rule)."""
        pos = 0
        while (match := self.pattern.search(text, pos)) is not None:
            start, end = match.span()
            pos = start + 1
            if state.taken.overlaps(start, end):
                continue
            if self.context is not None and not self.context.search(
                text, max(0, start - self.context_window), start
            ):
                continue
            state.spend(self.cost)
            if self.validate(match.group()):
                yield start, end
                pos = end


def _stdnum_check(module: object) -> Callable[[str], bool]:
    is_valid: Callable[[str], object] = module.is_valid  # type: ignore[attr-defined]

    def check(value: str) -> bool:
        return bool(is_valid(value))

    return check


def _valid_cpf(value: str) -> bool:
    digits = re.sub(r"[^0-9]", "", value)
    # The Receita Federal treats repeated-digit numbers as invalid although they pass the
    # checksum (legal-rules.md §3.1); counting them would mask order numbers like 000.000.000-00.
    return len(set(digits)) > 1 and bool(stdnum_cpf.is_valid(digits))


def _valid_ssn(value: str) -> bool:
    return bool(stdnum_ssn.is_valid(re.sub(r"[^0-9]", "", value)))


# ---------------------------------------------------------------------------------------------
# IBAN: the regex cannot know where an IBAN ends (its length depends on the country, and a
# BIC or a word in capitals may follow), so prefixes of each candidate are tried.


_SEPARATORS: Final = re.compile(r"[^0-9A-Za-z]+")


@dataclass(frozen=True)
class IbanDetector:
    """IBANs written compact or in groups of four; mod-97 plus the country's BBAN format."""

    pattern: re.Pattern[str] = re.compile(
        r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}"
        r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?![a-z0-9])"
    )
    category: str = "iban"
    priority: int = 20
    min_digits: int = 7
    marker: str | None = None

    def find(self, text: str, state: ScanState) -> Iterator[Span]:
        """Yield the longest valid prefix of each candidate."""
        pos = 0
        while (match := self.pattern.search(text, pos)) is not None:
            pos = match.start() + 1
            if state.taken.overlaps(*match.span()):
                continue
            candidate = match.group()
            # Prefix ends: after every character when written compact, else after each group.
            if " " in candidate:
                ends = [m.end() for m in re.finditer(r"[A-Z0-9]+", candidate)]
            else:
                ends = list(range(15, len(candidate) + 1))
            for end in reversed(ends):
                compact = candidate[:end].replace(" ", "")
                if not 15 <= len(compact) <= 34:
                    continue
                state.spend(1)
                if _valid_iban(compact):
                    yield match.start(), match.start() + end
                    pos = match.start() + end
                    break


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
    digits = _SEPARATORS.sub("", value)
    if not digits.isdigit():
        return False
    in_range = any(
        len(digits) in lengths and low <= int(digits[:width]) <= high
        for low, high, width, lengths in _CARD_RANGES
    )
    return in_range and bool(luhn.is_valid(digits))


def _mod97(value: str) -> int:
    rearranged = value[4:] + value[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97


def _valid_iban(compact: str) -> bool:
    compact = compact.upper()
    if not (compact[:2].isalpha() and compact[2:4].isdigit() and compact.isalnum()):
        return False
    # mod-97 first: it is cheap and rejects almost every look-alike before stdnum's
    # per-country structure check runs.
    return _mod97(compact) == 1 and bool(stdnum_iban.is_valid(compact))


# ---------------------------------------------------------------------------------------------
# E-mail


_LOCAL_CHARS: Final = r"A-Za-z0-9\u00c0-\u024f._%+\-"
_LOCAL_BEFORE_AT: Final = re.compile(rf"[{_LOCAL_CHARS}]{{1,64}}\Z")
_DOMAIN_AFTER_AT: Final = re.compile(
    r"(?:[A-Za-z0-9\u00c0-\u024f](?:[A-Za-z0-9\u00c0-\u024f\-]{0,61}[A-Za-z0-9\u00c0-\u024f])?\.){1,8}"
    r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9\-]{1,59})(?![A-Za-z0-9\u00c0-\u024f\-])"
)


@dataclass(frozen=True)
class EmailDetector:
    """Addresses in RFC 5321 dot-atom form with a DNS domain (no DNS look-up).

    Local parts and domains may hold Latin letters with diacritics (EAI addresses such as
    `jürgen@müller.de`); CJK text next to an address is not part of it.
    """

    category: str = "email"
    priority: int = 10
    min_digits: int = 0
    marker: str | None = "@"

    def find(self, text: str, state: ScanState) -> Iterator[Span]:
        """Yield spans of syntactically valid addresses."""
        at = text.find("@")
        previous_end = 0
        while at >= 0:
            state.spend()
            local = _LOCAL_BEFORE_AT.search(text, max(previous_end, at - 64), at)
            domain = _DOMAIN_AFTER_AT.match(text, at + 1)
            local_run_too_long = (
                local is not None
                and local.start() > 0
                and _LOCAL_BEFORE_AT.match(text, local.start() - 1, local.start()) is not None
            )
            if local is not None and domain is not None and not local_run_too_long:
                start = local.start()
                # The local-part class also matches dots and hyphens; trim a leading run so
                # "see:.anna@x.de" yields "anna@x.de".
                while start < at and text[start] in ".-":
                    start += 1
                local_part = text[start:at]
                domain_part = domain.group()
                if _valid_local_part(local_part) and len(local_part) + len(domain_part) < 254:
                    yield start, domain.end()
                    previous_end = domain.end()
            at = text.find("@", at + 1)


def _valid_local_part(local: str) -> bool:
    return (
        bool(local) and not local.startswith(".") and not local.endswith(".") and ".." not in local
    )


# ---------------------------------------------------------------------------------------------
# Phone numbers


_PHONE_CANDIDATE: Final = re.compile(r"[+(]?[0-9][0-9 \u00a0.\-/()]{4,40}[0-9]")
_DIGIT_BYTES: Final = b"0123456789"


@dataclass(frozen=True)
class PhoneDetector:
    """Valid numbers per libphonenumber (`Leniency.VALID`), with region hints.

    Numbers in international form (`+49 30 23125000`) are found without hints. National
    forms (`13800138000`, `030 23125000`) need the region they are written for: the scanner's
    `region_hints` (caller, data-subject and tenant regions) plus `regions` configured here.
    The matcher sees windows around digit runs (with some context on each side), so its cost
    follows the number of candidates, not the length of the surrounding prose; a match must
    lie on a digit run, never only in the context of a window.
    """

    regions: tuple[str, ...] = ()
    category: str = "phone"
    priority: int = 90
    min_digits: int = 7
    marker: str | None = None
    #: Context kept around a digit run: the matcher looks at neighbours (a following `:30`
    #: marks a time stamp, a preceding letter a product code).
    window_margin: int = 16
    #: Digit runs closer than this share one matcher call, up to `max_core` characters.
    max_core: int = 256

    def find(self, text: str, state: ScanState) -> Iterator[Span]:
        """Yield spans of valid phone numbers."""
        hinted = _phone_regions(self.regions + state.region_hints)
        found = SpanSet()

        for core_start, core_end, runs, international in self._cores(text, state.taken):
            window_start = max(0, core_start - self.window_margin)
            window = text[window_start : min(len(text), core_end + self.window_margin)]
            # The region only matters for national forms.
            for region in ("ZZ",) if international else hinted:
                state.spend(PHONE_MATCH_COST * runs)
                for match in phonenumbers.PhoneNumberMatcher(
                    window, region, leniency=phonenumbers.Leniency.VALID
                ):
                    start, end = window_start + match.start, window_start + match.end
                    # A match reaching into a span another detector claimed (a number
                    # read with a CPF as its extension) is checked again on its own below.
                    if (
                        core_start <= start
                        and end <= core_end
                        and not state.taken.overlaps(start, end)
                    ):
                        found.add(start, end)
        # The matcher reads `+49 30 23125000 x 4111...` as one number with an extension and
        # then drops it as invalid; numbers written in international form are checked again
        # on their own (national forms are not: without the matcher's context checks, dates
        # and time stamps would pass).
        for candidate in _PHONE_CANDIDATE.finditer(text):
            if (
                candidate.group().startswith("+")
                and not found.overlaps(*candidate.span())
                and not state.taken.overlaps(*candidate.span())
            ):
                span = _valid_international(candidate.group(), state)
                if span is not None:
                    found.add(candidate.start() + span[0], candidate.start() + span[1])
        yield from found.spans()

    def _cores(self, text: str, taken: SpanSet) -> Iterator[tuple[int, int, int, bool]]:
        """(start, end, number of digit runs, all international) of grouped digit runs."""
        pending: list[Any] | None = None
        for match in _PHONE_CANDIDATE.finditer(text):
            digits = match.group().encode()
            if len(digits) - len(digits.translate(None, _DIGIT_BYTES)) < self.min_digits:
                continue
            if taken.overlaps(*match.span()):
                continue
            start, end = match.span()
            international = match.group().startswith("+")
            if (
                pending is not None
                and start - pending[1] <= 2 * self.window_margin
                and end - pending[0] <= self.max_core
            ):
                pending[1], pending[2] = end, pending[2] + 1
                pending[3] = pending[3] and international
                continue
            if pending is not None:
                yield pending[0], pending[1], pending[2], pending[3]
            pending = [start, end, 1, international]
        if pending is not None:
            yield pending[0], pending[1], pending[2], pending[3]


def _valid_international(candidate: str, state: ScanState) -> Span | None:
    """The longest prefix of `candidate` (whole digit groups) that is a valid number."""
    ends = [m.end() for m in re.finditer(r"[0-9](?![0-9])", candidate)]
    for end in reversed(ends):
        state.spend(PHONE_PARSE_COST)
        try:
            number = phonenumbers.parse(candidate[:end], None)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return 0, end
    return None


def _phone_regions(hints: Sequence[str]) -> tuple[str, ...]:
    """Country codes libphonenumber knows, in order, deduplicated; "ZZ" when there are none."""
    regions: list[str] = []
    for hint in hints:
        country = hint.split("-", 1)[0].upper()
        if country in phonenumbers.SUPPORTED_REGIONS and country not in regions:
            regions.append(country)
    return tuple(regions) or ("ZZ",)


# ---------------------------------------------------------------------------------------------
# The built-in detectors


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
# matched only next to a keyword naming them (legal-rules.md §3.1: short numeric ids have
# many look-alikes); python-stdnum validates each candidate.


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
