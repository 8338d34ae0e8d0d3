"""Exceptions raised by the audit log.

Every exception derives from `AuditError`. The gateway maps `AuditUnavailable` (and, to
stay fail-closed, any other `AuditError`) to HTTP 503.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "AuditLogLocked",
    "AuditRecoveryRefused",
    "AuditUnavailable",
    "KeyLoadError",
    "MalformedJSON",
    "NoteError",
    "ProofError",
    "RecordInvalid",
]


class AuditError(Exception):
    """Base class of every audit-log error."""


class RecordInvalid(AuditError, ValueError):
    """A record handed to `AuditLog.append` is outside the allowed shape.

    The log stays healthy: the record was rejected before it reached the writer.
    """


class AuditUnavailable(AuditError):
    """The log cannot make a record durable (write error, closed, queue full).

    The caller answers 503 and forwards nothing (fail closed). After a write error the
    log stays unhealthy until the process restarts and recovery runs.
    """


class AuditRecoveryRefused(AuditError):
    """Start-up found loss or tampering that recovery must not paper over.

    Examples: the log is shorter than its last signed checkpoint, the root at that size
    differs, or the last checkpoint is not signed by the configured key. The operator
    decides, e.g. with `jurisgate audit new-epoch`.
    """


class AuditLogLocked(AuditError):
    """Another process holds the writer lock of the log directory."""


class KeyLoadError(AuditError):
    """A signing or verifying key could not be loaded or parsed."""


class MalformedJSON(AuditError, ValueError):
    """Bytes are not strict I-JSON (duplicate keys, NaN, lone surrogates, bad UTF-8)."""


class NoteError(AuditError, ValueError):
    """A signed note or checkpoint is malformed or does not verify."""


class ProofError(AuditError, ValueError):
    """A Merkle inclusion or consistency proof is malformed or does not verify."""
