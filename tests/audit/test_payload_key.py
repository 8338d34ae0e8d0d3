"""Keys apart from data (issue 12, finding 3): the payload HMAC key lives with the signing
key, an older log's key is moved out of the log directory, a bundle never carries a key and
`verify` warns about a key file next to a log."""

from __future__ import annotations

import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditError, KeyLoadError, Keyring, export_bundle, verify_source
from gateway.audit.export import refuse_secret
from gateway.audit.payload_key import load_or_create_payload_key

from .conftest import LogBuilder, decision, run

Factory = Callable[..., Awaitable[Any]]


async def _start(tmp_path: Path, gateway_factory: Factory) -> Any:
    from tests.gateway.test_pipeline import _write_config

    return await gateway_factory(_write_config(tmp_path, 9, 9))


async def test_a_new_gateway_keeps_the_payload_key_beside_the_signing_key(
    tmp_path: Path, gateway_factory: Factory
) -> None:
    harness = await _start(tmp_path, gateway_factory)
    audit_dir: Path = harness.audit_dir
    assert not [p for p in audit_dir.rglob("*") if p.name.endswith(".key")]
    key_file = harness.config.audit.signing_key.parent / "payload-hmac.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert harness.runtime.masking_key and harness.runtime.masking_key.hex() in key_file.read_text()


async def test_an_existing_logs_key_is_moved_out_of_the_log_directory(
    tmp_path: Path, gateway_factory: Factory
) -> None:
    old = secrets.token_bytes(32)
    legacy = tmp_path / "gw0" / "audit" / "payload-hmac.key"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(old.hex())
    harness = await _start(tmp_path, gateway_factory)
    assert not legacy.exists()
    assert harness.runtime.masking_key == old  # digests stay linkable across the move
    assert (harness.config.audit.signing_key.parent / "payload-hmac.key").exists()


def test_a_passphrase_encrypts_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "payload-hmac.key"
    created = load_or_create_payload_key(path, tmp_path / "log", b"correct horse")
    assert created.created and created.key.hex() not in path.read_text()
    again = load_or_create_payload_key(path, tmp_path / "log", b"correct horse")
    assert again.key == created.key
    with pytest.raises(KeyLoadError, match="wrong passphrase"):
        load_or_create_payload_key(path, tmp_path / "log", b"wrong")
    with pytest.raises(KeyLoadError, match="audit.passphrase"):
        load_or_create_payload_key(path, tmp_path / "log", None)


def test_a_key_file_inside_the_log_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="inside audit.directory"):
        load_or_create_payload_key(tmp_path / "log" / "k.key", tmp_path / "log", None)


def test_two_different_keys_are_not_merged_silently(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "payload-hmac.key").write_text(secrets.token_bytes(32).hex())
    load_or_create_payload_key(tmp_path / "keys" / "p.key", tmp_path / "other", None)
    with pytest.raises(KeyLoadError, match="differs"):
        load_or_create_payload_key(tmp_path / "keys" / "p.key", log_dir, None)
    assert (log_dir / "payload-hmac.key").exists()


def test_verify_warns_about_a_key_next_to_the_log(builder: LogBuilder, keyring: Keyring) -> None:
    async def write() -> None:
        log = await builder.open()
        await log.append(decision(1))
        await log.close()

    run(write())
    (builder.directory / "payload-hmac.key").write_text("00" * 32)
    report = verify_source(builder.directory, keyring)
    assert report.valid
    assert "KEY_BESIDE_LOG" in {w.code for w in report.warnings}


def test_export_never_puts_a_key_into_a_bundle(
    builder: LogBuilder, keyring: Keyring, tmp_path: Path
) -> None:
    with pytest.raises(AuditError, match="looks like a key"):
        refuse_secret("keys/signing.pem", b"")

    with pytest.raises(AuditError, match="looks like a key"):
        refuse_secret("keys/keyring.json", b"-----BEGIN PRIVATE KEY-----\n")

    async def write() -> None:
        log = await builder.open()
        await log.append(decision(1))
        await log.close()

    run(write())
    secret = secrets.token_bytes(32).hex()
    (builder.directory / "payload-hmac.key").write_text(secret)
    (builder.directory / "key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    export_bundle(builder.directory, tmp_path / "bundle", builder.signer, keyring=keyring)
    for path in (tmp_path / "bundle").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and b"PRIVATE KEY" not in data, path
    assert verify_source(tmp_path / "bundle", keyring).valid
