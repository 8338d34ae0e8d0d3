"""Write gateway/tfserving/protos/tfserving.binpb, the gateway's copy of TF Serving's protos.

The gateway must never import TensorFlow, yet its gRPC front door speaks TF Serving's
messages. This script runs in a development environment (tensorflow-serving-api and
googleapis-common-protos installed), collects the FileDescriptorProtos of the files that
define those messages and services, with every file they depend on, and writes them as one
serialized `google.protobuf.FileDescriptorSet`, dependencies first. The gateway loads that set
into a descriptor pool of its own at run time (gateway/tfserving/protos/__init__.py).

    python tools/generate_tfserving_protos.py           # rewrite the committed file
    python tools/generate_tfserving_protos.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

# The modules whose files (and their dependencies) the front door needs.
ROOT_MODULES = (
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.classification_pb2",
    "tensorflow_serving.apis.regression_pb2",
    "tensorflow_serving.apis.inference_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow.core.example.example_pb2",
    "google.rpc.status_pb2",
    "google.rpc.error_details_pb2",
)

OUTPUT = Path(__file__).resolve().parent.parent / "gateway/tfserving/protos/tfserving.binpb"


def descriptor_set_bytes() -> bytes:
    """The serialized FileDescriptorSet of every root module's file and its dependencies."""
    from google.protobuf import descriptor_pb2

    ordered: list[Any] = []
    seen: set[str] = set()

    def visit(file: Any) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for name in ROOT_MODULES:
        visit(importlib.import_module(name).DESCRIPTOR)
    files = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        files.file.add().MergeFromString(file.serialized_pb)
    return bytes(files.SerializeToString(deterministic=True))


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the committed descriptor set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    data = descriptor_set_bytes()
    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != data:
            print(f"{args.output} is out of date; run {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    args.output.write_bytes(data)
    print(f"wrote {args.output} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
