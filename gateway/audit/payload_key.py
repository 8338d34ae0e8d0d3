"""The payload HMAC key file, kept with the signing key and never in the log directory
(I/O shell).

Whoever holds the key can test guesses against the keyed digests in the records (a client
address has few candidates), so the key must not travel with a copy of the log. It is
created 0600 beside the signing key, encrypted under the signing key's passphrase when one
is configured (scrypt + AES-256-GCM), and an older log's `payload-hmac.key` found in the
log directory is moved there once.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway.audit.errors import KeyLoadError
from gateway.audit.storage import fsync_dir, write_all

__all__ = [
    "LEGACY_KEY_FILE",
    "PAYLOAD_KEY_FORMAT",
    "PayloadKey",
    "load_or_create_payload_key",
]

#: Where older versions kept the key: inside the log directory.
LEGACY_KEY_FILE = "payload-hmac.key"
PAYLOAD_KEY_FORMAT = "jurisgate-payload-key/1"
_SCRYPT_N = 2**15


@dataclass(frozen=True)
class PayloadKey:
    """The key and what happened to the files while loading it."""

    key: bytes
    path: Path
    created: bool = False
    migrated_from: Path | None = None


def _derive(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=8, p=1).derive(passphrase)


def _encode(key: bytes, passphrase: bytes | None) -> bytes:
    data: dict[str, str] = {"format": PAYLOAD_KEY_FORMAT}
    if passphrase:
        salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
        sealed = AESGCM(_derive(passphrase, salt)).encrypt(nonce, key, PAYLOAD_KEY_FORMAT.encode())
        data.update(
            kdf="scrypt",
            salt=base64.b64encode(salt).decode(),
            nonce=base64.b64encode(nonce).decode(),
            ciphertext=base64.b64encode(sealed).decode(),
        )
    else:
        data["key"] = key.hex()
    return (json.dumps(data, sort_keys=True, indent=2) + "\n").encode()


def _decode(data: bytes, path: Path, passphrase: bytes | None) -> bytes:
    text = data.decode("utf-8", errors="replace").strip()
    if not text.startswith("{"):  # the older format: the key in hex
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise KeyLoadError(f"{path}: not a payload key file") from None
    try:
        parsed = json.loads(text)
        if parsed.get("format") != PAYLOAD_KEY_FORMAT:
            raise KeyLoadError(f"{path}: not a {PAYLOAD_KEY_FORMAT} file")
        if "key" in parsed:
            return bytes.fromhex(parsed["key"])
        salt = base64.b64decode(parsed["salt"], validate=True)
        nonce = base64.b64decode(parsed["nonce"], validate=True)
        sealed = base64.b64decode(parsed["ciphertext"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise KeyLoadError(f"{path}: malformed payload key file: {exc}") from None
    if not passphrase:
        raise KeyLoadError(
            f"{path}: the payload key is encrypted; configure audit.passphrase to open it"
        )
    try:
        return AESGCM(_derive(passphrase, salt)).decrypt(nonce, sealed, PAYLOAD_KEY_FORMAT.encode())
    except InvalidTag:
        raise KeyLoadError(f"{path}: wrong passphrase for the payload key") from None


def _write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def load_or_create_payload_key(
    path: Path, log_directory: Path, passphrase: bytes | None
) -> PayloadKey:
    """Load the payload HMAC key from `path`, moving an older log's key out of
    `log_directory` first, or create one.

    Raises `KeyLoadError` when `path` lies inside the log directory, when the older key
    and the key at `path` differ, or when the file cannot be opened.
    """
    if _inside(path, log_directory):
        raise KeyLoadError(
            f"audit.hmac_key_file `{path}` is inside audit.directory `{log_directory}`: "
            "whoever copies the log would get the key\n"
            "  help: keep it with the signing key, outside the log directory "
            "(set audit.signing_key or audit.hmac_key_file)"
        )
    legacy = log_directory / LEGACY_KEY_FILE
    if legacy.exists():
        old = _decode(legacy.read_bytes(), legacy, None)
        if path.exists():
            if _decode(path.read_bytes(), path, passphrase) != old:
                raise KeyLoadError(
                    f"{legacy}: an older payload key sits in the log directory and differs "
                    f"from `{path}`; keep the one the log's digests were made with and "
                    "delete the other"
                )
        else:
            _write_new(path, _encode(old, passphrase))
        legacy.unlink()
        fsync_dir(log_directory)
        return PayloadKey(old, path, migrated_from=legacy)
    if path.exists():
        return PayloadKey(_decode(path.read_bytes(), path, passphrase), path)
    key = secrets.token_bytes(32)
    _write_new(path, _encode(key, passphrase))
    return PayloadKey(key, path, created=True)
