"""What a verification found and concluded: the codes, findings and reports (no I/O).

A finding is one problem with a code, a place and a detail; a source report collects
them with what was proven (completeness, head, witnessed size). Findings are listed in
a deterministic order (file, line, seq, code) however they were found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.witness import CosignerKey

__all__ = [
    "CODES",
    "Finding",
    "Findings",
    "FindingsRecorder",
    "SourceReport",
    "VerifyOptions",
    "VerifyReport",
]

#: Every error and warning code, with what it means.
CODES: dict[str, str] = {
    "RECORD_MALFORMED": "a line is not strict I-JSON (duplicate keys, NaN, bad UTF-8...)",
    "TRUNCATED_LINE": "the last line has no newline (torn write)",
    "RECORD_NONCANONICAL": "a line is not in RFC 8785 canonical form",
    "RECORD_INVALID": "a record lacks a required field or has a bad value",
    "RECORD_SIG_INVALID": "a record signature does not verify",
    "ORIGIN_MISMATCH": "a record or checkpoint belongs to another log",
    "SEQ_GAP": "records are missing",
    "SEQ_DUPLICATE": "a sequence number appears twice",
    "SEQ_ORDER": "records are out of order",
    "PREV_MISMATCH": "a record does not link to the one before it",
    "TS_REGRESSION": "time goes backwards",
    "UNTRUSTED_KEY": "no pinned key vouches for this material",
    "KEY_NOT_VALID_AT_TIME": "the key was not valid at the material's time",
    "CHECKPOINT_MALFORMED": "a checkpoint note cannot be parsed",
    "CHECKPOINT_SIG_INVALID": "a checkpoint signature from a known key fails",
    "ROOT_MISMATCH": "the records do not hash to a signed checkpoint's root",
    "FORK": "two different roots for the same tree size",
    "ROLLBACK": "an older state than one already seen",
    "RANGE_INCOMPLETE": "records end before the last signed checkpoint",
    "RECORD_UNCOVERED": "a bundle holds records no checkpoint covers",
    "NO_CHECKPOINT": "no trusted checkpoint covers the records",
    "STALE_TAIL": "the last checkpoint is older than the requested end",
    "CHECKPOINT_GAP": "a gap between checkpoints without a restart record",
    "PROOF_INVALID": "a start, inclusion or consistency proof does not verify",
    "MANIFEST_INVALID": "the bundle manifest is malformed or its claims are inconsistent",
    "MANIFEST_SIG_INVALID": "the manifest signature is missing or does not verify",
    "FILE_MISSING": "a listed file is missing",
    "FILE_UNEXPECTED": "a file is not listed in the manifest",
    "FILE_HASH_MISMATCH": "a file's size or SHA-256 differs from the manifest",
    "PATH_INVALID": "a path escapes the bundle or is a symlink",
    "FILTER_MISMATCH": "a record in a filtered bundle does not match the filter",
    "INPUT_UNREADABLE": "the path is neither a log directory nor a bundle",
    "TAIL_BEYOND_BOUND": "more records after the last checkpoint than a crash can leave",
    "RECORD_AFTER_STOP": "a record follows a `stop` record without a `start` record",
    "WITNESS_SIG_INVALID": "a cosignature by a pinned witness key does not verify",
    "VIEW_MISMATCH": "a CSV, JSONL or HTML view differs from the views of the records",
    "WITNESS_QUORUM": "no verified checkpoint carries cosignatures from enough pinned witnesses",
    # warnings
    "UNCHECKPOINTED_TAIL": "records after the last checkpoint are not signed yet",
    "KEY_REVOKED": "material is signed by a key later revoked",
    "STATE_NOT_COMPARABLE": "the stored state predates this range; consistency not proven",
    "QUARANTINE_PRESENT": "recovery moved bytes aside; see quarantine/",
    "COMPLETENESS_NOT_PROVEN": "filtered export: only the listed records are proven",
    "WITNESS_TAIL": "records after the newest witnessed checkpoint rest on the log key alone",
    "VIEW_NOT_CHECKED": "views made by another version are not compared with the records",
    "KEY_BESIDE_LOG": "a key file sits in the log directory: whoever copies the log gets it",
}


@dataclass(frozen=True)
class Finding:
    """One problem found."""

    code: str
    detail: str
    file: str | None = None
    line: int | None = None
    seq: int | None = None

    def sort_key(self) -> tuple[str, int, int, str, str]:
        """Deterministic order: file, line, seq, code."""
        return (self.file or "", self.line or 0, self.seq or 0, self.code, self.detail)

    def text(self) -> str:
        """`file:line: CODE: detail`."""
        where = self.file or "-"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.code}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        data: dict[str, Any] = {"code": self.code, "detail": self.detail}
        for key in ("file", "line", "seq"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data


@dataclass
class VerifyOptions:
    """Verifier settings."""

    #: Check per-record signatures when present (they cost ~170 us each).
    record_signatures: bool = True
    #: Longest checkpoint gap without a `start` record in between.
    max_gap_seconds: float = 120.0
    #: The auditor's requested end of the range (RFC 3339); older last checkpoint = stale.
    until: str | None = None
    #: Require this origin (otherwise taken from the log or bundle, and checked against keys).
    expect_origin: str | None = None
    #: Called with (bytes done, bytes total) while records stream.
    progress: Callable[[int, int], None] | None = None
    #: Witness keys the auditor pins (`cosignature/v1`); cosignatures by others are ignored.
    witness_keys: tuple[CosignerKey, ...] = ()
    #: Cosignatures by distinct pinned witnesses required on a verified checkpoint.
    min_witnesses: int = 0


class FindingsRecorder:
    """Records errors and warnings into the `errors` and `warnings` lists of its subclass."""

    errors: list[Finding]
    warnings: list[Finding]

    def error(
        self,
        code: str,
        detail: str,
        file: str | None = None,
        line: int | None = None,
        seq: int | None = None,
    ) -> None:
        """Record an error."""
        self.errors.append(Finding(code, detail, file, line, seq))

    def warn(
        self,
        code: str,
        detail: str,
        file: str | None = None,
        line: int | None = None,
        seq: int | None = None,
    ) -> None:
        """Record a warning."""
        self.warnings.append(Finding(code, detail, file, line, seq))


@dataclass
class SourceReport(FindingsRecorder):
    """Result for one log directory or bundle."""

    path: str
    kind: str
    origin: str = ""
    requested: dict[str, Any] | None = None
    found: dict[str, Any] = field(default_factory=dict)
    records_total: int = 0
    records_invalid: int = 0
    checkpoints_total: int = 0
    checkpoints_invalid: int = 0
    completeness: str = "not-proven"
    head: dict[str, Any] | None = None
    #: The largest checkpoint with the most pinned witness cosignatures: size, witnesses.
    witnessed: dict[str, Any] | None = None
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """True when no error was found."""
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "path": self.path,
            "kind": self.kind,
            "result": "valid" if self.valid else "invalid",
            "origin": self.origin,
            "requested": self.requested,
            "found": self.found,
            "records": {
                "total": self.records_total,
                "valid": self.records_total - self.records_invalid,
                "invalid": self.records_invalid,
            },
            "checkpoints": {
                "total": self.checkpoints_total,
                "valid": self.checkpoints_total - self.checkpoints_invalid,
                "invalid": self.checkpoints_invalid,
            },
            "completeness": self.completeness,
            "head": self.head,
            "witnessed": self.witnessed,
            "errors": [f.to_json() for f in sorted(self.errors, key=Finding.sort_key)],
            "warnings": [f.to_json() for f in sorted(self.warnings, key=Finding.sort_key)],
        }


@dataclass
class VerifyReport:
    """Result for every path verified in one run."""

    sources: list[SourceReport]

    @property
    def valid(self) -> bool:
        """True when every source is valid."""
        return all(s.valid for s in self.sources)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "format": "jurisgate-audit-verify-report/1",
            "result": "valid" if self.valid else "invalid",
            "logs": [s.to_json() for s in self.sources],
        }


class Findings(FindingsRecorder):
    """Errors and warnings as they are found (of a source, or of a helper process)."""

    def __init__(self) -> None:
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []
