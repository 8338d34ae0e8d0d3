"""The gateway's witness submitter (I/O edge): off the request path, it sends the log's
newest checkpoint with a consistency proof to every configured witness, keeps their
cosignatures beside the notes, and raises an alarm when a witness refuses.

Rule 1 (never on the request path): submissions run in one background task, every
`interval` seconds and once more at shutdown; a slow or absent witness delays nothing but
its own cosignature (its lag grows and is reported).
Rule 2 (a refusal is an alarm): 403, 404, 422 and a witness that has seen a larger tree
than the log holds are logged once per change, counted, and listed as readiness reasons;
a 409 is the protocol telling the client the witness's size, so the client retries once
from there.
Rule 3 (memory follows the lag): the proof window holds the leaves since the smallest size
a witness still needs; one that is further behind than the window is served from the
segments on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.audit.chain import record_bytes_of_line
from gateway.audit.errors import NoteError, ProofError
from gateway.audit.merkle import CompactRange, leaf_hash
from gateway.audit.note import SignedNote, parse_note, split_notes
from gateway.audit.storage import (
    COSIGNED_FILE,
    PRUNED_FILE,
    StartState,
    fsync_dir,
    list_segments,
    split_lines,
    write_all,
)
from gateway.audit.witness import (
    CosignerKey,
    ProofWindow,
    TreeHead,
    WitnessedHead,
    encode_add_checkpoint,
    origin_hash,
    parse_tree_head,
)
from gateway.audit.writer import AuditLog

__all__ = [
    "COSIGNED_FILE",
    "CheckpointWitnessing",
    "WitnessEndpoint",
    "WitnessStatus",
    "fetch_witnessed_heads",
    "read_cosigned_heads",
    "witnessed_heads",
]

_log = logging.getLogger("jurisgate.witness")


@dataclass(frozen=True)
class WitnessEndpoint:
    """A configured witness: its pinned key and its submission URL prefix."""

    key: CosignerKey
    url: str

    @property
    def name(self) -> str:
        """The witness name (its key name)."""
        return self.key.name


@dataclass
class WitnessStatus:
    """What the gateway knows about one witness."""

    endpoint: WitnessEndpoint
    #: The witness's latest size for this log (None: not asked yet).
    size: int | None = None
    cosigned_note: str = ""
    cosigned_at: float | None = None
    alarm: str = ""
    last_error: str = ""
    refusals: dict[int, int] = field(default_factory=dict)

    def to_json(self, log_size: int, lag_seconds: float) -> dict[str, Any]:
        """The readiness view."""
        return {
            "size": self.size,
            "lag_records": max(log_size - (self.size or 0), 0),
            "lag_seconds": round(lag_seconds, 3),
            "alarm": self.alarm or None,
            "last_error": self.last_error or None,
        }


def _cosigned_heads_from(
    data: bytes, origin: str, keys: Sequence[CosignerKey], label: str
) -> list[WitnessedHead]:
    heads: list[WitnessedHead] = []
    notes, _end = split_notes(data)
    for _offset, raw in notes:
        try:
            note = parse_note(raw)
            head = parse_tree_head(note.text)
        except NoteError:
            continue
        if head.origin != origin:
            continue
        for key in keys:
            for sig in note.signatures:
                if key.matches(sig):
                    try:
                        key.verify(note.text, sig)
                    except NoteError:
                        continue
                    heads.append(
                        WitnessedHead(head.size, head.root, f"witness {key.name} ({label})")
                    )
    return heads


def read_cosigned_heads(
    directory: Path, origin: str, keys: Sequence[CosignerKey]
) -> list[WitnessedHead]:
    """Tree heads with a valid cosignature by one of `keys` in the log's cosigned file."""
    path = directory / COSIGNED_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return _cosigned_heads_from(data, origin, keys, str(path))


async def fetch_witnessed_heads(
    session: aiohttp.ClientSession,
    endpoints: Sequence[WitnessEndpoint],
    origin: str,
    timeout: float,
) -> list[WitnessedHead]:
    """Each witness's latest cosigned checkpoint of `origin` (monitoring endpoint). An
    unreachable witness is logged and skipped: the submitter finds out later (409)."""

    async def one(endpoint: WitnessEndpoint) -> list[WitnessedHead]:
        url = f"{endpoint.url.rstrip('/')}/{origin_hash(origin)}/checkpoint"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status == 404:
                    return []
                body = await resp.read()
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            _log.warning(
                "witness %s: cannot fetch its checkpoint of %s: %s", endpoint.name, origin, exc
            )
            return []
        # One note, not a file of notes: give it the separator a notes file has.
        return _cosigned_heads_from(body + b"\n", origin, [endpoint.key], url)

    found = await asyncio.gather(*(one(endpoint) for endpoint in endpoints))
    return [head for heads in found for head in heads]


async def witnessed_heads(
    session: aiohttp.ClientSession,
    directory: Path,
    endpoints: Sequence[WitnessEndpoint],
    origin: str,
    timeout: float,
) -> list[WitnessedHead]:
    """Every cosigned tree head the gateway can find before it opens its log: in its own
    cosigned file and from each witness."""
    keys = [endpoint.key for endpoint in endpoints]
    local = await asyncio.to_thread(read_cosigned_heads, directory, origin, keys)
    remote = await fetch_witnessed_heads(session, endpoints, origin, timeout)
    return local + remote


def _window_from_disk(directory: Path, start: int, end: int) -> ProofWindow:
    """A proof window from `start` to `end` built from the segments (blocking)."""
    compact = CompactRange()
    pruned = directory / PRUNED_FILE
    if pruned.exists():
        state = StartState.from_json(json.loads(pruned.read_text(encoding="utf-8")))
        if start < state.size:
            raise ProofError(f"size {start} lies in the pruned prefix (pruned up to {state.size})")
        compact = state.compact.copy()
    leaves: list[bytes] = []
    position = compact.size
    for first, path in list_segments(directory):
        if position >= end:
            break
        if first != position:
            raise ProofError(f"segment {path.name} does not continue at {position}")
        lines, _tail = split_lines(path.read_bytes())
        for line in lines:
            if position >= end:
                break
            leaf = leaf_hash(record_bytes_of_line(line) or line)
            if position < start:
                compact.append(leaf)
            else:
                leaves.append(leaf)
            position += 1
    if position < end:
        raise ProofError(f"the segments end at {position}, before size {end}")
    return ProofWindow(compact, leaves)


class CheckpointWitnessing:
    """The background submitter of one log's checkpoints to its witnesses."""

    def __init__(
        self,
        log: AuditLog,
        endpoints: Sequence[WitnessEndpoint],
        session: aiohttp.ClientSession,
        *,
        interval: float = 2.0,
        timeout: float = 5.0,
        max_window: int = 1 << 20,
    ) -> None:
        self.log = log
        #: Most leaf hashes held for proofs (32 bytes each, plus list overhead).
        self.max_window = max_window
        self.session = session
        self.interval = interval
        self.timeout = timeout
        self.statuses = [WitnessStatus(endpoint) for endpoint in endpoints]
        self.window = ProofWindow(log.durable_tree())
        self._commits: list[tuple[int, float]] = []  # (size after a batch, monotonic time)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._file_lock = asyncio.Lock()
        self._stores: set[asyncio.Task[None]] = set()
        self._proofs: dict[tuple[int, int], list[bytes]] = {}
        log.add_commit_listener(self._on_commit)

    # -- the log side

    def _on_commit(self, first_seq: int, leaves: list[bytes]) -> None:
        window = self.window
        window.extend(first_seq, leaves)
        self._commits.append((first_seq + len(leaves), time.monotonic()))
        if len(window.leaves) > self.max_window:
            # A witness gone for long must not make the gateway hold every leaf since: keep
            # the newest half; an older size is proven from the segments on disk (rule 3).
            keep_from = window.size - self.max_window // 2
            window.advance(keep_from)
            oldest = next((i for i, c in enumerate(self._commits) if c[0] > keep_from), 0)
            # The lag clock keeps its oldest entry, so lag is never underestimated.
            self._commits[1 : max(oldest, 1)] = []

    def lag_seconds(self, status: WitnessStatus) -> float:
        """How long the oldest record the witness has not cosigned has waited."""
        size = status.size or 0
        for end, when in self._commits:
            if end > size:
                return time.monotonic() - when
        return 0.0

    # -- running

    def start(self) -> None:
        """Start the background task."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="witness-submitter")

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.submit_all()
            except Exception:  # noqa: BLE001 - the submitter must keep going
                _log.exception("witness submission round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def close(self) -> None:
        """Stop the task and submit the final checkpoint (the `stop` record's) once."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.submit_all(), self.timeout * 2)
        if self._stores:
            await asyncio.gather(*self._stores, return_exceptions=True)

    async def submit_all(self) -> None:
        """Submit the newest checkpoint to every witness (concurrently)."""
        note_text = self.log.latest_checkpoint
        if not note_text:
            return
        note = parse_note(note_text)
        head = parse_tree_head(note.text)
        self._proofs.clear()  # witnesses at the same size share one proof per round
        await asyncio.gather(
            *(self._submit(status, note_text, note, head) for status in self.statuses)
        )
        known = [status.size for status in self.statuses]
        if all(size is not None for size in known) and known:
            low = min(size for size in known if size is not None)
            self.window.advance(low)
            self._commits = [c for c in self._commits if c[0] > low]

    def _raise_alarm(self, status: WitnessStatus, message: str) -> None:
        if not status.alarm:  # logged once per transition; the message stays current
            _log.error("witness alarm: %s", message)
        status.alarm = message

    async def _submit(
        self, status: WitnessStatus, note_text: str, note: SignedNote, head: TreeHead
    ) -> None:
        if status.cosigned_note == note_text:
            return
        name = status.endpoint.name
        for _attempt in range(2):
            old = status.size or 0
            if old > head.size:
                self._raise_alarm(
                    status,
                    f"witness {name} has seen {head.origin} at size {old} but the log is at "
                    f"{head.size}: the log was rolled back or forked",
                )
                return
            try:
                proof = await self._proof(old, head.size)
            except (ProofError, OSError, ValueError) as exc:
                self._raise_alarm(
                    status, f"witness {name}: cannot prove consistency from size {old}: {exc}"
                )
                return
            body = encode_add_checkpoint(old, proof, note_text)
            url = f"{status.endpoint.url.rstrip('/')}/add-checkpoint"
            try:
                async with self.session.post(
                    url, data=body, timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as resp:
                    answer = (await resp.read()).decode("utf-8", errors="replace")
                    code = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                status.last_error = f"{type(exc).__name__}: {exc}"
                return
            if code == 200:
                self._accept(status, note, note_text, head, answer)
                return
            status.refusals[code] = status.refusals.get(code, 0) + 1
            if code == 409:
                try:
                    status.size = int(answer.strip())
                except ValueError:
                    self._raise_alarm(status, f"witness {name}: 409 without a size")
                    return
                continue
            if code in (400, 403, 404, 422):
                self._raise_alarm(
                    status,
                    f"witness {name} refused {head.origin} size {head.size} with {code}: "
                    f"{answer.strip()[:200]}",
                )
                return
            status.last_error = f"HTTP {code}: {answer.strip()[:200]}"
            return
        self._raise_alarm(status, f"witness {name}: its size keeps changing (409 twice)")

    def _accept(
        self, status: WitnessStatus, note: SignedNote, note_text: str, head: TreeHead, answer: str
    ) -> None:
        key = status.endpoint.key
        lines = [line for line in answer.split("\n") if line]
        try:
            cosigned = parse_note(note.text + "\n" + "\n".join(lines) + "\n")
        except NoteError as exc:
            self._raise_alarm(status, f"witness {key.name}: malformed answer: {exc}")
            return
        mine = [sig for sig in cosigned.signatures if key.matches(sig)]
        try:
            for sig in mine:
                key.verify(note.text, sig)
        except NoteError as exc:
            self._raise_alarm(status, f"witness {key.name}: {exc}")
            return
        if not mine:
            self._raise_alarm(status, f"witness {key.name}: no cosignature by its pinned key")
            return
        status.size = head.size
        status.cosigned_note = note_text
        status.cosigned_at = time.time()
        status.last_error = ""
        if status.alarm:
            _log.warning("witness %s cosigned size %s again; alarm cleared", key.name, head.size)
        status.alarm = ""
        entry = note_text + "".join(sig.line() for sig in mine) + "\n"
        task = asyncio.get_running_loop().create_task(self._store(entry))
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)
        task.add_done_callback(_report_store_failure)

    async def _store(self, entry: str) -> None:
        async with self._file_lock:
            await asyncio.to_thread(
                _append_durably, self.log.directory / COSIGNED_FILE, entry.encode()
            )

    async def _proof(self, old: int, new: int) -> list[bytes]:
        if old == 0 or old == new:
            return []
        known = self._proofs.get((old, new))
        if known is not None:
            return known
        proof = await self._make_proof(old, new)
        self._proofs[(old, new)] = proof
        return proof

    async def _make_proof(self, old: int, new: int) -> list[bytes]:
        if old < self.window.base.size:
            # Further behind than the window (a witness last seen before a restart).
            extra = await asyncio.to_thread(
                _window_from_disk, self.log.directory, old, self.window.base.size
            )
            # Only for this proof: the window itself stays bounded.
            joined = ProofWindow(extra.base, [*extra.leaves, *self.window.leaves])
            return joined.proof(old, new)
        return self.window.proof(old, new)

    # -- reporting

    def report(self) -> dict[str, Any]:
        """Per witness: size, lag and alarm (for /readyz)."""
        size = self.log.stats().size
        return {s.endpoint.name: s.to_json(size, self.lag_seconds(s)) for s in self.statuses}

    def alarms(self) -> list[str]:
        """The current alarms (readiness reasons)."""
        return [status.alarm for status in self.statuses if status.alarm]


def _append_durably(path: Path, data: bytes) -> None:
    existed = path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not existed:
        fsync_dir(path.parent)


def _report_store_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        _log.error(
            "cannot store a cosignature: %s (errno %s)", error, getattr(error, "errno", None)
        )
