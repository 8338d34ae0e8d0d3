"""Trust decisions of a verification (no I/O): which checkpoints, keys, signatures and
witness cosignatures count, given only what the auditor pinned.

Rule 1: trust comes from the pinned keyring alone. A checkpoint needs one valid
signature from a pinned key scoped to the origin and valid at the checkpoint's `ts`; a
failing signature from a known key fails the checkpoint; unknown signatures are ignored.
Rule 2: a record's `kid` must name a pinned key scoped to the origin and valid at the
record's `ts`; material under a revoked key is accepted up to its `not_after` with a
`KEY_REVOKED` warning.
Rule 3: cosignatures count only from pinned witness keys, and only on checkpoints the
log key signed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audit.bundle import manifest_note_text
from gateway.audit.errors import NoteError, ProofError
from gateway.audit.keyring import Keyring, KeyringEntry
from gateway.audit.merkle import verify_inclusion
from gateway.audit.note import Checkpoint, parse_checkpoint_text, parse_note, split_notes
from gateway.audit.storage import StartState
from gateway.audit.verify.findings import SourceReport, VerifyOptions

__all__ = ["Run", "TrustedCheckpoint"]

#: Above every RFC 3339 timestamp: the open end of a key's validity window.
_NO_END = "\U0010ffff"


@dataclass
class TrustedCheckpoint:
    """A checkpoint that a pinned key signed, and the line of its note."""

    checkpoint: Checkpoint
    line: int


class Run:
    """The verification of one source: the auditor's pinned trust (keyring, options,
    state) and the report that every finding goes to."""

    def __init__(
        self,
        report: SourceReport,
        keyring: Keyring,
        options: VerifyOptions,
        state: dict[str, dict[str, Any]],
    ) -> None:
        self.report = report
        # Every finding of the run goes straight to its report.
        self.error = report.error
        self.warn = report.warn
        self.keyring = keyring
        self.options = options
        self.state = state
        self._by_name_id: dict[tuple[str, bytes], list[KeyringEntry]] = {}
        self._by_kid: dict[str, list[KeyringEntry]] = {}
        for entry in keyring:
            self._by_name_id.setdefault((entry.name, entry.verifier.key_id), []).append(entry)
            self._by_kid.setdefault(entry.kid, []).append(entry)
        self._revoked_warned: set[str] = set()
        self._windows: dict[tuple[str, str], tuple[str, str] | None] = {}

    def _note_revoked(self, entry: KeyringEntry, what: str) -> None:
        if entry.status == "revoked" and entry.kid not in self._revoked_warned:
            self._revoked_warned.add(entry.kid)
            self.warn(
                "KEY_REVOKED",
                f"{what} signed by key {entry.kid}, revoked at {entry.not_after}; trust it only "
                "up to the last checkpoint anchored outside the operator before then",
            )

    # checkpoints
    def checkpoints(
        self, data: bytes, label: str, origin: str, live: bool = False
    ) -> list[TrustedCheckpoint]:
        """The trusted checkpoints of a notes file, oldest first; each other note is
        reported, and so are sizes or times going back and two roots at one size."""
        notes, end = split_notes(data)
        trusted: list[TrustedCheckpoint] = []
        line = 1
        last_offset = 0
        for offset, raw in notes:
            line += data.count(b"\n", last_offset, offset)
            last_offset = offset
            self.report.checkpoints_total += 1
            found = self.checkpoint(raw, label, line, origin)
            if found is None:
                self.report.checkpoints_invalid += 1
            else:
                trusted.append(TrustedCheckpoint(found, line))
        if end < len(data):
            line += data.count(b"\n", last_offset, end)
            message = "incomplete note at the end of the file"
            if live:  # a writer may be appending right now, or recovery has not run yet
                self.warn("CHECKPOINT_MALFORMED", message, label, line)
            else:
                self.report.checkpoints_total += 1
                self.report.checkpoints_invalid += 1
                self.error("CHECKPOINT_MALFORMED", message, label, line)
        self._check_order(trusted, label)
        return trusted

    def _check_order(self, trusted: list[TrustedCheckpoint], label: str) -> None:
        previous: TrustedCheckpoint | None = None
        roots: dict[int, TrustedCheckpoint] = {}
        for item in trusted:
            cp = item.checkpoint
            if previous is not None:
                before = previous.checkpoint
                if cp.ts < before.ts:
                    self.error(
                        "TS_REGRESSION", f"checkpoint ts {cp.ts} is before {before.ts}", label,
                        item.line,
                    )  # fmt: skip
                if cp.size < before.size:
                    self.error(
                        "ROLLBACK", f"checkpoint size {cp.size} after size {before.size}", label,
                        item.line,
                    )  # fmt: skip
            other = roots.get(cp.size)
            if other is not None and other.checkpoint.root != cp.root:
                self.error(
                    "FORK", f"two signed roots at size {cp.size} (see line {other.line})", label,
                    item.line,
                )  # fmt: skip
            roots.setdefault(cp.size, item)
            previous = item

    def checkpoint(self, raw: bytes, label: str, line: int, origin: str) -> Checkpoint | None:
        """The checkpoint of one note when a pinned key vouches for it, else None (and
        the reason is reported)."""
        try:
            note = parse_note(raw)
            checkpoint = parse_checkpoint_text(note.text)
        except NoteError as exc:
            self.error("CHECKPOINT_MALFORMED", str(exc), label, line)
            return None
        message = note.text.encode()
        valid: list[KeyringEntry] = []
        for sig in note.signatures:
            for entry in self._by_name_id.get((sig.name, sig.key_id), []):
                if not entry.verifier.verify(message, sig.signature):
                    self.error(
                        "CHECKPOINT_SIG_INVALID",
                        f"signature by {sig.name}+{sig.key_id.hex()} does not verify", label, line,
                    )  # fmt: skip
                    return None
                valid.append(entry)
        if checkpoint.origin != origin:
            self.error(
                "ORIGIN_MISMATCH", f"checkpoint for `{checkpoint.origin}`, not `{origin}`", label,
                line,
            )  # fmt: skip
            return None
        return checkpoint if self._signers_trusted(valid, checkpoint, label, line) else None

    def _signers_trusted(
        self, valid: list[KeyringEntry], checkpoint: Checkpoint, label: str, line: int
    ) -> bool:
        origin = checkpoint.origin
        if not valid:
            self.error("UNTRUSTED_KEY", "no signature from a pinned key", label, line)
            return False
        scoped = [e for e in valid if e.covers(origin)]
        if not scoped:
            self.error(
                "UNTRUSTED_KEY", f"signing keys are not scoped to origin `{origin}`", label, line
            )
            return False
        timely = [e for e in scoped if e.valid_at(checkpoint.ts)]
        if not timely:
            kids = ", ".join(e.kid for e in scoped)
            self.error(
                "KEY_NOT_VALID_AT_TIME", f"key {kids} not valid at {checkpoint.ts}", label, line
            )
            return False
        if all(e.status == "revoked" for e in timely):
            self._note_revoked(timely[0], f"checkpoint at size {checkpoint.size}")
        return True

    def start_state(
        self, data: Any, label: str, trusted: Sequence[TrustedCheckpoint], size: int
    ) -> StartState | None:
        """The state before the first record (a pruned prefix or a bundle's start),
        when it hashes to the trusted checkpoint at its size; else None (reported)."""
        try:
            start = StartState.from_json(data)
        except (ValueError, KeyError, TypeError, ProofError) as exc:
            self.error("PROOF_INVALID", f"start state unreadable: {exc}", label)
            return None
        if start.size != size:
            self.error(
                "PROOF_INVALID", f"start state is for size {start.size}, range starts at {size}",
                label,
            )  # fmt: skip
            return None
        anchors = [t for t in trusted if t.checkpoint.size == size]
        if not anchors:
            self.error("PROOF_INVALID", f"no trusted checkpoint at the start size {size}", label)
            return None
        root = anchors[0].checkpoint.root
        if start.compact.root() != root:
            self.error(
                "PROOF_INVALID",
                f"compact range does not hash to the checkpoint root at size {size}", label,
            )  # fmt: skip
            return None
        try:
            verify_inclusion(size - 1, size, start.prev_leaf, start.prev_leaf_proof, root)
        except ProofError as exc:
            self.error("PROOF_INVALID", f"last leaf before the range: {exc}", label)
            return None
        return start

    def manifest_signature(
        self, note_bytes: bytes, origin: str, manifest: bytes, created: Any, label: str
    ) -> None:
        """A bundle manifest must be signed by a pinned key scoped to its origin (and
        valid when the bundle was made)."""
        try:
            note = parse_note(note_bytes)
            if note.text != manifest_note_text(origin, manifest):
                raise NoteError("the signed text does not name this manifest")
            valid, _unknown = note.verify(self.keyring.verifiers())
            scoped = [
                e for v in valid if (e := self.keyring.find(v)) is not None and e.covers(origin)
            ]
            if not scoped:
                raise NoteError("no signature from a pinned key scoped to the origin")
            if isinstance(created, str) and not any(e.valid_at(created) for e in scoped):
                self.error("KEY_NOT_VALID_AT_TIME", f"manifest key not valid at {created}", label)
        except NoteError as exc:
            self.error("MANIFEST_SIG_INVALID", str(exc), label)

    # records
    def key_problem(self, kid: str, ts: str, origin: str) -> tuple[str, str] | None:
        """(code, detail) when the key `kid` may not sign records of `origin` at `ts`."""
        entries = [e for e in self._by_kid.get(kid, []) if e.covers(origin)]
        if not entries:
            return "UNTRUSTED_KEY", f"record key {kid} is not pinned for `{origin}`"
        timely = [e for e in entries if e.valid_at(ts)]
        if not timely:
            return "KEY_NOT_VALID_AT_TIME", f"record key {kid} is not valid at {ts}"
        if all(e.status == "revoked" for e in timely):
            self._note_revoked(timely[0], "records")
        return None

    def key_window(self, kid: str, origin: str) -> tuple[str, str] | None:
        """(first, last) such that `key_problem(kid, ts, origin)` is None and warns of
        nothing for any `ts` with first <= ts <= last; None when no such window is known
        (then `key_problem` decides each record)."""
        found = self._windows.get((kid, origin), ())
        if found != ():
            return found  # type: ignore[return-value]
        entries = [e for e in self._by_kid.get(kid, []) if e.covers(origin)]
        window: tuple[str, str] | None = None
        if len(entries) == 1:
            entry = entries[0]
            revoked = entry.status == "revoked"
            if not revoked or (entry.not_after is not None and kid in self._revoked_warned):
                window = (entry.not_before or "", entry.not_after or _NO_END)
            elif revoked:
                return None  # not remembered: the warning comes first
        self._windows[(kid, origin)] = window
        return window

    def record_signature_ok(self, kid: str, leaf: bytes, sig_b64: str) -> bool:
        """True when `sig_b64` is a valid record signature of `leaf` by the key `kid`."""
        try:
            sig = base64.b64decode(sig_b64, validate=True)
        except (binascii.Error, ValueError):
            return False
        return any(e.verifier.verify_record(leaf, sig) for e in self._by_kid.get(kid, []))

    # witnesses
    def cosigned_checkpoints(
        self, data: bytes, label: str, origin: str
    ) -> tuple[list[TrustedCheckpoint], dict[tuple[int, bytes], set[str]]]:
        """Checkpoints of a cosigned file that a pinned log key signed, and which pinned
        witnesses cosigned each (size, root)."""
        trusted: list[TrustedCheckpoint] = []
        witnesses_at: dict[tuple[int, bytes], set[str]] = {}
        if not data:
            return trusted, witnesses_at
        notes, _end = split_notes(data)
        line = 1
        last_offset = 0
        for offset, raw in notes:
            line += data.count(b"\n", last_offset, offset)
            last_offset = offset
            checkpoint = self.checkpoint(raw, label, line, origin)
            if checkpoint is None:
                continue
            trusted.append(TrustedCheckpoint(checkpoint, line))
            names = witnesses_at.setdefault((checkpoint.size, checkpoint.root), set())
            names.update(self._cosigners(raw, label, line))
        return trusted, witnesses_at

    def _cosigners(self, raw: bytes, label: str, line: int) -> set[str]:
        note = parse_note(raw)
        names: set[str] = set()
        for key in self.options.witness_keys:
            for sig in note.signatures:
                if not key.matches(sig):
                    continue
                try:
                    key.verify(note.text, sig)
                except NoteError as exc:
                    self.error("WITNESS_SIG_INVALID", str(exc), label, line)
                    continue
                names.add(key.name)
        return names
