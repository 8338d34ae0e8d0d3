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

from model_server.core import CLASSIFY_METHOD, REGRESS_METHOD, ServingCore
from model_server.monitoring import RequestCounts
from model_server.servables import DEFAULT_SIGNATURE, LoadedServable
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
    """ServerCore::GetServableHandle (ServableRequestFromModelSpec checks the name first)."""
    if not spec.name:
        raise ServingError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
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
    """Predict, GetModelMetadata, Classify, Regress and MultiInference."""

    def __init__(self, core: ServingCore, request_counts: RequestCounts | None = None) -> None:
        self.core = core
        #: `request_count` per (model, status), shared with REST; None: not counted.
        self.request_counts = request_counts

    def _count(self, request: Any, code: Code) -> None:
        # PredictionServiceImpl records Predict, Classify and Regress (not GetModelMetadata
        # or MultiInference) under the request's model name (prediction_service_impl.cc).
        counts = self.request_counts
        if counts is not None:
            key = (request.model_spec.name, code.name)
            counts[key] = counts.get(key, 0) + 1

    async def Predict(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        try:
            if not request.HasField("model_spec"):
                raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
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
            self._count(request, error.code)
            await _abort(context, error)
        self._count(request, Code.OK)
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
            self._count(request, error.code)
            await _abort(context, error)

    async def MultiInference(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        try:
            self._multi_inference(request)
        except ServingError as error:
            await _abort(context, error)

    def _multi_inference(self, request: Any) -> NoReturn:
        """RunMultiInferenceWithServerCore and TensorFlowMultiInferenceRunner::Infer.

        Follows TF Serving's `servables/tensorflow/multi_inference_helper.cc` (the servable
        of the first task's ModelSpec, or of an empty ModelSpec when there is no task) and
        `multi_inference.cc` (per task: non-empty and identical model names, no signature
        twice, the signature present, then PreProcessClassification /
        PreProcessRegression by the *task's* method_name, anything else UNIMPLEMENTED
        "Unsupported signature method_name: ..."; one input tensor for all tasks; then the
        examples). A model with only predict signatures, such as the digit CNN, therefore
        fails in the task checks: INVALID_ARGUMENT "No classification inputs found in
        SignatureDef: ..." for a classify task on `serving_default`, the same as Classify.
        """
        from tensorflow_serving.apis import model_pb2

        has_spec = bool(request.tasks) and request.tasks[0].HasField("model_spec")
        spec = request.tasks[0].model_spec if has_spec else model_pb2.ModelSpec()
        servable = _resolve(self.core, spec)
        signature_defs = servable.meta_graph.signature_def
        model_name = input_tensor = ""
        seen: set[str] = set()
        for task in request.tasks:
            if not task.model_spec.name:
                raise ServingError(
                    Code.INVALID_ARGUMENT, "Found ModelSpec with an empty model name."
                )
            if not model_name:
                model_name = task.model_spec.name
            elif model_name != task.model_spec.name:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
                )
            signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature_name in seen:
                raise ServingError(
                    Code.INVALID_ARGUMENT, f"Duplicate evaluation of signature: {signature_name}"
                )
            seen.add(signature_name)
            if signature_name not in signature_defs:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"Requested signature not found in model graph: {signature_name}",
                )
            signature_def = signature_defs[signature_name]
            if task.method_name == CLASSIFY_METHOD:
                self.core.check_classify_regress_signature(signature_def, "classify")
            elif task.method_name == REGRESS_METHOD:
                self.core.check_classify_regress_signature(signature_def, "regress")
            else:
                raise ServingError(
                    Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}"
                )
            tensor = signature_def.inputs["inputs"].name
            if not input_tensor:
                input_tensor = tensor
            elif input_tensor != tensor:
                raise ServingError(
                    Code.INVALID_ARGUMENT, "Input tensor must be the same for all Signatures."
                )
        kind = request.input.WhichOneof("kind")
        examples = len(getattr(request.input, kind).examples) if kind else 0
        if examples == 0:
            # InputToSerializedExampleTensor.
            raise ServingError(Code.INVALID_ARGUMENT, "Input is empty.")
        raise ServingError(
            Code.UNIMPLEMENTED,
            "MultiInference on serialized tf.Example inputs is not supported by this server",
        )


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


async def start_grpc_server(
    core: ServingCore, host: str, port: int, request_counts: RequestCounts | None = None
) -> tuple[Any, int]:
    """Serve both services on host:port (0 picks a free port); returns (server, port).

    With `request_counts`, Predict, Classify and Regress calls are counted into it.
    """
    options = [
        ("grpc.max_receive_message_length", 2**31 - 1),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core, request_counts), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server, bound
