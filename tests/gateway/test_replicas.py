"""Three replicas behind a load balancer, one killed mid-run: one export proves every answer.

Three `jurisgate serve` processes (one log each, one origin each, keys shared) run on
loopback behind a small round-robin balancer (nginx is not on every machine; the balancer
here does what nginx's `proxy_next_upstream error` does: a replica that refuses the
connection is skipped, a request already sent is never sent twice). Under load, one replica
is killed with SIGKILL and started again on the same log. Then one `audit export` of the
three logs verifies, and every response the client received with an `X-Decision-Id` is in
it: nothing acknowledged is lost, whichever replica answered.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from gateway.cli import main as cli_main
from tests.gateway.test_operations import _copy_policies, _serve_config
from tests.gateway.test_pipeline import IMAGE, KEY
from tests.plugins.gateway import StubBackend

REPLICAS = 3


@asynccontextmanager
async def _balancer(upstreams: list[int]) -> AsyncIterator[int]:
    """Round-robin over `upstreams`; a refused connection moves on to the next replica."""
    session = aiohttp.ClientSession(auto_decompress=False)
    turn = 0

    async def forward(request: web.Request) -> web.Response:
        nonlocal turn
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-")}
        headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        for _ in range(len(upstreams)):
            port = upstreams[turn % len(upstreams)]
            turn += 1
            try:
                async with session.post(
                    f"http://127.0.0.1:{port}{request.path_qs}", data=body, headers=headers
                ) as upstream:
                    payload = await upstream.read()
                    passed = {
                        k: v for k, v in upstream.headers.items() if k.lower().startswith("x-")
                    }
                    return web.Response(status=upstream.status, body=payload, headers=passed)
            except aiohttp.ClientConnectorError:
                continue  # nothing was sent: another replica may take it
            except (TimeoutError, aiohttp.ClientError):
                return web.Response(status=502)  # sent, answer lost: never sent twice
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()
        await session.close()


def _replica_config(base: Path, index: int, backend_port: int, policies: Path) -> Path:
    home = base / f"r{index}"
    home.mkdir()
    path = _serve_config(home, backend_port, policies)
    config = yaml.safe_load(path.read_text())
    config["instance"] = f"r{index}"
    config["workers"] = 1
    config["policies"]["watch"] = False
    # One signing key (and payload key beside it) for the deployment, as a Secret gives it.
    config["audit"]["signing_key"] = str(base / "r0" / "keys" / "signing-key.pem")
    path.write_text(yaml.safe_dump(config))
    return path


def _start(config: Path) -> subprocess.Popen[bytes]:
    # The child keeps its own copy of the descriptor; the parent's is closed at once.
    with (config.parent / "serve.err").open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=config.parent,
        )  # fmt: skip


async def _ready(port: int, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/v1/models/mnist") as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"replica on port {port} did not start")


@pytest.mark.slow
async def test_an_export_of_all_replicas_holds_every_answer_after_a_kill(
    tmp_path: Path,
) -> None:
    backend = StubBackend("be", 0)
    await backend.start()
    policies = _copy_policies(tmp_path)
    configs = [_replica_config(tmp_path, i, backend.port, policies) for i in range(REPLICAS)]
    ports = [yaml.safe_load(c.read_text())["listen"]["port"] for c in configs]
    procs = [_start(c) for c in configs]
    answered: list[str] = []
    statuses: list[int] = []
    try:
        await asyncio.gather(*(_ready(p) for p in ports))
        async with _balancer(ports) as lb, aiohttp.ClientSession() as client:
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    async with client.post(
                        f"http://127.0.0.1:{lb}/v1/models/mnist:predict",
                        json={"instances": [IMAGE]},
                        headers={"X-Api-Key": KEY, "X-Purpose": "document_classification"},
                    ) as resp:
                        await resp.read()
                        statuses.append(resp.status)
                        if "X-Decision-Id" in resp.headers:
                            answered.append(resp.headers["X-Decision-Id"])

            clients = [asyncio.ensure_future(load()) for _ in range(6)]
            await asyncio.sleep(2.0)
            procs[1].send_signal(signal.SIGKILL)
            procs[1].wait(timeout=30)
            await asyncio.sleep(1.0)
            procs[1] = _start(configs[1])
            await _ready(ports[1])
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*clients)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        await backend.stop()

    assert statuses.count(200) >= 20, statuses[:20]
    assert len(answered) >= statuses.count(200)
    bundle = tmp_path / "bundle"
    logs = [arg for c in configs for arg in ("--log", str(c.parent / "audit"))]
    key = tmp_path / "r0" / "keys" / "signing-key.pem"
    # The CLI runs its own event loop (the export record): off this test's loop.
    export = ["audit", "export", *logs, "--out", str(bundle), "--key", str(key)]
    assert await asyncio.to_thread(cli_main, export) == 0
    trusted = tmp_path / "r0" / "keys" / "trusted-keys.json"
    verify = ["audit", "verify", str(bundle), "--trusted-keys", str(trusted)]
    assert await asyncio.to_thread(cli_main, verify) == 0
    # The evidence, not a view: every stored line of every log's bundle.
    exported = {
        json.loads(line)["r"].get("decision_id")
        for records in sorted((bundle / "logs").glob("*/records/*.jsonl"))
        for line in records.read_text().splitlines()
        if line.strip()
    }
    assert len(list((bundle / "logs").iterdir())) == REPLICAS
    missing = [d for d in answered if d not in exported]
    assert not missing, f"{len(missing)} answered decisions missing from the export"
