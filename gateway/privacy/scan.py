"""Scanning: every string value of a JSON document (and selected headers) through the detectors.

Rule 1 — string values and object keys are scanned; numbers and booleans are not. A key that
holds personal data is reported (encoding `key`: it cannot be masked without changing what the
document means) and is written as `[key]` in every path, so no path in an audit record
repeats it.

Rule 2 — what the backend decodes is decoded first: a `{"b64": "..."}` object (TF Serving's
binary form, exactly one key with a string value) and a base64 `data:` URL are scanned as
the text they carry (`privacy/encoded.py`). Bytes that are not text are listed in
`Findings.binary` with their media type, and their readable runs are still scanned (findings
with `encoding="binary"`, which can be reported but not masked). A `b64` value that is not
base64 is listed in `Findings.undecodable`: the gateway refuses what it cannot read. Nothing
else is skipped: random base64 that happens to look like a card number is handled by the
validators and the budget, not by not looking.

Rule 3 — detectors read a normalised view of each string (`privacy/normalize.py`: invisible
and control characters removed, compatibility forms folded) and every span is mapped back
to the original characters.

Rule 4 — overlapping spans in one string are resolved by detector priority (an IBAN is not
also a phone number); the losers are dropped, so each character belongs to at most one
finding.

Rule 5 — the walk is iterative (no recursion limit) and document order is kept.

Rule 6 — work is paid from a budget (`DEFAULT_SCAN_BUDGET` units of about 10 us). When it
runs out the scan stops and `Findings.complete` is False: the caller must then refuse the
request, since the unscanned rest may hold personal data.

Speed: an ASCII string shorter than any value, or with too few digits and no marker
character (`@`), costs one `encode` and one `translate`; a detector runs only when the string
holds a digit run as long as its values need; lists of numbers (tensors) are recognised by
one `orjson.dumps` without walking their elements. Given the body's string values up front
(`strictjson.parse_body`, which gives them only for bodies without `b64` objects), a document
whose strings hold nothing is not walked at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import orjson

from gateway.jsonpath import json_path
from gateway.privacy.detector import Detector, ScanBudgetExceeded, ScanState, Span, SpanSet
from gateway.privacy.detectors import DEFAULT_DETECTORS
from gateway.privacy.encoded import (
    InvalidBase64,
    TextPayload,
    classify_bytes,
    decode_base64,
    parse_data_url,
    readable_text,
)
from gateway.privacy.findings import (
    BinaryInput,
    Encoding,
    Findings,
    Location,
    PersonalDataFinding,
    header_path,
)
from gateway.privacy.normalize import normalise

__all__ = ["DEFAULT_SCAN_BUDGET", "scan", "scan_byte_values", "scan_headers", "scan_text"]

_DIGITS: Final = b"0123456789"
#: The shortest value any detector reports (`a@b.cd`).
_SHORTEST_VALUE: Final = 6
#: Work units one scan may spend (about 10 microseconds each): at most about half a second of
#: CPU for a hostile body on a small machine. A note with a phone number costs about 100
#: units, so batches of a few hundred such notes still scan completely.
DEFAULT_SCAN_BUDGET: Final = 50_000


@dataclass(frozen=True)
class _Plan:
    """Detectors compiled for scanning: priority order and the cheap pre-filter."""

    detectors: tuple[Detector, ...]
    min_digits: int
    markers: tuple[str, ...]
    entries: tuple[tuple[int, str | None, str, Callable[[str, ScanState], Iterable[Span]]], ...]

    def find(self, text: str, state: ScanState) -> tuple[list[tuple[str, int, int]], bool]:
        """Hits in `text` and whether the text was scanned completely."""
        if len(text) < _SHORTEST_VALUE and text.isascii():
            return [], True
        view = normalise(text)
        if view is not None:
            hits, complete = self._find(view.text, state)
            return [(c, *view.original_span(start, end)) for c, start, end in hits], complete
        return self._find(text, state)

    def _find(self, text: str, state: ScanState) -> tuple[list[tuple[str, int, int]], bool]:
        if len(text) < _SHORTEST_VALUE:
            return [], True
        encoded = text.encode("utf-8", "surrogatepass")
        digits = len(encoded) - len(encoded.translate(None, _DIGITS))
        if digits < self.min_digits and not any(marker in text for marker in self.markers):
            return [], True
        run = _longest_digit_run(encoded) if digits >= self.min_digits else 0
        taken = state.taken = SpanSet()
        complete = True
        try:
            for min_digits, marker, category, find in self.entries:
                if run < min_digits or (marker is not None and marker not in text):
                    continue
                for start, end in find(text, state):
                    taken.add(start, end, category)
        except ScanBudgetExceeded:
            complete = False
        return taken.hits(), complete


def _plan_for(detectors: Sequence[Detector]) -> _Plan:
    """The plan of `detectors`; the same sequence object (the defaults, a compiled policy's
    set) finds its plan by identity, without hashing every detector on every scan."""
    cached = _PLANS_BY_IDENTITY.get(id(detectors))
    if cached is not None and cached[0] is detectors:
        return cached[1]
    plan = _plan(tuple(detectors))
    if len(_PLANS_BY_IDENTITY) < _PLANS_KEPT:
        # The entry holds the sequence, so its id cannot be reused while it is here.
        _PLANS_BY_IDENTITY[id(detectors)] = (detectors, plan)
    return plan


_PLANS_KEPT: Final = 64
_PLANS_BY_IDENTITY: dict[int, tuple[Sequence[Detector], _Plan]] = {}


@lru_cache(maxsize=_PLANS_KEPT)
def _plan(detectors: tuple[Detector, ...]) -> _Plan:
    ordered = tuple(sorted(detectors, key=lambda detector: detector.priority))
    unmarked = [detector.min_digits for detector in ordered if detector.marker is None]
    markers = tuple(sorted({d.marker for d in ordered if d.marker is not None}))
    entries = tuple((d.min_digits, d.marker, d.category, d.find) for d in ordered)
    return _Plan(ordered, min(unmarked, default=1 << 30), markers, entries)


_RUN_SEPARATORS: Final = b" .-/()"
_DIGIT_BYTES_RUN: Final = re.compile(rb"[0-9]+")


def _longest_digit_run(encoded: bytes) -> int:
    """An upper bound of the digits in the longest run (see `Detector.min_digits`).

    Dropping every separator byte joins more than the runs a detector accepts, so the bound
    can only be too high: the scanner then runs a detector for nothing, never skips one.
    """
    runs = _DIGIT_BYTES_RUN.findall(encoded.translate(None, _RUN_SEPARATORS))
    return max(map(len, runs), default=0)


def _normalise_hints(region_hints: Iterable[str]) -> tuple[str, ...]:
    hints: list[str] = []
    for hint in region_hints:
        if isinstance(hint, str) and hint and hint not in hints:
            hints.append(hint)
    return tuple(hints)


def _is_b64_object(value: dict[Any, Any]) -> bool:
    return len(value) == 1 and type(value.get("b64")) is str


def _numbers_only(value: list[Any]) -> bool:
    """Whether a list holds no strings and no objects, at any depth (cheap for tensors)."""
    if value and type(value[0]) in (dict, str):
        return False  # rows of objects or strings: walk them instead of serialising
    try:
        return b'"' not in orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return False


def scan(
    document: Any,
    detectors: Sequence[Detector] = DEFAULT_DETECTORS,
    *,
    region_hints: Iterable[str] = (),
    budget: int = DEFAULT_SCAN_BUDGET,
    value_strings: Sequence[str] | None = None,
) -> Findings:
    """Findings of `detectors` in every string value of `document` (a parsed JSON value).

    `region_hints` are region codes (`CN`, `US-CA`) used by detectors that depend on where a
    value was written, such as national phone numbers; pass the caller, data-subject and
    tenant regions. When `budget` runs out the scan stops and `Findings.complete` is False.

    `value_strings`, when given, must be every string value and every object key of
    `document` (as `strictjson.parse_body` reads them from the raw body) and `document` must
    hold no `{"b64": ...}` object. When none of them holds a finding (and none is a `data:` URL) the
    document is not walked at all: the walk scans those same strings, so it could not find
    anything either. Otherwise the walk runs as usual and says where each finding is.
    """
    plan = _plan_for(detectors)
    hints = _normalise_hints(region_hints)
    if value_strings is not None and _nothing_in(plan, value_strings, hints, budget):
        return Findings(())
    walk = _Walk(plan, ScanState(hints, budget))
    if type(document) is str:
        walk.string(document, ())
        return walk.findings()
    if type(document) is dict and _is_b64_object(document):
        walk.b64(document["b64"], ("b64",))
        return walk.findings()
    root = _children(document)
    if root is None:
        return Findings(())
    _walk_containers(walk, root)
    return walk.findings()


def _walk_containers(walk: _Walk, root: Iterator[tuple[str | int, Any]]) -> None:
    """Scan every key and string under `root`, depth first, until the walk says stop."""
    steps: list[str | int] = []
    stack: list[Iterator[tuple[str | int, Any]]] = [root]
    while stack:
        for key, child in stack[-1]:
            kind = type(child)
            if type(key) is str and not walk.key(key, (*steps, key)):
                return
            if kind is str:
                if not walk.string(child, (*steps, key)):
                    return
            elif kind is dict:
                if _is_b64_object(child):
                    if not walk.b64(child["b64"], (*steps, key, "b64")):
                        return
                    continue
                steps.append(key)
                stack.append(_dict_items(child))
                break
            elif kind is list:
                if isinstance(key, str) and _numbers_only(child):
                    continue
                steps.append(key)
                stack.append(enumerate(child))
                break
        else:
            stack.pop()
            if steps:
                steps.pop()


class _Walk:
    """The findings of one document scan as they accumulate (see the module rules)."""

    __slots__ = (
        "binary",
        "clean_keys",
        "found",
        "plan",
        "sensitive_keys",
        "state",
        "undecodable",
        "unscanned",
    )

    def __init__(self, plan: _Plan, state: ScanState) -> None:
        self.plan = plan
        self.state = state
        self.found: list[PersonalDataFinding] = []
        self.unscanned: list[str] = []
        self.binary: list[BinaryInput] = []
        self.undecodable: list[str] = []
        #: Object keys that hold personal data: never written into a path.
        self.sensitive_keys: set[str] = set()
        #: Keys already scanned and found empty (the same keys repeat in every instance).
        self.clean_keys: set[str] = set()

    def path(self, location: Location) -> str:
        """`json_path(location)`, with keys that hold personal data replaced by `[key]`.

        Paths go into the audit record, which must never hold a personal-data value.
        """
        if not self.sensitive_keys or not any(step in self.sensitive_keys for step in location):
            return json_path(location)
        return json_path(
            tuple("[key]" if step in self.sensitive_keys else step for step in location)
        )

    def key(self, key: str, location: Location) -> bool:
        """An object key: a model may read it (a feature name), so it is scanned too."""
        if key in self.clean_keys:
            return True
        hits, complete = self.plan.find(key, self.state)
        if not hits and complete:
            self.clean_keys.add(key)
        if hits:
            self.sensitive_keys.add(key)
            path = self.path(location)
            self.found.extend(
                PersonalDataFinding(cat, path, start, end, location, "body", "key")
                for cat, start, end in hits
            )
        if not complete:
            self.unscanned.append(self.path(location))
        return complete

    def findings(self) -> Findings:
        return Findings(
            tuple(self.found), tuple(self.unscanned), tuple(self.binary), tuple(self.undecodable)
        )

    def text(self, text: str, location: Location, encoding: Encoding) -> bool:
        """Scan one text; False when the budget ran out (the walk must stop)."""
        hits, complete = self.plan.find(text, self.state)
        if hits or not complete:
            path = self.path(location)
            self.found.extend(
                PersonalDataFinding(cat, path, start, end, location, "body", encoding)
                for cat, start, end in hits
            )
            if not complete:
                self.unscanned.append(path)
        return complete

    def string(self, value: str, location: Location) -> bool:
        """A JSON string value: as written, or a `data:` URL's header and decoded content."""
        if value[:5].lower() == "data:":
            data_url = parse_data_url(value)
            if data_url is not None:
                # The header is text the model reads too (`data:text/plain;ref=<number>,`).
                return self.text(data_url.header, location, "") and self.data(
                    data_url.data, location, "data_url"
                )
        return self.text(value, location, "")

    def b64(self, value: str, location: Location) -> bool:
        """The value of a `{"b64": ...}` object, decoded as the backend decodes it."""
        try:
            data, _ = decode_base64(value)
        except InvalidBase64:
            self.undecodable.append(self.path(location))
            return True
        return self.data(data, location, "b64")

    def data(self, data: bytes, location: Location, encoding: Encoding) -> bool:
        payload = classify_bytes(data)
        if isinstance(payload, TextPayload):
            text = payload.text
            if encoding in ("b64", "bytes") and text[:5].lower() == "data:":
                data_url = parse_data_url(text)
                if data_url is not None:
                    # A `data:` URL in decoded bytes: its header here, its content decoded.
                    inner: Encoding = "b64+data_url" if encoding == "b64" else "bytes+data_url"
                    return self.text(data_url.header, location, encoding) and self.data(
                        data_url.data, location, inner
                    )
            return self.text(text, location, encoding)
        path = self.path(location)
        self.binary.append(BinaryInput(path, payload.media_type, payload.size))
        return self.text(readable_text(data), location, "binary")


def scan_byte_values(
    values: Iterable[tuple[Location, bytes]],
    detectors: Sequence[Detector] = DEFAULT_DETECTORS,
    *,
    region_hints: Iterable[str] = (),
    budget: int = DEFAULT_SCAN_BUDGET,
) -> Findings:
    """Findings in byte strings the model reads as they are (gRPC `string_val`, a
    `tf.Example`'s `bytes_list`), each with the location it will be reported at.

    Bytes that are text are scanned like a decoded `b64` value (findings with encoding
    `bytes`); other bytes are listed in `Findings.binary` and their readable runs scanned.
    """
    walk = _Walk(_plan_for(detectors), ScanState(_normalise_hints(region_hints), budget))
    for location, data in values:
        if not walk.data(data, location, "bytes"):
            break
    return walk.findings()


def _nothing_in(plan: _Plan, texts: Sequence[str], hints: tuple[str, ...], budget: int) -> bool:
    """True when no text holds a finding and all of them were scanned within `budget`."""
    state = ScanState(hints, budget)
    for text in texts:
        if text[:5].lower() == "data:":
            return False  # its content is decoded by the walk
        hits, complete = plan.find(text, state)
        if hits or not complete:
            return False
    return True


def _children(value: Any) -> Iterator[tuple[str | int, Any]] | None:
    if type(value) is dict:
        return None if _is_b64_object(value) else _dict_items(value)
    if type(value) is list:
        return None if _numbers_only(value) else enumerate(value)
    return None


def _dict_items(value: dict[Any, Any]) -> Iterator[tuple[str | int, Any]]:
    # Keys of parsed JSON are strings; other keys cannot be addressed by a path and are skipped.
    return ((key, child) for key, child in value.items() if type(key) is str)


def scan_text(
    text: str,
    detectors: Sequence[Detector] = DEFAULT_DETECTORS,
    *,
    region_hints: Iterable[str] = (),
    budget: int = DEFAULT_SCAN_BUDGET,
) -> list[tuple[str, Span]]:
    """`(category, span)` pairs found in one string; raises `ScanBudgetExceeded` when the
    budget runs out (a partial answer would read as "nothing else there")."""
    state = ScanState(_normalise_hints(region_hints), budget)
    hits, complete = _plan_for(detectors).find(text, state)
    if not complete:
        raise ScanBudgetExceeded
    return [(category, (start, end)) for category, start, end in hits]


def scan_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    names: Iterable[str],
    detectors: Sequence[Detector] = DEFAULT_DETECTORS,
    *,
    region_hints: Iterable[str] = (),
    budget: int = DEFAULT_SCAN_BUDGET,
) -> Findings:
    """Findings in the values of the headers called `names` (case-insensitive).

    `headers` may be a mapping (a multidict's `items()` yields repeated headers) or a list of
    pairs; a finding's `location` is `(index of the header line,)` in that order.
    """
    wanted = {name.lower() for name in names}
    plan = _plan_for(detectors)
    state = ScanState(_normalise_hints(region_hints), budget)
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    findings: list[PersonalDataFinding] = []
    for index, (name, value) in enumerate(pairs):
        if name.lower() not in wanted or not isinstance(value, str):
            continue
        path = header_path(name)
        hits, complete = plan.find(value, state)
        findings.extend(
            PersonalDataFinding(category, path, start, end, (index,), "header")
            for category, start, end in hits
        )
        if not complete:
            return Findings(tuple(findings), (path,))
    return Findings(tuple(findings))
