"""The public app's middleware: a decision id for every request, crashes as TF Serving 500s,
and the access log."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.edge.logs import ACCESS_LOGGER
from gateway.edge.runtime import DECISION_ID, RUNTIME
from gateway.errors import describe_exception
from gateway.tfserving import error_body

__all__ = ["DECISION_HEADER", "decision_id_middleware", "new_decision_id"]

log = logging.getLogger("jurisgate")

DECISION_HEADER = "X-Decision-Id"


class _DecisionIds:
    """Random (version 4) UUIDs, with the operating system's randomness fetched in blocks.

    One `getrandom` call per 256 ids instead of one per request: each call also lets go of
    the GIL, and under load the audit writer's threads take it, so the event loop waits.
    Called from the event loop only.
    """

    _BLOCK = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0

    def __call__(self) -> str:
        start = self._next
        if start >= len(self._pool):
            self._pool = os.urandom(self._BLOCK)
            start = 0
        self._next = start + 16
        return str(uuid.UUID(bytes=self._pool[start : start + 16], version=4))


new_decision_id = _DecisionIds()


@web.middleware
async def decision_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give every request a decision id, return it in `X-Decision-Id`, and turn crashes into
    TF-Serving-shaped 500s that carry it (never a stack trace)."""
    decision_id = new_decision_id()
    request[DECISION_ID] = decision_id
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            exc.headers[DECISION_HEADER] = decision_id
            raise
        # aiohttp's own refusals (e.g. a malformed request line) in TF Serving's error shape.
        response = web.Response(
            status=exc.status,
            body=error_body(exc.reason or "error", decision_id=decision_id),
            content_type="application/json",
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # SECURITY: the exception's text may quote the request; log its type and place only.
        log.error("request failed: %s", describe_exception(exc), extra={"decision_id": decision_id})
        response = web.Response(
            status=500,
            body=error_body("Internal gateway error", decision_id=decision_id),
            content_type="application/json",
        )
    response.headers[DECISION_HEADER] = decision_id
    runtime = request.app.get(RUNTIME)
    if runtime is not None and runtime.snapshot.config.access_log:
        _log_access(request, response, decision_id, time.perf_counter() - started)
    return response


_access_log = logging.getLogger(ACCESS_LOGGER)


def _log_access(
    request: web.Request, response: web.StreamResponse, decision_id: str, seconds: float
) -> None:
    # No client address, query string or header value: the path (model, version, method)
    # and the outcome are what an operator correlates with the audit record.
    _access_log.info(
        "%s %s %d",
        request.method,
        request.rel_url.path,
        response.status,
        extra={
            "method": request.method,
            "path": request.rel_url.path,
            "status": response.status,
            "duration_ms": round(seconds * 1000, 3),
            "bytes": response.content_length,
            "decision_id": decision_id,
        },
    )
