"""Export bundles: ranges, filters, views, the HTML report, minimisation."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
from pathlib import Path

import orjson
import pytest

from gateway.audit import (
    AuditError,
    ExportFilter,
    Keyring,
    PayloadDigester,
    export_bundle,
    minimise_ip,
    verify_paths,
    verify_source,
)

from .conftest import LogBuilder, decision


async def _fill(builder: LogBuilder, batches: int, size: int = 10) -> None:
    log = await builder.open(record_signatures=True)
    for b in range(batches):
        await asyncio.gather(*(log.append(decision(b * size + i)) for i in range(size)))
        builder.clock.advance(60)
    await log.close()


def _records(bundle: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line)["r"]
        for path in sorted((bundle / "records").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


async def test_contiguous_export_verifies_and_lists_every_file(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path
) -> None:
    await _fill(builder, 6)
    result = export_bundle(builder.directory, tmp_path / "b", builder.signer)
    assert (result.range_from, result.completeness) == (0, "proven")
    report = verify_source(tmp_path / "b", keyring)
    assert report.valid, report.errors
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {
        p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*") if p.is_file()
    }
    assert on_disk - listed == {"manifest.json", "manifest.sig"}
    assert {"VERIFY.txt", "report.html", "views/records.csv", "views/records.jsonl",
            "keys/keyring.json", "checkpoints.notes"} <= listed  # fmt: skip
    with pytest.raises(AuditError, match="exists"):
        export_bundle(builder.directory, tmp_path / "b", builder.signer)


async def test_a_bundle_is_durable_before_it_appears_under_its_name(
    builder: LogBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from gateway.audit import storage

    await _fill(builder, 6)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    monkeypatch.setattr(storage.os, "replace", replace)
    export_bundle(builder.directory, tmp_path / "b", builder.signer)
    moved = events.index(("replace", str(tmp_path / "b")))
    synced = {path for kind, path in events[:moved] if kind == "fsync"}
    partial = str(tmp_path / "b.partial")
    for path in (tmp_path / "b").rglob("*"):
        assert partial + "/" + path.relative_to(tmp_path / "b").as_posix() in synced, path
    assert partial in synced
    assert ("fsync", str(tmp_path)) in events[moved:]  # the rename itself


async def test_a_time_window_is_cut_at_checkpoints(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path
) -> None:
    await _fill(builder, 6)
    all_records = _records_of_log(builder.directory)
    from_ts = all_records[25]["ts"]
    to_ts = all_records[45]["ts"]
    result = export_bundle(
        builder.directory, tmp_path / "w", builder.signer, from_ts=from_ts, to_ts=to_ts
    )
    records = _records(tmp_path / "w")
    assert records[0]["seq"] == result.range_from > 0
    assert records[-1]["seq"] == result.range_to - 1
    wanted = {r["seq"] for r in all_records if from_ts <= r["ts"] < to_ts}
    assert wanted and wanted <= {r["seq"] for r in records}
    assert len(records) < len(all_records)
    assert (tmp_path / "w" / "proofs" / "start.json").exists()
    assert verify_source(tmp_path / "w", keyring).valid
    with pytest.raises(AuditError, match="no records"):
        export_bundle(builder.directory, tmp_path / "none", builder.signer,
                      from_ts="2030-01-01T00:00:00Z")  # fmt: skip


def _records_of_log(directory: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line)["r"]
        for path in sorted((directory / "segments").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


async def test_filtered_export_has_inclusion_proofs_and_says_not_proven(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path
) -> None:
    await _fill(builder, 4)
    wanted = ExportFilter(tenant="acme-eu", decision="deny")
    result = export_bundle(builder.directory, tmp_path / "f", builder.signer, export_filter=wanted)
    records = _records(tmp_path / "f")
    assert records and all(wanted.matches(r) for r in records)
    assert result.completeness == "not-proven" and result.records == len(records)
    proofs = (tmp_path / "f" / "proofs" / "inclusion.jsonl").read_text().splitlines()
    assert len(proofs) == len(records)
    report = verify_source(tmp_path / "f", keyring)
    assert report.valid and report.completeness == "not-proven"
    assert any(w.code == "COMPLETENESS_NOT_PROVEN" for w in report.warnings)


async def test_successive_exports_verify_against_state(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path
) -> None:
    await _fill(builder, 3)
    export_bundle(builder.directory, tmp_path / "q1", builder.signer)
    await _fill(builder, 3)
    export_bundle(builder.directory, tmp_path / "q2", builder.signer)
    state = tmp_path / "state.json"
    assert verify_paths([tmp_path / "q1"], keyring, state_path=state).valid
    assert verify_paths([tmp_path / "q2"], keyring, state_path=state).valid
    replay = verify_paths([tmp_path / "q1"], keyring, state_path=state)
    assert {f.code for s in replay.sources for f in s.errors} == {"ROLLBACK"}


async def test_html_report_is_self_contained_and_escaped(
    builder: LogBuilder, tmp_path: Path
) -> None:
    log = await builder.open()
    await log.append(decision(0, tenant="<script>alert(1)</script>"))
    await log.append(decision(3, rules=["r<1>", "geo.eu_residency"]))
    await log.close()
    export_bundle(builder.directory, tmp_path / "b", builder.signer)
    html = (tmp_path / "b" / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("<svg") >= 1 and html.count('class="chart"') >= 2
    # No external resources: the only URL is the SVG namespace.
    assert set(re.findall(r"https?://[^\"' ]+", html)) <= {"http://www.w3.org/2000/svg"}
    assert "Content-Security-Policy" in html


async def test_csv_view_is_flat_and_defuses_formulas(builder: LogBuilder, tmp_path: Path) -> None:
    log = await builder.open()
    await log.append(decision(0, tenant='=HYPERLINK("http://x")'))
    await log.close()
    export_bundle(builder.directory, tmp_path / "b", builder.signer)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "b" / "views" / "records.csv").read_text())))
    row = next(r for r in rows if r["type"] == "decision")
    assert row["tenant"].startswith("'=")
    assert row["rules"] == "geo.eu_residency"
    assert json.loads(row["legal_basis"]) == [{"ref": "Art. 44", "regime": "GDPR"}]


async def test_minimisation_marker_and_payload_hash_appear_nowhere(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path
) -> None:
    marker = "MARKER-7f3a9c1e-do-not-log"
    email = "jane.doe@example.com"
    payload = json.dumps({"instances": [{"note": f"{marker} {email}"}]}).encode()
    plain = hashlib.sha256(payload).hexdigest()
    digester = PayloadDigester(bytes(range(32)), "k1")
    log = await builder.open(record_signatures=True)
    await log.append(
        {
            "type": "decision",
            "decision_id": "d-1",
            "tenant": "acme-eu",
            "decision": "allow",
            "req_mac": digester.digest(payload),
            "client_ip": minimise_ip("203.0.113.77"),
            "client_ip_mac": digester.digest(b"203.0.113.77"),
            "detected_personal_data": [{"type": "email", "path": "/instances/0/note"}],
        }
    )
    await log.append({"type": "outcome", "decision_id": "d-1", "status": 200,
                      "resp_mac": digester.digest(b'{"predictions": [1]}')})  # fmt: skip
    await log.close()
    export_bundle(builder.directory, tmp_path / "b", builder.signer)
    assert verify_source(tmp_path / "b", keyring).valid
    for root in (builder.directory, tmp_path / "b"):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for needle in (marker, email, plain, "203.0.113.77"):
                    assert needle.encode() not in data, (needle, path)


async def test_the_report_summarises_every_decision_kind_and_names_the_head(
    builder: LogBuilder, tmp_path: Path
) -> None:
    long_rule = "privacy.mask_personal_data_in_free_text_before_forwarding_to_the_model"
    log = await builder.open()
    for i in range(20):
        await log.append(decision(i, decision="transform", status=200, rules=[long_rule]))
    await log.append(decision(21, decision="reject", status=401, rules=[]))
    await log.append(decision(22, decision="deny", status=451))
    await log.close()
    export_bundle(builder.directory, tmp_path / "b", builder.signer)
    html = (tmp_path / "b" / "report.html").read_text()
    assert "0 allow, 20 transform, 1 deny, 1 reject, 0 error" in html
    for kind in ("allow", "transform", "deny", "reject", "error"):
        assert f"</span>{kind}</span>" in html  # the legend names every kind
    assert long_rule in html  # labels are never cut
    notes = (tmp_path / "b" / "checkpoints.notes").read_text()
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    head = [n for n in notes.split("\n\n") if n.split("\n")[1:2] == [str(manifest["range"]["to"])]]
    assert head and head[0].split("\n")[2] in html  # the root hash of the range's head
    assert builder.signer.kid in html
    assert "one bar per minute" in html
