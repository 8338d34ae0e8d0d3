"""Masking: replace found values in place, keeping the document's structure.

Rule 1 — the input document is never modified; containers on the path to a masked string are
copied, everything else is shared with the input.

Rule 2 — masked text holds no digit of a masked value, except the `keep` last characters a
`keep_last` rule asks for: redaction tokens may not contain digits, and keyed hashes are
written in the letters `a`-`p` instead of hex. A token therefore never recreates a digit
sequence of the value, and scanning the masked document again finds nothing new.

Rule 3 — `keep_last` keeps separators and the last `keep` letters or digits
(`2341 2341 2346` -> `XXXX XXXX 2346`), but never more than half of them, so a short value is
never left readable.

Rule 4 — categories without a rule are left as they are: which categories to mask is the
policy's decision (obligations), not the detector's.

Rule 5 — a value the backend decodes (`{"b64": ...}`, a base64 `data:` URL) is decoded,
masked as text and encoded again in the caller's form. A finding in the readable runs of a
binary value cannot be masked without corrupting the value: `UnmaskableValue` is raised, and
the gateway refuses the request instead of forwarding it.

Rule 6 — `mask_values` says which strings change (by location) and leaves the rest of the
document alone, so a gateway can splice the new strings into the original bytes: numbers,
`NaN`, key order and every untouched value reach the backend exactly as sent.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway.privacy.encoded import (
    InvalidBase64,
    TextPayload,
    classify_bytes,
    decode_base64,
    encode_base64,
    encode_text,
    parse_data_url,
)
from gateway.privacy.findings import Findings, Location, PersonalDataFinding

__all__ = [
    "MaskRule",
    "MaskedEntry",
    "UnmaskableValue",
    "apply_masks",
    "mask_byte_values",
    "mask_headers",
    "mask_text",
    "mask_values",
]


class UnmaskableValue(ValueError):
    """A finding the rules say to mask sits where it cannot be rewritten (a binary value)."""

    def __init__(self, path: str, category: str) -> None:
        super().__init__(f"`{category}` found in the binary value at `{path}` cannot be masked")
        self.path = path
        self.category = category


MaskMethod = Literal["redact", "keep_last", "hash"]
MaskedEntry = dict[str, str]

_DIGIT: Final = re.compile(r"[0-9]")
_ALNUM: Final = re.compile(r"[^\W_]")
_HEX_TO_LETTERS: Final = str.maketrans("0123456789abcdef", "ghijklmnopabcdef")


@dataclass(frozen=True)
class MaskRule:
    """How to mask one category.

    `redact` replaces the value with `token` (default `[EMAIL]` for category `email`),
    `keep_last` keeps the last `keep` letters or digits, `hash` writes
    `[EMAIL:<16 letters>]`, an HMAC-SHA256 of the normalised value under the caller's key
    (the same value always gives the same token, so records stay linkable without the value).
    """

    method: MaskMethod = "redact"
    keep: int = 4
    token: str | None = None

    def __post_init__(self) -> None:
        if self.method not in ("redact", "keep_last", "hash"):
            raise ValueError(f"unknown mask method `{self.method}`")
        if self.keep < 0:
            raise ValueError(f"keep must be >= 0, got {self.keep}")
        if self.token is not None and _DIGIT.search(self.token):
            raise ValueError(f"mask token `{self.token}` must not contain digits")


def _label(category: str) -> str:
    return _DIGIT.sub("", category.upper())


def _redaction_token(category: str, rule: MaskRule) -> str:
    return rule.token if rule.token is not None else f"[{_label(category)}]"


def _keep_last(value: str, keep: int) -> str:
    positions = [match.start() for match in _ALNUM.finditer(value)]
    keep = min(keep, len(positions) // 2)
    hidden = positions[: len(positions) - keep]
    chars = list(value)
    for index in hidden:
        chars[index] = "X"
    return "".join(chars)


def _normalise_for_hash(category: str, value: str) -> str:
    if category == "email":
        return value.casefold()
    return "".join(match.group() for match in _ALNUM.finditer(value)).upper()


def _keyed_hash(category: str, value: str, key: bytes) -> str:
    message = f"{category}:{_normalise_for_hash(category, value)}".encode("utf-8", "surrogatepass")
    digest = hmac.new(key, message, hashlib.sha256).hexdigest()[:16]
    return f"[{_label(category)}:{digest.translate(_HEX_TO_LETTERS)}]"


def _replacement(category: str, value: str, rule: MaskRule, hash_key: bytes | None) -> str:
    if rule.method == "redact":
        return _redaction_token(category, rule)
    if rule.method == "keep_last":
        return _keep_last(value, rule.keep)
    if hash_key is None:
        raise ValueError(f"mask rule for `{category}` uses `hash` but no hash_key was given")
    return _keyed_hash(category, value, hash_key)


def mask_text(
    text: str,
    hits: Iterable[tuple[str, int, int]],
    rules: Mapping[str, MaskRule],
    *,
    hash_key: bytes | None = None,
) -> tuple[str, list[tuple[str, MaskMethod]]]:
    """Mask `(category, start, end)` hits in `text`; return the text and what was masked."""
    selected = sorted(
        (start, end, category)
        for category, start, end in hits
        if category in rules and 0 <= start < end <= len(text)
    )
    pieces: list[str] = []
    done: list[tuple[str, MaskMethod]] = []
    cursor = 0
    for start, end, category in selected:
        # Overlaps cannot come from one scan; if they do, the union is masked by the first.
        start = max(start, cursor)
        if start >= end:
            continue
        rule = rules[category]
        pieces.append(text[cursor:start])
        pieces.append(_replacement(category, text[start:end], rule, hash_key))
        cursor = end
        if (category, rule.method) not in done:
            done.append((category, rule.method))
    pieces.append(text[cursor:])
    return "".join(pieces), done


def _group_by_location(
    findings: Iterable[PersonalDataFinding],
) -> dict[Location, list[PersonalDataFinding]]:
    grouped: dict[Location, list[PersonalDataFinding]] = {}
    for finding in findings:
        grouped.setdefault(finding.location, []).append(finding)
    return grouped


def _masked_entries(
    path: str, done: Sequence[tuple[str, MaskMethod]], entries: list[MaskedEntry]
) -> None:
    for category, method in done:
        entry = {"path": path, "category": category, "method": method}
        if entry not in entries:
            entries.append(entry)


def mask_values(
    document: Any,
    findings: Findings | Iterable[PersonalDataFinding],
    rules: Mapping[str, MaskRule],
    *,
    hash_key: bytes | None = None,
) -> tuple[dict[Location, str], list[MaskedEntry]]:
    """The new value of every string of `document` that a body finding with a rule masks.

    Returns `{location: new string}` (the location of a `b64` value points at the base64
    string itself) and the masked list (`{path, category, method}` per masked category and
    path, in document order), the form the audit record stores. Raises `UnmaskableValue` for
    a finding to mask inside a binary value, and `ValueError` when a finding does not point
    at a string of `document` or a `hash` rule is used without `hash_key`.
    """
    grouped = _group_by_location(f for f in findings if f.source == "body" and f.category in rules)
    replacements: dict[Location, str] = {}
    entries: list[MaskedEntry] = []
    for location, located in grouped.items():
        path = located[0].path
        in_key = next((f for f in located if f.encoding == "key"), None)
        if in_key is not None:
            raise UnmaskableValue(in_key.path, in_key.category)
        value = document
        for step in location:
            value = _step(value, step, path)
        if type(value) is not str:
            raise ValueError(f"finding at `{path}` does not point at a string")
        masked, done = _mask_encoded(value, located, rules, hash_key)
        if masked != value:
            replacements[location] = masked
        _masked_entries(path, done, entries)
    return replacements, entries


def _mask_encoded(
    value: str,
    located: Sequence[PersonalDataFinding],
    rules: Mapping[str, MaskRule],
    key: bytes | None,
) -> tuple[str, list[tuple[str, MaskMethod]]]:
    """Mask the findings of one JSON string: as written, a `data:` URL, or a `b64` value."""
    _refuse_binary(located)
    if not any(finding.encoding.startswith("b64") for finding in located):
        return _mask_string(value, located, "", rules, key)
    try:
        data, form = decode_base64(value)
    except InvalidBase64:
        raise ValueError(f"finding at `{located[0].path}` does not match the document") from None
    new_data, done = _mask_bytes(data, located, "b64", rules, key)
    return (value, done) if new_data is None else (encode_base64(new_data, form), done)


def _refuse_binary(located: Sequence[PersonalDataFinding]) -> None:
    for finding in located:
        if finding.encoding == "binary":
            raise UnmaskableValue(finding.path, finding.category)


def _mask_bytes(
    data: bytes,
    located: Sequence[PersonalDataFinding],
    layer: str,
    rules: Mapping[str, MaskRule],
    key: bytes | None,
) -> tuple[bytes | None, list[tuple[str, MaskMethod]]]:
    """Mask decoded bytes that are text (None when nothing changed); the text keeps its
    encoding. Findings of `layer` are in the text, those of `layer+data_url` in a `data:` URL
    the text is."""
    payload = classify_bytes(data)
    if not isinstance(payload, TextPayload):
        raise UnmaskableValue(located[0].path, located[0].category)
    text, done = _mask_string(payload.text, located, layer, rules, key)
    if not done:
        return None, done
    return encode_text(payload, text), done


def _mask_string(
    text: str,
    located: Sequence[PersonalDataFinding],
    layer: str,
    rules: Mapping[str, MaskRule],
    key: bytes | None,
) -> tuple[str, list[tuple[str, MaskMethod]]]:
    """Mask a text whose findings have encoding `layer` (spans in `text`) or `layer` plus
    `data_url` (spans in the content of the `data:` URL that `text` is)."""
    inner = "data_url" if not layer else f"{layer}+data_url"
    here = [finding for finding in located if finding.encoding == layer]
    in_url = [finding for finding in located if finding.encoding == inner]
    done: list[tuple[str, MaskMethod]] = []
    if in_url:
        data_url = parse_data_url(text)
        if data_url is None:
            raise ValueError(f"finding at `{in_url[0].path}` does not match the document")
        new_data, done = _mask_bytes(data_url.data, in_url, inner, rules, key)
        if new_data is not None:
            # The header is a prefix the new content leaves in place: `here` spans still fit.
            text = data_url.with_data(new_data)
    text, more = mask_text(text, _hits(here), rules, hash_key=key)
    done.extend(entry for entry in more if entry not in done)
    return text, done


def mask_byte_values(
    values: Mapping[Location, bytes],
    findings: Findings | Iterable[PersonalDataFinding],
    rules: Mapping[str, MaskRule],
    *,
    hash_key: bytes | None = None,
) -> tuple[dict[Location, bytes], list[MaskedEntry]]:
    """The new bytes of every value of `values` (as `scan_byte_values` read them) that a
    finding with a rule masks, and the masked list; the text keeps its encoding. Raises
    `UnmaskableValue` for a finding to mask inside bytes that are not text."""
    grouped = _group_by_location(f for f in findings if f.source == "body" and f.category in rules)
    replacements: dict[Location, bytes] = {}
    entries: list[MaskedEntry] = []
    for location, located in grouped.items():
        data = values.get(location)
        if data is None:
            raise ValueError(f"finding at `{located[0].path}` does not match the values")
        _refuse_binary(located)
        new_data, done = _mask_bytes(data, located, "bytes", rules, hash_key)
        if new_data is not None:
            replacements[location] = new_data
        _masked_entries(located[0].path, done, entries)
    return replacements, entries


def apply_masks(
    document: Any,
    findings: Findings | Iterable[PersonalDataFinding],
    rules: Mapping[str, MaskRule],
    *,
    hash_key: bytes | None = None,
) -> tuple[Any, list[MaskedEntry]]:
    """Mask the body `findings` whose category has a rule; return a new document.

    The same as `mask_values`, with the new strings put into a copy of `document` (only the
    containers on the path to a masked string are copied).
    """
    replacements, entries = mask_values(document, findings, rules, hash_key=hash_key)
    if not replacements:
        return document, entries
    result = _shallow_copy(document)
    copied: set[int] = {id(result)}
    for location, masked in replacements.items():
        if not location:
            result = masked
            continue
        parent = result
        for step in location[:-1]:
            child = _step(parent, step, "")
            if id(child) not in copied:
                child = _shallow_copy(child)
                copied.add(id(child))
                parent[step] = child
            parent = child
        parent[location[-1]] = masked
    return result, entries


def _hits(findings: Iterable[PersonalDataFinding]) -> list[tuple[str, int, int]]:
    return [(finding.category, finding.start, finding.end) for finding in findings]


def _shallow_copy(value: Any) -> Any:
    if type(value) is dict:
        return dict(value)
    if type(value) is list:
        return list(value)
    return value


def _step(container: Any, step: str | int, path: str) -> Any:
    try:
        if type(container) is dict and type(step) is str:
            return container[step]
        if type(container) is list and type(step) is int:
            return container[step]
    except (KeyError, IndexError):
        pass
    raise ValueError(f"finding at `{path}` does not match the document")


def mask_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    findings: Findings | Iterable[PersonalDataFinding],
    rules: Mapping[str, MaskRule],
    *,
    hash_key: bytes | None = None,
) -> tuple[list[tuple[str, str]], list[MaskedEntry]]:
    """Mask header findings (from `scan_headers` on the same `headers`); returns header pairs."""
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    grouped = _group_by_location(
        f for f in findings if f.source == "header" and f.category in rules
    )
    entries: list[MaskedEntry] = []
    for location, located in grouped.items():
        index = location[0] if location else None
        if type(index) is not int or not 0 <= index < len(pairs):
            raise ValueError(f"finding at `{located[0].path}` does not match the headers")
        name, value = pairs[index]
        masked, done = mask_text(value, _hits(located), rules, hash_key=hash_key)
        pairs[index] = (name, masked)
        _masked_entries(located[0].path, done, entries)
    return pairs, entries
