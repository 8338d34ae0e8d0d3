"""`jurisgate keys ...` and `jurisgate audit ...` end to end."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.audit import AuditLog, AuditOptions, KeyLoadError, Keyring, Signer, verify_source
from gateway.cli import main
from gateway.commands.audit import _Progress

from .conftest import DEPLOYMENT, ORIGIN, decision, segment_lines

REPO = Path(__file__).resolve().parents[2]


def _generate(tmp_path: Path, name: str, ring: Path, *env: str) -> Path:
    key = tmp_path / name
    code = main(["keys", "generate", "--out", str(key), "--name", DEPLOYMENT,
                 "--keyring", str(ring), "--origin", DEPLOYMENT, *env])  # fmt: skip
    assert code == 0
    return key


async def _write_log(directory: Path, key: Path, count: int = 20) -> None:
    signer = Signer.from_pem_file(key, DEPLOYMENT)
    log = await AuditLog.open(directory, signer, origin=ORIGIN,
                              options=AuditOptions(segment_records=16))  # fmt: skip
    await asyncio.gather(*(log.append(decision(i)) for i in range(count)))
    await log.close()


def test_keys_generate_writes_a_private_0600_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = tmp_path / "ring.json"
    monkeypatch.setenv("TEST_KEY_PASS", "correct horse")
    key = _generate(tmp_path, "k.pem", ring, "--passphrase-env", "TEST_KEY_PASS")
    out = capsys.readouterr().out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    signer = Signer.from_pem_file(key, DEPLOYMENT, b"correct horse")
    assert signer.kid in out and signer.verifier.note_key() in out
    with pytest.raises(KeyLoadError):
        Signer.from_pem_file(key, DEPLOYMENT)
    entry = Keyring.load(ring).find(signer.verifier)
    assert entry is not None and entry.origins == (DEPLOYMENT,)
    # Never overwrites.
    assert main(["keys", "generate", "--out", str(key), "--name", DEPLOYMENT]) == 4
    assert main(["keys", "generate", "--out", str(tmp_path / "x.pem"), "--name", "bad name"]) == 2


def test_keys_rotate_then_verify_with_the_updated_keyring(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    k1 = _generate(tmp_path, "k1.pem", ring)
    k2 = _generate(tmp_path, "k2.pem", ring)
    log_dir = tmp_path / "log"
    asyncio.run(_write_log(log_dir, k1))
    code = main(["keys", "rotate", "--log", str(log_dir), "--key", str(k1),
                 "--new-key", str(k2), "--keyring", str(ring)])  # fmt: skip
    assert code == 0
    keyring = Keyring.load(ring)
    old = keyring.find(Signer.from_pem_file(k1, DEPLOYMENT).verifier)
    assert old is not None and old.status == "retired" and old.not_after
    assert verify_source(log_dir, keyring).valid
    # The log now needs the new key to start.
    asyncio.run(_write_log(log_dir, k2, 1))
    assert main(["audit", "verify", str(log_dir), "--trusted-keys", str(ring)]) == 0


def test_audit_verify_json_report_and_state(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    key = _generate(tmp_path, "k.pem", ring)
    log_dir = tmp_path / "log"
    asyncio.run(_write_log(log_dir, key))
    report, state = tmp_path / "r.json", tmp_path / "s.json"
    args = ["audit", "verify", str(log_dir), "--trusted-keys", str(ring),
            "--json", str(report), "--state", str(state)]  # fmt: skip
    assert main(args) == 0
    data = json.loads(report.read_text())
    assert data["result"] == "valid" and data["logs"][0]["records"]["invalid"] == 0
    assert json.loads(state.read_text())["logs"][ORIGIN]["size"] == 22
    segment = sorted((log_dir / "segments").glob("*.jsonl"))[0]
    segment.write_bytes(segment.read_bytes().replace(b'"acme-eu"', b'"acme-us"', 1))
    assert main(args) == 1
    data = json.loads(report.read_text())
    assert data["result"] == "invalid"
    assert "ROOT_MISMATCH" in {e["code"] for e in data["logs"][0]["errors"]}
    assert json.loads(state.read_text())["logs"][ORIGIN]["size"] == 22  # not advanced
    state.write_text("not json")
    assert main(args) == 4


def test_audit_export_bundle_and_export_record(tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    key = _generate(tmp_path, "k.pem", ring)
    log_dir = tmp_path / "log"
    asyncio.run(_write_log(log_dir, key))
    out = tmp_path / "bundle"
    code = main(["audit", "export", "--log", str(log_dir), "--key", str(key),
                 "--out", str(out), "--keyring", str(ring)])  # fmt: skip
    assert code == 0
    assert main(["audit", "verify", str(out), str(log_dir), "--trusted-keys", str(ring)]) == 0
    assert any(b'"type":"export"' in line for line in segment_lines(log_dir))
    code = main(["audit", "export", "--log", str(log_dir), "--key", str(key),
                 "--out", str(tmp_path / "deny"), "--decision", "deny", "--tenant", "beta-us",
                 "--no-log-record"])  # fmt: skip
    assert code == 0
    manifest = json.loads((tmp_path / "deny" / "manifest.json").read_text())
    assert manifest["completeness"] == "not-proven"
    assert manifest["filter"] == {"decision": "deny", "tenant": "beta-us"}
    assert main(["audit", "export", "--log", str(tmp_path), "--key", str(key),
                 "--out", str(tmp_path / "x")]) == 4  # fmt: skip


def test_audit_new_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ring = tmp_path / "ring.json"
    key = _generate(tmp_path, "k.pem", ring)
    log_dir = tmp_path / "log"
    asyncio.run(_write_log(log_dir, key))
    segment = sorted((log_dir / "segments").glob("*.jsonl"))[-1]
    segment.write_bytes(b"")  # lose checkpointed records
    with pytest.raises(Exception, match="new-epoch"):
        asyncio.run(_write_log(log_dir, key, 0))
    code = main(["audit", "new-epoch", "--log", str(log_dir), "--key", str(key),
                 "--reason", "volume lost"])  # fmt: skip
    assert code == 0
    assert f"{ORIGIN}/epoch-2" in capsys.readouterr().out
    assert main(["audit", "verify", str(log_dir), "--trusted-keys", str(ring)]) == 0


def test_audit_prune_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ring = tmp_path / "ring.json"
    key = _generate(tmp_path, "k.pem", ring)
    log_dir = tmp_path / "log"
    asyncio.run(_write_log(log_dir, key))
    assert main(["audit", "prune", "--log", str(log_dir), "--key", str(key)]) == 0
    assert "nothing to prune" in capsys.readouterr().out


def test_progress_indicator_on_large_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    progress = _Progress("big")
    total = 64 << 20
    for done in range(0, total + 1, total // 8):
        progress(done, total)
    text = err.getvalue()
    assert "big: [" in text and "100%" in text and text.endswith("\n")
    err.truncate(0)
    _Progress("small")(10, 100)
    assert err.getvalue() == ""


def test_audit_modules_do_not_import_aiohttp() -> None:
    code = (
        "import sys, gateway.audit, gateway.audit.verify, gateway.audit.export;"
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
