"""Offline verification of live log directories and export bundles.

The verifier trusts nothing but a pinned keyring (and, optionally, its own state file of
checkpoints seen before). Steps, for each log or bundle:

0. A bundle of many logs (an index): each log's bundle is verified as below, then the
   index binding them (`multi`).
1. Bundle only: the manifest's signed note, then every listed file's size and SHA-256;
   unlisted files, missing files and escaping paths are errors.
2. Checkpoints: parse as signed notes; a failing signature from a known key fails the note;
   one valid signature is needed from a pinned key scoped to the origin and valid at the
   checkpoint's `ts`; sizes and `ts` must not go backwards; two roots at one size is a fork.
3. Records, streamed: strict canonical form, shape, origin, contiguous `seq`, `prev`
   link, non-decreasing `ts`, `kid` valid at `ts`, record signature when present; the
   compact range is extended leaf by leaf and its root compared at every checkpoint size.
4. Range: records must reach the last checkpoint; a start state (pruned prefix or bundle
   start) must match the checkpoint at its size; filtered bundles check one inclusion
   proof per record instead and report completeness as not proven.
5. External anchors: the state file (latest size and root per origin) detects rollback
   and forks; a stale last checkpoint and long unexplained checkpoint gaps are errors.

Every problem is reported with a code, the file and line, in a deterministic order.

The package keeps trust apart from mechanics: `trust` (which keys, checkpoints and
cosignatures count) and `policy` (what a range proves, which gaps are errors) decide;
`sources` (reading logs and bundles), `decode` and `stream` (parsing, recomputing the
chain and the Merkle tree) and `viewcheck` (making the views again) do the work;
`findings` holds the vocabulary and `state` the auditor's state file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.audit.bundle import MANIFEST_FILE
from gateway.audit.keyring import Keyring
from gateway.audit.storage import META_FILE, StartState
from gateway.audit.verify import policy
from gateway.audit.verify.findings import (
    CODES,
    Finding,
    Findings,
    SourceReport,
    VerifyOptions,
    VerifyReport,
)
from gateway.audit.verify.multi import is_multi_bundle, verify_multi
from gateway.audit.verify.sources import check_deferred, source_for_bundle, source_for_log
from gateway.audit.verify.state import load_state, save_state
from gateway.audit.verify.stream import Source, stream_contiguous, stream_selective
from gateway.audit.verify.trust import Run
from gateway.audit.verify.viewcheck import ViewCheck

__all__ = [
    "CODES",
    "Finding",
    "Findings",
    "SourceReport",
    "VerifyOptions",
    "VerifyReport",
    "load_state",
    "save_state",
    "verify_paths",
    "verify_source",
]


def _open_source(run: Run, root: Path, is_bundle: bool) -> tuple[Source, ViewCheck | None] | None:
    if not is_bundle:
        src = source_for_log(run, root)
        return None if src is None else (src, None)
    found = source_for_bundle(run, root)
    if found is None:
        return None
    src, manifest = found
    views = ViewCheck(run, root, src, manifest)
    views.start()
    return src, views


def _check_records(run: Run, src: Source) -> None:
    options, report = run.options, run.report
    trusted = run.checkpoints(src.checkpoints, src.checkpoints_label, src.origin, src.live)
    cosigned, witnesses_at = run.cosigned_checkpoints(src.cosigned, src.cosigned_label, src.origin)
    if cosigned:
        # Witnessed heads are checked against the records like the log's own notes.
        trusted = sorted([*trusted, *cosigned], key=lambda t: t.checkpoint.ts)
    total = sum(p.stat().st_size for _label, p in src.record_files)
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        done += count
        if options.progress is not None:
            options.progress(done, total)

    if src.filter is not None:
        stream_selective(run, src, trusted, progress)
        policy.check_witnesses(run, witnesses_at)
        return
    start: StartState | None = None
    if src.start is not None and src.start_size > 0:
        start = run.start_state(src.start, src.start_label, trusted, src.start_size)
        if start is None:
            report.completeness = "incomplete"
            return
    stream_contiguous(run, src, trusted, start, progress)
    policy.check_witnesses(run, witnesses_at)


def verify_source(
    path: str | os.PathLike[str],
    keyring: Keyring,
    options: VerifyOptions | None = None,
    state: dict[str, dict[str, Any]] | None = None,
) -> SourceReport:
    """Verify one log directory or export bundle against a pinned keyring."""
    options = options or VerifyOptions()
    root = Path(path)
    is_bundle = (root / MANIFEST_FILE).exists()
    report = SourceReport(str(root), "bundle" if is_bundle else "log")
    run = Run(report, keyring, options, state or {})
    if not root.is_dir():
        run.error("INPUT_UNREADABLE", "not a directory", str(root))
        return report
    if not is_bundle and not (root / META_FILE).exists():
        run.error(
            "INPUT_UNREADABLE", f"neither a bundle ({MANIFEST_FILE}) nor a log ({META_FILE})",
            str(root),
        )  # fmt: skip
        return report
    opened = _open_source(run, root, is_bundle)
    if opened is None:
        return report
    src, views = opened
    report.origin = src.origin
    try:
        _check_records(run, src)
    finally:
        if views is not None:
            views.finish(run)
    check_deferred(run, src)
    if report.errors:
        report.completeness = "incomplete"
    return report


def verify_paths(
    paths: Sequence[str | os.PathLike[str]],
    keyring: Keyring,
    options: VerifyOptions | None = None,
    state_path: str | os.PathLike[str] | None = None,
) -> VerifyReport:
    """Verify several logs and bundles; with `state_path`, check against and then advance
    the stored state (size, root) of each origin when everything verified."""
    state_file = Path(state_path) if state_path is not None else None
    state = load_state(state_file) if state_file is not None else {}
    reports: list[SourceReport] = []
    for path in map(Path, paths):
        if is_multi_bundle(path):
            # Each log's bundle is verified as it would be alone, with the same trust.
            def one(sub: Path) -> SourceReport:
                return verify_source(sub, keyring, options, state)

            reports.extend(verify_multi(path, keyring, options or VerifyOptions(), one))
        else:
            reports.append(verify_source(path, keyring, options, state))
    result = VerifyReport(reports)
    if state_file is not None and result.valid:
        for report in reports:
            head = report.head
            if head is None or not report.origin:
                continue
            known = state.get(report.origin)
            if (
                isinstance(known, dict)
                and type(known.get("size")) is int
                and known["size"] > head["size"]
            ):
                continue
            state[report.origin] = head
        save_state(state_file, state)
    return result
