"""Export bundles an auditor verifies offline (I/O shell; reads the log, never writes it).

Rule 1: the range [a, b] is cut at checkpointed sizes: a is the largest checkpoint size at
or before the first record of the time window, b the smallest at or after its last one.
A contiguous export therefore proves completeness with the checkpoints alone; a filtered
export carries one inclusion proof per record and says `completeness: not-proven`.

Rule 2: the bundle is written to a temporary directory and renamed into place, so a
half-written bundle never appears under the requested name.

See `gateway.audit.bundle` for the layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from gateway import __version__
from gateway.audit.apart import Apart
from gateway.audit.bundle import (
    BUNDLE_FORMAT,
    MANIFEST_FILE,
    MANIFEST_SIG_FILE,
    ExportFilter,
    manifest_note_text,
)
from gateway.audit.canonical import canonicalize
from gateway.audit.chain import record_bytes_of_line
from gateway.audit.errors import AuditError, NoteError
from gateway.audit.keyring import Keyring, KeyringEntry
from gateway.audit.merkle import CompactRange, TreeHashes, inclusion_proof, leaf_hash
from gateway.audit.note import Checkpoint, parse_checkpoint_text, parse_note, sign_note, split_notes
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

__all__ = ["ExportResult", "export_bundle"]


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


_FILTERED_CLAIM = (
    "filtered export: each record has an inclusion proof (proofs/inclusion.jsonl);\n"
    "     it is NOT proven that every matching record is present."
)
_CONTIGUOUS_CLAIM = "contiguous export: no record in the range was removed, inserted or reordered."


def _verify_text(origin: str, filtered: bool) -> str:
    return f"""How to verify this bundle (offline)
====================================

1. Obtain the operator's public keyring out of band (contract annex, published URL that
   you pinned before, or a copy handed over in person). The copy in keys/keyring.json is
   informational only: a forger would ship their own.

2. Run:

     jurisgate audit verify . --trusted-keys PINNED-KEYRING.json --state STATE.json

   Exit code 0 means valid, 1 invalid (every problem is listed with a code and a line),
   2 a usage or I/O error. --json REPORT.json writes a machine-readable report.
   Keep STATE.json between audits: it detects a log that was rolled back or forked.

3. What is proven:
   - manifest.sig: the manifest (origin {origin}, range, filter, file hashes) is signed by
     a pinned key; every file's SHA-256 matches; no file was added or removed.
   - every line in records/ is canonical JSON (RFC 8785), chained by `prev`, numbered by
     `seq`, and hashes into the RFC 6962 Merkle roots of checkpoints.notes, which are
     Ed25519 signed notes (C2SP format) by pinned keys valid at their time.
   - {_FILTERED_CLAIM if filtered else _CONTIGUOUS_CLAIM}

4. views/ and report.html are conveniences for people and spreadsheets; they are covered
   by the manifest hashes, and `jurisgate audit verify` makes them again from the
   verified records and compares them byte for byte (VIEW_MISMATCH otherwise).

Independent tools can check the same things: checkpoints are C2SP signed notes (Go
golang.org/x/mod/sumdb/note), proofs are RFC 9162 audit paths.
"""


#: What a secret looks like on disk: a PEM private key or a payload key file.
_SECRET_MARKERS = (b"PRIVATE KEY-----", b"jurisgate-payload-key/")
_SECRET_SUFFIXES = (".key", ".pem", ".p8")


def refuse_secret(rel: str, data: bytes) -> None:
    """Raise `AuditError` when a bundle file would carry a key: a bundle is handed to
    auditors and must hold nothing that signs records or opens their keyed digests."""
    # Record lines and their views hold only what the gateway chose to log; every other
    # file is checked for key material too.
    derived = rel.startswith(("records/", "views/")) or rel == "report.html"
    if rel.endswith(_SECRET_SUFFIXES) or (
        not derived and any(marker in data for marker in _SECRET_MARKERS)
    ):
        raise AuditError(f"refusing to put `{rel}` into the bundle: it looks like a key")


def _write(root: Path, rel: str, data: bytes, listing: list[dict[str, Any]]) -> None:
    refuse_secret(rel, data)
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    listing.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})


#: Where the gateway files the policy revisions in force beside its log (and in a bundle).
REVISIONS_DIR = "policy-revisions"


def _write_revisions(directory: Path, root: Path, listing: list[dict[str, Any]]) -> None:
    """Copy every filed policy revision into the bundle, listed like any file, so the
    bundle's decisions can be derived again from the bundle alone (`verify --replay`)."""
    store = directory / REVISIONS_DIR
    if not store.is_dir():
        return
    for path in sorted(store.glob("*.json")):
        _write(root, f"{REVISIONS_DIR}/{path.name}", path.read_bytes(), listing)


def export_bundle(
    log_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
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
    export_filter = export_filter or ExportFilter()
    meta = read_meta(directory)
    if meta is None:
        raise AuditError(f"{directory}: not an audit log directory (no LOG.json)")
    if target.exists():
        raise AuditError(f"{target}: already exists; choose a new --out path")
    origin = meta.origin
    created = format_ts(now or datetime.now(UTC))
    # Normalise so that string comparison with record timestamps is time order.
    from_ts = format_ts(parse_ts(from_ts)) if from_ts else None
    to_ts = format_ts(parse_ts(to_ts)) if to_ts else None

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

    base_state: StartState | None = None
    if (directory / PRUNED_FILE).exists():
        base_state = StartState.from_json(json.loads((directory / PRUNED_FILE).read_text()))
    base = base_state.size if base_state is not None else 0
    if export_filter.empty:
        return _export_contiguous(
            directory, target, signer, meta.segment_records, origin, created, from_ts, to_ts,
            checkpoints, base_state, keyring or Keyring([KeyringEntry(signer.verifier,
                                                                      (meta.base_origin,))]),
        )  # fmt: skip

    lines: list[bytes] = []
    for first, path in list_segments(directory):
        if first < base:
            continue
        if first != base + len(lines):
            break
        complete, _tail = split_lines(path.read_bytes())
        lines.extend(complete)
    durable = base + len(lines)
    sizes = sorted({cp.size for cp, _raw in checkpoints if base <= cp.size <= durable})
    if not sizes:
        raise AuditError(f"{directory}: no checkpoint covers the records yet")
    newest = sizes[-1]
    records = [orjson.loads(record_bytes_of_line(line) or b"{}") for line in lines[: newest - base]]

    first_index = next(
        (i for i, r in enumerate(records) if from_ts is None or r.get("ts", "") >= from_ts), None
    )
    last_index = next(
        (
            i
            for i in range(len(records) - 1, -1, -1)
            if to_ts is None or records[i].get("ts", "") < to_ts
        ),
        None,
    )
    if first_index is None or last_index is None or last_index < first_index:
        raise AuditError("no records in the requested time window")
    lo, hi = base + first_index, base + last_index + 1
    a = max([s for s in sizes if s <= lo] + ([0] if base == 0 else []))
    b = min(s for s in sizes if s >= hi)

    # Filtered: every selected record gets an inclusion proof, so this path holds the
    # range's leaves (and records) in memory; contiguous exports stream (above).
    leaves = [leaf_hash(record_bytes_of_line(line) or line) for line in lines[: b - base]]
    tree = TreeHashes(leaves, base_state.compact if base_state is not None else None)
    filtered = True
    completeness = "not-proven"

    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    listing: list[dict[str, Any]] = []
    try:
        selected: list[int] = [
            seq for seq in range(a, b) if export_filter.matches(records[seq - base])
        ]
        chunks: dict[int, list[bytes]] = {}
        seg_size = meta.segment_records
        for seq in selected:
            chunk_start = max(a, seq - seq % seg_size)
            chunks.setdefault(chunk_start, []).append(lines[seq - base] + b"\n")
        for chunk_start, chunk in sorted(chunks.items()):
            _write(tmp, f"records/{segment_name(chunk_start)}", b"".join(chunk), listing)
        cp_bytes = b"".join(raw + b"\n" for cp, raw in checkpoints if a <= cp.size <= b)
        _write(tmp, "checkpoints.notes", cp_bytes, listing)
        cosigned = _cosigned_in_range(directory, origin, a, b)
        if cosigned:
            _write(tmp, COSIGNED_FILE, cosigned, listing)
        proof_lines = [
            orjson.dumps({"seq": seq, "proof": [h.hex() for h in inclusion_proof(seq, b, tree)]})
            + b"\n"
            for seq in selected
        ]
        _write(tmp, "proofs/inclusion.jsonl", b"".join(proof_lines), listing)
        ring = keyring or Keyring([KeyringEntry(signer.verifier, (meta.base_origin,))])
        _write(tmp, "keys/keyring.json", ring.dumps().encode(), listing)
        _write_revisions(directory, tmp, listing)
        chosen = [records[seq - base] for seq in selected]
        filter_text = json.dumps(export_filter.to_json()) if filtered else "none (contiguous)"
        head_root, witnesses = head_facts(cp_bytes, cosigned, b)
        views = render_views(
            chosen,
            origin=origin,
            range_from=a,
            range_to=b,
            completeness=completeness,
            created=created,
            filter_text=filter_text,
            head_root=head_root,
            witnesses=witnesses,
        )
        for rel, data in views.items():
            _write(tmp, rel, data, listing)
        _write(tmp, "VERIFY.txt", _verify_text(origin, filtered).encode(), listing)
        manifest_bytes = _finish(tmp, target, signer, origin, listing, a, b, from_ts, to_ts,
                                 export_filter, completeness, len(selected), created)  # fmt: skip
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(
        target,
        origin,
        a,
        b,
        len(selected),
        completeness,
        hashlib.sha256(manifest_bytes).hexdigest(),
    )


def _complete_lines(directory: Path, base: int) -> Iterator[tuple[Path, list[bytes]]]:
    """(segment, a block of its complete lines) from seq `base` on, a block at a time, up
    to the first gap."""
    position = base
    for first, path in list_segments(directory):
        if first < base:
            continue
        if first != position:
            return
        for complete in LineBlocks(path):
            count = len(complete)
            yield path, complete
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


class _HashingFile:
    """A view file written piece by piece, hashed as it goes."""

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "wb")  # noqa: SIM115 - closed by `close`
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self._digest.update(data)
        self._size += len(data)

    def close(self) -> None:
        self._handle.close()

    def entry(self, rel: str) -> dict[str, Any]:
        return {"path": rel, "sha256": self._digest.hexdigest(), "bytes": self._size}


#: Ranges of at least this many records make their CSV view in a second process (the
#: other views and records/ are made here meanwhile); smaller ones make it here.
PARALLEL_CSV = 200_000


def _csv_view_file(directory: Path, base: int, a: int, b: int, path: Path) -> dict[str, Any]:
    """Write the CSV view of the records a..b-1 to `path`; its manifest entry."""
    sink = _HashingFile(path)
    views = ViewBuilder(None, sink, tally=False)
    for record in _records_between(directory, base, a, b):
        views.add(record)
    views.finish()
    sink.close()
    if not views.csv_complete:
        # A record with a field the first one lacked: again, with every column.
        sink = _HashingFile(path)
        for piece in csv_chunks(_records_between(directory, base, a, b), views.columns()):
            sink.write(piece)
        sink.close()
    return sink.entry("views/records.csv")


def _finish_csv(
    helper: Apart | None, directory: Path, base: int, a: int, b: int, path: Path
) -> dict[str, Any]:
    if helper is not None:
        try:
            entry: dict[str, Any] = helper.result()
            return entry
        except AuditError:
            pass  # make it here instead
    return _csv_view_file(directory, base, a, b, path)


def _lines_between(directory: Path, base: int, lo: int, hi: int) -> Iterator[bytes]:
    """Stored lines of seq lo..hi-1, reading one segment at a time."""
    position = base
    for _path, complete in _complete_lines(directory, base):
        end = position + len(complete)
        if end > lo:
            yield from complete[max(lo - position, 0) : max(min(hi, end) - position, 0)]
        del complete  # before the next segment is read
        position = end
        if position >= hi:
            return


def _records_between(directory: Path, base: int, lo: int, hi: int) -> Iterator[dict[str, Any]]:
    for line in _lines_between(directory, base, lo, hi):
        yield orjson.loads(record_bytes_of_line(line) or b"{}")


def _write_pieces(
    root: Path, rel: str, pieces: Iterable[bytes], listing: list[dict[str, Any]]
) -> None:
    """Write a file from pieces, hashing as it goes (nothing but the hash is kept)."""
    refuse_secret(rel, b"")
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with open(target, "wb") as handle:
        for piece in pieces:
            handle.write(piece)
            digest.update(piece)
            size += len(piece)
    listing.append({"path": rel, "sha256": digest.hexdigest(), "bytes": size})


def _export_contiguous(
    directory: Path,
    target: Path,
    signer: Signer,
    segment_records: int,
    origin: str,
    created: str,
    from_ts: str | None,
    to_ts: str | None,
    checkpoints: list[tuple[Checkpoint, bytes]],
    base_state: StartState | None,
    keyring: Keyring,
) -> ExportResult:
    """A contiguous export that streams: records, views and proofs are made reading one
    segment at a time, so memory does not grow with the log (the report keeps counters)."""
    base = base_state.size if base_state is not None else 0
    durable = _durable_end(directory, base)
    sizes = sorted({cp.size for cp, _raw in checkpoints if base <= cp.size <= durable})
    if not sizes:
        raise AuditError(f"{directory}: no checkpoint covers the records yet")
    newest = sizes[-1]
    first_index: int | None = None
    last_index: int | None = None
    if from_ts is None and to_ts is None:
        if newest > base:
            first_index, last_index = 0, newest - base - 1
    else:
        for index, record in enumerate(_records_between(directory, base, base, newest)):
            ts = record.get("ts", "")
            if first_index is None and (from_ts is None or ts >= from_ts):
                first_index = index
            if to_ts is None or ts < to_ts:
                last_index = index
    if first_index is None or last_index is None or last_index < first_index:
        raise AuditError("no records in the requested time window")
    lo, hi = base + first_index, base + last_index + 1
    a = max([s for s in sizes if s <= lo] + ([0] if base == 0 else []))
    b = min(s for s in sizes if s >= hi)

    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    listing: list[dict[str, Any]] = []
    csv_helper: Apart | None = None
    try:
        cp_bytes = b"".join(raw + b"\n" for cp, raw in checkpoints if a <= cp.size <= b)
        _write(tmp, "checkpoints.notes", cp_bytes, listing)
        cosigned = _cosigned_in_range(directory, origin, a, b)
        if cosigned:
            _write(tmp, COSIGNED_FILE, cosigned, listing)
        if a > 0:
            if base_state is not None and a == base:
                start = StartState(
                    a, base_state.compact, base_state.prev_leaf, base_state.prev_leaf_proof
                )
            else:
                compact = base_state.compact.copy() if base_state is not None else CompactRange()
                prev_leaf = b""
                proof: tuple[bytes, ...] = ()
                for line in _lines_between(directory, base, base, a):
                    before = compact.size
                    prev_leaf = leaf_hash(record_bytes_of_line(line) or line)
                    if before == a - 1:
                        # The last leaf's audit path is the compact range before it,
                        # smallest subtree first.
                        proof = tuple(reversed(compact.nodes))
                    compact.append(prev_leaf)
                start = StartState(a, compact, prev_leaf, proof)
            _write(tmp, "proofs/start.json", _json(start.to_json()), listing)
        _write(tmp, "keys/keyring.json", keyring.dumps().encode(), listing)
        _write_revisions(directory, tmp, listing)
        head_root, witnesses = head_facts(cp_bytes, cosigned, b)
        (tmp / "views").mkdir(parents=True, exist_ok=True)
        jsonl_sink = _HashingFile(tmp / "views" / "records.jsonl")
        csv_path = tmp / "views" / "records.csv"
        # A large range makes its CSV view in a second process, reading the same records
        # while this one writes records/, the JSONL view and the report's counters.
        if b - a >= PARALLEL_CSV:
            csv_helper = Apart("export-csv", [str(directory), base, a, b, str(csv_path)])
        csv_sink = _HashingFile(csv_path) if csv_helper is None else None
        views = ViewBuilder(jsonl_sink, csv_sink)
        add = views.add
        loads = orjson.loads
        # One pass over the range: each stored line is written to records/ and parsed once
        # for every view; a records/ file per stored segment (as the segments are cut).
        lines = _lines_between(directory, base, a, b)
        chunk_start = a
        while chunk_start < b:
            chunk_end = min(b, chunk_start - chunk_start % segment_records + segment_records)
            chunk = list(islice(lines, chunk_end - chunk_start))
            # Joined a slice at a time: a segment-sized copy would double the memory.
            pieces = (b"\n".join(chunk[i : i + 4096]) + b"\n" for i in range(0, len(chunk), 4096))
            _write_pieces(tmp, f"records/{segment_name(chunk_start)}", pieces, listing)
            for line in chunk:
                add(loads(record_bytes_of_line(line) or b"{}"))
            del chunk
            chunk_start = chunk_end
        views.finish()
        jsonl_sink.close()
        listing.append(jsonl_sink.entry("views/records.jsonl"))
        if csv_sink is not None:
            csv_sink.close()
            if not views.csv_complete:
                listing.append(_csv_view_file(directory, base, a, b, csv_path))
            else:
                listing.append(csv_sink.entry("views/records.csv"))
        else:
            listing.append(_finish_csv(csv_helper, directory, base, a, b, csv_path))
            csv_helper = None
        report = render_tally(
            views.tally,
            origin=origin,
            range_from=a,
            range_to=b,
            completeness="proven",
            created=created,
            filter_text="none (contiguous)",
            head_root=head_root,
            witnesses=witnesses,
        )
        _write(tmp, "report.html", report.encode(), listing)
        _write(tmp, "VERIFY.txt", _verify_text(origin, False).encode(), listing)
        manifest_bytes = _finish(tmp, target, signer, origin, listing, a, b, from_ts, to_ts,
                                 ExportFilter(), "proven", b - a, created)  # fmt: skip
    except BaseException:
        if csv_helper is not None:
            csv_helper.cancel()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(
        target, origin, a, b, b - a, "proven", hashlib.sha256(manifest_bytes).hexdigest()
    )


def _finish(
    tmp: Path,
    target: Path,
    signer: Signer,
    origin: str,
    listing: list[dict[str, Any]],
    a: int,
    b: int,
    from_ts: str | None,
    to_ts: str | None,
    export_filter: ExportFilter,
    completeness: str,
    records: int,
    created: str,
) -> bytes:
    """Write the manifest and its signature, then move the bundle into place."""
    listing.sort(key=lambda item: str(item["path"]))
    manifest = {
        "format": BUNDLE_FORMAT,
        "origin": origin,
        "range": {"from": a, "to": b},
        # A requested end is a freshness claim the verifier checks (STALE_TAIL).
        "requested": {"from_ts": from_ts, "to_ts": min(to_ts, created) if to_ts else None},
        "filter": export_filter.to_json(),
        "completeness": completeness,
        "records": records,
        "files": listing,
        "generator": f"jurisgate {__version__}",
        "created": created,
    }
    manifest_bytes = canonicalize(manifest)
    (tmp / MANIFEST_FILE).write_bytes(manifest_bytes)
    note = sign_note(manifest_note_text(origin, manifest_bytes), [signer])
    (tmp / MANIFEST_SIG_FILE).write_text(note, encoding="utf-8")
    os.replace(tmp, target)
    return manifest_bytes


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
