"""A start that fails half-way closes what it had opened, and says why without a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.edge.app import run_gateway
from gateway.edge.reload import SnapshotError
from tests.gateway.test_pipeline import _write_config
from tests.plugins.gateway import free_port, make_signing_key, start_gateway


async def test_a_failed_start_releases_the_audit_log(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        config = _write_config(
            tmp_path, free_port(), free_port(), grpc={"enabled": True, "port": busy}
        )
        with pytest.raises(SnapshotError, match=f"cannot listen on 127.0.0.1:{busy}"):
            await start_gateway(config, tmp_path / "gw")
    # The audit log (an exclusive lock on its directory), the backend pool and the sinks
    # were opened before the gRPC listener failed; the same log opens again at once.
    config = _write_config(tmp_path, free_port(), free_port())
    harness, runner = await start_gateway(config, tmp_path / "gw")
    try:
        assert harness.runtime.audit.healthy
    finally:
        await harness.session.close()
        await runner.cleanup()


async def test_serve_exits_3_when_the_grpc_port_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        key = make_signing_key(tmp_path / "keys", "gw.test")
        config = _write_config(
            tmp_path, free_port(), free_port(),
            grpc={"enabled": True, "port": busy},
            listen={"host": "127.0.0.1", "port": free_port()},
            audit={"directory": str(tmp_path / "audit"), "signing_key": str(key)},
        )  # fmt: skip
        assert await run_gateway(config) == 3
    out = capsys.readouterr().out
    assert "grpc: cannot listen" in out and "Traceback" not in out
