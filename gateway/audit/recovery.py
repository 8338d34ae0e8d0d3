"""Start-up recovery of a log directory (I/O shell; blocking, run off the event loop).

Rule 1: nothing covered by a signed checkpoint is ever truncated. Checkpoints are written
only after the records they cover are durable, so a log shorter than its last checkpoint,
or with a different root at that size, is loss or tampering, not a crash: recovery
refuses and names the operator command that opens a new epoch.

Rule 2: after the last checkpoint, a torn final line (no newline) and every line from the
first one that fails the checks (canonical form, seq, prev, origin, signature) onward are
moved to quarantine/ with their SHA-256; the writer then logs a `recovery` record.

Rule 3 (bounded adoption): records after the last signed checkpoint are adopted only
within the crash bound. The writer keeps at most one batch plus `max_unsynced_records`
records without a durable note, and fsyncs the note of every `start` and `stop` record
before going on; so a longer uncovered tail, records after a `stop`, or anything but the
`recovery` records of its own batch after an uncovered `start`, cannot come from a crash:
someone removed notes and rewrote records, and recovery refuses instead of signing them.
What is adopted is stated in the `recovery` record the writer logs next.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit.canonical import canonical_dumps, fast_loads, is_jcs_safe
from gateway.audit.chain import GENESIS_PREV, ChainState, record_bytes_of_line
from gateway.audit.errors import AuditRecoveryRefused, NoteError
from gateway.audit.merkle import CompactRange, leaf_hash
from gateway.audit.note import Checkpoint, parse_checkpoint_text, parse_note, split_notes
from gateway.audit.record import DEFAULT_UNCOVERED_BOUND, record_shape_problem
from gateway.audit.signing import Verifier
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    PRUNED_FILE,
    QUARANTINE_DIR,
    SEGMENTS_DIR,
    LogMeta,
    StartState,
    fsync_dir,
    list_segments,
    split_lines,
    write_all,
)
from gateway.audit.witness import WitnessedHead

__all__ = [
    "Adopted",
    "Recovered",
    "inspect_hint",
    "new_epoch_command",
    "new_epoch_hint",
    "recover",
]


def new_epoch_command(directory: Path) -> str:
    """The operator command that archives a damaged epoch and starts a new one."""
    return f"jurisgate audit new-epoch --log {directory} --key KEY.pem --reason TEXT"


def new_epoch_hint(directory: Path) -> str:
    """How to get going again after a refused recovery."""
    return (
        f"inspect the log, then run `{new_epoch_command(directory)}` "
        "to archive this epoch and start a new one"
    )


def inspect_hint(directory: Path) -> str:
    """How an operator looks at a log recovery refused, before deciding what to do."""
    return (
        f"inspect it with `jurisgate audit verify {directory} --trusted-keys KEYRING.json` "
        "(and compare with a witness or an earlier export)"
    )


@dataclass(frozen=True)
class Adopted:
    """Records after the last signed checkpoint that recovery kept: [first, end).

    No durable note covered them, so none of them is known to have been acknowledged:
    their requests may have been answered 503 before the crash.
    """

    first: int
    end: int
    bound: int

    def record_fields(self) -> dict[str, Any]:
        """The `adopted` object of the `recovery` record."""
        return {
            "from": self.first,
            "to": self.end,
            "records": self.end - self.first,
            "bound": self.bound,
            "acknowledged": "unknown",
        }


@dataclass
class Recovered:
    """What recovery found: the chain state to continue from and what it moved aside."""

    state: ChainState
    segment_start: int
    last_checkpoint: Checkpoint | None
    last_type: str | None
    pruned: StartState | None
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    adopted: Adopted | None = None


def _refuse(directory: Path, message: str) -> AuditRecoveryRefused:
    return AuditRecoveryRefused(f"{directory}: {message}; {new_epoch_hint(directory)}")


def _quarantine(directory: Path, source: Path, offset: int, reason: str) -> dict[str, Any]:
    """Move bytes [offset, end) of `source` to quarantine/ and truncate `source`."""
    data = source.read_bytes()[offset:]
    qdir = directory / QUARANTINE_DIR
    qdir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = qdir / f"{stamp}-{source.name}-{offset}.bytes"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(qdir)
    with open(source, "r+b") as handle:
        handle.truncate(offset)
        handle.flush()
        os.fsync(handle.fileno())
    return {
        "file": str(source.relative_to(directory)),
        "offset": offset,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "moved_to": str(target.relative_to(directory)),
        "reason": reason,
    }


def _check_tail_line(
    line: bytes, position: int, prev: bytes, origin: str, verifiers: Sequence[Verifier]
) -> tuple[str | None, bytes, dict[str, Any]]:
    body = record_bytes_of_line(line)
    if body is None:
        return "not a stored record line", b"", {}
    try:
        obj = fast_loads(line)
    except ValueError:
        return "malformed JSON", b"", {}
    if not is_jcs_safe(obj) or canonical_dumps(obj) != line:
        return "not canonical", b"", {}
    record = obj.get("r") if isinstance(obj, dict) else None
    problem = record_shape_problem(record)
    if problem is not None or not isinstance(record, dict):
        return problem or "not a record", b"", {}
    if record["seq"] != position:
        return f"seq {record['seq']} where {position} was expected", b"", {}
    if record["prev"] != prev.hex():
        return "prev does not link to the previous record", b"", {}
    if record["log"] != origin:
        return f"origin `{record['log']}` is not `{origin}`", b"", {}
    leaf = leaf_hash(body)
    sig = obj.get("s")
    if sig is not None:
        for verifier in verifiers:
            if verifier.kid == record["kid"]:
                if not verifier.verify_record(leaf, base64.b64decode(sig)):
                    return "record signature does not verify", b"", {}
                break
    return None, leaf, record


def _load_last_checkpoint(
    directory: Path, origin: str, verifiers: Sequence[Verifier], quarantined: list[dict[str, Any]]
) -> Checkpoint | None:
    path = directory / CHECKPOINTS_FILE
    if not path.exists():
        return None
    data = path.read_bytes()
    notes, end = split_notes(data)
    if end < len(data):
        quarantined.append(_quarantine(directory, path, end, "torn checkpoint note"))
    if not notes:
        return None
    try:
        note = parse_note(notes[-1][1])
        valid, _unknown = note.verify(verifiers)
        checkpoint = parse_checkpoint_text(note.text)
    except NoteError as exc:
        raise _refuse(directory, f"the last checkpoint is unusable: {exc}") from None
    if not valid:
        kids = ", ".join(v.kid for v in verifiers)
        raise _refuse(
            directory,
            f"the last checkpoint is not signed by the configured key ({kids}); "
            "configure the key that signed it, or rotate keys with `jurisgate keys rotate`",
        )
    if checkpoint.origin != origin:
        raise _refuse(directory, f"the last checkpoint is for origin `{checkpoint.origin}`")
    return checkpoint


def _refuse_tail(directory: Path, where: Path, message: str) -> AuditRecoveryRefused:
    return AuditRecoveryRefused(
        f"{where}: {message}; a crash cannot leave this, so notes were removed or records "
        f"rewritten; {inspect_hint(directory)}; if the records cannot be restored, run "
        f"`{new_epoch_command(directory)}` to archive this epoch and start a new one"
    )


def _declared_bound(line: bytes) -> int:
    """The `uncovered_bound` a `start` record states (0 when it states none)."""
    try:
        value = fast_loads(line)["r"].get("uncovered_bound")
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0
    return value if type(value) is int and value > 0 else 0


def _record_type(line: bytes | None) -> str | None:
    if line is None:
        return None
    try:
        return str(fast_loads(line)["r"]["type"])
    except (ValueError, KeyError, TypeError):
        return None


def recover(
    directory: Path,
    meta: LogMeta,
    verifiers: Sequence[Verifier],
    uncovered_bound: int = DEFAULT_UNCOVERED_BOUND,
    witnessed: Sequence[WitnessedHead] = (),
) -> Recovered:
    """Check the log against its last checkpoint, quarantine a bad tail, return the state.

    Raises `AuditRecoveryRefused` when checkpointed records are missing or changed, or
    when the records after the last checkpoint are more than the crash bound (the larger
    of `uncovered_bound` and the one the last covered `start` record states) or cross
    a `stop` or `start` record (rule 3), or when the log is shorter than, or has another
    root than, a tree head a witness cosigned (`witnessed`): the rollback a disk writer
    who also rewrote every note would otherwise get away with.
    """
    recovery = _Recovery(directory, meta, verifiers, uncovered_bound, witnessed)
    recovery.scan()
    recovery.check_length()
    recovery.quarantine_bad()
    return recovery.result()


class _Recovery:
    """One recovery: the stored records read against the last checkpoint, then the tail."""

    def __init__(
        self,
        directory: Path,
        meta: LogMeta,
        verifiers: Sequence[Verifier],
        uncovered_bound: int,
        witnessed: Sequence[WitnessedHead],
    ) -> None:
        self.directory, self.verifiers = directory, verifiers
        self.origin, self.seg_size = meta.origin, meta.segment_records
        self.uncovered_bound = self.bound = uncovered_bound
        self.witnessed = witnessed
        self.quarantined: list[dict[str, Any]] = []
        self.checkpoint = _load_last_checkpoint(directory, self.origin, verifiers, self.quarantined)
        self.cp_size = self.checkpoint.size if self.checkpoint is not None else 0
        self.pruned = self._pruned()
        pruned = self.pruned
        self.base = pruned.size if pruned is not None else 0
        self.compact = pruned.compact.copy() if pruned is not None else CompactRange()
        self.prev = pruned.prev_leaf if pruned is not None else GENESIS_PREV
        if self.cp_size < self.base:
            raise _refuse(
                directory, f"pruned up to {self.base} but the last checkpoint covers {self.cp_size}"
            )
        if self.checkpoint is not None and self.cp_size == self.base:
            self.check_root()
        self.heads: dict[int, list[WitnessedHead]] = {}
        for head in witnessed:
            self.heads.setdefault(head.size, []).append(head)
        if self.base in self.heads:
            self.check_witnessed(self.base)
        self.segments = self._segments()
        self.position = self.base
        self.last_line: bytes | None = None
        self.mark: str | None = None  # a `start` or `stop` record among the uncovered ones
        self.bad: tuple[int, int, str] | None = None

    def _pruned(self) -> StartState | None:
        pruned_path = self.directory / PRUNED_FILE
        if not pruned_path.exists():
            return None
        try:
            return StartState.from_json(json.loads(pruned_path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise _refuse(self.directory, f"{PRUNED_FILE} is unreadable: {exc}") from None

    def _segments(self) -> list[tuple[int, Path]]:
        segments = []
        for first, path in list_segments(self.directory):
            if first + self.seg_size <= self.base:
                path.unlink()  # SECURITY: only leftovers of a prune whose record is durable
                continue
            if first < self.base:
                raise _refuse(self.directory, f"segment {path.name} straddles the pruned prefix")
            segments.append((first, path))
        if segments:
            fsync_dir(self.directory / SEGMENTS_DIR)
        return segments

    def check_root(self) -> None:
        """The records so far must hash to the last checkpoint's root."""
        assert self.checkpoint is not None
        if self.compact.root() != self.checkpoint.root:
            raise _refuse(
                self.directory,
                f"the records do not match the last checkpoint's root at size {self.cp_size}",
            )

    def check_witnessed(self, size: int) -> None:
        """The records so far must hash to every root a witness cosigned at `size`."""
        root = self.compact.root()
        for head in self.heads.get(size, ()):
            if head.root != root:
                raise _refuse(
                    self.directory,
                    f"the records at size {size} do not match the root {head.source} "
                    "cosigned: history was rewritten after a witness saw it",
                )

    def scan(self) -> None:
        """Read every segment up to the first problem (`bad`) or gap."""
        for index, (first, path) in enumerate(self.segments):
            if first != self.position:
                if self.position >= self.cp_size:
                    self.bad = (index, 0, f"segment {path.name} does not continue at seq "
                                f"{self.position}")  # fmt: skip
                return  # a missing segment below the checkpoint: refused later
            if not self._segment(index, first, path):
                return

    def _segment(self, index: int, first: int, path: Path) -> bool:
        """Read one segment; False when reading stops here."""
        data = path.read_bytes()
        lines, end = split_lines(data)
        offset = 0
        for line in lines:
            if self.position < self.cp_size:
                leaf = self._covered(line)
            else:
                found = self._tail(line, path)
                if isinstance(found, str):
                    self.bad = (index, offset, f"record at seq {self.position}: {found}")
                    return False
                leaf = found
            self.prev = leaf
            self.last_line = line
            offset += len(line) + 1
        if end < len(data):
            if self.position >= self.cp_size:
                self.bad = (index, end, "torn final line (no newline)")
            return False
        if self.position - first != self.seg_size and index != len(self.segments) - 1:
            if self.position >= self.cp_size:
                self.bad = (index + 1, 0, f"segment {path.name} is short but not the last one")
            return False
        return True

    def _covered(self, line: bytes) -> bytes:
        """A line a checkpoint covers: hashed into the tree (checked at the checkpoint)."""
        body = record_bytes_of_line(line)
        leaf = leaf_hash(body if body is not None else line)
        if b'"type":"start"' in line:
            # The run before the crash may have had a larger bound than this one.
            self.bound = max(self.uncovered_bound, _declared_bound(line))
        self.compact.append(leaf)
        self.position += 1
        if self.position == self.cp_size:
            self.check_root()
        if self.position in self.heads:
            self.check_witnessed(self.position)
        return leaf

    def _tail(self, line: bytes, path: Path) -> bytes | str:
        """A line after the last checkpoint: its leaf, or why it is bad."""
        position, cp_size = self.position, self.cp_size
        problem, leaf, record = _check_tail_line(line, position, self.prev, self.origin,
                                                 self.verifiers)  # fmt: skip
        if problem is not None:
            return problem
        kind = record["type"]
        if position == cp_size and _record_type(self.last_line) == "stop" and kind != "start":
            raise _refuse_tail(
                self.directory, path,
                f"record seq {position} ({kind}) follows a `stop` record without a `start` record",
            )  # fmt: skip
        mark = self.mark
        if mark == "stop" or (mark == "start" and kind != "recovery"):
            raise _refuse_tail(
                self.directory, path,
                f"record seq {position} ({kind}) follows a `{mark}` record "
                "that no signed checkpoint covers",
            )  # fmt: skip
        if position - cp_size >= self.bound:
            raise _refuse_tail(
                self.directory, path,
                f"records from seq {cp_size} on are not covered by a signed checkpoint "
                f"and there are more than {self.bound}, the most a crash leaves "
                f"uncovered (last signed checkpoint: size {cp_size})",
            )  # fmt: skip
        if kind in ("start", "stop"):
            self.mark = kind
        self.compact.append(leaf)
        self.position += 1
        if self.position in self.heads:
            self.check_witnessed(self.position)
        return leaf

    def check_length(self) -> None:
        """Refuse a log shorter than its last checkpoint or than a witnessed head."""
        position = self.position
        if position < self.cp_size:
            raise _refuse(
                self.directory,
                f"the log holds {position} records but its last signed checkpoint covers "
                f"{self.cp_size}",
            )
        newest = max(self.witnessed, key=lambda head: head.size, default=None)
        if newest is not None and newest.size > position:
            raise _refuse(
                self.directory,
                f"the log holds {position} records but {newest.source} cosigned a tree of "
                f"{newest.size}: the log was rolled back",
            )

    def quarantine_bad(self) -> None:
        """Move the bad tail aside (refused when that would move more than a crash leaves)."""
        if self.bad is None:
            return
        seg_index, offset, reason = self.bad
        segments, cp_size, bound = self.segments, self.cp_size, self.bound
        lines_moved = sum(
            path.read_bytes()[offset if number == 0 else 0 :].count(b"\n")
            for number, (_first, path) in enumerate(segments[seg_index:])
        )
        if self.position - cp_size + lines_moved > bound:
            raise _refuse_tail(
                self.directory, segments[seg_index][1],
                f"{self.position - cp_size + lines_moved} lines after the last signed checkpoint "
                f"(size {cp_size}), more than {bound}, the most a crash leaves "
                f"uncovered; the first bad one: {reason}",
            )  # fmt: skip
        for number, (_first, path) in enumerate(segments[seg_index:]):
            moved = _quarantine(self.directory, path, offset if number == 0 else 0, reason)
            self.quarantined.append(moved)
            if number > 0:
                path.unlink()
        fsync_dir(self.directory / SEGMENTS_DIR)
        self.segments = segments[: seg_index + 1]

    def result(self) -> Recovered:
        """The state the writer continues from."""
        checkpoint, position, seg_size = self.checkpoint, self.position, self.seg_size
        last_ts = checkpoint.ts if checkpoint is not None else ""
        last_type: str | None = None
        if self.last_line is not None:
            try:
                record = fast_loads(self.last_line)["r"]
                last_type = str(record["type"])
                last_ts = max(last_ts, str(record["ts"]))
            except (ValueError, KeyError, TypeError):
                pass
        segment_start = position - position % seg_size
        if self.segments and self.segments[-1][0] + seg_size > position:
            segment_start = self.segments[-1][0]
        state = ChainState(self.origin, self.compact, self.prev, last_ts)
        adopted = Adopted(self.cp_size, position, self.bound) if position > self.cp_size else None
        return Recovered(state, segment_start, checkpoint, last_type, self.pruned,
                         self.quarantined, adopted)  # fmt: skip
