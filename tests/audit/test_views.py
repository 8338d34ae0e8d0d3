"""Views that match (issue 12, finding 6): CSV, JSONL and the HTML report in a bundle are
made again from the verified records and compared, so whoever can sign a manifest cannot
show people something the records do not say."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gateway.audit import ExportFilter, Keyring, export_bundle, verify_source
from gateway.audit.bundle import MANIFEST_FILE, MANIFEST_SIG_FILE, manifest_note_text
from gateway.audit.canonical import canonicalize
from gateway.audit.note import sign_note

from .conftest import LogBuilder, decision, run, verify_codes


def _bundle(builder: LogBuilder, keyring: Keyring, out: Path, **kw: object) -> Path:
    async def write() -> None:
        log = await builder.open()
        for i in range(12):
            await log.append(decision(i))
        await log.close()

    run(write())
    export_bundle(builder.directory, out, builder.signer, keyring=keyring, **kw)  # type: ignore[arg-type]
    return out


def _resign(bundle: Path, builder: LogBuilder) -> None:
    """What someone holding a manifest key can do: list the new hashes and sign again."""
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    for item in manifest["files"]:
        data = (bundle / item["path"]).read_bytes()
        item["sha256"], item["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    data = canonicalize(manifest)
    (bundle / MANIFEST_FILE).write_bytes(data)
    note = sign_note(manifest_note_text(manifest["origin"], data), [builder.signer])
    (bundle / MANIFEST_SIG_FILE).write_text(note)


@pytest.mark.parametrize(
    ("view", "old", "new"),
    [
        ("views/records.csv", b",deny,", b",allow,"),
        ("views/records.jsonl", b'"decision":"deny"', b'"decision":"allow"'),
        ("report.html", b"deny", b"allow"),
    ],
)
@pytest.mark.parametrize("filtered", [False, True])
def test_an_edited_view_fails_verify_even_with_a_valid_manifest(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path, view: str, old: bytes, new: bytes,
    filtered: bool,
) -> None:  # fmt: skip
    kw = {"export_filter": ExportFilter(tenant="acme-eu")} if filtered else {}
    bundle = _bundle(builder, keyring, tmp_path / "bundle", **kw)
    assert verify_source(bundle, keyring).valid
    data = (bundle / view).read_bytes()
    assert old in data
    (bundle / view).write_bytes(data.replace(old, new, 1))
    _resign(bundle, builder)
    report = verify_source(bundle, keyring)
    assert verify_codes(report) == {"VIEW_MISMATCH"}, report.errors
    assert any(view in (f.file or "") for f in report.errors)


def test_views_from_another_version_are_named_not_trusted(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path
) -> None:
    bundle = _bundle(builder, keyring, tmp_path / "bundle")
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["generator"] = "jurisgate 0.0.1"
    (bundle / MANIFEST_FILE).write_bytes(canonicalize(manifest))
    _resign(bundle, builder)
    report = verify_source(bundle, keyring)
    assert report.valid
    assert "VIEW_NOT_CHECKED" in {w.code for w in report.warnings}


@pytest.mark.parametrize("view", ["views/records.csv", "views/records.jsonl", "report.html"])
def test_views_compared_in_a_second_process_catch_a_one_byte_change(
    builder: LogBuilder,
    keyring: Keyring,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    view: str,
) -> None:
    import gateway.audit.verify.viewcheck as verify_module

    monkeypatch.setattr(verify_module, "PARALLEL_VIEWS_BYTES", 0)
    bundle = _bundle(builder, keyring, tmp_path / "bundle")
    report = verify_source(bundle, keyring)
    assert report.valid, report.errors
    data = bytearray((bundle / view).read_bytes())
    middle = len(data) // 2
    data[middle] = ord("x") if data[middle] != ord("x") else ord("y")
    (bundle / view).write_bytes(bytes(data))
    _resign(bundle, builder)
    report = verify_source(bundle, keyring)
    assert verify_codes(report) == {"VIEW_MISMATCH"}, report.errors
    assert report.completeness == "incomplete"


def _records(n: int, extra_at: int | None) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for i in range(n):
        record: dict[str, object] = {
            "seq": i,
            "ts": f"2026-01-01T00:{i % 60:02d}:00.000000Z",
            "type": "decision",
            "decision": ["allow", "deny", "transform"][i % 3],
            "rules": [f"rule.{i % 4}"] if i % 5 else [],
            "legal_basis": [{"regime": "GDPR", "ref": f"Art. {44 + i % 2}"}] if i % 3 == 1 else [],
            "status": [200, 451, -1][i % 3],
            "note": ["=1+1", "plain", None, 'say "hi"', "a,b", "two\nlines", "cr\r"][i % 7],
            # Cells the one-pass CSV quotes itself or hands to the writer.
            "more": [
                "-1",
                "@x",
                "\tx",
                "+1",
                "",
                "é,ü",
                [{"a": "x,y", "b": 'q"'}],
                ["a", "b,c"],
                [None, True, 3],
                -5,
                True,
                {"k": ["=x"]},
                "a\r\nb",
            ][i % 13],
        }
        if i == extra_at:
            record["late_field"] = "x"
        records.append(record)
    return records


@pytest.mark.parametrize("extra_at", [None, 0, 7, 29])
@pytest.mark.parametrize("size", [30, 200])
def test_the_one_pass_views_equal_the_views_made_from_the_whole_list(
    size: int,
    extra_at: int | None,
) -> None:
    import io

    from gateway.audit.views import ViewBuilder, csv_chunks, csv_view, jsonl_view

    records = _records(size, extra_at)
    jsonl, csv_out = io.BytesIO(), io.BytesIO()
    views = ViewBuilder(jsonl, csv_out)
    for record in records:
        views.add(record)
    views.finish()
    assert jsonl.getvalue() == jsonl_view(records)
    # A field that only a later record has ends the one-pass CSV: the caller makes it again.
    assert views.csv_complete == (extra_at in (None, 0))
    if views.csv_complete:
        assert csv_out.getvalue() == csv_view(records)
    else:
        assert b"".join(csv_chunks(records, views.columns())) == csv_view(records)


def test_an_empty_range_has_the_csv_header_alone() -> None:
    import io

    from gateway.audit.views import ViewBuilder, csv_view

    csv_out = io.BytesIO()
    views = ViewBuilder(io.BytesIO(), csv_out)
    views.finish()
    assert csv_out.getvalue() == csv_view([])


@pytest.mark.parametrize("fold_at", [1, 2, 7, 1000])
def test_report_counts_do_not_depend_on_when_they_are_folded(
    fold_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.audit.report import ReportTally, render_report

    records = _records(90, None)
    for i, record in enumerate(records):
        record["rules"] = [f"rule.{(i * 7) % 11}", f"other.{i % 3}"]
    kw = {"origin": "o", "range_from": 0, "range_to": 90, "completeness": "proven",
          "created": "2026-01-01T01:00:00Z", "filter_text": "none"}  # fmt: skip
    reference = render_report(records, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(ReportTally, "_FOLD_AT", fold_at)
    assert render_report(records, **kw) == reference  # type: ignore[arg-type]
    assert "30 deny" in reference


def test_a_csv_made_in_a_second_process_equals_the_one_made_here(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.audit.export as export_module

    here = _bundle(builder, keyring, tmp_path / "here")
    monkeypatch.setattr(export_module, "PARALLEL_CSV", 1)
    export_bundle(builder.directory, tmp_path / "apart", builder.signer, keyring=keyring)
    apart = tmp_path / "apart"
    for rel in ("views/records.csv", "views/records.jsonl"):  # the report names its time
        assert (apart / rel).read_bytes() == (here / rel).read_bytes(), rel
    assert verify_source(apart, keyring).valid


def test_a_failing_helper_process_changes_nothing(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.audit.export as export_module
    import gateway.audit.verify.viewcheck as verify_module
    from gateway.audit.apart import Apart

    here = _bundle(builder, keyring, tmp_path / "here")
    monkeypatch.setattr(export_module, "PARALLEL_CSV", 1)
    monkeypatch.setattr(verify_module, "PARALLEL_VIEWS_BYTES", 0)
    started = Apart.__init__

    def failing(self: Apart, task: str, args: object) -> None:
        started(self, "no-such-task", args)  # the helper starts, then fails

    monkeypatch.setattr(Apart, "__init__", failing)
    export_bundle(builder.directory, tmp_path / "apart", builder.signer, keyring=keyring)
    apart = tmp_path / "apart"
    assert (apart / "views/records.csv").read_bytes() == (here / "views/records.csv").read_bytes()
    view = apart / "views/records.csv"
    view.write_bytes(view.read_bytes().replace(b",deny,", b",allow,", 1))
    _resign(apart, builder)
    assert verify_codes(verify_source(apart, keyring)) == {"VIEW_MISMATCH"}


def test_the_helper_refuses_an_unknown_task() -> None:
    from gateway.audit.apart import Apart
    from gateway.audit.errors import AuditError

    with pytest.raises(AuditError, match="unknown task"):
        Apart("no-such-task", []).result()


@pytest.mark.parametrize("block", [1, 2, 7, 64, 1 << 20])
@pytest.mark.parametrize(
    "data", [b"", b"\n", b"a\nbb\n", b"a\nbb\nccc", b"\n\nx\n\n", b"one line, no newline"]
)
def test_line_blocks_equal_splitting_the_whole_file(
    tmp_path: Path, block: int, data: bytes
) -> None:
    from gateway.audit.storage import LineBlocks, split_lines

    path = tmp_path / "segment.jsonl"
    path.write_bytes(data)
    blocks = LineBlocks(path, block)
    lines = [line for chunk in blocks for line in chunk]
    complete, end = split_lines(data)
    assert lines == complete
    assert blocks.tail == data[end:]
    assert blocks.size == len(data)


def test_every_helper_task_runs_in_a_helper_process() -> None:
    """A task the helper cannot find would go unnoticed (callers fall back to doing the work
    themselves): each named task must resolve and run in a fresh interpreter."""
    import importlib

    from gateway.audit.apart import TASKS, Apart
    from gateway.audit.errors import AuditError
    from gateway.audit.verify.viewcheck import expected_csv_digest

    assert set(TASKS) == {"export-csv", "verify-csv"}
    for target in TASKS.values():
        module, name = target.split(":")
        assert callable(getattr(importlib.import_module(module), name)), target
    assert Apart("verify-csv", [[]]).result() == expected_csv_digest([])
    with pytest.raises(AuditError, match="helper process failed"):
        Apart("no-such-task", []).result()
