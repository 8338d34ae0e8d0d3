"""TF Serving's gRPC API (PredictionService, ModelService) on grpc.aio.

The servicers use the `tensorflow-serving-api` stubs. Errors carry TF Serving's canonical
codes and messages; messages longer than 1024 characters are cut and marked
"...TRUNCATED" as `grpc_status_util.cc` does.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from model_server.core import ServingCore
from model_server.servables import LoadedServable
from model_server.status import Code, ServingError

__all__ = ["PredictionService", "ModelService", "start_grpc_server", "tensor_to_array"]

_MESSAGE_LIMIT = 1024
_SIGNATURE_DEF = "signature_def"


async def _abort(context: grpc.aio.ServicerContext, error: ServingError) -> NoReturn:
    message = error.message
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + "...TRUNCATED"
    await context.abort(error.code.grpc_code, message)
    raise AssertionError("unreachable")


def _version_of(spec: Any) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return int(spec.version.value), None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _resolve(core: ServingCore, spec: Any) -> LoadedServable:
    version, label = _version_of(spec)
    return core.registry.resolve(spec.name, version, label)


def tensor_to_array(proto: Any) -> np.ndarray:
    """TensorProto -> ndarray (Tensor::FromProto); raises ValueError if malformed."""
    import tensorflow as tf

    return np.asarray(tf.make_ndarray(proto))


def array_to_tensor(array: np.ndarray) -> Any:
    """ndarray -> TensorProto using the typed value fields (Tensor::AsProtoField)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape]
    )
    flat = array.reshape(-1)
    if array.dtype == np.float32:
        return tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=flat.tolist()
        )
    if array.dtype == np.float64:
        return tensor_pb2.TensorProto(
            dtype=types_pb2.DT_DOUBLE, tensor_shape=shape, double_val=flat.tolist()
        )
    import tensorflow as tf

    return tf.make_tensor_proto(array)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Predict, GetModelMetadata, Classify and Regress."""

    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def Predict(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        try:
            servable = _resolve(self.core, request.model_spec)
            signature = self.core.grpc_signature(servable, request.model_spec.signature_name)
            inputs: dict[str, np.ndarray] = {}
            for alias in sorted(request.inputs):
                if alias in signature.inputs:
                    try:
                        inputs[alias] = tensor_to_array(request.inputs[alias])
                    except (ValueError, TypeError):
                        raise ServingError(
                            Code.INVALID_ARGUMENT, f"tensor parsing error: {alias}"
                        ) from None
                else:
                    inputs[alias] = np.zeros(0, np.float32)
            seen: set[str] = set()
            for alias in request.output_filter:
                if alias not in signature.outputs:
                    raise ServingError(
                        Code.INVALID_ARGUMENT,
                        f"output tensor alias not found in signature: {alias} Outputs expected "
                        f"to be in the set {{{','.join(sorted(signature.outputs))}}}.",
                    )
                if alias in seen:
                    raise ServingError(
                        Code.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}"
                    )
                seen.add(alias)
            outputs = await self.core.predict(
                servable, signature, inputs, list(request.output_filter) or None
            )
        except ServingError as error:
            await _abort(context, error)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(array_to_tensor(np.asarray(value)))
        return response

    async def GetModelMetadata(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        try:
            if not request.HasField("model_spec"):
                raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            if not request.metadata_field:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            for metadata_field in request.metadata_field:
                if metadata_field != _SIGNATURE_DEF:
                    # StrCat of a printf-style literal, as in get_model_metadata_impl.cc.
                    raise ServingError(
                        Code.INVALID_ARGUMENT,
                        f"Metadata field %s is not supported{metadata_field}",
                    )
            servable = _resolve(self.core, request.model_spec)
        except ServingError as error:
            await _abort(context, error)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.meta_graph.signature_def.items():
            signatures.signature_def[key].CopyFrom(signature_def)
        response.metadata[_SIGNATURE_DEF].Pack(signatures)
        return response

    async def Classify(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        await self._classify_regress(request, context, "classify")

    async def Regress(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        await self._classify_regress(request, context, "regress")

    async def _classify_regress(
        self, request: Any, context: grpc.aio.ServicerContext, method: str
    ) -> NoReturn:
        try:
            if not request.HasField("model_spec"):
                raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            servable = _resolve(self.core, request.model_spec)
            self.core.classify_regress_error(servable, request.model_spec.signature_name, method)
        except ServingError as error:
            await _abort(context, error)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """GetModelStatus (HandleReloadConfigRequest is not offered)."""

    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def GetModelStatus(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        from tensorflow.core.protobuf import error_codes_pb2

        try:
            if not request.HasField("model_spec"):
                raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            version, _label = _version_of(request.model_spec)
            rows = self.core.registry.status(request.model_spec.name, version)
        except ServingError as error:
            await _abort(context, error)
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state, failure in rows:
            entry = response.model_version_status.add()
            entry.version = number
            entry.state = state.value
            entry.status.SetInParent()
            if failure is not None:
                entry.status.error_code = error_codes_pb2.Code.Value(failure.code.name)
                entry.status.error_message = failure.message
        return response


async def start_grpc_server(core: ServingCore, host: str, port: int) -> tuple[Any, int]:
    """Serve both services on host:port (0 picks a free port); returns (server, port)."""
    options = [
        ("grpc.max_receive_message_length", 2**31 - 1),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server, bound
