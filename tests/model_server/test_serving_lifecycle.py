"""A private server: real batching, version hot-drop without failed requests, new models
appearing, clean SIGTERM; and start-up errors."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.plugins.model_server import (
    REPO,
    RunningModelServer,
    serve_command,
    start_model_server,
)

BODY = json.dumps(
    {"instances": np.round(np.random.default_rng(3).random((1, 28, 28, 1)), 3).tolist()}
).encode()


@pytest.fixture(scope="module")
def private_server(
    trained_model_base: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningModelServer]:
    base = tmp_path_factory.mktemp("private-base")
    shutil.copytree(trained_model_base / "mnist", base / "mnist")
    server = start_model_server(
        base, "--file-system-poll-wait-seconds", "0.2", "--batch-timeout-micros", "100000"
    )
    yield server
    assert server.stop() == 0  # SIGTERM is a clean exit


async def predict(session: aiohttp.ClientSession, server: RunningModelServer) -> int:
    async with session.post(server.rest_url + "/v1/models/mnist:predict", data=BODY) as response:
        await response.read()
        return response.status


async def test_concurrent_requests_are_batched(private_server: RunningModelServer) -> None:
    before = private_server.stats()
    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(*(predict(session, private_server) for _ in range(16)))
    after = private_server.stats()
    assert statuses == [200] * 16
    requests = int(after["batched_requests"]) - int(before["batched_requests"])  # type: ignore[call-overload]
    calls = int(after["model_calls"]) - int(before["model_calls"])  # type: ignore[call-overload]
    assert requests == 16
    assert calls <= 2, after


def drop_version(model_dir: Path, source: int, target: int) -> None:
    """What an export does: write aside, then rename into place."""
    staging = model_dir / f".{target}.partial"
    shutil.copytree(model_dir / str(source), staging)
    os.rename(staging, model_dir / str(target))


def version_states(server: RunningModelServer, model: str = "mnist") -> dict[str, str]:
    import urllib.request

    with urllib.request.urlopen(f"{server.rest_url}/v1/models/{model}", timeout=10) as response:
        doc = json.loads(response.read())
    return {entry["version"]: entry["state"] for entry in doc["model_version_status"]}


async def test_version_hot_drop_drops_no_request(private_server: RunningModelServer) -> None:
    statuses: list[int] = []
    stop = asyncio.Event()

    async def traffic(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            statuses.append(await predict(session, private_server))

    async with aiohttp.ClientSession() as session:
        workers = [asyncio.create_task(traffic(session)) for _ in range(4)]
        await asyncio.sleep(0.3)
        drop_version(private_server.model_base / "mnist", 1, 2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = await asyncio.to_thread(version_states, private_server)
            if states == {"2": "AVAILABLE", "1": "END"}:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
        async with session.get(private_server.rest_url + "/v1/models/mnist/metadata") as response:
            metadata = json.loads(await response.read())
    assert states == {"2": "AVAILABLE", "1": "END"}
    assert statuses and set(statuses) == {200}
    assert metadata["model_spec"]["version"] == "2"


async def test_a_new_model_directory_is_served(private_server: RunningModelServer) -> None:
    base = private_server.model_base
    staging = base / ".digits.partial"
    shutil.copytree(base / "mnist" / "2", staging / "1")
    os.rename(staging, base / "digits")
    deadline = time.monotonic() + 60
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            states = await asyncio.to_thread(version_states, private_server, "digits")
        except OSError:
            states = {}
        if states == {"1": "AVAILABLE"}:
            break
        await asyncio.sleep(0.2)
    assert states == {"1": "AVAILABLE"}
    async with aiohttp.ClientSession() as session:
        url = private_server.rest_url + "/v1/models/digits:predict"
        async with session.post(url, data=BODY) as response:
            assert response.status == 200


def serve_once(model_base: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        serve_command(model_base), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_missing_model_base(tmp_path: Path) -> None:
    result = serve_once(tmp_path / "absent")
    assert result.returncode == 1 and result.stdout == ""
    assert f"--model-base {tmp_path / 'absent'}: directory does not exist" in result.stderr


def test_model_without_versions(tmp_path: Path) -> None:
    (tmp_path / "mnist" / "not-a-version").mkdir(parents=True)
    result = serve_once(tmp_path)
    assert result.returncode == 1
    assert "model `mnist`: no versions under" in result.stderr


def test_empty_model_base(tmp_path: Path) -> None:
    result = serve_once(tmp_path)
    assert result.returncode == 1
    assert "no models found in" in result.stderr


def test_corrupt_saved_model(tmp_path: Path) -> None:
    version = tmp_path / "mnist" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"\x08\x01garbage that is not a SavedModel")
    result = serve_once(tmp_path)
    assert result.returncode == 1
    assert "model `mnist` version 1: cannot parse" in result.stderr
    (version / "saved_model.pb").unlink()
    result = serve_once(tmp_path)
    assert result.returncode == 1
    assert "SavedModel file does not exist at:" in result.stderr


def test_usage_errors_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model_server", "serve", "--rest-port", "70000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "usage:" in result.stderr


def test_model_config_file_with_version_labels(trained_model_base: Path, tmp_path: Path) -> None:
    shutil.copytree(trained_model_base / "mnist", tmp_path / "digits")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        '  config { name: "digits" base_path: "digits" model_platform: "tensorflow"\n'
        "    model_version_policy { specific { versions: 1 } }\n"
        '    version_labels { key: "stable" value: 1 } }\n'
        "}\n"
    )
    server = start_model_server(tmp_path, model_config_file=config)
    try:
        import urllib.request

        request = urllib.request.Request(
            server.rest_url + "/v1/models/digits/labels/stable:predict", data=BODY, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            assert len(json.loads(response.read())["predictions"][0]) == 10
        assert server.ready_line.endswith("models=digits:1")
    finally:
        assert server.stop() == 0
