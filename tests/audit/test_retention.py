"""Retention floors and pruning of whole segments."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from gateway.audit import (
    Keyring,
    check_retention_days,
    export_bundle,
    retention_floor_days,
    verify_source,
)
from gateway.audit.retention import plan_prune
from gateway.audit.storage import read_meta

from .conftest import LogBuilder, decision, segment_lines


def test_floors() -> None:
    assert retention_floor_days(["EU"]) == 183
    assert retention_floor_days(["EU", "CN"]) == 1095
    assert retention_floor_days(["US"]) == 0
    check_retention_days(183, ["EU"])
    with pytest.raises(ValueError, match=r"audit.retention_days: `90` days is below the 183"):
        check_retention_days(90, ["EU"])
    with pytest.raises(ValueError, match="1095"):
        check_retention_days(400, ["CN"], setting="tenants.acme.retention_days")
    with pytest.raises(ValueError, match="non-negative"):
        check_retention_days(-1, [])


async def test_prune_removes_only_whole_expired_segments(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path
) -> None:
    log = await builder.open(segment_records=16, default_retention_days=30, record_signatures=True)
    for i in range(40):
        # Records 20+ must be kept ten years (a policy raised their retention).
        await log.append(decision(i, retention_days=30 if i < 20 else 3650))
    start = builder.clock.now
    assert await log.prune(start + timedelta(days=10)) is None  # nothing expired yet
    result = await log.prune(start + timedelta(days=40))
    assert result is not None
    assert (result.from_seq, result.to_seq) == (0, 16)  # segment 16..31 holds a long record
    await log.append(decision(99))
    await log.close()
    assert not (builder.directory / "segments" / f"{0:020d}.jsonl").exists()
    pruned = json.loads((builder.directory / "pruned.json").read_text())
    assert pruned["size"] == 16 and pruned["history"][0]["to_seq"] == 16
    records = [orjson.loads(line)["r"] for line in segment_lines(builder.directory)]
    prune = next(r for r in records if r["type"] == "prune")
    assert prune["segments"] == [f"{0:020d}.jsonl"] and prune["to_seq"] == 16
    assert verify_source(builder.directory, keyring).valid
    result = export_bundle(builder.directory, tmp_path / "b", builder.signer)
    assert result.range_from == 16
    assert verify_source(tmp_path / "b", keyring).valid


async def test_prune_plan_ignores_unfinished_segments(builder: LogBuilder) -> None:
    log = await builder.open(segment_records=16, default_retention_days=1)
    await asyncio.gather(*(log.append(decision(i, retention_days=1)) for i in range(10)))
    meta = read_meta(builder.directory)
    assert meta is not None
    plan = plan_prune(
        builder.directory, meta, log.stats().size, builder.clock.now + timedelta(days=9), 1
    )
    assert plan is None  # the only segment is still open
    await log.close()


async def test_a_prune_interrupted_before_deleting_is_finished_by_recovery(
    builder: LogBuilder, keyring: Keyring
) -> None:
    log = await builder.open(segment_records=16, default_retention_days=1)
    await asyncio.gather(*(log.append(decision(i, retention_days=1)) for i in range(20)))
    first = builder.directory / "segments" / f"{0:020d}.jsonl"
    kept = first.read_bytes()
    assert await log.prune(builder.clock.now + timedelta(days=5)) is not None
    await log.close()
    first.write_bytes(kept)  # as if the crash came before the files were deleted
    log = await builder.open(segment_records=16)
    await log.close()
    assert not first.exists()
    assert verify_source(builder.directory, keyring).valid
