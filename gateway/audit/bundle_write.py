"""Writing an export bundle's files (I/O shell): each file hashed as it is written and
listed for the manifest, key material refused, the manifest signed last.

Rule 1: a bundle is handed to auditors and holds nothing that signs records or opens
their keyed digests (`refuse_secret`).
Rule 2: the bundle is written to a temporary directory and renamed into place by
`finish`, so a half-written bundle never appears under the requested name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.audit.bundle import (
    BUNDLE_FORMAT,
    MANIFEST_FILE,
    MANIFEST_SIG_FILE,
    ExportFilter,
    manifest_note_text,
)
from gateway.audit.canonical import canonicalize
from gateway.audit.errors import AuditError
from gateway.audit.note import sign_note
from gateway.audit.signing import Signer
from gateway.audit.storage import publish_tree

__all__ = [
    "REVISIONS_DIR",
    "HashingFile",
    "ManifestClaims",
    "finish",
    "refuse_secret",
    "verify_text",
    "write_file",
    "write_pieces",
    "write_revisions",
]

#: What a secret looks like on disk: a PEM private key or a payload key file.
_SECRET_MARKERS = (b"PRIVATE KEY-----", b"jurisgate-payload-key/")
_SECRET_SUFFIXES = (".key", ".pem", ".p8")
#: Where the gateway files the policy revisions in force beside its log (and in a bundle).
REVISIONS_DIR = "policy-revisions"

_FILTERED_CLAIM = (
    "filtered export: each record has an inclusion proof (proofs/inclusion.jsonl);\n"
    "     it is NOT proven that every matching record is present."
)
_CONTIGUOUS_CLAIM = "contiguous export: no record in the range was removed, inserted or reordered."


def verify_text(origin: str, filtered: bool) -> str:
    """VERIFY.txt: how an auditor checks the bundle, and what that proves."""
    return f"""How to verify this bundle (offline)
====================================

1. Obtain the operator's public keyring out of band (contract annex, published URL that
   you pinned before, or a copy handed over in person). The copy in keys/keyring.json is
   informational only: a forger would ship their own.

2. Run:

     jurisgate audit verify . --trusted-keys PINNED-KEYRING.json --state STATE.json

   Exit code 0 means valid, 1 invalid (every problem is listed with a code and a line),
   2 a usage or I/O error. --json REPORT.json writes a machine-readable report.
   Keep STATE.json between audits: it detects a log that was rolled back or forked.

3. What is proven:
   - manifest.sig: the manifest (origin {origin}, range, filter, file hashes) is signed by
     a pinned key; every file's SHA-256 matches; no file was added or removed.
   - every line in records/ is canonical JSON (RFC 8785), chained by `prev`, numbered by
     `seq`, and hashes into the RFC 6962 Merkle roots of checkpoints.notes, which are
     Ed25519 signed notes (C2SP format) by pinned keys valid at their time.
   - {_FILTERED_CLAIM if filtered else _CONTIGUOUS_CLAIM}

4. views/ and report.html are conveniences for people and spreadsheets; they are covered
   by the manifest hashes, and `jurisgate audit verify` makes them again from the
   verified records and compares them byte for byte (VIEW_MISMATCH otherwise).

Independent tools can check the same things: checkpoints are C2SP signed notes (Go
golang.org/x/mod/sumdb/note), proofs are RFC 9162 audit paths.
"""


def refuse_secret(rel: str, data: bytes) -> None:
    """Raise `AuditError` when a bundle file would carry a key: a bundle is handed to
    auditors and must hold nothing that signs records or opens their keyed digests."""
    # Record lines and their views hold only what the gateway chose to log; every other
    # file is checked for key material too.
    derived = rel.startswith(("records/", "views/")) or rel == "report.html"
    if rel.endswith(_SECRET_SUFFIXES) or (
        not derived and any(marker in data for marker in _SECRET_MARKERS)
    ):
        raise AuditError(f"refusing to put `{rel}` into the bundle: it looks like a key")


def write_file(root: Path, rel: str, data: bytes, listing: list[dict[str, Any]]) -> None:
    """Write one bundle file whole and list it."""
    refuse_secret(rel, data)
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    listing.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})


def write_pieces(
    root: Path, rel: str, pieces: Iterable[bytes], listing: list[dict[str, Any]]
) -> None:
    """Write a file from pieces, hashing as it goes (nothing but the hash is kept)."""
    refuse_secret(rel, b"")
    sink = HashingFile(root / rel)
    try:
        for piece in pieces:
            sink.write(piece)
    finally:
        sink.close()
    listing.append(sink.entry(rel))


def write_revisions(directory: Path, root: Path, listing: list[dict[str, Any]]) -> None:
    """Copy every filed policy revision into the bundle, listed like any file, so the
    bundle's decisions can be derived again from the bundle alone (`verify --replay`)."""
    store = directory / REVISIONS_DIR
    if not store.is_dir():
        return
    for path in sorted(store.glob("*.json")):
        write_file(root, f"{REVISIONS_DIR}/{path.name}", path.read_bytes(), listing)


class HashingFile:
    """A bundle file written piece by piece, hashed as it goes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "wb")  # noqa: SIM115 - closed by `close`
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> None:
        """Append `data`."""
        self._handle.write(data)
        self._digest.update(data)
        self._size += len(data)

    def close(self) -> None:
        """Close the file (the digest stays)."""
        self._handle.close()

    def entry(self, rel: str) -> dict[str, Any]:
        """The manifest entry of what was written."""
        return {"path": rel, "sha256": self._digest.hexdigest(), "bytes": self._size}


class ManifestClaims:
    """What the manifest claims besides its files."""

    def __init__(
        self,
        origin: str,
        a: int,
        b: int,
        from_ts: str | None,
        to_ts: str | None,
        export_filter: ExportFilter,
        records: int,
        created: str,
    ) -> None:
        self.origin, self.a, self.b = origin, a, b
        self.from_ts, self.to_ts = from_ts, to_ts
        self.export_filter, self.records, self.created = export_filter, records, created

    @property
    def completeness(self) -> str:
        """`proven` for a contiguous range, `not-proven` for a filtered one."""
        return "proven" if self.export_filter.empty else "not-proven"


def finish(
    tmp: Path, target: Path, signer: Signer, claims: ManifestClaims, listing: list[dict[str, Any]]
) -> bytes:
    """Write the manifest and its signature, then move the bundle into place; the
    manifest's bytes."""
    listing.sort(key=lambda item: str(item["path"]))
    to_ts = claims.to_ts
    manifest = {
        "format": BUNDLE_FORMAT,
        "origin": claims.origin,
        "range": {"from": claims.a, "to": claims.b},
        # A requested end is a freshness claim the verifier checks (STALE_TAIL).
        "requested": {
            "from_ts": claims.from_ts,
            "to_ts": min(to_ts, claims.created) if to_ts else None,
        },
        "filter": claims.export_filter.to_json(),
        "completeness": claims.completeness,
        "records": claims.records,
        "files": listing,
        "generator": f"jurisgate {__version__}",
        "created": claims.created,
    }
    manifest_bytes = canonicalize(manifest)
    (tmp / MANIFEST_FILE).write_bytes(manifest_bytes)
    note = sign_note(manifest_note_text(claims.origin, manifest_bytes), [signer])
    (tmp / MANIFEST_SIG_FILE).write_text(note, encoding="utf-8")
    publish_tree(tmp, target)
    return manifest_bytes
