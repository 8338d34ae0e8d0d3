"""One bundle of many logs (all workers of a process group, all replicas): a complete
single-log bundle per log under `logs/<i>/`, a signed index binding them, and views of
every log's records interleaved by time.

```
audit-export-.../
  index.json        JCS: format, logs [{origin, dir, manifest_sha256, range {from, to},
                    records, completeness}], requested {from_ts, to_ts}, files
                    [{path, sha256, bytes}], generator, created
  index.sig         signed note: "jurisgate-audit-export-index/v1\\n<hex sha256 of index>\\n"
  logs/<i>/         a single-log bundle (see `gateway.audit.bundle`), i = 0, 1, ...
  views/records.jsonl, views/records.csv, report.html   every log's records, by time
  VERIFY.txt
```

Rule 1: each sub-bundle is made by `export_bundle` and proves its own log on its own;
the index only binds them together (a sub-bundle swapped, added or removed breaks it).
Rule 2: the interleaved views are a function of the sub-bundles' records and the index,
merged in (ts, origin, seq) order a record at a time, so `verify` makes them again and
compares, like a single bundle's views.
Rule 3: the bundle is written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway import __version__
from gateway.audit.bundle import MANIFEST_FILE, ExportFilter
from gateway.audit.bundle_write import write_file, write_pieces
from gateway.audit.canonical import canonicalize
from gateway.audit.chain import record_bytes_of_line
from gateway.audit.errors import AuditError
from gateway.audit.export import ExportResult, export_bundle
from gateway.audit.keyring import Keyring, KeyringEntry
from gateway.audit.note import sign_note
from gateway.audit.record import format_ts
from gateway.audit.report import LogFacts, ReportTally, render_tally
from gateway.audit.signing import Signer
from gateway.audit.storage import COSIGNED_FILE, META_FILE, publish_tree, read_meta
from gateway.audit.views import csv_chunks, csv_columns, head_facts

__all__ = [
    "INDEX_CONTEXT",
    "INDEX_FILE",
    "INDEX_FORMAT",
    "INDEX_SIG_FILE",
    "INTERLEAVED_VIEWS",
    "MultiExportResult",
    "expand_log_dirs",
    "export_many",
    "index_note_text",
    "interleaved_views",
]

INDEX_FORMAT = "jurisgate-audit-export-index/1"
INDEX_CONTEXT = "jurisgate-audit-export-index/v1"
INDEX_FILE = "index.json"
INDEX_SIG_FILE = "index.sig"
LOGS_DIR = "logs"
#: Bundle paths of the interleaved views.
INTERLEAVED_VIEWS = ("views/records.jsonl", "views/records.csv", "report.html")
_WORKER_DIR = re.compile(r"w(\d+)")


def index_note_text(index_bytes: bytes) -> str:
    """The note text that signs an index."""
    return f"{INDEX_CONTEXT}\n{hashlib.sha256(index_bytes).hexdigest()}\n"


@dataclass(frozen=True)
class MultiExportResult:
    """Where the bundle went and the result of each log's sub-bundle."""

    path: Path
    logs: tuple[ExportResult, ...]


def expand_log_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """The log directories named by `paths`: a log itself, or a directory of worker logs
    `w0`, `w1`, ... (each with LOG.json), in worker order. Raises `AuditError` for
    anything else."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / META_FILE).exists():
            found.append(path)
            continue
        workers = sorted(
            (int(m.group(1)), child)
            for child in (path.iterdir() if path.is_dir() else [])
            if (m := _WORKER_DIR.fullmatch(child.name)) and (child / META_FILE).exists()
        )
        if not workers:
            raise AuditError(
                f"--log: `{path}` is neither an audit log ({META_FILE}) nor a directory of "
                "worker logs (w0, w1, ...)"
            )
        found.extend(child for _k, child in workers)
    return found


def export_many(
    log_dirs: Sequence[str | Path],
    out: str | Path,
    signer: Signer,
    *,
    from_ts: str | None = None,
    to_ts: str | None = None,
    export_filter: ExportFilter | None = None,
    keyring: Keyring | None = None,
    now: datetime | None = None,
) -> MultiExportResult:
    """Write one bundle of the logs in `log_dirs` over one window (see the module).

    Every log gets the same window, filter and signer as `export_bundle` would give it
    alone; `signer` must be trusted for every log's origin. Raises `AuditError` when two
    logs share an origin, or when any log cannot be exported.
    """
    target = Path(out)
    if target.exists():
        raise AuditError(f"{target}: already exists; choose a new --out path")
    origins: dict[str, Path] = {}
    bases: list[str] = []
    for directory in map(Path, log_dirs):
        meta = read_meta(directory)
        if meta is None:
            raise AuditError(f"{directory}: not an audit log directory (no {META_FILE})")
        if meta.origin in origins:
            raise AuditError(
                f"{directory} and {origins[meta.origin]} are both origin `{meta.origin}`: "
                "the same log twice, or a copy of it; give each log once"
            )
        origins[meta.origin] = directory
        bases.append(meta.base_origin)
    # One creation time for every part, so the sub-bundles and the index agree.
    moment = now or datetime.now(UTC)
    created = format_ts(moment)
    shared = keyring or Keyring([KeyringEntry(signer.verifier, tuple(sorted(set(bases))))])
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        results = tuple(
            _export_one(directory, tmp / LOGS_DIR / str(i), signer, from_ts=from_ts,
                        to_ts=to_ts, export_filter=export_filter, keyring=shared, now=moment)
            for i, directory in enumerate(origins.values())
        )  # fmt: skip
        entries = [_index_entry(i, result) for i, result in enumerate(results)]
        listing: list[dict[str, Any]] = []
        parts = [(entry["origin"], tmp / entry["dir"]) for entry in entries]
        facts = [log_facts(entry, tmp / entry["dir"]) for entry in entries]
        for rel, pieces in interleaved_views(parts, facts, created):
            write_pieces(tmp, rel, pieces, listing)
        write_file(tmp, "VERIFY.txt", verify_text(entries).encode(), listing)
        listing.sort(key=lambda item: str(item["path"]))
        index = {
            "format": INDEX_FORMAT,
            "logs": entries,
            "requested": _requested(tmp / entries[0]["dir"]),
            "files": listing,
            "generator": f"jurisgate {__version__}",
            "created": created,
        }
        index_bytes = canonicalize(index)
        (tmp / INDEX_FILE).write_bytes(index_bytes)
        (tmp / INDEX_SIG_FILE).write_text(
            sign_note(index_note_text(index_bytes), [signer]), encoding="utf-8"
        )
        publish_tree(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MultiExportResult(
        target,
        tuple(_moved(result, target / LOGS_DIR / str(i)) for i, result in enumerate(results)),
    )


def _moved(result: ExportResult, path: Path) -> ExportResult:
    """`result` of a sub-bundle, at its place in the finished bundle."""
    return replace(result, path=path)


def _export_one(directory: Path, out: Path, signer: Signer, **window: Any) -> ExportResult:
    """One log's sub-bundle; an error names the log (several are exported at once)."""
    try:
        return export_bundle(directory, out, signer, **window)
    except AuditError as exc:
        raise AuditError(f"{directory}: {exc}") from exc


def _requested(sub_bundle: Path) -> Any:
    """The window as the sub-bundles state it (normalised, the end capped at creation)."""
    return orjson.loads((sub_bundle / MANIFEST_FILE).read_bytes())["requested"]


def _index_entry(i: int, result: ExportResult) -> dict[str, Any]:
    return {
        "origin": result.origin,
        "dir": f"{LOGS_DIR}/{i}",
        "manifest_sha256": result.manifest_sha256,
        "range": {"from": result.range_from, "to": result.range_to},
        "records": result.records,
        "completeness": result.completeness,
    }


def log_facts(entry: dict[str, Any], sub_bundle: Path) -> LogFacts:
    """What the report says of one log: its index entry and the root its bundle states."""
    notes = sub_bundle / "checkpoints.notes"
    cosigned = sub_bundle / COSIGNED_FILE
    head_root, witnesses = head_facts(
        notes.read_bytes() if notes.is_file() else b"",
        cosigned.read_bytes() if cosigned.is_file() else b"",
        int(entry["range"]["to"]),
    )
    return LogFacts(str(entry["origin"]), int(entry["range"]["from"]), int(entry["range"]["to"]),
                    int(entry["records"]), str(entry["completeness"]), head_root,
                    tuple(witnesses))  # fmt: skip


_Item = tuple[str, str, int, bytes, dict[str, Any]]


def _part_records(origin: str, sub_bundle: Path) -> Iterator[_Item]:
    """(ts, origin, seq, record bytes, record) of a sub-bundle's records, in seq order."""
    loads, body_of = orjson.loads, record_bytes_of_line
    for path in sorted((sub_bundle / "records").glob("*.jsonl")):
        with open(path, "rb") as handle:
            for line in handle:
                body = body_of(line.rstrip(b"\n")) or b"{}"
                record = loads(body)
                yield str(record.get("ts", "")), origin, int(record.get("seq", 0)), body, record


def _merged(parts: Sequence[tuple[str, Path]]) -> Iterator[_Item]:
    # Each log is in ts order already (the verifier checks it), so a k-way merge keeps
    # one record per log in memory; origin and seq break ties deterministically.
    return heapq.merge(*(_part_records(o, p) for o, p in parts), key=lambda item: item[:3])


def interleaved_views(
    parts: Sequence[tuple[str, Path]], facts: Sequence[LogFacts], created: str
) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(bundle path, its bytes in pieces) of each interleaved view of the sub-bundles
    `parts` ((origin, directory) each); consume each view before asking for the next
    (the JSONL pass counts what the CSV and the report need)."""
    tally = ReportTally()
    keys: dict[str, None] = {}

    def jsonl() -> Iterator[bytes]:
        lines: list[bytes] = []
        for _ts, origin, _seq, body, record in _merged(parts):
            # The report's denials table names the log; the other counters ignore `log`.
            tally.add({**record, "log": origin} if record.get("type") == "decision" else record)
            keys.update(dict.fromkeys(record))
            lines.append(b'{"origin":' + orjson.dumps(origin) + b',"record":' + body + b"}\n")
            if len(lines) >= 4096:
                yield b"".join(lines)
                lines.clear()
        yield b"".join(lines)

    yield INTERLEAVED_VIEWS[0], jsonl()
    # `log` names the origin: no record field has that name.
    columns = ["log", *csv_columns([keys])]
    rows = ({"log": origin, **record} for _ts, origin, _seq, _body, record in _merged(parts))
    yield INTERLEAVED_VIEWS[1], csv_chunks(rows, columns)
    report = render_tally(
        tally, origin=f"{len(facts)} logs", range_from=0, range_to=0, completeness=(
            "proven" if all(f.completeness == "proven" for f in facts) else "not-proven"),
        created=created, filter_text=_filter_text(parts), logs=facts,
    )  # fmt: skip
    yield INTERLEAVED_VIEWS[2], iter([report.encode()])


def _filter_text(parts: Sequence[tuple[str, Path]]) -> str:
    manifest = orjson.loads((parts[0][1] / MANIFEST_FILE).read_bytes())
    flt = manifest.get("filter")
    return (
        "none (contiguous)"
        if flt is None
        else orjson.dumps(flt, option=orjson.OPT_SORT_KEYS).decode()
    )


def verify_text(entries: Sequence[dict[str, Any]]) -> str:
    """VERIFY.txt of a bundle of many logs."""
    listing = "\n".join(f"   - {e['dir']}/: {e['origin']}" for e in entries)
    return f"""How to verify this bundle of {len(entries)} logs (offline)
================================================

1. Obtain the operator's public keyring out of band (see logs/0/VERIFY.txt).

2. Run:

     jurisgate audit verify . --trusted-keys PINNED-KEYRING.json --state STATE.json

   It verifies every log's bundle as it would verify it alone, then this index.

3. What is proven:
   - index.sig: the index (every log's origin, range and manifest SHA-256, and the
     SHA-256 of the files at the top level) is signed by a key pinned for every origin;
     no log's bundle was added, removed or swapped.
   - for each log, what its own bundle proves (its VERIFY.txt):
{listing}

4. views/ and report.html interleave every log's records by time (ts, then origin, then
   seq); each JSONL line is {{"origin": ..., "record": ...}}. `jurisgate audit verify`
   makes them again from the verified records and compares them byte for byte.
"""
