"""Loading SavedModels the way TF Serving's core does: one servable is one version of one
model.

A servable is `<base_path>/<version>/saved_model.pb`, loaded into its own TensorFlow graph
and session (TF Serving's `SavedModelBundle`): the meta graph tagged `serve` is imported,
variables are restored through the saver_def and the init op runs. Calls go through
`Session` callables, so no Python-side shape checks run and each call costs what a TF
Serving `Session::Run` costs. The versions of each model are kept by `registry.py`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_server.tensors import TensorSpec

__all__ = [
    "DEFAULT_SIGNATURE",
    "LoadedServable",
    "ServableLoadError",
    "SessionOptions",
    "Signature",
    "load_servable",
]


SERVING_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
INIT_OP_SIGNATURE = "__saved_model_init_op"


class ServableLoadError(Exception):
    """A version directory that does not hold a loadable SavedModel."""


@dataclass(frozen=True)
class SessionOptions:
    """TensorFlow session threading (TF Serving's --tensorflow_*_op_parallelism)."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    #: Let idle TensorFlow threads spin-wait for work (TF's default). Between small model
    #: calls the spinning threads take CPU from the event loop on a machine with few cores.
    thread_spinning: bool = False


@dataclass(frozen=True)
class Signature:
    """A SignatureDef with its aliases resolved to graph tensor names and specs."""

    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    input_tensors: dict[str, str]
    output_tensors: dict[str, str]
    #: Input layouts (alias, shape, dtype) already validated against this signature.
    valid_layouts: set[tuple[Any, ...]] = field(default_factory=set, compare=False, repr=False)


def _tensor_spec(info: Any) -> TensorSpec:
    from tensorflow.core.framework import types_pb2

    dtype = types_pb2.DataType.Name(info.dtype)
    if info.tensor_shape.unknown_rank:
        return TensorSpec(dtype, None)
    return TensorSpec(dtype, tuple(int(d.size) for d in info.tensor_shape.dim))


class LoadedServable:
    """One loaded model version: graph, session, signatures and a reference count."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        meta_graph: Any,
        session: Any,
        graph: Any,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.meta_graph = meta_graph
        self._session = session
        self._graph = graph
        self.signatures: dict[str, Signature] = {}
        for key, signature_def in meta_graph.signature_def.items():
            self.signatures[key] = Signature(
                name=key,
                method_name=signature_def.method_name,
                inputs={a: _tensor_spec(i) for a, i in signature_def.inputs.items()},
                outputs={a: _tensor_spec(i) for a, i in signature_def.outputs.items()},
                input_tensors={a: i.name for a, i in signature_def.inputs.items()},
                output_tensors={a: i.name for a, i in signature_def.outputs.items()},
            )
        self._callables: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._retired = False
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        #: Extra per-servable state owned by the server (e.g. batch queues).
        self.extensions: dict[str, Any] = {}
        self._hold = _Hold(self)

    def _callable(self, signature: Signature, feed: tuple[str, ...], fetch: tuple[str, ...]) -> Any:
        key = (signature.name, feed, fetch)
        found = self._callables.get(key)
        if found is not None:
            return found
        from tensorflow.core.protobuf import config_pb2

        options = config_pb2.CallableOptions(
            feed=[signature.input_tensors[a] for a in feed],
            fetch=[signature.output_tensors[a] for a in fetch],
        )
        with self._lock:
            found = self._callables.get(key)
            if found is None:
                found = self._session._make_callable_from_options(options)
                self._callables[key] = found
        return found

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the signature on already validated inputs (blocking; call off the loop)."""
        feed = tuple(sorted(inputs))
        fetch = tuple(output_aliases) if output_aliases else tuple(sorted(signature.outputs))
        call = self._callable(signature, feed, fetch)
        results = call(*[inputs[a] for a in feed])
        return dict(zip(fetch, results, strict=True))

    def hold(self) -> _Hold:
        """Keep the session open while a request uses it (`with servable.hold(): ...`)."""
        return self._hold

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._idle.clear()

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def wait_idle_and_close(self) -> None:
        """Block until no request holds the servable, then free its session."""
        self._idle.wait()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._session.close()


class _Hold:
    """`LoadedServable.hold()`: a reusable context manager (no generator per request)."""

    __slots__ = ("_servable",)

    def __init__(self, servable: LoadedServable) -> None:
        self._servable = servable

    def __enter__(self) -> LoadedServable:
        self._servable._enter()
        return self._servable

    def __exit__(self, *exc_info: object) -> None:
        self._servable._leave()


def load_servable(name: str, version: int, path: Path, options: SessionOptions) -> LoadedServable:
    """Load one SavedModel version the way TF Serving's SavedModelBundle loader does."""
    import tensorflow as tf
    from google.protobuf import message, text_format  # type: ignore[import-untyped]
    from tensorflow.core.protobuf import saved_model_pb2

    binary, text = path / "saved_model.pb", path / "saved_model.pbtxt"
    saved_model = saved_model_pb2.SavedModel()
    try:
        if binary.is_file():
            saved_model.ParseFromString(binary.read_bytes())
        elif text.is_file():
            text_format.Parse(text.read_text(), saved_model)
        else:
            raise ServableLoadError(
                f"SavedModel file does not exist at: {path}/{{saved_model.pbtxt|saved_model.pb}}"
            )
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as error:
        raise ServableLoadError(f"cannot parse {binary}: {error or 'not a SavedModel'}") from None
    meta_graphs = [m for m in saved_model.meta_graphs if SERVING_TAG in m.meta_info_def.tags]
    if not meta_graphs:
        raise ServableLoadError(
            f"no MetaGraphDef tagged `{SERVING_TAG}` in {path} (SavedModel is empty or was "
            "exported for another use)"
        )
    meta_graph = meta_graphs[0]
    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=options.intra_op_threads,
        inter_op_parallelism_threads=options.inter_op_threads,
        allow_soft_placement=True,
    )
    config.experimental.disable_thread_spinning = not options.thread_spinning
    try:
        with graph.as_default():
            tf.compat.v1.train.import_meta_graph(meta_graph, clear_devices=True)
        session = tf.compat.v1.Session(graph=graph, config=config)
        saver = meta_graph.saver_def
        if saver.restore_op_name:
            variables = path / "variables" / "variables"
            session.run(saver.restore_op_name, {saver.filename_tensor_name: str(variables)})
        init = meta_graph.signature_def.get(INIT_OP_SIGNATURE)
        if init is not None and init.outputs:
            session.run([o.name for o in init.outputs.values()])
        elif "saved_model_main_op" in meta_graph.collection_def:
            session.run(meta_graph.collection_def["saved_model_main_op"].node_list.value[0])
    except (tf.errors.OpError, ValueError, KeyError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ServableLoadError(f"cannot load SavedModel from {path}: {first_line}") from None
    return LoadedServable(name, version, path, meta_graph, session, graph)
