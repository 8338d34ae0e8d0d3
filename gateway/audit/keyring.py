"""The keyring: which public keys an auditor trusts, for which origins and when.

Rule 1: trust comes only from a keyring obtained out of band (published by the operator,
attached to a contract, pinned once). The copy inside an export bundle is informational.

Rule 2: a key is valid at time t when `not_before <= t <= not_after` (each bound optional)
and it is not revoked without a `not_after`. A revoked key with `not_after = T` still
verifies material dated up to T; the verifier warns about it.

Rule 3: `origins` are prefixes matched on `/` boundaries: `gw.example.com` covers
`gw.example.com/eu-1` but not `gw.example.community`.

File format (JSON): {"format": "jurisgate-keyring/1", "keys": [{"name", "key_id",
"alg": "ed25519", "public_key" (base64 raw 32 bytes), "origins": [prefix...],
"not_before", "not_after" (RFC 3339 or null), "status": active|retired|revoked}]}.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.audit.errors import KeyLoadError
from gateway.audit.signing import Verifier
from gateway.audit.storage import atomic_write

__all__ = ["KEYRING_FORMAT", "KEY_STATUSES", "Keyring", "KeyringEntry", "origin_covered"]

KEYRING_FORMAT = "jurisgate-keyring/1"
KEY_STATUSES = ("active", "retired", "revoked")


def origin_covered(origin: str, prefixes: Iterable[str]) -> bool:
    """True when `origin` equals a prefix or lies under it on a `/` boundary."""
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if origin == base or origin.startswith(base + "/"):
            return True
    return False


@dataclass(frozen=True)
class KeyringEntry:
    """One trusted public key with its scope and validity window."""

    verifier: Verifier
    origins: tuple[str, ...]
    not_before: str | None = None
    not_after: str | None = None
    status: str = "active"

    @property
    def name(self) -> str:
        """Key name (the deployment name)."""
        return self.verifier.name

    @property
    def kid(self) -> str:
        """Key ID as 8 hex digits."""
        return self.verifier.kid

    def covers(self, origin: str) -> bool:
        """True when this key may sign for `origin`."""
        return origin_covered(origin, self.origins)

    def valid_at(self, ts: str) -> bool:
        """True when the key may sign material dated `ts` (RFC 3339 UTC, same format)."""
        if self.status == "revoked" and self.not_after is None:
            return False
        if self.not_before is not None and ts < self.not_before:
            return False
        return not (self.not_after is not None and ts > self.not_after)

    def to_json(self) -> dict[str, Any]:
        """The JSON form of this entry."""
        return {
            "name": self.name,
            "key_id": self.kid,
            "alg": "ed25519",
            "public_key": base64.b64encode(self.verifier.public_key).decode(),
            "note_key": self.verifier.note_key(),
            "origins": list(self.origins),
            "not_before": self.not_before,
            "not_after": self.not_after,
            "status": self.status,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "keys[?]") -> KeyringEntry:
        """Parse and check one entry; errors name the field."""
        if not isinstance(data, dict):
            raise KeyLoadError(f"{where}: must be an object")
        try:
            name = data["name"]
            raw = base64.b64decode(data["public_key"], validate=True)
        except KeyError as exc:
            raise KeyLoadError(f"{where}: missing field `{exc.args[0]}`") from None
        except (binascii.Error, ValueError, TypeError):
            raise KeyLoadError(f"{where}.public_key: not base64") from None
        if data.get("alg", "ed25519") != "ed25519":
            raise KeyLoadError(f"{where}.alg: only `ed25519` is supported")
        if not isinstance(name, str):
            raise KeyLoadError(f"{where}.name: must be a string")
        verifier = Verifier(name, raw)
        kid = data.get("key_id")
        if kid is not None and kid != verifier.kid:
            raise KeyLoadError(
                f"{where}.key_id: `{kid}` does not match the key (computed `{verifier.kid}`)"
            )
        _check_note_key(data.get("note_key"), verifier, where)
        origins = data.get("origins", [])
        if not isinstance(origins, list) or not all(isinstance(o, str) and o for o in origins):
            raise KeyLoadError(f"{where}.origins: must be a list of origin prefixes")
        status = data.get("status", "active")
        if status not in KEY_STATUSES:
            raise KeyLoadError(f"{where}.status: `{status}` is not one of {KEY_STATUSES}")
        bounds = [_bound(data, field, where) for field in ("not_before", "not_after")]
        return cls(verifier, tuple(origins), bounds[0], bounds[1], status)


def _check_note_key(note_key: Any, verifier: Verifier, where: str) -> None:
    """Two spellings of one key must agree: a tool reading one and a person the other
    would trust different keys."""
    if note_key is None:
        return
    try:
        from_note = Verifier.from_note_key(str(note_key))
    except KeyLoadError as exc:
        raise KeyLoadError(f"{where}.note_key: {exc}") from None
    if from_note != verifier:
        raise KeyLoadError(
            f"{where}.note_key: `{note_key}` names another key than public_key "
            f"and name (`{verifier.note_key()}`)"
        )


def _bound(data: dict[str, Any], field: str, where: str) -> str | None:
    value = data.get(field)
    if value is not None and not isinstance(value, str):
        raise KeyLoadError(f"{where}.{field}: must be an RFC 3339 string or null")
    return value


class Keyring:
    """A set of trusted keys, looked up by (name, key ID) or by `kid`."""

    def __init__(self, entries: Iterable[KeyringEntry] = ()) -> None:
        self.entries: list[KeyringEntry] = list(entries)

    def __iter__(self) -> Iterator[KeyringEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def verifiers(self) -> list[Verifier]:
        """Every key as a note verifier."""
        return [entry.verifier for entry in self.entries]

    def by_kid(self, kid: str) -> list[KeyringEntry]:
        """Entries whose key ID is `kid`."""
        return [entry for entry in self.entries if entry.kid == kid]

    def find(self, verifier: Verifier) -> KeyringEntry | None:
        """The entry holding exactly this key."""
        for entry in self.entries:
            if entry.verifier == verifier:
                return entry
        return None

    def upsert(self, entry: KeyringEntry) -> None:
        """Add `entry`, replacing an entry for the same key."""
        self.entries = [e for e in self.entries if e.verifier != entry.verifier] + [entry]

    def update(self, verifier: Verifier, **changes: Any) -> None:
        """Change fields (status, not_before, not_after, origins) of an existing key."""
        for index, entry in enumerate(self.entries):
            if entry.verifier == verifier:
                self.entries[index] = replace(entry, **changes)
                return
        raise KeyLoadError(f"key {verifier.name}+{verifier.kid} is not in the keyring")

    def to_json(self) -> dict[str, Any]:
        """The JSON document."""
        return {"format": KEYRING_FORMAT, "keys": [entry.to_json() for entry in self.entries]}

    def dumps(self) -> str:
        """The JSON document as indented text."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: Any) -> Keyring:
        """Parse a keyring document (a bare list of entries is accepted too)."""
        if isinstance(data, dict):
            if data.get("format", KEYRING_FORMAT) != KEYRING_FORMAT:
                raise KeyLoadError(f"keyring format `{data.get('format')}` is not supported")
            data = data.get("keys")
        if not isinstance(data, list):
            raise KeyLoadError("keyring must hold a list of keys")
        return cls(KeyringEntry.from_json(item, f"keys[{i}]") for i, item in enumerate(data))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        """Load a keyring file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyLoadError(f"cannot read keyring {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyLoadError(
                f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
            ) from None
        try:
            return cls.from_json(data)
        except KeyLoadError as exc:
            raise KeyLoadError(f"{path}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the keyring atomically and durably (see `storage.atomic_write`)."""
        atomic_write(Path(path), self.dumps().encode())
