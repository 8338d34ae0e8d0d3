"""What a detector is, and what a scan lends it: the span set and the work budget.

`Detector` is the protocol every detector implements (rules 1 to 5 of `detectors`);
`SpanSet` keeps the labelled spans found so far, without overlaps; `ScanState` carries the
scan's work budget, from which every validator and phone-matcher call is paid.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Final, Protocol, runtime_checkable

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
