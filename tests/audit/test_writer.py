"""The writer task: durability before resolution, group commit, fail-closed, rotation."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit import (
    AuditError,
    AuditLogLocked,
    AuditUnavailable,
    Keyring,
    KeyringEntry,
    RecordInvalid,
    Signer,
    storage,
    verify_source,
)
from gateway.audit.chain import record_bytes_of_line
from gateway.audit.merkle import leaf_hash, verify_inclusion
from gateway.audit.note import parse_checkpoint_text, parse_note, split_notes
from gateway.audit.storage import LogFiles

from .conftest import DEPLOYMENT, LogBuilder, decision, segment_lines, verify_codes


def _records(directory: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line)["r"] for line in segment_lines(directory)]


def _checkpoint_sizes(directory: Path) -> list[int]:
    notes, _ = split_notes((directory / "checkpoints.notes").read_bytes())
    return [parse_checkpoint_text(parse_note(raw).text).size for _o, raw in notes]


async def test_append_resolves_once_signed_and_the_log_verifies(
    builder: LogBuilder, keyring: Keyring
) -> None:
    log = await builder.open()
    receipt = await log.append(decision(1))
    assert receipt.seq == 1  # seq 0 is the start record
    assert receipt.checkpoint_size == 2
    checkpoint = parse_note(receipt.checkpoint)
    assert checkpoint.verify([builder.signer.verifier])[0] == [builder.signer.verifier]
    assert parse_checkpoint_text(checkpoint.text).size == 2
    await log.close()
    types = [r["type"] for r in _records(builder.directory)]
    assert types == ["start", "decision", "stop"]
    report = verify_source(builder.directory, keyring)
    assert report.valid, report.errors
    assert report.completeness == "proven"


async def test_concurrent_appends_are_contiguous_and_receipts_prove_inclusion(
    builder: LogBuilder, keyring: Keyring
) -> None:
    log = await builder.open(max_batch_records=64)
    rng = random.Random(7)

    async def client(n: int) -> list[Any]:
        receipts = []
        for i in range(n):
            if rng.random() < 0.3:
                await asyncio.sleep(0)
            receipts.append(await log.append(decision(i)))
        return receipts

    results = await asyncio.gather(*(client(30) for _ in range(40)))
    receipts = [r for batch in results for r in batch]
    await log.close()
    seqs = sorted(r.seq for r in receipts)
    assert seqs == list(range(1, 1 + 40 * 30))
    lines = segment_lines(builder.directory)
    leaves = [leaf_hash(record_bytes_of_line(line) or b"") for line in lines]
    from gateway.audit.merkle import TreeHashes, inclusion_proof

    tree = TreeHashes(leaves)
    for receipt in receipts[::37]:
        assert receipt.leaf_hash == leaves[receipt.seq].hex()
        cp = parse_checkpoint_text(parse_note(receipt.checkpoint).text)
        assert cp.size > receipt.seq
        verify_inclusion(
            receipt.seq,
            cp.size,
            leaves[receipt.seq],
            inclusion_proof(receipt.seq, cp.size, tree),
            cp.root,
        )
    assert log.stats().batches_written < 40 * 30  # batching happened
    assert verify_source(builder.directory, keyring).valid


async def test_append_waits_for_fsync_without_blocking_the_loop(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await builder.open()
    gate = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        gate.wait(5)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    task = asyncio.ensure_future(log.append(decision(1)))
    ticks = 0
    for _ in range(20):  # the loop keeps running while fsync blocks its thread
        await asyncio.sleep(0.005)
        ticks += 1
    assert ticks == 20 and not task.done()
    gate.set()
    receipt = await asyncio.wait_for(task, 5)
    assert receipt.seq == 1
    monkeypatch.setattr(os, "fsync", real_fsync)
    await log.close()


async def test_checkpoints_never_exceed_the_fsynced_size(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced = {"lines": 0}
    real_fsync = os.fsync
    real_append = LogFiles.append_checkpoint
    violations: list[tuple[int, int]] = []

    def tracking_fsync(fd: int) -> None:
        real_fsync(fd)
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.endswith(".jsonl"):
            fsynced["lines"] = len(segment_lines(builder.directory))

    def checked_append(self: LogFiles, note: str, covered: int) -> None:
        size = parse_checkpoint_text(parse_note(note).text).size
        if size > fsynced["lines"]:
            violations.append((size, fsynced["lines"]))
        real_append(self, note, covered)

    monkeypatch.setattr(os, "fsync", tracking_fsync)
    monkeypatch.setattr(LogFiles, "append_checkpoint", checked_append)
    log = await builder.open()
    await asyncio.gather(*(log.append(decision(i)) for i in range(300)))
    await log.close()
    assert violations == []
    assert _checkpoint_sizes(builder.directory)[-1] == 302


async def test_a_write_error_fails_closed(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await builder.open()
    await log.append(decision(1))
    real_write_all = storage.write_all

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "write_all", disk_full)
    with pytest.raises(AuditUnavailable):
        await log.append(decision(2))
    assert not log.healthy
    assert not log.stats().healthy
    assert "No space left" in log.failure
    with pytest.raises(AuditUnavailable):  # stays closed, fails at once
        await log.append(decision(3))
    monkeypatch.setattr(storage, "write_all", real_write_all)
    await log.close()


async def test_concurrent_appends_all_fail_on_a_write_error(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await builder.open()

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    results = await asyncio.gather(
        *(log.append(decision(i)) for i in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, AuditUnavailable) for r in results)
    await log.close()


async def test_an_invalid_record_is_refused_and_the_log_stays_healthy(builder: LogBuilder) -> None:
    log = await builder.open()
    with pytest.raises(RecordInvalid):
        await log.append({"type": "decision", "client_ip": "192.0.2.1"})
    with pytest.raises(RecordInvalid):
        await log.append({"type": "stop"})
    assert log.healthy
    assert (await log.append(decision(1))).seq == 1
    await log.close()


async def test_relaxed_mode_skips_fsync(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    log = await builder.open(durability="relaxed-no-fsync")
    monkeypatch.setattr(os, "fsync", counting_fsync)
    await asyncio.gather(*(log.append(decision(i)) for i in range(20)))
    assert calls == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    await log.close()


async def test_per_record_signatures(builder: LogBuilder, keyring: Keyring) -> None:
    log = await builder.open(record_signatures=True)
    await log.append(decision(1))
    await log.close()
    assert all(b',"s":"' in line for line in segment_lines(builder.directory))
    assert verify_source(builder.directory, keyring).valid


async def test_heartbeat_checkpoints_while_idle(builder: LogBuilder) -> None:
    log = await builder.open(heartbeat_seconds=0.02)
    await asyncio.sleep(0.15)
    before = log.stats().checkpoints_written
    assert before >= 2
    await log.close()
    sizes = _checkpoint_sizes(builder.directory)
    assert sizes.count(1) >= 2  # several checkpoints at the same size: heartbeats


async def test_one_writer_per_log(builder: LogBuilder) -> None:
    log = await builder.open()
    with pytest.raises(AuditLogLocked):
        await builder.open()
    await log.close()


async def test_the_origin_of_a_log_cannot_change(builder: LogBuilder) -> None:
    log = await builder.open()
    await log.close()
    from gateway.audit import AuditLog

    with pytest.raises(AuditError, match="origin"):
        await AuditLog.open(builder.directory, builder.signer, origin="other/i9")


async def test_batches_never_cross_segment_boundaries(
    builder: LogBuilder, keyring: Keyring
) -> None:
    log = await builder.open(segment_records=8, max_batch_records=64)
    await asyncio.gather(*(log.append(decision(i)) for i in range(100)))
    await log.close()
    files = sorted((builder.directory / "segments").glob("*.jsonl"))
    assert [len(f.read_bytes().splitlines()) for f in files[:-1]] == [8] * (len(files) - 1)
    sizes = set(_checkpoint_sizes(builder.directory))
    assert {8 * k for k in range(1, len(files))} <= sizes
    assert verify_source(builder.directory, keyring).valid


async def test_close_then_reopen_records_a_clean_restart(
    builder: LogBuilder, keyring: Keyring
) -> None:
    log = await builder.open()
    await log.append(decision(1))
    await log.close()
    await log.close()  # idempotent
    with pytest.raises(AuditUnavailable):
        await log.append(decision(2))
    log = await builder.open()
    stats = log.stats()
    assert stats.size == 4 and stats.healthy and stats.queue_depth == 0
    await log.close()
    records = _records(builder.directory)
    assert [r["type"] for r in records] == ["start", "decision", "stop", "start", "stop"]
    assert records[3]["previous_shutdown"] == "clean"
    assert verify_source(builder.directory, keyring).valid


async def test_key_rotation_cosigns_and_revocation_is_enforced(builder: LogBuilder) -> None:
    k1 = builder.signer
    k2 = Signer.generate(DEPLOYMENT)
    log = await builder.open()
    await log.append(decision(1))
    rotation = await log.rotate_key(k2)
    await log.append(decision(2))
    await log.close()
    records = _records(builder.directory)
    rot = records[rotation.seq]
    assert rot["type"] == "key_rotation" and rot["kid"] == k1.kid and rot["new_kid"] == k2.kid
    assert all(r["kid"] == k2.kid for r in records[rotation.seq + 1 :])
    notes, _ = split_notes((builder.directory / "checkpoints.notes").read_bytes())
    cosigned = [parse_note(raw) for _o, raw in notes if len(parse_note(raw).signatures) == 2]
    assert len(cosigned) == 1
    assert parse_checkpoint_text(cosigned[0].text).size == rotation.seq + 1

    windows = Keyring(
        [
            KeyringEntry(k1.verifier, (DEPLOYMENT,), not_after=rotation.ts, status="retired"),
            KeyringEntry(k2.verifier, (DEPLOYMENT,), not_before=rotation.ts),
        ]
    )
    report = verify_source(builder.directory, windows)
    assert report.valid, report.errors
    # Only the new key pinned: everything K1 signed before the rotation is untrusted.
    assert "UNTRUSTED_KEY" in verify_codes(
        verify_source(builder.directory, Keyring([KeyringEntry(k2.verifier, (DEPLOYMENT,))]))
    )
    # K1 revoked before its last use: its later checkpoints and records are rejected.
    first_ts = records[1]["ts"]
    revoked = Keyring(
        [
            KeyringEntry(k1.verifier, (DEPLOYMENT,), not_after=first_ts, status="revoked"),
            KeyringEntry(k2.verifier, (DEPLOYMENT,), not_before=rotation.ts),
        ]
    )
    report = verify_source(builder.directory, revoked)
    assert "KEY_NOT_VALID_AT_TIME" in verify_codes(report)
    assert any(w.code == "KEY_REVOKED" for w in report.warnings)


async def test_the_restart_must_use_the_key_that_signed_last(builder: LogBuilder) -> None:
    log = await builder.open()
    await log.close()
    from gateway.audit import AuditRecoveryRefused

    with pytest.raises(AuditRecoveryRefused, match="not signed by the configured key"):
        await builder.open(signer=Signer.generate(DEPLOYMENT))


async def test_log_meta_names_origin_and_key(builder: LogBuilder) -> None:
    log = await builder.open()
    await log.close()
    meta = json.loads((builder.directory / "LOG.json").read_text())
    assert meta["origin"] == log.origin and meta["key_name"] == DEPLOYMENT


async def test_a_failed_checkpoint_fsync_fails_closed(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await builder.open()
    await log.append(decision(1))

    def broken(self: LogFiles) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(LogFiles, "sync_checkpoints", broken)
    # Durable; a checkpoint fsync then fails (this one's, or the previous note's if its
    # sync thread runs late, in which case this append already fails).
    with contextlib.suppress(AuditUnavailable):
        await log.append(decision(2))
    for _ in range(100):
        if log._cp_sync_error is not None:  # noqa: SLF001 - waiting for the sync thread
            break
        await asyncio.sleep(0.005)
    with pytest.raises(AuditUnavailable):
        await log.append(decision(3))
    assert not log.healthy
    await log.close()


async def test_nothing_lands_after_the_stop_record(builder: LogBuilder) -> None:
    log = await builder.open()
    queued = [asyncio.ensure_future(log.append(decision(i))) for i in range(20)]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(log.close())
    await asyncio.sleep(0)
    with pytest.raises(AuditUnavailable):
        await log.append(decision(99))
    await closing
    assert all(not f.exception() for f in queued)
    assert _records(builder.directory)[-1]["type"] == "stop"


async def test_appends_woken_together_go_to_the_thread_as_one_batch(builder: LogBuilder) -> None:
    log = await builder.open()
    before = log.stats().batches_written
    receipts = await asyncio.gather(*(log.append(decision(i)) for i in range(4)))
    assert log.stats().batches_written == before + 1
    assert len({r.checkpoint for r in receipts}) == 1
    assert [r.seq for r in receipts] == [1, 2, 3, 4]
    await log.close()


async def test_batches_queued_behind_a_failed_write_are_never_written(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await builder.open(max_batch_records=2)
    gate = threading.Event()
    real_fsync = os.fsync
    failed = {"done": False}

    def failing_fsync(fd: int) -> None:
        if not failed["done"] and os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            gate.wait(5)
            failed["done"] = True
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    # Two full batches: the second waits on the thread's queue behind the first.
    appends = [asyncio.ensure_future(log.append(decision(i))) for i in range(4)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(*appends, return_exceptions=True)
    assert all(isinstance(r, AuditUnavailable) for r in results)
    monkeypatch.setattr(os, "fsync", real_fsync)
    await log.close()
    # The failed batch's bytes may be on disk (unacknowledged); the one behind it is not.
    seqs = [r["seq"] for r in _records(builder.directory)]
    assert seqs == list(range(len(seqs))) and len(seqs) <= 3


async def test_a_failed_checkpoint_signature_fails_closed(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.audit import writer

    log = await builder.open()
    await log.append(decision(1))

    def broken(text: str, signers: Any) -> str:
        raise RuntimeError("signing device unavailable")

    monkeypatch.setattr(writer, "sign_note", broken)
    with pytest.raises(AuditUnavailable):
        await log.append(decision(2))
    assert not log.healthy and "signing device" in log.failure
    await log.close()
    assert _checkpoint_sizes(builder.directory)[-1] == 2  # nothing signed covers seq 2


async def test_the_checkpoints_file_is_fsynced_off_the_critical_path_and_throttled(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch, keyring: Keyring
) -> None:
    notes_syncs: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("checkpoints.notes"):
            notes_syncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    log = await builder.open(checkpoint_sync_seconds=30.0)
    for i in range(20):
        await log.append(decision(i))
    assert log.stats().batches_written >= 20
    assert len(notes_syncs) <= 2  # at most one sync per interval (plus the first)
    await log.close()  # and the last notes are made durable at close
    assert len(notes_syncs) <= 3 and notes_syncs
    assert _checkpoint_sizes(builder.directory)[-1] == 22
    assert verify_source(builder.directory, keyring).valid


def test_checkpoint_sync_interval_is_checked() -> None:
    from gateway.audit import AuditOptions

    with pytest.raises(ValueError, match="checkpoint_sync_seconds"):
        AuditOptions(checkpoint_sync_seconds=-1)
