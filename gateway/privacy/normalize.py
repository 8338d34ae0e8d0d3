"""The normalised view of a string that the detectors read, with a map back to the original.

A model reads `jo\u200bhn＠example.com` as an e-mail address; a regex written for
`john@example.com` does not. Detection therefore runs on a normalised view of every string,
and each span found there is mapped back to the characters of the original string, so that
masking replaces exactly what the caller sent (the invisible characters inside a value are
masked with it).

The view, character by character:

Rule 1 — default-ignorable code points (zero-width spaces and joiners, soft hyphens, bidi
controls, variation selectors, tags: Unicode's `Default_Ignorable_Code_Point`), every other
format character (category Cf) and control characters (Cc) other than tab, line feed and
carriage return are removed: NUL included.

Rule 2 — compatibility forms are folded (NFKD): fullwidth `＠` and `４`, ligatures, circled
and mathematical digits, non-breaking and other spaces. Combining marks are then dropped
(`ü` reads as `u`), since no detector depends on them and an attacker can insert them anywhere.

Rule 3 — decimal digits of every script read as ASCII digits (`٤` is `4`), and every dash
punctuation (hyphen, en dash, minus sign's neighbours in category Pd) reads as `-`.

Homoglyphs across scripts (a Cyrillic `о` for a Latin `o`) are not folded: the confusables
table would also merge legitimate text, and no detector's validator accepts them anyway.

Pure and cheap for the common case: an ASCII string without control characters is its own
view (`normalise` returns None without building anything).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

__all__ = ["NormalisedText", "is_default_ignorable", "normalise"]

#: ASCII controls a value can hide behind (tab, line feed and carriage return are text).
_ASCII_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_KEPT_CONTROLS: Final = frozenset("\t\n\r")

#: `Default_Ignorable_Code_Point` (Unicode DerivedCoreProperties.txt), as inclusive ranges.
_DEFAULT_IGNORABLE: Final = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Mn", "Me"})


def is_default_ignorable(char: str) -> bool:
    """Whether `char` has Unicode's `Default_Ignorable_Code_Point` property."""
    point = ord(char)
    return any(low <= point <= high for low, high in _DEFAULT_IGNORABLE)


@lru_cache(maxsize=8192)
def _fold(char: str) -> str:
    """What one original character contributes to the view (possibly nothing)."""
    if char in _KEPT_CONTROLS:
        return char
    if unicodedata.category(char) in _DROPPED_CATEGORIES or is_default_ignorable(char):
        return ""
    pieces: list[str] = []
    for part in unicodedata.normalize("NFKD", char):
        category = unicodedata.category(part)
        if category in _DROPPED_CATEGORIES or is_default_ignorable(part):
            continue
        digit = unicodedata.decimal(part, None)
        if digit is not None:
            pieces.append(str(digit))
        elif category == "Pd":
            pieces.append("-")
        else:
            pieces.append(part)
    # Recompose what NFKD split but is no mark (Hangul syllables), so the view stays compact.
    return unicodedata.normalize("NFC", "".join(pieces))


@dataclass(frozen=True, slots=True)
class NormalisedText:
    """A normalised view of `original`: `text`, and for each of its characters the index of
    the original character it came from (`origins`, non-decreasing)."""

    original: str
    text: str
    origins: tuple[int, ...]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original characters behind view characters `start:end` (`start < end`).

        Characters the view dropped between the two ends belong to the span, so masking the
        span also removes whatever was hidden inside the value.
        """
        return self.origins[start], self.origins[end - 1] + 1


def normalise(text: str) -> NormalisedText | None:
    """The detectors' view of `text`, or None when `text` is its own view."""
    if text.isascii() and _ASCII_CONTROL.search(text) is None:
        return None
    pieces: list[str] = []
    origins: list[int] = []
    changed = False
    for index, char in enumerate(text):
        folded = _fold(char)
        if folded != char:
            changed = True
        if folded:
            pieces.append(folded)
            origins.extend([index] * len(folded))
    if not changed:
        return None
    return NormalisedText(text, "".join(pieces), tuple(origins))
