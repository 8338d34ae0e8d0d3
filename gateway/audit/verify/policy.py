"""What a verified range proves, and which gaps are errors (no I/O): the conclusions
drawn once every record was checked.

Rule 1: a contiguous range is complete when its records reach the last trusted
checkpoint and nothing else failed; a filtered range never is (`not-proven`).
Rule 2: external anchors: the state file (a smaller later source is `ROLLBACK`, another
root at a size seen is `FORK`), the requested end (`STALE_TAIL`), checkpoint gaps without
a restart (`CHECKPOINT_GAP`) and the witness quorum (`WITNESS_QUORUM`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from gateway.audit.note import Checkpoint
from gateway.audit.record import parse_ts
from gateway.audit.verify.trust import Run, TrustedCheckpoint

__all__ = [
    "RangeEnd",
    "check_gaps",
    "check_stale",
    "check_state",
    "check_witnesses",
    "conclude_contiguous",
    "head_of",
    "state_size",
]


def _seconds_between(a: str, b: str) -> float:
    return (parse_ts(b) - parse_ts(a)).total_seconds()


def check_gaps(run: Run, trusted: list[TrustedCheckpoint], starts: list[int], label: str) -> None:
    """A gap between checkpoints longer than `--max-gap` needs a `start` record inside."""
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


def check_stale(
    run: Run, trusted: list[TrustedCheckpoint], requested_to: str | None, last_type: str | None
) -> None:
    """The newest checkpoint must reach the requested end (unless the log stopped)."""
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


def state_size(run: Run, origin: str) -> int | None:
    """The size the state file holds for `origin`, if any."""
    entry = run.state.get(origin)
    if isinstance(entry, dict) and type(entry.get("size")) is int:
        size: int = entry["size"]
        return size
    return None


def check_state(run: Run, origin: str, first: int, last: int, roots_at: dict[int, bytes]) -> None:
    """Compare the range [first, last] with the state file: rollback, fork, or not
    comparable (a state before the range)."""
    size = state_size(run, origin)
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


def _head(trusted: list[TrustedCheckpoint], size: int | None = None) -> Checkpoint:
    if size is None:
        return max(trusted, key=lambda t: (t.checkpoint.size, t.checkpoint.ts)).checkpoint
    return next(t.checkpoint for t in trusted if t.checkpoint.size == size)


def head_of(trusted: list[TrustedCheckpoint], size: int | None = None) -> dict[str, Any]:
    """The report's head: the newest trusted checkpoint (or the first at `size`)."""
    head = _head(trusted, size)
    return {"size": head.size, "root": base64.b64encode(head.root).decode(), "ts": head.ts}


@dataclass
class RangeEnd:
    """What streaming the records of a contiguous range found, for the conclusions."""

    base: int
    end: int
    last: int | None
    live: bool
    range_to: int | None
    first_ts: str | None
    last_ts: str
    checkpoints_label: str


def conclude_contiguous(
    run: Run, trusted: list[TrustedCheckpoint], found: RangeEnd, roots_at: dict[int, bytes]
) -> None:
    """Whether the records reach the last checkpoint (and no further, in a bundle); the
    found range, the head and the completeness the report states."""
    report = run.report
    base, end, last = found.base, found.end, found.last
    if last is None:
        if end > base or base > 0:
            run.error("NO_CHECKPOINT", "no trusted checkpoint covers the records")
    elif end < last:
        run.error(
            "RANGE_INCOMPLETE",
            f"records end at {end}, the signed checkpoint covers {last}",
            found.checkpoints_label,
        )
    elif end > last and not found.live:
        run.error(
            "RECORD_UNCOVERED", f"{end - last} records after the last checkpoint (size {last})"
        )
    if found.range_to is not None and last is not None and last != found.range_to:
        run.error(
            "MANIFEST_INVALID",
            f"manifest range ends at {found.range_to}, the last checkpoint is at {last}",
        )
    report.found = {"from": base, "to": end, "from_ts": found.first_ts,
                    "to_ts": found.last_ts or None}  # fmt: skip
    if last is not None:
        report.head = head_of(trusted)
        if end >= last:
            roots_at.setdefault(last, _head(trusted).root)
    report.completeness = "proven" if not report.errors else "incomplete"


def check_witnesses(run: Run, witnesses_at: dict[tuple[int, bytes], set[str]]) -> None:
    """The best witnessed checkpoint, and the quorum `--min-witnesses` asks for."""
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
