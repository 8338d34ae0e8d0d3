"""Reading what is verified (I/O, mechanics): a live log directory or an export bundle,
with the bundle's manifest, its signature and every listed file checked.

Rule 1 (bundles): every listed file must exist with its size and SHA-256; an unlisted
file, a symlink or a path leaving the bundle is an error. The digests are kept: the views
are compared with them rather than read again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from gateway.audit.bundle import (
    BUNDLE_FORMAT,
    MANIFEST_FILE,
    MANIFEST_SIG_FILE,
    ExportFilter,
    path_problem,
)
from gateway.audit.canonical import canonicalize, strict_loads
from gateway.audit.errors import MalformedJSON
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    COSIGNED_FILE,
    META_FILE,
    PRUNED_FILE,
    QUARANTINE_DIR,
    LogMeta,
    list_segments,
)
from gateway.audit.verify.stream import Source
from gateway.audit.verify.trust import Run

__all__ = ["check_deferred", "file_sha256", "source_for_bundle", "source_for_log"]


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read a megabyte at a time."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class _CountingDigest:
    """SHA-256 that counts the bytes it took."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.read_size = 0

    def update(self, data: bytes) -> None:
        """Hash `data` too."""
        self._digest.update(data)
        self.read_size += len(data)

    def hexdigest(self) -> str:
        """The hex digest so far."""
        return self._digest.hexdigest()


def _warn_beside_log(run: Run, path: Path) -> None:
    for entry in sorted(path.iterdir()):
        if entry.is_file() and entry.name.endswith((".key", ".pem", ".p8")):
            run.warn(
                "KEY_BESIDE_LOG",
                "a key file in the log directory travels with every copy of the log; "
                "keep keys with the signing key, outside the log directory",
                str(entry),
            )
    quarantine = path / QUARANTINE_DIR
    if quarantine.is_dir() and any(quarantine.iterdir()):
        run.warn(
            "QUARANTINE_PRESENT", "recovery moved torn or invalid bytes aside", str(quarantine)
        )


def _pruned_start(run: Run, path: Path) -> tuple[Any, int]:
    pruned_path = path / PRUNED_FILE
    if not pruned_path.exists():
        return None, 0
    try:
        start = json.loads(pruned_path.read_text(encoding="utf-8"))
        return start, int(start.get("size", 0)) if isinstance(start, dict) else 0
    except (ValueError, OSError) as exc:
        run.error("PROOF_INVALID", f"{PRUNED_FILE} unreadable: {exc}", str(pruned_path))
        return {}, 0


def source_for_log(run: Run, path: Path) -> Source | None:
    """A live log directory's records, notes and start state."""
    meta_path = path / META_FILE
    try:
        meta = LogMeta.from_json(json.loads(meta_path.read_text(encoding="utf-8")), str(meta_path))
    except Exception as exc:  # reported as a finding, whatever went wrong
        run.error("INPUT_UNREADABLE", f"cannot read {META_FILE}: {exc}", str(meta_path))
        return None
    origin = run.options.expect_origin or meta.origin
    if run.options.expect_origin and meta.origin != run.options.expect_origin:
        run.error("ORIGIN_MISMATCH", f"log is `{meta.origin}`, expected `{origin}`", str(meta_path))
    files = [(str(p), p) for _first, p in list_segments(path)]
    cp_path = path / CHECKPOINTS_FILE
    checkpoints = cp_path.read_bytes() if cp_path.exists() else b""
    start, start_size = _pruned_start(run, path)
    _warn_beside_log(run, path)
    if files:
        first = int(files[0][1].name.removesuffix(".jsonl"))
        if first != start_size:
            run.error(
                "SEQ_GAP", f"first segment starts at {first}, expected {start_size}", files[0][0]
            )
    cosigned_path = path / COSIGNED_FILE
    return Source(
        origin, files, checkpoints, str(cp_path), start, str(path / PRUNED_FILE), start_size,
        live=True, cosigned=cosigned_path.read_bytes() if cosigned_path.is_file() else b"",
        cosigned_label=str(cosigned_path),
    )  # fmt: skip


def _read_manifest(run: Run, path: Path) -> tuple[dict[str, Any], bytes] | None:
    manifest_path = path / MANIFEST_FILE
    label = str(manifest_path)
    try:
        manifest_bytes = manifest_path.read_bytes()
        manifest = strict_loads(manifest_bytes)
    except OSError:
        run.error("FILE_MISSING", "manifest.json is missing", label)
        return None
    except MalformedJSON as exc:
        run.error("MANIFEST_INVALID", str(exc), label)
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        run.error("MANIFEST_INVALID", f"not a {BUNDLE_FORMAT} manifest", label)
        return None
    if canonicalize(manifest) != manifest_bytes:
        run.error("MANIFEST_INVALID", "manifest is not canonical JSON", label)
    return manifest, manifest_bytes


def _check_listed(
    run: Run, path: Path, manifest: dict[str, Any]
) -> tuple[set[str], dict[str, str], dict[Path, tuple[str, Any, Any]]]:
    """Every listed file against its size and SHA-256; the paths listed, the digests of
    the files read, and the record files left to the record pass (which hashes them as
    it reads them: one read instead of two)."""
    label = str(path / MANIFEST_FILE)
    listed: set[str] = set()
    digests: dict[str, str] = {}
    deferred: dict[Path, tuple[str, Any, Any]] = {}
    files = manifest.get("files")
    if not isinstance(files, list):
        run.error("MANIFEST_INVALID", "manifest `files` must be a list", label)
        files = []
    for item in files:
        if not isinstance(item, dict):
            run.error("MANIFEST_INVALID", "file entry must be an object", label)
            continue
        rel = item.get("path")
        problem = path_problem(rel)
        if problem is not None or rel in listed:
            run.error("PATH_INVALID", problem or f"path `{rel}` listed twice", label)
            continue
        assert isinstance(rel, str)
        listed.add(rel)
        target = path / rel
        if target.is_symlink() or any(p.is_symlink() for p in target.parents if path in p.parents):
            run.error("PATH_INVALID", f"`{rel}` is a symlink", str(target))
            continue
        if not target.is_file():
            run.error("FILE_MISSING", f"`{rel}` is listed but missing", str(target))
            continue
        if target.parent == path / "records" and target.suffix == ".jsonl":
            deferred[target] = (rel, item.get("sha256"), item.get("bytes"))
            continue
        digest, size = file_sha256(target)
        digests[rel] = digest
        if digest != item.get("sha256") or size != item.get("bytes"):
            run.error("FILE_HASH_MISMATCH", f"`{rel}` differs from the manifest", str(target))
    return listed, digests, deferred


def check_deferred(run: Run, src: Source) -> None:
    """The manifest check of the record files the record pass hashed (or, when it did
    not read one, of that file read now)."""
    for target, (rel, sha256, size) in sorted(src.deferred.items()):
        digest = src.hashed.get(target)
        if digest is not None and digest.read_size == size:
            found = (digest.hexdigest(), digest.read_size)
        else:
            found = file_sha256(target)
        if found != (sha256, size):
            run.error("FILE_HASH_MISMATCH", f"`{rel}` differs from the manifest", str(target))


def _check_unlisted(run: Run, path: Path, listed: set[str]) -> None:
    for root_dir, dirs, names in os.walk(path, followlinks=False):
        for name in sorted(dirs + names):
            full = Path(root_dir) / name
            rel = full.relative_to(path).as_posix()
            if full.is_symlink():
                if rel not in listed:
                    run.error("PATH_INVALID", f"`{rel}` is a symlink", str(full))
                continue
            if full.is_dir():
                continue
            if rel not in listed and rel not in (MANIFEST_FILE, MANIFEST_SIG_FILE):
                run.error("FILE_UNEXPECTED", f"`{rel}` is not listed in the manifest", str(full))


def _origin(run: Run, manifest: dict[str, Any], label: str) -> str | None:
    origin = manifest.get("origin")
    if not isinstance(origin, str) or not origin:
        run.error("MANIFEST_INVALID", "manifest has no origin", label)
        return None
    expected = run.options.expect_origin
    if expected and origin != expected:
        run.error("ORIGIN_MISMATCH", f"bundle is `{origin}`, expected `{expected}`", label)
        return expected
    return origin


def _claims(
    run: Run, manifest: dict[str, Any], label: str
) -> tuple[dict[str, int], ExportFilter] | None:
    rng = manifest.get("range")
    if (
        not isinstance(rng, dict)
        or type(rng.get("from")) is not int
        or type(rng.get("to")) is not int
    ):
        run.error("MANIFEST_INVALID", "manifest `range` must be {from, to}", label)
        return None
    try:
        export_filter = ExportFilter.from_json(manifest.get("filter"))
    except ValueError as exc:
        run.error("MANIFEST_INVALID", str(exc), label)
        return None
    completeness = manifest.get("completeness")
    expected_completeness = "proven" if export_filter.empty else "not-proven"
    if completeness != expected_completeness:
        run.error("MANIFEST_INVALID", f"completeness `{completeness}` for this filter", label)
    return rng, export_filter


def _proofs(
    run: Run, path: Path, rng: dict[str, int], export_filter: ExportFilter
) -> tuple[Any, list[Any] | None]:
    start: Any = None
    if rng["from"] > 0 and export_filter.empty:
        start_path = path / "proofs" / "start.json"
        try:
            start = json.loads(start_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            run.error("PROOF_INVALID", f"proofs/start.json unreadable: {exc}", str(start_path))
            start = {}
    inclusion: list[Any] | None = None
    if not export_filter.empty:
        inclusion = []
        inclusion_path = path / "proofs" / "inclusion.jsonl"
        try:
            for text in inclusion_path.read_bytes().splitlines():
                inclusion.append(json.loads(text))
        except (OSError, ValueError) as exc:
            run.error(
                "PROOF_INVALID", f"proofs/inclusion.jsonl unreadable: {exc}", str(inclusion_path)
            )
    return start, inclusion


def source_for_bundle(run: Run, path: Path) -> tuple[Source, dict[str, Any]] | None:
    """An export bundle's records, notes and proofs, once its manifest, signature and
    files were checked; with the manifest."""
    read = _read_manifest(run, path)
    if read is None:
        return None
    manifest, manifest_bytes = read
    label = str(path / MANIFEST_FILE)
    origin = _origin(run, manifest, label)
    if origin is None:
        return None
    run.report.origin = origin
    sig_path = path / MANIFEST_SIG_FILE
    try:
        note_bytes = sig_path.read_bytes()
    except OSError:
        run.error("MANIFEST_SIG_INVALID", "manifest.sig is missing", str(sig_path))
    else:
        run.manifest_signature(note_bytes, origin, manifest_bytes, manifest.get("created"),
                               str(sig_path))  # fmt: skip
    listed, digests, deferred = _check_listed(run, path, manifest)
    _check_unlisted(run, path, listed)
    claims = _claims(run, manifest, label)
    if claims is None:
        return None
    rng, export_filter = claims
    requested = manifest.get("requested")
    run.report.requested = requested if isinstance(requested, dict) else None
    requested_to = requested.get("to_ts") if isinstance(requested, dict) else None
    record_files = sorted(
        (str(p), p) for p in (path / "records").glob("*.jsonl") if not p.is_symlink()
    )
    cp_path = path / "checkpoints.notes"
    cosigned_path = path / COSIGNED_FILE
    start, inclusion = _proofs(run, path, rng, export_filter)
    source = Source(
        origin, record_files, cp_path.read_bytes() if cp_path.is_file() else b"", str(cp_path),
        start, str(path / "proofs" / "start.json"), rng["from"], live=False,
        filter=None if export_filter.empty else export_filter, inclusion=inclusion,
        inclusion_label=str(path / "proofs" / "inclusion.jsonl"), range_to=rng["to"],
        requested_to=requested_to if isinstance(requested_to, str) else None,
        cosigned=(
            cosigned_path.read_bytes()
            if COSIGNED_FILE in listed and cosigned_path.is_file()
            else b""
        ),
        cosigned_label=str(cosigned_path), digests=digests, listed=listed, deferred=deferred,
        hashed={target: _CountingDigest() for target in deferred},
    )  # fmt: skip
    return source, manifest
