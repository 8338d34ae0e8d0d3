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
    origin = meta.origin
    seg_size = meta.segment_records
    quarantined: list[dict[str, Any]] = []
    checkpoint = _load_last_checkpoint(directory, origin, verifiers, quarantined)
    cp_size = checkpoint.size if checkpoint is not None else 0

    pruned: StartState | None = None
    pruned_path = directory / PRUNED_FILE
    if pruned_path.exists():
        try:
            pruned = StartState.from_json(json.loads(pruned_path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise _refuse(directory, f"{PRUNED_FILE} is unreadable: {exc}") from None
    base = pruned.size if pruned is not None else 0
    compact = pruned.compact.copy() if pruned is not None else CompactRange()
    prev = pruned.prev_leaf if pruned is not None else GENESIS_PREV
    if cp_size < base:
        raise _refuse(directory, f"pruned up to {base} but the last checkpoint covers {cp_size}")

    def check_root() -> None:
        assert checkpoint is not None
        if compact.root() != checkpoint.root:
            raise _refuse(
                directory, f"the records do not match the last checkpoint's root at size {cp_size}"
            )

    if checkpoint is not None and cp_size == base:
        check_root()

    heads: dict[int, list[WitnessedHead]] = {}
    for head in witnessed:
        heads.setdefault(head.size, []).append(head)

    def check_witnessed(size: int) -> None:
        root = compact.root()
        for head in heads.get(size, ()):
            if head.root != root:
                raise _refuse(
                    directory,
                    f"the records at size {size} do not match the root {head.source} "
                    "cosigned: history was rewritten after a witness saw it",
                )

    if base in heads:
        check_witnessed(base)

    segments = []
    for first, path in list_segments(directory):
        if first + seg_size <= base:
            path.unlink()  # SECURITY: only leftovers of a prune whose record is durable
            continue
        if first < base:
            raise _refuse(directory, f"segment {path.name} straddles the pruned prefix")
        segments.append((first, path))
    if segments:
        fsync_dir(directory / SEGMENTS_DIR)

    position = base
    last_line: bytes | None = None
    mark: str | None = None  # a `start` or `stop` record among the uncovered ones
    bound = uncovered_bound
    bad: tuple[int, int, str] | None = None
    for index, (first, path) in enumerate(segments):
        if first != position:
            if position < cp_size:
                break  # a missing segment below the checkpoint: refused below
            bad = (index, 0, f"segment {path.name} does not continue at seq {position}")
            break
        data = path.read_bytes()
        lines, end = split_lines(data)
        offset = 0
        for line in lines:
            if position < cp_size:
                body = record_bytes_of_line(line)
                leaf = leaf_hash(body if body is not None else line)
                if b'"type":"start"' in line:
                    # The run before the crash may have had a larger bound than this one.
                    bound = max(uncovered_bound, _declared_bound(line))
                compact.append(leaf)
                position += 1
                if position == cp_size:
                    check_root()
                if position in heads:
                    check_witnessed(position)
            else:
                problem, leaf, record = _check_tail_line(line, position, prev, origin, verifiers)
                if problem is not None:
                    bad = (index, offset, f"record at seq {position}: {problem}")
                    break
                kind = record["type"]
                if position == cp_size and _record_type(last_line) == "stop" and kind != "start":
                    raise _refuse_tail(
                        directory,
                        path,
                        f"record seq {position} ({kind}) follows a `stop` record "
                        "without a `start` record",
                    )
                if mark == "stop" or (mark == "start" and kind != "recovery"):
                    raise _refuse_tail(
                        directory,
                        path,
                        f"record seq {position} ({kind}) follows a `{mark}` record "
                        "that no signed checkpoint covers",
                    )
                if position - cp_size >= bound:
                    raise _refuse_tail(
                        directory,
                        path,
                        f"records from seq {cp_size} on are not covered by a signed checkpoint "
                        f"and there are more than {bound}, the most a crash leaves "
                        f"uncovered (last signed checkpoint: size {cp_size})",
                    )
                if kind in ("start", "stop"):
                    mark = kind
                compact.append(leaf)
                position += 1
                if position in heads:
                    check_witnessed(position)
            prev = leaf
            last_line = line
            offset += len(line) + 1
        if bad is not None:
            break
        if end < len(data):
            if position < cp_size:
                break
            bad = (index, end, "torn final line (no newline)")
            break
        if position - first != seg_size and index != len(segments) - 1:
            if position < cp_size:
                break
            bad = (index + 1, 0, f"segment {path.name} is short but not the last one")
            break

    if position < cp_size:
        raise _refuse(
            directory,
            f"the log holds {position} records but its last signed checkpoint covers {cp_size}",
        )
    newest = max(witnessed, key=lambda head: head.size, default=None)
    if newest is not None and newest.size > position:
        raise _refuse(
            directory,
            f"the log holds {position} records but {newest.source} cosigned a tree of "
            f"{newest.size}: the log was rolled back",
        )
    if bad is not None:
        seg_index, offset, reason = bad
        lines_moved = sum(
            path.read_bytes()[offset if number == 0 else 0 :].count(b"\n")
            for number, (_first, path) in enumerate(segments[seg_index:])
        )
        if position - cp_size + lines_moved > bound:
            raise _refuse_tail(
                directory,
                segments[seg_index][1],
                f"{position - cp_size + lines_moved} lines after the last signed checkpoint "
                f"(size {cp_size}), more than {bound}, the most a crash leaves "
                f"uncovered; the first bad one: {reason}",
            )
        for number, (_first, path) in enumerate(segments[seg_index:]):
            quarantined.append(_quarantine(directory, path, offset if number == 0 else 0, reason))
            if number > 0:
                path.unlink()
        fsync_dir(directory / SEGMENTS_DIR)
        segments = segments[: seg_index + 1]

    last_ts = checkpoint.ts if checkpoint is not None else ""
    last_type: str | None = None
    if last_line is not None:
        try:
            record = fast_loads(last_line)["r"]
            last_type = str(record["type"])
            last_ts = max(last_ts, str(record["ts"]))
        except (ValueError, KeyError, TypeError):
            pass
    segment_start = position - position % seg_size
    if segments and segments[-1][0] + seg_size > position:
        segment_start = segments[-1][0]
    state = ChainState(origin, compact, prev, last_ts)
    adopted = Adopted(cp_size, position, bound) if position > cp_size else None
    return Recovered(state, segment_start, checkpoint, last_type, pruned, quarantined, adopted)
