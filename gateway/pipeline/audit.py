"""Writing a request's records: fail closed when the audit log cannot take them."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from gateway.audit import AuditError, AuditUnavailable
from gateway.pipeline.state import Reply, RequestState
from gateway.tfserving import error_body

__all__ = ["AuditDown", "append"]

log = logging.getLogger("jurisgate")


class AuditDown(Exception):
    """The audit log refused a record: the request ends with `reply` (503), unrecorded."""

    def __init__(self, reply: Reply) -> None:
        super().__init__("audit log unavailable")
        self.reply = reply


async def append(state: RequestState, record: Mapping[str, Any]) -> None:
    """Append `record` durably; raise `AuditDown` (a 503 to answer, nothing forwarded) when
    the audit log cannot take it."""
    runtime = state.runtime
    started = time.perf_counter()
    try:
        await runtime.audit.append(record)
    except AuditError as exc:
        if not isinstance(exc, AuditUnavailable):
            log.error("audit record refused: %s", exc, extra={"decision_id": state.decision_id})
        runtime.metrics.audit_failures.inc()
        body = error_body(
            "Audit log unavailable: the request was not processed", decision_id=state.decision_id
        )
        raise AuditDown(Reply(503, body, "application/json", {"Retry-After": "5"})) from None
    runtime.metrics.observe_audit_append(time.perf_counter() - started)
