"""Operating the gateway: hot reload, readiness, admin API, metrics, graceful shutdown.

The in-process tests drive `reload_snapshot` and the admin app directly; the subprocess test
runs `jurisgate serve` for real: a policy edit on disk takes effect, an invalid edit keeps the
last good revision serving, SIGHUP reloads, SIGTERM lets a request in flight finish, and the
audit log it leaves (policy changes, stop record) verifies offline.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from gateway.cli import main as cli_main
from gateway.edge.admin import create_admin_app
from gateway.edge.reload import reload_snapshot
from gateway.edge.runtime import RUNTIME
from gateway.request.tenants import hash_api_key
from tests.gateway.test_pipeline import IMAGE, KEY, _write_config
from tests.plugins.gateway import GatewayHarness, StubBackend, free_port, make_signing_key

ROOT = Path(__file__).resolve().parents[2]

# A pack the tests add to a copy of the shipped policies: it refuses one purpose.
BLOCK_PACK = """\
kind: pack
version: 1
id: ops-test
title: Operations test pack
regime: GDPR
stage: lawful_basis
rules:
  - id: ops-test-block-research
    description: refuses academic research (test rule)
    effect: deny
    status: 451
    when:
      request.purpose: academic_research
    basis: [{ref: "Art. 5(1)(b)"}]
    problem:
      title: Refused by the operations test pack
      detail: academic research is refused by a test rule
"""


def _copy_policies(tmp: Path) -> Path:
    target = tmp / "policies"
    shutil.copytree(ROOT / "policies", target)
    return target


@pytest.fixture
async def ops(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> AsyncIterator[tuple[GatewayHarness, StubBackend, Path]]:
    backend = StubBackend("be-eu", 0)
    await backend.start()
    policies = _copy_policies(tmp_path)
    config = _write_config(
        tmp_path, backend.port, free_port(),
        policies={"paths": [str(policies)], "watch": False},
        admin={"enabled": True, "token": {"env": "TEST_ADMIN_TOKEN"}},
        # A reload compiles every pack while a request waits upstream: on a loaded machine
        # that can outlast the pipeline tests' 1 s read timeout.
        timeouts={"connect_s": 1.0, "read_s": 10.0},
    )  # fmt: skip
    harness = await gateway_factory(config, environ={"TEST_ADMIN_TOKEN": "s3cret-token"})
    try:
        yield harness, backend, policies
    finally:
        await backend.stop()


def _research_headers() -> dict[str, str]:
    return {"X-Api-Key": KEY, "X-Purpose": "academic_research"}


async def test_valid_policy_edit_takes_effect_and_is_audited(
    ops: tuple[GatewayHarness, StubBackend, Path],
) -> None:
    harness, backend, policies = ops
    before = harness.runtime.snapshot.policy_set.revision
    status, _, _ = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=_research_headers(),
        json_body={"instances": [IMAGE]},
    )  # fmt: skip
    assert status == 200
    (policies / "ops-test.yaml").write_text(BLOCK_PACK)
    result = await reload_snapshot(harness.runtime, trigger="test")
    assert result["result"] == "ok", result
    after = harness.runtime.snapshot.policy_set.revision
    assert after != before
    status, _, body = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=_research_headers(),
        json_body={"instances": [IMAGE]},
    )  # fmt: skip
    assert status == 451
    assert json.loads(body)["rules"] == ["ops-test-block-research"]
    changes = [r for r in harness.audit_records() if r["type"] == "policy_change"]
    assert changes[-1]["policy"] == after and changes[-1]["previous_policy"] == before


async def test_invalid_policy_edit_keeps_the_last_good_revision(
    ops: tuple[GatewayHarness, StubBackend, Path],
) -> None:
    harness, _, policies = ops
    before = harness.runtime.snapshot.policy_set.revision
    (policies / "ops-test.yaml").write_text(BLOCK_PACK.replace("effect: deny", "effect: dney"))
    result = await reload_snapshot(harness.runtime, trigger="test")
    assert result["result"] == "error"
    assert any("ops-test.yaml:" in line and "dney" in line for line in result["diagnostics"])
    assert harness.runtime.snapshot.policy_set.revision == before
    status, _, _ = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=_research_headers(),
        json_body={"instances": [IMAGE]},
    )  # fmt: skip
    assert status == 200
    metrics = harness.runtime.metrics.render().decode()
    assert 'jurisgate_reloads_total{result="error"} 1.0' in metrics
    assert not [r for r in harness.audit_records() if r["type"] == "policy_change"]


async def test_request_in_flight_finishes_under_its_revision(
    ops: tuple[GatewayHarness, StubBackend, Path],
) -> None:
    harness, backend, policies = ops
    backend.delay_s = 0.5
    request = asyncio.ensure_future(
        harness.request(
            "POST",
            "/v1/models/mnist:predict",
            headers=_research_headers(),
            json_body={"instances": [IMAGE]},
        )  # fmt: skip
    )
    # Wait until the request has been decided and forwarded (a fixed sleep loses on a
    # loaded machine, where deciding can take longer than the sleep).
    for _ in range(500):
        if backend.received:
            break
        await asyncio.sleep(0.01)
    assert backend.received
    (policies / "ops-test.yaml").write_text(BLOCK_PACK)
    assert (await reload_snapshot(harness.runtime, trigger="test"))["result"] == "ok"
    status, headers, _ = await request
    assert status == 200
    (record, *_) = harness.records_for(headers["X-Decision-Id"])
    changes = [r for r in harness.audit_records() if r["type"] == "policy_change"]
    assert record["policy"] == changes[-1]["previous_policy"]


async def test_admin_api_requires_the_token(
    ops: tuple[GatewayHarness, StubBackend, Path],
) -> None:
    harness, _, _ = ops
    public = harness.runtime
    app = _public_app(harness)
    async with TestClient(TestServer(create_admin_app(app))) as client:
        resp = await client.get("/admin/v1/policy")
        assert resp.status == 401
        resp = await client.get("/admin/v1/policy", headers={"Authorization": "Bearer wrong"})
        assert resp.status == 401
        auth = {"Authorization": "Bearer s3cret-token"}
        resp = await client.get("/admin/v1/policy", headers=auth)
        assert resp.status == 200
        assert (await resp.json())["policy_revision"] == public.snapshot.policy_set.revision
        resp = await client.post(
            "/admin/v1/decide",
            headers=auth,
            json={"model": "mnist", "tenant": "acme", "client_ip": "203.0.113.9",
                  "headers": {"X-Purpose": "document_classification"}},
        )  # fmt: skip
        body = await resp.json()
        assert resp.status == 200 and body["effect"] == "deny" and body["status"] == 451
        assert body["explanation"]
        resp = await client.post("/admin/v1/reload", headers=auth)
        assert resp.status == 200 and (await resp.json())["result"] == "ok"
        resp = await client.get("/metrics")  # metrics need no token
        assert resp.status == 200
        assert "jurisgate_decisions_total" in await resp.text()


def _public_app(harness: GatewayHarness) -> Any:
    """The running public app (the admin app reads its runtime)."""

    class _Holder(dict[Any, Any]):
        pass

    holder = _Holder()
    holder[RUNTIME] = harness.runtime
    return holder


async def test_readyz_follows_the_backends(
    ops: tuple[GatewayHarness, StubBackend, Path],
) -> None:
    harness, backend, _ = ops
    status, _, body = await harness.request("GET", "/healthz")
    assert status == 200
    # be-us (the second backend) is not running: not every backend is up, but each model is
    # served by one, so the gateway is ready.
    status, _, body = await harness.request("GET", "/readyz")
    report = json.loads(body)
    assert status == 200 and report["models"] == {"mnist": True}
    assert report["unavailable_backends"] == ["be-us"]
    await backend.stop()
    status, _, body = await harness.request("GET", "/readyz")
    assert status == 503 and json.loads(body)["models"] == {"mnist": False}


# -- the real process ------------------------------------------------------------------------


def _serve_config(tmp: Path, backend_port: int, policies: Path) -> Path:
    tenants = {"tenants": [{"id": "acme", "api_key_hashes": [hash_api_key(KEY)],
                            "established_in": "DE",
                            "registered_purposes": ["document_classification"]}]}  # fmt: skip
    (tmp / "tenants.yaml").write_text(yaml.safe_dump(tenants))
    key = make_signing_key(tmp / "keys", "gw.proc")
    config = {
        "deployment": "gw.proc",
        "instance": "p1",
        # One process, its log directly in `audit` (tests/gateway/test_workers.py runs two).
        "workers": 1,
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"enabled": False},
        "policies": {"paths": [str(policies)], "watch": True},
        "tenants": {"file": "tenants.yaml"},
        "licences": [{"id": "LIC-MNIST", "model": "mnist", "licensee": "acme",
                      "kind": "contract", "commercial_use": "allowed",
                      "valid_from": "2025-01-01", "valid_until": "2030-12-31"}],
        "backends": [{"id": "be", "url": f"http://127.0.0.1:{backend_port}", "region": "DE",
                      "models": ["mnist"]}],
        "network": {"geoip": {"entries": [{"cidr": "127.0.0.0/8", "region": "DE"}]}},
        "audit": {"directory": "audit", "signing_key": str(key)},
    }  # fmt: skip
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
async def test_serve_process_reloads_and_shuts_down_gracefully(tmp_path: Path) -> None:
    backend = StubBackend("be", free_port())
    await backend.start()
    policies = _copy_policies(tmp_path)
    config_path = _serve_config(tmp_path, backend.port, policies)
    port = yaml.safe_load(config_path.read_text())["listen"]["port"]
    url = f"http://127.0.0.1:{port}/v1/models/mnist:predict"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:

            async def status_for(purpose: str) -> int:
                try:
                    async with session.post(
                        url, json={"instances": [IMAGE]},
                        headers={"X-Api-Key": KEY, "X-Purpose": purpose},
                    ) as resp:  # fmt: skip
                        await resp.read()
                        return resp.status
                except aiohttp.ClientConnectionError:
                    return -1

            await _wait_for(lambda: _is(status_for("academic_research"), 200), timeout=60)
            # A valid edit on disk is picked up by the watcher.
            (policies / "ops-test.yaml").write_text(BLOCK_PACK)
            await _wait_for(lambda: _is(status_for("academic_research"), 451))
            # An invalid edit keeps the last good revision serving.
            (policies / "ops-test.yaml").write_text("kind: pack\nrules: [oops\n")
            await asyncio.sleep(2.5)
            assert await status_for("academic_research") == 451
            # SIGHUP after the fix reloads at once.
            (policies / "ops-test.yaml").unlink()
            proc.send_signal(signal.SIGHUP)
            await _wait_for(lambda: _is(status_for("academic_research"), 200))
            # SIGTERM with a request in flight: it still gets its answer.
            backend.delay_s = 1.0
            in_flight = asyncio.ensure_future(status_for("document_classification"))
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert await in_flight == 200
        _, err = await asyncio.to_thread(proc.communicate, None, 30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        await backend.stop()
    stderr = err.decode()
    assert "reload (file-change) failed" in stderr
    keyring = tmp_path / "keys" / "trusted-keys.json"
    assert cli_main(["audit", "verify", str(tmp_path / "audit"), "--trusted-keys", str(keyring),
                     "--quiet"]) == 0  # fmt: skip
    records = [
        json.loads(line)["r"]
        for segment in sorted((tmp_path / "audit" / "segments").glob("*.jsonl"))
        for line in segment.read_text().splitlines()
        if line.strip()
    ]
    kinds = [r["type"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    assert kinds.count("policy_change") == 2


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_tenants_file_edit_takes_effect_on_reload(
    ops: tuple[GatewayHarness, StubBackend, Path],
) -> None:
    harness, _, _ = ops
    new_key = "key-new-tenant-abcdef0123456789"
    headers = {"X-Api-Key": new_key, "X-Purpose": "document_classification"}
    body = {"instances": [IMAGE]}
    status, _, _ = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=headers, json_body=body
    )
    assert status == 401
    tenants_file = harness.config.tenants_file
    assert tenants_file is not None
    tenants = yaml.safe_load(tenants_file.read_text())
    tenants["tenants"][0]["api_key_hashes"].append(hash_api_key(new_key))
    tenants_file.write_text(yaml.safe_dump(tenants))
    assert (await reload_snapshot(harness.runtime, trigger="test"))["result"] == "ok"
    status, _, _ = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=headers, json_body=body
    )
    assert status == 200
    # A broken tenants file keeps the last good registry (the new key still works).
    tenants_file.write_text("tenants:\n  - id: acme\n    api_key: plain-text-key\n")
    assert (await reload_snapshot(harness.runtime, trigger="test"))["result"] == "error"
    status, _, _ = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=headers, json_body=body
    )
    assert status == 200
