"""Rewrite and launder (issue 12, finding 1): someone who can write the log directory but
holds no key removes the newest notes, rewrites the records after the first note left and
recomputes the hash chain. Neither `verify` nor a restart may accept that history, with no
state kept from an earlier run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from gateway.audit import AuditLog, AuditRecoveryRefused, Keyring, verify_source
from gateway.audit.canonical import canonical_dumps
from gateway.audit.merkle import leaf_hash
from gateway.audit.note import parse_checkpoint_text, parse_note, split_notes
from gateway.audit.storage import LogFiles
from gateway.cli import main as cli_main

from .conftest import DEPLOYMENT, LogBuilder, decision, run, segment_lines, verify_codes

# A small crash bound so that a short log shows the difference: 4 + 4 records.
BOUND_OPTIONS = {"max_batch_records": 4, "max_unsynced_records": 4}


async def _write(builder: LogBuilder, count: int, *, crash: bool = False) -> None:
    log = await builder.open(**BOUND_OPTIONS)
    for i in range(count):  # one batch (and one note) per record
        await log.append(decision(i))
    if crash:
        await log._abort()
    else:
        await log.close()


def _keep_notes_up_to(directory: Path, size: int) -> None:
    path = directory / "checkpoints.notes"
    notes, _end = split_notes(path.read_bytes())
    kept = [
        raw for _offset, raw in notes if parse_checkpoint_text(parse_note(raw).text).size <= size
    ]
    path.write_bytes(b"".join(raw + b"\n" for raw in kept))


def _rewrite_from(directory: Path, first: int) -> int:
    """Turn every denial from `first` on into an allow and recompute the chain; returns
    how many records were changed."""
    segments = sorted((directory / "segments").glob("*.jsonl"))
    records = [orjson.loads(line)["r"] for line in segment_lines(directory)]
    prev = bytes.fromhex(records[first]["prev"])
    changed = 0
    for record in records[first:]:
        if record.get("decision") == "deny":
            record["decision"], record["status"] = "allow", 200
            changed += 1
        record["prev"] = prev.hex()
        prev = leaf_hash(canonical_dumps(record))
    lines = [b'{"r":' + canonical_dumps(r) + b"}\n" for r in records]
    for path in segments:
        path.unlink()
    segments[0].write_bytes(b"".join(lines))
    return changed


def _laundered_log(builder: LogBuilder) -> None:
    run(_write(builder, 30))
    _keep_notes_up_to(builder.directory, 3)
    assert _rewrite_from(builder.directory, 3) > 0


def test_a_rewritten_tail_beyond_the_crash_bound_fails_verify(
    builder: LogBuilder, keyring: Keyring
) -> None:
    _laundered_log(builder)
    report = verify_source(builder.directory, keyring)
    assert not report.valid
    assert "TAIL_BEYOND_BOUND" in verify_codes(report)


def test_a_rewritten_tail_beyond_the_crash_bound_fails_the_cli(
    builder: LogBuilder, signer: object, tmp_path: Path
) -> None:
    from gateway.audit.keyring import KeyringEntry

    _laundered_log(builder)
    ring = tmp_path / "ring.json"
    Keyring([KeyringEntry(builder.signer.verifier, (DEPLOYMENT,))]).save(ring)
    code = cli_main(["audit", "verify", str(builder.directory), "--trusted-keys", str(ring)])
    assert code == 1


def test_a_restart_refuses_a_rewritten_tail_and_changes_nothing(builder: LogBuilder) -> None:
    _laundered_log(builder)
    before = segment_lines(builder.directory)
    with pytest.raises(AuditRecoveryRefused) as info:
        run(builder.open(**BOUND_OPTIONS))
    message = str(info.value)
    assert "segments/" in message and "more than 8" in message
    assert "jurisgate audit verify" in message and "jurisgate audit new-epoch" in message
    assert segment_lines(builder.directory) == before  # nothing adopted, nothing signed


def test_records_after_a_stop_are_refused_by_recovery_and_verify(
    builder: LogBuilder, keyring: Keyring
) -> None:
    run(_write(builder, 3))
    records = [orjson.loads(line)["r"] for line in segment_lines(builder.directory)]
    assert records[-1]["type"] == "stop"
    extra = dict(records[-2], seq=len(records), prev=leaf_hash(canonical_dumps(records[-1])).hex())
    segment = sorted((builder.directory / "segments").glob("*.jsonl"))[-1]
    with open(segment, "ab") as handle:
        handle.write(b'{"r":' + canonical_dumps(extra) + b"}\n")
    assert "RECORD_AFTER_STOP" in verify_codes(verify_source(builder.directory, keyring))
    with pytest.raises(AuditRecoveryRefused, match="follows a `stop` record"):
        run(builder.open(**BOUND_OPTIONS))


def test_a_crash_tail_within_the_bound_is_adopted_and_said_so(
    builder: LogBuilder, keyring: Keyring
) -> None:
    run(_write(builder, 6, crash=True))
    covered = len(segment_lines(builder.directory))
    _keep_notes_up_to(builder.directory, covered - 3)  # the newest notes were not synced
    run(_write(builder, 0))
    records = [orjson.loads(line)["r"] for line in segment_lines(builder.directory)]
    recovery = next(r for r in records if r["type"] == "recovery")
    assert recovery["adopted"] == {
        "from": covered - 3,
        "to": covered,
        "records": 3,
        "bound": 8,
        "acknowledged": "unknown",
    }
    assert verify_source(builder.directory, keyring).valid


async def test_the_writer_keeps_the_unsynced_notes_within_the_bound(
    builder: LogBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append = LogFiles.append_records
    worst: list[int] = []

    def tracking_append(self: LogFiles, first_seq: int, lines: bytes, **options: bool) -> int:
        worst.append(first_seq - self.synced_note_size)
        return real_append(self, first_seq, lines, **options)

    monkeypatch.setattr(LogFiles, "append_records", tracking_append)
    # Notes are fsynced by the background thread only every 30 s here: only the bound
    # makes the writer sync them.
    log = await builder.open(checkpoint_sync_seconds=30.0, **BOUND_OPTIONS)
    for i in range(40):
        await log.append(decision(i))
    await asyncio.gather(*(log.append(decision(i)) for i in range(40)))
    await log.close()
    assert worst and max(worst) <= 4


async def test_a_gateway_restart_refuses_the_rewritten_log_with_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_fsync: None
) -> None:
    from gateway.audit import AuditOptions, Signer
    from gateway.edge.app import run_gateway
    from tests.gateway.test_operations import ROOT, _serve_config

    config_path = _serve_config(tmp_path, 9, ROOT / "policies")
    signer = Signer.from_pem_file(tmp_path / "keys" / "signing-key.pem", "gw.proc")
    audit_dir = tmp_path / "audit"
    log = await AuditLog.open(
        audit_dir, signer, origin="gw.proc/p1", options=AuditOptions(max_batch_records=64)
    )
    for start in range(0, 2600, 64):  # beyond the gateway's default bound of 2304
        await asyncio.gather(*(log.append(decision(i)) for i in range(start, start + 64)))
    await log.close()
    _keep_notes_up_to(audit_dir, 1)
    assert _rewrite_from(audit_dir, 1) > 0

    code = await run_gateway(config_path)
    out = capsys.readouterr()
    assert code == 3
    assert "audit:" in out.out and "not covered by a signed checkpoint" in out.out
    assert "Traceback" not in out.out + out.err


@pytest.mark.parametrize("field", ["status", "prev"])
def test_a_modified_record_is_blamed_not_its_successor(
    builder: LogBuilder, keyring: Keyring, field: str
) -> None:
    run(_write(builder, 8))
    segment = sorted((builder.directory / "segments").glob("*.jsonl"))[0]
    lines = segment.read_bytes().splitlines(keepends=True)
    record = orjson.loads(lines[4])["r"]
    if field == "status":
        record["status"] = 299
    else:
        record["prev"] = "00" * 32
    lines[4] = b'{"r":' + canonical_dumps(record) + b"}\n"
    segment.write_bytes(b"".join(lines))
    report = verify_source(builder.directory, keyring)
    blamed = [f for f in report.errors if f.code == "PREV_MISMATCH"]
    assert [(f.seq, f.line) for f in blamed] == [(4, 5)], report.errors


def test_the_bound_of_the_run_that_crashed_applies_after_a_setting_is_lowered(
    builder: LogBuilder,
) -> None:
    # The crashed run allowed 4 + 4 records without a durable note; this one allows 1 + 1.
    run(_write(builder, 6, crash=True))
    covered = len(segment_lines(builder.directory))
    _keep_notes_up_to(builder.directory, covered - 5)

    async def reopen() -> None:
        log = await builder.open(max_batch_records=1, max_unsynced_records=1)
        await log.close()

    run(reopen())
    records = [orjson.loads(line)["r"] for line in segment_lines(builder.directory)]
    recovery = next(r for r in records if r["type"] == "recovery")
    assert recovery["adopted"]["records"] == 5 and recovery["adopted"]["bound"] == 8
