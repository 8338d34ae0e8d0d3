"""Offline verification of live log directories and export bundles.

The verifier trusts nothing but a pinned keyring (and, optionally, its own state file of
checkpoints seen before). Steps, for each log or bundle:

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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
    path_problem,
)
from gateway.audit.canonical import canonical_dumps, canonicalize, is_jcs_safe, strict_loads
from gateway.audit.chain import GENESIS_PREV, record_bytes_of_line
from gateway.audit.errors import AuditError, MalformedJSON, NoteError, ProofError
from gateway.audit.keyring import Keyring, KeyringEntry
from gateway.audit.merkle import CompactRange, leaf_hash, verify_inclusion
from gateway.audit.note import Checkpoint, parse_checkpoint_text, parse_note, split_notes
from gateway.audit.record import DEFAULT_UNCOVERED_BOUND, parse_ts, record_shape_problem
from gateway.audit.report import render_tally
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    COSIGNED_FILE,
    META_FILE,
    PRUNED_FILE,
    QUARANTINE_DIR,
    LineBlocks,
    LogMeta,
    StartState,
    list_segments,
)
from gateway.audit.views import VIEW_FILES, ViewBuilder, csv_chunks, head_facts
from gateway.audit.witness import CosignerKey

__all__ = [
    "CODES",
    "Finding",
    "SourceReport",
    "VerifyOptions",
    "VerifyReport",
    "load_state",
    "save_state",
    "verify_paths",
    "verify_source",
]

#: Every error and warning code, with what it means.
CODES: dict[str, str] = {
    "RECORD_MALFORMED": "a line is not strict I-JSON (duplicate keys, NaN, bad UTF-8...)",
    "TRUNCATED_LINE": "the last line has no newline (torn write)",
    "RECORD_NONCANONICAL": "a line is not in RFC 8785 canonical form",
    "RECORD_INVALID": "a record lacks a required field or has a bad value",
    "RECORD_SIG_INVALID": "a record signature does not verify",
    "ORIGIN_MISMATCH": "a record or checkpoint belongs to another log",
    "SEQ_GAP": "records are missing",
    "SEQ_DUPLICATE": "a sequence number appears twice",
    "SEQ_ORDER": "records are out of order",
    "PREV_MISMATCH": "a record does not link to the one before it",
    "TS_REGRESSION": "time goes backwards",
    "UNTRUSTED_KEY": "no pinned key vouches for this material",
    "KEY_NOT_VALID_AT_TIME": "the key was not valid at the material's time",
    "CHECKPOINT_MALFORMED": "a checkpoint note cannot be parsed",
    "CHECKPOINT_SIG_INVALID": "a checkpoint signature from a known key fails",
    "ROOT_MISMATCH": "the records do not hash to a signed checkpoint's root",
    "FORK": "two different roots for the same tree size",
    "ROLLBACK": "an older state than one already seen",
    "RANGE_INCOMPLETE": "records end before the last signed checkpoint",
    "RECORD_UNCOVERED": "a bundle holds records no checkpoint covers",
    "NO_CHECKPOINT": "no trusted checkpoint covers the records",
    "STALE_TAIL": "the last checkpoint is older than the requested end",
    "CHECKPOINT_GAP": "a gap between checkpoints without a restart record",
    "PROOF_INVALID": "a start, inclusion or consistency proof does not verify",
    "MANIFEST_INVALID": "the bundle manifest is malformed or its claims are inconsistent",
    "MANIFEST_SIG_INVALID": "the manifest signature is missing or does not verify",
    "FILE_MISSING": "a listed file is missing",
    "FILE_UNEXPECTED": "a file is not listed in the manifest",
    "FILE_HASH_MISMATCH": "a file's size or SHA-256 differs from the manifest",
    "PATH_INVALID": "a path escapes the bundle or is a symlink",
    "FILTER_MISMATCH": "a record in a filtered bundle does not match the filter",
    "INPUT_UNREADABLE": "the path is neither a log directory nor a bundle",
    "TAIL_BEYOND_BOUND": "more records after the last checkpoint than a crash can leave",
    "RECORD_AFTER_STOP": "a record follows a `stop` record without a `start` record",
    "WITNESS_SIG_INVALID": "a cosignature by a pinned witness key does not verify",
    "VIEW_MISMATCH": "a CSV, JSONL or HTML view differs from the views of the records",
    "WITNESS_QUORUM": "no verified checkpoint carries cosignatures from enough pinned witnesses",
    # warnings
    "UNCHECKPOINTED_TAIL": "records after the last checkpoint are not signed yet",
    "KEY_REVOKED": "material is signed by a key later revoked",
    "STATE_NOT_COMPARABLE": "the stored state predates this range; consistency not proven",
    "QUARANTINE_PRESENT": "recovery moved bytes aside; see quarantine/",
    "COMPLETENESS_NOT_PROVEN": "filtered export: only the listed records are proven",
    "WITNESS_TAIL": "records after the newest witnessed checkpoint rest on the log key alone",
    "VIEW_NOT_CHECKED": "views made by another version are not compared with the records",
    "KEY_BESIDE_LOG": "a key file sits in the log directory: whoever copies the log gets it",
}


@dataclass(frozen=True)
class Finding:
    """One problem found."""

    code: str
    detail: str
    file: str | None = None
    line: int | None = None
    seq: int | None = None

    def sort_key(self) -> tuple[str, int, int, str, str]:
        """Deterministic order: file, line, seq, code."""
        return (self.file or "", self.line or 0, self.seq or 0, self.code, self.detail)

    def text(self) -> str:
        """`file:line: CODE: detail`."""
        where = self.file or "-"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.code}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        data: dict[str, Any] = {"code": self.code, "detail": self.detail}
        for key in ("file", "line", "seq"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data


@dataclass
class VerifyOptions:
    """Verifier settings."""

    #: Check per-record signatures when present (they cost ~170 us each).
    record_signatures: bool = True
    #: Longest checkpoint gap without a `start` record in between.
    max_gap_seconds: float = 120.0
    #: The auditor's requested end of the range (RFC 3339); older last checkpoint = stale.
    until: str | None = None
    #: Require this origin (otherwise taken from the log or bundle, and checked against keys).
    expect_origin: str | None = None
    #: Called with (bytes done, bytes total) while records stream.
    progress: Callable[[int, int], None] | None = None
    #: Witness keys the auditor pins (`cosignature/v1`); cosignatures by others are ignored.
    witness_keys: tuple[CosignerKey, ...] = ()
    #: Cosignatures by distinct pinned witnesses required on a verified checkpoint.
    min_witnesses: int = 0


@dataclass
class SourceReport:
    """Result for one log directory or bundle."""

    path: str
    kind: str
    origin: str = ""
    requested: dict[str, Any] | None = None
    found: dict[str, Any] = field(default_factory=dict)
    records_total: int = 0
    records_invalid: int = 0
    checkpoints_total: int = 0
    checkpoints_invalid: int = 0
    completeness: str = "not-proven"
    head: dict[str, Any] | None = None
    #: The largest checkpoint with the most pinned witness cosignatures: size, witnesses.
    witnessed: dict[str, Any] | None = None
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """True when no error was found."""
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "path": self.path,
            "kind": self.kind,
            "result": "valid" if self.valid else "invalid",
            "origin": self.origin,
            "requested": self.requested,
            "found": self.found,
            "records": {
                "total": self.records_total,
                "valid": self.records_total - self.records_invalid,
                "invalid": self.records_invalid,
            },
            "checkpoints": {
                "total": self.checkpoints_total,
                "valid": self.checkpoints_total - self.checkpoints_invalid,
                "invalid": self.checkpoints_invalid,
            },
            "completeness": self.completeness,
            "head": self.head,
            "witnessed": self.witnessed,
            "errors": [f.to_json() for f in sorted(self.errors, key=Finding.sort_key)],
            "warnings": [f.to_json() for f in sorted(self.warnings, key=Finding.sort_key)],
        }


@dataclass
class VerifyReport:
    """Result for every path verified in one run."""

    sources: list[SourceReport]

    @property
    def valid(self) -> bool:
        """True when every source is valid."""
        return all(s.valid for s in self.sources)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "format": "jurisgate-audit-verify-report/1",
            "result": "valid" if self.valid else "invalid",
            "logs": [s.to_json() for s in self.sources],
        }


# -- state file (the verifier as a witness) ---------------------------------------------

STATE_FORMAT = "jurisgate-audit-verifier-state/1"


def load_state(path: Path) -> dict[str, dict[str, Any]]:
    """The verifier state: latest verified {size, root, ts} per origin."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a {STATE_FORMAT} file")
    logs = data.get("logs", {})
    if not isinstance(logs, dict):
        raise ValueError(f"{path}: `logs` must be an object")
    return logs


def save_state(path: Path, logs: dict[str, dict[str, Any]]) -> None:
    """Write the state file atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"format": STATE_FORMAT, "logs": logs}, indent=2, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    os.replace(tmp, path)


# -- the verification of one source -----------------------------------------------------


@dataclass
class _TrustedCheckpoint:
    checkpoint: Checkpoint
    line: int


class _Run:
    """Verification of one source; accumulates findings into `report`."""

    def __init__(
        self,
        report: SourceReport,
        keyring: Keyring,
        options: VerifyOptions,
        state: dict[str, dict[str, Any]],
    ) -> None:
        self.report = report
        self.keyring = keyring
        self.options = options
        self.state = state
        self._by_name_id: dict[tuple[str, bytes], list[KeyringEntry]] = {}
        self._by_kid: dict[str, list[KeyringEntry]] = {}
        for entry in keyring:
            self._by_name_id.setdefault((entry.name, entry.verifier.key_id), []).append(entry)
            self._by_kid.setdefault(entry.kid, []).append(entry)
        self._revoked_warned: set[str] = set()

    # findings
    def error(
        self,
        code: str,
        detail: str,
        file: str | None = None,
        line: int | None = None,
        seq: int | None = None,
    ) -> None:
        self.report.errors.append(Finding(code, detail, file, line, seq))

    def warn(
        self,
        code: str,
        detail: str,
        file: str | None = None,
        line: int | None = None,
        seq: int | None = None,
    ) -> None:
        self.report.warnings.append(Finding(code, detail, file, line, seq))

    def _note_revoked(self, entry: KeyringEntry, what: str) -> None:
        if entry.status == "revoked" and entry.kid not in self._revoked_warned:
            self._revoked_warned.add(entry.kid)
            self.warn(
                "KEY_REVOKED",
                f"{what} signed by key {entry.kid}, revoked at {entry.not_after}; trust it only "
                "up to the last checkpoint anchored outside the operator before then",
            )

    # checkpoints
    def checkpoints(
        self, data: bytes, label: str, origin: str, live: bool = False
    ) -> list[_TrustedCheckpoint]:
        notes, end = split_notes(data)
        trusted: list[_TrustedCheckpoint] = []
        line = 1
        last_offset = 0
        for offset, raw in notes:
            line += data.count(b"\n", last_offset, offset)
            last_offset = offset
            self.report.checkpoints_total += 1
            found = self._checkpoint(raw, label, line, origin)
            if found is None:
                self.report.checkpoints_invalid += 1
            else:
                trusted.append(_TrustedCheckpoint(found, line))
        if end < len(data):
            line += data.count(b"\n", last_offset, end)
            message = "incomplete note at the end of the file"
            if live:  # a writer may be appending right now, or recovery has not run yet
                self.warn("CHECKPOINT_MALFORMED", message, label, line)
            else:
                self.report.checkpoints_total += 1
                self.report.checkpoints_invalid += 1
                self.error("CHECKPOINT_MALFORMED", message, label, line)
        previous: _TrustedCheckpoint | None = None
        roots: dict[int, _TrustedCheckpoint] = {}
        for item in trusted:
            cp = item.checkpoint
            if previous is not None:
                if cp.ts < previous.checkpoint.ts:
                    self.error(
                        "TS_REGRESSION",
                        f"checkpoint ts {cp.ts} is before {previous.checkpoint.ts}",
                        label,
                        item.line,
                    )
                if cp.size < previous.checkpoint.size:
                    self.error(
                        "ROLLBACK",
                        f"checkpoint size {cp.size} after size {previous.checkpoint.size}",
                        label,
                        item.line,
                    )
            other = roots.get(cp.size)
            if other is not None and other.checkpoint.root != cp.root:
                self.error(
                    "FORK",
                    f"two signed roots at size {cp.size} (see line {other.line})",
                    label,
                    item.line,
                )
            roots.setdefault(cp.size, item)
            previous = item
        return trusted

    def _checkpoint(self, raw: bytes, label: str, line: int, origin: str) -> Checkpoint | None:
        try:
            note = parse_note(raw)
            checkpoint = parse_checkpoint_text(note.text)
        except NoteError as exc:
            self.error("CHECKPOINT_MALFORMED", str(exc), label, line)
            return None
        message = note.text.encode()
        valid: list[KeyringEntry] = []
        for sig in note.signatures:
            for entry in self._by_name_id.get((sig.name, sig.key_id), []):
                if entry.verifier.verify(message, sig.signature):
                    valid.append(entry)
                else:
                    self.error(
                        "CHECKPOINT_SIG_INVALID",
                        f"signature by {sig.name}+{sig.key_id.hex()} does not verify",
                        label,
                        line,
                    )
                    return None
        if checkpoint.origin != origin:
            self.error(
                "ORIGIN_MISMATCH",
                f"checkpoint for `{checkpoint.origin}`, not `{origin}`",
                label,
                line,
            )
            return None
        if not valid:
            self.error("UNTRUSTED_KEY", "no signature from a pinned key", label, line)
            return None
        scoped = [e for e in valid if e.covers(origin)]
        if not scoped:
            self.error(
                "UNTRUSTED_KEY", f"signing keys are not scoped to origin `{origin}`", label, line
            )
            return None
        timely = [e for e in scoped if e.valid_at(checkpoint.ts)]
        if not timely:
            kids = ", ".join(e.kid for e in scoped)
            self.error(
                "KEY_NOT_VALID_AT_TIME", f"key {kids} not valid at {checkpoint.ts}", label, line
            )
            return None
        if all(e.status == "revoked" for e in timely):
            self._note_revoked(timely[0], f"checkpoint at size {checkpoint.size}")
        return checkpoint

    def start_state(
        self, data: Any, label: str, trusted: Sequence[_TrustedCheckpoint], size: int
    ) -> StartState | None:
        try:
            start = StartState.from_json(data)
        except (ValueError, KeyError, TypeError, ProofError) as exc:
            self.error("PROOF_INVALID", f"start state unreadable: {exc}", label)
            return None
        if start.size != size:
            self.error(
                "PROOF_INVALID",
                f"start state is for size {start.size}, range starts at {size}",
                label,
            )
            return None
        anchors = [t for t in trusted if t.checkpoint.size == size]
        if not anchors:
            self.error("PROOF_INVALID", f"no trusted checkpoint at the start size {size}", label)
            return None
        root = anchors[0].checkpoint.root
        if start.compact.root() != root:
            self.error(
                "PROOF_INVALID",
                f"compact range does not hash to the checkpoint root at size {size}",
                label,
            )
            return None
        try:
            verify_inclusion(size - 1, size, start.prev_leaf, start.prev_leaf_proof, root)
        except ProofError as exc:
            self.error("PROOF_INVALID", f"last leaf before the range: {exc}", label)
            return None
        return start

    # records
    def key_problem(self, kid: str, ts: str, origin: str) -> tuple[str, str] | None:
        entries = [e for e in self._by_kid.get(kid, []) if e.covers(origin)]
        if not entries:
            return "UNTRUSTED_KEY", f"record key {kid} is not pinned for `{origin}`"
        timely = [e for e in entries if e.valid_at(ts)]
        if not timely:
            return "KEY_NOT_VALID_AT_TIME", f"record key {kid} is not valid at {ts}"
        if all(e.status == "revoked" for e in timely):
            self._note_revoked(timely[0], "records")
        return None

    def record_signature_ok(self, kid: str, leaf: bytes, sig_b64: str) -> bool:
        try:
            sig = base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError):
            return False
        return any(e.verifier.verify_record(leaf, sig) for e in self._by_kid.get(kid, []))


@dataclass
class _Line:
    file: str
    number: int
    raw: bytes
    terminated: bool


def _iter_lines(
    files: Sequence[tuple[str, Path]], progress: Callable[[int], None]
) -> Iterator[_Line]:
    for label, path in files:
        number = 0
        blocks = LineBlocks(path)
        done = 0
        for complete in blocks:
            for raw in complete:
                number += 1
                yield _Line(label, number, raw, True)
            del complete  # before the next block is read: memory stays at one block
            progress(blocks.size - done)
            done = blocks.size
        if blocks.tail:
            number += 1
            yield _Line(label, number, blocks.tail, False)
        progress(blocks.size - done)


class _Decoded:
    __slots__ = ("leaf", "obj", "record")

    def __init__(self, obj: dict[str, Any], record: dict[str, Any], leaf: bytes) -> None:
        self.obj = obj
        self.record = record
        self.leaf = leaf


def _decode(run: _Run, line: _Line) -> _Decoded | bytes:
    """Parse and check one stored line; on failure report and return a stand-in leaf."""
    raw = line.raw
    stand_in = leaf_hash(raw)
    if not line.terminated:
        run.error("TRUNCATED_LINE", "last line has no newline", line.file, line.number)
        return stand_in
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        run.error("RECORD_MALFORMED", f"not JSON: {exc}", line.file, line.number)
        return stand_in
    canonical = is_jcs_safe(obj) and canonical_dumps(obj) == raw
    if not canonical:
        try:
            strict_loads(raw)
        except MalformedJSON as exc:
            run.error("RECORD_MALFORMED", str(exc), line.file, line.number)
            return stand_in
        if not is_jcs_safe(obj):
            try:
                reference = canonicalize(obj)
            except Exception:  # noqa: BLE001 - any canonicalization failure is malformed
                reference = b""
            if reference == raw:
                run.error(
                    "RECORD_INVALID",
                    "value outside the allowed subset (float or big int)",
                    line.file,
                    line.number,
                )
                return stand_in
        run.error(
            "RECORD_NONCANONICAL", "line is not in RFC 8785 canonical form", line.file, line.number
        )
        return stand_in
    if (
        not isinstance(obj, dict)
        or not set(obj) <= {"r", "s"}
        or not isinstance(obj.get("r"), dict)
    ):
        run.error(
            "RECORD_MALFORMED",
            'line must be {"r": record[, "s": signature]}',
            line.file,
            line.number,
        )
        return stand_in
    body = record_bytes_of_line(raw)
    if body is None:
        run.error("RECORD_MALFORMED", "unexpected line layout", line.file, line.number)
        return stand_in
    record: dict[str, Any] = obj["r"]
    problem = record_shape_problem(record)
    if problem is not None:
        run.error("RECORD_INVALID", problem, line.file, line.number)
        return leaf_hash(body)
    return _Decoded(obj, record, leaf_hash(body))


def _check_record_common(run: _Run, line: _Line, decoded: _Decoded, origin: str) -> bool:
    record = decoded.record
    ok = True
    seq = record["seq"]
    if record["log"] != origin:
        run.error(
            "ORIGIN_MISMATCH", f"record of log `{record['log']}`", line.file, line.number, seq
        )
        ok = False
    problem = run.key_problem(record["kid"], record["ts"], origin)
    if problem is not None:
        run.error(problem[0], problem[1], line.file, line.number, seq)
        ok = False
    sig = decoded.obj.get("s")
    if sig is not None and run.options.record_signatures:
        if not isinstance(sig, str) or not run.record_signature_ok(
            record["kid"], decoded.leaf, sig
        ):
            run.error(
                "RECORD_SIG_INVALID",
                "record signature does not verify",
                line.file,
                line.number,
                seq,
            )
            ok = False
    return ok


@dataclass
class _Source:
    origin: str
    record_files: list[tuple[str, Path]]
    checkpoints: bytes
    checkpoints_label: str
    start: Any | None
    start_label: str
    start_size: int
    live: bool
    filter: ExportFilter | None = None
    inclusion: list[Any] | None = None
    inclusion_label: str = ""
    range_to: int | None = None
    requested_to: str | None = None
    cosigned: bytes = b""
    cosigned_label: str = ""
    views: _Views | None = None


def _stream_contiguous(
    run: _Run,
    src: _Source,
    trusted: list[_TrustedCheckpoint],
    start: StartState | None,
    progress: Callable[[int], None],
) -> None:
    report = run.report
    origin = src.origin
    sizes: dict[int, list[_TrustedCheckpoint]] = {}
    for item in trusted:
        sizes.setdefault(item.checkpoint.size, []).append(item)
    last = max((t.checkpoint.size for t in trusted), default=None)
    base = start.size if start is not None else 0
    compact = start.compact.copy() if start is not None else CompactRange()
    prev = start.prev_leaf if start is not None else GENESIS_PREV
    expect_root_at = _state_size(run, origin)
    roots_at: dict[int, bytes] = {}
    if expect_root_at is not None and expect_root_at == base:
        roots_at[base] = compact.root()
    position = base
    expected_seq = base
    holes: list[list[int]] = []
    jumps: list[tuple[int, str, int]] = []
    last_ts = ""
    first_ts: str | None = None
    last_type: str | None = None
    starts: list[int] = []
    tail = 0
    bound = DEFAULT_UNCOVERED_BOUND
    tail_mark: str | None = None  # a `start` or `stop` record among the uncovered ones
    tail_blamed = False
    # A broken `prev` link waits for the next record to tell which side changed.
    broken_link: tuple[tuple[str, int, int | None], tuple[str, int, int | None]] | None = None
    last_line_at: tuple[str, int, int | None] = ("", 0, None)
    for line in _iter_lines(src.record_files, progress):
        in_tail = src.live and last is not None and position >= last
        if in_tail:
            # Not covered by a checkpoint yet (a live writer, or a crash before recovery):
            # chain checks still apply; a torn last line is expected here, so only a warning.
            tail += 1
            if not line.terminated:
                run.warn(
                    "TRUNCATED_LINE", "torn line after the last checkpoint", line.file, line.number
                )
                position += 1
                continue
        report.records_total += 1
        errors_before = len(report.errors)
        decoded = _decode(run, line)
        if isinstance(decoded, bytes):
            leaf = decoded
        else:
            leaf = decoded.leaf
            record = decoded.record
            seq: int = record["seq"]
            _check_record_common(run, line, decoded, origin)
            if seq == expected_seq:
                expected_seq += 1
            elif seq > expected_seq:
                holes.append([expected_seq, seq])
                jumps.append((expected_seq, line.file, line.number))
                expected_seq = seq + 1
            elif _fill_hole(holes, seq):
                run.error(
                    "SEQ_ORDER",
                    f"seq {seq} after seq {expected_seq - 1}",
                    line.file,
                    line.number,
                    seq,
                )
            else:
                run.error("SEQ_DUPLICATE", f"seq {seq} appears again", line.file, line.number, seq)
            link_ok = record["prev"] == prev.hex()
            here = (line.file, line.number, seq)
            if broken_link is not None:
                before, after = broken_link
                broken_link = None
                if link_ok and before[2] is not None:
                    # Only the link into `after` broke: the record before it changed.
                    _blame_changed(run, before, f"seq {after[2]} names another `prev`")
                elif link_ok:
                    _blame_changed(run, after, "its `prev` is not the start state's last leaf")
                else:
                    # The links on both sides of `after` broke: `after` itself changed.
                    _blame_changed(run, after, "neither its `prev` nor the next record's fit")
            elif not link_ok:
                broken_link = (last_line_at, here)
            last_line_at = here
            ts = record["ts"]
            if ts < last_ts:
                run.error("TS_REGRESSION", f"ts {ts} before {last_ts}", line.file, line.number, seq)
            else:
                last_ts = ts
            if first_ts is None:
                first_ts = ts
            kind = record["type"]
            if last_type == "stop" and kind != "start":
                run.error(
                    "RECORD_AFTER_STOP",
                    f"{kind} record after a `stop` record without a `start` record",
                    line.file,
                    line.number,
                    seq,
                )
            if in_tail:
                if tail_mark == "stop" or (tail_mark == "start" and kind != "recovery"):
                    run.error(
                        "TAIL_BEYOND_BOUND",
                        f"{kind} record after an uncovered `{tail_mark}` record: a crash "
                        "cannot leave this",
                        line.file,
                        line.number,
                        seq,
                    )
                if kind in ("start", "stop"):
                    tail_mark = kind
                if tail > bound and not tail_blamed:
                    tail_blamed = True
                    run.error(
                        "TAIL_BEYOND_BOUND",
                        f"more than {bound} records after the last checkpoint (size {last}): "
                        "a crash leaves at most that many; notes were removed or records added",
                        line.file,
                        line.number,
                        seq,
                    )
            elif kind == "start":
                declared = record.get("uncovered_bound")
                bound = declared if type(declared) is int else DEFAULT_UNCOVERED_BOUND
            last_type = kind
            if last_type == "start":
                starts.append(position)
        if len(report.errors) != errors_before:
            report.records_invalid += 1
        compact.append(leaf)
        prev = leaf
        position += 1
        if position in sizes:
            root = compact.root()
            for item in sizes[position]:
                if item.checkpoint.root != root:
                    run.error(
                        "ROOT_MISMATCH",
                        f"records do not hash to the root signed at size {position}",
                        src.checkpoints_label,
                        item.line,
                        position - 1,
                    )
        if expect_root_at == position:
            roots_at[position] = compact.root()
    if broken_link is not None:
        before, after = broken_link
        if before[2] is None:
            _blame_changed(run, after, "its `prev` is not the start state's last leaf")
        else:
            _blame_changed(run, before, f"seq {after[2]} names another `prev`")
    for lo, hi in holes:
        if hi > lo:
            where = max((j for j in jumps if j[0] <= lo), default=(lo, None, None))
            run.error("SEQ_GAP", f"seq {lo}..{hi - 1} missing", where[1], where[2], lo)
    if tail:
        run.warn(
            "UNCHECKPOINTED_TAIL",
            f"{tail} records after the last checkpoint (size {last}) "
            "are not covered by a signature yet",
        )
    end = position - tail
    if last is None:
        if end > base or base > 0:
            run.error("NO_CHECKPOINT", "no trusted checkpoint covers the records")
    elif end < last:
        run.error(
            "RANGE_INCOMPLETE",
            f"records end at {end}, the signed checkpoint covers {last}",
            src.checkpoints_label,
        )
    elif end > last and not src.live:
        run.error(
            "RECORD_UNCOVERED", f"{end - last} records after the last checkpoint (size {last})"
        )
    if src.range_to is not None and last is not None and last != src.range_to:
        run.error(
            "MANIFEST_INVALID",
            f"manifest range ends at {src.range_to}, the last checkpoint is at {last}",
        )
    report.found = {"from": base, "to": end, "from_ts": first_ts, "to_ts": last_ts or None}
    if last is not None:
        head = max(trusted, key=lambda t: (t.checkpoint.size, t.checkpoint.ts)).checkpoint
        report.head = {
            "size": head.size,
            "root": base64.b64encode(head.root).decode(),
            "ts": head.ts,
        }
        if end >= last:
            roots_at.setdefault(last, head.root)
    report.completeness = "proven" if not report.errors else "incomplete"
    _check_gaps(run, trusted, starts, src.checkpoints_label)
    _check_stale(run, trusted, src.requested_to, last_type)
    _check_state(run, origin, base, end if last is None else min(end, last), roots_at)


def _blame_changed(run: _Run, where: tuple[str, int, int | None], why: str) -> None:
    """Report a broken hash chain at the record that was changed, not at its successor."""
    file, number, seq = where
    run.error(
        "PREV_MISMATCH",
        f"record seq {seq} is not the record its neighbours were chained to ({why}): "
        "it was changed, inserted or replaced",
        file or None,
        number or None,
        seq,
    )


def _fill_hole(holes: list[list[int]], seq: int) -> bool:
    for hole in holes:
        lo, hi = hole[0], hole[1]
        if lo <= seq < hi:
            if seq == lo:
                hole[0] += 1
            elif seq == hi - 1:
                hole[1] -= 1
            else:
                holes.append([seq + 1, hi])
                hole[1] = seq
            return True
    return False


def _stream_selective(
    run: _Run, src: _Source, trusted: list[_TrustedCheckpoint], progress: Callable[[int], None]
) -> None:
    report = run.report
    report.completeness = "not-proven"
    run.warn(
        "COMPLETENESS_NOT_PROVEN",
        "filtered export: authenticity of each record is "
        "proven, but not that every matching record is present",
    )
    last = max((t.checkpoint.size for t in trusted), default=None)
    if last is None or src.range_to is None or last != src.range_to:
        run.error("RANGE_INCOMPLETE", f"no trusted checkpoint at the range end {src.range_to}")
        return
    root = next(t.checkpoint.root for t in trusted if t.checkpoint.size == last)
    proofs = src.inclusion or []
    index = 0
    previous_seq = -1
    first_ts: str | None = None
    last_ts = ""
    for line in _iter_lines(src.record_files, progress):
        report.records_total += 1
        errors_before = len(report.errors)
        decoded = _decode(run, line)
        proof_entry = proofs[index] if index < len(proofs) else None
        index += 1
        if not isinstance(decoded, bytes):
            record = decoded.record
            seq = record["seq"]
            _check_record_common(run, line, decoded, src.origin)
            if src.filter is not None and not src.filter.matches(record):
                run.error(
                    "FILTER_MISMATCH",
                    "record does not match the manifest filter",
                    line.file,
                    line.number,
                    seq,
                )
            if seq == previous_seq:
                run.error("SEQ_DUPLICATE", f"seq {seq} appears again", line.file, line.number, seq)
            elif seq < previous_seq:
                run.error(
                    "SEQ_ORDER", f"seq {seq} after {previous_seq}", line.file, line.number, seq
                )
            previous_seq = max(previous_seq, seq)
            if record["ts"] < last_ts:
                run.error(
                    "TS_REGRESSION",
                    f"ts {record['ts']} before {last_ts}",
                    line.file,
                    line.number,
                    seq,
                )
            last_ts = max(last_ts, record["ts"])
            if first_ts is None:
                first_ts = record["ts"]
            try:
                if not isinstance(proof_entry, dict) or proof_entry.get("seq") != seq:
                    raise ProofError("no inclusion proof for this record")
                path = [bytes.fromhex(h) for h in proof_entry["proof"]]
                verify_inclusion(seq, last, decoded.leaf, path, root)
            except (ProofError, ValueError, KeyError, TypeError) as exc:
                run.error(
                    "PROOF_INVALID",
                    f"inclusion in the tree of size {last}: {exc}",
                    src.inclusion_label,
                    index,
                    seq,
                )
        if len(report.errors) != errors_before:
            report.records_invalid += 1
    if index != len(proofs):
        run.error(
            "PROOF_INVALID",
            f"{len(proofs)} inclusion proofs for {index} records",
            src.inclusion_label,
        )
    report.found = {"from": None, "to": last, "from_ts": first_ts, "to_ts": last_ts or None}
    head = next(t.checkpoint for t in trusted if t.checkpoint.size == last)
    report.head = {"size": head.size, "root": base64.b64encode(head.root).decode(), "ts": head.ts}
    _check_state(run, src.origin, last, last, {last: root})


def _seconds_between(a: str, b: str) -> float:
    return (parse_ts(b) - parse_ts(a)).total_seconds()


def _check_gaps(
    run: _Run, trusted: list[_TrustedCheckpoint], starts: list[int], label: str
) -> None:
    limit = run.options.max_gap_seconds
    for before, after in zip(trusted, trusted[1:], strict=False):
        gap = _seconds_between(before.checkpoint.ts, after.checkpoint.ts)
        if gap <= limit:
            continue
        lo, hi = before.checkpoint.size, after.checkpoint.size
        if any(lo <= p < hi for p in starts):
            continue
        run.error(
            "CHECKPOINT_GAP",
            f"{gap:.0f} s between checkpoints at sizes {lo} and {hi} without a start record",
            label,
            after.line,
        )


def _check_stale(
    run: _Run, trusted: list[_TrustedCheckpoint], requested_to: str | None, last_type: str | None
) -> None:
    until = run.options.until or requested_to
    if until is None or not trusted or last_type == "stop":
        return
    newest = max(t.checkpoint.ts for t in trusted)
    try:
        lag = _seconds_between(newest, until)
    except ValueError:
        run.error("MANIFEST_INVALID", f"requested end `{until}` is not RFC 3339")
        return
    if lag > run.options.max_gap_seconds:
        run.error(
            "STALE_TAIL",
            f"last checkpoint {newest} is {lag:.0f} s before the requested end {until}",
        )


def _state_size(run: _Run, origin: str) -> int | None:
    entry = run.state.get(origin)
    if isinstance(entry, dict) and type(entry.get("size")) is int:
        size: int = entry["size"]
        return size
    return None


def _check_state(run: _Run, origin: str, first: int, last: int, roots_at: dict[int, bytes]) -> None:
    size = _state_size(run, origin)
    if size is None:
        return
    entry = run.state[origin]
    try:
        root = base64.b64decode(entry.get("root", ""), validate=True)
    except (binascii.Error, ValueError):
        run.error("ROLLBACK", "state file entry has no valid root")
        return
    if size > last:
        run.error(
            "ROLLBACK",
            f"already verified size {size} (root {entry.get('root')}); this source ends at {last}",
        )
    elif size < first:
        run.warn(
            "STATE_NOT_COMPARABLE",
            f"state size {size} is before this range [{first}, {last}]; consistency not proven",
        )
    elif size in roots_at and roots_at[size] != root:
        run.error("FORK", f"root at size {size} differs from the one verified before")


def _source_for_log(run: _Run, path: Path) -> _Source | None:
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
    start: Any = None
    start_size = 0
    pruned_path = path / PRUNED_FILE
    if pruned_path.exists():
        try:
            start = json.loads(pruned_path.read_text(encoding="utf-8"))
            start_size = int(start.get("size", 0)) if isinstance(start, dict) else 0
        except (ValueError, OSError) as exc:
            run.error("PROOF_INVALID", f"{PRUNED_FILE} unreadable: {exc}", str(pruned_path))
            start = {}
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
    if files:
        first = files[0][1].name.removesuffix(".jsonl")
        if int(first) != start_size:
            run.error(
                "SEQ_GAP",
                f"first segment starts at {int(first)}, expected {start_size}",
                files[0][0],
            )
    cosigned_path = path / COSIGNED_FILE
    return _Source(
        origin,
        files,
        checkpoints,
        str(cp_path),
        start,
        str(pruned_path),
        start_size,
        live=True,
        cosigned=cosigned_path.read_bytes() if cosigned_path.is_file() else b"",
        cosigned_label=str(cosigned_path),
    )


def _file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _source_for_bundle(run: _Run, path: Path) -> _Source | None:
    report = run.report
    manifest_path = path / MANIFEST_FILE
    sig_path = path / MANIFEST_SIG_FILE
    try:
        manifest_bytes = manifest_path.read_bytes()
        manifest = strict_loads(manifest_bytes)
    except OSError:
        run.error("FILE_MISSING", "manifest.json is missing", str(manifest_path))
        return None
    except MalformedJSON as exc:
        run.error("MANIFEST_INVALID", str(exc), str(manifest_path))
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        run.error("MANIFEST_INVALID", f"not a {BUNDLE_FORMAT} manifest", str(manifest_path))
        return None
    if canonicalize(manifest) != manifest_bytes:
        run.error("MANIFEST_INVALID", "manifest is not canonical JSON", str(manifest_path))
    origin = manifest.get("origin")
    if not isinstance(origin, str) or not origin:
        run.error("MANIFEST_INVALID", "manifest has no origin", str(manifest_path))
        return None
    if run.options.expect_origin and origin != run.options.expect_origin:
        run.error(
            "ORIGIN_MISMATCH",
            f"bundle is `{origin}`, expected `{run.options.expect_origin}`",
            str(manifest_path),
        )
        origin = run.options.expect_origin
    report.origin = origin
    created = manifest.get("created")
    # manifest signature
    try:
        note = parse_note(sig_path.read_bytes())
        if note.text != manifest_note_text(origin, manifest_bytes):
            raise NoteError("the signed text does not name this manifest")
        valid, _unknown = note.verify(run.keyring.verifiers())
        scoped = [e for v in valid if (e := run.keyring.find(v)) is not None and e.covers(origin)]
        if not scoped:
            raise NoteError("no signature from a pinned key scoped to the origin")
        if isinstance(created, str) and not any(e.valid_at(created) for e in scoped):
            run.error(
                "KEY_NOT_VALID_AT_TIME", f"manifest key not valid at {created}", str(sig_path)
            )
    except OSError:
        run.error("MANIFEST_SIG_INVALID", "manifest.sig is missing", str(sig_path))
    except NoteError as exc:
        run.error("MANIFEST_SIG_INVALID", str(exc), str(sig_path))
    # listed files
    listed: set[str] = set()
    files = manifest.get("files")
    if not isinstance(files, list):
        run.error("MANIFEST_INVALID", "manifest `files` must be a list", str(manifest_path))
        files = []
    for item in files:
        if not isinstance(item, dict):
            run.error("MANIFEST_INVALID", "file entry must be an object", str(manifest_path))
            continue
        rel = item.get("path")
        problem = path_problem(rel)
        if problem is not None or rel in listed:
            run.error("PATH_INVALID", problem or f"path `{rel}` listed twice", str(manifest_path))
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
        digest, size = _file_sha256(target)
        if digest != item.get("sha256") or size != item.get("bytes"):
            run.error("FILE_HASH_MISMATCH", f"`{rel}` differs from the manifest", str(target))
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
    # claims
    rng = manifest.get("range")
    if (
        not isinstance(rng, dict)
        or type(rng.get("from")) is not int
        or type(rng.get("to")) is not int
    ):
        run.error("MANIFEST_INVALID", "manifest `range` must be {from, to}", str(manifest_path))
        return None
    try:
        export_filter = ExportFilter.from_json(manifest.get("filter"))
    except ValueError as exc:
        run.error("MANIFEST_INVALID", str(exc), str(manifest_path))
        return None
    completeness = manifest.get("completeness")
    expected_completeness = "proven" if export_filter.empty else "not-proven"
    if completeness != expected_completeness:
        run.error(
            "MANIFEST_INVALID", f"completeness `{completeness}` for this filter", str(manifest_path)
        )
    requested = manifest.get("requested")
    report.requested = requested if isinstance(requested, dict) else None
    requested_to = requested.get("to_ts") if isinstance(requested, dict) else None
    record_files = sorted(
        (str(p), p) for p in (path / "records").glob("*.jsonl") if not p.is_symlink()
    )
    cp_path = path / "checkpoints.notes"
    checkpoints = cp_path.read_bytes() if cp_path.is_file() else b""
    cosigned_path = path / COSIGNED_FILE
    cosigned_bytes = (
        cosigned_path.read_bytes() if COSIGNED_FILE in listed and cosigned_path.is_file() else b""
    )
    start: Any = None
    start_label = str(path / "proofs" / "start.json")
    if rng["from"] > 0 and export_filter.empty:
        try:
            start = json.loads((path / "proofs" / "start.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            run.error("PROOF_INVALID", f"proofs/start.json unreadable: {exc}", start_label)
            start = {}
    inclusion: list[Any] | None = None
    inclusion_label = str(path / "proofs" / "inclusion.jsonl")
    if not export_filter.empty:
        inclusion = []
        try:
            for text in (path / "proofs" / "inclusion.jsonl").read_bytes().splitlines():
                inclusion.append(json.loads(text))
        except (OSError, ValueError) as exc:
            run.error("PROOF_INVALID", f"proofs/inclusion.jsonl unreadable: {exc}", inclusion_label)
    view_args = (
        path,
        listed,
        record_files,
        manifest,
        {
            "origin": origin,
            "range_from": rng["from"],
            "range_to": rng["to"],
            "completeness": completeness if isinstance(completeness, str) else "",
            "filter_text": (
                json.dumps(export_filter.to_json())
                if not export_filter.empty
                else "none (contiguous)"
            ),
        },
    )
    views = _Views(view_args)
    if sum(p.stat().st_size for _label, p in record_files) < PARALLEL_VIEWS_BYTES:
        views.check(run)
    else:
        views.start()
    return _Source(
        origin,
        record_files,
        checkpoints,
        str(cp_path),
        start,
        start_label,
        rng["from"],
        live=False,
        filter=None if export_filter.empty else export_filter,
        inclusion=inclusion,
        inclusion_label=inclusion_label,
        range_to=rng["to"],
        requested_to=requested_to if isinstance(requested_to, str) else None,
        cosigned=cosigned_bytes,
        cosigned_label=str(path / COSIGNED_FILE),
        views=views,
    )


#: A bundle with more record bytes than this has its views made again in a second
#: process while this one checks the records: the two passes are independent, so on two
#: cores they overlap. Smaller bundles do both here (a process costs a fraction of a second).
PARALLEL_VIEWS_BYTES = 64 << 20


class _Findings:
    """Findings collected apart from a `_Run` (in the process that checks the views)."""

    def __init__(self) -> None:
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []

    def error(
        self,
        code: str,
        detail: str,
        file: str | None = None,
        line: int | None = None,
        seq: int | None = None,
    ) -> None:
        self.errors.append(Finding(code, detail, file, line, seq))

    def warn(
        self,
        code: str,
        detail: str,
        file: str | None = None,
        line: int | None = None,
        seq: int | None = None,
    ) -> None:
        self.warnings.append(Finding(code, detail, file, line, seq))


def _view_findings(
    path: Path,
    listed: set[str],
    record_files: Sequence[tuple[str, Path]],
    manifest: dict[str, Any],
    options: dict[str, Any],
) -> tuple[list[Finding], list[Finding]]:
    found = _Findings()
    _check_views(found, path, listed, record_files, manifest, **options)
    return found.errors, found.warnings


class _Views:
    """The comparison of a bundle's views with its records, here or in a helper process."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        self._args = args
        self._helper: Apart | None = None
        self._done = False

    def check(self, run: _Run) -> None:
        """Compare here, now."""
        self._done = True
        errors, warnings = _view_findings(*self._args)
        run.report.errors.extend(errors)
        run.report.warnings.extend(warnings)

    def start(self) -> None:
        """Compare in a helper process; `finish` collects the findings."""
        path, listed, record_files, manifest, options = self._args
        files = [(label, str(p)) for label, p in record_files]
        self._helper = Apart("verify-views", [str(path), sorted(listed), files, manifest, options])

    def finish(self, run: _Run) -> None:
        """Add the findings of a comparison started with `start` (or compare now)."""
        if self._done:
            return
        if self._helper is None:
            self.check(run)
            return
        self._done = True
        try:
            errors, warnings = self._helper.result()
        except AuditError:
            self.check(run)
            return
        run.report.errors.extend(Finding(**f) for f in errors)
        run.report.warnings.extend(Finding(**f) for f in warnings)


class _DigestSink:
    """A view that is hashed, not kept."""

    def __init__(self, digest: Any) -> None:
        self.write = digest.update


def _check_views(
    run: _Run | _Findings,
    path: Path,
    listed: set[str],
    record_files: Sequence[tuple[str, Path]],
    manifest: dict[str, Any],
    *,
    origin: str,
    range_from: int,
    range_to: int,
    completeness: str,
    filter_text: str,
) -> None:
    """Make the views again from the bundle's records and compare them byte for byte."""
    present = [rel for rel in VIEW_FILES if rel in listed and (path / rel).is_file()]
    if not present:
        return
    if manifest.get("generator") != f"jurisgate {__version__}":
        run.warn(
            "VIEW_NOT_CHECKED",
            f"made by `{manifest.get('generator')}`: its views are not compared with the "
            "records; trust the records, not the views",
        )
        return
    broken: list[Path] = []  # record files that did not parse

    def records() -> Iterator[dict[str, Any]]:
        # Read again for each view, one record file at a time: memory stays bounded by a
        # segment (plus the report's counters), whatever the bundle's size.
        for _label, record_path in record_files:
            for line in record_path.read_bytes().splitlines():
                try:
                    record = orjson.loads(line)["r"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    broken.append(record_path)
                    return
                if not isinstance(record, dict):
                    broken.append(record_path)
                    return
                yield record

    created = manifest.get("created")
    notes_path, cosigned_path = path / "checkpoints.notes", path / COSIGNED_FILE
    head_root, witnesses = head_facts(
        notes_path.read_bytes() if notes_path.is_file() else b"",
        cosigned_path.read_bytes() if COSIGNED_FILE in listed and cosigned_path.is_file() else b"",
        range_to,
    )
    # One pass makes the JSONL view, the report and (usually) the CSV; a second pass
    # makes the CSV only when a record has a field the first one lacked.
    jsonl_digest, csv_digest = hashlib.sha256(), hashlib.sha256()
    views = ViewBuilder(_DigestSink(jsonl_digest), _DigestSink(csv_digest))
    for record in records():
        views.add(record)
    if broken:
        return  # the record checks report it; views of broken records mean nothing
    views.finish()
    report = render_tally(
        views.tally,
        origin=origin,
        range_from=range_from,
        range_to=range_to,
        completeness=completeness,
        created=created if isinstance(created, str) else "",
        filter_text=filter_text,
        head_root=head_root,
        witnesses=witnesses,
    ).encode()
    expected_digests = {
        "views/records.jsonl": jsonl_digest.hexdigest(),
        "report.html": hashlib.sha256(report).hexdigest(),
    }
    if "views/records.csv" in present:
        if not views.csv_complete:
            csv_digest = hashlib.sha256()
            for piece in csv_chunks(records(), views.columns()):
                csv_digest.update(piece)
        expected_digests["views/records.csv"] = csv_digest.hexdigest()
    if broken:
        return
    for rel in present:
        digest, _size = _file_sha256(path / rel)
        if digest != expected_digests[rel]:
            run.error(
                "VIEW_MISMATCH",
                f"`{rel}` is not the view of the bundle's records (made again and compared)",
                str(path / rel),
            )


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
    run = _Run(report, keyring, options, state or {})
    if not root.is_dir():
        run.error("INPUT_UNREADABLE", "not a directory", str(root))
        return report
    if not is_bundle and not (root / META_FILE).exists():
        run.error(
            "INPUT_UNREADABLE",
            f"neither a bundle ({MANIFEST_FILE}) nor a log ({META_FILE})",
            str(root),
        )
        return report
    src = _source_for_bundle(run, root) if is_bundle else _source_for_log(run, root)
    if src is None:
        return report
    report.origin = src.origin
    trusted = run.checkpoints(src.checkpoints, src.checkpoints_label, src.origin, src.live)
    cosigned, witnesses_at = _cosigned_checkpoints(run, src)
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

    try:
        if src.filter is not None:
            _stream_selective(run, src, trusted, progress)
            _check_witnesses(run, witnesses_at)
            return report
        start: StartState | None = None
        if src.start is not None and src.start_size > 0:
            start = run.start_state(src.start, src.start_label, trusted, src.start_size)
            if start is None:
                report.completeness = "incomplete"
                return report
        _stream_contiguous(run, src, trusted, start, progress)
        _check_witnesses(run, witnesses_at)
    finally:
        if src.views is not None:
            src.views.finish(run)
    if report.errors:
        report.completeness = "incomplete"
    return report


def _cosigned_checkpoints(
    run: _Run, src: _Source
) -> tuple[list[_TrustedCheckpoint], dict[tuple[int, bytes], set[str]]]:
    """Checkpoints of the cosigned file that a pinned log key signed, and which pinned
    witnesses cosigned each (size, root)."""
    trusted: list[_TrustedCheckpoint] = []
    witnesses_at: dict[tuple[int, bytes], set[str]] = {}
    if not src.cosigned:
        return trusted, witnesses_at
    notes, _end = split_notes(src.cosigned)
    data = src.cosigned
    line = 1
    last_offset = 0
    for offset, raw in notes:
        line += data.count(b"\n", last_offset, offset)
        last_offset = offset
        checkpoint = run._checkpoint(raw, src.cosigned_label, line, src.origin)
        if checkpoint is None:
            continue
        trusted.append(_TrustedCheckpoint(checkpoint, line))
        note = parse_note(raw)
        names = witnesses_at.setdefault((checkpoint.size, checkpoint.root), set())
        for key in run.options.witness_keys:
            for sig in note.signatures:
                if not key.matches(sig):
                    continue
                try:
                    key.verify(note.text, sig)
                except NoteError as exc:
                    run.error("WITNESS_SIG_INVALID", str(exc), src.cosigned_label, line)
                    continue
                names.add(key.name)
    return trusted, witnesses_at


def _check_witnesses(run: _Run, witnesses_at: dict[tuple[int, bytes], set[str]]) -> None:
    report = run.report
    need = run.options.min_witnesses
    best: tuple[int, set[str]] | None = None
    for (size, _root), names in witnesses_at.items():
        if names and (best is None or (len(names) >= need, size) > (len(best[1]) >= need, best[0])):
            best = (size, names)
    if best is not None:
        report.witnessed = {"size": best[0], "witnesses": sorted(best[1])}
    if need <= 0:
        return
    if best is None or len(best[1]) < need:
        found = f"at most {len(best[1])} at size {best[0]}" if best is not None else "none"
        run.error(
            "WITNESS_QUORUM",
            f"no verified checkpoint has cosignatures from {need} pinned witnesses ({found}); "
            "without them a rollback or a rewritten history by whoever holds the log key "
            "cannot be ruled out",
        )
        return
    head = report.head["size"] if report.head else 0
    if best[0] < head:
        run.warn(
            "WITNESS_TAIL",
            f"records {best[0]}..{head - 1} are after the newest checkpoint {need} witnesses "
            "cosigned; only the log key vouches for them",
        )


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
    reports = [verify_source(p, keyring, options, state) for p in paths]
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
