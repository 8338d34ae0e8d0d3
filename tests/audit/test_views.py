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
