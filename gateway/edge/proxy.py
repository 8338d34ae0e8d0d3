"""Forwarding to a backend: the hop-by-hop rules and the upstream connection pool.

`UpstreamPool` is the I/O edge: one `aiohttp.ClientSession` with a keep-alive connection
pool, through which every forwarded request and readiness probe goes; `strip_hop_by_hop`
and the header lists decide what crosses it. Which backend a request goes to is decided in
`gateway.request.routing`.

Upstream failures become `UpstreamError` at this boundary: connection refused or DNS failure
-> 503 `unavailable` (TF Serving's own status for UNAVAILABLE, and what the gateway's clients
already handle as "try again"), any timeout -> 504 `timeout`, a broken or oversized response
-> 502 `bad_response`. A backend's own error responses (its 400, 404, 503...) are not errors
here: they are relayed like any response.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Final

import aiohttp
from yarl import URL

from gateway.pipeline.upstream import UpstreamError, UpstreamResponse
from gateway.request.routing import BackendSpec
from gateway.tfserving import Route, build_backend_path

__all__ = [
    "DEFAULT_REQUEST_HEADERS",
    "DEFAULT_RESPONSE_HEADERS",
    "HOP_BY_HOP_HEADERS",
    "UpstreamPool",
    "strip_hop_by_hop",
]


#: RFC 9110 7.6.1 connection-specific fields, plus the proxy-authentication fields and the
#: pre-RFC 7230 `Proxy-Connection`/`Trailer` that some peers still send.
HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

#: Request headers passed to a backend. TF Serving's REST API reads none of them
#: (https://www.tensorflow.org/tfx/serving/api_rest), so everything else stays at the
#: gateway. SECURITY: API keys, cookies and forwarding headers never reach a backend.
DEFAULT_REQUEST_HEADERS: Final = ("content-type", "accept", "x-decision-id")

#: Response headers relayed from a backend: the ones TF Serving sets (Content-Type, the CORS
#: trio with --rest_api_enable_cors_support) and the few a client may act on.
DEFAULT_RESPONSE_HEADERS: Final = (
    "content-type",
    "content-encoding",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "retry-after",
)


def strip_hop_by_hop(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop hop-by-hop fields (RFC 9110 7.6.1), including every field named in `Connection`."""
    pairs = list(headers)
    named: set[str] = set(HOP_BY_HOP_HEADERS)
    for name, value in pairs:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return [(name, value) for name, value in pairs if name.lower() not in named]


class UpstreamPool:
    """The gateway's one client session to its backends, with a keep-alive connection pool.

    Use as an async context manager (inside the app's `cleanup_ctx`), or call `start()` and
    `close()`. `read_timeout` bounds each socket read; keep it above TF Serving's
    `--rest_api_timeout_in_ms` (30 s by default) so that TF Serving's own 504 reaches the client.
    `keepalive_timeout` should stay below the backend's idle timeout (libevent: 50 s).
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 40.0,
        total_timeout: float | None = None,
        pool_timeout: float | None = None,
        limit: int = 256,
        limit_per_host: int = 64,
        keepalive_timeout: float = 15.0,
        max_response_bytes: int = 128 * 1024 * 1024,
        request_headers: Iterable[str] = DEFAULT_REQUEST_HEADERS,
        response_headers: Iterable[str] = DEFAULT_RESPONSE_HEADERS,
        probe_timeout: float = 2.0,
        retry_on_disconnect: bool = True,
    ) -> None:
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("keepalive_timeout", keepalive_timeout),
            ("probe_timeout", probe_timeout),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got `{value}`")
        if limit < 0 or limit_per_host < 0:
            raise ValueError(f"limit `{limit}` and limit_per_host `{limit_per_host}` must be >= 0")
        self._timeout = aiohttp.ClientTimeout(
            total=total_timeout,
            connect=None if pool_timeout is None else pool_timeout + connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._probe_timeout = aiohttp.ClientTimeout(total=probe_timeout)
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._keepalive_timeout = keepalive_timeout
        self._max_response_bytes = max_response_bytes
        # SECURITY: hop-by-hop fields are never forwarded, even when configured.
        self._request_headers = frozenset(h.lower() for h in request_headers) - HOP_BY_HOP_HEADERS
        self._response_headers = frozenset(h.lower() for h in response_headers) - HOP_BY_HOP_HEADERS
        self._retry_on_disconnect = retry_on_disconnect
        self._session: aiohttp.ClientSession | None = None
        self._bases: dict[str, str] = {}

    async def start(self) -> None:
        """Open the session and its connection pool (needs a running event loop)."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            keepalive_timeout=self._keepalive_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,  # relay the body bytes exactly as the backend sent them
            cookie_jar=aiohttp.DummyCookieJar(),  # SECURITY: no cookie crosses tenants
            # Backends answer uncompressed; no Content-Type is invented for a body sent without.
            skip_auto_headers=("Accept-Encoding", "Content-Type"),
            trust_env=False,
            raise_for_status=False,
        )

    async def close(self) -> None:
        """Close the session and every pooled connection."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> UpstreamPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The underlying session (for instrumentation); raises if the pool is not started."""
        if self._session is None:
            raise RuntimeError("UpstreamPool is not started: use `async with` or `await start()`")
        return self._session

    async def forward(
        self,
        backend: BackendSpec,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> UpstreamResponse:
        """Send one request to `backend` and return its response, or raise UpstreamError.

        `path` is a canonical path (`tfserving.build_backend_path`), never a client's target:
        it must start with `/` and carry no query or fragment. Only the configured request
        headers are forwarded, hop-by-hop ones never.
        """
        # SECURITY: an absolute or scheme-relative path would let a request leave the backend.
        if not path.startswith("/") or path.startswith("//") or "?" in path or "#" in path:
            raise ValueError(f"refusing to forward to path `{path}`: not a canonical path")
        url = URL(self._base(backend) + path, encoded=True)
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        sent = [
            (name, value)
            for name, value in strip_hop_by_hop(pairs)
            if name.lower() in self._request_headers
        ]
        attempts = 2 if self._retry_on_disconnect and method == "POST" else 1
        for attempt in range(attempts):
            try:
                return await self._send(backend, method, url, body, sent)
            except aiohttp.ClientConnectorError as exc:
                raise _unavailable(backend, exc) from exc
            except TimeoutError as exc:
                raise _timeout(backend, exc) from exc
            except (
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
                aiohttp.ClientConnectionResetError,
            ) as exc:
                # A pooled connection the backend closed while idle fails like this before
                # any response byte. TF Serving endpoints have no side effects, so one more
                # try on a fresh connection is safe (aiohttp retries GET itself).
                if attempt + 1 < attempts:
                    continue
                raise _bad_response(backend, exc) from exc
            except aiohttp.ClientError as exc:
                raise _bad_response(backend, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        backend: BackendSpec,
        method: str,
        url: URL,
        body: bytes | None,
        headers: list[tuple[str, str]],
    ) -> UpstreamResponse:
        async with self.session.request(
            method, url, data=body, headers=headers, allow_redirects=False
        ) as resp:
            payload = await self._read_body(backend, resp)
            relayed = tuple(
                (name, value)
                for name, value in strip_hop_by_hop(resp.headers.items())
                if name.lower() in self._response_headers
            )
            return UpstreamResponse(resp.status, relayed, payload)

    async def _read_body(self, backend: BackendSpec, resp: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_bytes
        length = resp.content_length
        if length is not None and length <= limit:
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise UpstreamError(
                    "bad_response",
                    502,
                    f"Backend {backend.id} sent a response larger than {limit} bytes",
                    backend_id=backend.id,
                    detail=f"response body over max_response_bytes={limit}",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def probe_model(self, backend: BackendSpec, model: str) -> bool:
        """Readiness: True when the backend reports a version of `model` as AVAILABLE.

        Never raises for backend trouble: unreachable, slow, non-200 or unreadable all mean
        not ready.
        """
        path = build_backend_path(Route(model, None, None, "status"))
        url = URL(self._base(backend) + path, encoded=True)
        try:
            async with self.session.get(
                url, timeout=self._probe_timeout, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    return False
                status = json.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        versions = status.get("model_version_status") if isinstance(status, dict) else None
        if not isinstance(versions, list):
            return False
        return any(isinstance(v, dict) and v.get("state") == "AVAILABLE" for v in versions)

    async def probe_backend(self, backend: BackendSpec) -> dict[str, bool]:
        """Probe every model of `backend` concurrently: model name -> ready."""
        names = list(backend.models)
        results = await asyncio.gather(*(self.probe_model(backend, name) for name in names))
        return dict(zip(names, results, strict=True))

    def _base(self, backend: BackendSpec) -> str:
        base = self._bases.get(backend.url)
        if base is None:
            # Keep the configured path prefix exactly as written (already encoded).
            base = str(URL(backend.url, encoded=True)).rstrip("/")
            self._bases[backend.url] = base
        return base


def _unavailable(backend: BackendSpec, exc: BaseException) -> UpstreamError:
    return UpstreamError(
        "unavailable",
        503,
        f"Backend {backend.id} is unavailable",
        backend_id=backend.id,
        detail=f"{type(exc).__name__}: {exc}",
    )


def _timeout(backend: BackendSpec, exc: BaseException) -> UpstreamError:
    phase = "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "read"
    return UpstreamError(
        "timeout",
        504,
        f"Backend {backend.id} did not answer in time",
        backend_id=backend.id,
        detail=f"{phase} timeout: {type(exc).__name__}: {exc}",
    )


def _bad_response(backend: BackendSpec, exc: BaseException) -> UpstreamError:
    return UpstreamError(
        "bad_response",
        502,
        f"Backend {backend.id} sent an invalid response",
        backend_id=backend.id,
        detail=f"{type(exc).__name__}: {exc}",
    )
