"""The gateway's own copy of TF Serving's protos: wire-compatible, TensorFlow-free, clash-free.

TensorFlow's real classes are used only in subprocesses (importing them imports TensorFlow).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool, text_format

from gateway.tfserving import protos

ROOT = Path(__file__).resolve().parent.parent

_REAL_MODULES = """
import json, sys
from google.protobuf import descriptor_pool, message_factory, text_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
    get_model_status_pb2, inference_pb2, model_service_pb2, predict_pb2,
    prediction_service_pb2, regression_pb2)
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from google.rpc import error_details_pb2, status_pb2
"""


def _run(code: str, stdin: str = "") -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _tensor(message: Any) -> Any:
    message.dtype = protos.DataType.DT_FLOAT
    message.tensor_shape.dim.add().size = 2
    message.tensor_shape.dim.add(size=1, name="one")
    message.float_val.extend([1.5, -2.25])
    return message


def _example(example: Any) -> Any:
    features = example.features.feature
    features["age"].int64_list.value.extend([42, -1])
    features["note"].bytes_list.value.append("café".encode())
    features["score"].float_list.value.append(0.5)
    return example


def _spec(spec: Any) -> Any:
    spec.name = "mnist"
    spec.version.value = 3
    spec.signature_name = "serving_default"
    return spec


def _predict_request() -> Any:
    request = protos.PredictRequest()
    _spec(request.model_spec)
    _tensor(request.inputs["x"])
    note = request.inputs["note"]
    note.dtype = protos.DataType.DT_STRING
    note.string_val.extend([b"hello", b"\xff\x00raw"])
    request.output_filter.append("scores")
    return request


def _predict_response() -> Any:
    response = protos.PredictResponse()
    _spec(response.model_spec)
    _tensor(response.outputs["scores"])
    ints = response.outputs["classes"]
    ints.dtype = protos.DataType.DT_INT64
    ints.int64_val.extend([7, 2**40])
    return response


def _classification_request() -> Any:
    request = protos.ClassificationRequest()
    request.model_spec.name = "iris"
    request.model_spec.version_label = "stable"
    _example(request.input.example_list.examples.add())
    return request


def _classification_response() -> Any:
    response = protos.ClassificationResponse()
    _spec(response.model_spec)
    classes = response.result.classifications.add().classes
    classes.add(label="setosa", score=0.75)
    classes.add(label="virginica", score=0.25)
    return response


def _regression_request() -> Any:
    request = protos.RegressionRequest()
    _spec(request.model_spec)
    context = request.input.example_list_with_context
    _example(context.context)
    _example(context.examples.add())
    return request


def _regression_response() -> Any:
    response = protos.RegressionResponse()
    _spec(response.model_spec)
    response.result.regressions.add(value=3.25)
    return response


def _multi_inference_request() -> Any:
    request = protos.MultiInferenceRequest()
    task = request.tasks.add(method_name="tensorflow/serving/classify")
    _spec(task.model_spec)
    request.tasks.add(method_name="tensorflow/serving/regress").model_spec.name = "iris"
    _example(request.input.example_list.examples.add())
    return request


def _multi_inference_response() -> Any:
    response = protos.MultiInferenceResponse()
    first = response.results.add()
    _spec(first.model_spec)
    first.classification_result.classifications.add().classes.add(label="a", score=1.0)
    second = response.results.add()
    second.regression_result.regressions.add(value=-1.0)
    return response


def _signature_def_map() -> Any:
    signatures = protos.SignatureDefMap()
    signature = signatures.signature_def["serving_default"]
    signature.method_name = "tensorflow/serving/predict"
    tensor_info = signature.inputs["x"]
    tensor_info.name = "serving_default_x:0"
    tensor_info.dtype = protos.DataType.DT_FLOAT
    tensor_info.tensor_shape.dim.add(size=-1)
    tensor_info.tensor_shape.dim.add(size=4)
    signature.outputs["y"].name = "StatefulPartitionedCall:0"
    signature.outputs["y"].tensor_shape.unknown_rank = True
    return signatures


def _metadata_request() -> Any:
    request = protos.GetModelMetadataRequest()
    _spec(request.model_spec)
    request.metadata_field.append("signature_def")
    return request


def _metadata_response() -> Any:
    response = protos.GetModelMetadataResponse()
    _spec(response.model_spec)
    response.metadata["signature_def"].Pack(_signature_def_map())
    return response


def _status_request() -> Any:
    request = protos.GetModelStatusRequest()
    request.model_spec.name = "mnist"
    request.model_spec.version.value = 1
    return request


def _status_response() -> Any:
    response = protos.GetModelStatusResponse()
    version = response.model_version_status.add(version=1)
    version.state = version.AVAILABLE
    version.status.error_code = 0
    failed = response.model_version_status.add(version=2, state=version.END)
    failed.status.error_code = 5
    failed.status.error_message = "not found"
    return response


def _error_info() -> Any:
    info = protos.ErrorInfo(reason="LEGAL_RESTRICTION", domain="jurisgate.example")
    info.metadata["decision_id"] = "d-1"
    info.metadata["rules"] = "eu-ai-act,gdpr-art-9"
    return info


def _help() -> Any:
    return protos.Help(links=[protos.Help.Link(description="Art. 9", url="https://x.test/9")])


def _localized() -> Any:
    return protos.LocalizedMessage(locale="en-US", message="Refused: special-category data")


def _rpc_status() -> Any:
    status = protos.Status(code=7, message="denied")
    for detail in (_error_info(), _help(), _localized()):
        status.details.add().Pack(detail)
    return status


def _tensor_proto() -> Any:
    tensor = protos.TensorProto(dtype=protos.DataType.DT_HALF, half_val=[15360])
    tensor.tensor_shape.dim.add(size=1)
    tensor.version_number = 1
    return tensor


def _example_message() -> Any:
    return _example(protos.Example())


CASES: dict[str, Callable[[], Any]] = {
    "tensorflow.serving.PredictRequest": _predict_request,
    "tensorflow.serving.PredictResponse": _predict_response,
    "tensorflow.serving.ClassificationRequest": _classification_request,
    "tensorflow.serving.ClassificationResponse": _classification_response,
    "tensorflow.serving.RegressionRequest": _regression_request,
    "tensorflow.serving.RegressionResponse": _regression_response,
    "tensorflow.serving.MultiInferenceRequest": _multi_inference_request,
    "tensorflow.serving.MultiInferenceResponse": _multi_inference_response,
    "tensorflow.serving.GetModelMetadataRequest": _metadata_request,
    "tensorflow.serving.GetModelMetadataResponse": _metadata_response,
    "tensorflow.serving.SignatureDefMap": _signature_def_map,
    "tensorflow.serving.GetModelStatusRequest": _status_request,
    "tensorflow.serving.GetModelStatusResponse": _status_response,
    "tensorflow.serving.ModelSpec": lambda: _spec(protos.ModelSpec()),
    "tensorflow.TensorProto": _tensor_proto,
    "tensorflow.TensorShapeProto": lambda: protos.TensorShapeProto(
        dim=[protos.TensorShapeProto.Dim(size=3, name="batch")]
    ),
    "tensorflow.Example": _example_message,
    "tensorflow.Features": lambda: _example_message().features,
    "google.rpc.Status": _rpc_status,
    "google.rpc.ErrorInfo": _error_info,
    "google.rpc.Help": _help,
    "google.rpc.LocalizedMessage": _localized,
}

_REAL_ROUND_TRIP = _REAL_MODULES + textwrap.dedent(
    """
    pool = descriptor_pool.Default()
    out = {}
    for name, case in json.load(sys.stdin).items():
        real_class = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
        from_text = text_format.Parse(case["text"], real_class())
        from_ours = real_class.FromString(bytes.fromhex(case["wire"]))
        out[name] = {
            "wire": from_text.SerializeToString(deterministic=True).hex(),
            # Unknown fields are not printed: a field our schema numbers differently shows.
            "same": text_format.MessageToString(from_ours) == text_format.MessageToString(
                from_text
            ),
        }
    out["DataType"] = dict(types_pb2.DataType.items())
    services = {}
    for module in (prediction_service_pb2, model_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            services[service.full_name] = {
                m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods
            }
    out["services"] = services
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def real_answers() -> dict[str, Any]:
    """What TensorFlow's own classes make of every case (one subprocess for all of them)."""
    cases = {
        name: {
            # An empty pool: an `Any` stays packed even when this process has imported the
            # type it holds (`google.rpc.error_details_pb2`, by other tests).
            "text": text_format.MessageToString(
                build(), descriptor_pool=descriptor_pool.DescriptorPool()
            ),
            "wire": build().SerializeToString(deterministic=True).hex(),
        }
        for name, build in CASES.items()
    }
    answers: dict[str, Any] = json.loads(_run(_REAL_ROUND_TRIP, json.dumps(cases)))
    return answers


@pytest.mark.parametrize("name", sorted(CASES))
def test_messages_are_wire_compatible_with_tensorflow(
    name: str, real_answers: dict[str, Any]
) -> None:
    ours = CASES[name]()
    assert ours.DESCRIPTOR.full_name == name
    wire = ours.SerializeToString(deterministic=True)
    answer = real_answers[name]
    # TensorFlow's class, built from the same text, serializes to the same bytes ...
    assert bytes.fromhex(answer["wire"]) == wire
    # ... reads our bytes as the same message ...
    assert answer["same"]
    # ... and we read its bytes back to an equal message.
    back = type(ours).FromString(bytes.fromhex(answer["wire"]))
    assert back == ours
    assert text_format.MessageToString(back) == text_format.MessageToString(ours)


def test_data_type_enum_matches_tensorflow(real_answers: dict[str, Any]) -> None:
    assert dict(protos.DataType.items()) == real_answers["DataType"]


def test_service_methods_match_tensorflow_serving(real_answers: dict[str, Any]) -> None:
    ours = {
        service: {
            name: [
                method.request_class.DESCRIPTOR.full_name,
                method.response_class.DESCRIPTOR.full_name,
            ]
            for name, method in protos.methods(service).items()
        }
        for service in (protos.PREDICTION_SERVICE, protos.MODEL_SERVICE)
    }
    assert ours == real_answers["services"]
    predict = protos.methods(protos.PREDICTION_SERVICE)["Predict"]
    assert predict.path == "/tensorflow.serving.PredictionService/Predict"
    assert predict.request_class is protos.PredictRequest
    status = protos.methods(protos.MODEL_SERVICE)["GetModelStatus"]
    assert status.path == "/tensorflow.serving.ModelService/GetModelStatus"


def test_pool_is_not_the_default_pool() -> None:
    from google.protobuf import descriptor_pool

    assert protos.POOL is not descriptor_pool.Default()
    assert protos.PredictRequest.DESCRIPTOR.file.pool is protos.POOL


def test_importing_the_protos_does_not_import_tensorflow() -> None:
    code = textwrap.dedent(
        """
        import sys
        from gateway.tfserving import protos
        request = protos.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].string_val.append(b"v")
        assert protos.PredictRequest.FromString(request.SerializeToString()) == request
        print(sorted(m for m in sys.modules if m.split(".")[0] in
                     ("tensorflow", "tensorflow_serving", "numpy")))
        """
    )
    assert _run(code).strip() == "[]"


@pytest.mark.parametrize("ours_first", [False, True], ids=["tensorflow-first", "ours-first"])
def test_loads_beside_tensorflows_own_protos(ours_first: bool) -> None:
    load_ours = "from gateway.tfserving import protos\n"
    code = (load_ours if ours_first else "") + _REAL_MODULES
    code += ("" if ours_first else load_ours) + textwrap.dedent(
        """
        ours = protos.PredictRequest()
        ours.model_spec.name = "m"
        ours.inputs["x"].dtype = protos.DataType.DT_STRING
        ours.inputs["x"].string_val.append(b"v")
        real = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
        assert real.inputs["x"].string_val == [b"v"], real
        assert type(real) is not type(ours)
        status = protos.Status(code=7)
        status.details.add().Pack(protos.ErrorInfo(reason="R"))
        parsed = status_pb2.Status.FromString(status.SerializeToString())
        info = error_details_pb2.ErrorInfo()
        assert parsed.details[0].Unpack(info) and info.reason == "R"
        print("ok")
        """
    )
    assert _run(code).strip().endswith("ok")


def test_committed_descriptor_set_is_up_to_date() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools/generate_tfserving_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
