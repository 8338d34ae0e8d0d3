"""The signed, tamper-evident audit log.

Pure core: `record` (shape, minimisation helpers), `canonical` (RFC 8785), `merkle`
(RFC 6962 / 9162), `chain` (sealing), `signing`, `note` (C2SP signed notes and
checkpoints), `keyring`, `bundle` and `verify`. I/O shell: `storage`, `recovery`,
`writer` (the `AuditLog` task), `retention` and `export`. Nothing here imports aiohttp.

Typical use in the gateway::

    log = await AuditLog.open(directory, signer, origin="deployment/instance")
    receipt = await log.append({"type": "decision", ...})   # durable and signed
    await log.close()

See docs/audit-format.md for the formats and how an auditor verifies offline.
"""

from __future__ import annotations

from gateway.audit.bundle import ExportFilter
from gateway.audit.errors import (
    AuditError,
    AuditLogLocked,
    AuditRecoveryRefused,
    AuditUnavailable,
    KeyLoadError,
    RecordInvalid,
)
from gateway.audit.export import ExportResult, export_bundle
from gateway.audit.keyring import Keyring, KeyringEntry
from gateway.audit.record import PayloadDigester, minimise_ip, validate_record
from gateway.audit.retention import check_retention_days, retention_floor_days
from gateway.audit.signing import Signer, Verifier
from gateway.audit.verify import VerifyOptions, VerifyReport, verify_paths, verify_source
from gateway.audit.writer import AppendReceipt, AuditLog, AuditOptions, AuditStats, PruneResult

__all__ = [
    "AppendReceipt",
    "AuditError",
    "AuditLog",
    "AuditLogLocked",
    "AuditOptions",
    "AuditRecoveryRefused",
    "AuditStats",
    "AuditUnavailable",
    "ExportFilter",
    "ExportResult",
    "KeyLoadError",
    "Keyring",
    "KeyringEntry",
    "PayloadDigester",
    "PruneResult",
    "RecordInvalid",
    "Signer",
    "Verifier",
    "VerifyOptions",
    "VerifyReport",
    "check_retention_days",
    "export_bundle",
    "minimise_ip",
    "retention_floor_days",
    "validate_record",
    "verify_paths",
    "verify_source",
]
