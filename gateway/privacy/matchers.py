"""The kinds of detector: a candidate pattern with a validator, IBAN, e-mail and phone.

Each kind finds candidates with a linear regex and reports a span only after its validator
accepted the value (see `detectors` for the rules every kind keeps).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import phonenumbers
from stdnum import iban as stdnum_iban

from gateway.privacy.detector import (
    PHONE_MATCH_COST,
    PHONE_PARSE_COST,
    STDNUM_COST,
    ScanState,
    Span,
    SpanSet,
)


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


# IBAN: the regex cannot know where an IBAN ends (its length depends on the country, and a
# BIC or a word in capitals may follow), so prefixes of each candidate are tried.
SEPARATORS: Final = re.compile(r"[^0-9A-Za-z]+")


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
