"""What REST and gRPC share: resolving servables and signatures, validating inputs, running
predictions (batched or not), and the counters tests and benchmarks read.

Messages follow TF Serving's `predict_util.cc`, `http_rest_api_handler.cc` and
`classifier.cc`/`regressor.cc` for a model that only has a predict signature.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from model_server.batching import Batcher, BatchingParameters, BatchStats
from model_server.registry import ModelRegistry
from model_server.servables import DEFAULT_SIGNATURE, LoadedServable, Signature
from model_server.status import Code, ServingError
from model_server.tensors import TensorSpec, dtype_string

__all__ = ["ServingCore", "ServingStats", "CLASSIFY_METHOD", "REGRESS_METHOD"]

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"

_NUMPY_TO_DT = {
    np.dtype(np.float32): "DT_FLOAT",
    np.dtype(np.float64): "DT_DOUBLE",
    np.dtype(np.int32): "DT_INT32",
    np.dtype(np.int16): "DT_INT16",
    np.dtype(np.int8): "DT_INT8",
    np.dtype(np.uint8): "DT_UINT8",
    np.dtype(np.int64): "DT_INT64",
    np.dtype(np.bool_): "DT_BOOL",
    np.dtype(np.uint32): "DT_UINT32",
    np.dtype(np.uint64): "DT_UINT64",
    np.dtype(np.uint16): "DT_UINT16",
    np.dtype(np.float16): "DT_HALF",
    np.dtype(object): "DT_STRING",
}


@dataclass
class ServingStats:
    """Counters exposed on the stats endpoint: model calls, batches, requests."""

    batches: BatchStats = field(default_factory=BatchStats)
    requests: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-safe snapshot."""
        b = self.batches
        return {
            "model_calls": b.model_calls,
            "batched_requests": b.batched_requests,
            "batched_rows": b.batched_rows,
            "largest_batch": b.largest_batch,
            "requests_per_call": {str(k): v for k, v in sorted(b.batch_sizes.items())},
            "requests": dict(sorted(self.requests.items())),
        }


_NO_BATCHERS: Mapping[str, Batcher] = {}


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _batchable(signature: Signature) -> bool:
    specs = [*signature.inputs.values(), *signature.outputs.values()]
    return all(s.shape is not None and len(s.shape) >= 1 and s.shape[0] == -1 for s in specs)


class ServingCore:
    """Servable resolution plus the predict path shared by both front ends."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        batching: BatchingParameters | None,
        model_threads: int,
        timeout_seconds: float,
    ) -> None:
        self.registry = registry
        self.batching = batching
        self.stats = ServingStats()
        self.timeout_seconds = timeout_seconds
        threads = batching.num_batch_threads if batching else model_threads
        self._executor = concurrent.futures.ThreadPoolExecutor(max(threads, 1), "model-run")
        self._slots: asyncio.Semaphore | None = None

    def attach(self, servable: LoadedServable) -> None:
        """Registry hook: give a newly loaded servable its batch queues."""
        servable.extensions["batchers"] = {}

    def detach(self, servable: LoadedServable) -> None:
        """Registry hook: the servable is unloading; let its queues drain and stop."""
        for batcher in servable.extensions.get("batchers", {}).values():
            batcher.close()

    # ---------------------------------------------------------------- signatures

    def rest_signature(self, servable: LoadedServable, name: str) -> Signature:
        """HttpRestApiHandler::GetInfoMap."""
        key = name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f'Serving signature name: "{key}" not found in signature def',
            )
        if not signature.inputs:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Failed to get input map for signature: {name or 'DEFAULT'}",
            )
        return signature

    def grpc_signature(self, servable: LoadedServable, name: str) -> Signature:
        """RunPredict's signature lookup and VerifySignature."""
        key = name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise ServingError(
                Code.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            )
        if signature.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(
                Code.INTERNAL,
                "Expected prediction signature method_name to be one of "
                f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. "
                f"Was: {signature.method_name}",
            )
        return signature

    @staticmethod
    def classify_regress_error(
        servable: LoadedServable, signature_name: str, method: str
    ) -> NoReturn:
        """Classify/Regress on a model: TF Serving's answer when the signature lacks them.

        The method-name check is off by default in TF Serving, so the checks of
        PreProcessClassification / PreProcessRegression decide.
        """
        key = signature_name or DEFAULT_SIGNATURE
        found = servable.meta_graph.signature_def.get(key)
        if key not in servable.meta_graph.signature_def:
            raise ServingError(
                Code.INVALID_ARGUMENT, f"No signature was found with the name: {key}"
            )
        ServingCore.check_classify_regress_signature(found, method)
        raise ServingError(
            Code.UNIMPLEMENTED,
            f"{method} on serialized tf.Example inputs is not supported by this server",
        )

    @staticmethod
    def check_classify_regress_signature(found: Any, method: str) -> None:
        """PreProcessClassification (`method` "classify") or PreProcessRegression ("regress").

        `found` is the SignatureDef proto; the method-name check is off, as in TF Serving
        by default, so only the inputs and outputs are checked.
        """
        from google.protobuf import text_format  # type: ignore[import-untyped]

        debug = text_format.MessageToString(found)
        if len(found.inputs) != 1:
            raise ServingError(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
        if method == "classify":
            if len(found.outputs) not in (1, 2):
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"Expected one or two output Tensors, found {len(found.outputs)}",
                )
            if "inputs" not in found.inputs:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"No classification inputs found in SignatureDef: {debug}",
                )
            if "classes" not in found.outputs and "scores" not in found.outputs:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    "Expected classification signature outputs to contain at least one of "
                    f'"classes" or "scores". Signature was: {debug}',
                )
        else:
            if len(found.outputs) != 1:
                raise ServingError(Code.INVALID_ARGUMENT, "Expected one output Tensor.")
            if "inputs" not in found.inputs:
                raise ServingError(
                    Code.INVALID_ARGUMENT, f"No regression inputs found in SignatureDef: {debug}"
                )
            if "outputs" not in found.outputs:
                raise ServingError(
                    Code.INVALID_ARGUMENT, f"No regression outputs found in SignatureDef: {debug}"
                )

    # ---------------------------------------------------------------- predict

    def check_inputs(self, signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
        """`validate_inputs`, remembering input layouts already found valid."""
        key = tuple((alias, value.shape, value.dtype.str) for alias, value in inputs.items())
        if key in signature.valid_layouts:
            return
        validate_inputs(signature, inputs)
        if len(signature.valid_layouts) < 1024:
            signature.valid_layouts.add(key)

    async def predict(
        self,
        servable: LoadedServable,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a validated request: through the batch queue when batching is on."""
        self.check_inputs(signature, inputs)
        model = servable.name
        self.stats.requests[model] = self.stats.requests.get(model, 0) + 1
        with servable.hold():
            if self.batching is not None and not output_aliases:
                # A signature gets a queue only when batchable, so a found queue says so.
                batchers: Mapping[str, Batcher] = servable.extensions.get("batchers", _NO_BATCHERS)
                batcher = batchers.get(signature.name)
                if batcher is None and _batchable(signature):
                    batcher = self._batcher(servable, signature)
                if batcher is not None:
                    # The batcher keeps the deadline with one timer per batch, not per request.
                    return await batcher.submit(inputs)
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    return await self._run_single(servable, signature, inputs, output_aliases)
            except TimeoutError:
                raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    async def _run_single(
        self,
        servable: LoadedServable,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str] | None,
    ) -> dict[str, np.ndarray]:
        rows = next(iter(inputs.values())).shape[:1]
        self.stats.batches.record(1, int(rows[0]) if rows else 1)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, _run_model, servable, signature, inputs, output_aliases
        )

    def _batcher(self, servable: LoadedServable, signature: Signature) -> Batcher:
        batchers: dict[str, Batcher] = servable.extensions.setdefault("batchers", {})
        batcher = batchers.get(signature.name)
        if batcher is None:
            assert self.batching is not None
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.batching.num_batch_threads)

            def run(merged: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                return _run_model(servable, signature, merged, None)

            batcher = Batcher(
                run,
                self.batching,
                self._executor,
                self._slots,
                self.stats.batches,
                timeout_seconds=self.timeout_seconds,
            )
            batchers[signature.name] = batcher
        return batcher

    def shutdown(self) -> None:
        """Stop the model threads (after the front ends stopped)."""
        self._executor.shutdown(wait=True, cancel_futures=False)


def validate_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """Input aliases, dtypes and shapes against the signature.

    TF Serving leaves shape checks to the kernels; this server checks first because some
    CPU kernels abort the process on a wrong rank instead of returning an error.
    """
    if len(inputs) != len(signature.inputs):
        sent, wanted = set(inputs), set(signature.inputs)
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"input size does not match signature: {len(inputs)}!={len(wanted)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.",
        )
    for alias, array in inputs.items():
        spec = signature.inputs.get(alias)
        if spec is None:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"input tensor alias not found in signature: {alias}. Inputs expected to "
                f"be in the set {{{','.join(sorted(signature.inputs))}}}.",
            )
        actual = _NUMPY_TO_DT.get(array.dtype, str(array.dtype))
        if actual != spec.dtype:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Type mismatch: actual {dtype_string(actual)} vs. expect "
                f"{dtype_string(spec.dtype)} for input {alias}",
            )
        _check_shape(alias, array.shape, spec, signature.input_tensors[alias])


def _check_shape(alias: str, shape: tuple[int, ...], spec: TensorSpec, tensor: str) -> None:
    if spec.shape is None:
        return
    expected = spec.shape
    compatible = len(shape) == len(expected) and all(
        e < 0 or e == s for e, s in zip(expected, shape, strict=True)
    )
    if not compatible:
        wanted = "[" + ",".join("?" if d < 0 else str(d) for d in expected) + "]"
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"input {alias} ({tensor}) must have shape {wanted} but got {_shape_text(shape)}",
        )


def _run_model(
    servable: LoadedServable,
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    output_aliases: Sequence[str] | None,
) -> dict[str, np.ndarray]:
    """One Session call, with TensorFlow errors turned into canonical errors."""
    import tensorflow as tf

    try:
        return servable.run(signature, inputs, output_aliases)
    except tf.errors.OpError as error:
        raise ServingError(_code_from_number(error.error_code), error.message) from None


def _code_from_number(number: int) -> Code:
    from tensorflow.core.protobuf import error_codes_pb2

    try:
        return Code[error_codes_pb2.Code.Name(number)]
    except (KeyError, ValueError):
        return Code.UNKNOWN
