"""Stored lines to records (mechanics, no I/O): strict parse, canonical form, line layout,
record shape, and the checks every record gets whatever the range (origin, key,
signature). This is the path that explains a problem; `stream` has a faster path for
lines with none.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.audit.canonical import canonicalize, is_canonical_form, is_jcs_safe, strict_loads
from gateway.audit.chain import record_bytes_of_line
from gateway.audit.errors import MalformedJSON
from gateway.audit.merkle import leaf_hash
from gateway.audit.record import record_shape_problem
from gateway.audit.verify.trust import Run

__all__ = ["Decoded", "check_record_common", "decode_line"]


class Decoded:
    """A stored line that parsed into a record of the right shape."""

    __slots__ = ("leaf", "obj", "record")

    def __init__(self, obj: dict[str, Any], record: dict[str, Any], leaf: bytes) -> None:
        self.obj = obj
        self.record = record
        self.leaf = leaf


def _noncanonical(run: Run, file: str, number: int, raw: bytes, obj: Any) -> None:
    """Report why a line that parsed is not canonical: malformed, outside the subset, or
    only re-encoded."""
    try:
        strict_loads(raw)
    except MalformedJSON as exc:
        run.error("RECORD_MALFORMED", str(exc), file, number)
        return
    if not is_jcs_safe(obj):
        try:
            reference = canonicalize(obj)
        except Exception:  # noqa: BLE001 - any canonicalization failure is malformed
            reference = b""
        if reference == raw:
            run.error(
                "RECORD_INVALID", "value outside the allowed subset (float or big int)", file,
                number,
            )  # fmt: skip
            return
    run.error("RECORD_NONCANONICAL", "line is not in RFC 8785 canonical form", file, number)


def decode_line(run: Run, file: str, number: int, raw: bytes, terminated: bool) -> Decoded | bytes:
    """Parse and check one stored line; on failure report it and return a stand-in leaf
    (the hash of the line as stored), so that the tree can still be followed."""
    if not terminated:
        run.error("TRUNCATED_LINE", "last line has no newline", file, number)
        return leaf_hash(raw)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        run.error("RECORD_MALFORMED", f"not JSON: {exc}", file, number)
        return leaf_hash(raw)
    if not is_canonical_form(obj, raw):
        _noncanonical(run, file, number, raw, obj)
        return leaf_hash(raw)
    if (
        not isinstance(obj, dict)
        or not set(obj) <= {"r", "s"}
        or not isinstance(obj.get("r"), dict)
    ):
        run.error("RECORD_MALFORMED", 'line must be {"r": record[, "s": signature]}', file, number)
        return leaf_hash(raw)
    body = record_bytes_of_line(raw)
    if body is None:
        run.error("RECORD_MALFORMED", "unexpected line layout", file, number)
        return leaf_hash(raw)
    record: dict[str, Any] = obj["r"]
    problem = record_shape_problem(record)
    if problem is not None:
        run.error("RECORD_INVALID", problem, file, number)
        return leaf_hash(body)
    return Decoded(obj, record, leaf_hash(body))


def check_record_common(run: Run, file: str, number: int, decoded: Decoded, origin: str) -> bool:
    """Origin, key validity and (when asked for) the record signature."""
    record = decoded.record
    ok = True
    seq = record["seq"]
    if record["log"] != origin:
        run.error("ORIGIN_MISMATCH", f"record of log `{record['log']}`", file, number, seq)
        ok = False
    problem = run.key_problem(record["kid"], record["ts"], origin)
    if problem is not None:
        run.error(problem[0], problem[1], file, number, seq)
        ok = False
    sig = decoded.obj.get("s")
    if sig is not None and run.options.record_signatures:
        if not isinstance(sig, str) or not run.record_signature_ok(
            record["kid"], decoded.leaf, sig
        ):
            run.error("RECORD_SIG_INVALID", "record signature does not verify", file, number, seq)
            ok = False
    return ok
