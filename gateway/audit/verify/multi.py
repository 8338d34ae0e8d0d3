"""Verification of a bundle of many logs (see `gateway.audit.multi_export`).

Each log's bundle under `logs/<i>/` is verified exactly as it would be alone, with the
same pinned trust, and gives its own report. The index gets a report of its own: its
signature (by a key pinned for every origin it names), each sub-manifest's SHA-256 and
claims, no sub-bundle missing or added, the top-level files, and the interleaved views
made again from the records and compared byte for byte.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.audit.bundle import MANIFEST_FILE, path_problem
from gateway.audit.canonical import canonicalize, strict_loads
from gateway.audit.errors import MalformedJSON, NoteError
from gateway.audit.keyring import Keyring
from gateway.audit.multi_export import (
    INDEX_FILE,
    INDEX_FORMAT,
    INDEX_SIG_FILE,
    LOGS_DIR,
    index_note_text,
    interleaved_views,
    log_facts,
)
from gateway.audit.note import parse_note
from gateway.audit.verify.findings import SourceReport, VerifyOptions
from gateway.audit.verify.sources import file_sha256

__all__ = ["is_multi_bundle", "verify_multi"]

#: Verifies one single-log bundle (`verify_source`, passed in to keep imports one-way).
VerifyOne = Callable[[Path], SourceReport]


def is_multi_bundle(root: Path) -> bool:
    """True when `root` is a bundle of many logs (it has an index)."""
    return (root / INDEX_FILE).is_file()


def _read_index(report: SourceReport, root: Path) -> tuple[dict[str, Any], bytes] | None:
    label = str(root / INDEX_FILE)
    try:
        index_bytes = (root / INDEX_FILE).read_bytes()
        index = strict_loads(index_bytes)
    except OSError:
        report.error("FILE_MISSING", f"{INDEX_FILE} is unreadable", label)
        return None
    except MalformedJSON as exc:
        report.error("MANIFEST_INVALID", str(exc), label)
        return None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        report.error("MANIFEST_INVALID", f"not a {INDEX_FORMAT} index", label)
        return None
    if canonicalize(index) != index_bytes:
        report.error("MANIFEST_INVALID", "index is not canonical JSON", label)
    return index, index_bytes


def _entries(report: SourceReport, root: Path, index: dict[str, Any]) -> list[dict[str, Any]]:
    """The index's log entries that are well formed (every problem reported)."""
    label = str(root / INDEX_FILE)
    logs = index.get("logs")
    if not isinstance(logs, list) or not logs:
        report.error("MANIFEST_INVALID", "index `logs` must be a non-empty list", label)
        return []
    good: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, entry in enumerate(logs):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("origin"), str)
            or entry.get("dir") != f"{LOGS_DIR}/{i}"
            or not isinstance(entry.get("range"), dict)
        ):
            report.error("MANIFEST_INVALID", f"index entry {i} is malformed", label)
            continue
        if entry["origin"] in seen:
            report.error("MANIFEST_INVALID", f"origin `{entry['origin']}` listed twice", label)
            continue
        seen.add(entry["origin"])
        good.append(entry)
    return good


def _check_signature(
    report: SourceReport, root: Path, keyring: Keyring, index: dict[str, Any], index_bytes: bytes,
    origins: list[str],
) -> None:  # fmt: skip
    """The index must be signed by a pinned key scoped to every origin it names (a key
    trusted for one log must not vouch for which other logs go with it)."""
    label = str(root / INDEX_SIG_FILE)
    try:
        note = parse_note((root / INDEX_SIG_FILE).read_bytes())
        if note.text != index_note_text(index_bytes):
            raise NoteError("the signed text does not name this index")
        valid, _unknown = note.verify(keyring.verifiers())
        entries = [e for v in valid if (e := keyring.find(v)) is not None]
        created = index.get("created")
        for origin in origins:
            scoped = [e for e in entries if e.covers(origin)]
            if not scoped:
                raise NoteError(f"no signature from a pinned key scoped to `{origin}`")
            if isinstance(created, str) and not any(e.valid_at(created) for e in scoped):
                report.error("KEY_NOT_VALID_AT_TIME", f"index key not valid at {created}", label)
    except OSError:
        report.error("MANIFEST_SIG_INVALID", f"{INDEX_SIG_FILE} is missing", label)
    except NoteError as exc:
        report.error("MANIFEST_SIG_INVALID", str(exc), label)


def _check_sub_manifest(report: SourceReport, root: Path, entry: dict[str, Any]) -> bool:
    """The sub-bundle's manifest is the one the index names, with the same claims."""
    path = root / entry["dir"] / MANIFEST_FILE
    try:
        data = path.read_bytes()
        manifest = strict_loads(data)
    except (OSError, MalformedJSON):
        report.error("FILE_MISSING", f"`{entry['dir']}` has no readable manifest", str(path))
        return False
    if hashlib.sha256(data).hexdigest() != entry.get("manifest_sha256"):
        report.error("FILE_HASH_MISMATCH", f"`{entry['dir']}` is not the bundle the index names",
                     str(path))  # fmt: skip
        return False
    claims = {
        "origin": manifest.get("origin"),
        "range": manifest.get("range"),
        "records": manifest.get("records"),
        "completeness": manifest.get("completeness"),
    }
    if any(entry.get(key) != value for key, value in claims.items()):
        report.error("MANIFEST_INVALID", f"index entry for `{entry['dir']}` differs from its "
                     "manifest", str(root / INDEX_FILE))  # fmt: skip
        return False
    return True


def _check_files(
    report: SourceReport, root: Path, index: dict[str, Any], entries: list[dict[str, Any]]
) -> dict[str, str]:
    """The top-level files against the index (sizes, SHA-256, nothing unlisted) and the
    sub-bundle directories against its entries; the digests of the files read."""
    label = str(root / INDEX_FILE)
    digests: dict[str, str] = {}
    files = index.get("files")
    if not isinstance(files, list):
        report.error("MANIFEST_INVALID", "index `files` must be a list", label)
        files = []
    for item in files:
        rel = item.get("path") if isinstance(item, dict) else None
        problem = path_problem(rel)
        if problem is not None or not isinstance(rel, str) or rel.startswith(f"{LOGS_DIR}/"):
            report.error("PATH_INVALID", problem or f"`{rel}` may not be listed here", label)
            continue
        target = root / rel
        if target.is_symlink():
            report.error("PATH_INVALID", f"`{rel}` is a symlink", str(target))
            continue
        if not target.is_file():
            report.error("FILE_MISSING", f"`{rel}` is listed but missing", str(target))
            continue
        digest, size = file_sha256(target)
        digests[rel] = digest
        if digest != item.get("sha256") or size != item.get("bytes"):
            report.error("FILE_HASH_MISMATCH", f"`{rel}` differs from the index", str(target))
    known = {INDEX_FILE, INDEX_SIG_FILE, *digests}
    for dirpath, dirnames, names in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir == LOGS_DIR or rel_dir.startswith(f"{LOGS_DIR}/"):
            dirnames.clear()  # each sub-bundle checks its own files
            continue
        for name in names:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in known:
                report.error("FILE_UNEXPECTED", f"`{rel}` is not listed in the index",
                             str(root / rel))  # fmt: skip
    listed_dirs = {entry["dir"] for entry in entries}
    logs_dir = root / LOGS_DIR
    on_disk = {f"{LOGS_DIR}/{p.name}" for p in logs_dir.iterdir()} if logs_dir.is_dir() else set()
    for rel in sorted(on_disk - listed_dirs):
        report.error("FILE_UNEXPECTED", f"`{rel}` is not a bundle the index names", str(root / rel))
    return digests


def _check_views(
    report: SourceReport, root: Path, index: dict[str, Any], entries: list[dict[str, Any]],
    digests: dict[str, str],
) -> None:  # fmt: skip
    """Make the interleaved views again from the verified records and compare."""
    if index.get("generator") != f"jurisgate {__version__}":
        report.warn(
            "VIEW_NOT_CHECKED",
            f"made by `{index.get('generator')}`: the interleaved views are not compared "
            "with the records; trust the records, not the views",
        )
        return
    parts = [(str(e["origin"]), root / e["dir"]) for e in entries]
    facts = [log_facts(e, root / e["dir"]) for e in entries]
    for rel, pieces in interleaved_views(parts, facts, str(index.get("created"))):
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        found = digests.get(rel)
        if found is not None and found != digest.hexdigest():
            report.error("VIEW_MISMATCH", f"`{rel}` differs from the records of the logs",
                         str(root / rel))  # fmt: skip


def verify_multi(
    root: Path, keyring: Keyring, options: VerifyOptions, verify_one: VerifyOne
) -> list[SourceReport]:
    """A report per log's bundle, then the index's report (which names, per origin, what
    is proven)."""
    report = SourceReport(str(root), "index")
    read = _read_index(report, root)
    if read is None:
        return [report]
    index, index_bytes = read
    entries = _entries(report, root, index)
    origins = [str(e["origin"]) for e in entries]
    report.origin = ", ".join(origins)
    _check_signature(report, root, keyring, index, index_bytes, origins)
    digests = _check_files(report, root, index, entries)
    present = [e for e in entries if _check_sub_manifest(report, root, e)]
    subs = [verify_one(root / e["dir"]) for e in present]
    report.records_total = sum(s.records_total for s in subs)
    report.found = {
        "logs": [
            {"origin": s.origin, "completeness": s.completeness, "valid": s.valid,
             "records": s.records_total, "head": s.head}
            for s in subs
        ]
    }  # fmt: skip
    # Views of records that did not verify would compare something unproven.
    if len(present) == len(entries) and entries and all(s.valid for s in subs):
        _check_views(report, root, index, entries, digests)
    proven = bool(subs) and all(s.completeness == "proven" for s in subs)
    report.completeness = "proven" if proven and not report.errors else (
        "incomplete" if report.errors else "not-proven")  # fmt: skip
    return [*subs, report]
