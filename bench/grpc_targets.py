"""The gRPC side of `bench/gateway.py`: a stub backend, a bare pass-through proxy, a load client.

All three speak raw message bytes through grpc.aio (uvloop when installed), like the gateway's
own gRPC edge, so the targets differ only in the work they do:

* `serve_grpc_backend`: TF Serving's PredictionService stub answering every call with one
  fixed `PredictResponse` (ten class scores);
* `serve_grpc_bare_proxy`: a generic pass-through proxy (one channel to the backend, no
  parsing, no policy, no audit), the gRPC twin of the bare aiohttp proxy;
* `run_grpc_load`: a closed-loop client (`concurrency` calls in flight on one channel) for a
  fixed time; prints requests, latency percentiles and errors as JSON.

The request is the REST body's twin: a 28x28 float image and a short note without personal
data in a string tensor, with the same API key and purpose as metadata.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"


def _loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def predict_request(model: str) -> bytes:
    """A serialised PredictRequest: the REST bench body's image and note."""
    from gateway.tfserving.protos import DataType, PredictRequest

    rng = random.Random(7)
    request = PredictRequest()
    request.model_spec.name = model
    image = request.inputs["image"]
    image.dtype = DataType.Value("DT_FLOAT")
    for size in (1, 28, 28, 1):
        image.tensor_shape.dim.add().size = size
    image.float_val.extend(round(rng.random(), 5) for _ in range(28 * 28))
    note = request.inputs["note"]
    note.dtype = DataType.Value("DT_STRING")
    note.tensor_shape.dim.add().size = 1
    note.string_val.append(b"catalogue item 4471: grey running shoe, left side view, studio light")
    return bytes(request.SerializeToString())


def predict_response() -> bytes:
    """A serialised PredictResponse of ten class scores."""
    from gateway.tfserving.protos import DataType, PredictResponse

    response = PredictResponse()
    response.model_spec.name = "bench-mnist"
    scores = response.outputs["probabilities"]
    scores.dtype = DataType.Value("DT_FLOAT")
    scores.tensor_shape.dim.add().size = 1
    scores.tensor_shape.dim.add().size = 10
    scores.float_val.extend([0.000112, 0.000231, 0.981204, 0.003311, 0.000052, 0.001874,
                             0.000093, 0.012455, 0.000611, 0.000057])  # fmt: skip
    return bytes(response.SerializeToString())


def _server(handler: Any, port: int) -> Any:
    import grpc

    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", 2**31 - 1), ("grpc.so_reuseport", 0)]
    )

    class Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(handler(details.method))

    server.add_generic_rpc_handlers((Handlers(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    return server


def serve_grpc_backend(port: int) -> None:
    """The stub backend: every call answered with the fixed PredictResponse."""
    _loop_policy()
    answer = predict_response()

    def handler(method: str) -> Any:
        async def call(request: bytes, context: Any) -> bytes:
            return answer

        return call

    async def main() -> None:
        server = _server(handler, port)
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def serve_grpc_bare_proxy(port: int, upstream: str) -> None:
    """A pass-through proxy: the request bytes to the backend, its response bytes back."""
    import grpc

    _loop_policy()

    async def main() -> None:
        channel = grpc.aio.insecure_channel(upstream)
        methods: dict[str, Any] = {}

        def handler(method: str) -> Any:
            forward = methods.get(method)
            if forward is None:
                forward = methods[method] = channel.unary_unary(method)

            async def call(request: bytes, context: Any) -> bytes:
                response: bytes = await forward(request, timeout=30)
                return response

            return call

        server = _server(handler, port)
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def run_grpc_load(port: int, model: str, metadata: list[tuple[str, str]], concurrency: int,
                  duration_s: float) -> None:  # fmt: skip
    """Closed loop for `duration_s`; prints `{requests, errors, p50_ms, p99_ms, duration_s}`."""
    import grpc

    _loop_policy()
    request = predict_request(model)

    async def main() -> dict[str, Any]:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        method = channel.unary_unary(PREDICT_PATH)
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await method(request, metadata=metadata, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await channel.close()
        latencies.sort()

        def percentile(q: float) -> float:
            if not latencies:
                return float("nan")
            return latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] * 1000

        return {"requests": len(latencies), "errors": errors, "duration_s": elapsed,
                "p50_ms": percentile(50), "p99_ms": percentile(99)}  # fmt: skip

    print(json.dumps(asyncio.run(main())))
    sys.stdout.flush()
