"""The gRPC upstream client: the embedded model server's gRPC port, and stand-in backends
that fail, stall or recover on cue.

Requests are built with the gateway's own message classes (gateway/tfserving/protos): this
test process, like the gateway, never imports TensorFlow for them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest
import yaml

from gateway.config.loader import ConfigError, load_config
from gateway.edge.grpc_upstream import IDEMPOTENT_PATHS, METHOD_PATHS, GrpcUpstreams
from gateway.pipeline.upstream import GrpcUpstreamError
from gateway.request.routing import BackendSpec
from gateway.tfserving import protos
from tests.plugins.gateway import GatewayHarness

ROOT = Path(__file__).resolve().parents[2]
PREDICT = f"/{protos.PREDICTION_SERVICE}/Predict"
METADATA = f"/{protos.PREDICTION_SERVICE}/GetModelMetadata"
STATUS = f"/{protos.MODEL_SERVICE}/GetModelStatus"


def backend(address: str) -> BackendSpec:
    return BackendSpec(id="be-1", url="http://127.0.0.1:1", region="DE", models={}, grpc=address)


def predict_request(model: str = "mnist", count: int = 2) -> Any:
    request = protos.PredictRequest()
    request.model_spec.name = model
    images = np.random.default_rng(0).random((count, 28, 28, 1), dtype=np.float32)
    tensor = request.inputs["images"]
    tensor.dtype = protos.DataType.DT_FLOAT
    for size in images.shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.tensor_content = images.tobytes()
    return request


def status_request(model: str = "mnist") -> Any:
    request = protos.GetModelStatusRequest()
    request.model_spec.name = model
    return request


@pytest.fixture
async def upstreams() -> AsyncIterator[GrpcUpstreams]:
    async with GrpcUpstreams(connect_timeout=2.0, read_timeout=30.0) as pool:
        yield pool


# ------------------------------------------------------------------ the embedded model server


async def test_predict_status_and_metadata(model_server: Any, upstreams: GrpcUpstreams) -> None:
    target = backend(model_server.grpc_target)
    reply = await upstreams.call_message(target, PREDICT, predict_request())
    assert reply.code is grpc.StatusCode.OK
    response = reply.message()
    assert response.model_spec.name == "mnist" and response.model_spec.version.value == 1
    probabilities = np.array(response.outputs["probabilities"].float_val).reshape(2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    status = (await upstreams.call_message(target, STATUS, status_request())).message()
    version = status.model_version_status[0]
    assert (version.version, version.State.Name(version.state)) == (1, "AVAILABLE")

    metadata_request = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata_request.model_spec.name = "mnist"
    metadata = (await upstreams.call_message(target, METADATA, metadata_request)).message()
    signatures = protos.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    assert "serving_default" in signatures.signature_def
    # One pooled channel for every call to the address.
    assert upstreams.channel(target) is upstreams.channel(backend(model_server.grpc_target))


async def test_the_backends_own_errors_are_replies(
    model_server: Any, upstreams: GrpcUpstreams
) -> None:
    target = backend(model_server.grpc_target)
    reply = await upstreams.call_message(target, PREDICT, predict_request("nope"))
    assert reply.code is grpc.StatusCode.NOT_FOUND
    assert reply.details == "Servable not found for request: Latest(nope)"
    assert reply.payload is None
    with pytest.raises(ValueError, match="NOT_FOUND"):
        reply.message()


async def test_only_tf_serving_methods_are_called(
    model_server: Any, upstreams: GrpcUpstreams
) -> None:
    target = backend(model_server.grpc_target)
    for path in (
        "/grpc.health.v1.Health/Check",
        f"/{protos.MODEL_SERVICE}/HandleReloadConfigRequest",
        "Predict",
    ):
        with pytest.raises(ValueError, match="not a TF Serving method"):
            await upstreams.call(target, path, b"")
    assert set(METHOD_PATHS) == {
        PREDICT,
        METADATA,
        STATUS,
        f"/{protos.PREDICTION_SERVICE}/Classify",
        f"/{protos.PREDICTION_SERVICE}/Regress",
        f"/{protos.PREDICTION_SERVICE}/MultiInference",
    }
    assert IDEMPOTENT_PATHS == {STATUS, METADATA}


async def test_the_app_owns_one_pool_and_closes_it(
    tmp_path: Path,
    model_server: Any,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
) -> None:
    harness = await gateway_factory(_config(tmp_path, model_server))
    pool = harness.runtime.grpc_upstream
    assert pool is not None
    spec = harness.runtime.snapshot.backends[0]
    assert spec.grpc == model_server.grpc_target
    reply = await pool.call_message(spec, STATUS, status_request())
    assert reply.code is grpc.StatusCode.OK
    channel = pool.channel(spec)
    await pool.close()
    assert channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN
    with pytest.raises(RuntimeError, match="closed"):
        pool.channel(spec)


def _config(tmp: Path, model_server: Any, grpc_address: str | None = None) -> Path:
    (tmp / "tenants.yaml").write_text(yaml.safe_dump({"tenants": []}))
    config = {
        "deployment": "gw.grpc",
        "instance": "g1",
        "admin": {"enabled": False},
        "policies": {"paths": [str(ROOT / "policies")], "watch": False},
        "tenants": {"file": "tenants.yaml"},
        "backends": [
            {
                "id": "local",
                "url": model_server.rest_url,
                "grpc": grpc_address or model_server.grpc_target,
                "region": "DE",
                "models": ["mnist"],
            }
        ],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_reads_and_checks_grpc_addresses(tmp_path: Path) -> None:
    class Server:
        rest_url = "http://127.0.0.1:8501"
        grpc_target = "127.0.0.1:8500"

    config = load_config(_config(tmp_path, Server()))
    assert config.backends[0].grpc == "127.0.0.1:8500"
    for bad in ("http://127.0.0.1:8500", "127.0.0.1", "host:port"):
        with pytest.raises(ConfigError):
            load_config(_config(tmp_path, Server(), grpc_address=bad))


# ------------------------------------------------------------------ stand-in backends


class StandIn:
    """A gRPC server answering TF Serving's paths from a script of behaviours."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.failures_left = 0
        self.delay = 0.0
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        def handler(path: str) -> grpc.RpcMethodHandler:
            async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                self.calls[path] = self.calls.get(path, 0) + 1
                if self.failures_left:
                    self.failures_left -= 1
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
                await asyncio.sleep(self.delay)
                return protos.GetModelStatusResponse().SerializeToString()

            return grpc.unary_unary_rpc_method_handler(answer)

        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    service, {name: handler(f"/{service}/{name}") for name in names}
                )
                for service, names in (
                    (protos.MODEL_SERVICE, ["GetModelStatus"]),
                    (protos.PREDICTION_SERVICE, ["Predict", "GetModelMetadata"]),
                )
            ]
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    server = StandIn()
    await server.start()
    yield server
    await server.stop()


async def test_idempotent_calls_are_retried_when_unavailable(stand_in: StandIn) -> None:
    target = backend(f"127.0.0.1:{stand_in.port}")
    async with GrpcUpstreams(read_timeout=5, retry_backoff=0.01) as pool:
        stand_in.failures_left = 2
        reply = await pool.call(target, STATUS, b"")
        assert reply.code is grpc.StatusCode.OK
        assert stand_in.calls[STATUS] == 3
        stand_in.failures_left = 1
        with pytest.raises(GrpcUpstreamError) as caught:
            await pool.call(target, PREDICT, b"")
        assert stand_in.calls[PREDICT] == 1  # never retried
        error = caught.value
        assert (error.kind, error.status, error.code) == (
            "unavailable",
            503,
            grpc.StatusCode.UNAVAILABLE,
        )
        assert error.details == "warming up"  # the backend's own text is kept
        assert error.message == "Backend be-1 is unavailable"  # no address in client text
        stand_in.failures_left = 5
        with pytest.raises(GrpcUpstreamError):
            await pool.call(target, METADATA, b"")
        assert stand_in.calls[METADATA] == 3  # one try and two retries


async def test_a_slow_backend_is_a_timeout_and_not_retried(stand_in: StandIn) -> None:
    target = backend(f"127.0.0.1:{stand_in.port}")
    stand_in.delay = 2.0
    async with GrpcUpstreams(read_timeout=0.3) as pool:
        started = time.monotonic()
        with pytest.raises(GrpcUpstreamError) as caught:
            await pool.call(target, STATUS, b"")
        assert time.monotonic() - started < 1.5
    assert (caught.value.kind, caught.value.status) == ("timeout", 504)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert stand_in.calls[STATUS] == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_backend_that_is_down_is_unavailable_at_once() -> None:
    target = backend(f"127.0.0.1:{_closed_port()}")
    async with GrpcUpstreams(connect_timeout=5, retry_backoff=0.01) as pool:
        started = time.monotonic()
        with pytest.raises(GrpcUpstreamError) as caught:
            await pool.call(target, STATUS, b"")
        assert time.monotonic() - started < 2.5  # refused, not waited out
    assert (caught.value.kind, caught.value.status, caught.value.code) == ("unavailable", 503, None)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port whose connections are queued by the kernel but never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_a_connection_that_never_completes_is_a_connect_timeout(
    silent_listener: int,
) -> None:
    target = backend(f"127.0.0.1:{silent_listener}")
    async with GrpcUpstreams(connect_timeout=0.3, read_timeout=30) as pool:
        started = time.monotonic()
        with pytest.raises(GrpcUpstreamError) as caught:
            await pool.call(target, PREDICT, b"")
        assert time.monotonic() - started < 2
    assert (caught.value.kind, caught.value.status) == ("timeout", 504)
    assert "connect timeout" in caught.value.detail


async def test_a_backend_that_comes_back_is_used_again(stand_in: StandIn) -> None:
    port = stand_in.port
    target = backend(f"127.0.0.1:{port}")
    async with GrpcUpstreams(read_timeout=5, retry_backoff=0.01) as pool:
        assert (await pool.call(target, STATUS, b"")).code is grpc.StatusCode.OK
        await stand_in.stop()
        with pytest.raises(GrpcUpstreamError):
            await pool.call(target, STATUS, b"")
        revived = grpc.aio.server()
        revived.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    protos.MODEL_SERVICE,
                    {"GetModelStatus": grpc.unary_unary_rpc_method_handler(_empty_status)},
                )
            ]
        )
        assert revived.add_insecure_port(f"127.0.0.1:{port}") == port
        await revived.start()
        try:
            # The channel reconnects within its longest backoff (2 s).
            deadline = time.monotonic() + 5
            while True:
                try:
                    reply = await pool.call(target, STATUS, b"")
                    break
                except GrpcUpstreamError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert reply.code is grpc.StatusCode.OK
        finally:
            await revived.stop(None)


async def _empty_status(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b""
