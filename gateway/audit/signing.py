"""Ed25519 keys for the audit log, with C2SP signed-note key names and key IDs.

Rule 1: a key is named by (name, key ID) where key ID = SHA-256(name || 0x0A || 0x01 ||
raw public key)[:4], exactly as Go's `golang.org/x/mod/sumdb/note`, so auditors can cross
check with an independent implementation. The ID commits to name, algorithm and key.

Rule 2: a record signature is Ed25519 over `RECORD_SIGNATURE_CONTEXT || leaf hash`. The
context keeps record signatures apart from note signatures: that message is never a
valid note text (it ends in 32 binary bytes, not a newline-terminated checkpoint).

Rule 3: private keys are stored as PKCS#8 PEM, encrypted when a passphrase is given,
created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.audit.errors import KeyLoadError

__all__ = [
    "ALG_ED25519",
    "DEFAULT_PASSPHRASE_ENV",
    "RECORD_SIGNATURE_CONTEXT",
    "Signer",
    "Verifier",
    "check_key_name",
    "compute_key_id",
    "passphrase_from_env",
    "write_private_key",
]

#: Signature-type byte of Ed25519 in C2SP signed notes.
ALG_ED25519 = 0x01
#: Domain-separation prefix of per-record signatures.
RECORD_SIGNATURE_CONTEXT = b"jurisgate-audit-record/v1\n"
#: Environment variable read for the private-key passphrase when none is named.
DEFAULT_PASSPHRASE_ENV = "JURISGATE_AUDIT_KEY_PASSPHRASE"


def check_key_name(name: str) -> None:
    """Raise `KeyLoadError` unless `name` is a valid signed-note key name."""
    if not name or "+" in name or any(ch.isspace() or ord(ch) < 0x20 for ch in name):
        raise KeyLoadError(
            f"key name `{name}` is invalid: it must be non-empty, without spaces or `+`"
        )


def compute_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte signed-note key ID of an Ed25519 public key named `name`."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public_key) != 32:
            raise KeyLoadError(f"Ed25519 public key has {len(self.public_key)} bytes, want 32")
        object.__setattr__(self, "_key", Ed25519PublicKey.from_public_bytes(self.public_key))

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID."""
        return compute_key_id(self.name, self.public_key)

    @property
    def kid(self) -> str:
        """The key ID as 8 lowercase hex digits (the `kid` field of records)."""
        return self.key_id.hex()

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when `signature` is a valid Ed25519 signature of `message`."""
        key: Ed25519PublicKey = self._key  # type: ignore[attr-defined]
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def verify_record(self, leaf: bytes, signature: bytes) -> bool:
        """True when `signature` is this key's record signature over leaf hash `leaf`."""
        return self.verify(RECORD_SIGNATURE_CONTEXT + leaf, signature)

    def note_key(self) -> str:
        """The Go verifier-key string `name+hexid+base64(0x01 || key)`."""
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.kid}+{encoded}"

    @classmethod
    def from_note_key(cls, text: str) -> Verifier:
        """Parse a Go verifier-key string, checking its key ID."""
        parts = text.split("+", 2)  # base64 may itself contain "+"
        if len(parts) != 3:
            raise KeyLoadError("verifier key must be `name+hexid+base64key`")
        name, kid, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise KeyLoadError("verifier key is not valid base64") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise KeyLoadError("verifier key is not an Ed25519 key")
        verifier = cls(name, raw[1:])
        if len(kid) != 8 or verifier.kid != kid:
            raise KeyLoadError(f"verifier key ID `{kid}` does not match the key")
        return verifier


class Signer:
    """A named Ed25519 private key that signs notes and records."""

    def __init__(self, private_key: Ed25519PrivateKey, name: str) -> None:
        check_key_name(name)
        self._key = private_key
        self.name = name
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.verifier = Verifier(name, raw)
        self.key_id = self.verifier.key_id
        self.kid = self.verifier.kid

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, kid={self.kid!r})"

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self.verifier.public_key

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature of `message`."""
        return self._key.sign(message)

    def sign_record(self, leaf: bytes) -> bytes:
        """The per-record signature over leaf hash `leaf`."""
        return self._key.sign(RECORD_SIGNATURE_CONTEXT + leaf)

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate(), name)

    @classmethod
    def from_seed(cls, seed: bytes, name: str) -> Signer:
        """A key from a 32-byte RFC 8032 seed (tests and known-answer vectors)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed), name)

    @classmethod
    def from_note_private_key(cls, text: str) -> Signer:
        """Parse a Go signer-key string `PRIVATE+KEY+name+hexid+base64(0x01 || seed)`."""
        parts = text.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise KeyLoadError("signer key must be `PRIVATE+KEY+name+hexid+base64key`")
        try:
            raw = base64.b64decode(parts[4], validate=True)
        except ValueError:
            raise KeyLoadError("signer key is not valid base64") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise KeyLoadError("signer key is not an Ed25519 key")
        signer = cls.from_seed(raw[1:], parts[2])
        if signer.kid != parts[3]:
            raise KeyLoadError(f"signer key ID `{parts[3]}` does not match the key")
        return signer

    @classmethod
    def from_pem(cls, data: bytes, name: str, passphrase: bytes | None = None) -> Signer:
        """Load a PKCS#8 PEM private key."""
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except (ValueError, TypeError) as exc:
            raise KeyLoadError(f"cannot load the private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyLoadError("the private key is not an Ed25519 key")
        return cls(key, name)

    @classmethod
    def from_pem_file(
        cls, path: str | os.PathLike[str], name: str, passphrase: bytes | None = None
    ) -> Signer:
        """Load a PKCS#8 PEM private key from a file."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeyLoadError(f"cannot read key file {path}: {exc.strerror}") from None
        return cls.from_pem(data, name, passphrase)

    def private_pem(self, passphrase: bytes | None = None) -> bytes:
        """The key as PKCS#8 PEM, encrypted with the best available cipher when a
        passphrase is given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )


def passphrase_from_env(variable: str | None) -> bytes | None:
    """The passphrase held in environment variable `variable`, or None when unset."""
    if not variable:
        return None
    value = os.environ.get(variable)
    return value.encode() if value else None


def write_private_key(
    path: str | os.PathLike[str], signer: Signer, passphrase: bytes | None = None
) -> None:
    """Write `signer` as PKCS#8 PEM to a new file with mode 0600 (never overwrites)."""
    data = signer.private_pem(passphrase)
    # SECURITY: O_EXCL refuses to clobber an existing key; 0600 before any byte is written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
