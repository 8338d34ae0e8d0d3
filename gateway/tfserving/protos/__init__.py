"""TF Serving's and TensorFlow's protobuf messages, without importing TensorFlow.

Importing `tensorflow_serving.apis.*_pb2` imports the whole `tensorflow` package, which the
gateway process must never do. This module instead loads the compiled schemas committed in
`tfserving.binpb` (see NOTICE and tools/generate_tfserving_protos.py) into a descriptor pool
of its own and builds message classes from it. Being a separate pool, it cannot clash with
TensorFlow's registrations in a process (a test, a client) that loads both; messages are
wire-compatible with TensorFlow's classes, not the same Python types.

Loading costs a few milliseconds and happens on the first import of this module, never on
the REST path.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

__all__ = [
    "MODEL_SERVICE",
    "POOL",
    "PREDICTION_SERVICE",
    "ClassificationRequest",
    "ClassificationResponse",
    "DataType",
    "ErrorInfo",
    "Example",
    "Feature",
    "Features",
    "GetModelMetadataRequest",
    "GetModelMetadataResponse",
    "GetModelStatusRequest",
    "GetModelStatusResponse",
    "Help",
    "LocalizedMessage",
    "MultiInferenceRequest",
    "MultiInferenceResponse",
    "PredictRequest",
    "PredictResponse",
    "RegressionRequest",
    "RegressionResponse",
    "RpcMethod",
    "ModelSpec",
    "SignatureDefMap",
    "Status",
    "TensorProto",
    "TensorShapeProto",
    "message_class",
    "methods",
]

PREDICTION_SERVICE: Final = "tensorflow.serving.PredictionService"
MODEL_SERVICE: Final = "tensorflow.serving.ModelService"


def _load_pool() -> Any:
    files_set = descriptor_pb2.FileDescriptorSet.FromString(
        files(__package__).joinpath("tfserving.binpb").read_bytes()
    )
    pool = descriptor_pool.DescriptorPool()
    # The set is written dependencies first, so each file finds what it imports.
    for file in files_set.file:
        pool.Add(file)
    return pool


#: The gateway's own descriptor pool holding TF Serving's files (never the default pool).
POOL: Final[Any] = _load_pool()


def message_class(full_name: str) -> Any:
    """The message class for a fully qualified name in the gateway's pool."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


@dataclass(frozen=True, slots=True)
class RpcMethod:
    """One gRPC method of TF Serving's services, as its descriptor defines it.

    `path` is the HTTP/2 `:path` gRPC uses (`/tensorflow.serving.PredictionService/Predict`).
    """

    service: str
    name: str
    path: str
    request_class: Any
    response_class: Any


def methods(service: str) -> dict[str, RpcMethod]:
    """Every method of `service` (a fully qualified service name), by method name."""
    descriptor = POOL.FindServiceByName(service)
    return {
        method.name: RpcMethod(
            service=service,
            name=method.name,
            path=f"/{service}/{method.name}",
            request_class=message_factory.GetMessageClass(method.input_type),
            response_class=message_factory.GetMessageClass(method.output_type),
        )
        for method in descriptor.methods
    }


PredictRequest: Final = message_class("tensorflow.serving.PredictRequest")
PredictResponse: Final = message_class("tensorflow.serving.PredictResponse")
ClassificationRequest: Final = message_class("tensorflow.serving.ClassificationRequest")
ClassificationResponse: Final = message_class("tensorflow.serving.ClassificationResponse")
RegressionRequest: Final = message_class("tensorflow.serving.RegressionRequest")
RegressionResponse: Final = message_class("tensorflow.serving.RegressionResponse")
MultiInferenceRequest: Final = message_class("tensorflow.serving.MultiInferenceRequest")
MultiInferenceResponse: Final = message_class("tensorflow.serving.MultiInferenceResponse")
GetModelMetadataRequest: Final = message_class("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse: Final = message_class("tensorflow.serving.GetModelMetadataResponse")
SignatureDefMap: Final = message_class("tensorflow.serving.SignatureDefMap")
GetModelStatusRequest: Final = message_class("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse: Final = message_class("tensorflow.serving.GetModelStatusResponse")
ModelSpec: Final = message_class("tensorflow.serving.ModelSpec")
TensorProto: Final = message_class("tensorflow.TensorProto")
TensorShapeProto: Final = message_class("tensorflow.TensorShapeProto")
Example: Final = message_class("tensorflow.Example")
Features: Final = message_class("tensorflow.Features")
Feature: Final = message_class("tensorflow.Feature")
Status: Final = message_class("google.rpc.Status")
ErrorInfo: Final = message_class("google.rpc.ErrorInfo")
Help: Final = message_class("google.rpc.Help")
LocalizedMessage: Final = message_class("google.rpc.LocalizedMessage")

#: TensorFlow's `DataType` enum, used like a generated one (`DataType.DT_FLOAT` is 1).
DataType: Final[Any] = EnumTypeWrapper(POOL.FindEnumTypeByName("tensorflow.DataType"))
