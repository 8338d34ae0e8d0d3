"""Side-by-side HTTP cost of the gateway: direct to the backend, a bare proxy, the full gateway.

    python bench/gateway.py                  # about 2 minutes on 2 cores
    python bench/gateway.py --profile        # also sample the gateway under load with py-spy
    python bench/gateway.py --diagnose       # also: wrk -c64, and the gateway without fsync
    python bench/gateway.py --json out.json  # also write every number as JSON
    python bench/gateway.py --baseline HEAD~3  # also the gateway of another revision, same run
                                               # (ratios paired round by round, too)
    python bench/gateway.py --only-workers   # only the workers target (about 1 minute)

Needs `wrk` (`apt-get install -y wrk`); `--profile` needs py-spy (`pip install py-spy`).

One run, one load generator (wrk, closed loop, `--latency`), four targets on loopback, each
server in its own process:

1. direct: a stub TF Serving backend (aiohttp; fixed predictions JSON, model status);
2. bare: an aiohttp pass-through proxy in front of it (one ClientSession; no policy, no audit);
3. floor: the bare proxy plus only the work the audit brief's section 0 makes mandatory for any
   compliant gateway: parse the body, keyed digests, a durable signed decision record before
   forwarding and an outcome record before answering (the gateway's own `AuditLog`, strict);
   the ceiling for any gateway with write-ahead audit, whatever its policies;
4. gateway: `python -m gateway serve --config ...` in front of it with every shipped policy
   pack, personal-data scanning and strict durable audit (fsync per group commit), a tenant
   with a hashed API key, a licence for the model and a CIDR table mapping 127.0.0.0/8 to DE.

The configuration, tenants file, signing key, audit log and request body are generated into a
temporary directory (removed afterwards unless `--keep`); policy watching is off there, so an
edit of the tree during the run cannot trigger a reload. The body is a 28x28 float image plus
a short note without personal data (about 7 KB); every target gets the same headers.

Measured: requests/s, p50 and p99 latency under load (wrk, interleaved rounds, median round),
CPU microseconds per request of each server process (utime+stime from /proc/<pid>/stat), the
gateway's RSS after 1,000 and after 10,000 requests, and the p50 latency at a moderate fixed
rate (an open-loop Python client on raw keep-alive connections; latency from the write of the
request to the last byte of the response). Bars (issue 5): gateway/bare throughput >= 0.8,
p50 added over direct at the fixed rate <= 1.5 ms, RSS growth 1k->10k < 20%.

Workers (issue 14): the same gateway with `workers: 2` on both cores against itself with
`workers: 1` on the proxies' core, wrk -c16 and the stub backend where they always are (so the
two workers share the first core with them); interleaved rounds, the ratio of the median
throughputs (bar >= 1.6x) and the CPU per request of each gateway's whole process tree.

Cores: with two or more cores the load generator, this script and the stub backend share the
first allowed core and the proxy under test gets the second one to itself (`taskset -c`), so
the proxies are measured on a whole core and the shared backend costs all targets alike.
Other processes' CPU on each core during a run is shown as `other` (a noisy machine shows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import linecache
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
# `python bench/gateway.py` puts bench/ first on sys.path, where this very file would shadow
# the `gateway` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
LUA_SCRIPT = Path(__file__).resolve().with_suffix(".lua")
sys.path.insert(1, str(REPO / "bench"))
import grpc_targets  # noqa: E402  (beside this file; bench/ is not a package)

MODEL = "bench-mnist"
PREDICT_PATH = f"/v1/models/{MODEL}:predict"
STATUS_PATH = f"/v1/models/{MODEL}"
TENANT = "bench-eu"
API_KEY = "jg-bench-key-not-a-secret"
PURPOSE = "product_catalog_tagging"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ("direct", "bare", "floor", "gateway")
#: The gRPC twins: the stub backend, a bare pass-through proxy, the gateway's gRPC port.
GRPC_TARGETS = ("grpc-direct", "grpc-bare", "grpc-gateway")
# What a TF Serving classifier answers: ten class scores, TF Serving's own layout.
PREDICTIONS = (
    b'{\n    "predictions": [[0.000112, 0.000231, 0.981204, 0.003311, 0.000052, 0.001874,'
    b" 0.000093, 0.012455, 0.000611, 0.000057]\n    ]\n}"
)
MODEL_STATUS = (
    b'{"model_version_status": [{"version": "1", "state": "AVAILABLE",'
    b' "status": {"error_code": "OK", "error_message": ""}}]}'
)


# --------------------------------------------------------------------------- servers


def serve_backend(port: int) -> None:
    """The stub TF Serving backend: fixed predictions, model status, nothing else."""
    from aiohttp import web

    async def predict(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=PREDICTIONS, content_type="application/json")

    async def status(request: web.Request) -> web.Response:
        return web.Response(body=MODEL_STATUS, content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/models/{target}", predict)
    app.router.add_get("/v1/models/{name}", status)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_bare_proxy(port: int, upstream: str, floor_work: Path | None = None) -> None:
    """A bare pass-through proxy: one ClientSession, no parsing, no policy, no audit.

    With `floor_work`, the *floor*: the same proxy plus only what the audit brief's section 0
    makes every compliant gateway do, whatever its policies: parse the body (orjson, the
    fastest parser at hand, without the gateway's strict checks), a keyed digest of request
    and response, a durable signed `decision` record before forwarding and an `outcome`
    record before answering, both through the gateway's own `AuditLog` with the gateway's
    default settings (strict: fsync per group commit, a signed checkpoint per batch). No
    policy, no scan, no tenants. The full gateway cannot be cheaper than this.

    Both run on the gateway's event loop (uvloop when installed), so that the three proxies
    differ only in the work they do.
    """
    import uuid
    from collections.abc import AsyncIterator

    import aiohttp
    import orjson
    from aiohttp import web

    from gateway.audit import AuditLog, Signer
    from gateway.audit.record import PayloadDigester
    from gateway.audit.writer import AuditOptions
    from gateway.commands.serve import event_loop_factory

    session_key = web.AppKey("session", aiohttp.ClientSession)
    audit_key = web.AppKey("audit", AuditLog)
    # The gateway's own keyed digest (`PayloadDigester`), so that the floor does that work
    # exactly as the gateway does.
    digester = PayloadDigester(b"bench-floor-payload-key-32-bytes", "k1")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = aiohttp.ClientSession(
            base_url=upstream, auto_decompress=False, connector=aiohttp.TCPConnector(limit=100)
        )
        if floor_work is not None:
            app[audit_key] = await AuditLog.open(
                floor_work / "audit-floor",
                Signer.generate("jurisgate-bench-floor"),
                origin="jurisgate-bench/floor",
                options=AuditOptions(durability="strict"),
            )
        yield
        await app[session_key].close()
        if floor_work is not None:
            await app[audit_key].close()

    def mac(payload: bytes) -> str:
        return digester.digest(payload)

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {}
        if request.content_type:
            headers["Content-Type"] = request.headers.get("Content-Type", "")
        audit = request.app[audit_key] if floor_work is not None else None
        decision_id = ""
        if audit is not None and body:
            orjson.loads(body)
            decision_id = str(uuid.uuid4())
            await audit.append(
                {"type": "decision", "decision_id": decision_id, "decision": "allow",
                 "status": 200, "req_mac": mac(body)}
            )  # fmt: skip
        async with request.app[session_key].request(
            request.method, request.raw_path, data=body or None, headers=headers
        ) as upstream_response:
            payload = await upstream_response.read()
            if audit is not None and body:
                await audit.append(
                    {"type": "outcome", "decision_id": decision_id,
                     "status": upstream_response.status, "resp_mac": mac(payload)}
                )  # fmt: skip
            response = web.Response(status=upstream_response.status, body=payload)
            content_type = upstream_response.headers.get("Content-Type")
            if content_type:
                response.headers["Content-Type"] = content_type
            return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner_kwargs: dict[str, Any] = {"auto_decompress": False}
    loop_factory = event_loop_factory()
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None,
        loop=loop_factory() if loop_factory else None, **runner_kwargs,
    )  # fmt: skip


# --------------------------------------------------------------------------- set-up


def request_body() -> bytes:
    """A TF Serving row-format predict body: a 28x28 image and a note without personal data."""
    rng = random.Random(7)
    image = [[round(rng.random(), 5) for _ in range(28)] for _ in range(28)]
    note = "catalogue item 4471: grey running shoe, left side view, studio light"
    return json.dumps({"instances": [{"image": image, "note": note}]}).encode()


def checkout(revision: str, into: Path) -> Path:
    """The gateway and policies of `revision` of this repository, unpacked into `into`
    (`git archive`): the baseline is that revision's code deciding with that revision's
    policies."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "gateway", "policies"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_gateway_files(
    work: Path,
    gateway_port: int,
    backend_port: int,
    grpc_ports: tuple[int, int] | None = None,
    name: str = "jurisgate.yaml",
    policies: Path = REPO / "policies",
) -> Path:
    """The gateway's configuration, tenants file and signing key; returns the config path.

    `grpc_ports` (the gateway's gRPC port, the stub backend's) turn the gRPC front door on.
    """
    from gateway.audit import Signer
    from gateway.audit.signing import write_private_key
    from gateway.request.tenants import hash_api_key

    (work / "keys").mkdir(parents=True, exist_ok=True)
    key_path = work / "keys" / "signing-key.pem"
    if not key_path.exists():
        write_private_key(key_path, Signer.generate("jurisgate-bench"))
    tenants = {
        "tenants": [
            {
                "id": TENANT,
                "api_key_hashes": [hash_api_key(API_KEY)],
                "established_in": "DE",
                "registered_purposes": [PURPOSE],
                "mask_pd_in_free_text": True,
            }
        ]
    }
    config = {
        "version": 1,
        "deployment": "jurisgate-bench",
        "instance": "gw-bench",
        "listen": {"host": "127.0.0.1", "port": gateway_port},
        "admin": {"enabled": False},
        "operator": {"name": "Bench operator", "established_in": "DE"},
        # No watching: a policy edit elsewhere in the tree must not trigger a reload (a full
        # recompile on the gateway's core) in the middle of a measurement.
        "policies": {"paths": [str(policies)], "watch": False},
        "tenants": {"file": "tenants.yaml"},
        "models": [
            {
                "id": MODEL,
                "kind": "classifier",
                "output": "labels",
                "placed_on_market": "2025-03-01",
            }
        ],
        "licences": [
            {
                "id": "LIC-BENCH-MNIST",
                "model": MODEL,
                "licensee": TENANT,
                "kind": "contract",
                "commercial_use": "allowed",
                "valid_from": "2025-01-01",
                "valid_until": "2099-12-31",
            }
        ],
        "backends": [
            {
                "id": "be-bench-de",
                "region": "DE",
                "url": f"http://127.0.0.1:{backend_port}",
                "models": [MODEL],
            }
        ],
        "routing": {"default_by_caller_region": {"EU": "be-bench-de", "other": "be-bench-de"}},
        "network": {"geoip": {"entries": [{"cidr": "127.0.0.0/8", "region": "DE"}]}},
        "audit": {
            "directory": "audit",
            "signing_key": "keys/signing-key.pem",
            "durability": "strict",
        },
    }
    if grpc_ports is not None:
        config["grpc"] = {"enabled": True, "host": "127.0.0.1", "port": grpc_ports[0]}
        config["backends"][0]["grpc"] = f"127.0.0.1:{grpc_ports[1]}"  # type: ignore[index]
    # JSON is valid YAML 1.2 and leaves nothing to YAML 1.1 guessing (dates stay strings).
    (work / "tenants.yaml").write_text(json.dumps(tenants, indent=2) + "\n", encoding="utf-8")
    path = work / name
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    command: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid


def start_server(
    name: str,
    command: list[str],
    port: int,
    log: Path,
    core: int | str | None,
    extra_env: dict[str, str] | None = None,
    tree: Path = REPO,
) -> Server:
    pinned = ["taskset", "-c", str(core), *command] if core is not None else command
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    with log.open("wb") as out:
        process = subprocess.Popen(
            pinned, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, env=env
        )
    return Server(name, port, process, pinned)


def stop_server(server: Server, grace_s: float = 25.0) -> None:
    if server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)


# --------------------------------------------------------------------------- /proc readings


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of the process, in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


class ProcStat(NamedTuple):
    """One process's line of /proc/<pid>/stat: its pid, command name, parent and CPU ticks."""

    pid: int
    name: str
    parent: int
    ticks: int


def proc_stats() -> Iterator[ProcStat]:
    """Every live process's /proc/<pid>/stat, kernel threads included (zombies too)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone since the listing
        close = text.rindex(")")
        fields = text[close + 2 :].split()
        yield ProcStat(
            int(entry.name),
            text[text.index("(") + 1 : close],
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
        )


def tree_ticks(pid: int) -> int:
    """utime + stime of a process and its children (the workers of `jurisgate serve`)."""
    return cpu_ticks(pid) + sum(stat.ticks for stat in proc_stats() if stat.parent == pid)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def core_busy_ticks() -> dict[int, tuple[int, int]]:
    """(busy, steal) ticks per core from /proc/stat; busy is user+nice+system+irq+softirq."""
    busy: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        match = re.match(r"cpu(\d+) (.*)", line)
        if match:
            values = [int(v) for v in match.group(2).split()]
            busy[int(match.group(1))] = (sum(values[i] for i in (0, 1, 2, 5, 6)), values[7])
    return busy


def self_and_children_ticks() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime) * CLK_TCK, (kids.ru_utime + kids.ru_stime) * CLK_TCK


def all_process_ticks() -> dict[int, tuple[str, int]]:
    """(command name, utime+stime) of every process, kernel threads included."""
    return {stat.pid: (stat.name, stat.ticks) for stat in proc_stats()}


@dataclass
class CpuWindow:
    """CPU used by each of our processes and by everything else per core, over one run."""

    ticks: dict[str, int] = field(default_factory=dict)
    other_cores: dict[int, float] = field(default_factory=dict)
    # Time the hypervisor ran something else on our virtual cores.
    steal_cores: dict[int, float] = field(default_factory=dict)
    # The busiest processes that are not ours (a noisy neighbour shows here), in cores.
    other_processes: list[tuple[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


@contextmanager
def cpu_window(
    servers: Sequence[Server], core_of: dict[str, int | None], client_core: int | None
) -> Iterator[CpuWindow]:
    window = CpuWindow()
    before = {s.name: cpu_ticks(s.pid) for s in servers}
    processes_before = all_process_ticks()
    cores_before = core_busy_ticks()
    me_before, kids_before = self_and_children_ticks()
    started = time.perf_counter()
    yield window
    window.wall_s = time.perf_counter() - started
    me_after, kids_after = self_and_children_ticks()
    cores_after = core_busy_ticks()
    processes_after = all_process_ticks()
    for server in servers:
        window.ticks[server.name] = cpu_ticks(server.pid) - before[server.name]
    ours = {s.pid for s in servers} | {os.getpid()}
    others = [
        (f"{name}[{pid}]", (ticks - processes_before[pid][1]) / CLK_TCK / max(window.wall_s, 1e-9))
        for pid, (name, ticks) in processes_after.items()
        if pid in processes_before and pid not in ours
    ]
    window.other_processes = sorted((o for o in others if o[1] >= 0.05), key=lambda o: -o[1])[:3]
    per_core: Counter[int] = Counter()
    for server in servers:
        core = core_of.get(server.name)
        if core is not None:
            per_core[core] += window.ticks[server.name]
    if client_core is not None:
        per_core[client_core] += int((me_after - me_before) + (kids_after - kids_before))
    for core, (after, steal_after) in cores_after.items():
        if core in core_of.values() or core == client_core:
            busy_before, steal_before = cores_before.get(core, (after, steal_after))
            other = after - busy_before - per_core[core]
            window.other_cores[core] = max(0.0, other / CLK_TCK / max(window.wall_s, 1e-9))
            window.steal_cores[core] = (steal_after - steal_before) / CLK_TCK / window.wall_s


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: dict[str, float]
    busy: dict[str, float]
    other_cores: dict[int, float]
    steal_cores: dict[int, float]
    other_processes: list[tuple[str, float]]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def wrk_command(
    url: str, *, duration_s: float, connections: int, core: int | None, timeout_s: float = 5.0
) -> list[str]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    return ["taskset", "-c", str(core), *command] if core is not None else command


def run_wrk(
    command: list[str], env: dict[str, str], limit: int | None, wall_cap_s: float
) -> dict[str, Any]:
    run_env = dict(env)
    if limit is not None:
        run_env["BENCH_LIMIT"] = str(limit)
    lines: list[str] = []
    with subprocess.Popen(
        command, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as wrk:
        # The stdout loop ends when wrk exits: by its -d duration, early by SIGINT once the
        # counted requests are done, or by this kill at the wall-clock cap.
        cap = threading.Timer(wall_cap_s, wrk.kill)
        cap.start()
        try:
            assert wrk.stdout is not None and wrk.stderr is not None
            for line in wrk.stdout:
                lines.append(line)
                if line.startswith("BENCH_LIMIT_REACHED"):
                    wrk.send_signal(signal.SIGINT)
            errors = wrk.stderr.read()
            wrk.wait()
        finally:
            cap.cancel()
    for line in lines:
        if line.startswith("BENCH_JSON "):
            parsed: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return parsed
    raise RuntimeError(f"wrk failed ({wrk.returncode}):\n{''.join(lines)}\n{errors}")


def measured_wrk(
    url: str,
    servers: Sequence[Server],
    core_of: dict[str, int | None],
    client_core: int | None,
    env: dict[str, str],
    *,
    duration_s: float,
    connections: int,
) -> WrkResult:
    command = wrk_command(url, duration_s=duration_s, connections=connections, core=client_core)
    with cpu_window(servers, core_of, client_core) as window:
        raw = run_wrk(command, env, None, wall_cap_s=duration_s + 30)
    served = max(1, int(raw["requests"]))
    errors = sum(
        int(raw[k])
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=errors,
        cpu_us={n: t * 1e6 / CLK_TCK / served for n, t in window.ticks.items()},
        busy={n: t / CLK_TCK / max(window.wall_s, 1e-9) for n, t in window.ticks.items()},
        other_cores=window.other_cores,
        steal_cores=window.steal_cores,
        other_processes=window.other_processes,
    )


# --------------------------------------------------------------------------- open-loop client


class Connection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams (cheap for the client core)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, message: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(message)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            for _ in range(1_000_000):
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            body = b""
        return status, headers, body


def http_message(method: str, path: str, port: int, body: bytes) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"X-Api-Key: {API_KEY}\r\nX-Purpose: {PURPOSE}\r\n"
    )
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def one_request(
    port: int, method: str, path: str, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    conn = await Connection.open(port)
    try:
        return await asyncio.wait_for(conn.exchange(http_message(method, path, port, body)), 30)
    finally:
        conn.close()


@dataclass
class RateResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    waited_for_connection: int = 0
    errors: int = 0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def open_loop(
    port: int, body: bytes, rate: float, count: int, result: RateResult, pool_size: int = 8
) -> None:
    """Send `count` predict requests at `rate` per second whatever the responses do."""
    message = http_message("POST", PREDICT_PATH, port, body)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool_size):
        pool.put_nowait(await Connection.open(port))

    async def send() -> None:
        if pool.empty():
            result.waited_for_connection += 1
        conn = await pool.get()
        started = time.perf_counter()
        try:
            status, _, _ = await asyncio.wait_for(conn.exchange(message), 10)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            result.errors += 1
            conn.close()
            pool.put_nowait(await Connection.open(port))
            return
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        result.statuses[status] += 1
        pool.put_nowait(conn)

    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks: list[asyncio.Task[None]] = []
    for index in range(count):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send()))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    while not pool.empty():
        pool.get_nowait().close()


def paired_ratios(now: Sequence[WrkResult], then: Sequence[WrkResult]) -> dict[str, list[float]]:
    """Per-round ratios of the gateway to the baseline. Within a round the two run back to
    back, so the machine's slow spells (other tenants, frequency changes) mostly cancel;
    the ratio of the two medians mixes rounds run minutes apart."""
    return {
        "throughput": [a.rps / b.rps for a, b in zip(now, then, strict=True) if b.rps],
        "cpu_per_request": [
            a.cpu_us["gateway"] / b.cpu_us["baseline"]
            for a, b in zip(now, then, strict=True)
            if b.cpu_us.get("baseline")
        ],
    }


def _ratio_span(ratios: Sequence[float]) -> str:
    ordered = sorted(ratios)
    if not ordered:
        return "n/a"
    median = statistics.median(ordered)
    return f"median {median:.2f}x (rounds {ordered[0]:.2f}x to {ordered[-1]:.2f}x)"


# --------------------------------------------------------------------------- profiling


@dataclass
class Profile:
    """py-spy samples of the gateway under load, split by thread."""

    samples: int
    thread_samples: dict[str, int]
    loop_self: list[tuple[str, float]]
    loop_total: list[tuple[str, float]]
    loop_areas: list[tuple[str, float]]
    stages: list[tuple[str, float]]
    other_self: list[tuple[str, float]]


# Frames every event-loop stack has; they say nothing about where the time goes.
_PLUMBING = re.compile(
    r"^(<module>|_run_module_as_main|_run_code|main|run|Runner\.run|"
    r"BaseEventLoop\.(run_forever|run_until_complete|_run_once)|Handle\._run) "
)


def profile_gateway(
    gateway: Server,
    wrk: list[str],
    env: dict[str, str],
    duration_s: float,
    out: Path,
    core: int | None,
) -> Profile | None:
    """Sample the gateway with py-spy while wrk loads it: the event loop's hot spots by self
    time (file:line) and by time on the stack (function), and the other threads' by self."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("  py-spy not found: `pip install py-spy` to profile the gateway")
        return None
    command = [
        py_spy, "record", "--pid", str(gateway.pid), "--duration", str(round(duration_s)),
        "--rate", "250", "--format", "raw", "--threads", "--nonblocking", "--output", str(out),
    ]  # fmt: skip
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    run_wrk(wrk, env, None, wall_cap_s=duration_s + 30)
    try:
        _, err = sampler.communicate(timeout=duration_s + 30)
    except subprocess.TimeoutExpired:
        sampler.kill()
        _, err = sampler.communicate()
    if not out.exists():
        print(f"  py-spy failed: {err.decode(errors='replace').strip()[:400]}")
        return None
    loop_self: Counter[str] = Counter()
    loop_total: Counter[str] = Counter()
    other_self: Counter[str] = Counter()
    loop_areas: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *raw_frames = stack.split(";")
        frames = [_short_frame(f) for f in raw_frames if f.strip()]
        if not frames:
            continue
        is_loop = "MainThread" in thread
        threads["event loop (MainThread)" if is_loop else "other threads"] += count
        if is_loop:
            loop_self[frames[-1]] += count
            loop_areas[_area(frames[-1])] += count
            # The request pipeline's own call site (deepest handlers.py frame) names the stage.
            sites = [f for f in frames if " gateway/edge/handlers.py:" in f]
            stages[sites[-1] if sites else "(outside gateway/edge/handlers.py)"] += count
            for function in {f.rsplit(":", 1)[0] for f in frames if not _PLUMBING.match(f)}:
                loop_total[function] += count
        else:
            other_self[frames[-1]] += count
    samples = sum(threads.values())
    loop = max(1, threads["event loop (MainThread)"])
    other = max(1, threads["other threads"])
    return Profile(
        samples=samples,
        thread_samples=dict(threads),
        loop_self=[(n, c / loop * 100) for n, c in loop_self.most_common(25)],
        loop_total=[(n, c / loop * 100) for n, c in loop_total.most_common(30)],
        loop_areas=[(n, c / loop * 100) for n, c in loop_areas.most_common(14)],
        stages=[(n, c / loop * 100) for n, c in stages.most_common(16)],
        other_self=[(n, c / other * 100) for n, c in other_self.most_common(6)],
    )


def _source_line(frame: str) -> str:
    """The source text of a `func path:line` frame in this repository, shortened."""
    location = frame.rsplit(" ", 1)[-1]
    path, _, line = location.rpartition(":")
    if not line.isdigit() or not (REPO / path).is_file():
        return ""
    text = linecache.getline(str(REPO / path), int(line)).strip()
    return text if len(text) <= 70 else text[:67] + "..."


def _area(frame: str) -> str:
    """The module (gateway) or package (libraries) a shortened frame belongs to."""
    path = frame.rsplit(" ", 1)[-1].rsplit(":", 1)[0]
    if path.startswith("gateway/"):
        return path
    if path.startswith("stdlib/"):
        return "stdlib " + path.removeprefix("stdlib/").split("/", 1)[0]
    return path.split("/", 1)[0]


def _short_frame(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func file.py:123`, repo files relative to the repo."""
    match = re.match(r"(.*) \((.*):(\d+)\)$", frame.strip())
    if not match:
        return frame.strip()
    function, path, line = match.groups()
    if path.startswith(str(REPO) + "/"):
        path = path[len(str(REPO)) + 1 :]
    elif "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/lib/python3" in path:
        path = "stdlib/" + path.split("/lib/python3", 1)[1].split("/", 1)[1]
    return f"{function} {path}:{line}"


# --------------------------------------------------------------------------- main


def idle_penalty(core: int | None, samples: int = 200, idle_s: float = 0.005) -> float:
    """How much slower a small piece of Python runs right after `idle_s` of sleep than when
    run back to back, on the proxies' core (median ratio). At a moderate fixed rate every
    request starts on an idle core, so this machine property scales all low-load latencies;
    on virtual machines it can be large."""
    code = (
        "import statistics, sys, time\n"
        "from gateway.audit.record import validate_record\n"
        "record = {'type': 'decision', 'decision_id': 'd', 'decision': 'allow', 'status': 200}\n"
        "def timed():\n"
        "    started = time.perf_counter(); validate_record(record)\n"
        "    return time.perf_counter() - started\n"
        f"warm = statistics.median(timed() for _ in range({samples}))\n"
        "cold = []\n"
        f"for _ in range({samples}):\n"
        f"    time.sleep({idle_s}); cold.append(timed())\n"
        "print(statistics.median(cold) / warm)\n"
    )
    pinned = ["taskset", "-c", str(core)] if core is not None else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [*pinned, sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return float(out.stdout.strip())


def pick_cores(pin: bool) -> tuple[int | None, int | None]:
    allowed = sorted(os.sched_getaffinity(0))
    if not pin or len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def wait_ready(server: Server, deadline_s: float = 90.0) -> None:
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}")
        try:
            status, _, _ = asyncio.run(one_request(server.port, "GET", STATUS_PATH))
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {deadline_s:.0f} s")


def audit_records(directory: Path) -> int:
    from gateway.audit.storage import list_segments

    return sum(
        sum(1 for line in path.read_bytes().splitlines() if line.strip())
        for _, path in list_segments(directory)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved wrk rounds")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--rate", type=float, default=200.0, help="fixed rate, requests/s")
    parser.add_argument("--rate-seconds", type=float, default=8.0, help="fixed-rate seconds")
    parser.add_argument("--rss-first", type=int, default=1_000)
    parser.add_argument("--rss-second", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway under load")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also run gateway variants with audit settings changed",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the gateway of git revision REV (same configuration, same rounds)",
    )
    parser.add_argument(
        "--no-grpc", action="store_true", help="skip the gRPC targets (direct, bare, gateway)"
    )
    parser.add_argument(
        "--no-workers", action="store_true", help="skip the workers target (2 workers vs 1)"
    )
    parser.add_argument("--only-workers", action="store_true", help="run only the workers target")
    parser.add_argument(
        "--role",
        choices=["backend", "bare", "floor", "grpc-backend", "grpc-bare", "grpc-load"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.role == "backend":
        serve_backend(args.port)
        return 0
    if args.role == "bare":
        serve_bare_proxy(args.port, args.upstream)
        return 0
    if args.role == "floor":
        serve_bare_proxy(args.port, args.upstream, floor_work=args.work)
        return 0
    if args.role == "grpc-backend":
        grpc_targets.serve_grpc_backend(args.port)
        return 0
    if args.role == "grpc-bare":
        grpc_targets.serve_grpc_bare_proxy(args.port, args.upstream)
        return 0
    if args.role == "grpc-load":
        metadata = [("x-api-key", API_KEY), ("x-purpose", PURPOSE)]
        grpc_targets.run_grpc_load(args.port, MODEL, metadata, args.concurrency, args.duration)
        return 0
    if shutil.which("wrk") is None:
        print("wrk not found: install it with `apt-get install -y wrk`", file=sys.stderr)
        return 1
    if not all(0 < n <= 1_000_000 for n in (args.rss_first, args.rss_second, args.rounds)):
        parser.error("counts must be between 1 and 1,000,000")
    return run(args)


# Gateway variants for --diagnose: the same config with audit settings changed by environment
# overrides, to split the gateway's latency between waiting for fsync and everything else.
VARIANTS = (
    ("gw-relaxed", "audit relaxed (no fsync)", {"JURISGATE__AUDIT__DURABILITY": "relaxed"}),
)


@dataclass
class Rig:
    """The running processes and how to load them."""

    work: Path
    body: bytes
    client_core: int | None
    server_core: int | None
    wrk_env: dict[str, str]
    servers: dict[str, Server] = field(default_factory=dict)
    core_of: dict[str, int | None] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.servers[name].port}{PREDICT_PATH}"

    def start(
        self,
        name: str,
        command: list[str],
        port: int,
        core: int | None,
        tree: Path = REPO,
        **env: str,
    ) -> None:
        log = self.work / f"{name}.log"
        self.servers[name] = start_server(name, command, port, log, core, env, tree)
        self.core_of[name] = core

    def stop(self, name: str) -> None:
        stop_server(self.servers.pop(name))
        self.core_of.pop(name, None)

    def check(self, name: str) -> None:
        """The predict must come back 200 with the backend's exact bytes (and a decision id)."""
        status, headers, answer = asyncio.run(
            one_request(self.servers[name].port, "POST", PREDICT_PATH, self.body)
        )
        if status != 200 or answer != PREDICTIONS:
            raise RuntimeError(f"{name}: predict answered {status}: {answer[:600]!r}")
        if name.startswith("gw") and "x-decision-id" not in headers:
            raise RuntimeError(f"{name}: no X-Decision-Id on an allowed response")

    def wrk(self, name: str, duration_s: float, connections: int) -> WrkResult:
        return measured_wrk(
            self.url(name), list(self.servers.values()), self.core_of, self.client_core,
            self.wrk_env, duration_s=duration_s, connections=connections,
        )  # fmt: skip

    def warm(self, name: str, duration_s: float, connections: int) -> None:
        command = wrk_command(
            self.url(name), duration_s=duration_s, connections=connections, core=self.client_core
        )
        run_wrk(command, self.wrk_env, None, wall_cap_s=duration_s + 30)

    def fixed_rate(self, name: str, rate: float, count: int, into: RateResult) -> None:
        asyncio.run(open_loop(self.servers[name].port, self.body, rate, count, into))


@dataclass
class WorkersRound:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float
    #: CPU other processes used on the machine during the round, in cores.
    others: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / max(self.duration_s, 1e-9)


def workers_rounds(
    rig: Rig, args: argparse.Namespace, gateway_command: list[str], backend_port: int
) -> dict[str, WorkersRound]:
    """The workers target: `workers: 2` on both cores against `workers: 1` on one."""
    both = (
        None
        if rig.client_core is None or rig.server_core is None
        else f"{rig.client_core},{rig.server_core}"
    )
    setups = {"gw-1worker": ("1", rig.server_core), "gw-2workers": ("2", both)}
    servers: dict[str, Server] = {}
    for name, (count, cores) in setups.items():
        port = free_port()
        servers[name] = start_server(
            name, gateway_command, port, rig.work / f"{name}.log", cores,
            {"JURISGATE__WORKERS": count, "JURISGATE__LISTEN__PORT": str(port),
             "JURISGATE__GRPC__PORT": "0",
             "JURISGATE__AUDIT__DIRECTORY": str(rig.work / f"audit-{name}")},
        )  # fmt: skip
        rig.servers[name] = servers[name]
    rounds: dict[str, list[WorkersRound]] = {name: [] for name in setups}
    try:
        for name, server in servers.items():
            wait_ready(server)
            rig.check(name)
            rig.warm(name, args.warmup, args.connections)
        names = list(setups)
        for index in range(args.rounds):
            for name in names[index % 2 :] + names[: index % 2]:
                server = servers[name]
                command = wrk_command(
                    rig.url(name), duration_s=args.duration, connections=args.connections,
                    core=rig.client_core,
                )  # fmt: skip
                rest = [s.pid for s in rig.servers.values() if s is not server]

                def ours(rest: list[int] = rest) -> float:
                    # This script, wrk (a reaped child), the backend, the idle gateway.
                    return sum(cpu_ticks(pid) for pid in rest) + sum(self_and_children_ticks())

                before, ours_before, cores_before = (
                    tree_ticks(server.pid),
                    ours(),
                    core_busy_ticks(),
                )
                started = time.perf_counter()
                raw = run_wrk(command, rig.wrk_env, None, wall_cap_s=args.duration + 30)
                wall = max(time.perf_counter() - started, 1e-9)
                ticks = tree_ticks(server.pid) - before
                cores_after = core_busy_ticks()
                busy = sum(cores_after[c][0] - cores_before[c][0] for c in cores_after)
                # Everything else that ran on the machine meanwhile, in cores: the second core
                # is only as free as this says.
                others = max(0.0, (busy - ticks - (ours() - ours_before)) / CLK_TCK / wall)
                served = max(1, int(raw["requests"]))
                result = WorkersRound(
                    requests=int(raw["requests"]),
                    duration_s=raw["duration_us"] / 1e6,
                    p50_ms=raw["p50_us"] / 1000,
                    p99_ms=raw["p99_us"] / 1000,
                    errors=sum(int(raw[k]) for k in ("connect_errors", "read_errors",
                               "write_errors", "status_errors", "timeouts")),
                    cpu_us=ticks * 1e6 / CLK_TCK / served,
                    others=others,
                )  # fmt: skip
                rounds[name].append(result)
                progress(
                    f"round {index + 1} {name:12s} {result.rps:7.0f} req/s  p50 "
                    f"{result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  {result.cpu_us:5.0f} "
                    f"us/req (process tree)  errors {result.errors}  other processes "
                    f"{others:.2f} cores"
                )
        workers = {
            name: sorted(found, key=lambda r: r.rps)[len(found) // 2]
            for name, found in rounds.items()
        }
        for name in setups:
            logs = sorted(p.name for p in (rig.work / f"audit-{name}").glob("w*"))
            progress(f"{name}: audit logs {logs or ['(one, in the directory itself)']}")
    finally:
        for name in setups:
            rig.stop(name)
    return workers


def report_workers(args: argparse.Namespace, rig: Rig, workers: dict[str, WorkersRound]) -> None:
    one, two = workers["gw-1worker"], workers["gw-2workers"]
    ratio = two.rps / max(one.rps, 1e-9)
    cores = (
        "not pinned"
        if rig.client_core is None
        else f"1 worker on core {rig.server_core}; 2 workers on cores "
        f"{rig.client_core},{rig.server_core} (wrk and the stub backend on core "
        f"{rig.client_core})"
    )
    print()
    print(f"workers: the gateway with 2 workers against itself with 1 ({cores}), "
          f"wrk -c{args.connections}, median of {args.rounds} interleaved rounds")  # fmt: skip
    print(f"{'target':14s}{'req/s':>8s}{'p50 ms':>8s}{'p99 ms':>8s}{'CPU us/req':>12s}"
          f"{'errors':>8s}{'other processes':>17s}")  # fmt: skip
    for name, r in workers.items():
        print(f"{name:14s}{r.rps:8.0f}{r.p50_ms:8.2f}{r.p99_ms:8.2f}{r.cpu_us:12.0f}"
              f"{r.errors:8d}{r.others:11.2f} cores")  # fmt: skip
    print("(CPU us/req: the gateway's whole process tree; other processes: CPU of everything "
          "outside this bench on the machine during the round)")  # fmt: skip
    print(f"{'bar':40s}{'measured':>12s}{'bar':>14s}  result")
    print(f"{'2 workers / 1 worker throughput':40s}{ratio:>11.2f}x{'>= 1.60x':>14s}  "
          f"{'PASS' if ratio >= 1.6 else 'MISS'}")  # fmt: skip


def run_workers_only(args: argparse.Namespace) -> int:
    """`--only-workers`: the stub backend and the two gateways, nothing else."""
    client_core, server_core = pick_cores(not args.no_pin)
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    work = Path(tempfile.mkdtemp(prefix="jurisgate-bench-"))
    body = request_body()
    (work / "body.json").write_bytes(body)
    backend_port = free_port()
    config_path = write_gateway_files(work, free_port(), backend_port)
    me = [sys.executable, str(Path(__file__).resolve())]
    gateway_command = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)]
    wrk_env = dict(
        os.environ, BENCH_BODY=str(work / "body.json"), BENCH_API_KEY=API_KEY, BENCH_PURPOSE=PURPOSE
    )
    rig = Rig(work, body, client_core, server_core, wrk_env)
    try:
        rig.start("direct", [*me, "--role", "backend", "--port", str(backend_port)],
                  backend_port, client_core)  # fmt: skip
        wait_ready(rig.servers["direct"])
        print(f"jurisgate gateway bench, workers target: {len(body)} B predict body, "
              f"work dir {work}")  # fmt: skip
        print(f"gateway: {gateway_settings(config_path)}")
        workers = workers_rounds(rig, args, gateway_command, backend_port)
    except RuntimeError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        print(f"logs are in {work}", file=sys.stderr)
        return 1
    finally:
        for name in reversed(list(rig.servers)):
            rig.stop(name)
    report_workers(args, rig, workers)
    if args.json:
        args.json.write_text(
            json.dumps({"workers": {n: asdict(r) for n, r in workers.items()}}, indent=2) + "\n",
            encoding="utf-8",
        )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.only_workers:
        return run_workers_only(args)
    client_core, server_core = pick_cores(not args.no_pin)
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    work = Path(tempfile.mkdtemp(prefix="jurisgate-bench-"))
    body = request_body()
    (work / "body.json").write_bytes(body)
    ports = {name: free_port() for name in (*TARGETS, *GRPC_TARGETS)}
    grpc_ports = None if args.no_grpc else (ports["grpc-gateway"], ports["grpc-direct"])
    config_path = write_gateway_files(work, ports["gateway"], ports["direct"], grpc_ports)
    upstream = f"http://127.0.0.1:{ports['direct']}"
    me = [sys.executable, str(Path(__file__).resolve())]
    gateway_command = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)]
    wrk_env = dict(
        os.environ, BENCH_BODY=str(work / "body.json"), BENCH_API_KEY=API_KEY, BENCH_PURPOSE=PURPOSE
    )
    rig = Rig(work, body, client_core, server_core, wrk_env)
    results: dict[str, Any] = {"body_bytes": len(body)}
    profile: Profile | None = None
    diagnosis: list[tuple[str, str, WrkResult, float, float]] = []
    try:
        rig.start("direct", [*me, "--role", "backend", "--port", str(ports["direct"])],
                  ports["direct"], client_core)  # fmt: skip
        rig.start("bare", [*me, "--role", "bare", "--port", str(ports["bare"]), "--upstream",
                  upstream], ports["bare"], server_core)  # fmt: skip
        rig.start("floor", [*me, "--role", "floor", "--port", str(ports["floor"]), "--upstream",
                  upstream, "--work", str(work)], ports["floor"], server_core)  # fmt: skip
        # One process, as measured before workers existed (`workers: 0` would follow the
        # affinity mask, which taskset also makes one core).
        rig.start("gateway", gateway_command, ports["gateway"], server_core,
                  JURISGATE__WORKERS="1")  # fmt: skip
        measured = list(TARGETS)
        if args.baseline:
            # The same configuration served by another revision's code, in the same minutes.
            tree = checkout(args.baseline, work / "baseline-tree")
            port = free_port()
            # REST only: an older revision may not know the gRPC settings.
            baseline_config = write_gateway_files(
                work, port, ports["direct"], None, "jurisgate-baseline.yaml", tree / "policies"
            )
            baseline_command = [*gateway_command[:-1], str(baseline_config)]
            rig.start("baseline", baseline_command, port, server_core, tree,
                      JURISGATE__LISTEN__PORT=str(port),
                      JURISGATE__AUDIT__DIRECTORY=str(work / "audit-baseline"))  # fmt: skip
            measured.append("baseline")
        # Remember the sources the gateway runs now: the profile names file:line, and the tree
        # may be edited while the bench runs.
        for source in sorted((REPO / "gateway").rglob("*.py")):
            linecache.getlines(str(source))
        variants = [name for name, _, _ in VARIANTS] if args.diagnose else []
        for name, _, overrides in VARIANTS if args.diagnose else ():
            port = free_port()
            rig.start(name, gateway_command, port, server_core,
                      JURISGATE__LISTEN__PORT=str(port),
                      JURISGATE__AUDIT__DIRECTORY=str(work / f"audit-{name}"),
                      **overrides)  # fmt: skip
        if not args.no_grpc:
            rig.start("grpc-direct", [*me, "--role", "grpc-backend", "--port",
                      str(ports["grpc-direct"])], ports["grpc-direct"], client_core)  # fmt: skip
            rig.start("grpc-bare", [*me, "--role", "grpc-bare", "--port", str(ports["grpc-bare"]),
                      "--upstream", f"127.0.0.1:{ports['grpc-direct']}"], ports["grpc-bare"],
                      server_core)  # fmt: skip
        for name in [*measured, *variants]:
            wait_ready(rig.servers[name])
            rig.check(name)

        print(f"jurisgate gateway bench: {len(body)} B predict body, work dir {work}")
        print(f"gateway: {gateway_settings(config_path)}")
        load_1m = os.getloadavg()[0]
        if load_1m > 0.5:
            print(
                f"warning: load average {load_1m:.2f} before the start; other processes share "
                "the cores (see `other load` per run) and make the numbers noisy"
            )
        if client_core is None:
            print("cores: not pinned")
        else:
            print(
                f"cores: wrk, this script and the stub backend on core {client_core}; "
                f"the bare proxy and the gateway on core {server_core} (taskset -c)"
            )
        for name in TARGETS:
            server = rig.servers[name]
            print(f"  {name:8s} pid {server.pid:<7d} {' '.join(server.command)}")
        progress("check: every target answers the predict with 200 and the backend's exact bytes")

        # RSS of a fresh gateway after the first N requests and after M in total.
        gateway = rig.servers["gateway"]
        rss: dict[str, int] = {"start": rss_kib(gateway.pid)}
        done = 1
        for label, target_total in (("first", args.rss_first), ("second", args.rss_second)):
            command = wrk_command(
                rig.url("gateway"), duration_s=60, connections=8, core=client_core
            )
            raw = run_wrk(command, wrk_env, max(1, target_total - done), wall_cap_s=90)
            done += int(raw["requests"])
            if raw["status_errors"] or raw["timeouts"]:
                raise RuntimeError(f"gateway: errors during the RSS run: {raw}")
            rss[label] = rss_kib(gateway.pid)
            rss[f"{label}_requests"] = done
        progress(
            f"gateway RSS: {rss['first'] / 1024:.1f} MiB after {rss['first_requests']} requests, "
            f"{rss['second'] / 1024:.1f} MiB after {rss['second_requests']}"
        )

        # Warm-up, then interleaved rounds (the order rotates so no target always goes first).
        for name in measured:
            rig.warm(name, args.warmup, args.connections)
        rounds: dict[str, list[WrkResult]] = {name: [] for name in measured}
        for index in range(args.rounds):
            shift = index % len(measured)
            for name in measured[shift:] + measured[:shift]:
                result = rig.wrk(name, args.duration, args.connections)
                rounds[name].append(result)
                progress(f"round {index + 1} {name:8s} {describe(result, name)}")
        load = {name: median_round(rounds[name]) for name in measured}
        results["wrk_rounds"] = {name: [asdict(r) for r in rounds[name]] for name in measured}
        if "baseline" in rounds:
            results["baseline_paired"] = paired_ratios(rounds["gateway"], rounds["baseline"])

        if not args.no_grpc:
            grpc_load = grpc_rounds(rig, args, ports, me)
            results["grpc"] = {name: asdict(r) for name, r in grpc_load.items()}
        # The fixed moderate rate, in two interleaved halves per target.
        per_half = max(1, int(args.rate * args.rate_seconds / 2))
        # Gateway variants (--diagnose) take part here so that all share the same minutes.
        rates = {name: RateResult() for name in [*measured, *variants]}
        for _ in range(2):
            for name in rates:
                rig.fixed_rate(name, args.rate, per_half, rates[name])
        progress(
            "fixed rate p50: "
            + ", ".join(f"{n} {r.percentile(50):.3f} ms" for n, r in rates.items())
        )
        rss["end"] = rss_kib(gateway.pid)
        results["idle_penalty"] = idle_penalty(server_core)
        rss["bare_end"] = rss_kib(rig.servers["bare"].pid)

        if args.diagnose:
            # Strict audit caps how many requests 16 connections keep in the gateway; with more
            # connections the gateway's own CPU becomes the limit.
            wide = args.connections * 4
            bare_wide = rig.wrk("bare", args.duration, wide)
            progress(f"bare, wrk -c{wide}: {describe(bare_wide, 'bare')}")
            result = rig.wrk("gateway", args.duration, wide)
            label = f"as configured, wrk -c{wide}"
            diagnosis.append((label, "gateway", result, float("nan"), bare_wide.rps))
            progress(f"{label}: {describe(result, 'gateway')}")
            for name, label, _ in VARIANTS:
                rig.warm(name, args.warmup, args.connections)
                result = rig.wrk(name, args.duration, args.connections)
                added = rates[name].percentile(50) - rates["direct"].percentile(50)
                diagnosis.append((label, name, result, added, load["bare"].rps))
                progress(f"{label}: {describe(result, name)}, p50 added {added:+.3f} ms")

        workers = (
            None if args.no_workers else workers_rounds(rig, args, gateway_command, ports["direct"])
        )

        if args.profile:
            progress(
                f"profiling the gateway with py-spy for {args.profile_seconds:.0f} s under wrk"
            )
            command = wrk_command(
                rig.url("gateway"), duration_s=args.profile_seconds,
                connections=args.connections, core=client_core,
            )  # fmt: skip
            profile = profile_gateway(
                gateway, command, wrk_env, args.profile_seconds, work / "py-spy.txt", client_core
            )
    except RuntimeError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        print(f"logs are in {work}", file=sys.stderr)
        return 1
    finally:
        for name in reversed(list(rig.servers)):
            rig.stop(name)

    records = audit_records(work / "audit")
    report(
        args, load, rates, rss, records, diagnosis, profile, wrk_command_text(args, client_core),
        results.get("baseline_paired"),
    )  # fmt: skip
    if not args.no_grpc:
        report_grpc(args, load, grpc_load)
    if workers is not None:
        report_workers(args, rig, workers)
    print(
        f"idle penalty on the proxies' core: a small Python function runs "
        f"{results['idle_penalty']:.1f}x slower right after 5 ms of sleep than back to back "
        "(it inflates every latency at the fixed rate)"
    )
    if args.json:
        results.update(
            summary={name: asdict(r) for name, r in load.items()},
            fixed_rate={name: rate_summary(r, args.rate) for name, r in rates.items()},
            gateway_rss_kib=rss,
            audit_records=records,
            diagnosis=[
                {"variant": v, **asdict(r), "p50_added_ms": a} for v, _, r, a, _ in diagnosis
            ],
            profile=asdict(profile) if profile else None,
            workers={n: asdict(r) for n, r in workers.items()} if workers else None,
        )
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


@dataclass
class GrpcResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float

    @property
    def rps(self) -> float:
        return self.requests / max(self.duration_s, 1e-9)


def grpc_rounds(
    rig: Rig, args: argparse.Namespace, ports: dict[str, int], me: list[str]
) -> dict[str, GrpcResult]:
    """Interleaved closed-loop rounds against the three gRPC targets; the median round each."""
    server_of = {"grpc-direct": "grpc-direct", "grpc-bare": "grpc-bare", "grpc-gateway": "gateway"}
    rounds: dict[str, list[GrpcResult]] = {name: [] for name in GRPC_TARGETS}
    for index in range(args.rounds + 1):  # the first round warms up
        shift = index % len(GRPC_TARGETS)
        for name in GRPC_TARGETS[shift:] + GRPC_TARGETS[:shift]:
            server = rig.servers[server_of[name]]
            command = [*me, "--role", "grpc-load", "--port", str(ports[name]),
                       "--concurrency", str(args.connections), "--duration",
                       str(args.warmup if index == 0 else args.duration)]  # fmt: skip
            if rig.client_core is not None:
                command = ["taskset", "-c", str(rig.client_core), *command]
            env = dict(os.environ, PYTHONPATH=str(REPO))
            before = cpu_ticks(server.pid)
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            ticks = cpu_ticks(server.pid) - before
            raw = json.loads(done.stdout.strip().splitlines()[-1])
            result = GrpcResult(
                requests=int(raw["requests"]),
                duration_s=float(raw["duration_s"]),
                p50_ms=float(raw["p50_ms"]),
                p99_ms=float(raw["p99_ms"]),
                errors=int(raw["errors"]),
                cpu_us=ticks * 1e6 / CLK_TCK / max(1, int(raw["requests"])),
            )
            if index:
                rounds[name].append(result)
                progress(
                    f"grpc round {index} {name:12s} {result.rps:7.0f} req/s  p50 "
                    f"{result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                    f"{result.cpu_us:5.0f} us/req  errors {result.errors}"
                )
    return {name: sorted(r, key=lambda x: x.rps)[len(r) // 2] for name, r in rounds.items()}


def report_grpc(
    args: argparse.Namespace, load: dict[str, WrkResult], grpc_load: dict[str, GrpcResult]
) -> None:
    print()
    print(
        f"gRPC: closed loop, {args.connections} calls in flight on one channel, "
        f"{args.duration:.0f} s rounds (median of {args.rounds})"
    )
    print(f"{'target':14s}{'req/s':>8s}{'p50 ms':>8s}{'p99 ms':>8s}{'server CPU us/req':>19s}"
          f"{'errors':>7s}")  # fmt: skip
    for name, r in grpc_load.items():
        print(f"{name:14s}{r.rps:8.0f}{r.p50_ms:8.2f}{r.p99_ms:8.2f}{r.cpu_us:19.0f}{r.errors:7d}")
    rest_ratio = load["gateway"].rps / load["bare"].rps
    grpc_ratio = grpc_load["grpc-gateway"].rps / grpc_load["grpc-bare"].rps
    relative = grpc_ratio / rest_ratio
    print(
        f"gateway/bare throughput: REST {rest_ratio:.2f}x, gRPC {grpc_ratio:.2f}x; gRPC path "
        f"relative to REST path {relative:.2f}x (bar >= 0.80x: "
        f"{'PASS' if relative >= 0.8 else 'MISS'})"
    )


_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {message}", flush=True)


def describe(result: WrkResult, name: str) -> str:
    cpu = result.cpu_us.get(name, 0.0)
    noise = " ".join(
        f"core{core}={share:.2f}"
        + (
            f"+steal {result.steal_cores[core]:.2f}"
            if result.steal_cores.get(core, 0) >= 0.05
            else ""
        )
        for core, share in sorted(result.other_cores.items())
    )
    noise += "".join(f" {process}={share:.2f}" for process, share in result.other_processes)
    return (
        f"{result.rps:7.0f} req/s  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
        f"{cpu:5.0f} us/req  busy {result.busy.get(name, 0.0):4.0%}  errors {result.errors}  "
        f"other load {noise}"
    )


def rate_summary(result: RateResult, rate: float) -> dict[str, Any]:
    return {
        "rate": rate,
        "requests": len(result.latencies_ms),
        "p50_ms": result.percentile(50),
        "p90_ms": result.percentile(90),
        "p99_ms": result.percentile(99),
        "statuses": dict(result.statuses),
        "errors": result.errors,
        "waited_for_connection": result.waited_for_connection,
    }


def gateway_settings(config_path: Path) -> str:
    """What the gateway runs with, from its own configuration loader (defaults included)."""
    from gateway.config.loader import load_config

    config = load_config(config_path)
    packs = sum(1 for root in config.policy_paths for _ in root.rglob("*.yaml") if root.is_dir())
    audit = config.audit
    return (
        f"audit durability {audit.durability}, group commit delay "
        f"{audit.group_commit_max_delay_ms:g} ms, per-record signatures "
        f"{'on' if audit.per_record_signatures else 'off'}; {packs} policy files from "
        + ", ".join(str(root) for root in config.policy_paths)
    )


def median_round(results: list[WrkResult]) -> WrkResult:
    ordered = sorted(results, key=lambda r: r.rps)
    return ordered[len(ordered) // 2]


def wrk_command_text(args: argparse.Namespace, core: int | None) -> str:
    text = " ".join(
        wrk_command("URL", duration_s=args.duration, connections=args.connections, core=core)
    )
    return text.replace(str(LUA_SCRIPT), "bench/gateway.lua")


def report(
    args: argparse.Namespace,
    load: dict[str, WrkResult],
    rates: dict[str, RateResult],
    rss: dict[str, int],
    records: int,
    diagnosis: list[tuple[str, str, WrkResult, float, float]],
    profile: Profile | None,
    wrk_text: str,
    paired: dict[str, list[float]] | None = None,
) -> None:
    print()
    print(f"load: {wrk_text}  (median of {args.rounds} interleaved rounds)")
    print(
        f"{'target':9s}{'req/s':>8s}{'x direct':>9s}{'p50 ms':>8s}{'p99 ms':>8s}"
        f"{'server CPU us/req':>19s}{'server core busy':>18s}{'backend us/req':>16s}{'errors':>7s}"
    )
    direct_rps = load["direct"].rps
    for name in load:
        r = load[name]
        print(
            f"{name:9s}{r.rps:8.0f}{r.rps / direct_rps:9.2f}{r.p50_ms:8.2f}{r.p99_ms:8.2f}"
            f"{r.cpu_us[name]:19.0f}{r.busy[name]:18.0%}{r.cpu_us['direct']:16.0f}{r.errors:7d}"
        )
    print("(server = the process under test: the stub backend for direct, else the proxy)")
    print()
    print(f"fixed rate: {args.rate:.0f} req/s open loop, {args.rate_seconds:.0f} s per target")
    print(f"{'target':9s}{'n':>7s}{'p50 ms':>9s}{'p90 ms':>9s}{'p99 ms':>9s}{'p50 added':>11s}")
    direct_p50 = rates["direct"].percentile(50)
    for name in [n for n in rates if n in load]:
        fixed = rates[name]
        added_text = "-" if name == "direct" else f"{fixed.percentile(50) - direct_p50:+.3f}"
        notes = []
        bad = sum(n for code, n in fixed.statuses.items() if code != 200) + fixed.errors
        if bad:
            notes.append(f"non-200 or failed: {bad}")
        if fixed.waited_for_connection:
            notes.append(f"queued behind a busy connection: {fixed.waited_for_connection}")
        print(
            f"{name:9s}{len(fixed.latencies_ms):7d}{fixed.percentile(50):9.3f}"
            f"{fixed.percentile(90):9.3f}{fixed.percentile(99):9.3f}{added_text:>11s}  "
            + "; ".join(notes)
        )
    print()
    mib = {key: value / 1024 for key, value in rss.items() if not key.endswith("_requests")}
    print(
        f"gateway RSS: {mib['start']:.1f} MiB at start, {mib['first']:.1f} MiB after "
        f"{rss['first_requests']} requests, {mib['second']:.1f} MiB after "
        f"{rss['second_requests']}, {mib['end']:.1f} MiB at the end "
        f"(bare proxy: {mib['bare_end']:.1f} MiB)"
    )
    print(f"audit records written by the gateway: {records}")
    if diagnosis:
        print()
        print("diagnosis: gateway variants, one run each (x bare: the bare proxy at the same -c)")
        print(f"{'variant':36s}{'req/s':>8s}{'x bare':>8s}{'us/req':>8s}{'busy':>7s}", end="")
        print(f"{'p50 added':>11s}")
        gateway_added = rates["gateway"].percentile(50) - direct_p50
        rows = [
            (
                "as configured",
                "gateway",
                load["gateway"],
                gateway_added,
                load["bare"].rps,
            )
        ]
        for label, name, result, added, bare_rps in [*rows, *diagnosis]:
            print(
                f"{label:36s}{result.rps:8.0f}{result.rps / bare_rps:8.2f}"
                f"{result.cpu_us[name]:8.0f}{result.busy[name]:7.0%}"
                + (f"{added:+11.3f}" if added == added else f"{'-':>11s}")
            )
    print()
    throughput = load["gateway"].rps / load["bare"].rps
    added_p50 = rates["gateway"].percentile(50) - direct_p50
    growth = (rss["second"] - rss["first"]) / rss["first"] * 100
    bars = [
        ("gateway/bare throughput", f"{throughput:.2f}x", ">= 0.80x", throughput >= 0.8),
        (
            f"p50 added over direct at {args.rate:.0f} req/s",
            f"{added_p50:.3f} ms",
            "<= 1.500 ms",
            added_p50 <= 1.5,
        ),
        (
            f"gateway RSS growth {rss['first_requests']} -> {rss['second_requests']}",
            f"{growth:+.1f}%",
            "< 20%",
            growth < 20,
        ),
    ]
    print(f"{'bar':40s}{'measured':>12s}{'bar':>14s}  result")
    for label, value, bar, ok in bars:
        print(f"{label:40s}{value:>12s}{bar:>14s}  {'PASS' if ok else 'MISS'}")
    print(
        f"floor (parse + write-ahead audit only): {load['floor'].rps / load['bare'].rps:.2f}x "
        f"the bare proxy; the gateway reaches {load['gateway'].rps / load['floor'].rps:.2f}x "
        "the floor"
    )
    if "baseline" in load:
        cpu_now = load["gateway"].cpu_us["gateway"]
        cpu_then = load["baseline"].cpu_us["baseline"]
        print(
            f"against the baseline ({args.baseline}): throughput "
            f"{load['gateway'].rps / load['baseline'].rps:.2f}x, CPU per request "
            f"{cpu_now:.0f} us vs {cpu_then:.0f} us ({(cpu_now / cpu_then - 1) * 100:+.1f}%)"
        )
        if paired:
            print(
                "  paired by round (the two ran back to back, so a slow spell of the machine "
                f"hits both): throughput {_ratio_span(paired['throughput'])}, CPU per request "
                f"{_ratio_span(paired['cpu_per_request'])}"
            )
    print(
        f"context: bare/direct {load['bare'].rps / direct_rps:.2f}x, gateway/direct "
        f"{load['gateway'].rps / direct_rps:.2f}x; gateway CPU per request "
        f"{load['gateway'].cpu_us['gateway'] / max(load['bare'].cpu_us['bare'], 1e-9):.1f}x "
        "the bare proxy's"
    )
    if profile is not None:
        print()
        threads = ", ".join(f"{k} {v}" for k, v in sorted(profile.thread_samples.items()))
        print(f"gateway profile under wrk (py-spy --threads, busy samples: {threads})")
        print("  event loop, self time (leaf frame, % of event-loop samples):")
        for name, share in profile.loop_self:
            print(f"    {share:5.1f}%  {name}")
        print("  event loop, self time by module:")
        for name, share in profile.loop_areas:
            print(f"    {share:5.1f}%  {name}")
        print("  event loop, by pipeline call site (deepest gateway/edge/handlers.py frame):")
        for name, share in profile.stages:
            print(f"    {share:5.1f}%  {name:58s} {_source_line(name)}")
        print("  event loop, time on the stack (function):")
        for name, share in profile.loop_total:
            print(f"    {share:5.1f}%  {name}")
        print("  other threads (audit writer, executor), self time:")
        for name, share in profile.other_self:
            print(f"    {share:5.1f}%  {name}")


if __name__ == "__main__":
    sys.exit(main())
