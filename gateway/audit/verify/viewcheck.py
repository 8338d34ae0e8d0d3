"""The views of a bundle made again from its records (mechanics): the JSONL view, the CSV
view and the HTML report, hashed, to be compared with the bundle's files.

Rule 1: the views are functions of the records and the manifest (`gateway.audit.views`),
so equal digests prove a view says what the records say.
Rule 2: large bundles make them in a helper process (`gateway.audit.apart`) while this
one checks the records; a helper that fails changes nothing: the work is done here.
Rule 3: the records are read a block at a time and each parsed once for every view;
the JSONL line of a record is its stored canonical bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway import __version__
from gateway.audit.apart import Apart
from gateway.audit.chain import record_bytes_of_line
from gateway.audit.errors import AuditError
from gateway.audit.report import render_tally
from gateway.audit.storage import COSIGNED_FILE, LineBlocks
from gateway.audit.verify.sources import file_sha256
from gateway.audit.verify.stream import Source
from gateway.audit.verify.trust import Run
from gateway.audit.views import VIEW_FILES, ViewBuilder, csv_chunks, head_facts

__all__ = ["PARALLEL_VIEWS_BYTES", "ViewCheck", "expected_view_digests"]

#: A bundle with more record bytes than this has its views made again in a second
#: process while this one checks the records: the two passes are independent, so on two
#: cores they overlap. Smaller bundles do both here (a process costs a fraction of a second).
PARALLEL_VIEWS_BYTES = 64 << 20


class _DigestSink:
    """A view that is hashed, not kept."""

    def __init__(self, digest: Any) -> None:
        self.write = digest.update


class _Records:
    """The records of every stored line, one block of lines at a time (memory stays at
    a block whatever the bundle's size); `broken` when a line did not parse. With
    `jsonl`, each block's JSONL view (its lines' canonical record bytes) goes there, in
    one piece per block."""

    def __init__(self, record_files: Sequence[tuple[str, Path]], jsonl: Any = None) -> None:
        self.record_files = record_files
        self.broken = False
        self._jsonl = jsonl

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loads, body_of, jsonl = orjson.loads, record_bytes_of_line, self._jsonl
        for _label, record_path in self.record_files:
            for block in LineBlocks(record_path):
                bodies = [body_of(line) for line in block]
                if None in bodies:
                    self.broken = True
                    return
                if jsonl is not None:
                    jsonl.update(b"\n".join(bodies))  # type: ignore[arg-type]
                    jsonl.update(b"\n")
                for body in bodies:
                    try:
                        record = loads(body)  # type: ignore[arg-type]
                    except orjson.JSONDecodeError:
                        record = None
                    if type(record) is not dict:
                        self.broken = True
                        return
                    yield record


def expected_view_digests(
    path: Path, present: Sequence[str], record_files: Sequence[tuple[str, Path]],
    options: dict[str, Any],
) -> dict[str, str] | None:  # fmt: skip
    """SHA-256 (hex) of each view in `present` as made from the records, or None when a
    record does not parse (the record checks report it; its views mean nothing)."""
    notes_path, cosigned_path = path / "checkpoints.notes", path / COSIGNED_FILE
    head_root, witnesses = head_facts(
        notes_path.read_bytes() if notes_path.is_file() else b"",
        cosigned_path.read_bytes() if options["cosigned_listed"] and cosigned_path.is_file()
        else b"",
        options["range_to"],
    )  # fmt: skip
    # One pass makes the JSONL view, the report and (usually) the CSV; a second pass
    # makes the CSV only when a record has a field the first one lacked.
    jsonl_digest, csv_digest = hashlib.sha256(), hashlib.sha256()
    want_csv = "views/records.csv" in present
    views = ViewBuilder(None, _DigestSink(csv_digest) if want_csv else None, tally=True)
    records = _Records(record_files, jsonl_digest)
    add = views.add
    for record in records:
        add(record)
    if records.broken:
        return None
    views.finish()
    report = render_tally(
        views.tally, origin=options["origin"], range_from=options["range_from"],
        range_to=options["range_to"], completeness=options["completeness"],
        created=options["created"], filter_text=options["filter_text"], head_root=head_root,
        witnesses=witnesses,
    ).encode()  # fmt: skip
    digests = {
        "views/records.jsonl": jsonl_digest.hexdigest(),
        "report.html": hashlib.sha256(report).hexdigest(),
    }
    if want_csv:
        if not views.csv_complete:
            csv_digest = hashlib.sha256()
            for piece in csv_chunks(_Records(record_files), views.columns()):
                csv_digest.update(piece)
        digests["views/records.csv"] = csv_digest.hexdigest()
    return {rel: digests[rel] for rel in present}


class ViewCheck:
    """The comparison of a bundle's views with its records, here or in a helper."""

    def __init__(self, run: Run, path: Path, src: Source, manifest: dict[str, Any]) -> None:
        self._path = path
        self._src = src
        self._helper: Apart | None = None
        self._done = True
        self.present = [r for r in VIEW_FILES if r in src.listed and (path / r).is_file()]
        if not self.present:
            return
        if manifest.get("generator") != f"jurisgate {__version__}":
            run.warn(
                "VIEW_NOT_CHECKED",
                f"made by `{manifest.get('generator')}`: its views are not compared with the "
                "records; trust the records, not the views",
            )
            return
        self._done = False
        created, completeness = manifest.get("created"), manifest.get("completeness")
        export_filter = src.filter
        self._options: dict[str, Any] = {
            "origin": src.origin,
            "range_from": src.start_size,
            "range_to": src.range_to,
            "completeness": completeness if isinstance(completeness, str) else "",
            "created": created if isinstance(created, str) else "",
            "filter_text": (
                json.dumps(export_filter.to_json()) if export_filter is not None
                else "none (contiguous)"
            ),
            "cosigned_listed": COSIGNED_FILE in src.listed,
        }  # fmt: skip

    def start(self, run: Run) -> None:
        """Compare now when the bundle is small; else start a helper process."""
        if self._done:
            return
        size = sum(p.stat().st_size for _label, p in self._src.record_files)
        if size < PARALLEL_VIEWS_BYTES:
            self._compare(run, self._here())
            return
        files = [(label, str(p)) for label, p in self._src.record_files]
        self._helper = Apart("verify-views", [str(self._path), self.present, files, self._options])

    def _here(self) -> dict[str, str] | None:
        return expected_view_digests(
            self._path, self.present, self._src.record_files, self._options
        )

    def finish(self, run: Run) -> None:
        """Add the findings of the comparison (made here if the helper did not)."""
        if self._done:
            return
        expected: dict[str, str] | None
        if self._helper is None:
            expected = self._here()
        else:
            try:
                expected = self._helper.result()
            except AuditError:
                expected = self._here()
        self._compare(run, expected)

    def _compare(self, run: Run, expected: dict[str, str] | None) -> None:
        self._done = True
        if expected is None:
            return
        for rel in self.present:
            actual = self._src.digests.get(rel) or file_sha256(self._path / rel)[0]
            if actual != expected.get(rel):
                run.error(
                    "VIEW_MISMATCH",
                    f"`{rel}` is not the view of the bundle's records (made again and compared)",
                    str(self._path / rel),
                )
