"""Fixtures for tests that need a trained model or a running embedded model server.

* `trained_model_base` (session): trains a small model once (one short epoch on a subset
  of the digits) with `python -m model_server train`; returns the model base directory
  holding `mnist/1/`. Treat it as read-only; copy it to change it.
* `model_server` (session): `python -m model_server serve` on that base, on free ports,
  batching on, stats at `STATS_PATH`; yields a `RunningModelServer` and stops it at the
  end of the session. Do not change its model base.
* `start_model_server(model_base, *flags)`: start another server (e.g. with other flags
  or a private copy of the model base); the caller stops it with `.stop()`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STATS_PATH = "/monitoring/model_server/stats"
MODEL_NAME = "mnist"


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass
class RunningModelServer:
    """A `python -m model_server serve` child process that printed its ready line."""

    process: subprocess.Popen[str]
    model_base: Path
    rest_port: int
    grpc_port: int
    ready_line: str
    stderr_lines: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API, e.g. http://127.0.0.1:8501."""
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        """gRPC target for `grpc.insecure_channel`, e.g. 127.0.0.1:8500."""
        return f"127.0.0.1:{self.grpc_port}"

    def stats(self) -> dict[str, object]:
        """The server's counters (model calls, batch sizes, requests)."""
        with urllib.request.urlopen(self.rest_url + STATS_PATH, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for reader in self.readers:
            reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return self.process.returncode


def serve_command(
    model_base: Path, *flags: str, model_config_file: Path | None = None
) -> list[str]:
    """The command line `start_model_server` runs."""
    source = (
        ["--model-config-file", str(model_config_file)]
        if model_config_file is not None
        else ["--model-base", str(model_base)]
    )
    return [
        sys.executable,
        "-m",
        "model_server",
        "serve",
        *source,
        "--host",
        "127.0.0.1",
        "--rest-port",
        "0",
        "--grpc-port",
        "0",
        "--stats-path",
        STATS_PATH,
        *flags,
    ]


def start_model_server(
    model_base: Path,
    *flags: str,
    model_config_file: Path | None = None,
    timeout: float = 120.0,
) -> RunningModelServer:
    """Start a server on free ports and wait for its ready line.

    With `model_config_file` the server reads that TF Serving model config instead of
    scanning `model_base` (which is then only recorded on the returned object).
    """
    process = subprocess.Popen(
        serve_command(model_base, *flags, model_config_file=model_config_file),
        cwd=REPO,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr_lines: list[str] = []
    lines: queue.Queue[str] = queue.Queue()
    stdout, stderr = process.stdout, process.stderr

    def read_stdout() -> None:
        for line in stdout:
            lines.put(line)

    readers = [
        threading.Thread(target=lambda: stderr_lines.extend(stderr), daemon=True),
        threading.Thread(target=read_stdout, daemon=True),
    ]
    for reader in readers:
        reader.start()

    def fail(message: str) -> RuntimeError:
        process.kill()
        process.wait()
        for reader in readers:
            reader.join(timeout=5)
        stdout.close()
        stderr.close()
        return RuntimeError(message + "".join(stderr_lines))

    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise fail("model server printed no ready line: ") from None
    if not line.startswith("ready "):
        raise fail(f"unexpected first line {line!r}: ")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return RunningModelServer(
        process,
        model_base,
        int(fields["rest_port"]),
        int(fields["grpc_port"]),
        line.strip(),
        stderr_lines,
        readers,
    )


@pytest.fixture(scope="session")
def trained_model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model base with `mnist/1/` trained once per session (a few seconds)."""
    base = tmp_path_factory.mktemp("model-base")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_server",
            "train",
            "--model-base",
            str(base),
            "--epochs",
            "1",
            "--max-train-examples",
            "300",
            "--version",
            "1",
            "--licence",
            "Apache-2.0",
        ],
        cwd=REPO,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"training failed:\n{result.stdout}\n{result.stderr}")
    return base


@pytest.fixture(scope="session")
def model_server(trained_model_base: Path) -> Iterator[RunningModelServer]:
    """One embedded server for the session (batching on), stopped at the end."""
    server = start_model_server(trained_model_base)
    try:
        yield server
    finally:
        server.stop()
