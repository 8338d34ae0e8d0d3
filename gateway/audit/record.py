"""Audit records: their allowed shape, timestamps and data-minimisation helpers.

Rule 1: the caller supplies a JSON-safe mapping with a `type` (`decision`, `outcome` or
`policy_change`) and its own fields; the log adds `seq`, `prev`, `ts`, `kid`, `log`, `v`.
The other types (`start`, `stop`, `recovery`, `prune`, `export`, `key_rotation`) are
written by the log itself.

Rule 2 (minimisation, GDPR art. 5(1)(c)): records hold categories and JSON paths of
personal data, keyed digests of payloads (`hmac-sha256:<keyver>:<hex>`) and truncated or
keyed client IPs; never raw payloads, header values or full IPs. `validate_record`
rejects the obvious mistakes: raw-content field names, a full IP in an IP field, a digest
field that is not a keyed digest.

Rule 3: values are in the JCS-safe subset (see `canonical`), so the fast canonical
serialization is exact. Top-level field names are lower-case identifiers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from gateway.audit.canonical import canonical_dumps, is_jcs_safe, jcs_violation
from gateway.audit.errors import RecordInvalid

__all__ = [
    "ALL_TYPES",
    "TS_RE",
    "CALLER_TYPES",
    "DEFAULT_UNCOVERED_BOUND",
    "LOG_FIELDS",
    "MAX_RECORD_BYTES",
    "RECORD_VERSION",
    "SYSTEM_TYPES",
    "PayloadDigester",
    "check_minimised",
    "format_ts",
    "minimise_ip",
    "parse_ts",
    "record_shape_problem",
    "validate_record",
]

RECORD_VERSION: Final = 1
#: Types a caller may append.
CALLER_TYPES: Final = frozenset({"decision", "outcome", "policy_change"})
#: Types only the log writes.
SYSTEM_TYPES: Final = frozenset({"start", "stop", "recovery", "prune", "export", "key_rotation"})
ALL_TYPES: Final = CALLER_TYPES | SYSTEM_TYPES
#: Fields the log adds to every record; a caller may not set them.
LOG_FIELDS: Final = ("seq", "prev", "ts", "kid", "log", "v")
#: Records a crash can leave without a durable signed note when a `start` record does
#: not state its own bound (`uncovered_bound`): one batch of 256 plus 2048 records whose
#: notes were written but not yet fsynced (the writer's defaults).
DEFAULT_UNCOVERED_BOUND: Final = 256 + 2048
#: Upper bound of one canonical record, keeping lines and memory bounded.
MAX_RECORD_BYTES: Final = 64 * 1024

_LOG_FIELD_SET: Final = frozenset(LOG_FIELDS)
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DIGEST = re.compile(r"^(hmac-sha256:[A-Za-z0-9._-]{1,32}:[0-9a-f]{64}|sha256:[0-9a-f]{64})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KID = re.compile(r"^[0-9a-f]{8}$")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
#: A record's `ts`: RFC 3339 UTC with microseconds.
TS_RE: Final = _TS
# SECURITY: names that would carry raw content; records keep digests and paths instead.
_RAW_CONTENT_FIELDS: Final = frozenset(
    {"body", "payload", "prompt", "request_body", "response_body", "headers", "raw"}
)
_IP_FIELDS: Final = frozenset({"client_ip", "ip", "remote_addr", "peer_ip"})
_DIGEST_SUFFIXES: Final = ("_mac", "_digest")


def format_ts(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. `2025-06-01T12:34:56.789012Z`."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # isoformat, not strftime: it takes about half the time, and this runs for every batch.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_ts(text: str) -> datetime:
    """Parse a timestamp written by `format_ts` (or any RFC 3339 string with an offset)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp `{text}` has no UTC offset")
    return value.astimezone(UTC)


@lru_cache(maxsize=4096)
def _field_kind(key: str) -> int:
    """0: an ordinary field name, 1: raw content, 2: IP field, 3: digest field,
    -1: not a valid field name. Cached: records reuse a small set of names."""
    if _FIELD_NAME.match(key) is None:
        return -1
    if key in _RAW_CONTENT_FIELDS:
        return 1
    if key in _IP_FIELDS:
        return 2
    if key.endswith(_DIGEST_SUFFIXES):
        return 3
    return 0


def check_minimised(key: str, value: Any) -> None:
    """Raise `RecordInvalid` when field `key` would carry raw content, a full IP address
    or an unkeyed, malformed digest."""
    kind = _field_kind(key)
    if kind == 1:
        raise RecordInvalid(
            f"field `{key}` would hold raw content; store a keyed digest and JSON paths instead"
        )
    # Prefixes ("192.0.2.0/24") and keyed digests are the minimised forms; skip parsing them.
    if kind == 2 and isinstance(value, str) and "/" not in value and not value.startswith("hmac"):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            pass
        else:
            raise RecordInvalid(
                f"field `{key}` holds a full IP address; use minimise_ip() (prefix or keyed)"
            )
    if kind == 3 and value is not None:
        if not isinstance(value, str) or not _DIGEST.match(value):
            raise RecordInvalid(
                f"field `{key}` must be `hmac-sha256:<keyver>:<hex>` (or `sha256:<hex>` "
                "when the tenant opted in)"
            )


@lru_cache(maxsize=1024)
def _special_fields(keys: tuple[str, ...]) -> tuple[str, ...]:
    """Check field names once per distinct key set; return those needing value checks."""
    special: list[str] = []
    for key in keys:
        kind = _field_kind(key) if isinstance(key, str) else -1
        if kind < 0:
            raise RecordInvalid(f"field name `{key}` must match [a-z][a-z0-9_]* (max 64)")
        if key in _LOG_FIELD_SET:
            raise RecordInvalid(f"field `{key}` is set by the log, not by the caller")
        if kind:
            special.append(key)
    return tuple(special)


def validate_record(
    record: Mapping[str, Any], allowed_types: frozenset[str] = CALLER_TYPES
) -> dict[str, Any]:
    """Check a caller's record and return a plain dict copy of it.

    Raises `RecordInvalid` naming the field and the reason.
    """
    if not isinstance(record, Mapping):
        raise RecordInvalid(f"a record must be a mapping, got {type(record).__name__}")
    fields = dict(record)
    kind = fields.get("type")
    if kind not in allowed_types:
        raise RecordInvalid(
            f"record type `{kind}` is not allowed here; use one of {sorted(allowed_types)}"
        )
    try:
        special = _special_fields(tuple(fields))
    except TypeError:  # an unhashable or non-string key
        raise RecordInvalid("field names must be strings") from None
    for key in special:
        check_minimised(key, fields[key])
    if not is_jcs_safe(fields):
        raise RecordInvalid(f"record is not JCS-safe: {jcs_violation(fields, 'record')}")
    size = len(canonical_dumps(fields))
    if size > MAX_RECORD_BYTES:
        raise RecordInvalid(f"record is {size} bytes canonical, over the {MAX_RECORD_BYTES} limit")
    return fields


def record_shape_problem(record: Any) -> str | None:
    """Why a stored record lacks the fields every record has, or None (verifier use)."""
    if not isinstance(record, dict):
        return "record is not an object"
    if record.get("v") != RECORD_VERSION:
        return f"unsupported record version `{record.get('v')}`"
    seq = record.get("seq")
    if type(seq) is not int or seq < 0:
        return "`seq` must be a non-negative integer"
    prev = record.get("prev")
    if not isinstance(prev, str) or not _HEX64.match(prev):
        return "`prev` must be 64 lowercase hex digits"
    ts = record.get("ts")
    if not isinstance(ts, str) or not _TS.match(ts):
        return "`ts` must be RFC 3339 UTC with microseconds"
    kid = record.get("kid")
    if not isinstance(kid, str) or not _KID.match(kid):
        return "`kid` must be 8 lowercase hex digits"
    if not isinstance(record.get("log"), str):
        return "`log` must be a string"
    kind = record.get("type")
    if not isinstance(kind, str) or kind not in ALL_TYPES:
        return f"unknown record type `{record.get('type')}`"
    return None


#: hashlib releases the GIL for updates of 2,048 bytes and more (HASHLIB_GIL_MINSIZE).
_HASH_PIECE: Final = 2047


class PayloadDigester:
    """Keyed payload digests: `hmac-sha256:<key version>:<hex>`.

    Keyed, not plain SHA-256, because a plain hash of low-entropy content (an email, an ID
    number) can be confirmed by guessing. Destroying a key version makes its digests
    unlinkable while leaf hashes, and so verification, stay unchanged.
    """

    def __init__(self, key: bytes, key_version: str) -> None:
        if len(key) < 16:
            raise ValueError("the payload HMAC key must be at least 16 bytes")
        if not re.match(r"^[A-Za-z0-9._-]{1,32}$", key_version):
            raise ValueError(f"payload HMAC key version `{key_version}` must match [A-Za-z0-9._-]+")
        self._key = key
        self.key_version = key_version
        # The key's inner and outer pads, computed once; every digest starts from a copy.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return f"PayloadDigester(key_version={self.key_version!r})"

    @classmethod
    def from_env(cls, variable: str, key_version: str) -> PayloadDigester:
        """Load the key from environment variable `variable` (hex, at least 32 digits)."""
        value = os.environ.get(variable)
        if not value:
            raise ValueError(f"environment variable {variable} (payload HMAC key) is not set")
        try:
            key = bytes.fromhex(value.strip())
        except ValueError:
            raise ValueError(f"environment variable {variable} must hold the key in hex") from None
        return cls(key, key_version)

    def digest(self, payload: bytes) -> str:
        """The keyed digest of the exact payload bytes."""
        mac = self._keyed.copy()
        # Fed in pieces under hashlib's GIL-release size: released for a request body, the
        # GIL would go to the audit writer thread mid-request and the event loop would wait
        # for it (two context switches for a few microseconds of hashing).
        view = memoryview(payload)
        for start in range(0, len(view), _HASH_PIECE):
            mac.update(view[start : start + _HASH_PIECE])
        return f"hmac-sha256:{self.key_version}:{mac.hexdigest()}"

    def pseudonym(self, value: str) -> str:
        """A keyed pseudonym for an identifier (end-user reference, subject id)."""
        return self.digest(value.encode())


def minimise_ip(
    address: str,
    *,
    v4_prefix: int = 24,
    v6_prefix: int = 48,
    digester: PayloadDigester | None = None,
) -> str:
    """Reduce a client IP before it reaches a record.

    With a digester: a keyed digest of the full address (linkable only by the key holder).
    Without: the network prefix, e.g. `192.0.2.0/24` or `2001:db8:1::/48`.
    """
    ip = ipaddress.ip_address(address.strip())
    if digester is not None:
        return digester.digest(ip.compressed.encode())
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    return network.compressed
