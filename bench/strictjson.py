"""Strict body parsing cost next to plain orjson and json, in one run.

    python bench/strictjson.py

Bodies: a predict request with a base64 image and a note (the scenarios' shape), a 28x28 float
tensor, a batch of 64 short text instances, the same tensor with one NaN (the standard-library
path), and a 16-image tensor batch. Reports the median per call and the ratio strict / orjson.
"""

from __future__ import annotations

import base64
import json
import random
import sys
from pathlib import Path

import orjson

# `python bench/<name>.py` puts bench/ first on sys.path, where bench/gateway.py would shadow
# the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_us

from gateway.request.strictjson import loads


def _bodies() -> dict[str, bytes]:
    rng = random.Random(7)
    image = base64.b64encode(rng.randbytes(5000)).decode()
    tensor = [[[round(rng.random(), 4)] for _ in range(28)] for _ in range(28)]
    with_nan = [row[:] for row in tensor]
    with_nan[3] = [[float("nan")]] + with_nan[3][1:]
    return {
        "b64 image + note (7 KB)": orjson.dumps(
            {
                "signature_name": "serving_default",
                "instances": [{"image_bytes": {"b64": image}, "note": "SKU 4711 red sneaker"}],
            }
        ),
        "28x28 float tensor (7 KB)": orjson.dumps({"instances": [tensor]}),
        "64 text instances (5 KB)": orjson.dumps(
            {"instances": [{"text": f"item {i}: red sneaker, size 42", "id": i} for i in range(64)]}
        ),
        "tensor with one NaN (7 KB)": json.dumps({"instances": [with_nan]}).encode(),
        "16 float tensors (110 KB)": orjson.dumps({"instances": [tensor] * 16}),
    }


def main() -> None:
    print(f"{'body':30} {'orjson us':>10} {'json us':>10} {'strict us':>10} {'strict/orjson':>14}")
    for label, body in _bodies().items():
        inner = 20 if len(body) > 50_000 else 200
        try:
            orjson.loads(body)
            base = median_us(lambda body=body: orjson.loads(body), inner=inner)
        except orjson.JSONDecodeError:
            base = float("nan")  # orjson refuses NaN
        std = median_us(lambda body=body: json.loads(body), inner=inner)
        ours = median_us(lambda body=body: loads(body), inner=inner)
        ratio = ours / base if base == base else float("nan")
        print(f"{label:30} {base:10.1f} {std:10.1f} {ours:10.1f} {ratio:13.2f}x")


if __name__ == "__main__":
    main()
