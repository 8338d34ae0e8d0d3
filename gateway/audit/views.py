"""The people-facing views of a bundle (pure): JSONL, CSV and the HTML report, made from
the records alone so that `verify` can make them again and compare.

Rule 1: a view is a function of the bundle's records and its manifest (origin, range,
completeness, filter, creation time) and nothing else; the same inputs give the same
bytes, which is what lets a verifier prove that a view matches the verified records.
Rule 2 (CSV injection): a cell that a spreadsheet would run as a formula is quoted.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import orjson

from gateway.audit.errors import NoteError
from gateway.audit.note import parse_checkpoint_text, parse_note, split_notes
from gateway.audit.report import ReportTally, render_report

__all__ = [
    "VIEW_FILES",
    "ViewBuilder",
    "ViewSink",
    "csv_chunks",
    "csv_columns",
    "csv_view",
    "head_facts",
    "jsonl_lines",
    "jsonl_view",
    "render_views",
]

#: Bundle paths of the views, in the order they are written.
VIEW_FILES = ("views/records.jsonl", "views/records.csv", "report.html")
_LEADING_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_FIRST_COLUMNS = ["seq", "ts", "type", "decision_id", "tenant", "decision", "effect", "status",
                  "rules", "legal_basis", "juris"]  # fmt: skip


_FORMULA_STARTS = frozenset(_LEADING_FORMULA)


def _csv_cell(value: Any) -> str:
    kind = type(value)
    if value is None:
        return ""
    if kind is str:
        text: str = value
    elif kind is int or kind is bool:
        text = str(value)
    elif kind is list and all(not isinstance(v, (dict, list)) for v in value):
        text = ";".join("" if v is None else str(v) for v in value)
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    # SECURITY: spreadsheets execute cells starting with these; quote them as text.
    if text[:1] in _FORMULA_STARTS:
        text = "'" + text
    return text


def csv_columns(records: Iterable[dict[str, Any]]) -> list[str]:
    """The CSV view's columns: the common ones first, then every other field, sorted."""
    seen: set[str] = set()
    for record in records:
        seen.update(record)
    return _FIRST_COLUMNS + sorted(seen - set(_FIRST_COLUMNS))


def csv_chunks(records: Iterable[dict[str, Any]], columns: list[str]) -> Iterator[bytes]:
    """The CSV view in pieces (header first), for writing or hashing at any size."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    cell = _Cells()
    formula = _FORMULA_STARTS
    for count, record in enumerate(records, 1):
        # Most cells are plain strings: keep the function call for the others.
        writer.writerow(
            [
                v if type(v) is str and v[:1] not in formula else cell(v)
                for v in map(record.get, columns)
            ]
        )
        if count % 4096 == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


class _Cells:
    """CSV cells of values other than plain strings, remembered by their JSON bytes: a
    log repeats its lists (rules, legal bases) and numbers far more than it varies them."""

    _LIMIT = 8192

    def __init__(self) -> None:
        self._known: dict[bytes, str] = {}

    def __call__(self, value: Any) -> str:
        try:
            key = orjson.dumps(value)
        except TypeError:  # beyond plain JSON: no key, make it each time
            return _csv_cell(value)
        text = self._known.get(key)
        if text is None:
            if len(self._known) >= self._LIMIT:
                self._known.clear()
            # Equal JSON bytes mean equal values (order, types and all), so equal cells.
            text = self._known[key] = _csv_cell(value)
        return text


def _specials(text: str) -> int:
    """Commas, quotes and line feeds of `text`, counted in one number (each in its own
    bit range, so equal numbers mean equal counts of each)."""
    return text.count(",") + (text.count('"') << 20) + (text.count("\n") << 40)


def _quote_field(text: str) -> str:
    """`text` as the csv writer writes a field of a row of several fields."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([text, ""])
    return out.getvalue()[:-2]


class _QuotedCells:
    """CSV fields (quoted as the writer quotes them) of values other than plain strings,
    remembered by their JSON bytes; `specials` sums the separators of the fields handed
    out since it was last reset, so that a row can be checked with one count."""

    _LIMIT = 8192

    def __init__(self) -> None:
        self._known: dict[bytes, tuple[str, int]] = {}
        self.specials = 0

    def __call__(self, value: Any) -> str:
        try:
            key = orjson.dumps(value)
        except TypeError:  # beyond plain JSON: no key, make it each time
            field = _quote_field(_csv_cell(value))
            self.specials += _specials(field)
            return field
        found = self._known.get(key)
        if found is None:
            if len(self._known) >= self._LIMIT:
                self._known.clear()
            field = _quote_field(_csv_cell(value))
            found = self._known[key] = (field, _specials(field))
        self.specials += found[1]
        return found[0]


class ViewSink(Protocol):
    """Where a view's bytes go (a file, a digest, or both)."""

    def write(self, data: bytes, /) -> Any:
        """Take the next piece of the view."""


class ViewBuilder:
    """The JSONL view, the CSV view and the report's counters from one pass over the
    records, each record parsed once.

    The CSV columns are those of every record, known only at the end; the builder
    writes rows with the first record's columns and stays right as long as no record
    has a field the first lacked (`csv_complete`). When one does, the CSV stops and the
    caller makes it again with `columns()` in a second pass.

    Without a sink a view is not made (`tally=False`: nor the report's counters), so
    that two processes can share the views of one range.
    """

    _ROWS_PER_PIECE = 4096

    def __init__(
        self, jsonl: ViewSink | None, csv_out: ViewSink | None, *, tally: bool = True
    ) -> None:
        self.tally = ReportTally()
        self._count = tally
        self._jsonl = jsonl
        self._csv = csv_out
        self._keys: dict[str, None] = {}
        self._known: frozenset[str] | None = None
        self._columns: list[str] = []
        self._lines: list[str] = []
        self._commas = 0
        self._cells = _Cells()
        self._fields = _QuotedCells()
        self._text = io.StringIO()
        self._writer = csv.writer(self._text, lineterminator="\n")
        self.csv_complete = True

    def add(self, record: dict[str, Any], body: bytes | None = None) -> None:
        """Take the next record; `body`, when given, is its canonical JSON (the stored
        bytes it was parsed from), which is its JSONL line already."""
        if self._jsonl is not None:
            if body is None:
                body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
            self._jsonl.write(body + b"\n")
        if self._count:
            self.tally.add(record)
        if self._csv is None:
            return
        known = self._known
        if known is None:
            self._keys.update(dict.fromkeys(record))
            self._known = known = frozenset(record)
            self._columns = csv_columns([record])
            self._commas = len(self._columns) - 1
            self._write_row(self._columns)
        elif not self.csv_complete or not known.issuperset(record):
            self._keys.update(dict.fromkeys(record))
            self.csv_complete = False
            self._lines.clear()
            return
        if not self.csv_complete:
            return
        fields = self._fields
        fields.specials = 0
        values = list(map(record.get, self._columns))
        # Strings, missing fields and non-negative integers are their own cells; the rest
        # come ready-quoted from the cache, which counts their separators.
        line = ",".join(
            [
                v
                if type(v) is str
                else ""
                if v is None
                else str(v)
                if type(v) is int and v >= 0
                else fields(v)
                for v in values
            ]
        )
        # The writer makes the row when a string needs quoting (more separators than the
        # row's and the quoted cells'), may start a formula (checked on the whole line:
        # a cell starts the line or follows a comma), or holds a carriage return (Python
        # versions differ on quoting it).
        if (
            _specials(line) == self._commas + fields.specials
            and line[:1] not in _FORMULA_STARTS
            and ",=" not in line
            and ",+" not in line
            and ",-" not in line
            and ",@" not in line
            and ",\t" not in line
            and "\r" not in line
        ):
            self._lines.append(line + "\n")
        else:
            cell = self._cells
            self._write_row([cell(v) for v in values])
        if len(self._lines) >= self._ROWS_PER_PIECE:
            self._flush_rows()

    def _write_row(self, row: list[str]) -> None:
        self._writer.writerow(row)
        self._lines.append(self._text.getvalue())
        self._text.seek(0)
        self._text.truncate()

    def _flush_rows(self) -> None:
        if self._csv is not None:
            self._csv.write("".join(self._lines).encode())
        self._lines.clear()

    def finish(self) -> None:
        """Write what is buffered (the CSV header alone when there were no records)."""
        if self._known is None:
            self._write_row(csv_columns([]))
        if self.csv_complete:
            self._flush_rows()

    def columns(self) -> list[str]:
        """The CSV columns of every record taken so far."""
        return csv_columns([self._keys])


def csv_view(records: Sequence[dict[str, Any]]) -> bytes:
    """One row per record: the common columns first, then every other field, sorted."""
    return b"".join(csv_chunks(records, csv_columns(records)))


def jsonl_lines(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """The JSONL view line by line."""
    for record in records:
        yield orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"


def jsonl_view(records: Sequence[dict[str, Any]]) -> bytes:
    """One JSON object per line, keys sorted (the records without their signatures)."""
    return b"".join(jsonl_lines(records))


def head_facts(checkpoints: bytes, cosigned: bytes, size: int) -> tuple[str, list[str]]:
    """The root (base64) of the first checkpoint at `size` in a bundle's notes, and the
    names on cosignatures (Ed25519 cosignature/v1: 8 + 64 bytes) of checkpoints at that
    size in its cosigned file. As the bundle states them: `verify` checks them."""
    root = ""
    for _offset, raw in split_notes(checkpoints)[0]:
        try:
            checkpoint = parse_checkpoint_text(parse_note(raw).text)
        except NoteError:
            continue
        if checkpoint.size == size:
            root = base64.b64encode(checkpoint.root).decode()
            break
    names: set[str] = set()
    for _offset, raw in split_notes(cosigned)[0]:
        try:
            note = parse_note(raw)
            checkpoint = parse_checkpoint_text(note.text)
        except NoteError:
            continue
        if checkpoint.size == size:
            names.update(sig.name for sig in note.signatures if len(sig.signature) == 72)
    return root, sorted(names)


def render_views(
    records: Sequence[dict[str, Any]],
    *,
    origin: str,
    range_from: int,
    range_to: int,
    completeness: str,
    created: str,
    filter_text: str,
    head_root: str = "",
    witnesses: Sequence[str] = (),
) -> dict[str, bytes]:
    """Every view of a bundle, keyed by its path in the bundle."""
    report = render_report(
        records,
        origin=origin,
        range_from=range_from,
        range_to=range_to,
        completeness=completeness,
        created=created,
        filter_text=filter_text,
        head_root=head_root,
        witnesses=witnesses,
    )
    return {
        "views/records.jsonl": jsonl_view(records),
        "views/records.csv": csv_view(records),
        "report.html": report.encode(),
    }
