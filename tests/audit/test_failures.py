"""Audit failures that must not pass silently (issue 12, findings 2, 4 and 5): a vanished,
replaced or externally changed file, a failed batch that must not survive a restart, and a log
line per health transition."""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from gateway.audit import AuditUnavailable, Keyring, verify_source
from gateway.audit.storage import LogFiles

from .conftest import LogBuilder, decision, run, segment_lines


def _active_segment(directory: Path) -> Path:
    return sorted((directory / "segments").glob("*.jsonl"))[-1]


async def test_a_deleted_active_segment_fails_closed_and_is_logged_once(
    builder: LogBuilder, caplog: pytest.LogCaptureFixture
) -> None:
    log = await builder.open()
    await log.append(decision(1))
    segment = _active_segment(builder.directory)
    segment.unlink()
    with caplog.at_level(logging.ERROR, logger="jurisgate.audit"):
        with pytest.raises(AuditUnavailable, match="unlinked|removed"):
            await log.append(decision(2))
        with pytest.raises(AuditUnavailable):
            await log.append(decision(3))
    assert not log.healthy and str(segment) in log.failure
    messages = [r.getMessage() for r in caplog.records if r.name == "jurisgate.audit"]
    assert len(messages) == 1, messages
    assert f"errno {errno.ENOENT}" in messages[0] and str(segment) in messages[0]
    await log.close()


async def test_a_replaced_checkpoints_file_fails_closed(builder: LogBuilder) -> None:
    log = await builder.open()
    await log.append(decision(1))
    notes = builder.directory / "checkpoints.notes"
    copy = notes.with_name("copy")
    copy.write_bytes(notes.read_bytes())
    os.replace(copy, notes)  # same content, another inode: later notes would be lost
    with pytest.raises(AuditUnavailable, match="replaced"):
        await log.append(decision(2))
    assert "checkpoints.notes" in log.failure
    await log.close()


@pytest.mark.parametrize("target", ["segment", "checkpoints"])
async def test_bytes_another_process_appends_fail_closed_before_they_are_signed_over(
    builder: LogBuilder, target: str
) -> None:
    """A disk writer without the key appends a forged line to the live file: the next batch
    would cover it with a signed checkpoint, so the writer refuses instead."""
    log = await builder.open()
    await log.append(decision(1))
    path = (
        _active_segment(builder.directory)
        if target == "segment"
        else builder.directory / "checkpoints.notes"
    )
    with path.open("ab") as forged:
        forged.write(b'{"r":{"forged":true}}\n')
    with pytest.raises(AuditUnavailable, match="another process changed it"):
        await log.append(decision(2))
    assert str(path) in log.failure and not log.healthy
    await log.close()
    # Nothing of the refused batch reached the file after the forged line.
    assert path.read_bytes().endswith(b'{"r":{"forged":true}}\n')


async def test_a_truncated_segment_fails_closed(builder: LogBuilder) -> None:
    log = await builder.open()
    await log.append(decision(1))
    segment = _active_segment(builder.directory)
    os.truncate(segment, segment.stat().st_size - 10)
    with pytest.raises(AuditUnavailable, match="another process changed it"):
        await log.append(decision(2))
    await log.close()


async def test_a_renamed_over_segment_fails_closed(builder: LogBuilder) -> None:
    log = await builder.open()
    await log.append(decision(1))
    segment = _active_segment(builder.directory)
    copy = segment.with_name("copy")
    copy.write_bytes(segment.read_bytes())
    os.replace(copy, segment)
    with pytest.raises(AuditUnavailable, match="replaced"):
        await log.append(decision(2))
    await log.close()


def _failing_fsync(after: int) -> Callable[[int], None]:
    """os.fsync that fails with ENOSPC for segment files after `after` successful calls."""
    real = os.fsync
    calls = {"segments": 0}

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".jsonl"):
            calls["segments"] += 1
            if calls["segments"] > after:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    return fsync


async def _fail_one_batch(builder: LogBuilder, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Open, append two records, then a batch of three whose fsync fails; returns the
    decision ids the clients were told were refused (503)."""
    log = await builder.open()
    await log.append(decision(1))
    await log.append(decision(2))
    monkeypatch.setattr(os, "fsync", _failing_fsync(0))
    import asyncio

    results = await asyncio.gather(
        *(log.append(decision(i)) for i in (10, 11, 12)), return_exceptions=True
    )
    assert all(isinstance(r, AuditUnavailable) for r in results), results
    await log.close()
    monkeypatch.undo()
    return [decision(i)["decision_id"] for i in (10, 11, 12)]


async def test_a_batch_whose_fsync_failed_does_not_survive_a_restart(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch, keyring: Keyring
) -> None:
    refused = await _fail_one_batch(builder, monkeypatch)
    log = await builder.open()
    await log.close()
    records = [orjson.loads(line)["r"] for line in segment_lines(builder.directory)]
    assert not [r for r in records if r.get("decision_id") in refused]
    assert not [r for r in records if "adopted" in r]
    assert verify_source(builder.directory, keyring).valid


async def test_a_batch_whose_note_failed_does_not_survive_a_restart(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch, keyring: Keyring
) -> None:
    log = await builder.open()
    await log.append(decision(1))

    def full(self: LogFiles, note: str, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LogFiles, "append_checkpoint", full)
    with pytest.raises(AuditUnavailable, match="No space"):
        await log.append(decision(2))
    monkeypatch.undo()
    await log.close()
    log = await builder.open()
    await log.close()
    records = [orjson.loads(line)["r"] for line in segment_lines(builder.directory)]
    assert decision(2)["decision_id"] not in {r.get("decision_id") for r in records}
    assert verify_source(builder.directory, keyring).valid


async def test_readyz_names_the_audit_failure_and_requests_get_503(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[object]]
) -> None:
    from tests.gateway.test_pipeline import _headers, _write_config
    from tests.plugins.gateway import StubBackend

    eu = StubBackend("be-eu", 0)
    await eu.start()
    try:
        harness = await gateway_factory(_write_config(tmp_path, eu.port, eu.port))
        _active_segment(harness.audit_dir).unlink()  # type: ignore[attr-defined]
        status, _, _ = await harness.request(  # type: ignore[attr-defined]
            "POST", "/v1/models/mnist:predict", headers=_headers(), json_body={"instances": [1]}
        )
        assert status == 503
        status, _, body = await harness.request("GET", "/readyz")  # type: ignore[attr-defined]
        report = json.loads(body)
        assert status == 503 and not report["ready"]
        assert any("segments/" in reason for reason in report["reasons"]), report
    finally:
        await eu.stop()


def test_relaxed_mode_still_notices_a_deleted_segment(builder: LogBuilder) -> None:
    async def scenario() -> None:
        log = await builder.open(durability="relaxed-no-fsync")
        await log.append(decision(1))
        _active_segment(builder.directory).unlink()
        with pytest.raises(AuditUnavailable):
            await log.append(decision(2))
        await log.close()

    run(scenario())
