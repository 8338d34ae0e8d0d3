"""`AuditLog`: the one writer of a log, with group commit and fail-closed appends.

Rule 1 (durable before resolved): `await log.append(record)` resolves only after its
line is written and fsynced (strict mode) and a checkpoint covering it is signed and
written. Every batch gets its checkpoint, so signing cost grows with fsyncs, not records.
The checkpoints file is fsynced by a second thread, off the critical path and at most
every `checkpoint_sync_seconds`: a crash can lose the newest notes, never a record they
cover (recovery checks those records and the `start` record's checkpoint covers them
again), and a note never covers more than the fsynced records.

Rule 2 (few loop wake-ups): an append is validated and sealed (canonicalize, hash,
optional record signature) on the caller's own stack, into the open batch. When the
writer thread is idle the batch goes to it at once through a queue, with no writer task
in between; while the thread writes and fsyncs one batch, later appends are sealed into
the next. The thread hands a finished batch back with one `call_soon_threadsafe`, which
resolves every future of the batch and passes the thread the next batch. So a lone
record costs one thread hand-off each way; the Merkle root and the checkpoint signature
are computed on the thread.

Rule 3 (fail closed): any write error makes the log unhealthy for good (until restart and
recovery): the thread refuses every later batch, pending and later appends raise
`AuditUnavailable`, and the caller answers 503.

Rule 4 (segments): a batch never crosses a segment boundary, so every segment end is a
checkpointed size, which pruning and exports rely on.

Why this module holds more than 600 lines: the loop side (sealing into the open batch,
resolving futures, health) and the thread side (write, fsync, sign, note) are the two halves
of one state machine over the same batch objects and flags, each written against the
other's invariants; the file layout (storage), recovery and signing live in their own modules.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from gateway import __version__
from gateway.audit.chain import ChainState, SealedRecord, seal
from gateway.audit.errors import (
    AuditError,
    AuditUnavailable,
)
from gateway.audit.merkle import CompactRange
from gateway.audit.note import (
    Checkpoint,
    checkpoint_text,
    parse_checkpoint_text,
    parse_note,
    sign_note,
    split_notes,
)
from gateway.audit.record import ALL_TYPES, format_ts, validate_record
from gateway.audit.recovery import Recovered, recover
from gateway.audit.signing import Signer
from gateway.audit.storage import (
    CHECKPOINTS_FILE,
    EPOCHS_DIR,
    META_FILE,
    PRUNED_FILE,
    QUARANTINE_DIR,
    SEGMENTS_DIR,
    DirLock,
    LogFiles,
    LogMeta,
    atomic_write,
    dump_json,
    effective_origin,
    fsync_dir,
    list_segments,
    read_meta,
)
from gateway.audit.witness import WitnessedHead

__all__ = ["AppendReceipt", "AuditLog", "AuditOptions", "AuditStats", "PruneResult"]

Durability = Literal["strict", "relaxed-no-fsync"]

_log = logging.getLogger("jurisgate.audit")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuditOptions:
    """Writer settings.

    `durability`: "strict" (default) fsyncs every batch before resolving appends;
    "relaxed-no-fsync" skips fsync: appends survive a process crash but not a kernel
    crash or power loss. Use it only where that loss is acceptable.
    """

    durability: Durability = "strict"
    #: Largest batch sealed, written and fsynced together.
    max_batch_records: int = 256
    #: Extra time to wait for a fuller batch when the writer is idle (0: none; batches
    #: then form naturally while the previous fsync runs).
    max_batch_delay: float = 0.0
    #: Also sign each record (about 50 us per record) in addition to the checkpoints.
    record_signatures: bool = False
    #: Idle interval after which a heartbeat checkpoint is written.
    heartbeat_seconds: float = 30.0
    #: Strict mode: the checkpoints file is fsynced off the critical path at most this
    #: often (records are fsynced before every note; a lost note is signed again at
    #: recovery). 0: after every batch.
    checkpoint_sync_seconds: float = 0.05
    #: Strict mode: records whose notes may be written but not yet fsynced; beyond this
    #: the writer fsyncs the notes file before the next batch. With `max_batch_records`
    #: it bounds what a crash leaves uncovered, and so what recovery may adopt.
    max_unsynced_records: int = 2048
    #: Records per segment file for a new log; a power of two.
    segment_records: int = 65536
    #: Retention of records that carry no `retention_days` field.
    default_retention_days: int = 183
    #: Appends waiting beyond this many fail with `AuditUnavailable` (back-pressure).
    max_queue: int = 100_000
    #: Clock; injectable for tests.
    clock: Callable[[], datetime] = _utc_now

    def __post_init__(self) -> None:
        if self.durability not in ("strict", "relaxed-no-fsync"):
            raise ValueError(
                f"audit durability `{self.durability}` must be `strict` or `relaxed-no-fsync`"
            )
        if not 1 <= self.max_batch_records <= 65536:
            raise ValueError(f"audit max_batch_records {self.max_batch_records} must be 1..65536")
        seg = self.segment_records
        if seg <= 0 or seg & (seg - 1):
            raise ValueError(f"audit segment_records {seg} must be a power of two")
        if self.max_batch_delay < 0 or self.heartbeat_seconds <= 0:
            raise ValueError("audit max_batch_delay must be >= 0 and heartbeat_seconds > 0")
        if not 0 <= self.max_unsynced_records <= 1_000_000:
            raise ValueError(
                f"audit max_unsynced_records {self.max_unsynced_records} must be 0..1000000"
            )
        if not 0 <= self.checkpoint_sync_seconds <= 60:
            raise ValueError(
                f"audit checkpoint_sync_seconds {self.checkpoint_sync_seconds} must be 0..60"
            )

    @property
    def uncovered_bound(self) -> int:
        """The most records a crash can leave without a durable signed note."""
        return self.max_batch_records + self.max_unsynced_records


class AppendReceipt(NamedTuple):
    """Proof-of-write handed back by `append`: the record's place and the signed
    checkpoint (C2SP note) that covers it. (A NamedTuple: one is made per record.)"""

    seq: int
    ts: str
    leaf_hash: str
    checkpoint_size: int
    checkpoint: str


@dataclass(frozen=True)
class AuditStats:
    """Counters for metrics."""

    healthy: bool
    size: int
    queue_depth: int
    records_written: int
    batches_written: int
    checkpoints_written: int
    last_batch_records: int
    last_fsync_seconds: float


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed."""

    from_seq: int
    to_seq: int
    segments: tuple[str, ...]


class _Job:
    """One batch: sealed on the loop, then written, fsynced and checkpointed on the thread."""

    __slots__ = (
        "error",
        "first_seq",
        "futures",
        "limit",
        "lines",
        "nodes",
        "note",
        "records",
        "signers",
        "size",
        "sync_note",
        "ts",
        "waiter",
    )

    def __init__(self, first_seq: int, limit: int, ts: str, signer: Signer) -> None:
        self.first_seq = first_seq
        #: Records this batch may hold (segment end, max_batch_records).
        self.limit = limit
        self.ts = ts
        self.records: list[SealedRecord] = []
        self.futures: list[asyncio.Future[AppendReceipt] | None] = []
        self.lines: list[bytes] = []
        self.signers = [signer]
        #: Tree size and compact-range hashes when the batch was closed; the thread
        #: folds them into the root (the loop never hashes the root).
        self.size = first_seq
        self.nodes: list[bytes] = []
        self.note = ""
        #: fsync the note before resolving (`start`/`stop` batches: recovery relies on it).
        self.sync_note = False
        self.error: BaseException | None = None
        #: Resolved with the job itself once committed (system records, controls).
        self.waiter: asyncio.Future[_Job] | None = None


class _Call(NamedTuple):
    """Other blocking work for the writer thread, in order with the batches."""

    function: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


_STOP = object()
#: With the thread idle, a batch this big goes at once, so that the thread writes it while
#: the appends still arriving are sealed into the next one (CPU and I/O overlap).
_HAND_OVER_AT = 32


class AuditLog:
    """One append-only, signed, tamper-evident log (one per gateway process).

    Open with `await AuditLog.open(directory, signer, origin=..., options=...)`.
    """

    def __init__(
        self, directory: Path, signer: Signer, meta: LogMeta, options: AuditOptions
    ) -> None:
        self.directory = directory
        self._signer = signer
        self.meta = meta
        self.options = options
        self._lock = DirLock(directory)
        self._healthy = True
        self._failure = ""
        self._closing = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Loop -> writer thread: batches, calls, then _STOP.
        self._inbox: queue.SimpleQueue[_Job | _Call | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_done: asyncio.Future[None] | None = None
        self._io_error: BaseException | None = None  # set on the thread; refuses later batches
        self._cp_thread: threading.Thread | None = None
        self._cp_dirty = threading.Event()
        self._cp_stop = threading.Event()
        self._cp_sync_error: BaseException | None = None
        self._files: LogFiles | None = None
        self._state = ChainState(meta.origin)
        self._durable_size = 0
        self._last_cp_ts = ""
        self._open_job: _Job | None = None
        self._linger: asyncio.Handle | None = None
        self._heartbeat: asyncio.TimerHandle | None = None
        self._last_submit = time.monotonic()
        self._submitted: list[_Job] = []  # on the thread's queue or being written, in order
        self._control_lock: asyncio.Lock | None = None
        self._queued_records = 0
        self._records_written = 0
        self._batches_written = 0
        self._checkpoints_written = 0
        self._last_batch = 0
        self._last_note = ""
        self._listeners: list[Callable[[int, list[bytes]], None]] = []

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        signer: Signer,
        *,
        origin: str,
        options: AuditOptions | None = None,
        witnessed: Sequence[WitnessedHead] = (),
    ) -> AuditLog:
        """Open (or create) the log in `directory`, recover it, start the writer task and
        durably log a `start` record (and a `recovery` record when bytes were quarantined).

        Raises `AuditLogLocked` when another process writes the log and
        `AuditRecoveryRefused` when checkpointed records are missing or changed, or the
        log is behind or off a tree head in `witnessed` (cosigned by a witness).
        """
        return await cls._open(
            Path(directory), signer, origin, options or AuditOptions(), None, witnessed
        )

    @classmethod
    async def open_new_epoch(
        cls,
        directory: str | os.PathLike[str],
        signer: Signer,
        *,
        origin: str,
        reason: str,
        options: AuditOptions | None = None,
    ) -> AuditLog:
        """Archive the current epoch under epochs/<n>/ and start epoch n+1 with a fresh
        tree and origin `<origin>/epoch-<n+1>`; its first records describe the
        discontinuity (`recovery` with reason `new_epoch`). The operator's explicit answer
        to a refused recovery."""
        return await cls._open(
            Path(directory), signer, origin, options or AuditOptions(), reason, ()
        )

    @classmethod
    async def _open(
        cls,
        directory: Path,
        signer: Signer,
        origin: str,
        options: AuditOptions,
        new_epoch_reason: str | None,
        witnessed: Sequence[WitnessedHead],
    ) -> AuditLog:
        if not origin or any(ch.isspace() or ch == "+" for ch in origin):
            raise ValueError(f"audit origin `{origin}` must be non-empty, without spaces or `+`")
        directory.mkdir(parents=True, exist_ok=True)
        lock = DirLock(directory)
        await asyncio.to_thread(lock.acquire)
        try:
            meta, recovered, epoch_info = await asyncio.to_thread(
                cls._prepare, directory, signer, origin, options, new_epoch_reason, witnessed
            )
        except BaseException:
            lock.release()
            raise
        log = cls(directory, signer, meta, options)
        log._lock = lock
        try:
            log._start(recovered)
            system: list[dict[str, Any]] = [
                {
                    "type": "start",
                    "previous_shutdown": (
                        "none"
                        if recovered.last_type is None
                        else "clean"
                        if recovered.last_type == "stop"
                        else "unclean"
                    ),
                    "software": f"jurisgate {__version__}",
                    "durability": options.durability,
                    "record_signatures": options.record_signatures,
                    "uncovered_bound": options.uncovered_bound,
                }
            ]
            if epoch_info is not None:
                system.append(epoch_info)
            if recovered.quarantined or recovered.adopted is not None:
                crash: dict[str, Any] = {
                    "type": "recovery",
                    "reason": "crash_tail",
                    "checkpoint_size": (
                        recovered.last_checkpoint.size if recovered.last_checkpoint else 0
                    ),
                    "quarantined": recovered.quarantined,
                }
                if recovered.adopted is not None:
                    crash["adopted"] = recovered.adopted.record_fields()
                system.append(crash)
            await log._append_system(system)
        except BaseException:
            await log._abort()
            raise
        return log

    @staticmethod
    def _prepare(
        directory: Path,
        signer: Signer,
        origin: str,
        options: AuditOptions,
        new_epoch_reason: str | None,
        witnessed: Sequence[WitnessedHead],
    ) -> tuple[LogMeta, Recovered, dict[str, Any] | None]:
        meta = read_meta(directory)
        now = format_ts(options.clock())
        epoch_info: dict[str, Any] | None = None
        if meta is not None and meta.base_origin != origin:
            raise AuditError(
                f"{directory}: the log belongs to origin `{meta.base_origin}` but the "
                f"configured origin is `{origin}` (audit origin setting)"
            )
        if new_epoch_reason is not None:
            if meta is None:
                raise AuditError(f"{directory}: no log to start a new epoch of")
            epoch_info = _archive_epoch(directory, meta, new_epoch_reason)
            meta = LogMeta(origin, meta.epoch + 1, signer.name, meta.segment_records, now)
            atomic_write(directory / META_FILE, dump_json(meta.to_json()))
        if meta is None:
            meta = LogMeta(origin, 1, signer.name, options.segment_records, now)
            (directory / SEGMENTS_DIR).mkdir(exist_ok=True)
            atomic_write(directory / META_FILE, dump_json(meta.to_json()))
        (directory / SEGMENTS_DIR).mkdir(exist_ok=True)
        recovered = recover(
            directory,
            meta,
            [signer.verifier],
            options.uncovered_bound,
            witnessed if new_epoch_reason is None else (),
        )
        return meta, recovered, epoch_info

    def _start(self, recovered: Recovered) -> None:
        self._state = recovered.state
        self._durable_size = recovered.state.size
        self._last_cp_ts = recovered.last_checkpoint.ts if recovered.last_checkpoint else ""
        files = LogFiles(
            self.directory,
            self.meta.segment_records,
            recovered.segment_start,
            fsync=self.options.durability == "strict",
        )
        self._files = files
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._thread_done = loop.create_future()
        self._control_lock = asyncio.Lock()
        name = self.meta.origin
        self._thread = threading.Thread(
            target=self._writer_main, args=(files,), name=f"audit-writer:{name}", daemon=True
        )
        self._thread.start()
        if files.fsync:
            self._cp_thread = threading.Thread(
                target=self._cp_sync_main, args=(files,), name=f"audit-cpsync:{name}", daemon=True
            )
            self._cp_thread.start()
        self._last_submit = time.monotonic()
        self._heartbeat = loop.call_later(self.options.heartbeat_seconds, self._on_heartbeat)

    # -- public API ----------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """The origin written in every record and checkpoint."""
        return self.meta.origin

    @property
    def healthy(self) -> bool:
        """False after a write error or once closed; appends then raise `AuditUnavailable`."""
        return self._healthy and not self._closing

    @property
    def failure(self) -> str:
        """Why the log became unhealthy ("" while healthy)."""
        return self._failure

    @property
    def signer(self) -> Signer:
        """The key currently signing records and checkpoints."""
        return self._signer

    def stats(self) -> AuditStats:
        """Counters for metrics: queue depth, records written, last fsync latency..."""
        files = self._files
        return AuditStats(
            healthy=self.healthy,
            size=self._durable_size,
            queue_depth=self._queued_records,
            records_written=self._records_written,
            batches_written=self._batches_written,
            checkpoints_written=self._checkpoints_written,
            last_batch_records=self._last_batch,
            last_fsync_seconds=files.last_fsync_seconds if files is not None else 0.0,
        )

    @property
    def latest_checkpoint(self) -> str:
        """The newest signed checkpoint note (wire form), "" before the first one."""
        return self._last_note

    def durable_tree(self) -> CompactRange:
        """The compact range of the durable tree; only while nothing is pending (right
        after `open`), so that it matches `latest_checkpoint`."""
        if self._open_job is not None or self._submitted:
            raise AuditError("the tree is only known exactly while no batch is pending")
        return self._state.compact.copy()

    def add_commit_listener(self, listener: Callable[[int, list[bytes]], None]) -> None:
        """Call `listener(first_seq, leaf_hashes)` on the event loop after each committed
        batch, before its appends resolve (the witness submitter's proof window)."""
        self._listeners.append(listener)

    def _check_open(self) -> None:
        if not self._healthy:
            raise AuditUnavailable(f"audit log {self.origin} is unavailable: {self._failure}")
        if self._closing:
            raise AuditUnavailable(f"audit log {self.origin} is closed")

    async def append(self, record: Mapping[str, Any]) -> AppendReceipt:
        """Append one record; resolves once it is durable and covered by a signed
        checkpoint.

        `record` is a JSON-safe mapping with `type` in {decision, outcome, policy_change}.
        Raises `RecordInvalid` for a bad record (the log stays healthy) and
        `AuditUnavailable` when the log cannot make it durable (answer 503).
        A cancelled append may still be written.
        """
        self._check_open()
        fields = validate_record(record)
        if self._queued_records >= self.options.max_queue:
            raise AuditUnavailable(
                f"audit log {self.origin}: {self.options.max_queue} appends queued"
            )
        future: asyncio.Future[AppendReceipt] = self._loop.create_future()  # type: ignore[union-attr]
        self._seal_into_batch(fields, future)
        return await future

    async def rotate_key(self, new_signer: Signer) -> AppendReceipt:
        """Rotate to `new_signer`: log a `key_rotation` record signed by the current key
        (it names the new key ID and public key), co-sign the next checkpoint with both
        keys, then sign with the new key only. Publish the new key in the keyring first."""
        self._check_open()
        assert self._control_lock is not None
        async with self._control_lock:
            return await self._do_rotate(new_signer)

    async def prune(self, now: datetime | None = None) -> PruneResult | None:
        """Delete the oldest whole segments whose every record is past its retention
        (`retention_days`, else the default) at `now`; log a `prune` record first and
        keep the compact range at the cut (pruned.json) so later exports verify.
        Returns None when nothing can be pruned."""
        self._check_open()
        assert self._control_lock is not None
        async with self._control_lock:
            return await self._do_prune(now or self.options.clock())

    async def log_export(self, details: Mapping[str, Any]) -> AppendReceipt:
        """Log an `export` record (range, filter, manifest digest) for an export made."""
        self._check_open()
        fields = validate_record({"type": "export", **details}, frozenset({"export"}))
        receipts = await self._append_system([fields])
        return receipts[0]

    async def close(self) -> None:
        """Flush pending appends, log a `stop` record with a final checkpoint, and stop."""
        if self._closed:
            return
        if self._healthy and not self._closing:
            # Refuse new appends first, so that nothing lands after the stop record; the
            # ones already queued are written before it.
            self._closing = True
            with contextlib.suppress(AuditError):
                await self._append_system(
                    [{"type": "stop", "records_written": self._records_written}],
                    closing=True,
                )
        await self._abort()

    async def _abort(self) -> None:
        self._closing = True
        if self._closed:
            return
        self._closed = True
        for handle in (self._linger, self._heartbeat):
            if handle is not None:
                handle.cancel()
        job = self._open_job
        self._open_job = None
        if job is not None:  # never handed to the thread: nothing of it was written
            self._fail_job(job, AuditUnavailable(f"audit log {self.origin} is closed"))
        if self._thread is not None and self._thread_done is not None:
            # Batches already handed over are finished (or refused) first, in order.
            self._inbox.put(_STOP)
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._thread_done)
            self._thread.join()
        self._files = None
        self._lock.release()

    # -- loop side of the writer ---------------------------------------------------------

    async def _append_system(
        self, records: Sequence[Mapping[str, Any]], *, closing: bool = False
    ) -> list[AppendReceipt]:
        if not (closing and self._healthy):
            self._check_open()
        validated = [validate_record(record, ALL_TYPES) for record in records]
        futures: list[asyncio.Future[AppendReceipt]] = []
        for fields in validated:
            future: asyncio.Future[AppendReceipt] = self._loop.create_future()  # type: ignore[union-attr]
            job = self._seal_into_batch(fields, future)
            if fields["type"] in ("start", "stop"):
                job.sync_note = True
            futures.append(future)
        return list(await asyncio.gather(*futures))

    def _new_job(self) -> _Job:
        size = self._state.size
        seg = self.meta.segment_records
        limit = min(self.options.max_batch_records, seg - size % seg)
        ts = max(format_ts(self.options.clock()), self._state.last_ts, self._last_cp_ts)
        self._last_cp_ts = ts
        return _Job(size, limit, ts, self._signer)

    def _seal_into_batch(
        self, fields: dict[str, Any], future: asyncio.Future[AppendReceipt] | None
    ) -> _Job:
        """Seal one validated record into the open batch; hand the batch to the thread
        when the thread is idle (or the batch is full)."""
        job = self._open_job
        if job is None:
            job = self._open_job = self._new_job()
        record = seal(
            self._state, fields, self._signer, job.ts, sign_record=self.options.record_signatures
        )
        job.records.append(record)
        job.futures.append(future)
        job.lines.append(record.line)
        self._queued_records += 1
        if len(job.records) >= job.limit or (
            not self._submitted and len(job.records) >= _HAND_OVER_AT
        ):
            self._submit(job)
        elif not self._submitted and self._linger is None:
            # The thread is idle. Hand the batch over once the callbacks and tasks already
            # runnable have had their turn: the callers woken by the last batch append now,
            # one after another, and go together instead of one alone and the rest after.
            loop = self._loop
            assert loop is not None
            delay = self.options.max_batch_delay
            self._linger = (
                loop.call_later(delay, self._flush_open)
                if delay
                else loop.call_soon(self._flush_open)
            )
        return job

    def _flush_open(self) -> None:
        self._linger = None
        if self._open_job is not None:
            self._submit(self._open_job)

    def _submit(self, job: _Job) -> None:
        """Close `job` and hand it to the writer thread."""
        if job is self._open_job:
            self._open_job = None
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
        job.size = self._state.size
        job.nodes = list(self._state.compact.nodes)
        self._submitted.append(job)
        self._last_submit = time.monotonic()
        self._inbox.put(job)

    async def _commit_alone_or_wait(self, job: _Job) -> _Job:
        """Hand `job` to the thread unless it is there already (alone in its batch: no
        await between its sealing and this call), and wait until it is committed."""
        loop = self._loop
        assert loop is not None
        waiter: asyncio.Future[_Job] = loop.create_future()
        job.waiter = waiter
        if job is self._open_job:
            self._submit(job)
        return await waiter

    def _committed(self, job: _Job) -> None:
        """Runs on the loop, once per batch (scheduled by the writer thread)."""
        self._submitted.remove(job)  # the first one: the thread finishes them in order
        if job.error is not None:
            error = self._mark_failed(job.error)
            self._fail_job(job, error)
            return
        if not self._submitted and self._open_job is not None:
            # Keep the thread busy first: the next batch was sealed during this one.
            self._submit(self._open_job)
        size = job.size
        note = job.note
        self._durable_size = size
        self._last_note = note
        if job.records:
            leaves = [record.leaf for record in job.records]
            for listener in self._listeners:
                listener(job.first_seq, leaves)
        count = len(job.records)
        self._queued_records -= count
        self._batches_written += 1
        self._checkpoints_written += 1
        self._records_written += count
        self._last_batch = count
        for record, future in zip(job.records, job.futures, strict=True):
            if future is not None and not future.done():
                future.set_result(
                    AppendReceipt(record.seq, record.ts, record.leaf.hex(), size, note)
                )
        if job.waiter is not None and not job.waiter.done():
            job.waiter.set_result(job)

    def _fail_job(self, job: _Job, error: BaseException) -> None:
        self._queued_records -= len(job.records)
        for future in job.futures:
            if future is not None and not future.done():
                future.set_exception(error)
        if job.waiter is not None and not job.waiter.done():
            job.waiter.set_exception(error)

    def _mark_failed(self, error: BaseException) -> AuditUnavailable:
        if self._healthy:
            self._healthy = False
            self._failure = f"{type(error).__name__}: {error}"
            # Once per transition: the log stays unhealthy until a restart.
            _log.error(
                "audit log %s is unhealthy, every request is answered 503 until a restart: "
                "%s (errno %s, path %s)",
                self.origin,
                self._failure,
                getattr(error, "errno", None),
                getattr(error, "filename", None) or self.directory,
            )
        unavailable = AuditUnavailable(f"audit log {self.origin} is unavailable: {self._failure}")
        job = self._open_job
        self._open_job = None
        if job is not None:
            self._fail_job(job, unavailable)
        return unavailable

    def _on_heartbeat(self) -> None:
        if self._closing or not self._healthy:
            return
        loop = self._loop
        assert loop is not None
        interval = self.options.heartbeat_seconds
        idle = time.monotonic() - self._last_submit
        if idle >= interval * 0.99 and self._open_job is None and not self._submitted:
            self._submit(self._new_job())  # same size, new `ts`: the log is alive
            idle = 0.0
        self._heartbeat = loop.call_later(max(interval - idle, 0.001), self._on_heartbeat)

    async def _on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work on the writer thread, after the batches handed over so far."""
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[Any] = loop.create_future()
        self._inbox.put(_Call(function, args, future))
        return await future

    async def _do_rotate(self, new_signer: Signer) -> AppendReceipt:
        old = self._signer
        if new_signer.verifier == old.verifier:
            raise ValueError("the new key is the key already in use")
        fields = validate_record(
            {
                "type": "key_rotation",
                "new_kid": new_signer.kid,
                "new_key_name": new_signer.name,
                "new_public_key": base64.b64encode(new_signer.public_key).decode(),
                "old_kid": old.kid,
            },
            ALL_TYPES,
        )
        if self._open_job is not None:
            self._submit(self._open_job)
        job = self._new_job()
        # The rotation record is signed by the old key; its checkpoint by both.
        job.signers = [old, new_signer]
        self._open_job = job
        self._seal_into_batch(fields, None)  # may already submit it (thread idle)
        self._signer = new_signer  # later records: the new key only
        await self._commit_alone_or_wait(job)
        record = job.records[0]
        return AppendReceipt(record.seq, record.ts, record.leaf.hex(), job.size, "")

    async def _do_prune(self, now: datetime) -> PruneResult | None:
        from gateway.audit.retention import apply_prune, plan_prune

        if self._open_job is not None:
            self._submit(self._open_job)
        # After the batches before it, so the size planned with is the durable size.
        plan = await self._on_thread(
            plan_prune,
            self.directory,
            self.meta,
            self._state.size,
            now,
            self.options.default_retention_days,
        )
        if plan is None:
            return None
        fields = validate_record({"type": "prune", **plan.record_fields()}, ALL_TYPES)
        if self._open_job is not None:
            self._submit(self._open_job)
        job = self._new_job()
        self._open_job = job
        self._seal_into_batch(fields, None)
        await self._commit_alone_or_wait(job)
        await self._on_thread(apply_prune, self.directory, plan)
        return PruneResult(plan.from_seq, plan.to_seq, tuple(plan.segment_names))

    # -- the writer thread ---------------------------------------------------------------

    def _writer_main(self, files: LogFiles) -> None:
        """The writer thread: batches and calls in order until _STOP."""
        loop = self._loop
        assert loop is not None
        inbox = self._inbox
        try:
            while True:
                item = inbox.get()
                if item is _STOP:
                    break
                if isinstance(item, _Job):
                    try:
                        self._commit(files, item)
                    except BaseException as exc:  # noqa: BLE001 - every failure fails closed
                        self._io_error = self._io_error or exc
                        item.error = exc
                    _call_back(loop, self._committed, item)
                elif isinstance(item, _Call):
                    try:
                        result = item.function(*item.args)
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        _call_back(loop, _set_exception, item.future, exc)
                    else:
                        _call_back(loop, _set_result, item.future, result)
        finally:
            if self._cp_thread is not None:
                self._cp_stop.set()
                self._cp_dirty.set()
                self._cp_thread.join()
            files.close()
            if self._thread_done is not None:
                _call_back(loop, _set_result, self._thread_done, None)

    def _commit(self, files: LogFiles, job: _Job) -> None:
        """Write + fsync the batch's records, then sign and write its checkpoint."""
        if self._io_error is not None:
            raise AuditUnavailable(f"an earlier write failed: {self._io_error}")
        if self._cp_sync_error is not None:
            raise self._cp_sync_error
        if (
            files.fsync
            and job.first_seq - files.synced_note_size > self.options.max_unsynced_records
        ):
            # Keep what a crash leaves uncovered within the bound recovery adopts.
            files.sync_checkpoints()
        root = CompactRange(job.size, job.nodes).root()
        text = checkpoint_text(Checkpoint(self.meta.origin, job.size, root, job.ts))
        # Signed before anything is written: a signing error leaves no record behind. Inline,
        # not on a thread of its own: a hand-off each way costs more than the signature.
        note = sign_note(text, job.signers)
        offset = files.append_records(job.first_seq, b"".join(job.lines))
        try:
            files.append_checkpoint(note, job.size)
        except BaseException:
            # The batch's callers get 503: its records must not survive as if answered.
            with contextlib.suppress(OSError):
                files.cut_back(offset)
            raise
        job.note = note
        if job.sync_note:
            files.sync_checkpoints()
        elif files.fsync:
            self._cp_dirty.set()

    def _cp_sync_main(self, files: LogFiles) -> None:
        """The checkpoint-sync thread: fsync the notes file after new notes, at most every
        `checkpoint_sync_seconds`, overlapping the next batches."""
        interval = self.options.checkpoint_sync_seconds
        while True:
            self._cp_dirty.wait()
            if self._cp_stop.is_set():
                return  # LogFiles.close() makes the last notes durable
            self._cp_dirty.clear()
            try:
                files.sync_checkpoints()
            except OSError as exc:
                # The next commit raises it on the writer thread: the log fails closed.
                self._cp_sync_error = exc
                return
            if interval:
                self._cp_stop.wait(interval)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _call_back(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Hand a result back to the loop; a closed loop has nobody left to tell."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _archive_epoch(directory: Path, meta: LogMeta, reason: str) -> dict[str, Any]:
    """Move the current epoch's files to epochs/<epoch>/ untouched and describe the
    discontinuity for the new epoch's `recovery` record."""
    info: dict[str, Any] = {
        "type": "recovery",
        "reason": "new_epoch",
        "operator_reason": reason,
        "previous_origin": meta.origin,
        "previous_epoch": meta.epoch,
        "archived": f"{EPOCHS_DIR}/{meta.epoch}",
        "next_origin": effective_origin(meta.base_origin, meta.epoch + 1),
    }
    cp_path = directory / CHECKPOINTS_FILE
    if cp_path.exists():
        notes, _end = split_notes(cp_path.read_bytes())
        if notes:
            with contextlib.suppress(ValueError):
                last = parse_checkpoint_text(parse_note(notes[-1][1]).text)
                info["previous_checkpoint"] = {
                    "size": last.size,
                    "root": base64.b64encode(last.root).decode(),
                    "ts": last.ts,
                }
    info["previous_lines"] = sum(
        path.read_bytes().count(b"\n") for _first, path in list_segments(directory)
    )
    target = directory / EPOCHS_DIR / str(meta.epoch)
    target.mkdir(parents=True, exist_ok=False)
    for name in (META_FILE, SEGMENTS_DIR, CHECKPOINTS_FILE, PRUNED_FILE, QUARANTINE_DIR):
        source = directory / name
        if source.exists():
            os.replace(source, target / name)
    fsync_dir(target)
    fsync_dir(directory)
    (directory / SEGMENTS_DIR).mkdir()
    return info
