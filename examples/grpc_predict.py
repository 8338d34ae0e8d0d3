"""Call the gateway's gRPC front door with TF Serving's own client stubs.

    python examples/grpc_predict.py 127.0.0.1:8500
    python examples/grpc_predict.py 127.0.0.1:8500 --note 'mail anna@example.de'
    python examples/grpc_predict.py 127.0.0.1:8500 --metadata x-geo-country=IR

Sends the handwritten seven of `examples/digit.json` to the `mnist` model (with a note, the
`annotated` signature, which echoes the note the model received), prints the decision id from
the response's initial metadata and the answer, or the refusal with its rich error details.
Needs `tensorflow` and `tensorflow-serving-api` (the dev install has both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from grpc_status import rpc_status
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

DIGIT = Path(__file__).resolve().parent / "digit.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="host:port of the gateway's gRPC port")
    parser.add_argument("--note", help="a free-text note (uses the `annotated` signature)")
    parser.add_argument("--purpose", default="document_classification")
    parser.add_argument("--metadata", action="append", default=[], help="extra key=value")
    args = parser.parse_args()

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = "annotated" if args.note else "serving_default"
    image = np.asarray(json.loads(DIGIT.read_text())["instances"], dtype=np.float32)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image))
    if args.note:
        request.inputs["note"].CopyFrom(tf.make_tensor_proto([args.note.encode()]))
    metadata = [("x-purpose", args.purpose)]
    metadata += [tuple(item.split("=", 1)) for item in args.metadata]  # type: ignore[misc]

    with grpc.insecure_channel(args.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response, call = stub.Predict.with_call(request, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            initial = dict(error.initial_metadata() or ())  # type: ignore[attr-defined]
            print(f"decision id: {initial.get('x-decision-id')}")
            print(f"refused: {error.code().name}: {error.details()}")  # type: ignore[attr-defined]
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            for detail in status.details if status else ():
                print(f"  {detail.type_url.rsplit('/', 1)[-1]}")
            return 1
    print(f"decision id: {dict(call.initial_metadata()).get('x-decision-id')}")
    scores = tf.make_ndarray(response.outputs["probabilities"])[0]
    print(f"digit: {int(np.argmax(scores))} (p={float(np.max(scores)):.4f})")
    if args.note:
        print(f"the model read the note as: {response.outputs['note'].string_val[0].decode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
