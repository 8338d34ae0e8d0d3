"""Fixtures for running the gateway in-process in front of stub TF Serving backends.

`GatewayHarness` starts `create_app` on a real loopback port with the production runner
settings (no automatic request decompression) and gives the test a plain HTTP client.
`X-Test-Peer` on a request stands for the TCP peer address (the harness's only seam: the
documentation addresses of the scenarios cannot be bound on this machine); the header is
removed before the gateway sees the request.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.audit.storage import list_segments
from gateway.config.loader import GatewayConfig, load_config
from gateway.edge.app import create_app
from gateway.edge.http_server import make_runner
from gateway.edge.runtime import RUNTIME, Runtime

TEST_PEER_HEADER = "X-Test-Peer"


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = (int(n) for n in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PORTS = random.SystemRandom()


def free_port() -> int:
    """A loopback port free now, for a server a test starts later.

    Chosen below the kernel's ephemeral range: a port that `bind(0)` handed out and gave back
    can be handed out again (to a stub server that binds port 0, or to an outgoing
    connection) before the test binds it, and the bind then fails with EADDRINUSE.
    """
    low, _high = _ephemeral_ports()
    if low > 11_000:
        for _ in range(100):
            port = _PORTS.randrange(10_000, low)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@web.middleware
async def _peer_override(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    peer = request.headers.get(TEST_PEER_HEADER)
    if peer is not None:
        headers = CIMultiDict(request.headers)
        del headers[TEST_PEER_HEADER]
        request = request.clone(remote=peer, headers=headers)
    return await handler(request)


def png_bytes(size: int = 256) -> bytes:
    """A plain RGB PNG without metadata."""
    from PIL import Image

    image = Image.new("RGB", (size, size), (120, 30, 200))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass
class StubBackend:
    """A TF Serving REST stub: answers status, metadata and predict; records what it got."""

    id: str
    port: int
    received: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    predict_response: Callable[[str], Any] | None = None
    delay_s: float = 0.0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        # Port 0: the system picks a free port as it binds (no race with other tests).
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        if self.port == 0:
            self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        import asyncio

        body = await request.read()
        self.received.append(
            {
                "method": request.method,
                "path": request.raw_path,
                "body": body,
                "headers": dict(request.headers),
            }  # fmt: skip
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        path = request.path
        model = path.split("/v1/models/", 1)[-1].split(":", 1)[0].split("/", 1)[0]
        if path.endswith(":predict"):
            payload = (
                self.predict_response(model)
                if self.predict_response
                else {"predictions": [{"classes": ["sneaker", "boot"], "scores": [0.91, 0.05]}]}
            )
            return web.Response(
                body=json.dumps(payload, indent=4).encode(), content_type="application/json"
            )
        if path.endswith("/metadata"):
            return web.json_response({"model_spec": {"name": model, "version": "1"}})
        return web.json_response(
            {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                       "status": {"error_code": "OK", "error_message": ""}}]}
        )  # fmt: skip


@dataclass
class EventReceiver:
    """A webhook receiver that records the decision events it gets."""

    port: int
    events: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()

        async def handle(request: web.Request) -> web.Response:
            self.events.append(json.loads(await request.read()))
            return web.Response(status=204)

        app.router.add_post("/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class GatewayHarness:
    """A running gateway: its URL, runtime, audit directory and an HTTP client."""

    config: GatewayConfig
    url: str
    runtime: Runtime
    audit_dir: Path
    session: aiohttp.ClientSession

    @property
    def trusted_keys(self) -> Path:
        """The keyring written beside the signing key (what an auditor pins)."""
        return self.config.audit.signing_key.parent / "trusted-keys.json"

    async def request(
        self,
        method: str,
        path: str,
        *,
        peer: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        json_body: Any = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        sent = dict(headers or {})
        if peer is not None:
            sent[TEST_PEER_HEADER] = peer
        data = body if json_body is None else json.dumps(json_body).encode()
        # encoded=True: send the target exactly as written (no dot-segment folding by yarl).
        url = URL(self.url + path, encoded=True)
        async with self.session.request(
            method, url, headers=sent, data=data, allow_redirects=False
        ) as resp:
            return resp.status, resp.headers.copy(), await resp.read()

    def audit_records(self) -> list[dict[str, Any]]:
        """Every record on disk, in order (the log's own `r` member of each line)."""
        records: list[dict[str, Any]] = []
        for _, segment in list_segments(self.audit_dir):
            for line in segment.read_bytes().splitlines():
                if line.strip():
                    records.append(json.loads(line)["r"])
        return records

    def records_for(self, decision_id: str) -> list[dict[str, Any]]:
        return [r for r in self.audit_records() if r.get("decision_id") == decision_id]


def make_signing_key(directory: Path, name: str) -> Path:
    """A signing key made as an operator makes it, with the keyring an auditor pins beside it
    (`trusted-keys.json` in the same directory)."""
    from gateway.cli import main as cli_main

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "signing-key.pem"
    if not path.exists():
        code = cli_main(
            ["keys", "generate", "--out", str(path), "--name", name,
             "--keyring", str(directory / "trusted-keys.json")]
        )  # fmt: skip
        assert code == 0
    return path


async def start_gateway(
    config_path: Path,
    tmp: Path,
    *,
    clock: Callable[[], datetime] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[GatewayHarness, web.AppRunner]:
    env = dict(os.environ)
    env.update(environ or {})
    audit_dir = tmp / "audit"
    env.setdefault("JURISGATE__AUDIT__DIRECTORY", str(audit_dir))
    preview = load_config(config_path, env)
    env.setdefault(
        "JURISGATE__AUDIT__SIGNING_KEY", str(make_signing_key(tmp / "keys", preview.deployment))
    )
    config = load_config(config_path, env)
    app = create_app(config, clock=clock)
    app.middlewares.insert(0, _peer_override)
    runner = make_runner(app, config.client_timeouts, auto_decompress=False, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession(auto_decompress=False)
    harness = GatewayHarness(
        config=config,
        url=f"http://127.0.0.1:{port}",
        runtime=app[RUNTIME],
        audit_dir=config.audit.directory,
        session=session,
    )
    return harness, runner


@pytest.fixture
def b64_png() -> str:
    return base64.b64encode(png_bytes()).decode()


@pytest.fixture
async def gateway_factory(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[GatewayHarness]]]:
    """Start gateways from config files; all are stopped (and their logs closed) after."""
    started: list[tuple[GatewayHarness, web.AppRunner]] = []

    async def factory(
        config_path: Path,
        *,
        clock: Callable[[], datetime] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> GatewayHarness:
        harness, runner = await start_gateway(
            config_path, tmp_path / f"gw{len(started)}", clock=clock, environ=environ
        )
        started.append((harness, runner))
        return harness

    yield factory
    for harness, runner in started:
        await harness.session.close()
        await runner.cleanup()
