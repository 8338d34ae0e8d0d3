"""`jurisgate up` as a newcomer runs it: the README's requests get the documented answers.

The command runs as a subprocess in a temporary work directory (with the session's trained
model copied in, so it does not train again), the README's three example requests are sent
with a plain HTTP client, then it is stopped with SIGTERM and the audit log it wrote is
verified offline.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from tests.plugins.gateway import free_port

ROOT = Path(__file__).resolve().parents[2]


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.mark.slow
def test_up_serves_the_readme_examples_and_leaves_a_verifiable_log(
    tmp_path: Path, trained_model_base: Path
) -> None:
    work = tmp_path / "work"
    shutil.copytree(trained_model_base, work / "models")
    port, grpc_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "gateway", "up", "--workdir", str(work), "--port", str(port),
        "--grpc-port", str(grpc_port), "--admin-port", str(free_port()),
        "--backend-port", str(free_port()), "--backend-grpc-port", str(free_port()),
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Ctrl-C stops both" in line:
                break
        banner = "".join(output)
        assert "Ctrl-C stops both" in banner, banner
        assert f"http://127.0.0.1:{port}/v1/models/mnist" in banner
        assert "loopback only, behind the gateway" in banner
        assert f"127.0.0.1:{grpc_port}" in banner and "grpc_predict.py" in banner
        base = f"http://127.0.0.1:{port}/v1/models/mnist:predict"
        purpose = {"X-Purpose": "document_classification"}
        digit = (ROOT / "examples" / "digit.json").read_bytes()
        noted = (ROOT / "examples" / "digit-with-note.json").read_bytes()

        status, headers, body = _post(base, digit, purpose)
        assert status == 200, body
        (prediction,) = json.loads(body)["predictions"]
        assert len(prediction) == 10 and abs(sum(prediction) - 1.0) < 1e-3
        assert headers["X-Decision-Id"]

        status, _, body = _post(base, noted, purpose)
        assert status == 200, body
        note = json.loads(body)["predictions"][0]["note"]
        assert note == "call [EMAIL] or [PHONE] about this form"

        status, headers, body = _post(base, digit, {**purpose, "X-Geo-Country": "IR"})
        assert status == 451
        problem = json.loads(body)
        assert problem["rules"] == ["sanctions-us-iran"]
        assert problem["legal_basis"][0]["ref"] == "31 CFR Part 560"
        assert 'rel="blocked-by"' in headers["Link"]

        # The gRPC front door, with TF Serving's client stubs (the README's example script).
        grpc_call = [sys.executable, str(ROOT / "examples" / "grpc_predict.py"),
                     f"127.0.0.1:{grpc_port}"]  # fmt: skip
        masked = subprocess.run(
            [*grpc_call, "--note", "mail anna@example.de"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert masked.returncode == 0, masked.stdout + masked.stderr
        assert "the model read the note as: mail [EMAIL]" in masked.stdout
        refused = subprocess.run(
            [*grpc_call, "--metadata", "x-geo-country=IR"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stdout, refused.stdout

        key = (work / "demo-api-key").read_text().strip()
        status, _, _ = _post(base, digit, {**purpose, "X-Api-Key": key})
        assert status == 200
        status, _, _ = _post(base, digit, {**purpose, "X-Api-Key": "wrong"})
        assert status == 401

        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        output.append(rest)
        assert proc.returncode == 0, "".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    keyring = work / "keys" / "trusted-keys.json"
    assert cli_main(["audit", "verify", str(work / "audit"), "--trusted-keys", str(keyring)]) == 0
