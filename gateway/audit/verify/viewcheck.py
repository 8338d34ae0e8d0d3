"""The views of a bundle made again from its records (mechanics): the JSONL view, the CSV
view and the HTML report, hashed, to be compared with the bundle's files.

Rule 1: the views are functions of the records and the manifest (`gateway.audit.views`),
so equal digests prove a view says what the records say.
Rule 2 (work shared between two processes): the JSONL view and the report are fed from
the record pass, from the records it already parsed (a record's JSONL line is its stored
canonical bytes); the CSV view, which costs most, is made in a helper process
(`gateway.audit.apart`) reading the same records meanwhile. Small bundles make it here;
a helper that fails changes nothing: the CSV is then made here.
Rule 3: when a record line does not parse, no view is compared (the record checks
report the line; views of broken records mean nothing).
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
from gateway.audit.report import ReportTally, render_tally
from gateway.audit.storage import COSIGNED_FILE, LineBlocks
from gateway.audit.verify.sources import file_sha256
from gateway.audit.verify.stream import Source
from gateway.audit.verify.trust import Run
from gateway.audit.views import ViewBuilder, csv_chunks, head_facts

__all__ = ["PARALLEL_VIEWS_BYTES", "ViewCheck", "csv_digest_task", "expected_csv_digest"]

#: A bundle with more record bytes than this has its CSV view made again in a second
#: process while this one checks the records: the two passes are independent, so on two
#: cores they overlap. Smaller bundles do both here (a process costs a fraction of a second).
PARALLEL_VIEWS_BYTES = 64 << 20

_JSONL, _CSV, _REPORT = "views/records.jsonl", "views/records.csv", "report.html"


class _DigestSink:
    """A view that is hashed, not kept."""

    def __init__(self, digest: Any) -> None:
        self.write = digest.update


class _Records:
    """The records of every stored line, one block of lines at a time (memory stays at
    a block whatever the bundle's size); `broken` when a line did not parse."""

    def __init__(self, record_files: Sequence[tuple[str, Path]]) -> None:
        self.record_files = record_files
        self.broken = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loads, body_of = orjson.loads, record_bytes_of_line
        for _label, record_path in self.record_files:
            for block in LineBlocks(record_path):
                for line in block:
                    body = body_of(line)
                    try:
                        record = loads(body) if body is not None else None
                    except orjson.JSONDecodeError:
                        record = None
                    if type(record) is not dict:
                        self.broken = True
                        return
                    yield record


def _add_all(views: ViewBuilder, record_files: Sequence[tuple[str, Path]]) -> bool:
    """Every record to `views` (the loop of `_Records` without a generator's cost per
    record); False when a line does not parse."""
    loads, body_of, add = orjson.loads, record_bytes_of_line, views.add
    for _label, record_path in record_files:
        for block in LineBlocks(record_path):
            for line in block:
                body = body_of(line)
                try:
                    record = loads(body) if body is not None else None
                except orjson.JSONDecodeError:
                    return False
                if type(record) is not dict:
                    return False
                add(record)
    return True


def expected_csv_digest(record_files: Sequence[tuple[str, Path]]) -> str | None:
    """SHA-256 (hex) of the CSV view as made from the records, or None when a record
    does not parse."""
    digest = hashlib.sha256()
    views = ViewBuilder(None, _DigestSink(digest), tally=False)
    if not _add_all(views, record_files):
        return None
    views.finish()
    if views.csv_complete:
        return digest.hexdigest()
    # A record with a field the first one lacked: again, with every column.
    digest = hashlib.sha256()
    for piece in csv_chunks(_Records(record_files), views.columns()):
        digest.update(piece)
    return digest.hexdigest()


class ViewCheck:
    """The comparison of a bundle's views with its records: the JSONL view and the
    report fed by the record pass (`ViewFeed`), the CSV view here or in a helper."""

    def __init__(self, run: Run, path: Path, src: Source, manifest: dict[str, Any]) -> None:
        self._path = path
        self._src = src
        self._helper: Apart | None = None
        self._done = True
        self._jsonl = hashlib.sha256()
        self._tally = ReportTally()
        #: The report's counter, fed by the record pass with each record it parsed.
        self.add = self._tally.add
        self._broken = False
        self.present = [
            r for r in (_JSONL, _CSV, _REPORT) if r in src.listed and (path / r).is_file()
        ]
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
        self._manifest = manifest
        src.views = self

    def start(self) -> None:
        """Start the helper that makes the CSV view, when the bundle is large."""
        if self._done or _CSV not in self.present:
            return
        size = sum(p.stat().st_size for _label, p in self._src.record_files)
        if size >= PARALLEL_VIEWS_BYTES:
            files = [(label, str(p)) for label, p in self._src.record_files]
            self._helper = Apart("verify-csv", [files])

    def other(self, raw: bytes) -> bytes | None:
        """A line the fast path did not parse: its record for the report, its record
        bytes for the JSONL view (None, and no view compared, when it has no record)."""
        body = record_bytes_of_line(raw)
        try:
            record = orjson.loads(body) if body is not None else None
        except orjson.JSONDecodeError:
            record = None
        if type(record) is not dict:
            self._broken = True
            return None
        self.add(record)
        return body

    def jsonl(self, bodies: list[bytes | None]) -> None:
        """The JSONL view of a block: its records' bytes, a line each."""
        if self._broken or None in bodies:
            self._broken = True
            return
        self._jsonl.update(b"\n".join(bodies))  # type: ignore[arg-type]
        self._jsonl.update(b"\n")

    def finish(self, run: Run) -> None:
        """Compare the views with the bundle's files (the CSV made here if the helper
        did not make it; the rest from the files if the record pass stopped early)."""
        if self._done:
            return
        if not self._src.streamed:
            self._feed_from_files()
        csv_digest = self._csv_digest() if _CSV in self.present else None
        self._done = True
        if self._broken or (_CSV in self.present and csv_digest is None):
            return
        expected = {_JSONL: self._jsonl.hexdigest(), _REPORT: self._report_digest()}
        if csv_digest is not None:
            expected[_CSV] = csv_digest
        for rel in self.present:
            actual = self._src.digests.get(rel) or file_sha256(self._path / rel)[0]
            if actual != expected[rel]:
                run.error(
                    "VIEW_MISMATCH",
                    f"`{rel}` is not the view of the bundle's records (made again and compared)",
                    str(self._path / rel),
                )

    def _feed_from_files(self) -> None:
        self._jsonl, self._tally, self._broken = hashlib.sha256(), ReportTally(), False
        self.add = self._tally.add
        for _label, record_path in self._src.record_files:
            for block in LineBlocks(record_path):
                self.jsonl([self.other(raw) for raw in block])

    def _csv_digest(self) -> str | None:
        if self._helper is not None:
            try:
                digest: str | None = self._helper.result()
                return digest
            except AuditError:
                pass  # made here instead
        return expected_csv_digest(self._src.record_files)

    def _report_digest(self) -> str:
        src, manifest, path = self._src, self._manifest, self._path
        notes_path, cosigned_path = path / "checkpoints.notes", path / COSIGNED_FILE
        range_to = src.range_to or 0
        head_root, witnesses = head_facts(
            notes_path.read_bytes() if notes_path.is_file() else b"",
            cosigned_path.read_bytes()
            if COSIGNED_FILE in src.listed and cosigned_path.is_file()
            else b"",
            range_to,
        )
        created, completeness = manifest.get("created"), manifest.get("completeness")
        report = render_tally(
            self._tally,
            origin=src.origin,
            range_from=src.start_size,
            range_to=range_to,
            completeness=completeness if isinstance(completeness, str) else "",
            created=created if isinstance(created, str) else "",
            filter_text=(
                json.dumps(src.filter.to_json()) if src.filter is not None else "none (contiguous)"
            ),
            head_root=head_root,
            witnesses=witnesses,
        )
        return hashlib.sha256(report.encode()).hexdigest()


def csv_digest_task(record_files: list[list[str]]) -> str | None:
    """The helper process's `verify-csv` task: the digest of the CSV view the records make."""
    return expected_csv_digest([(label, Path(path)) for label, path in record_files])
