"""`AuditLog`: the one writer task of a log, with group commit and fail-closed appends.

Rule 1 (durable before resolved): `await log.append(record)` resolves only after its
line is written and fsynced (strict mode) and a checkpoint covering it is signed and
written. Every batch gets its checkpoint, so signing cost grows with fsyncs, not records.
The checkpoint file's own fsync follows on a second thread, overlapping the next batch: a
crash can lose the newest notes, never a record they cover (recovery signs it again at
the same size and root), and a note never covers more than the fsynced records.

Rule 2 (never block the loop): sealing (canonicalize, hash, optional record signature)
runs on the event loop; write, fsync and checkpoint signing run on one dedicated thread.
While one batch is on the thread, the next is sealed, so CPU and fsync overlap; with many
appends waiting and nothing in flight, the writer splits them in two to get that overlap.

Rule 3 (fail closed): any write error makes the log unhealthy for good (until restart and
recovery): pending and later appends raise `AuditUnavailable`, and the caller answers 503.

Rule 4 (segments): a batch never crosses a segment boundary, so every segment end is a
checkpointed size, which pruning and exports rely on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from gateway import __version__
from gateway.audit.chain import ChainState, SealedRecord, seal
from gateway.audit.errors import (
    AuditError,
    AuditUnavailable,
    RecordInvalid,
)
from gateway.audit.note import (
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

__all__ = ["AppendReceipt", "AuditLog", "AuditOptions", "AuditStats", "PruneResult"]

Durability = Literal["strict", "relaxed-no-fsync"]


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


@dataclass
class _Control:
    kind: str
    future: asyncio.Future[Any]
    payload: Any = None


@dataclass
class _Job:
    first_seq: int
    sealed: list[tuple[SealedRecord, asyncio.Future[AppendReceipt] | None]]
    text: str
    size: int
    signers: list[Signer]
    lines: bytes = b""
    note: str = ""
    done: asyncio.Future[None] | None = field(default=None, repr=False)


_Pending = tuple[dict[str, Any], "asyncio.Future[AppendReceipt] | None"]
#: With at least this many appends waiting and no batch in flight, the writer splits them.
_SPLIT_AT = 64


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
        self._pending: deque[_Pending | _Control] = deque()
        self._wake = asyncio.Event()
        self._healthy = True
        self._failure = ""
        self._closing = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        # Checkpoint-file fsyncs run here, overlapping the next batch's record fsync.
        self._cp_sync = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-cpsync")
        self._cp_sync_queued = False
        self._cp_sync_error: BaseException | None = None
        self._files: LogFiles | None = None
        self._state = ChainState(meta.origin)
        self._durable_size = 0
        self._last_cp_ts = ""
        self._unresolved: list[_Job] = []
        self._records_written = 0
        self._batches_written = 0
        self._checkpoints_written = 0
        self._last_batch = 0

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        signer: Signer,
        *,
        origin: str,
        options: AuditOptions | None = None,
    ) -> AuditLog:
        """Open (or create) the log in `directory`, recover it, start the writer task and
        durably log a `start` record (and a `recovery` record when bytes were quarantined).

        Raises `AuditLogLocked` when another process writes the log and
        `AuditRecoveryRefused` when checkpointed records are missing or changed.
        """
        return await cls._open(Path(directory), signer, origin, options or AuditOptions(), None)

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
        return await cls._open(Path(directory), signer, origin, options or AuditOptions(), reason)

    @classmethod
    async def _open(
        cls,
        directory: Path,
        signer: Signer,
        origin: str,
        options: AuditOptions,
        new_epoch_reason: str | None,
    ) -> AuditLog:
        if not origin or any(ch.isspace() or ch == "+" for ch in origin):
            raise ValueError(f"audit origin `{origin}` must be non-empty, without spaces or `+`")
        directory.mkdir(parents=True, exist_ok=True)
        lock = DirLock(directory)
        await asyncio.to_thread(lock.acquire)
        try:
            meta, recovered, epoch_info = await asyncio.to_thread(
                cls._prepare, directory, signer, origin, options, new_epoch_reason
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
                }
            ]
            if epoch_info is not None:
                system.append(epoch_info)
            if recovered.quarantined:
                system.append(
                    {
                        "type": "recovery",
                        "reason": "quarantined_tail",
                        "checkpoint_size": (
                            recovered.last_checkpoint.size if recovered.last_checkpoint else 0
                        ),
                        "quarantined": recovered.quarantined,
                    }
                )
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
        recovered = recover(directory, meta, [signer.verifier])
        return meta, recovered, epoch_info

    def _start(self, recovered: Recovered) -> None:
        self._state = recovered.state
        self._durable_size = recovered.state.size
        self._last_cp_ts = recovered.last_checkpoint.ts if recovered.last_checkpoint else ""
        self._files = LogFiles(
            self.directory,
            self.meta.segment_records,
            recovered.segment_start,
            fsync=self.options.durability == "strict",
        )
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"audit-writer:{self.meta.origin}"
        )

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
            queue_depth=len(self._pending),
            records_written=self._records_written,
            batches_written=self._batches_written,
            checkpoints_written=self._checkpoints_written,
            last_batch_records=self._last_batch,
            last_fsync_seconds=files.last_fsync_seconds if files is not None else 0.0,
        )

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
        if len(self._pending) >= self.options.max_queue:
            raise AuditUnavailable(
                f"audit log {self.origin}: {self.options.max_queue} appends queued"
            )
        future: asyncio.Future[AppendReceipt] = asyncio.get_running_loop().create_future()
        self._pending.append((fields, future))
        self._wake.set()
        return await future

    async def rotate_key(self, new_signer: Signer) -> AppendReceipt:
        """Rotate to `new_signer`: log a `key_rotation` record signed by the current key
        (it names the new key ID and public key), co-sign the next checkpoint with both
        keys, then sign with the new key only. Publish the new key in the keyring first."""
        self._check_open()
        receipt: AppendReceipt = await self._control("rotate", new_signer)
        return receipt

    async def prune(self, now: datetime | None = None) -> PruneResult | None:
        """Delete the oldest whole segments whose every record is past its retention
        (`retention_days`, else the default) at `now`; log a `prune` record first and
        keep the compact range at the cut (pruned.json) so later exports verify.
        Returns None when nothing can be pruned."""
        self._check_open()
        result: PruneResult | None = await self._control("prune", now or self.options.clock())
        return result

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
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self._abort()

    async def _abort(self) -> None:
        self._closing = True
        self._closed = True
        self._fail_pending(AuditUnavailable(f"audit log {self.origin} is closed"))
        if self._task is not None and not self._task.done():
            self._wake.set()
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await asyncio.to_thread(self._cp_sync.shutdown, True)
        if self._files is not None:
            files = self._files
            self._files = None
            await asyncio.get_running_loop().run_in_executor(self._executor, files.close)
        self._executor.shutdown(wait=True)
        self._lock.release()

    # -- writer internals ----------------------------------------------------------------

    async def _append_system(
        self, records: Sequence[Mapping[str, Any]], *, closing: bool = False
    ) -> list[AppendReceipt]:
        if not (closing and self._healthy):
            self._check_open()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[AppendReceipt]] = []
        for record in records:
            fields = validate_record(record, ALL_TYPES)
            future: asyncio.Future[AppendReceipt] = loop.create_future()
            self._pending.append((fields, future))
            futures.append(future)
        self._wake.set()
        return list(await asyncio.gather(*futures))

    async def _control(self, kind: str, payload: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Control(kind, future, payload))
        self._wake.set()
        return await future

    def _fail_pending(self, error: Exception) -> None:
        while self._pending:
            item = self._pending.popleft()
            future = item.future if isinstance(item, _Control) else item[1]
            if future is not None and not future.done():
                future.set_exception(error)

    def _mark_failed(self, error: BaseException) -> AuditUnavailable:
        if self._healthy:
            self._healthy = False
            self._failure = f"{type(error).__name__}: {error}"
        unavailable = AuditUnavailable(f"audit log {self.origin} is unavailable: {self._failure}")
        self._fail_pending(unavailable)
        return unavailable

    def _batch_ts(self) -> str:
        ts = format_ts(self.options.clock())
        return max(ts, self._state.last_ts, self._last_cp_ts)

    def _seal_batch(self, items: list[_Pending], ts: str) -> _Job:
        state = self._state
        signer = self._signer
        sign_records = self.options.record_signatures
        first = state.size
        sealed: list[tuple[SealedRecord, asyncio.Future[AppendReceipt] | None]] = []
        lines: list[bytes] = []
        for fields, future in items:
            if future is not None and future.done():  # cancelled before sealing
                continue
            record = seal(state, fields, signer, ts, sign_record=sign_records)
            sealed.append((record, future))
            lines.append(record.line)
        self._last_cp_ts = ts
        job = _Job(
            first,
            sealed,
            checkpoint_text(state.checkpoint(ts)),
            state.size,
            [signer],
            b"".join(lines),
        )
        self._unresolved.append(job)
        return job

    def _commit(self, job: _Job) -> str:
        """Runs on the writer thread: write + fsync records, then sign + write checkpoint."""
        files = self._files
        if files is None:
            raise AuditUnavailable("audit log files are closed")
        if self._cp_sync_error is not None:
            raise self._cp_sync_error
        files.append_records(job.first_seq, job.lines)
        note = sign_note(job.text, job.signers)
        files.append_checkpoint(note)
        return note

    def _submit(self, job: _Job) -> asyncio.Future[str]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, self._commit, job)

    def _finish(self, job: _Job, note: str) -> None:
        self._unresolved.remove(job)
        self._durable_size = job.size
        self._batches_written += 1
        self._checkpoints_written += 1
        self._records_written += len(job.sealed)
        self._last_batch = len(job.sealed)
        for record, future in job.sealed:
            if future is not None and not future.done():
                future.set_result(
                    AppendReceipt(record.seq, record.ts, record.leaf.hex(), job.size, note)
                )
        self._schedule_checkpoint_sync()

    def _schedule_checkpoint_sync(self) -> None:
        files = self._files
        if files is None or not files.fsync or self._cp_sync_queued:
            return  # a queued sync has not started yet: it will cover this note too
        self._cp_sync_queued = True
        self._cp_sync.submit(self._sync_checkpoints, files)

    def _sync_checkpoints(self, files: LogFiles) -> None:
        """Runs on the checkpoint-sync thread."""
        self._cp_sync_queued = False  # notes written from now on need another sync
        try:
            files.sync_checkpoints()
        except OSError as exc:
            # The next commit raises it on the writer thread: the log fails closed.
            self._cp_sync_error = exc

    def _take_batch(self, idle: bool) -> list[_Pending]:
        seg = self.meta.segment_records
        room = seg - self._state.size % seg
        limit = min(self.options.max_batch_records, room)
        if idle and len(self._pending) >= _SPLIT_AT:
            # Nothing is being written: send half now and seal the other half while the
            # first is fsynced, so CPU and fsync overlap even when every waiting client
            # is in this one batch.
            limit = min(limit, (len(self._pending) + 1) // 2)
        batch: list[_Pending] = []
        pending = self._pending
        while pending and len(batch) < limit and not isinstance(pending[0], _Control):
            batch.append(pending.popleft())  # type: ignore[arg-type]
        return batch

    async def _run(self) -> None:
        inflight: tuple[_Job, asyncio.Future[str]] | None = None
        try:
            while True:
                if not self._pending:
                    if inflight is not None:
                        done_job, io = inflight
                        inflight = None
                        self._finish(done_job, await io)
                        continue
                    if self._closing:
                        return
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.options.heartbeat_seconds)
                    except TimeoutError:
                        if not self._pending and not self._closing:
                            await self._commit_now([])
                        continue
                    if (
                        self.options.max_batch_delay
                        and len(self._pending) < self.options.max_batch_records
                    ):
                        await asyncio.sleep(self.options.max_batch_delay)
                    continue
                head = self._pending[0]
                if isinstance(head, _Control):
                    if inflight is not None:
                        done_job, io = inflight
                        inflight = None
                        self._finish(done_job, await io)
                    self._pending.popleft()
                    await self._run_control(head)
                    continue
                job = self._seal_batch(self._take_batch(inflight is None), self._batch_ts())
                if inflight is not None:
                    done_job, io = inflight
                    inflight = None
                    self._finish(done_job, await io)
                inflight = (job, self._submit(job))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            error = self._mark_failed(exc)
            for failed in self._unresolved:
                for _record, future in failed.sealed:
                    if future is not None and not future.done():
                        future.set_exception(error)
            self._unresolved.clear()
            if inflight is not None:
                with contextlib.suppress(BaseException):
                    await inflight[1]

    async def _run_control(self, control: _Control) -> None:
        try:
            if control.kind == "rotate":
                result: Any = await self._do_rotate(control.payload)
            elif control.kind == "prune":
                result = await self._do_prune(control.payload)
            else:  # pragma: no cover - internal
                raise AssertionError(control.kind)
        except (RecordInvalid, ValueError) as exc:
            if not control.future.done():
                control.future.set_exception(exc)
            return
        if not control.future.done():
            control.future.set_result(result)

    async def _commit_now(self, items: list[_Pending]) -> _Job:
        job = self._seal_batch(items, self._batch_ts())
        self._finish(job, await self._submit(job))
        return job

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
        job = self._seal_batch([(fields, None)], self._batch_ts())
        # The rotation record is signed by the old key; its checkpoint by both.
        job.signers = [old, new_signer]
        self._finish(job, await self._submit(job))
        self._signer = new_signer
        record = job.sealed[0][0]
        return AppendReceipt(record.seq, record.ts, record.leaf.hex(), job.size, "")

    async def _do_prune(self, now: datetime) -> PruneResult | None:
        from gateway.audit.retention import apply_prune, plan_prune

        plan = await asyncio.get_running_loop().run_in_executor(
            self._executor,
            plan_prune,
            self.directory,
            self.meta,
            self._durable_size,
            now,
            self.options.default_retention_days,
        )
        if plan is None:
            return None
        fields = validate_record({"type": "prune", **plan.record_fields()}, ALL_TYPES)
        await self._commit_now([(fields, None)])
        await asyncio.get_running_loop().run_in_executor(
            self._executor, apply_prune, self.directory, plan
        )
        return PruneResult(plan.from_seq, plan.to_seq, tuple(plan.segment_names))


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
