"""The real `jurisgate serve` process against hostile clients: malformed requests leave no
secret in its log, and slow or silent clients are answered 408 (where HTTP allows) and closed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.gateway.test_operations import _serve_config
from tests.gateway.test_pipeline import KEY
from tests.plugins.gateway import StubBackend, free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET_EMAIL = "wilhelmina.secret@example.org"
SECRET_IBAN = "DE89370400440532013000"
PREDICT = "/v1/models/mnist:predict"

#: Each malformed class the HTTP parser or the gateway refuses, carrying the secrets.
MALFORMED: list[tuple[str, bytes]] = [
    ("bad-method", f"G\x01T /{KEY} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
    ("bad-version", f"POST {PREDICT}?k={KEY} HTTP/9.Z\r\nHost: x\r\n\r\n".encode()),
    ("bad-target", f"POST /\x7f{SECRET_EMAIL} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
    (
        "bad-header-char",
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\x01\r\n\r\n".encode(),
    ),
    (
        "header-without-colon",
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\n{SECRET_EMAIL} {KEY}\r\n\r\n".encode(),
    ),
    (
        "huge-header",
        (
            f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nX-Note: {SECRET_EMAIL}{'A' * 20000}\r\n\r\n"
        ).encode(),
    ),
    (
        "bad-content-length",
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 5{SECRET_IBAN}\r\n\r\n".encode(),
    ),
    (
        "bad-chunk-size",
        (
            f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\nzz{SECRET_EMAIL}\r\n"
        ).encode(),
    ),
    (
        "both-lengths",
        (
            f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            f"Transfer-Encoding: chunked\r\nX-Api-Key: {KEY}\r\n\r\n0\r\n\r\n"
        ).encode(),
    ),
    ("not-http", f"{SECRET_EMAIL} {KEY} {SECRET_IBAN}\r\n\r\n".encode()),
    (
        "invalid-json",
        (
            f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\n"
            f"Content-Length: {len(SECRET_EMAIL) + 3}\r\n\r\n{{x{SECRET_EMAIL}:"
        ).encode(),
    ),
    (
        "bad-age-header",
        (
            f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\n"
            f"X-Purpose: document_classification\r\n"
            f"X-Data-Subject-Age: 1{SECRET_IBAN}\r\nContent-Length: 2\r\n\r\n{{}}"
        ).encode(),
    ),
]


def _exchange(port: int, payload: bytes, *, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    backend = StubBackend("be", free_port())
    loop = asyncio.new_event_loop()
    loop.run_until_complete(backend.start())
    config_path = _serve_config(tmp_path, backend.port, ROOT / "policies")
    config = yaml.safe_load(config_path.read_text())
    config["clients"] = {
        "header_timeout_s": 1.0,
        "body_idle_timeout_s": 1.0,
        "body_timeout_s": 3.0,
        "keepalive_timeout_s": 2.0,
    }
    config_path.write_text(yaml.safe_dump(config))
    port = config["listen"]["port"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
         "--log-level", "DEBUG"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        loop.run_until_complete(backend.stop())
        loop.close()


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    return err.decode("utf-8", "replace")


@pytest.mark.slow
def test_malformed_requests_leave_no_secret_in_the_log(
    gateway_process: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = gateway_process
    answers = {name: _exchange(port, payload) for name, payload in MALFORMED}
    for name, answer in answers.items():
        assert answer.startswith(b"HTTP/1.1 4") or answer == b"", (name, answer[:200])
    log = _stderr(proc)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines, log
    for secret in (KEY, SECRET_EMAIL, SECRET_IBAN, "wilhelmina"):
        assert secret not in log, f"{secret!r} in the log:\n{log}"
    # No client address either (the gateway's own listening address is announced once).
    about_clients = [line["msg"] for line in lines if "ready on" not in line["msg"]]
    assert not [msg for msg in about_clients if "127.0.0.1" in msg], log
    # The parser's refusals are still reported, without their data.
    assert any(line["logger"].startswith("aiohttp") for line in lines), log


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    started = time.monotonic()
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks), time.monotonic() - started


@pytest.mark.slow
def test_slow_and_silent_clients_are_closed(
    gateway_process: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, _ = gateway_process
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\n"
        "X-Purpose: document_classification\r\n"
    )

    # Nothing at all: closed without an answer after the header timeout.
    with _connect(port) as sock:
        answer, took = _read_until_closed(sock)
    assert answer == b"" and took < 5

    # Half a request head, then silence: 408, closed.
    with _connect(port) as sock:
        sock.sendall(head.encode())
        answer, took = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert took < 5

    # A head trickled a byte at a time: the deadline counts from the first byte.
    with _connect(port) as sock:
        started = time.monotonic()
        try:
            for byte in head.encode():
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, _ = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 6

    # A body shorter than its Content-Length: 408 problem after the idle timeout, closed.
    with _connect(port) as sock:
        sock.sendall(f'{head}Content-Length: 100\r\n\r\n{{"instances"'.encode())
        answer, took = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"body_timeout" in answer and took < 5

    # A chunked body without its last chunk: the same.
    with _connect(port) as sock:
        sock.sendall(f'{head}Transfer-Encoding: chunked\r\n\r\n5\r\n{{"ins\r\n'.encode())
        answer, took = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert took < 5

    # A kept-alive connection left idle after a complete exchange: closed quietly.
    with _connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        answer, took = _read_until_closed(sock)
    assert answer == b"" and took < 5
