"""Many logs, one export: a bundle per log, a signed index, views interleaved by time."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import orjson
import pytest

from gateway.audit import AuditError, AuditLog, AuditOptions, Keyring, Signer, verify_paths
from gateway.audit.export import export_bundle
from gateway.audit.multi_export import expand_log_dirs, export_many
from gateway.audit.signing import write_private_key
from gateway.cli import main as cli_main

from .conftest import DEPLOYMENT, FakeClock, decision, verify_codes

ORIGINS = (f"{DEPLOYMENT}/i1/w0", f"{DEPLOYMENT}/i1/w1", f"{DEPLOYMENT}/i2")


def _write_log(directory: Path, signer: Signer, origin: str, offset: float, count: int) -> None:
    """A log whose records start `offset` seconds in and come a second apart, so that
    the logs' records alternate in time."""
    clock = FakeClock()
    clock.advance(offset)

    async def write() -> None:
        options = AuditOptions(segment_records=8, heartbeat_seconds=3600.0, clock=clock)
        log = await AuditLog.open(directory, signer, origin=origin, options=options)
        for i in range(count):
            await log.append(decision(i, tenant=origin))
            clock.advance(1.0)
        await log.close()

    asyncio.run(write())


@pytest.fixture
def logs(tmp_path: Path, signer: Signer, no_fsync: None) -> list[Path]:
    dirs = [tmp_path / "audit" / "w0", tmp_path / "audit" / "w1", tmp_path / "r2"]
    for i, (directory, origin) in enumerate(zip(dirs, ORIGINS, strict=True)):
        _write_log(directory, signer, origin, offset=0.3 * i, count=12 + i)
    return dirs


@pytest.fixture
def bundle(logs: list[Path], signer: Signer, tmp_path: Path) -> Path:
    export_many(logs, tmp_path / "bundle", signer)
    return tmp_path / "bundle"


def _view_lines(bundle: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line) for line in (bundle / "views/records.jsonl").read_bytes().splitlines()
    ]


def test_a_bundle_of_many_logs_verifies_every_origin(bundle: Path, keyring: Keyring) -> None:
    result = verify_paths([bundle], keyring)
    assert result.valid, [f.text() for s in result.sources for f in s.errors]
    subs = [s for s in result.sources if s.kind == "bundle"]
    assert [s.origin for s in subs] == list(ORIGINS)
    assert all(s.completeness == "proven" for s in subs)
    index = result.sources[-1]
    assert (index.kind, index.completeness) == ("index", "proven")
    assert index.records_total == sum(s.records_total for s in subs)


def test_the_views_interleave_every_log_by_time(bundle: Path) -> None:
    lines = _view_lines(bundle)
    per_log = {o: [x["record"] for x in lines if x["origin"] == o] for o in ORIGINS}
    assert all(per_log[o] for o in ORIGINS)
    stamps = [(str(x["record"]["ts"]), str(x["origin"])) for x in lines]  # type: ignore[index]
    assert stamps == sorted(stamps)
    # The logs alternate: consecutive lines come from different logs most of the time.
    switches = sum(1 for a, b in zip(lines, lines[1:], strict=False) if a["origin"] != b["origin"])
    assert switches > len(lines) // 2
    csv_text = (bundle / "views/records.csv").read_text()
    assert csv_text.splitlines()[0].startswith("log,") and csv_text.count("\n") == len(lines) + 1
    report = (bundle / "report.html").read_text()
    assert all(o in report for o in ORIGINS) and "3 logs" in report
    denials = report[report.index("<h2>Denials</h2>") :]
    assert "<th>log</th>" in denials and all(f"<td>{o}</td>" in denials for o in ORIGINS)


def test_tampering_with_a_log_record_fails(bundle: Path, keyring: Keyring) -> None:
    record_file = sorted((bundle / "logs/1/records").glob("*.jsonl"))[0]
    record_file.write_bytes(record_file.read_bytes().replace(b'"allow"', b'"deny"', 1))
    result = verify_paths([bundle], keyring)
    assert not result.valid
    assert "FILE_HASH_MISMATCH" in verify_codes(result)


def test_a_removed_or_added_log_bundle_fails(bundle: Path, keyring: Keyring) -> None:
    shutil.copytree(bundle / "logs/2", bundle / "logs/3")
    assert "FILE_UNEXPECTED" in verify_codes(verify_paths([bundle], keyring))
    shutil.rmtree(bundle / "logs/3")
    shutil.rmtree(bundle / "logs/2")
    result = verify_paths([bundle], keyring)
    assert not result.valid and "FILE_MISSING" in verify_codes(result)


def test_an_edited_interleaved_view_fails(bundle: Path, keyring: Keyring) -> None:
    view = bundle / "views/records.jsonl"
    lines = view.read_bytes().splitlines(keepends=True)
    view.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    codes = verify_codes(verify_paths([bundle], keyring))
    assert {"FILE_HASH_MISMATCH", "VIEW_MISMATCH"} <= codes


def test_a_view_listed_with_its_new_hash_still_fails(
    bundle: Path, keyring: Keyring, signer: Signer
) -> None:
    # Even with the index re-signed by a pinned key, a view unlike the records is found.
    from gateway.audit.canonical import canonicalize
    from gateway.audit.multi_export import index_note_text
    from gateway.audit.note import sign_note

    view = bundle / "report.html"
    view.write_bytes(view.read_bytes().replace(b"<h2>Denials</h2>", b"<h2>None</h2>"))
    index = json.loads((bundle / "index.json").read_text())
    for item in index["files"]:
        if item["path"] == "report.html":
            item["sha256"] = hashlib.sha256(view.read_bytes()).hexdigest()
            item["bytes"] = view.stat().st_size
    data = canonicalize(index)
    (bundle / "index.json").write_bytes(data)
    (bundle / "index.sig").write_text(sign_note(index_note_text(data), [signer]))
    assert verify_codes(verify_paths([bundle], keyring)) == {"VIEW_MISMATCH"}


def test_an_unsigned_index_fails(bundle: Path, keyring: Keyring) -> None:
    index = json.loads((bundle / "index.json").read_text())
    index["logs"] = index["logs"][:2]
    from gateway.audit.canonical import canonicalize

    (bundle / "index.json").write_bytes(canonicalize(index))
    codes = verify_codes(verify_paths([bundle], keyring))
    assert "MANIFEST_SIG_INVALID" in codes and "FILE_UNEXPECTED" in codes


def test_a_worker_directory_expands_to_its_workers(logs: list[Path], tmp_path: Path) -> None:
    (tmp_path / "audit" / "w10").mkdir()  # not a log: ignored
    assert expand_log_dirs([tmp_path / "audit", logs[2]]) == logs
    with pytest.raises(AuditError, match="worker logs"):
        expand_log_dirs([tmp_path])


def test_duplicate_origins_are_refused(logs: list[Path], signer: Signer, tmp_path: Path) -> None:
    shutil.copytree(logs[0], tmp_path / "copy")
    with pytest.raises(AuditError, match="both origin"):
        export_many([logs[0], tmp_path / "copy"], tmp_path / "out", signer)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_the_cli_exports_and_verifies_many_logs(
    logs: list[Path], signer: Signer, keyring: Keyring, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    key = tmp_path / "key.pem"
    write_private_key(key, signer)
    ring = tmp_path / "ring.json"
    keyring.save(ring)
    out = tmp_path / "out"
    args = ["audit", "export", "--log", str(tmp_path / "audit"), "--log", str(logs[2])]
    assert cli_main([*args, "--out", str(out), "--key", str(key)]) == 0
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["0", "1", "2"]
    capsys.readouterr()
    assert cli_main(["audit", "verify", str(out), "--trusted-keys", str(ring)]) == 0
    text = capsys.readouterr().out
    assert "bundle of 3 logs" in text
    for origin in ORIGINS:
        assert f"  {origin}: valid" in text
    # --replay takes each log's bundle in turn.
    assert cli_main(["audit", "verify", str(out), "--trusted-keys", str(ring), "--replay"]) == 0
    assert capsys.readouterr().out.count("replay OK") == 3
    # Each log got its own `export` record; a second export of the same log twice is refused.
    dup = ["audit", "export", "--log", str(logs[0]), "--log", str(logs[0])]
    assert cli_main([*dup, "--out", str(tmp_path / "dup"), "--key", str(key)]) == 4
    assert "give each log once" in capsys.readouterr().err


def test_a_single_log_export_is_unchanged(logs: list[Path], signer: Signer, tmp_path: Path) -> None:
    alone = export_bundle(logs[2], tmp_path / "alone", signer)
    key = tmp_path / "key.pem"
    write_private_key(key, signer)
    out = tmp_path / "cli"
    assert cli_main(["audit", "export", "--log", str(logs[2]), "--out", str(out), "--key",
                     str(key), "--no-log-record"]) == 0  # fmt: skip
    assert not (out / "index.json").exists()
    listed = json.loads((out / "manifest.json").read_text())["files"]
    assert [f["path"] for f in listed] == [
        f["path"] for f in json.loads((alone.path / "manifest.json").read_text())["files"]
    ]


def test_a_filtered_window_of_many_logs_verifies(
    logs: list[Path], signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    from gateway.audit import ExportFilter

    result = export_many(logs, tmp_path / "f", signer, export_filter=ExportFilter(decision="deny"))
    assert [r.completeness for r in result.logs] == ["not-proven"] * 3
    report = verify_paths([tmp_path / "f"], keyring)
    assert report.valid, [f.text() for s in report.sources for f in s.errors]
    assert report.sources[-1].completeness == "not-proven"
    lines = _view_lines(tmp_path / "f")
    assert lines and all(x["record"]["decision"] == "deny" for x in lines)  # type: ignore[index]
