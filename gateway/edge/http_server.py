"""The aiohttp runner the gateway serves with: time limits for slow or silent clients.

aiohttp bounds an idle kept-alive connection, but nothing else: a client that sends half a
request line, headers a byte at a time, or nothing at all after connecting holds its
connection (and a file descriptor) for as long as it likes. The gateway's handler bounds the
body itself (`handlers._read_body`: idle time between pieces and the whole body); this module
bounds what comes before a request exists:

Rule 1 — a new connection must deliver a complete request head (request line and headers)
within `header_timeout_s`; a connection that sent nothing by then is closed without an
answer, one that sent part of a head gets `408 Request Timeout` and is closed.
Rule 2 — after a response, the next request's head must arrive within `keepalive_timeout_s`
of the connection going idle, and once its first byte arrived, completely within
`header_timeout_s`.
Rule 3 — after a response to a request whose body was not read (refused early, or stalled),
the rest of the body is read and dropped for at most `LINGER_S` seconds (aiohttp's default is
10), then the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from gateway.config.loader import ClientTimeouts

__all__ = ["LINGER_S", "make_runner"]

#: How long an unread body may keep arriving after the response (see Rule 3).
LINGER_S: Final = 2.0

_REQUEST_TIMEOUT: Final = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 59\r\n"
    b"\r\n"
    b'{\n    "error": "The request head did not arrive in time"\n}\n'
)


class _TimedRequestHandler(RequestHandler):
    """aiohttp's connection handler with a deadline for each request head."""

    __slots__ = ("_head_deadline", "_head_started", "_heads_seen", "_timeouts")

    def __init__(self, manager: Server, *, timeouts: ClientTimeouts, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._timeouts = timeouts
        self._head_deadline: asyncio.TimerHandle | None = None
        self._heads_seen = 0
        self._head_started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        between_requests = not self._messages and not self._request_in_progress
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:
            self._heads_seen = self._request_count
            self._head_started = False
            self._cancel_head_deadline()
        elif between_requests and data and not self._head_started:
            self._head_started = True
            if self._head_deadline is None:  # a new connection's deadline already runs
                self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self._loop.call_later(
            self._timeouts.header_timeout_s, self._head_overdue, self._request_count
        )

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_overdue(self, count_when_armed: int) -> None:
        self._head_deadline = None
        if self._request_count != count_when_armed or self.transport is None:
            return  # a head arrived in time
        if self._request_in_progress or self._messages:
            return
        if self._head_started:
            self.transport.write(_REQUEST_TIMEOUT)
        self.force_close()
        self.transport.close()


class _TimedServer(Server):
    """aiohttp's low-level server, making `_TimedRequestHandler` connections."""

    timeouts: ClientTimeouts

    def __call__(self) -> RequestHandler:
        return _TimedRequestHandler(self, loop=self._loop, timeouts=self.timeouts, **self._kwargs)


class _TimedAppRunner(web.AppRunner):
    """`web.AppRunner` whose server bounds the time a client takes to send a request head."""

    def __init__(self, app: web.Application, *, timeouts: ClientTimeouts, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._timeouts = timeouts

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # The application builds its own `Server` (with its handler, request factory and
        # settings); only the connection handler it makes differs, so the class is swapped.
        server.__class__ = _TimedServer
        assert isinstance(server, _TimedServer)
        server.timeouts = self._timeouts
        return server


def make_runner(app: web.Application, timeouts: ClientTimeouts, **kwargs: Any) -> web.AppRunner:
    """An `AppRunner` for `app` that enforces `timeouts` (see the module rules).

    `keepalive_timeout` is set from `timeouts.keepalive_timeout_s`; other keyword arguments
    are aiohttp's.
    """
    kwargs.setdefault("keepalive_timeout", timeouts.keepalive_timeout_s)
    kwargs.setdefault("lingering_time", min(LINGER_S, timeouts.body_idle_timeout_s))
    return _TimedAppRunner(app, timeouts=timeouts, **kwargs)
