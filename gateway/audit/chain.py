"""Sans-IO hash chain and Merkle state of one log: sealing records into stored lines.

Rule 1: a stored line is exactly JCS({"r": record}) or JCS({"r": record, "s": sig}).
Because "r" < "s", that is `{"r":` + JCS(record) + `}` or `,"s":"<base64>"}`; the
record bytes can be sliced out of a canonical line without parsing it.

Rule 2: the leaf hash of a record is SHA-256(0x00 || JCS(record)), its Merkle leaf at
index `seq`. The record's `prev` is the hex leaf hash of record seq - 1 (64 zeros for
seq 0), so each record also links to the one before it.

Rule 3: `ts` never decreases within a log: a record gets max(now, last ts).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway.audit.canonical import canonical_dumps
from gateway.audit.merkle import CompactRange
from gateway.audit.note import Checkpoint
from gateway.audit.record import RECORD_VERSION
from gateway.audit.signing import Signer

__all__ = [
    "GENESIS_PREV",
    "ChainState",
    "SealedRecord",
    "record_bytes_of_line",
    "seal",
]

#: `prev` of the first record.
GENESIS_PREV = bytes(32)
_LINE_PREFIX = b'{"r":'
_SIG_TAIL = b'"}'


class SealedRecord(NamedTuple):
    """One record ready to be written: its line (with newline) and leaf hash."""

    seq: int
    ts: str
    leaf: bytes
    line: bytes


@dataclass
class ChainState:
    """Everything needed to append to a log: next seq, last leaf, last ts, compact range."""

    origin: str
    compact: CompactRange = field(default_factory=CompactRange)
    prev: bytes = GENESIS_PREV
    last_ts: str = ""

    @property
    def size(self) -> int:
        """Number of leaves so far (= next seq)."""
        return self.compact.size

    def checkpoint(self, ts: str) -> Checkpoint:
        """Checkpoint of the current tree at time `ts`."""
        return Checkpoint(self.origin, self.compact.size, self.compact.root(), ts)

    def copy(self) -> ChainState:
        """An independent copy (the writer seals ahead of the durable state)."""
        return ChainState(self.origin, self.compact.copy(), self.prev, self.last_ts)


def seal(
    state: ChainState,
    fields: dict[str, Any],
    signer: Signer,
    ts: str,
    *,
    sign_record: bool,
) -> SealedRecord:
    """Add the log fields to `fields` (in place: the dict is consumed), canonicalize,
    hash, optionally sign, and advance `state`. `fields` must already be validated
    (JCS-safe, no log fields), e.g. by `record.validate_record`, which returns a copy."""
    if ts < state.last_ts:
        ts = state.last_ts
    seq = state.compact.size
    record = fields
    record["seq"] = seq
    record["prev"] = state.prev.hex()
    record["ts"] = ts
    record["kid"] = signer.kid
    record["log"] = state.origin
    record["v"] = RECORD_VERSION
    body = canonical_dumps(record)
    leaf = hashlib.sha256(b"\x00" + body).digest()
    if sign_record:
        sig = base64.b64encode(signer.sign_record(leaf))
        line = _LINE_PREFIX + body + b',"s":"' + sig + b'"}\n'
    else:
        line = _LINE_PREFIX + body + b"}\n"
    state.compact.append(leaf)
    state.prev = leaf
    state.last_ts = ts
    return SealedRecord(seq, ts, leaf, line)


def record_bytes_of_line(line: bytes) -> bytes | None:
    """The JCS(record) bytes inside a stored line (without its newline), or None when the
    line does not have the stored-line layout. Does not check canonical form."""
    if not line.startswith(_LINE_PREFIX):
        return None
    if line.endswith(b"}}"):
        return line[len(_LINE_PREFIX) : -1]
    if line.endswith(_SIG_TAIL):
        cut = line.rfind(b',"s":"')
        if cut > len(_LINE_PREFIX):
            return line[len(_LINE_PREFIX) : cut]
    return None
