"""The gRPC front door end to end: TF Serving's own client stubs through the gateway to the
embedded model server, with the same decisions, masking and records as REST.

The client side uses `tensorflow_serving`'s generated stubs (this test process may import
TensorFlow; the gateway code never does, which `test_the_gateway_never_imports_tensorflow`
checks in a process of its own).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_status import rpc_status

from gateway.cli import main as cli_main
from gateway.request.tenants import hash_api_key
from tests.plugins.gateway import GatewayHarness, free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "key-grpc-tenant-0123456789abcdef"
PURPOSE = (("x-purpose", "document_classification"),)

pytestmark = pytest.mark.slow


def _config(tmp: Path, model_server: Any, *, grpc_target: str | None = None) -> Path:
    tenants = {
        "tenants": [
            {"id": "local", "established_in": "DE",
             "registered_purposes": ["document_classification"],
             "source_networks": ["127.0.0.0/8"], "mask_pd_in_free_text": True},
            {"id": "unlicensed", "api_key_hashes": [hash_api_key(KEY)], "established_in": "DE",
             "registered_purposes": ["document_classification"]},
        ]
    }  # fmt: skip
    (tmp / "tenants.yaml").write_text(yaml.safe_dump(tenants))
    config: dict[str, Any] = {
        "deployment": "gw.grpc",
        "instance": "g1",
        "admin": {"enabled": False},
        "grpc": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "policies": {"paths": [str(ROOT / "policies")], "watch": False},
        "tenants": {"file": "tenants.yaml"},
        "models": [{"id": "mnist", "kind": "classifier", "output": "labels"}],
        "licences": [{"id": "LIC-MNIST", "model": "mnist", "licensee": "local",
                      "kind": "contract", "commercial_use": "allowed",
                      "valid_from": "2025-01-01", "valid_until": "2030-12-31"}],
        "backends": [{"id": "local", "url": model_server.rest_url, "region": "DE",
                      "models": ["mnist"],
                      "grpc": grpc_target or model_server.grpc_target}],
        "network": {"geoip": {"entries": [{"cidr": "127.0.0.0/8", "region": "DE"}]}},
        "timeouts": {"connect_s": 1.0, "read_s": 5.0},
    }  # fmt: skip
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def gateway(
    tmp_path: Path,
    model_server: Any,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
) -> AsyncIterator[GatewayHarness]:
    yield await gateway_factory(_config(tmp_path, model_server))


def _stubs(target: str) -> tuple[grpc.aio.Channel, Any, Any]:
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.aio.insecure_channel(target)
    return (
        channel,
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )


def _predict_request(signature: str = "serving_default", note: bytes | None = None) -> Any:
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = signature
    image = np.zeros((1, 28, 28, 1), dtype=np.float32)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image))
    if note is not None:
        request.inputs["note"].CopyFrom(tf.make_tensor_proto([note]))
    return request


async def _call(method: Any, request: Any, metadata: tuple[tuple[str, str], ...] = PURPOSE) -> Any:
    call = method(request, metadata=metadata, timeout=30)
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        return error, dict(await call.initial_metadata() or ())
    return response, dict(await call.initial_metadata() or ())


async def test_predict_and_metadata_match_tf_serving(
    gateway: GatewayHarness, model_server: Any
) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    gateway_channel, gateway_predict, gateway_models = _stubs(
        f"127.0.0.1:{gateway.runtime.grpc_port}"
    )
    direct_channel, direct_predict, direct_models = _stubs(model_server.grpc_target)
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = "mnist"
    metadata_request.metadata_field.append("signature_def")
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "mnist"
    unknown = _predict_request()
    unknown.model_spec.name = "nope"
    cases = [
        ("Predict", _predict_request(), gateway_predict.Predict, direct_predict.Predict),
        ("Predict unknown model", unknown, gateway_predict.Predict, direct_predict.Predict),
        ("GetModelMetadata", metadata_request, gateway_predict.GetModelMetadata,
         direct_predict.GetModelMetadata),
        ("GetModelStatus", status_request, gateway_models.GetModelStatus,
         direct_models.GetModelStatus),
    ]  # fmt: skip
    try:
        for name, request, through, direct in cases:
            got, initial = await _call(through, request)
            want, _ = await _call(direct, request)
            assert "x-decision-id" in initial, name
            if isinstance(want, grpc.aio.AioRpcError):
                assert isinstance(got, grpc.aio.AioRpcError), name
                assert (got.code(), got.details()) == (want.code(), want.details()), name
            else:
                assert got.SerializeToString() == want.SerializeToString(), name
    finally:
        await gateway_channel.close()
        await direct_channel.close()
    routes = [r.get("route") for r in gateway.audit_records() if r["type"] == "decision"]
    assert "GRPC /tensorflow.serving.PredictionService/Predict" in routes


async def test_a_note_is_masked_before_the_model_reads_it(gateway: GatewayHarness) -> None:
    channel, predict, _ = _stubs(f"127.0.0.1:{gateway.runtime.grpc_port}")
    try:
        note = "call anna.schmidt\u200b@example.de or +49 30 23125000".encode()
        response, initial = await _call(predict.Predict, _predict_request("annotated", note))
    finally:
        await channel.close()
    assert not isinstance(response, grpc.aio.AioRpcError), response
    echoed = response.outputs["note"].string_val[0].decode()
    assert echoed == "call [EMAIL] or [PHONE]"
    records = gateway.records_for(initial["x-decision-id"])
    decision = next(r for r in records if r["type"] == "decision")
    assert decision["decision"] == "transform"
    assert {"type": "email", "path": "inputs.note.string_val[0]"} in (
        decision["detected_personal_data"]
    )
    assert [r["type"] for r in records] == ["decision", "outcome"]


async def test_refusals_carry_rich_error_details(gateway: GatewayHarness) -> None:
    from google.rpc import error_details_pb2

    channel, predict, _ = _stubs(f"127.0.0.1:{gateway.runtime.grpc_port}")
    try:
        sanctioned, initial = await _call(
            predict.Predict, _predict_request(), (*PURPOSE, ("x-geo-country", "IR"))
        )
        unlicensed, _ = await _call(predict.Predict, _predict_request(),
                                    (*PURPOSE, ("x-api-key", KEY)))  # fmt: skip
        wrong_key, _ = await _call(predict.Predict, _predict_request(),
                                   (*PURPOSE, ("x-api-key", "wrong")))  # fmt: skip
    finally:
        await channel.close()
    assert isinstance(sanctioned, grpc.aio.AioRpcError)
    assert sanctioned.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(sanctioned)
    assert status is not None
    kinds = {detail.type_url.rsplit("/", 1)[1]: detail for detail in status.details}
    info = error_details_pb2.ErrorInfo()
    kinds["google.rpc.ErrorInfo"].Unpack(info)
    assert info.reason == "LEGAL_RESTRICTION" and info.domain == "gw.grpc"
    assert info.metadata["decision_id"] == initial["x-decision-id"]
    assert "sanctions" in info.metadata["rules"]
    help_links = error_details_pb2.Help()
    kinds["google.rpc.Help"].Unpack(help_links)
    assert any("SANCTIONS" in link.description for link in help_links.links)
    assert "google.rpc.LocalizedMessage" in kinds

    assert isinstance(unlicensed, grpc.aio.AioRpcError)
    assert unlicensed.code() == grpc.StatusCode.PERMISSION_DENIED
    licence_status = rpc_status.from_call(unlicensed)
    assert licence_status is not None
    info = error_details_pb2.ErrorInfo()
    next(d for d in licence_status.details if d.type_url.endswith("ErrorInfo")).Unpack(info)
    assert info.reason == "LICENCE_RESTRICTION"

    assert isinstance(wrong_key, grpc.aio.AioRpcError)
    assert wrong_key.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_backend_down_is_unavailable_and_recorded(
    tmp_path: Path,
    model_server: Any,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
) -> None:
    harness = await gateway_factory(
        _config(tmp_path, model_server, grpc_target=f"127.0.0.1:{free_port()}")
    )
    channel, predict, _ = _stubs(f"127.0.0.1:{harness.runtime.grpc_port}")
    try:
        error, initial = await _call(predict.Predict, _predict_request())
    finally:
        await channel.close()
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    records = harness.records_for(initial["x-decision-id"])
    assert [r["type"] for r in records] == ["decision", "outcome"]
    assert records[1]["upstream_error"] == "unavailable" and records[1]["status"] == 503


async def test_the_log_verifies_after_grpc_calls(
    gateway: GatewayHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel, predict, _ = _stubs(f"127.0.0.1:{gateway.runtime.grpc_port}")
    try:
        await _call(predict.Predict, _predict_request())
        await _call(predict.Predict, _predict_request(), (*PURPOSE, ("x-geo-country", "IR")))
    finally:
        await channel.close()
    code = cli_main(
        ["audit", "verify", str(gateway.audit_dir), "--trusted-keys", str(gateway.trusted_keys)]
    )
    out = capsys.readouterr()
    assert code == 0, out.out + out.err


def test_the_gateway_never_imports_tensorflow() -> None:
    script = textwrap.dedent(
        """
        import sys
        import gateway.edge.app, gateway.edge.grpc_server, gateway.edge.grpc_upstream
        import gateway.pipeline.grpc_steps
        from gateway.tfserving.protos import PredictRequest
        PredictRequest.FromString(PredictRequest().SerializeToString())
        bad = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
        bad += sorted(m for m in sys.modules if m.startswith("model_server"))
        print(",".join(bad))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "", result.stdout


class _SlowBackend:
    """A gRPC backend that answers every call after `delay_s` with an empty message."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        import asyncio

        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await asyncio.sleep(self.delay_s)
            return b""

        backend = self

        class Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                backend.calls.append(details.method)
                return grpc.unary_unary_rpc_method_handler(answer)

        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((Handlers(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


async def test_a_slow_backend_is_deadline_exceeded_and_recorded(
    tmp_path: Path,
    model_server: Any,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
) -> None:
    slow = _SlowBackend(delay_s=3.0)
    await slow.start()
    try:
        config = _config(tmp_path, model_server, grpc_target=f"127.0.0.1:{slow.port}")
        data = yaml.safe_load(config.read_text())
        data["timeouts"] = {"connect_s": 1.0, "read_s": 0.5}
        config.write_text(yaml.safe_dump(data))
        harness = await gateway_factory(config)
        channel, predict, _ = _stubs(f"127.0.0.1:{harness.runtime.grpc_port}")
        try:
            error, initial = await _call(predict.Predict, _predict_request())
        finally:
            await channel.close()
    finally:
        await slow.stop()
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert slow.calls == ["/tensorflow.serving.PredictionService/Predict"]
    records = harness.records_for(initial["x-decision-id"])
    assert records[-1]["upstream_error"] == "timeout" and records[-1]["status"] == 504


async def test_grpc_drop_in_for_an_allowed_tenant(
    gateway: GatewayHarness, model_server: Any
) -> None:
    """Every call of the list gets the same status, message and response as direct."""
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        inference_pb2,
        regression_pb2,
    )

    def predict(**changes: Any) -> Any:
        request = _predict_request(changes.pop("signature", "serving_default"))
        for key, value in changes.items():
            if key == "version":
                request.model_spec.version.value = value
            elif key == "label":
                request.model_spec.version_label = value
            elif key == "output_filter":
                request.output_filter.append(value)
            elif key == "drop_input":
                del request.inputs[value]
        return request

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "mnist"
    classify.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "mnist"
    regress.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add()
    task.model_spec.name = "mnist"
    task.method_name = "tensorflow/serving/classify"
    multi.input.example_list.examples.add()
    metadata_bad = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_bad.model_spec.name = "mnist"
    metadata_bad.metadata_field.append("not_a_field")
    no_name = predict()
    no_name.model_spec.name = ""

    gateway_channel, gateway_predict, _ = _stubs(f"127.0.0.1:{gateway.runtime.grpc_port}")
    direct_channel, direct_predict, _ = _stubs(model_server.grpc_target)
    cases = [
        ("Predict", predict()),
        ("Predict", predict(signature="annotated", drop_input="images")),
        ("Predict", predict(signature="nope")),
        ("Predict", predict(version=1)),
        ("Predict", predict(version=99)),
        ("Predict", predict(label="stable")),
        ("Predict", predict(output_filter="probabilities")),
        ("Predict", predict(output_filter="nope")),
        ("Predict", no_name),
        ("Classify", classify),
        ("Regress", regress),
        ("MultiInference", multi),
        ("GetModelMetadata", metadata_bad),
    ]
    mismatches = []
    try:
        for method, request in cases:
            got, _ = await _call(getattr(gateway_predict, method), request)
            want, _ = await _call(getattr(direct_predict, method), request)
            if isinstance(want, grpc.aio.AioRpcError) or isinstance(got, grpc.aio.AioRpcError):
                same = (
                    isinstance(got, grpc.aio.AioRpcError)
                    and isinstance(want, grpc.aio.AioRpcError)
                    and (got.code(), got.details()) == (want.code(), want.details())
                )
            else:
                same = got.SerializeToString() == want.SerializeToString()
            if not same:
                mismatches.append(f"{method} {request}: gateway {got!r} direct {want!r}")
    finally:
        await gateway_channel.close()
        await direct_channel.close()
    assert not mismatches, "\n".join(mismatches)


async def test_a_client_cannot_reload_the_backends_configuration(
    gateway: GatewayHarness,
) -> None:
    from tensorflow_serving.apis import model_management_pb2

    channel, _, models = _stubs(f"127.0.0.1:{gateway.runtime.grpc_port}")
    try:
        error, _ = await _call(
            models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest()
        )
    finally:
        await channel.close()
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "grpc.crt", directory / "grpc.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_grpc_over_tls(
    tmp_path: Path,
    model_server: Any,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
) -> None:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    backend = _SlowBackend(delay_s=0.0)
    await backend.start()
    try:
        cert, key = _self_signed(tmp_path)
        config = _config(tmp_path, model_server, grpc_target=f"127.0.0.1:{backend.port}")
        data = yaml.safe_load(config.read_text())
        data["grpc"]["host"] = "localhost"
        data["grpc"]["tls"] = {"cert_file": str(cert), "key_file": str(key)}
        config.write_text(yaml.safe_dump(data))
        harness = await gateway_factory(config)
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        target = f"localhost:{harness.runtime.grpc_port}"
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "mnist"
        async with grpc.aio.secure_channel(target, credentials) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            response = await stub.GetModelStatus(request, metadata=PURPOSE, timeout=30)
        assert response == get_model_status_pb2.GetModelStatusResponse()
        async with grpc.aio.insecure_channel(target) as plain:
            stub = model_service_pb2_grpc.ModelServiceStub(plain)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetModelStatus(request, metadata=PURPOSE, timeout=5)
    finally:
        await backend.stop()
    assert backend.calls == ["/tensorflow.serving.ModelService/GetModelStatus"]


async def test_a_malformed_message_is_refused_and_audited(gateway: GatewayHarness) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.runtime.grpc_port}")
    try:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(
            b"\xff\xff\xff\xff not a protobuf", metadata=PURPOSE, timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        initial = dict(await call.initial_metadata() or ())
    finally:
        await channel.close()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (record,) = gateway.records_for(initial["x-decision-id"])
    assert record["decision"] == "reject" and record["status"] == 400
    assert record["route"] == "GRPC /tensorflow.serving.PredictionService/Predict"
