"""Training the digit CNN and exporting it in the layout TF Serving loads.

Export layout (`<model_base>/<name>/<version>/` is what TF Serving polls):

    <model_base>/<name>/<version>/saved_model.pb, variables/, assets/, fingerprint.pb
    <model_base>/<name>/<version>.model_card.json

The version directory is written under a hidden temporary name beside it and renamed
into place, so a polling server never sees half a version; the model card is in place
before the rename.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_server.data import Dataset, load_digits_28, load_mnist_dir

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_LICENCE",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "TrainOptions",
    "TrainResult",
    "train_and_export",
    "model_card_path",
    "next_version",
]

DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 32
DEFAULT_LICENCE = "Apache-2.0"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
SIGNATURE_NAME = "serving_default"
#: A second signature that also takes a free-text `note` per image and returns it unchanged
#: beside the probabilities: what the model received is visible to the caller (the gateway's
#: masking shows in the answer).
ANNOTATED_SIGNATURE_NAME = "annotated"
NOTE_NAME = "note"
CARD_SUFFIX = ".model_card.json"


@dataclass(frozen=True)
class TrainOptions:
    """What `python -m model_server train` accepts."""

    model_base: Path
    name: str = "mnist"
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    mnist_dir: Path | None = None
    seed: int = 0
    licence: str = DEFAULT_LICENCE
    version: int | None = None
    max_train_examples: int | None = None
    threads: int = 2


@dataclass(frozen=True)
class TrainResult:
    """Where the version went and how good it is."""

    version: int
    version_dir: Path
    card_path: Path
    held_out_accuracy: float
    held_out_examples: int


def model_card_path(model_base: Path, name: str, version: int) -> Path:
    """The model card of one exported version."""
    return model_base / name / f"{version}{CARD_SUFFIX}"


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version directory (1 for a new model)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def build_model(seed: int) -> Any:
    """Conv2D(32, 3x3, relu) -> MaxPool 2x2 -> Flatten -> Dense(128, relu) -> Dense(10, softmax)."""
    import keras  # type: ignore[import-untyped]

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1), name=INPUT_NAME),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="digits_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _epoch_printer(epochs: int, out: Callable[[str], None]) -> Any:
    import keras

    class EpochProgress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            out(
                f"epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f} "
                f"accuracy {logs.get('accuracy', float('nan')):.4f} "
                f"({time.monotonic() - self.started:.1f} s)"
            )

    return EpochProgress()


def _signature_card(path: Path) -> dict[str, Any]:
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    signature = saved_model.meta_graphs[0].signature_def[SIGNATURE_NAME]

    def spec(info: Any) -> dict[str, Any]:
        return {
            "dtype": types_pb2.DataType.Name(info.dtype),
            "shape": [int(d.size) for d in info.tensor_shape.dim],
            "tensor": info.name,
        }

    return {
        "name": SIGNATURE_NAME,
        "method_name": signature.method_name,
        "inputs": {k: spec(v) for k, v in signature.inputs.items()},
        "outputs": {k: spec(v) for k, v in signature.outputs.items()},
    }


def _write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
    os.replace(temporary, path)


def train_and_export(options: TrainOptions, out: Callable[[str], None] = print) -> TrainResult:
    """Train on the chosen data, evaluate on the held-out split, export atomically."""
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(options.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.get_logger().setLevel("ERROR")
    tf.config.experimental.enable_op_determinism()

    data: Dataset = (
        load_mnist_dir(options.mnist_dir, options.max_train_examples)
        if options.mnist_dir is not None
        else load_digits_28(options.max_train_examples)
    )
    out(
        f"data: {data.source}, {len(data.train_images)} training and "
        f"{len(data.test_images)} held-out images"
    )
    model = build_model(options.seed)
    model.fit(
        data.train_images,
        data.train_labels,
        epochs=options.epochs,
        batch_size=options.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[_epoch_printer(options.epochs, out)],
    )
    probabilities = model.predict(data.test_images, batch_size=256, verbose=0)
    correct = int(np.sum(np.argmax(probabilities, axis=1) == data.test_labels))
    accuracy = correct / max(len(data.test_labels), 1)
    out(f"held-out accuracy: {accuracy:.4f} ({correct}/{len(data.test_labels)})")

    model_dir = options.model_base / options.name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = options.version if options.version is not None else next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"version directory {final} already exists; choose another --version")
    temporary = model_dir / f".{version}.partial-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: model(images, training=False)}

    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=serve,
        input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name=INPUT_NAME)],
    )

    def serve_annotated(images: Any, note: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: model(images, training=False), NOTE_NAME: tf.identity(note)}

    archive.add_endpoint(
        name=ANNOTATED_SIGNATURE_NAME,
        fn=serve_annotated,
        input_signature=[
            tf.TensorSpec([None, 28, 28, 1], tf.float32, name=INPUT_NAME),
            tf.TensorSpec([None], tf.string, name=NOTE_NAME),
        ],
    )
    try:
        archive.write_out(str(temporary), verbose=False)
        card = {
            "model": {
                "name": options.name,
                "version": version,
                "kind": "classifier",
                "task": "handwritten digit classification (10 classes, 0-9)",
                "architecture": (
                    "Conv2D(32, 3x3, relu) -> MaxPooling2D(2x2) -> Flatten -> "
                    "Dense(128, relu) -> Dense(10, softmax)"
                ),
                "framework": f"tensorflow {tf.__version__}, keras {keras.__version__}",
            },
            "licence": options.licence,
            "data": {
                "source": data.source,
                "description": data.description,
                "licence": data.licence,
                "train_examples": int(len(data.train_images)),
                "held_out_examples": int(len(data.test_images)),
            },
            "training": {
                "epochs": options.epochs,
                "batch_size": options.batch_size,
                "optimizer": "adam",
                "loss": "sparse_categorical_crossentropy",
                "seed": options.seed,
            },
            "evaluation": {"held_out_accuracy": round(accuracy, 6), "correct": correct},
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "signature": _signature_card(temporary),
            "labels": [str(d) for d in range(10)],
        }
        card_path = model_card_path(options.model_base, options.name, version)
        _write_json_atomically(card_path, card)
        os.rename(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    out(f"exported {final} (model card {card_path.name})")
    return TrainResult(version, final, card_path, accuracy, len(data.test_labels))
