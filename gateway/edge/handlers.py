"""The REST edge: an aiohttp request in, the pipeline's reply out.

Every TF Serving REST call goes through `handle_tfserving`, which pins the policy snapshot,
wraps the aiohttp request in a transport-neutral `RequestState`, runs the steps of
`gateway.pipeline` (URL grammar, body, client, tenant, personal data, decision, backend,
write-ahead record, masking, forwarding, output obligations, outcome record) and writes the
reply. What only HTTP has is here: reading the body under its size and time limits and
inflating a compressed one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.edge.runtime import DECISION_ID, RUNTIME, Runtime
from gateway.pipeline import Refusal, RequestState, run_steps
from gateway.pipeline.refusals import gateway_refusal
from gateway.request import strictjson

__all__ = ["handle_tfserving"]


async def handle_tfserving(request: web.Request) -> web.StreamResponse:
    """Run one TF Serving request through the pipeline and answer it."""
    runtime: Runtime = request.app[RUNTIME]
    state = RequestState(
        runtime=runtime,
        snap=runtime.snapshot,  # SECURITY: pinned; a reload mid-request changes nothing here
        decision_id=request[DECISION_ID],
        started=time.perf_counter(),
        method=request.method,
        target=request.raw_path,
        path=request.path,
        headers=request.headers,
        peer=request.remote,
        read_body=_body_reader(request),
    )
    reply = await run_steps(state)
    response = web.Response(status=reply.status, body=reply.body, headers=dict(reply.headers))
    if reply.content_type:
        response.content_type = reply.content_type
    return response


def _body_reader(request: web.Request) -> Callable[[RequestState], Awaitable[bytes]]:
    async def read(state: RequestState) -> bytes:
        return await _read_body(request, state)

    return read


def _too_large(state: RequestState, detail: str) -> Refusal:
    return gateway_refusal(
        state, 413, "body_too_large", "Payload Too Large", detail,
        "send a smaller batch of instances",
    )  # fmt: skip


async def _read_body(request: web.Request, state: RequestState) -> bytes:
    limit = state.snap.config.limits.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(state, f"request body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in _body_chunks(request, state):
        size += len(chunk)
        if size > limit:
            raise _too_large(state, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("Content-Encoding")
    return _inflate(state, body, encoding) if encoding else body


def _inflate(state: RequestState, body: bytes, encoding: str) -> bytes:
    try:
        return strictjson.inflate(
            body, encoding, max_size=state.snap.config.limits.max_inflated_bytes
        )
    except strictjson.UnsupportedEncodingError as exc:
        raise gateway_refusal(
            state, 415, "unsupported_encoding", "Unsupported Media Type", str(exc),
            "send the body uncompressed, or with gzip or deflate",
        ) from None  # fmt: skip
    except strictjson.BodyTooLargeError as exc:
        raise _too_large(state, str(exc)) from None
    except strictjson.CorruptBodyError as exc:
        raise gateway_refusal(
            state, 400, "corrupt_encoding", "Bad Request", str(exc),
            "check the Content-Encoding header matches the body",
        ) from None  # fmt: skip


async def _body_chunks(request: web.Request, state: RequestState) -> AsyncIterator[bytes]:
    """The body as it arrives, within the client time limits (a pause, and the whole body)."""
    content = request.content
    if content.is_eof():
        # The whole body came with the head (the common case): no timer to set.
        whole = content.read_nowait()
        if whole:
            yield whole
        return
    timeouts = state.snap.config.client_timeouts
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeouts.body_timeout_s
    while True:
        wait = min(timeouts.body_idle_timeout_s, deadline - loop.time())
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                chunk = await content.readany()
        except TimeoutError:
            # SECURITY: a body that stops arriving (shorter than its Content-Length, a chunked
            # body without its last chunk) must not hold the connection open.
            raise gateway_refusal(
                state, 408, "body_timeout", "Request Timeout",
                "the request body did not arrive in time",
                "send the whole body without pauses longer than "
                f"{timeouts.body_idle_timeout_s:g} s",
                headers={"Connection": "close"},
            ) from None  # fmt: skip
        if not chunk:
            return
        yield chunk
