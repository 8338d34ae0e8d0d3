"""The gRPC API (PredictionService, ModelService) against a running embedded server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from tests.plugins.model_server import RunningModelServer

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def channel(model_server: RunningModelServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(model_server.grpc_target) as opened:
        yield opened


def predict_request(model: str = "mnist", count: int = 2, **spec: Any) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    images = np.random.default_rng(0).random((count, 28, 28, 1), dtype=np.float32)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return request


def rpc_error(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value.code(), caught.value.details()


def test_predict(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request(), timeout=30)
    assert response.model_spec.name == "mnist"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert len(response.outputs["probabilities"].float_val) == 20  # AsProtoField layout


def test_predict_errors(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    assert rpc_error(stub.Predict, predict_request("nope")) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )
    assert rpc_error(stub.Predict, predict_request(version=9)) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(mnist, 9)",
    )
    assert rpc_error(stub.Predict, predict_request(version_label="canary")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: canary",
    )
    assert rpc_error(stub.Predict, predict_request(signature_name="nope")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    )
    renamed = predict_request()
    renamed.inputs["x"].CopyFrom(renamed.inputs["images"])
    del renamed.inputs["images"]
    assert rpc_error(stub.Predict, renamed) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias not found in signature: x. Inputs expected to be in the set {images}.",
    )
    empty = predict_pb2.PredictRequest()
    empty.model_spec.name = "mnist"
    code, message = rpc_error(stub.Predict, empty)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("input size does not match signature: 0!=1")
    filtered = predict_request()
    filtered.output_filter.append("logits")
    code, message = rpc_error(stub.Predict, filtered)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("output tensor alias not found in signature: logits")
    wrong_dtype = predict_request()
    wrong_dtype.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28, 1), np.int32)))
    code, message = rpc_error(stub.Predict, wrong_dtype)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "Type mismatch" in message


def test_metadata(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mnist"
    response = stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.inputs["images"].name == "serving_default_images:0"
    assert serving.outputs["probabilities"].name == "StatefulPartitionedCall_1:0"
    missing = get_model_metadata_pb2.GetModelMetadataRequest()
    missing.model_spec.name = "mnist"
    assert rpc_error(stub.GetModelMetadata, missing) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )


def test_model_status(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mnist"
    response = stub.GetModelStatus(request, timeout=30)
    [status] = response.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    request.model_spec.name = "nope"
    assert rpc_error(stub.GetModelStatus, request) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )


def test_classify_on_a_predict_only_model(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "mnist"
    code, message = rpc_error(stub.Classify, request)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("No classification inputs found in SignatureDef")


def test_regress_on_a_predict_only_model(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "mnist"
    code, message = rpc_error(stub.Regress, request)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("No regression inputs found in SignatureDef: inputs {")
    request.model_spec.signature_name = "annotated"  # two inputs
    assert rpc_error(stub.Regress, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected one input Tensor.",
    )
    request.model_spec.signature_name = "nope"
    assert rpc_error(stub.Regress, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "No signature was found with the name: nope",
    )
    assert rpc_error(stub.Regress, regression_pb2.RegressionRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    )


def multi_request(*tasks: tuple[str, str, str]) -> Any:
    """A MultiInferenceRequest with one example and (model, signature, method) tasks."""
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(1.0)
    return request


def test_multi_inference_on_a_predict_only_model(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    # serving_default has one input and one output, neither named as classify/regress need.
    code, message = rpc_error(stub.MultiInference, multi_request(("mnist", "", CLASSIFY)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("No classification inputs found in SignatureDef: inputs {")
    code, message = rpc_error(
        stub.MultiInference, multi_request(("mnist", "serving_default", REGRESS))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("No regression inputs found in SignatureDef: inputs {")
    assert rpc_error(stub.MultiInference, multi_request(("mnist", "annotated", CLASSIFY))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected one input Tensor.",
    )
    # The task's method_name decides, not the signature's: predict is not a task kind.
    assert rpc_error(
        stub.MultiInference, multi_request(("mnist", "", "tensorflow/serving/predict"))
    ) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict",
    )
    assert rpc_error(stub.MultiInference, multi_request(("mnist", "nope", CLASSIFY))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Requested signature not found in model graph: nope",
    )


def test_multi_inference_servable_lookup(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    # No task: the servable of an empty ModelSpec is looked up first.
    assert rpc_error(stub.MultiInference, inference_pb2.MultiInferenceRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ModelSpec has no name specified.",
    )
    assert rpc_error(stub.MultiInference, multi_request(("nope", "", CLASSIFY))) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )
    pinned = multi_request(("mnist", "", CLASSIFY))
    pinned.tasks[0].model_spec.version.value = 9
    assert rpc_error(stub.MultiInference, pinned) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(mnist, 9)",
    )


def test_empty_or_missing_model_spec(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    assert rpc_error(stub.Predict, predict_request("")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ModelSpec has no name specified.",
    )
    assert rpc_error(stub.Predict, predict_pb2.PredictRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    )
