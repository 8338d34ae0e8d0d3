"""C2SP signed notes (c2sp.org/signed-note) and checkpoints (c2sp.org/tlog-checkpoint).

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
`— <key name> <base64(key ID (4 bytes) || signature)>` (U+2014 em dash). A signature
covers the text including its final newline. Parsing follows Go's `note.Open`: the
signature block starts after the last blank line; control characters other than newline
are malformed; at most 100 signatures.

Checkpoint text: origin, decimal tree size, base64 root, then extension lines; ours
always carries `ts <RFC 3339 UTC>` for freshness checks.

A checkpoints file holds notes back to back, each followed by one empty line, so the file
ends with "\\n\\n" exactly when its last note was written whole.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.audit.errors import KeyLoadError, NoteError
from gateway.audit.signing import Signer, Verifier, check_key_name

__all__ = [
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteSignature",
    "SignedNote",
    "checkpoint_text",
    "parse_checkpoint_text",
    "parse_note",
    "sign_note",
    "split_notes",
]

MAX_SIGNATURES = 100
_DASH = "\u2014 "
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_SIZE_RE = re.compile(r"^(0|[1-9][0-9]{0,19})$")
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("malformed note: text must end with a newline")
    if _CONTROL_RE.search(text):
        raise NoteError("malformed note: control character in text")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, with its newline."""
        encoded = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_DASH}{self.name} {encoded}\n"


@dataclass(frozen=True)
class SignedNote:
    """A parsed note: its signed text and its signature lines (not yet verified)."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> str:
        """The note in its wire form."""
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)

    def verify(self, verifiers: Sequence[Verifier]) -> tuple[list[Verifier], list[NoteSignature]]:
        """Check every signature made by a known key.

        Returns (verifiers whose signature is valid, signatures by unknown keys). Raises
        `NoteError` if a known key's signature fails (C2SP: reject the whole note).
        Callers decide what "no valid signature" means.
        """
        message = self.text.encode()
        valid: list[Verifier] = []
        unknown: list[NoteSignature] = []
        for sig in self.signatures:
            matches = [v for v in verifiers if v.name == sig.name and v.key_id == sig.key_id]
            if not matches:
                unknown.append(sig)
                continue
            for verifier in matches:
                if not verifier.verify(message, sig.signature):
                    raise NoteError(f"invalid signature for key {sig.name}+{sig.key_id.hex()}")
                if verifier not in valid:
                    valid.append(verifier)
        return valid, unknown


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """Sign `text` with every signer and return the note in wire form."""
    _check_text(text)
    if not signers:
        raise NoteError("a note needs at least one signer")
    message = text.encode()
    sigs = tuple(NoteSignature(s.name, s.key_id, s.sign(message)) for s in signers)
    return SignedNote(text, sigs).encode()


def parse_note(data: str | bytes) -> SignedNote:
    """Parse a note without verifying it; raise `NoteError` when malformed."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("malformed note: invalid UTF-8") from None
    if _CONTROL_RE.search(data):
        raise NoteError("malformed note: control character")
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no signature block")
    text, block = data[: split + 1], data[split + 2 :]
    if not text.strip("\n") or not block.endswith("\n"):
        raise NoteError("malformed note: empty text or unterminated signature block")
    signatures: list[NoteSignature] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise NoteError("malformed note: unexpected line in signature block")
        name, sep, encoded = line[len(_DASH) :].partition(" ")
        try:
            check_key_name(name)
        except KeyLoadError:
            raise NoteError("malformed note: bad key name") from None
        if not sep or " " in encoded:
            raise NoteError("malformed note: bad signature line")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("malformed note: signature is not base64") from None
        if len(raw) < 5:
            raise NoteError("malformed note: signature too short")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError("malformed note: too many signatures")
    return SignedNote(text, tuple(signatures))


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: log origin, tree size, root hash and timestamp."""

    origin: str
    size: int
    root: bytes
    ts: str
    extensions: tuple[str, ...] = ()


def checkpoint_text(checkpoint: Checkpoint) -> str:
    """The note text of a checkpoint."""
    lines = [
        checkpoint.origin,
        str(checkpoint.size),
        base64.b64encode(checkpoint.root).decode(),
        f"ts {checkpoint.ts}",
        *checkpoint.extensions,
    ]
    return "\n".join(lines) + "\n"


def parse_checkpoint_text(text: str) -> Checkpoint:
    """Parse checkpoint text; raise `NoteError` when it is not one of ours."""
    lines = text.split("\n")
    if len(lines) < 5 or lines[-1] != "":
        raise NoteError("checkpoint needs origin, size, root and ts lines")
    origin, size_text, root_text, ts_line, *rest = lines[:-1]
    if not origin or " " in origin or "+" in origin:
        raise NoteError(f"checkpoint origin `{origin}` is invalid")
    if not _SIZE_RE.match(size_text):
        raise NoteError(f"checkpoint size `{size_text}` is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise NoteError("checkpoint root is not 32 bytes")
    if not ts_line.startswith("ts ") or not _TS_RE.match(ts_line[3:]):
        raise NoteError("checkpoint `ts` line missing or not RFC 3339 UTC with microseconds")
    if any(not line for line in rest):
        raise NoteError("checkpoint has an empty extension line")
    return Checkpoint(origin, int(size_text), root, ts_line[3:], tuple(rest))


def split_notes(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Split a checkpoints file into (offset, note bytes) pairs.

    Returns the notes and the offset just past the last complete one; bytes after it are
    a torn write (or garbage) that the caller quarantines or reports.
    """
    notes: list[tuple[int, bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        text_end = data.find(b"\n\n", pos)
        if text_end < 0:
            break
        sig_end = data.find(b"\n\n", text_end + 2)
        if sig_end < 0:
            break
        notes.append((pos, data[pos : sig_end + 1]))
        pos = sig_end + 2
    return notes, pos
