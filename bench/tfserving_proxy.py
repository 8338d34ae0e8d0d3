"""Side-by-side cost of the URL grammar and of UpstreamPool.forward, against bare baselines.

    python bench/tfserving_proxy.py [--requests 3000] [--parses 200000]

1. Parsing: `parse_request_target` + `build_backend_path` versus one bare `re.fullmatch` of TF
   Serving's prediction regex (what a naive router would do).
2. Forwarding: `UpstreamPool.forward` versus a bare `session.post(...); await resp.read()` on
   the same keep-alive pool, against one local aiohttp backend answering a fixed predict body.
   Both run interleaved in rounds in the same process, so machine noise hits both alike.
Reports per-operation microseconds and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.edge.proxy import UpstreamPool
from gateway.request.routing import BackendSpec
from gateway.tfserving import build_backend_path, parse_request_target

TARGET = "/v1/models/imgcls-resnet50/versions/3:predict"
NAIVE = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:(predict|classify|regress)", re.I)
REQUEST = b'{"instances": [{"image_bytes": {"b64": "' + b"A" * 7000 + b'"}}]}'
RESPONSE = b'{\n    "predictions": [[0.0260158, 0.973984]\n    ]\n}'


def bench_parse(n: int) -> tuple[float, float]:
    def naive() -> None:
        for _ in range(n):
            NAIVE.fullmatch(TARGET)

    def ours() -> None:
        for _ in range(n):
            route = parse_request_target("POST", TARGET)
            build_backend_path(route)  # type: ignore[arg-type]

    return _rounds([naive, ours], n)


def _rounds(funcs: list[Callable[[], None]], n: int, rounds: int = 5) -> tuple[float, float]:
    samples: list[list[float]] = [[] for _ in funcs]
    for _ in range(rounds):
        for index, func in enumerate(funcs):
            start = time.perf_counter()
            func()
            samples[index].append((time.perf_counter() - start) / n * 1e6)
    base, ours = (statistics.median(s) for s in samples)
    return base, ours


async def bench_forward(n: int) -> tuple[float, float]:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=RESPONSE, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/models/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    spec = BackendSpec("be", f"http://127.0.0.1:{port}", "DE", {"imgcls-resnet50": {}})
    path = build_backend_path(parse_request_target("POST", TARGET))  # type: ignore[arg-type]
    headers = [("Content-Type", "application/json"), ("X-Api-Key", "k")]
    try:
        async with UpstreamPool() as pool:
            session = pool.session
            url = f"http://127.0.0.1:{port}{path}"

            async def bare() -> None:
                for _ in range(n):
                    async with session.post(url, data=REQUEST, headers=headers[:1]) as resp:
                        await resp.read()

            async def ours() -> None:
                for _ in range(n):
                    await pool.forward(spec, "POST", path, REQUEST, headers)

            return await _async_rounds([bare, ours], n)
    finally:
        await runner.cleanup()


async def _async_rounds(
    funcs: list[Callable[[], Awaitable[None]]], n: int, rounds: int = 5
) -> tuple[float, float]:
    samples: list[list[float]] = [[] for _ in funcs]
    for _ in range(rounds):
        for index, func in enumerate(funcs):
            start = time.perf_counter()
            await func()
            samples[index].append((time.perf_counter() - start) / n * 1e6)
    base, ours = (statistics.median(s) for s in samples)
    return base, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--parses", type=int, default=200_000)
    args = parser.parse_args()
    base, ours = bench_parse(args.parses)
    print(f"parse+canonical  baseline re.fullmatch {base:7.2f} us  ours {ours:7.2f} us  "
          f"ratio {ours / base:5.2f}x")  # fmt: skip
    base, ours = asyncio.run(bench_forward(args.requests))
    print(f"forward 7 KB     baseline session.post {base:7.1f} us  ours {ours:7.1f} us  "
          f"ratio {ours / base:5.2f}x  (round trip incl. the local backend)")  # fmt: skip


if __name__ == "__main__":
    main()
