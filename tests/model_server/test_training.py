"""The exported model: layout, model card, architecture, atomic export."""

from __future__ import annotations

import json
from pathlib import Path

from model_server.training import model_card_path, next_version


def test_export_layout(trained_model_base: Path) -> None:
    model_dir = trained_model_base / "mnist"
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == ["1", "1.model_card.json"]  # no staging directory left behind
    version = model_dir / "1"
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables" / "variables.index").is_file()
    assert next_version(model_dir) == 2


def test_model_card(trained_model_base: Path) -> None:
    card = json.loads(model_card_path(trained_model_base, "mnist", 1).read_text())
    assert card["licence"] == "Apache-2.0"
    assert card["model"]["name"] == "mnist" and card["model"]["version"] == 1
    assert card["data"]["source"] == "sklearn-digits"
    assert card["data"]["train_examples"] == 300
    assert 0.0 <= card["evaluation"]["held_out_accuracy"] <= 1.0
    assert card["created"].endswith("Z")
    signature = card["signature"]
    assert signature["name"] == "serving_default"
    assert signature["inputs"] == {
        "images": {
            "dtype": "DT_FLOAT",
            "shape": [-1, 28, 28, 1],
            "tensor": "serving_default_images:0",
        }
    }
    assert signature["outputs"] == {
        "probabilities": {
            "dtype": "DT_FLOAT",
            "shape": [-1, 10],
            "tensor": "StatefulPartitionedCall_1:0",
        }
    }


def test_architecture_from_the_saved_variables(trained_model_base: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(
        (trained_model_base / "mnist" / "1" / "saved_model.pb").read_bytes()
    )
    graph = saved_model.meta_graphs[0].graph_def
    shapes = {
        tuple(d.size for d in node.attr["shape"].shape.dim)
        for node in graph.node
        if node.op == "VarHandleOp"
    }
    # Conv2D(32, 3x3) on 1 channel, Dense(13*13*32 -> 128), Dense(128 -> 10), and biases.
    assert shapes == {(3, 3, 1, 32), (32,), (5408, 128), (128,), (128, 10), (10,)}
    functions = {node.op for f in graph.library.function for node in f.node_def}
    assert {"Conv2D", "MaxPool", "Relu", "MatMul", "Softmax"} <= functions
