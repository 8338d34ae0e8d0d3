"""Start-up recovery: torn tails at every byte, refusals, new epochs, kill -9 under load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from gateway.audit import (
    AuditLog,
    AuditRecoveryRefused,
    Keyring,
    verify_source,
)
from gateway.audit.chain import record_bytes_of_line, seal
from gateway.audit.merkle import leaf_hash
from gateway.audit.note import parse_checkpoint_text, parse_note, split_notes
from gateway.audit.recovery import recover
from gateway.audit.storage import read_meta, segment_name

from .conftest import ORIGIN, LogBuilder, decision, run, segment_lines

REPO = Path(__file__).resolve().parents[2]


def _append_unsigned_tail(
    builder: LogBuilder, count: int, *, small: bool = False
) -> tuple[Path, int]:
    """Simulate a crash after records were written but before their checkpoint:
    seal `count` records onto the last segment without signing a checkpoint."""
    meta = read_meta(builder.directory)
    assert meta is not None
    recovered = recover(builder.directory, meta, [builder.signer.verifier])
    state = recovered.state
    segment = builder.directory / "segments" / segment_name(recovered.segment_start)
    base = segment.stat().st_size if segment.exists() else 0
    lines = b"".join(
        seal(
            state,
            {"type": "decision", "decision_id": f"t{i}"} if small else decision(100 + i),
            builder.signer,
            "2026-03-01T13:00:00.000000Z",
            sign_record=not small,
        ).line
        for i in range(count)
    )
    with open(segment, "ab") as handle:
        handle.write(lines)
    return segment, base


def _max_checkpoint(directory: Path) -> int:
    notes, _ = split_notes((directory / "checkpoints.notes").read_bytes())
    return max(parse_checkpoint_text(parse_note(raw).text).size for _o, raw in notes)


async def test_truncation_at_every_byte_of_the_unsigned_tail_recovers_and_verifies(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path, no_fsync: None
) -> None:
    log = await builder.open()
    for i in range(3):
        await log.append(decision(i))
    await log._abort()  # a crash: no `stop` record
    checkpointed = len(segment_lines(builder.directory))
    segment, base = _append_unsigned_tail(builder, 2, small=True)
    full = segment.read_bytes()
    tail = full[base:]
    line_ends = {i + 1 for i, byte in enumerate(tail) if byte == 0x0A}
    pristine = tmp_path / "pristine"
    shutil.copytree(builder.directory, pristine)
    work = tmp_path / "work"
    for cut in range(len(tail) + 1):
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(pristine, work)
        with open(work / "segments" / segment.name, "r+b") as handle:
            handle.truncate(base + cut)

        log = await AuditLog.open(work, builder.signer, origin=ORIGIN, options=builder.options())
        await log.close()
        records = [orjson.loads(line)["r"] for line in segment_lines(work)]
        kept = sum(1 for end in line_ends if end <= cut)
        torn = cut not in line_ends and cut != 0
        types = [r["type"] for r in records[checkpointed + kept :]]
        assert types == (["start", "recovery", "stop"] if torn or kept else ["start", "stop"]), cut
        recovery = records[checkpointed + kept + 1]
        if torn:
            moved = recovery["quarantined"][0]
            assert moved["bytes"] == cut - max([0, *[e for e in line_ends if e <= cut]])
        if kept:
            assert recovery["adopted"]["records"] == kept, cut
            assert recovery["adopted"]["from"] == checkpointed
        report = verify_source(work, keyring)
        assert report.valid, (cut, report.errors)


def test_an_invalid_record_in_the_tail_is_quarantined_from_there_on(
    builder: LogBuilder, keyring: Keyring, no_fsync: None
) -> None:
    run(_open_close(builder, 2, crash=True))
    segment, base = _append_unsigned_tail(builder, 3)
    data = segment.read_bytes()
    second = data.index(b"\n", base) + 1
    # Tamper with the middle tail record: its signature no longer matches.
    tampered = data[:second] + data[second:].replace(b'"status":', b'"status":1', 1)
    segment.write_bytes(tampered)
    run(_open_close(builder, 0))
    records = [orjson.loads(line)["r"] for line in segment_lines(builder.directory)]
    recovery = next(r for r in records if r["type"] == "recovery")
    assert recovery["quarantined"][0]["offset"] == second
    assert sum(1 for r in records if r.get("decision_id", "").endswith("100")) == 1
    assert verify_source(builder.directory, keyring).valid


async def _open_close(builder: LogBuilder, appends: int, *, crash: bool = False) -> None:
    log = await builder.open(record_signatures=True)
    for i in range(appends):
        await log.append(decision(i))
    if crash:
        await log._abort()  # no `stop` record, as after kill -9
    else:
        await log.close()


def test_a_log_shorter_than_its_checkpoint_refuses_to_start(
    builder: LogBuilder, keyring: Keyring
) -> None:
    run(_open_close(builder, 5))
    segment = sorted((builder.directory / "segments").glob("*.jsonl"))[-1]
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(b"".join(lines[:-2]))  # lose two checkpointed records
    with pytest.raises(AuditRecoveryRefused) as info:
        run(_open_close(builder, 0))
    assert "covers 7" in str(info.value) and "jurisgate audit new-epoch" in str(info.value)

    async def new_epoch() -> str:
        log = await AuditLog.open_new_epoch(
            builder.directory,
            builder.signer,
            origin=ORIGIN,
            reason="disk replaced",
            options=builder.options(),
        )
        await log.append(decision(1))
        origin = log.origin
        await log.close()
        return origin

    origin = run(new_epoch())
    assert origin == f"{ORIGIN}/epoch-2"
    records = [orjson.loads(line)["r"] for line in segment_lines(builder.directory)]
    assert [r["type"] for r in records[:2]] == ["start", "recovery"]
    assert records[1]["reason"] == "new_epoch"
    assert records[1]["previous_checkpoint"]["size"] == 7
    assert records[1]["operator_reason"] == "disk replaced"
    assert verify_source(builder.directory, keyring).valid  # keyring prefix covers the epoch
    assert (builder.directory / "epochs" / "1" / "checkpoints.notes").exists()


def test_a_changed_checkpointed_record_refuses_to_start(builder: LogBuilder) -> None:
    run(_open_close(builder, 3))
    segment = sorted((builder.directory / "segments").glob("*.jsonl"))[0]
    segment.write_bytes(segment.read_bytes().replace(b'"beta-us"', b'"beta-uz"', 1))
    with pytest.raises(AuditRecoveryRefused, match="root"):
        run(_open_close(builder, 0))


def test_a_torn_checkpoint_note_is_quarantined(builder: LogBuilder, keyring: Keyring) -> None:
    run(_open_close(builder, 2))
    notes = builder.directory / "checkpoints.notes"
    data = notes.read_bytes()
    notes.write_bytes(data + data[:40])  # half a note at the end
    run(_open_close(builder, 1))
    records = [orjson.loads(line)["r"] for line in segment_lines(builder.directory)]
    recovery = [r for r in records if r["type"] == "recovery"]
    assert recovery and recovery[0]["quarantined"][0]["file"] == "checkpoints.notes"
    assert verify_source(builder.directory, keyring).valid


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.audit import AuditLog, AuditOptions, Signer

    async def main(directory, key_path):
        signer = Signer.from_pem_file(key_path, "gw.example.test")
        log = await AuditLog.open(directory, signer, origin="gw.example.test/i1",
                                  options=AuditOptions(segment_records=256))
        out = sys.stdout

        async def client(c):
            i = 0
            while True:
                receipt = await log.append({"type": "decision", "decision_id": f"{c}-{i}"})
                out.write(f"{receipt.seq} {receipt.leaf_hash}\\n")
                out.flush()
                i += 1

        await asyncio.gather(*(client(c) for c in range(32)))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.timeout(60)
def test_kill_9_under_load_loses_no_acknowledged_record(
    tmp_path: Path, builder: LogBuilder, keyring: Keyring
) -> None:
    from gateway.audit.signing import write_private_key

    key_path = tmp_path / "key.pem"
    write_private_key(key_path, builder.signer)
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen(
        [sys.executable, str(script), str(builder.directory), str(key_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    acked: dict[int, str] = {}
    deadline = time.monotonic() + 40
    while len(acked) < 3000 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        seq, leaf = line.split()
        acked[int(seq)] = leaf.decode()
    child.send_signal(signal.SIGKILL)
    rest, errors = child.communicate(timeout=10)
    for line in rest.splitlines():  # printed after their appends resolved: acknowledged too
        parts = line.split()
        if len(parts) == 2:
            acked[int(parts[0])] = parts[1].decode()
    assert len(acked) >= 3000, errors.decode()[-2000:]
    before = _max_checkpoint(builder.directory)

    async def restart() -> None:
        log = await AuditLog.open(builder.directory, builder.signer, origin=ORIGIN)
        await log.close()

    run(restart())
    lines = segment_lines(builder.directory)
    for seq, leaf in acked.items():
        assert leaf_hash(record_bytes_of_line(lines[seq]) or b"").hex() == leaf, seq
    assert _max_checkpoint(builder.directory) >= before
    report = verify_source(builder.directory, keyring)
    assert report.valid, report.errors
    start = [orjson.loads(line)["r"] for line in lines if b'"type":"start"' in line][-1]
    assert start["previous_shutdown"] == "unclean"
    meta = json.loads((builder.directory / "LOG.json").read_text())
    assert meta["segment_records"] == 256
