"""`jurisgate serve` with two workers: one port, two logs, reloads, restarts and drains.

The process test runs the real command against a stub backend: both workers answer on the
one REST port (their logs both fill) and on the gRPC port, `/metrics` reports the group
(counters summed, live figures per `worker`, accepted by promtool when installed), SIGHUP to
the parent (and an admin reload answered by one worker) writes a `policy_change` record in
each worker's log, a worker killed with SIGKILL is restarted and recovers its log while the
other serves, SIGTERM drains both, and each log verifies.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest
import yaml

from gateway.audit.storage import list_segments
from gateway.cli import main as cli_main
from gateway.config.loader import WORKER_ENV, load_config
from gateway.edge.workers import available_cores, worker_count
from tests.gateway.test_operations import (
    BLOCK_PACK,
    _copy_policies,
    _serve_config,
    _wait_for,
)
from tests.gateway.test_pipeline import IMAGE, KEY
from tests.plugins.gateway import StubBackend, free_port


def _records(directory: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)["r"]
        for _, segment in list_segments(directory)
        for line in segment.read_bytes().splitlines()
        if line.strip()
    ]


def _children(parent: int) -> list[int]:
    """Pids whose parent is `parent` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _listeners(port: int) -> int:
    """Listening TCP sockets on `port` (from /proc/net; gRPC listens on IPv6, v4-mapped)."""
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "0A":
                count += 1
    return count


def test_worker_settings_resolve(tmp_path: Path) -> None:
    backend_port = free_port()
    path = _serve_config(tmp_path, backend_port, tmp_path)
    single = load_config(path)
    assert single.worker is None and single.origin == "gw.proc/p1"
    assert single.audit.directory == tmp_path / "audit"
    assert worker_count(single) == 1
    assert worker_count(load_config(path, {"JURISGATE__WORKERS": "0"})) == available_cores()
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))
    worker = load_config(path, {WORKER_ENV: "3", "JURISGATE__WORKERS": "4"})
    assert worker.origin == "gw.proc/p1/w3" and worker.workers == 4
    assert worker.audit.directory == tmp_path / "audit" / "w3"
    # The keys stay shared: the default signing key is beside the logs, not in one.
    assert worker.audit.signing_key == single.audit.signing_key
    assert worker_count(worker) == 4


def test_the_cgroup_cpu_quota_caps_the_workers(tmp_path: Path) -> None:
    from gateway.edge.workers import cgroup_cpu_quota

    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert cgroup_cpu_quota(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # cgroup v1, unlimited
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1
    assert cgroup_cpu_quota(tmp_path / "absent") is None


def test_a_bad_worker_number_names_the_variable(tmp_path: Path) -> None:
    from gateway.config.loader import ConfigError

    path = _serve_config(tmp_path, free_port(), tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {WORKER_ENV: "w1"})
    assert f"`{WORKER_ENV}` has bad value `w1`" in str(caught.value.diagnostics()[0])


def _serve_two_workers_on_a_held_port(
    tmp_path: Path, *, reuse_port: bool
) -> subprocess.CompletedProcess[str]:
    """`jurisgate serve` with 2 workers on a port another socket listens on."""
    with socket.socket() as holder:
        if reuse_port:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        path = _serve_config(tmp_path, free_port(), tmp_path)
        config = yaml.safe_load(path.read_text())
        config["listen"]["port"] = holder.getsockname()[1]
        config["workers"] = 2
        path.write_text(yaml.safe_dump(config))
        return subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip


def test_a_port_in_use_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    proc = _serve_two_workers_on_a_held_port(tmp_path, reuse_port=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "listen.port: cannot listen on 127.0.0.1:" in proc.stdout


def test_a_port_another_group_of_workers_serves_is_refused(tmp_path: Path) -> None:
    # A listener that shares ports (as another gateway's workers do).
    proc = _serve_two_workers_on_a_held_port(tmp_path, reuse_port=True)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "is already served by another process" in proc.stdout


def test_a_policy_error_is_reported_once_before_any_worker_starts(tmp_path: Path) -> None:
    policies = _copy_policies(tmp_path)
    (policies / "ops-test.yaml").write_text(BLOCK_PACK.replace("effect: deny", "effect: dney"))
    path = _serve_config(tmp_path, free_port(), policies)
    config = yaml.safe_load(path.read_text())
    config["workers"] = 2
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.count("dney") >= 1
    assert "worker" not in proc.stderr  # no worker was started
    assert not (tmp_path / "audit").exists()


@pytest.mark.slow
async def test_two_workers_share_the_port_reload_restart_and_drain(tmp_path: Path) -> None:
    backend = StubBackend("be", 0)
    await backend.start()
    policies = _copy_policies(tmp_path)
    config_path = _serve_config(tmp_path, backend.port, policies)
    config = yaml.safe_load(config_path.read_text())
    config["workers"] = 2
    config["policies"]["watch"] = False  # the reload below comes from SIGHUP alone
    admin_port = free_port()
    config["admin"] = {"enabled": True, "port": admin_port,
                       "token": {"env": "TEST_ADMIN_TOKEN"}}  # fmt: skip
    grpc_port = free_port()
    config["grpc"] = {"enabled": True, "host": "127.0.0.1", "port": grpc_port}
    config_path.write_text(yaml.safe_dump(config))
    port = config["listen"]["port"]
    url = f"http://127.0.0.1:{port}/v1/models/mnist:predict"
    audit = tmp_path / "audit"
    errors = (tmp_path / "serve.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE, stderr=errors, cwd=tmp_path,
        env={**os.environ, "TEST_ADMIN_TOKEN": "s3cret-token"},
    )  # fmt: skip
    answered: list[str] = []
    failures: list[str] = []
    try:

        async def predict(purpose: str = "document_classification") -> int:
            # A new connection each time, so the kernel spreads them over the workers.
            try:
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s,
                    s.post(url, json={"instances": [IMAGE]},
                           headers={"X-Api-Key": KEY, "X-Purpose": purpose}) as resp,
                ):  # fmt: skip
                    await resp.read()
                    if "X-Decision-Id" in resp.headers:
                        answered.append(resp.headers["X-Decision-Id"])
                    return resp.status
            except aiohttp.ClientConnectionError as exc:
                failures.append(repr(exc))
                return -1

        async def is_status(expected: int, purpose: str = "document_classification") -> bool:
            return await predict(purpose) == expected

        # The parent announces the port once every worker serves.
        assert proc.stdout is not None
        announced = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 90)
        assert b"with 2 workers" in announced
        assert await predict() == 200
        # Every worker listens on every port.
        assert [_listeners(p) for p in (port, grpc_port, admin_port)] == [2, 2, 2]
        for _ in range(40):
            assert await predict() == 200
        logs = [audit / "w0", audit / "w1"]
        decided = [[r for r in _records(d) if r["type"] == "decision"] for d in logs]
        assert all(decided), "both workers answer on the one port"
        assert not (audit / "segments").exists(), "no log directly in audit.directory"

        # gRPC through the shared port: a malformed message is refused and audited by the
        # worker that took the connection.
        grpc_ids = []
        for _ in range(6):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(
                    b"\xff\xff not a protobuf", metadata=(("x-api-key", KEY),), timeout=10
                )
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                grpc_ids.append(dict(await call.initial_metadata() or ())["x-decision-id"])
        audited = {str(r.get("decision_id")) for d in logs for r in _records(d)}
        assert set(grpc_ids) <= audited

        # /metrics: any worker answers for the group.
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
        total = sum(len(d) for d in decided)
        assert f'jurisgate_requests_total{{outcome="allow",status="200"}} {float(total)}' in text
        assert 'jurisgate_audit_queue_depth{worker="0"}' in text
        assert 'jurisgate_audit_queue_depth{worker="1"}' in text
        assert 'process_resident_memory_bytes{worker="1"}' in text
        promtool = shutil.which("promtool")
        if promtool is not None:
            lint = subprocess.run(
                [promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                timeout=60,
            )  # fmt: skip
            assert lint.returncode == 0, lint.stdout + lint.stderr

        # SIGHUP to the parent reaches both workers; each logs its own policy change.
        (policies / "ops-test.yaml").write_text(BLOCK_PACK)
        proc.send_signal(signal.SIGHUP)

        async def both_changed() -> bool:
            return all(any(r["type"] == "policy_change" for r in _records(d)) for d in logs)

        await _wait_for(both_changed, timeout=60)
        for _ in range(10):
            assert await predict("academic_research") == 451

        # An admin reload answered by one worker reaches the other through the parent.
        (policies / "ops-test.yaml").unlink()
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{admin_port}/admin/v1/reload",
                         headers={"Authorization": "Bearer s3cret-token"}) as resp,
        ):  # fmt: skip
            assert resp.status == 200 and (await resp.json())["result"] == "ok"

        async def both_changed_back() -> bool:
            return all(sum(r["type"] == "policy_change" for r in _records(d)) == 2 for d in logs)

        await _wait_for(both_changed_back, timeout=60)
        for _ in range(10):
            assert await predict("academic_research") == 200

        # SIGKILL one worker: the other keeps serving, the parent restarts it.
        workers_before = sorted(_children(proc.pid))
        assert len(workers_before) == 2
        os.kill(workers_before[0], signal.SIGKILL)

        async def reaped() -> bool:
            return workers_before[0] not in _children(proc.pid) and _listeners(port) == 1

        # Connections the kernel queued on the killed worker's socket die with it (until the
        # kernel has closed that socket); then the other worker takes every new connection.
        await _wait_for(reaped, timeout=30)
        failures.clear()
        for _ in range(10):
            assert await predict() == 200, failures

        async def restarted() -> bool:
            now = _children(proc.pid)
            return len(now) == 2 and workers_before[0] not in now

        await _wait_for(restarted, timeout=60)
        before = [len(_records(d)) for d in logs]

        async def both_serve_again() -> bool:
            await predict()
            return all(len(_records(d)) > n for d, n in zip(logs, before, strict=True))

        await _wait_for(both_serve_again, timeout=90)

        # SIGTERM with a request in flight: it is answered, then everything stops.
        backend.delay_s = 1.0
        in_flight = asyncio.ensure_future(predict())
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert await in_flight == 200
        await asyncio.to_thread(proc.communicate, None, 60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        await backend.stop()
        errors.close()
        print((tmp_path / "serve.err").read_text()[-5000:])
    keyring = tmp_path / "keys" / "trusted-keys.json"
    found: set[str] = set()
    for directory in logs:
        records = _records(directory)
        assert records[-1]["type"] == "stop", directory
        changes = [r for r in records if r["type"] == "policy_change"]
        assert [r["trigger"] for r in changes] in (["sighup", "admin"], ["sighup", "sighup"])
        found |= {str(r.get("decision_id")) for r in records if r["type"] == "decision"}
        code = cli_main(
            ["audit", "verify", str(directory), "--trusted-keys", str(keyring), "--quiet"]
        )
        assert code == 0, directory
    # Every answer with a decision id is in one of the two logs.
    assert set(answered) <= found
