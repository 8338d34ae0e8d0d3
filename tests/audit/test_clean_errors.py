"""Errors for people (issue 12, finding 7): a keyring whose two spellings of a key disagree
is refused, and a wrong passphrase, an unusable audit directory or a refused recovery end
the gateway with a message, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.audit import KeyLoadError, Keyring, KeyringEntry, Signer
from gateway.audit.signing import write_private_key

from .conftest import DEPLOYMENT


def test_a_keyring_entry_whose_note_key_names_another_key_is_refused(tmp_path: Path) -> None:
    trusted, other = Signer.generate(DEPLOYMENT), Signer.generate(DEPLOYMENT)
    entry = KeyringEntry(trusted.verifier, (DEPLOYMENT,)).to_json()
    path = tmp_path / "ring.json"
    path.write_text(json.dumps({"keys": [entry]}))
    assert Keyring.load(path).find(trusted.verifier) is not None
    entry["note_key"] = other.verifier.note_key()
    path.write_text(json.dumps({"keys": [entry]}))
    with pytest.raises(KeyLoadError, match="note_key"):
        Keyring.load(path)


async def _run_gateway(tmp_path: Path, audit: dict[str, object], env: dict[str, str]) -> int:
    from gateway.edge.app import run_gateway
    from tests.gateway.test_operations import ROOT, _serve_config

    config_path = _serve_config(tmp_path, 9, ROOT / "policies")
    config = yaml.safe_load(config_path.read_text())
    config["audit"].update(audit)
    config_path.write_text(yaml.safe_dump(config))
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return await run_gateway(config_path)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def test_a_wrong_passphrase_stops_the_gateway_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "encrypted.pem"
    write_private_key(key, Signer.generate("gw.proc"), b"right")
    audit = {"signing_key": str(key), "passphrase": {"env": "TEST_WRONG_PASS"}}
    code = await _run_gateway(tmp_path, audit, {"TEST_WRONG_PASS": "wrong"})
    out = capsys.readouterr()
    assert code == 3
    assert "audit:" in out.out and "private key" in out.out
    assert "Traceback" not in out.out + out.err


async def test_an_unusable_audit_directory_stops_the_gateway_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log should be")
    code = await _run_gateway(tmp_path, {"directory": str(blocker)}, {})
    out = capsys.readouterr()
    assert code == 3
    assert "audit.directory" in out.out and str(blocker) in out.out and "errno" in out.out
    assert "Traceback" not in out.out + out.err


def test_quiet_still_says_what_was_not_proven(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from gateway.audit import AuditLog, AuditOptions, ExportFilter, export_bundle
    from gateway.cli import main as cli_main

    from .conftest import ORIGIN, decision

    signer = Signer.generate(DEPLOYMENT)

    async def write() -> None:
        log = await AuditLog.open(tmp_path / "log", signer, origin=ORIGIN, options=AuditOptions())
        for i in range(6):
            await log.append(decision(i))
        await log.close()

    asyncio.run(write())
    ring = tmp_path / "ring.json"
    Keyring([KeyringEntry(signer.verifier, (DEPLOYMENT,))]).save(ring)
    export_bundle(tmp_path / "log", tmp_path / "b", signer, export_filter=ExportFilter("acme-eu"))
    capsys.readouterr()
    assert cli_main(["audit", "verify", str(tmp_path / "b"), "--trusted-keys", str(ring),
                     "--quiet"]) == 0  # fmt: skip
    assert "COMPLETENESS_NOT_PROVEN" in capsys.readouterr().out
