"""Records, streamed (mechanics): the chain and the Merkle tree recomputed from the stored
lines, a block of lines at a time, and compared with every trusted checkpoint.

Rule 1: memory stays at one block of lines plus the compact range, whatever the size.
Rule 2: a line with no problem takes the fast path (one parse, one canonical check, one
leaf hash, one compact-range append); any line with anything unusual (a failed check,
a gap, a broken link, a restart, the live tail) takes `_Contiguous.slow`, which checks it
again from scratch and explains every problem. Both paths leave the same state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway.audit.bundle import ExportFilter
from gateway.audit.canonical import is_canonical_form
from gateway.audit.chain import GENESIS_PREV, record_bytes_of_line
from gateway.audit.errors import ProofError
from gateway.audit.merkle import CompactRange, verify_inclusion
from gateway.audit.record import ALL_TYPES, DEFAULT_UNCOVERED_BOUND, RECORD_VERSION, TS_RE
from gateway.audit.storage import LineBlocks, StartState
from gateway.audit.verify import policy
from gateway.audit.verify.decode import Decoded, check_record_common, decode_line
from gateway.audit.verify.trust import Run, TrustedCheckpoint

__all__ = ["Source", "ViewFeed", "stream_contiguous", "stream_selective"]

Progress = Callable[[int], None]
_Where = tuple[str, int, "int | None"]
#: Larger than any position: no live tail.
_NEVER = 1 << 62


class ViewFeed(Protocol):
    """What the record pass gives the views, line by line, in order."""

    def add(self, record: dict[str, Any]) -> None:
        """A record the fast path parsed (its stored bytes are canonical)."""

    def other(self, raw: bytes) -> bytes | None:
        """Any other complete line: parsed here; its record bytes (None: no record)."""

    def jsonl(self, bodies: list[bytes | None]) -> None:
        """The record bytes of a block's lines, in order."""


@dataclass
class Source:
    """What one log directory or bundle gives the record checks."""

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
    #: SHA-256 (hex) of the bundle files checked against the manifest, by path.
    digests: dict[str, str] = field(default_factory=dict)
    #: The paths the bundle's manifest lists.
    listed: set[str] = field(default_factory=set)
    #: Record files whose manifest check waits for the record pass, which hashes them
    #: as it reads them: (path in the bundle, listed sha256, listed size) by file.
    deferred: dict[Path, tuple[str, Any, Any]] = field(default_factory=dict)
    #: The digests the record pass feeds, by file.
    hashed: dict[Path, Any] = field(default_factory=dict)
    #: The views made from the records the record pass parses (`viewcheck.ViewFeed`).
    views: ViewFeed | None = None
    #: True once the record pass read every record file to its end.
    streamed: bool = False


def _lines(
    files: Sequence[tuple[str, Path]], progress: Progress, hashed: dict[Path, Any]
) -> Iterator[tuple[str, int, Any, bool]]:
    """(file, number of the line before the block, block of complete lines, True), and
    for a torn last line (file, its number, its bytes, False). The files with a digest
    in `hashed` are hashed as they are read."""
    for label, path in files:
        number = 0
        blocks = LineBlocks(path, digest=hashed.get(path))
        done = 0
        for complete in blocks:
            yield label, number, complete, True
            number += len(complete)
            del complete  # before the next block is read: memory stays at one block
            progress(blocks.size - done)
            done = blocks.size
        if blocks.tail:
            yield label, number + 1, blocks.tail, False
        progress(blocks.size - done)


class _Contiguous:
    """The record checks of a contiguous range."""

    def __init__(
        self, run: Run, src: Source, trusted: list[TrustedCheckpoint], start: StartState | None
    ) -> None:
        self.run = run
        self.src = src
        self.trusted = trusted
        self.report = run.report
        self.origin = src.origin
        self.sizes: dict[int, list[TrustedCheckpoint]] = {}
        for item in trusted:
            self.sizes.setdefault(item.checkpoint.size, []).append(item)
        self.last = max((t.checkpoint.size for t in trusted), default=None)
        self.base = start.size if start is not None else 0
        self.compact = start.compact.copy() if start is not None else CompactRange()
        self.prev = start.prev_leaf if start is not None else GENESIS_PREV
        self.expect_root_at = policy.state_size(run, src.origin)
        self.roots_at: dict[int, bytes] = {}
        if self.expect_root_at is not None and self.expect_root_at == self.base:
            self.roots_at[self.base] = self.compact.root()
        self.position = self.expected_seq = self.base
        self.holes: list[list[int]] = []
        self.jumps: list[tuple[int, str, int]] = []
        self.last_ts = ""
        self.first_ts: str | None = None
        self.last_type: str | None = None
        self.starts: list[int] = []
        self.tail = 0
        self.bound = DEFAULT_UNCOVERED_BOUND
        self.tail_mark: str | None = None  # a `start` or `stop` record among uncovered ones
        self.tail_blamed = False
        # A broken `prev` link waits for the next record to tell which side changed.
        self.broken_link: tuple[_Where, _Where] | None = None
        self.last_at: _Where = ("", 0, None)
        # Lines from this position on are a live log's uncovered tail.
        self.tail_from = self.last if src.live and self.last is not None else _NEVER

    def run_all(self, progress: Progress) -> None:
        """Check every record, then the range's end."""
        for label, number, data, terminated in _lines(
            self.src.record_files, progress, self.src.hashed
        ):
            if terminated:
                self.block(label, number, data)
            else:
                self.slow(label, number, data, False)
        self.src.streamed = True
        self.finish()

    def block(self, label: str, number: int, lines: list[bytes]) -> None:  # noqa: C901, PLR0912, PLR0915
        """Check a block of complete lines. The per-record fast path is written out
        here, not in helper functions: at millions of records a function call per
        check costs measurably, so the loop is longer than the rest of the code."""
        run, origin, sizes, report = self.run, self.origin, self.sizes, self.report
        loads, decode_error, canonical = orjson.loads, orjson.JSONDecodeError, is_canonical_form
        body_of, sha256, ts_match = record_bytes_of_line, hashlib.sha256, TS_RE.match
        version, types = RECORD_VERSION, ALL_TYPES
        key_window, signed_ok = run.key_window, run.record_signature_ok
        check_sigs = run.options.record_signatures
        append, tail_from, expect_root_at = self.compact.append, self.tail_from, self.expect_root_at
        position, expected_seq, prev = self.position, self.expected_seq, self.prev
        last_ts, last_type, last_at = self.last_ts, self.last_type, self.last_at
        smooth = self.broken_link is None and self.first_ts is not None
        total = 0
        views = self.src.views
        # The views take each record in order, as it is checked (not a block of records
        # kept alive at once: that much live garbage makes the cyclic GC costly).
        view_add, view_other = (views.add, views.other) if views is not None else (None, None)
        bodies: list[bytes | None] = []
        for raw in lines:
            number += 1
            record: Any = None
            if smooth and position < tail_from and last_type != "stop":
                try:
                    obj = loads(raw)
                except decode_error:
                    obj = None
                if type(obj) is dict and (len(obj) == 1 or (len(obj) == 2 and "s" in obj)):
                    record = obj.get("r")
                    if type(record) is not dict or not canonical(obj, raw):
                        record = None
            if record is not None:
                # `record_shape_problem`, inlined and narrowed: `prev` equal to the hex of
                # a leaf is 64 hex digits, a `kid` with a key window is a pinned key's.
                body = body_of(raw)
                ts, kind, kid = record.get("ts"), record.get("type"), record.get("kid")
                if (
                    body is None
                    or record.get("v") != version
                    or type(seq := record.get("seq")) is not int
                    or seq != expected_seq
                    or record.get("prev") != prev.hex()
                    or type(ts) is not str
                    or ts < last_ts
                    or ts_match(ts) is None
                    or type(kind) is not str
                    or kind not in types
                    or kind == "start"
                    or kind == "stop"
                    or record.get("log") != origin
                    or type(kid) is not str
                ):
                    record = None
                else:
                    window = key_window(kid, origin)
                    if window is None or not window[0] <= ts <= window[1]:
                        record = None
            if record is not None:
                leaf = sha256(b"\x00" + body).digest()  # type: ignore[operator]
                sig = obj.get("s")
                if sig is not None and check_sigs:
                    if type(sig) is not str or not signed_ok(kid, leaf, sig):
                        record = None
            if record is None:
                report.records_total += total
                total = 0
                self._flush(position, expected_seq, prev, last_ts, last_type, last_at)
                self.slow(label, number, raw, True)
                if view_other is not None:
                    bodies.append(view_other(raw))
                position, expected_seq, prev = self.position, self.expected_seq, self.prev
                last_ts, last_type, last_at = self.last_ts, self.last_type, self.last_at
                smooth = self.broken_link is None and self.first_ts is not None
                continue
            if view_add is not None:
                view_add(record)
                bodies.append(body)
            total += 1
            expected_seq += 1
            last_at = (label, number, expected_seq - 1)
            last_ts, last_type = ts, kind
            append(leaf)
            prev = leaf
            position += 1
            if position in sizes:
                self.position = position
                self.check_roots()
            if expect_root_at == position:
                self.roots_at[position] = self.compact.root()
        report.records_total += total
        self._flush(position, expected_seq, prev, last_ts, last_type, last_at)
        if views is not None:
            views.jsonl(bodies)

    def _flush(
        self,
        position: int,
        expected_seq: int,
        prev: bytes,
        last_ts: str,
        last_type: str | None,
        last_at: _Where,
    ) -> None:
        """Put the fast path's state back (before the slow path or at a block's end)."""
        self.position, self.expected_seq, self.prev = position, expected_seq, prev
        self.last_ts, self.last_type, self.last_at = last_ts, last_type, last_at

    def check_roots(self) -> None:
        """Compare the root at the current size with every checkpoint at that size."""
        position = self.position
        root = self.compact.root()
        for item in self.sizes[position]:
            if item.checkpoint.root != root:
                self.run.error(
                    "ROOT_MISMATCH", f"records do not hash to the root signed at size {position}",
                    self.src.checkpoints_label, item.line, position - 1,
                )  # fmt: skip

    def slow(self, label: str, number: int, raw: bytes, terminated: bool) -> None:
        """One line checked from scratch, every problem explained."""
        run, report = self.run, self.report
        in_tail = self.position >= self.tail_from
        if in_tail:
            # Not covered by a checkpoint yet (a live writer, or a crash before recovery):
            # chain checks still apply; a torn last line is expected here, so a warning.
            self.tail += 1
            if not terminated:
                run.warn("TRUNCATED_LINE", "torn line after the last checkpoint", label, number)
                self.position += 1
                return
        report.records_total += 1
        errors_before = len(report.errors)
        decoded = decode_line(run, label, number, raw, terminated)
        if isinstance(decoded, bytes):
            leaf = decoded
        else:
            leaf = decoded.leaf
            self._record(label, number, decoded, in_tail)
        if len(report.errors) != errors_before:
            report.records_invalid += 1
        self.compact.append(leaf)
        self.prev = leaf
        self.position += 1
        if self.position in self.sizes:
            self.check_roots()
        if self.expect_root_at == self.position:
            self.roots_at[self.position] = self.compact.root()

    def _record(self, label: str, number: int, decoded: Decoded, in_tail: bool) -> None:
        record = decoded.record
        seq: int = record["seq"]
        check_record_common(self.run, label, number, decoded, self.origin)
        self._sequence(label, number, seq)
        self._link(record["prev"] == self.prev.hex(), (label, number, seq))
        ts = record["ts"]
        if ts < self.last_ts:
            self.run.error("TS_REGRESSION", f"ts {ts} before {self.last_ts}", label, number, seq)
        else:
            self.last_ts = ts
        if self.first_ts is None:
            self.first_ts = ts
        kind = record["type"]
        if self.last_type == "stop" and kind != "start":
            self.run.error(
                "RECORD_AFTER_STOP", f"{kind} record after a `stop` record without a `start` "
                "record", label, number, seq,
            )  # fmt: skip
        if in_tail:
            self._tail_record(label, number, seq, kind)
        elif kind == "start":
            declared = record.get("uncovered_bound")
            self.bound = declared if type(declared) is int else DEFAULT_UNCOVERED_BOUND
        self.last_type = kind
        if kind == "start":
            self.starts.append(self.position)

    def _sequence(self, label: str, number: int, seq: int) -> None:
        expected = self.expected_seq
        if seq == expected:
            self.expected_seq += 1
        elif seq > expected:
            self.holes.append([expected, seq])
            self.jumps.append((expected, label, number))
            self.expected_seq = seq + 1
        elif _fill_hole(self.holes, seq):
            self.run.error("SEQ_ORDER", f"seq {seq} after seq {expected - 1}", label, number, seq)
        else:
            self.run.error("SEQ_DUPLICATE", f"seq {seq} appears again", label, number, seq)

    def _link(self, link_ok: bool, here: _Where) -> None:
        if self.broken_link is not None:
            before, after = self.broken_link
            self.broken_link = None
            if link_ok and before[2] is not None:
                # Only the link into `after` broke: the record before it changed.
                _blame_changed(self.run, before, f"seq {after[2]} names another `prev`")
            elif link_ok:
                _blame_changed(self.run, after, "its `prev` is not the start state's last leaf")
            else:
                # The links on both sides of `after` broke: `after` itself changed.
                _blame_changed(self.run, after, "neither its `prev` nor the next record's fit")
        elif not link_ok:
            self.broken_link = (self.last_at, here)
        self.last_at = here

    def _tail_record(self, label: str, number: int, seq: int, kind: str) -> None:
        mark = self.tail_mark
        if mark == "stop" or (mark == "start" and kind != "recovery"):
            self.run.error(
                "TAIL_BEYOND_BOUND", f"{kind} record after an uncovered `{mark}` record: a crash "
                "cannot leave this", label, number, seq,
            )  # fmt: skip
        if kind in ("start", "stop"):
            self.tail_mark = kind
        if self.tail > self.bound and not self.tail_blamed:
            self.tail_blamed = True
            self.run.error(
                "TAIL_BEYOND_BOUND",
                f"more than {self.bound} records after the last checkpoint (size {self.last}): "
                "a crash leaves at most that many; notes were removed or records added",
                label, number, seq,
            )  # fmt: skip

    def finish(self) -> None:
        """The end of the range: a link left broken, gaps, the tail, then the
        conclusions (`policy`)."""
        run = self.run
        if self.broken_link is not None:
            before, after = self.broken_link
            if before[2] is None:
                _blame_changed(run, after, "its `prev` is not the start state's last leaf")
            else:
                _blame_changed(run, before, f"seq {after[2]} names another `prev`")
        for lo, hi in self.holes:
            if hi > lo:
                where = max((j for j in self.jumps if j[0] <= lo), default=(lo, None, None))
                run.error("SEQ_GAP", f"seq {lo}..{hi - 1} missing", where[1], where[2], lo)
        last = self.last
        if self.tail:
            run.warn(
                "UNCHECKPOINTED_TAIL",
                f"{self.tail} records after the last checkpoint (size {last}) "
                "are not covered by a signature yet",
            )
        end = self.position - self.tail
        src = self.src
        found = policy.RangeEnd(self.base, end, last, src.live, src.range_to, self.first_ts,
                                self.last_ts, src.checkpoints_label)  # fmt: skip
        policy.conclude_contiguous(run, self.trusted, found, self.roots_at)
        policy.check_gaps(run, self.trusted, self.starts, src.checkpoints_label)
        policy.check_stale(run, self.trusted, src.requested_to, self.last_type)
        verified_to = end if last is None else min(end, last)
        policy.check_state(run, src.origin, self.base, verified_to, self.roots_at)


def stream_contiguous(
    run: Run,
    src: Source,
    trusted: list[TrustedCheckpoint],
    start: StartState | None,
    progress: Progress,
) -> None:
    """Check every record of a contiguous range and what the range proves."""
    _Contiguous(run, src, trusted, start).run_all(progress)


def _blame_changed(run: Run, where: _Where, why: str) -> None:
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


def stream_selective(
    run: Run, src: Source, trusted: list[TrustedCheckpoint], progress: Progress
) -> None:
    """Check every record of a filtered range: each with its inclusion proof against the
    checkpoint at the range end; completeness is not proven."""
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
    checks = _Selective(run, src, last, root)
    for label, number, data, terminated in _lines(src.record_files, progress, src.hashed):
        for offset, raw in enumerate(data if terminated else [data]):
            checks.line(label, number + offset + (1 if terminated else 0), raw, terminated)
        if terminated and src.views is not None:
            src.views.jsonl([src.views.other(raw) for raw in data])
    src.streamed = True
    if checks.index != len(checks.proofs):
        run.error(
            "PROOF_INVALID", f"{len(checks.proofs)} inclusion proofs for {checks.index} records",
            src.inclusion_label,
        )  # fmt: skip
    report.found = {"from": None, "to": last, "from_ts": checks.first_ts,
                    "to_ts": checks.last_ts or None}  # fmt: skip
    report.head = policy.head_of(trusted, last)
    policy.check_state(run, src.origin, last, last, {last: root})


class _Selective:
    """The record checks of a filtered range, one line at a time."""

    def __init__(self, run: Run, src: Source, last: int, root: bytes) -> None:
        self.run, self.src, self.last, self.root = run, src, last, root
        self.proofs = src.inclusion or []
        self.index = 0
        self.previous_seq = -1
        self.first_ts: str | None = None
        self.last_ts = ""

    def line(self, label: str, number: int, raw: bytes, terminated: bool) -> None:
        """Check one stored line and its inclusion proof."""
        run, report = self.run, self.run.report
        report.records_total += 1
        errors_before = len(report.errors)
        decoded = decode_line(run, label, number, raw, terminated)
        proof_entry = self.proofs[self.index] if self.index < len(self.proofs) else None
        self.index += 1
        if not isinstance(decoded, bytes):
            self._record(label, number, decoded)
            self._inclusion(decoded, proof_entry)
        if len(report.errors) != errors_before:
            report.records_invalid += 1

    def _record(self, label: str, number: int, decoded: Decoded) -> None:
        run, record = self.run, decoded.record
        seq = record["seq"]
        check_record_common(run, label, number, decoded, self.src.origin)
        if self.src.filter is not None and not self.src.filter.matches(record):
            run.error(
                "FILTER_MISMATCH", "record does not match the manifest filter", label, number, seq
            )
        if seq == self.previous_seq:
            run.error("SEQ_DUPLICATE", f"seq {seq} appears again", label, number, seq)
        elif seq < self.previous_seq:
            run.error("SEQ_ORDER", f"seq {seq} after {self.previous_seq}", label, number, seq)
        self.previous_seq = max(self.previous_seq, seq)
        ts = record["ts"]
        if ts < self.last_ts:
            run.error("TS_REGRESSION", f"ts {ts} before {self.last_ts}", label, number, seq)
        self.last_ts = max(self.last_ts, ts)
        if self.first_ts is None:
            self.first_ts = ts

    def _inclusion(self, decoded: Decoded, proof_entry: Any) -> None:
        seq = decoded.record["seq"]
        try:
            if not isinstance(proof_entry, dict) or proof_entry.get("seq") != seq:
                raise ProofError("no inclusion proof for this record")
            path = [bytes.fromhex(h) for h in proof_entry["proof"]]
            verify_inclusion(seq, self.last, decoded.leaf, path, self.root)
        except (ProofError, ValueError, KeyError, TypeError) as exc:
            self.run.error(
                "PROOF_INVALID", f"inclusion in the tree of size {self.last}: {exc}",
                self.src.inclusion_label, self.index, seq,
            )  # fmt: skip
