"""Export bundles an auditor verifies offline (I/O shell; reads the log, never writes it).

Rule 1: the range [a, b] is cut at checkpointed sizes: a is the largest checkpoint size at
or before the first record of the time window, b the smallest at or after its last one.
A contiguous export therefore proves completeness with the checkpoints alone; a filtered
export carries one inclusion proof per record and says `completeness: not-proven`.

Rule 2: the bundle is written to a temporary directory and renamed into place, so a
half-written bundle never appears under the requested name.

Rule 3 (contiguous exports stream): the log is read a block of lines at a time, once;
each line goes to records/, its record bytes to the JSONL view, and is parsed once for
the report and the CSV view. Large ranges make the CSV view in a helper process.

See `gateway.audit.bundle` for the layout and `gateway.audit.bundle_write` for the files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.apart import Apart
from gateway.audit.bundle import ExportFilter
from gateway.audit.bundle_write import (
    HashingFile,
    ManifestClaims,
    finish,
    refuse_secret,
    verify_text,
    write_file,
    write_revisions,
)
from gateway.audit.chain import record_bytes_of_line
from gateway.audit.errors import AuditError, NoteError
from gateway.audit.keyring import Keyring, KeyringEntry
from gateway.audit.merkle import CompactRange, TreeHashes, inclusion_proof, leaf_hash
from gateway.audit.note import Checkpoint, parse_checkpoint_text, parse_note, split_notes
from gateway.audit.record import format_ts, parse_ts
from gateway.audit.report import render_tally
from gateway.audit.signing import Signer
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    COSIGNED_FILE,
    PRUNED_FILE,
    READ_BLOCK,
    LineBlocks,
    StartState,
    list_segments,
    read_meta,
    segment_name,
    split_lines,
)
from gateway.audit.views import ViewBuilder, csv_chunks, head_facts, render_views

__all__ = ["ExportResult", "csv_view_task", "export_bundle", "refuse_secret"]

#: Ranges of at least this many records make their CSV view in a second process (the
#: other views and records/ are made here meanwhile); smaller ones make it here.
PARALLEL_CSV = 200_000


@dataclass(frozen=True)
class ExportResult:
    """Where the bundle went and what it covers."""

    path: Path
    origin: str
    range_from: int
    range_to: int
    records: int
    completeness: str
    manifest_sha256: str

    def record_fields(self) -> dict[str, Any]:
        """Fields for the log's `export` record."""
        return {
            "range_from": self.range_from,
            "range_to": self.range_to,
            "records": self.records,
            "completeness": self.completeness,
            "manifest_sha256": self.manifest_sha256,
        }


@dataclass(frozen=True)
class _Job:
    """One export: the log, where the bundle goes and what it should hold."""

    directory: Path
    target: Path
    signer: Signer
    segment_records: int
    origin: str
    created: str
    from_ts: str | None
    to_ts: str | None
    checkpoints: list[tuple[Checkpoint, bytes]]
    base_state: StartState | None
    keyring: Keyring
    export_filter: ExportFilter

    @property
    def base(self) -> int:
        """The first stored seq (after pruning)."""
        return self.base_state.size if self.base_state is not None else 0

    def claims(self, a: int, b: int, records: int) -> ManifestClaims:
        """The manifest's claims for the range [a, b)."""
        return ManifestClaims(self.origin, a, b, self.from_ts, self.to_ts, self.export_filter,
                              records, self.created)  # fmt: skip


class _ShortLog(Exception):
    """The stored lines end before a checkpoint's size: cut the range at the lines."""


def export_bundle(
    log_dir: str | Path,
    out: str | Path,
    signer: Signer,
    *,
    from_ts: str | None = None,
    to_ts: str | None = None,
    export_filter: ExportFilter | None = None,
    keyring: Keyring | None = None,
    now: datetime | None = None,
) -> ExportResult:
    """Write an offline-verifiable bundle of the records of `log_dir` with
    from_ts <= ts < to_ts (RFC 3339; either may be None), optionally filtered.

    `signer` signs the manifest; it must be a key the auditor's keyring trusts for the
    log's origin. Raises `AuditError` when the log has no checkpoint or the window no
    records.
    """
    directory = Path(log_dir)
    target = Path(out)
    meta = read_meta(directory)
    if meta is None:
        raise AuditError(f"{directory}: not an audit log directory (no LOG.json)")
    if target.exists():
        raise AuditError(f"{target}: already exists; choose a new --out path")
    base_state: StartState | None = None
    if (directory / PRUNED_FILE).exists():
        base_state = StartState.from_json(json.loads((directory / PRUNED_FILE).read_text()))
    job = _Job(
        directory, target, signer, meta.segment_records, meta.origin,
        format_ts(now or datetime.now(UTC)),
        # Normalised, so that string comparison with record timestamps is time order.
        format_ts(parse_ts(from_ts)) if from_ts else None,
        format_ts(parse_ts(to_ts)) if to_ts else None,
        _own_checkpoints(directory, meta.origin), base_state,
        keyring or Keyring([KeyringEntry(signer.verifier, (meta.base_origin,))]),
        export_filter or ExportFilter(),
    )  # fmt: skip
    if job.export_filter.empty:
        return _export_contiguous(job)
    return _export_filtered(job)


def _own_checkpoints(directory: Path, origin: str) -> list[tuple[Checkpoint, bytes]]:
    """The log's checkpoints of its own origin, as parsed and as stored."""
    checkpoints: list[tuple[Checkpoint, bytes]] = []
    cp_path = directory / CHECKPOINTS_FILE
    notes, _end = split_notes(cp_path.read_bytes()) if cp_path.exists() else ([], 0)
    for _offset, raw in notes:
        try:
            checkpoint = parse_checkpoint_text(parse_note(raw).text)
        except NoteError:
            continue
        if checkpoint.origin == origin:
            checkpoints.append((checkpoint, raw))
    return checkpoints


def _cut(sizes: list[int], lo: int, hi: int, base: int) -> tuple[int, int]:
    """The checkpointed range [a, b) around the records [lo, hi)."""
    a = max([s for s in sizes if s <= lo] + ([0] if base == 0 else []))
    b = min(s for s in sizes if s >= hi)
    return a, b


def _fresh_tmp(target: Path) -> Path:
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _export_filtered(job: _Job) -> ExportResult:
    """A filtered export: every selected record gets an inclusion proof, so this path
    holds the range's leaves (and records) in memory."""
    base, directory = job.base, job.directory
    lines: list[bytes] = []
    for first, path in list_segments(directory):
        if first < base:
            continue
        if first != base + len(lines):
            break
        complete, _tail = split_lines(path.read_bytes())
        lines.extend(complete)
    sizes = sorted(
        {cp.size for cp, _raw in job.checkpoints if base <= cp.size <= base + len(lines)}
    )
    if not sizes:
        raise AuditError(f"{directory}: no checkpoint covers the records yet")
    records = [
        orjson.loads(record_bytes_of_line(line) or b"{}") for line in lines[: sizes[-1] - base]
    ]
    stamps = [str(r.get("ts", "")) for r in records]
    lo, hi = _window(stamps, job.from_ts, job.to_ts)
    a, b = _cut(sizes, base + lo, base + hi, base)
    leaves = [leaf_hash(record_bytes_of_line(line) or line) for line in lines[: b - base]]
    tree = TreeHashes(leaves, job.base_state.compact if job.base_state is not None else None)
    selected = [seq for seq in range(a, b) if job.export_filter.matches(records[seq - base])]
    tmp = _fresh_tmp(job.target)
    listing: list[dict[str, Any]] = []
    try:
        chunks: dict[int, list[bytes]] = {}
        for seq in selected:
            chunk_start = max(a, seq - seq % job.segment_records)
            chunks.setdefault(chunk_start, []).append(lines[seq - base] + b"\n")
        for chunk_start, chunk in sorted(chunks.items()):
            write_file(tmp, f"records/{segment_name(chunk_start)}", b"".join(chunk), listing)
        cp_bytes, cosigned = _write_notes(job, tmp, listing, a, b)
        proof_lines = [
            orjson.dumps({"seq": seq, "proof": [h.hex() for h in inclusion_proof(seq, b, tree)]})
            + b"\n"
            for seq in selected
        ]
        write_file(tmp, "proofs/inclusion.jsonl", b"".join(proof_lines), listing)
        write_file(tmp, "keys/keyring.json", job.keyring.dumps().encode(), listing)
        write_revisions(directory, tmp, listing)
        head_root, witnesses = head_facts(cp_bytes, cosigned, b)
        views = render_views(
            [records[seq - base] for seq in selected], origin=job.origin, range_from=a,
            range_to=b, completeness="not-proven", created=job.created,
            filter_text=json.dumps(job.export_filter.to_json()), head_root=head_root,
            witnesses=witnesses,
        )  # fmt: skip
        for rel, data in views.items():
            write_file(tmp, rel, data, listing)
        write_file(tmp, "VERIFY.txt", verify_text(job.origin, True).encode(), listing)
        manifest_bytes = finish(tmp, job.target, job.signer, job.claims(a, b, len(selected)),
                                listing)  # fmt: skip
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(job.target, job.origin, a, b, len(selected), "not-proven",
                        hashlib.sha256(manifest_bytes).hexdigest())  # fmt: skip


def _window(stamps: Any, from_ts: str | None, to_ts: str | None) -> tuple[int, int]:
    """Indexes [lo, hi) of the first and after the last timestamp in the window, read
    from `stamps` (an iterable of `ts`, read once)."""
    first_index: int | None = None
    last_index: int | None = None
    for index, ts in enumerate(stamps):
        if first_index is None and (from_ts is None or ts >= from_ts):
            first_index = index
        if to_ts is None or ts < to_ts:
            last_index = index
    if first_index is None or last_index is None or last_index < first_index:
        raise AuditError("no records in the requested time window")
    return first_index, last_index + 1


def _write_notes(
    job: _Job, tmp: Path, listing: list[dict[str, Any]], a: int, b: int
) -> tuple[bytes, bytes]:
    """checkpoints.notes (and checkpoints.cosigned) of the range: their bytes."""
    cp_bytes = b"".join(raw + b"\n" for cp, raw in job.checkpoints if a <= cp.size <= b)
    write_file(tmp, "checkpoints.notes", cp_bytes, listing)
    cosigned = _cosigned_in_range(job.directory, job.origin, a, b)
    if cosigned:
        write_file(tmp, COSIGNED_FILE, cosigned, listing)
    return cp_bytes, cosigned


def _complete_lines(directory: Path, base: int) -> Iterator[tuple[int, list[bytes]]]:
    """(seq of the block's first line, a block of complete lines) from seq `base` on, a
    block at a time, up to the first gap."""
    position = base
    for first, path in list_segments(directory):
        if first < base:
            continue
        if first != position:
            return
        for complete in LineBlocks(path):
            count = len(complete)
            yield position, complete
            del complete  # before the next block is read
            position += count


def _durable_end(directory: Path, base: int) -> int:
    """The seq after the last complete stored line from `base` on, up to the first gap
    (as `_complete_lines` reads them, counting newlines instead of cutting lines)."""
    position = base
    for first, path in list_segments(directory):
        if first < base:
            continue
        if first != position:
            break
        with open(path, "rb") as handle:
            while data := handle.read(READ_BLOCK):
                position += data.count(b"\n")
    return position


def _blocks_between(
    directory: Path, base: int, lo: int, hi: int
) -> Iterator[tuple[int, list[bytes]]]:
    """(seq of the first, stored lines) of seq lo..hi-1, a block at a time."""
    for position, complete in _complete_lines(directory, base):
        end = position + len(complete)
        if end > lo:
            start = max(lo - position, 0)
            yield position + start, complete[start : max(min(hi, end) - position, 0)]
        del complete  # before the next block is read
        if end >= hi:
            return


def _records_between(directory: Path, base: int, lo: int, hi: int) -> Iterator[dict[str, Any]]:
    loads, body_of = orjson.loads, record_bytes_of_line
    for _position, lines in _blocks_between(directory, base, lo, hi):
        for line in lines:
            yield loads(body_of(line) or b"{}")


def _csv_view_file(directory: Path, base: int, a: int, b: int, path: Path) -> dict[str, Any]:
    """Write the CSV view of the records a..b-1 to `path`; its manifest entry."""
    sink = HashingFile(path)
    views = ViewBuilder(None, sink, tally=False)
    add = views.add
    for record in _records_between(directory, base, a, b):
        add(record)
    views.finish()
    sink.close()
    if not views.csv_complete:
        # A record with a field the first one lacked: again, with every column.
        sink = HashingFile(path)
        for piece in csv_chunks(_records_between(directory, base, a, b), views.columns()):
            sink.write(piece)
        sink.close()
    return sink.entry("views/records.csv")


def csv_view_task(directory: str, base: int, a: int, b: int, path: str) -> dict[str, Any]:
    """The helper process's `export-csv` task: the CSV view of records [a, b) into `path`."""
    return _csv_view_file(Path(directory), base, a, b, Path(path))


def _finish_csv(helper: Apart | None, job: _Job, a: int, b: int, path: Path) -> dict[str, Any]:
    if helper is not None:
        try:
            entry: dict[str, Any] = helper.result()
            return entry
        except AuditError:
            pass  # make it here instead
    return _csv_view_file(job.directory, job.base, a, b, path)


def _start_state(job: _Job, a: int) -> StartState:
    """The tree state at a > 0: from the pruned state, or by hashing the leaves before a."""
    base_state = job.base_state
    if base_state is not None and a == job.base:
        return StartState(a, base_state.compact, base_state.prev_leaf, base_state.prev_leaf_proof)
    compact = base_state.compact.copy() if base_state is not None else CompactRange()
    prev_leaf = b""
    proof: tuple[bytes, ...] = ()
    for _position, lines in _blocks_between(job.directory, job.base, job.base, a):
        for line in lines:
            before = compact.size
            prev_leaf = leaf_hash(record_bytes_of_line(line) or line)
            if before == a - 1:
                # The last leaf's audit path is the compact range before it, smallest first.
                proof = tuple(reversed(compact.nodes))
            compact.append(prev_leaf)
    return StartState(a, compact, prev_leaf, proof)


def _export_contiguous(job: _Job) -> ExportResult:
    """A contiguous export of the newest checkpointed range in the window; when the
    stored lines end before the newest checkpoint, of what they reach."""
    sizes = sorted({cp.size for cp, _raw in job.checkpoints if job.base <= cp.size})
    try:
        return _contiguous(job, sizes)
    except _ShortLog:
        durable = _durable_end(job.directory, job.base)
        return _contiguous(job, [s for s in sizes if s <= durable])


def _contiguous(job: _Job, sizes: list[int]) -> ExportResult:
    if not sizes:
        raise AuditError(f"{job.directory}: no checkpoint covers the records yet")
    base, newest = job.base, sizes[-1]
    if job.from_ts is None and job.to_ts is None:
        if newest <= base:
            raise AuditError("no records in the requested time window")
        lo, hi = 0, newest - base
    else:
        stamps = (str(r.get("ts", "")) for r in _records_between(job.directory, base, base, newest))
        lo, hi = _window(stamps, job.from_ts, job.to_ts)
    a, b = _cut(sizes, base + lo, base + hi, base)
    tmp = _fresh_tmp(job.target)
    listing: list[dict[str, Any]] = []
    csv_helper: Apart | None = None
    try:
        cp_bytes, cosigned = _write_notes(job, tmp, listing, a, b)
        if a > 0:
            write_file(tmp, "proofs/start.json", _json(_start_state(job, a).to_json()), listing)
        write_file(tmp, "keys/keyring.json", job.keyring.dumps().encode(), listing)
        write_revisions(job.directory, tmp, listing)
        csv_path = tmp / "views" / "records.csv"
        # A large range makes its CSV view in a second process, reading the same records
        # while this one writes records/, the JSONL view and the report's counters.
        if b - a >= PARALLEL_CSV:
            csv_helper = Apart("export-csv", [str(job.directory), base, a, b, str(csv_path)])
        csv_sink = HashingFile(csv_path) if csv_helper is None else None
        views = _write_range(job, tmp, listing, a, b, csv_sink)
        if csv_sink is None:
            listing.append(_finish_csv(csv_helper, job, a, b, csv_path))
            csv_helper = None
        elif views.csv_complete:
            listing.append(csv_sink.entry("views/records.csv"))
        else:
            listing.append(_csv_view_file(job.directory, base, a, b, csv_path))
        head_root, witnesses = head_facts(cp_bytes, cosigned, b)
        report = render_tally(
            views.tally, origin=job.origin, range_from=a, range_to=b, completeness="proven",
            created=job.created, filter_text="none (contiguous)", head_root=head_root,
            witnesses=witnesses,
        )  # fmt: skip
        write_file(tmp, "report.html", report.encode(), listing)
        write_file(tmp, "VERIFY.txt", verify_text(job.origin, False).encode(), listing)
        manifest_bytes = finish(tmp, job.target, job.signer, job.claims(a, b, b - a), listing)
    except BaseException:
        if csv_helper is not None:
            csv_helper.cancel()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(job.target, job.origin, a, b, b - a, "proven",
                        hashlib.sha256(manifest_bytes).hexdigest())  # fmt: skip


def _write_range(
    job: _Job, tmp: Path, listing: list[dict[str, Any]], a: int, b: int,
    csv_sink: HashingFile | None,
) -> ViewBuilder:  # fmt: skip
    """One pass over the records a..b-1: records/ (a file per stored segment, as the
    segments are cut), the JSONL view (each record's stored bytes), the report's
    counters and, with `csv_sink`, the CSV view. Raises `_ShortLog` when the stored
    lines end before b."""
    jsonl = HashingFile(tmp / "views" / "records.jsonl")
    views = ViewBuilder(None, csv_sink)
    add, loads, body_of = views.add, orjson.loads, record_bytes_of_line
    records = _RecordFiles(tmp, listing, job.segment_records, a)
    position = a
    try:
        for first, block in _blocks_between(job.directory, job.base, a, b):
            records.write(first, block)
            bodies = [body_of(line) or b"{}" for line in block]
            jsonl.write(b"\n".join(bodies) + b"\n")
            for body in bodies:
                add(loads(body))
            position = first + len(block)
    finally:
        records.close()
        jsonl.close()
        if csv_sink is not None:
            views.finish()
            csv_sink.close()
    if position < b:
        raise _ShortLog
    if csv_sink is None:
        views.finish()
    listing.append(jsonl.entry("views/records.jsonl"))
    return views


class _RecordFiles:
    """records/: the stored lines, a file per stored segment (cut at multiples of the
    segment size, the first at a)."""

    def __init__(self, tmp: Path, listing: list[dict[str, Any]], segment: int, a: int) -> None:
        self._tmp, self._listing, self._segment = tmp, listing, segment
        self._file: HashingFile | None = None
        self._rel = ""
        self._end = a  # where the open file ends (the next cut)

    def write(self, first: int, lines: list[bytes]) -> None:
        """Append the lines of seq first.. to the right files."""
        while lines:
            if self._file is None or first >= self._end:
                self.close()
                self._rel = f"records/{segment_name(first)}"
                refuse_secret(self._rel, b"")
                self._file = HashingFile(self._tmp / self._rel)
                self._end = first - first % self._segment + self._segment
            take = min(len(lines), self._end - first)
            self._file.write(b"\n".join(lines[:take]) + b"\n")
            lines = lines[take:]
            first += take

    def close(self) -> None:
        """Close and list the open file."""
        if self._file is not None:
            self._file.close()
            self._listing.append(self._file.entry(self._rel))
            self._file = None


def _cosigned_in_range(directory: Path, origin: str, a: int, b: int) -> bytes:
    """The witness-cosigned checkpoints of `origin` with a <= size <= b, as stored."""
    path = directory / COSIGNED_FILE
    if not path.exists():
        return b""
    notes, _end = split_notes(path.read_bytes())
    kept: list[bytes] = []
    for _offset, raw in notes:
        try:
            checkpoint = parse_checkpoint_text(parse_note(raw).text)
        except NoteError:
            continue
        if checkpoint.origin == origin and a <= checkpoint.size <= b:
            kept.append(raw + b"\n")
    return b"".join(kept)


def _json(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
