"""Retention: legal floors and pruning of whole segments (I/O shell, runs on the writer thread).

Rule 1: a record is kept at least `retention_days` (its own field, which policies can
raise) or the log default. A segment is pruned only when every record in it is past
retention, only whole segments, oldest first, and only at a checkpointed size.

Rule 2: pruning writes a `prune` record first, then pruned.json (compact range of the
pruned prefix, its last leaf and that leaf's inclusion proof), then deletes the files. A
crash between the steps leaves either nothing pruned or leftovers recovery deletes.

Rule 3: configured retention may not undercut the floor of the log's jurisdictions
(EU AI Act art. 19/26: six months; PIPL art. 56 handling records: three years).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.audit.canonical import fast_loads
from gateway.audit.chain import record_bytes_of_line
from gateway.audit.merkle import CompactRange, TreeHashes, inclusion_proof, leaf_hash
from gateway.audit.note import parse_checkpoint_text, parse_note, split_notes
from gateway.audit.record import parse_ts
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    PRUNED_FILE,
    SEGMENTS_DIR,
    LogMeta,
    StartState,
    atomic_write,
    dump_json,
    fsync_dir,
    list_segments,
    split_lines,
)

__all__ = [
    "RETENTION_FLOOR_DAYS",
    "PrunePlan",
    "apply_prune",
    "check_retention_days",
    "plan_prune",
    "retention_floor_days",
]

#: Minimum retention in days by jurisdiction profile.
RETENTION_FLOOR_DAYS: dict[str, int] = {"EU": 183, "EEA": 183, "CN": 1095}


def retention_floor_days(jurisdictions: Iterable[str]) -> int:
    """The largest floor among `jurisdictions` (0 when none applies)."""
    return max((RETENTION_FLOOR_DAYS.get(j.upper(), 0) for j in jurisdictions), default=0)


def check_retention_days(
    days: int, jurisdictions: Iterable[str], setting: str = "audit.retention_days"
) -> None:
    """Raise ValueError naming `setting` when `days` is below the jurisdictions' floor."""
    names = sorted(set(jurisdictions))
    floor = retention_floor_days(names)
    if not isinstance(days, int) or isinstance(days, bool) or days < 0:
        raise ValueError(f"{setting}: `{days}` must be a non-negative number of days")
    if days < floor:
        raise ValueError(
            f"{setting}: `{days}` days is below the {floor}-day floor for {', '.join(names)}"
        )


@dataclass(frozen=True)
class PrunePlan:
    """Segments to delete and the state at the cut."""

    from_seq: int
    to_seq: int
    segment_names: tuple[str, ...]
    start: StartState
    default_days: int

    def record_fields(self) -> dict[str, Any]:
        """Fields of the `prune` record."""
        return {
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "segments": list(self.segment_names),
            "root_at_cut": base64.b64encode(self.start.compact.root()).decode(),
            "default_retention_days": self.default_days,
        }


def _checkpoint_sizes(directory: Path) -> set[int]:
    path = directory / CHECKPOINTS_FILE
    if not path.exists():
        return set()
    sizes: set[int] = set()
    notes, _end = split_notes(path.read_bytes())
    for _offset, raw in notes:
        try:
            sizes.add(parse_checkpoint_text(parse_note(raw).text).size)
        except ValueError:
            continue
    return sizes


def _expiry(record: dict[str, Any], default_days: int) -> datetime:
    days = record.get("retention_days")
    if type(days) is not int or days < default_days:
        days = default_days
    return parse_ts(str(record["ts"])) + timedelta(days=days)


def plan_prune(
    directory: Path, meta: LogMeta, durable_size: int, now: datetime, default_days: int
) -> PrunePlan | None:
    """Find the oldest whole segments that are entirely past retention at `now`."""
    seg_size = meta.segment_records
    previous: StartState | None = None
    pruned_path = directory / PRUNED_FILE
    if pruned_path.exists():
        previous = StartState.from_json(json.loads(pruned_path.read_text(encoding="utf-8")))
    base = previous.size if previous is not None else 0
    compact = previous.compact.copy() if previous is not None else CompactRange()
    checkpointed = _checkpoint_sizes(directory)
    leaves: list[bytes] = []
    names: list[str] = []
    cut = base
    for first, path in list_segments(directory):
        if first < base:
            continue
        end = first + seg_size
        if first != cut or end > durable_size or end not in checkpointed:
            break
        lines, _tail = split_lines(path.read_bytes())
        if len(lines) != seg_size:
            break
        seg_leaves: list[bytes] = []
        expired = True
        for line in lines:
            body = record_bytes_of_line(line)
            if body is None:
                expired = False
                break
            if _expiry(fast_loads(body), default_days) > now:
                expired = False
                break
            seg_leaves.append(leaf_hash(body))
        if not expired:
            break
        leaves.extend(seg_leaves)
        names.append(path.name)
        cut = end
    if cut == base:
        return None
    tree = TreeHashes(leaves, previous.compact if previous is not None else None)
    for leaf in leaves:
        compact.append(leaf)
    history = list(previous.extra.get("history", [])) if previous is not None else []
    history.append({"from_seq": base, "to_seq": cut, "segments": names})
    start = StartState(
        cut,
        compact,
        leaves[-1],
        tuple(inclusion_proof(cut - 1, cut, tree)),
        {"format": "jurisgate-audit-pruned/1", "history": history},
    )
    return PrunePlan(base, cut, tuple(names), start, default_days)


def apply_prune(directory: Path, plan: PrunePlan) -> None:
    """Write pruned.json, then delete the pruned segment files."""
    atomic_write(directory / PRUNED_FILE, dump_json(plan.start.to_json()))
    seg_dir = directory / SEGMENTS_DIR
    for name in plan.segment_names:
        (seg_dir / name).unlink(missing_ok=True)
    fsync_dir(seg_dir)
