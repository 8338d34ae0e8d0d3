"""Throughput of the embedded model server: dynamic batching on vs off, side by side.

Single-image REST predict requests at concurrency 1, 8 and 32 against one server with
batching on and one with batching off (started one after the other, never together),
next to in-process calls of the same SavedModel at batch 1 and 32 (the ceiling).

The load generator is `wrk` (C, one thread, keep-alive, a Lua script cycling through 16
request bodies) pinned with `taskset` to the last CPU, so the client costs a few percent
of one core; both modes get the same client, pinning and bodies. Without `wrk` (or with
`--client python`) a keep-alive HTTP/1.1 client on raw asyncio streams is used instead;
it costs far more CPU, which it takes from the server.

    python bench/model_server.py                    # trains a throw-away model first
    python bench/model_server.py --model-base DIR   # or serve an existing export

Both servers get the same flags except `--[no-]enable-batching`; `--server-arg` adds
flags to both and `--batching-arg` to the batching server only (its batching parameters).

Bar (issue 2): at concurrency 32, batching on >= 2.5x the throughput of batching off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 8, 32)
#: TF Serving's CPU-only starting point (batching guide: timeout 0, a large batch), with one
#: batch thread: the second core is needed by the event loop, and two batch threads
#: measured slower here. docs/model-server.md explains the choice.
BATCHING_DEFAULTS = [
    "--max-batch-size",
    "32",
    "--batch-timeout-micros",
    "0",
    "--num-batch-threads",
    "1",
]


@dataclass
class Result:
    label: str
    concurrency: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def _request_bodies(count: int) -> list[bytes]:
    import numpy as np

    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(count):
        image = np.round(rng.random((28, 28, 1)), 4).tolist()
        bodies.append(json.dumps({"instances": [image]}).encode())
    return bodies


async def _worker(
    port: int, bodies: list[bytes], stop_at: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    heads = [
        (
            f"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]
    index = 0
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(heads[index % len(heads)])
            index += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _load(port: int, concurrency: int, seconds: float, bodies: list[bytes]) -> Result:
    # Warm-up, then the measured window.
    warm: list[float] = []
    await asyncio.gather(
        *(_worker(port, bodies, time.perf_counter() + 0.5, warm, []) for _ in range(concurrency))
    )
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_worker(port, bodies, started + seconds, latencies, errors) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Result(
        label="",
        concurrency=concurrency,
        requests_per_second=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1e3,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1e3,
        errors=len(errors),
    )


_WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local requests = {}
local index = 0
init = function(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", "/v1/models/mnist:predict",
      {["Content-Type"] = "application/json"}, body)
  end
end
request = function()
  index = index % #requests + 1
  return requests[index]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "seconds": %.6f, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _wrk_load(port: int, concurrency: int, seconds: float, workdir: Path, pin: list[str]) -> Result:
    """One wrk run (after a 1 s warm-up); non-2xx answers count as errors."""
    url = f"http://127.0.0.1:{port}/v1/models/mnist:predict"
    env = {**os.environ, "BENCH_BODIES": str(workdir / "bodies.jsonl")}
    script = str(workdir / "predict.lua")

    def run(duration: str) -> dict[str, float]:
        command = [*pin, "wrk", "-t1", f"-c{concurrency}", f"-d{duration}", "--timeout", "10s"]
        completed = subprocess.run(
            [*command, "-s", script, url], env=env, capture_output=True, text=True, check=True
        )
        line = next(x for x in completed.stdout.splitlines() if x.startswith("BENCH "))
        parsed: dict[str, float] = json.loads(line[6:])
        return parsed

    run("1s")
    measured = run(f"{max(1, round(seconds))}s")
    return Result(
        label="",
        concurrency=concurrency,
        requests_per_second=measured["requests"] / measured["seconds"],
        p50_ms=measured["p50_us"] / 1e3,
        p99_ms=measured["p99_us"] / 1e3,
        errors=int(measured["errors"]),
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: a cheaper client leaves more CPU to the server."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _start_server(
    model_base: Path, batching: bool, extra: list[str]
) -> tuple[subprocess.Popen[str], int]:
    command = [
        sys.executable,
        "-m",
        "model_server",
        "serve",
        "--model-base",
        str(model_base),
        "--host",
        "127.0.0.1",
        "--rest-port",
        "0",
        "--grpc-port",
        "0",
        "--enable-batching" if batching else "--no-enable-batching",
        *extra,
    ]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready "):
        process.kill()
        raise SystemExit(f"server did not start: {line!r}")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    return process, int(fields["rest_port"])


def _stats(port: int) -> dict[str, object]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench-stats") as response:
        stats: dict[str, object] = json.loads(response.read())
    return stats


def _in_process(version_dir: Path, seconds: float) -> dict[int, float]:
    """Images/s of direct SavedModel calls, measured in a child process (imports TF)."""
    code = f"""
import os, time, json
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
from pathlib import Path
from model_server.servables import load_servable, SessionOptions
servable = load_servable("mnist", 1, Path({str(version_dir)!r}), SessionOptions(2, 1))
signature = servable.signatures["serving_default"]
out = {{}}
for batch in (1, 32):
    x = np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32)
    servable.run(signature, {{"images": x}})
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < {seconds}:
        servable.run(signature, {{"images": x}})
        calls += 1
    out[batch] = calls * batch / (time.perf_counter() - started)
print(json.dumps(out))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return {int(k): v for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base", type=Path, help="existing export (default: train one)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per cell")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra serve flag for both servers (repeatable): --server-arg=--model-threads=2",
    )
    parser.add_argument(
        "--batching-arg",
        action="append",
        default=None,
        help="batching parameter flag for the batching server (repeatable; default: "
        f"{' '.join(BATCHING_DEFAULTS)})",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator (default: wrk when installed)",
    )
    parser.add_argument(
        "--client-cpus",
        default=str((os.cpu_count() or 1) - 1),
        help="taskset CPU list for wrk ('' = no pinning; default: the last CPU)",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: tuple(int(x) for x in text.split(",")),
        default=CONCURRENCY,
        help="comma-separated client concurrencies (default 1,8,32; 32 is needed for the bar)",
    )
    args = parser.parse_args()
    batching_args = args.batching_arg if args.batching_arg is not None else BATCHING_DEFAULTS
    pinned = bool(args.client_cpus) and shutil.which("taskset") is not None
    pin = ["taskset", "-c", args.client_cpus] if pinned else []

    temporary = None
    model_base = args.model_base
    if model_base is None:
        temporary = tempfile.TemporaryDirectory(prefix="bench-model-")
        model_base = Path(temporary.name)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "model_server",
                "train",
                "--model-base",
                str(model_base),
                "--epochs",
                "1",
                "--max-train-examples",
                "256",
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    version_dir = max(
        (p for p in (model_base / "mnist").iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    bodies = _request_bodies(16)
    workdir = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    (workdir / "bodies.jsonl").write_bytes(b"\n".join(bodies) + b"\n")
    (workdir / "predict.lua").write_text(_WRK_SCRIPT)

    results: list[Result] = []
    batch_info: dict[str, dict[str, object]] = {}
    for label, batching in (("batching off", False), ("batching on", True)):
        extra = ["--stats-path", "/bench-stats", *args.server_arg]
        process, port = _start_server(
            model_base, batching, [*extra, *batching_args] if batching else extra
        )
        try:
            for concurrency in args.concurrency:
                if args.client == "wrk":
                    result = _wrk_load(port, concurrency, args.seconds, workdir, pin)
                else:
                    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                        result = runner.run(_load(port, concurrency, args.seconds, bodies))
                result.label = label
                results.append(result)
            batch_info[label] = _stats(port)
        finally:
            process.terminate()
            process.wait(timeout=30)
    in_process = _in_process(version_dir, args.seconds)

    shutil.rmtree(workdir, ignore_errors=True)
    client = f"wrk -t1 (taskset -c {args.client_cpus})" if args.client == "wrk" else "asyncio"
    if args.client == "wrk" and not pin:
        client = "wrk -t1 (not pinned)"
    print(f"\nembedded model server, single-image REST predict, {os.cpu_count()} CPUs")
    print(f"client: {client}; batching server: {' '.join(batching_args)}")
    print(f"{'mode':<14}{'conc':>6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for r in results:
        print(
            f"{r.label:<14}{r.concurrency:>6}{r.requests_per_second:>10.0f}"
            f"{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}{r.errors:>8}"
        )
    by_key = {(r.label, r.concurrency): r.requests_per_second for r in results}
    print("\nbatching on / off throughput ratio:")
    for concurrency in args.concurrency:
        ratio = by_key[("batching on", concurrency)] / by_key[("batching off", concurrency)]
        print(f"  concurrency {concurrency:>2}: {ratio:.2f}x")
    on = batch_info["batching on"]
    print(
        f"\nbatching on: {on['batched_requests']} requests in {on['model_calls']} model calls "
        f"(largest batch {on['largest_batch']})"
    )
    print("\nin-process SavedModel calls (no HTTP, no JSON):")
    for batch, rate in sorted(in_process.items()):
        print(f"  batch {batch:>2}: {rate:>8.0f} images/s")
    if 32 in args.concurrency:
        ratio_32 = by_key[("batching on", 32)] / by_key[("batching off", 32)]
        print(
            f"\nbar: concurrency 32 batching on >= 2.5x off: {ratio_32:.2f}x "
            f"{'PASS' if ratio_32 >= 2.5 else 'FAIL'}"
        )
    if temporary is not None:
        temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
