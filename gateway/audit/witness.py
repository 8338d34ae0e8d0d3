"""Witness protocol logic (pure): C2SP `tlog-cosignature` (Ed25519 `cosignature/v1`) and
the checks of C2SP `tlog-witness` `add-checkpoint`. No network and no files here: the HTTP
server and the gateway's submitter (gateway.witness) are the I/O edge.

Rule 1 (what a cosignature says): a witness signs

    "cosignature/v1\\n" "time <POSIX seconds>\\n" <the checkpoint's whole note text>

with its own Ed25519 key. The signature line's key ID is SHA-256(name || "\\n" || 0x04 ||
public key)[:4] and its payload is key ID || timestamp (8 bytes, big-endian) || signature.
It states that, at that time, this is the largest tree the witness has seen for the origin
and that it is consistent with every earlier one.

Rule 2 (what a witness checks, in the specification's order and with its status codes):
a malformed request is 400; an unknown origin 404; no valid signature by a key the witness
trusts for the origin (or a failing one) 403; an old size above the checkpoint's 400; an old
size that is not the witness's latest size 409 (body: that size and a newline, content
type `text/x.tlog.size`); an empty tree with another root, a proof from size 0, a proof
that does not verify, or another root at the same size 422. Only then does the witness
record the new head, atomically with the check, and cosign.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.audit.errors import KeyLoadError, NoteError, ProofError
from gateway.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    TreeHashes,
    consistency_proof,
    verify_consistency,
)
from gateway.audit.note import NoteSignature, SignedNote, parse_note
from gateway.audit.signing import Signer, Verifier, check_key_name

__all__ = [
    "ALG_COSIGNATURE_V1",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Cosigner",
    "CosignerKey",
    "ProofWindow",
    "TreeHead",
    "WitnessedHead",
    "WitnessRefusal",
    "check_add_checkpoint",
    "cosignature_message",
    "cosigner_key_id",
    "encode_add_checkpoint",
    "origin_hash",
    "parse_add_checkpoint",
    "parse_tree_head",
]

#: Signature type byte of Ed25519 `cosignature/v1` (C2SP signed-note registry).
ALG_COSIGNATURE_V1 = 0x04
#: Content type of a 409 answer's body (the witness's latest size).
SIZE_CONTENT_TYPE = "text/x.tlog.size"
#: The most consistency proof lines a client may send.
MAX_PROOF_LINES = 63
_SIZE_RE = re.compile(r"^(0|[1-9][0-9]{0,19})$")
_MAX_TIMESTAMP = 2**63 - 1


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID of an Ed25519 `cosignature/v1` key named `name`."""
    return hashlib.sha256(
        name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    ).digest()[:4]


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The message an Ed25519 `cosignature/v1` signs: header line, time line, then the
    checkpoint's whole note text (extension lines included, signatures not)."""
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} is out of range")
    if not checkpoint_text.endswith("\n"):
        raise NoteError("checkpoint text must end with a newline")
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


def origin_hash(origin: str) -> str:
    """Lowercase hex SHA-256 of an origin: the path element of a witness's monitoring URL."""
    return hashlib.sha256(origin.encode()).hexdigest()


@dataclass(frozen=True)
class CosignerKey:
    """A witness's public key as clients pin it: name and Ed25519 key (type 0x04)."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public_key) != 32:
            raise KeyLoadError(f"witness key has {len(self.public_key)} bytes, want 32")

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID of cosignature lines by this key."""
        return cosigner_key_id(self.name, self.public_key)

    def vkey(self) -> str:
        """The verifier key string `name+hexid+base64(0x04 || key)`."""
        encoded = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, text: str) -> CosignerKey:
        """Parse a `cosignature/v1` verifier key, checking its key ID."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise KeyLoadError("witness key must be `name+hexid+base64key`")
        name, kid, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyLoadError("witness key is not valid base64") from None
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
            raise KeyLoadError("witness key is not an Ed25519 cosignature/v1 key (type 0x04)")
        key = cls(name, raw[1:])
        if kid != key.key_id.hex():
            raise KeyLoadError(f"witness key ID `{kid}` does not match the key")
        return key

    def matches(self, signature: NoteSignature) -> bool:
        """True when `signature` claims to be by this key (name and key ID)."""
        return signature.name == self.name and signature.key_id == self.key_id

    def verify(self, checkpoint_text: str, signature: NoteSignature) -> int:
        """The cosignature's timestamp; raises `NoteError` when it does not verify."""
        if not self.matches(signature):
            raise NoteError(f"signature is not by witness key {self.name}")
        if len(signature.signature) != 8 + 64:
            raise NoteError(f"cosignature by {self.name} has the wrong length")
        (timestamp,) = struct.unpack(">Q", signature.signature[:8])
        message = cosignature_message(checkpoint_text, timestamp)
        if not Verifier(self.name, self.public_key).verify(message, signature.signature[8:]):
            raise NoteError(f"cosignature by {self.name} does not verify")
        return int(timestamp)


class Cosigner:
    """A witness's private key: makes `cosignature/v1` signature lines."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        self.key = CosignerKey(signer.name, signer.public_key)

    @property
    def name(self) -> str:
        """The witness name (the key name in its signature lines)."""
        return self.key.name

    def cosign(self, checkpoint_text: str, timestamp: int) -> NoteSignature:
        """Cosign a checkpoint's note text at POSIX time `timestamp` (seconds, > 0)."""
        if timestamp <= 0:
            raise NoteError("a witness cosignature must carry a time")
        message = cosignature_message(checkpoint_text, timestamp)
        payload = struct.pack(">Q", timestamp) + self._signer.sign(message)
        return NoteSignature(self.name, self.key.key_id, payload)


@dataclass(frozen=True)
class TreeHead:
    """Origin, size and root of a checkpoint (any C2SP checkpoint, extensions ignored)."""

    origin: str
    size: int
    root: bytes


def parse_tree_head(text: str) -> TreeHead:
    """The first three lines of a checkpoint's note text; raises `NoteError`."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("checkpoint needs origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin or any(ch.isspace() for ch in origin):
        raise NoteError(f"checkpoint origin `{origin}` is invalid")
    if not _SIZE_RE.match(size_text):
        raise NoteError(f"checkpoint size `{size_text}` is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("checkpoint root is not base64") from None
    if len(root) != HASH_SIZE:
        raise NoteError("checkpoint root is not 32 bytes")
    return TreeHead(origin, int(size_text), root)


@dataclass(frozen=True)
class AddCheckpoint:
    """An `add-checkpoint` request body: old size, consistency proof, checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


class WitnessRefusal(Exception):
    """A request the witness must not cosign, with the protocol's HTTP status."""

    def __init__(self, status: int, message: str, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        #: The response body the protocol prescribes (409: the latest size), if any.
        self.body = body
        self.content_type = SIZE_CONTENT_TYPE if status == 409 else "text/plain"


def encode_add_checkpoint(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The request body of `add-checkpoint`."""
    lines = [f"old {old_size}\n", *(base64.b64encode(h).decode() + "\n" for h in proof), "\n"]
    return ("".join(lines) + note).encode()


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an `add-checkpoint` body; raises `WitnessRefusal` 400 when malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessRefusal(400, "request body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise WitnessRefusal(400, "request needs an old size line, proof lines and an empty line")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not _SIZE_RE.match(first[4:]):
        raise WitnessRefusal(400, "first line must be `old <size>`")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefusal(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof: list[bytes] = []
    for line in lines[1:]:
        try:
            digest = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise WitnessRefusal(400, "a proof line is not base64") from None
        if len(digest) != HASH_SIZE:
            raise WitnessRefusal(400, "a proof line is not a 32-byte hash")
        proof.append(digest)
    return AddCheckpoint(int(first[4:]), tuple(proof), note)


def check_add_checkpoint(
    request: AddCheckpoint,
    log_keys: Mapping[str, Sequence[Verifier]],
    latest: Mapping[str, TreeHead],
) -> tuple[SignedNote, TreeHead]:
    """Run every `add-checkpoint` check (rule 2) against the witness's `latest` head per
    origin and the log keys it trusts; return the note and its head to record and
    cosign. Raises `WitnessRefusal` with the status to answer."""
    try:
        note = parse_note(request.note)
        head = parse_tree_head(note.text)
    except NoteError as exc:
        raise WitnessRefusal(400, f"malformed checkpoint: {exc}") from None
    keys = log_keys.get(head.origin)
    if keys is None:
        raise WitnessRefusal(404, f"unknown log origin `{head.origin}`")
    try:
        valid, _unknown = note.verify(keys)
    except NoteError as exc:
        raise WitnessRefusal(403, str(exc)) from None
    if not valid:
        raise WitnessRefusal(403, f"no signature by a key trusted for `{head.origin}`")
    if request.old_size > head.size:
        raise WitnessRefusal(
            400, f"old size {request.old_size} is above the checkpoint size {head.size}"
        )
    known = latest.get(head.origin)
    known_size = known.size if known is not None else 0
    if request.old_size != known_size:
        raise WitnessRefusal(
            409,
            f"old size {request.old_size} is not the latest size {known_size}",
            body=f"{known_size}\n",
        )
    if head.size == 0 and head.root != EMPTY_ROOT:
        raise WitnessRefusal(422, "a checkpoint of size 0 must have the empty tree's root")
    if request.old_size == 0:
        if request.proof:
            raise WitnessRefusal(422, "a proof from size 0 must be empty")
        return note, head
    assert known is not None
    try:
        verify_consistency(known.size, head.size, request.proof, known.root, head.root)
    except ProofError as exc:
        raise WitnessRefusal(422, f"not consistent with size {known.size}: {exc}") from None
    return note, head


@dataclass(frozen=True)
class WitnessedHead:
    """A tree head some witness cosigned: the log may never again be shorter than `size`
    or have another root there. `source` says where it was found (for messages)."""

    size: int
    root: bytes
    source: str


class ProofWindow:
    """What the gateway needs to prove consistency to its witnesses: the compact range at
    `base` and every leaf hash after it. Proofs can start at any size >= base; `advance`
    drops what no witness needs any more, so memory follows the witnesses' lag."""

    def __init__(self, base: CompactRange, leaves: Sequence[bytes] = ()) -> None:
        self.base = base.copy()
        self.leaves: list[bytes] = list(leaves)

    @property
    def size(self) -> int:
        """Tree size after the last leaf held."""
        return self.base.size + len(self.leaves)

    def extend(self, first_seq: int, leaves: Sequence[bytes]) -> None:
        """Add the leaves of a committed batch starting at `first_seq`."""
        if first_seq != self.size:
            raise ProofError(f"batch starts at {first_seq}, the window ends at {self.size}")
        self.leaves.extend(leaves)

    def root(self, size: int) -> bytes:
        """Root of the tree of `size` leaves (base <= size <= self.size)."""
        if size == self.base.size:
            return self.base.root()
        return TreeHashes(self.leaves, self.base).root(size)

    def proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 6962 consistency proof from `old_size` (>= base) to `new_size`."""
        if old_size < self.base.size:
            raise ProofError(f"size {old_size} is before the window's start {self.base.size}")
        return consistency_proof(old_size, new_size, TreeHashes(self.leaves, self.base))

    def advance(self, size: int) -> None:
        """Fold the leaves below `size` into the base (no proof will start before it)."""
        count = min(size, self.size) - self.base.size
        if count <= 0:
            return
        for leaf in self.leaves[:count]:
            self.base.append(leaf)
        del self.leaves[:count]
