"""The twelve legal scenarios again, over gRPC: the same fixtures, decisions, records and
masking as over REST.

Each scenario's REST request becomes the PredictRequest a gRPC client would send: every
instance field a string tensor of one element (a `{"b64": ...}` field as its bytes), every
header a metadata entry of the same name in lower case. The gateway runs the scenario
configuration with its gRPC front door on, in front of gRPC stub backends at the fixtures'
backends; the TCP peer of each scenario is given as the REST harness gives it (a test-only
seam that stands for the connection's address).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

import gateway.edge.grpc_server
from gateway.tfserving.protos import DataType, PredictRequest, PredictResponse
from tests.plugins.gateway import EventReceiver, GatewayHarness
from tests.test_scenarios_http import (
    COMPARED_TYPES,
    FIXTURES,
    POLICIES,
    SCENARIOS,
    SPEC,
    _on_free_ports,
    _substitute,
    _time,
)

PREDICT = "/tensorflow.serving.PredictionService/Predict"
TEST_PEER = "x-test-peer"
_STRING = DataType.Value("DT_STRING")
_FLOAT = DataType.Value("DT_FLOAT")
#: The gRPC code of each HTTP status the scenarios expect.
CODES = {
    200: grpc.StatusCode.OK,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    451: grpc.StatusCode.FAILED_PRECONDITION,
}


def _classifier_response() -> bytes:
    """The fixtures' classifier answer as a PredictResponse (classes and scores tensors)."""
    (prediction,) = FIXTURES["backend_stub_responses"]["classifier"]["predictions"]
    response = PredictResponse()
    classes = response.outputs["classes"]
    classes.dtype = _STRING
    classes.tensor_shape.dim.add().size = len(prediction["classes"])
    classes.string_val.extend(c.encode() for c in prediction["classes"])
    scores = response.outputs["scores"]
    scores.dtype = _FLOAT
    scores.tensor_shape.dim.add().size = len(prediction["scores"])
    scores.float_val.extend(prediction["scores"])
    return bytes(response.SerializeToString())


class GrpcStub:
    """A TF Serving gRPC stub backend: records what it received, answers with the fixture."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.received: list[tuple[str, bytes, dict[str, str]]] = []
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        stub = self

        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            stub.received.append((stub.method, request, metadata))
            return stub.answer

        class Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                stub.method = details.method
                return grpc.unary_unary_rpc_method_handler(call)

        self.method = ""
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((Handlers(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


class GrpcWorld:
    """The gateway (gRPC on), its gRPC stub backends, the third-party recipient, the clock."""

    def __init__(self) -> None:
        self.harness: GatewayHarness | None = None
        self.stubs: dict[str, GrpcStub] = {}
        self.receiver: EventReceiver | None = None
        self.now = _time(SPEC["default_now"])

    async def start(self, tmp: Path, factory: Callable[..., Awaitable[GatewayHarness]]) -> None:
        config, ports = _on_free_ports(tmp, POLICIES)
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        data["grpc"] = {"enabled": True, "host": "127.0.0.1", "port": 0}
        for backend in data["backends"]:
            stub = GrpcStub(_classifier_response())
            await stub.start()
            self.stubs[backend["id"]] = stub
            backend["grpc"] = f"127.0.0.1:{stub.port}"
        config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        recipient = FIXTURES["third_party_recipients"][0]
        port = int(re.search(r":(\d+)", recipient["url"].split("//", 1)[1]).group(1))  # type: ignore[union-attr]
        self.receiver = EventReceiver(ports[port])
        await self.receiver.start()
        self.harness = await factory(config, clock=lambda: self.now)

    async def stop(self) -> None:
        for stub in self.stubs.values():
            await stub.stop()
        if self.receiver is not None:
            await self.receiver.stop()


@pytest.fixture
async def grpc_world(
    tmp_path: Path,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[GrpcWorld]:
    def peer_from_metadata(context: Any, headers: Any) -> str | None:
        peer = headers.pop(TEST_PEER, None)
        return (
            str(peer) if peer is not None else gateway.edge.grpc_server.peer_address(context.peer())
        )

    monkeypatch.setattr(gateway.edge.grpc_server, "_client_peer", peer_from_metadata)
    world = GrpcWorld()
    try:
        # Inside the try: a start that fails half-way still stops the stub servers it
        # started (a gRPC server left running breaks every later test's shutdown).
        await world.start(tmp_path, gateway_factory)
        yield world
    finally:
        await world.stop()


def _predict_request(model: str, body: dict[str, Any]) -> Any:
    request = PredictRequest()
    request.model_spec.name = model
    (instance,) = body["instances"]
    for name, value in instance.items():
        tensor = request.inputs[name]
        tensor.dtype = _STRING
        tensor.tensor_shape.dim.add().size = 1
        data = base64.b64decode(value["b64"]) if isinstance(value, dict) else value.encode()
        tensor.string_val.append(data)
    return request


def _tensor_strings(request_bytes: bytes) -> dict[str, list[str]]:
    message = PredictRequest.FromString(request_bytes)
    return {
        name: [v.decode("utf-8", "replace") for v in tensor.string_val]
        for name, tensor in message.inputs.items()
    }


def _grpc_path(rest_path: str) -> str:
    """`instances[0].note` -> `inputs.note.string_val[0]`."""
    match = re.fullmatch(r"instances\[(\d+)\]\.(\w+)", rest_path)
    assert match is not None, rest_path
    return f"inputs.{match.group(2)}.string_val[{match.group(1)}]"


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
async def test_scenario_over_grpc(scenario_id: str, grpc_world: GrpcWorld) -> None:
    scenario = SCENARIOS[scenario_id]
    harness, receiver = grpc_world.harness, grpc_world.receiver
    assert harness is not None and receiver is not None
    grpc_world.now = _time(scenario.get("now", SPEC["default_now"]))
    request = _substitute(scenario["request"])
    expect = scenario["expect"]
    model = request["path"].split("/v1/models/", 1)[1].split(":", 1)[0]
    message = _predict_request(model, request["body"])
    metadata = [(k.lower(), str(v)) for k, v in request["headers"].items()]
    metadata.append((TEST_PEER, request["peer_ip"]))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{harness.runtime.grpc_port}")
    try:
        call = channel.unary_unary(PREDICT)(
            message.SerializeToString(), metadata=metadata, timeout=30
        )
        error: grpc.aio.AioRpcError | None = None
        try:
            await call
        except grpc.aio.AioRpcError as failed:
            error = failed
        code = await call.code()
        initial = dict(await call.initial_metadata() or ())
        trailing = dict(await call.trailing_metadata() or ())
    finally:
        await channel.close()
    assert code == CODES[expect["status"]], error.details() if error else code
    decision_id = initial["x-decision-id"]

    # Which backend received the call, and what the model would read.
    receivers = [sid for sid, stub in grpc_world.stubs.items() if stub.received]
    expected_backend = expect["backend"]
    assert receivers == ([expected_backend] if expected_backend else [])
    strings: list[str] = []
    if expected_backend:
        (received,) = grpc_world.stubs[expected_backend].received
        method, forwarded, sent_metadata = received
        assert method == PREDICT and sent_metadata.get("x-decision-id") == decision_id
        tensors = _tensor_strings(forwarded)
        strings = [s for values in tensors.values() for s in values]
        if expect.get("forwarded_equals_request"):
            assert forwarded == message.SerializeToString()
    for needle in expect.get("forwarded_must_contain", []):
        assert any(needle in s for s in strings), (needle, strings)
    for needle in expect.get("forwarded_must_not_contain", []):
        assert not any(needle in s for s in strings), (needle, strings)
    for digits in expect.get("forwarded_must_not_contain_digits", []):
        squashed = [re.sub(r"[^0-9A-Za-z]", "", s) for s in strings]
        assert not any(digits in s for s in squashed), (digits, squashed)
    for name, value in expect.get("response_headers", {}).items():
        assert value in trailing.get(name.lower(), ""), (name, trailing)

    # The audit trail is the one REST writes, with gRPC's paths.
    records = harness.records_for(decision_id)
    (record,) = [r for r in records if r["type"] == "decision"]
    assert record["decision"] == expect["decision"]
    assert record["status"] == expect["status"]
    assert record.get("backend") == expected_backend
    assert record["route"] == f"GRPC {PREDICT}"
    for basis in expect.get("legal_basis", []):
        pair = {"regime": basis["regime"], "ref": basis["ref"]}
        assert pair in record["legal_basis"], (pair, record["legal_basis"])
    if "detected_personal_data" in expect:
        reported = {
            (d["type"], d["path"])
            for d in record.get("detected_personal_data", [])
            if d["type"] in COMPARED_TYPES
        }
        wanted = {(d["type"], _grpc_path(d["path"])) for d in expect["detected_personal_data"]}
        assert reported == wanted
    audit = expect.get("audit", {})
    serialised = json.dumps(records, ensure_ascii=False)
    if "caller_region" in audit:
        assert record["caller_region"] == audit["caller_region"]
    if "client_ip" in audit:
        ip = audit["client_ip"]
        key = harness.runtime.masking_key
        assert record["client_ip_mac"].endswith(
            hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()
        )
        assert ip not in serialised
    if "retention_days_min" in audit:
        assert record["retention_days"] >= audit["retention_days_min"]
    if "storage_region" in audit:
        assert record["storage_region"] == audit["storage_region"]
    for needle in audit.get("must_not_contain", []):
        assert needle not in serialised

    # Denials: the rule, the decision id and the legal bases in the rich error details.
    if expect["decision"] == "deny":
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        assert error is not None
        status = rpc_status.from_call(error)
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        help_links = error_details_pb2.Help()
        for detail in status.details:
            if detail.type_url.endswith("ErrorInfo"):
                detail.Unpack(info)
            elif detail.type_url.endswith("Help"):
                detail.Unpack(help_links)
        assert info.metadata["decision_id"] == decision_id
        described = " ".join(link.description for link in help_links.links)
        for basis in expect.get("legal_basis", []):
            assert basis["ref"] in described, (basis, described)
        remedy = expect.get("problem", {}).get("remedy_mentions")
        if remedy:
            assert (
                remedy in error.details()
                or remedy in json.dumps(dict(info.metadata))
                or any(remedy in d.value.decode("utf-8", "replace") for d in status.details)
            )

    events = expect.get("third_party_events", {})
    if events and harness.runtime.sinks is not None:
        await harness.runtime.sinks.close()
    for recipient, count in events.items():
        assert len(receiver.events) == count, recipient
