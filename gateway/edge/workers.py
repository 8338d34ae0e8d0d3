"""Several worker processes behind one set of ports: `jurisgate serve` with `workers` > 1.

Rule 1 — every worker binds the REST, gRPC and admin ports itself with `SO_REUSEPORT`, and
the kernel spreads new connections over the workers' listening sockets. A parent that binds
one socket and hands it down would serve REST only: grpc.aio binds by address and cannot
adopt a socket, and asyncio's accept loop takes every pending connection at once, so one
wakeful worker would take a burst of keep-alive connections for itself. The parent still
binds each port first (bound, never listening, so it never receives a connection): a port in
use is refused before any worker starts, port `0` is resolved once for all, and no other
program can take the port while a worker restarts.
Rule 2 — worker `k` owns its audit log, `<audit.directory>/w<k>` with origin
`<deployment>/<instance>/w<k>`; the signing and payload keys are shared (the parent creates a
missing payload key before any worker starts). No lock is shared on the request path.
Rule 3 — the parent forwards SIGHUP to every worker (each reloads and writes its own
`policy_change` record; each also watches the files), restarts a worker that exits (waiting
0.5 s, doubling up to 30 s while it keeps failing; it recovers its log as after any crash),
and on SIGTERM or SIGINT asks every worker to drain and waits for them. A worker dies with
its parent (`PR_SET_PDEATHSIG`).
Rule 4 — `/metrics` (any worker answers) reports the process group: the counters and
histograms of the request path are kept in prometheus_client's multiprocess files
(`PROMETHEUS_MULTIPROC_DIR`) and summed over every worker that ever ran, so they never go
backwards when a worker restarts; everything read at scrape time (audit queue, fsync,
witnesses, sinks, backend probes, policy revision, process and GC figures) is asked from
each live worker over a Unix socket in the parent's run directory and labelled `worker`.

With `workers: 1` none of this runs: the one process serves as before, its log directly in
`audit.directory`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gateway.commands import exitcodes
from gateway.config.loader import WORKER_ENV, GatewayConfig

if TYPE_CHECKING:
    from gateway.edge.metrics import GatewayMetrics

__all__ = [
    "RUN_DIR_ENV",
    "WORKER_SIDE",
    "WorkerSide",
    "available_cores",
    "cgroup_cpu_quota",
    "run_workers",
    "worker_count",
]

log = logging.getLogger("jurisgate")

#: The parent's run directory (ready files, metrics files, the workers' metric sockets).
RUN_DIR_ENV: Final = "JURISGATE_WORKER_RUN_DIR"
#: The parent's pid, so a worker knows whether its parent still lives (the parent may be pid 1
#: in a container, so `getppid() == 1` proves nothing).
PARENT_ENV: Final = "JURISGATE_WORKER_PARENT"
#: prometheus_client reads it when imported: the workers' shared metric files.
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
RESTART_FIRST_S: Final = 0.5
RESTART_MAX_S: Final = 30.0
#: A worker that served this long before exiting is restarted after the first delay again.
STABLE_S: Final = 30.0
#: How long the parent waits for its workers to drain before it kills them (the workers'
#: own deadline for requests in flight is 20 s).
DRAIN_S: Final = 30.0
#: How long a scrape waits for one worker's share.
SCRAPE_TIMEOUT_S: Final = 2.0
_PR_SET_PDEATHSIG: Final = 1


def available_cores() -> int:
    """The cores this process may run on, at least 1: its affinity mask (as `taskset` or a
    container's cpuset leave it), capped by its cgroup's CPU quota (`docker --cpus`, a
    Kubernetes CPU limit), which leaves the mask at the whole machine's."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counter is not None:
        count = int(counter() or 1)
    else:
        try:
            count = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(count, quota) if quota is not None else count)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Whole CPUs of this cgroup's CFS quota, rounded up; None when unlimited or unknown."""
    try:
        quota_text, period_text = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        if quota_text == "max":
            return None
        quota, period = int(quota_text), int(period_text)
    except (OSError, ValueError):
        try:  # cgroup v1
            quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, -(-quota // period))


def worker_count(config: GatewayConfig) -> int:
    """How many workers `config` asks for (`workers: 0` is one per available core)."""
    return config.workers if config.workers > 0 else available_cores()


# -- the parent ------------------------------------------------------------------------------


@dataclass
class _Worker:
    number: int
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    restarts: int = 0
    exit_code: int | None = None


@dataclass
class _Supervisor:
    command: list[str]
    count: int
    env: dict[str, str]
    run_dir: Path
    workers: list[_Worker] = field(default_factory=list)
    #: (worker, exit code) of a worker that exited before it ever served.
    failed: tuple[int, int] | None = None

    def ready_file(self, number: int) -> Path:
        return self.run_dir / f"w{number}.ready"

    async def run(self, ready: Callable[[], None]) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.broadcast, signal.SIGHUP)
        self.workers = [_Worker(k) for k in range(self.count)]
        keepers = [asyncio.create_task(self.keep(w, stop)) for w in self.workers]
        while not stop.is_set():
            if all(w.ready for w in self.workers):
                ready()
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.05)
        await stop.wait()
        log.info("shutting down: every worker finishes its requests in flight")
        self.broadcast(signal.SIGTERM)
        done, pending = await asyncio.wait(keepers, timeout=DRAIN_S)
        if pending:
            log.error("%d worker(s) still running after %.0f s; killing them",
                      len(pending), DRAIN_S)  # fmt: skip
            self.broadcast(signal.SIGKILL)
            await asyncio.wait(pending, timeout=5.0)
        if self.failed is not None:
            _, code = self.failed
            return code if code in (exitcodes.INVALID, exitcodes.ERROR) else exitcodes.ERROR
        clean = all(w.exit_code in (0, None) for w in self.workers)
        return exitcodes.OK if clean else exitcodes.ERROR

    def broadcast(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    async def keep(self, worker: _Worker, stop: asyncio.Event) -> None:
        """Run worker `worker.number` until the parent stops; restart it when it exits."""
        delay = 0.0
        env = dict(self.env, **{WORKER_ENV: str(worker.number)})
        while not stop.is_set():
            self.ready_file(worker.number).unlink(missing_ok=True)
            started = time.monotonic()
            worker.process = await asyncio.create_subprocess_exec(
                *self.command,
                env=env,
                # Ctrl-C reaches the parent only, which then stops the workers in order.
                process_group=0,
            )
            waiter = asyncio.create_task(worker.process.wait())
            # Look for the ready file until it appears, then only wait (no polling while
            # the worker serves: the parent takes no CPU from the workers).
            while not waiter.done() and not worker.ready:
                await asyncio.wait({waiter}, timeout=0.05)
                if self.ready_file(worker.number).exists():
                    worker.ready = True
                    if worker.restarts:
                        log.info("worker %d serving again (pid %d)",
                                 worker.number, worker.process.pid)  # fmt: skip
            worker.exit_code = code = await waiter
            if stop.is_set():
                return
            if not worker.ready and worker.restarts == 0:
                # It never served: a configuration, key or port problem the others share.
                log.error("worker %d exited with %d before serving; stopping",
                          worker.number, code)  # fmt: skip
                self.failed = (worker.number, code)
                stop.set()
                return
            lived = time.monotonic() - started
            delay = RESTART_FIRST_S if lived >= STABLE_S else min(
                max(delay * 2, RESTART_FIRST_S), RESTART_MAX_S
            )  # fmt: skip
            log.error(
                "worker %d (pid %d) exited with %d after %.1f s; restarting it in %.1f s",
                worker.number, worker.process.pid, code, lived, delay,
            )  # fmt: skip
            worker.ready = False
            worker.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


@dataclass
class _Reserved:
    """Ports bound by the parent (never listening) and what the workers are told."""

    sockets: list[socket.socket]
    overrides: dict[str, str]


def _reserve(config: GatewayConfig) -> _Reserved:
    """Bind every port the workers will share; port 0 becomes one chosen port for all."""
    wanted: list[tuple[str, str, int, str]] = [
        ("listen.port", config.listen_host, config.listen_port, "JURISGATE__LISTEN__PORT")
    ]
    if config.grpc.enabled:
        wanted.append(("grpc.port", config.grpc.host, config.grpc.port, "JURISGATE__GRPC__PORT"))
    if config.admin.enabled:
        wanted.append(("admin.port", config.admin.host, config.admin.port,
                       "JURISGATE__ADMIN__PORT"))  # fmt: skip
    reserved = _Reserved([], {})
    try:
        for setting, host, port, variable in wanted:
            try:
                family, kind, proto, _, address = socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )[0]
                sock = socket.socket(family, kind, proto)
                reserved.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(address)
            except OSError as exc:
                raise _PortError(
                    f"{config.source}: {setting}: cannot listen on {host}:{port}: "
                    f"{exc.strerror or exc}\n"
                    f"  help: change {setting}, or stop what holds the port"
                ) from None
            if port == 0:
                reserved.overrides[variable] = str(sock.getsockname()[1])
            elif _answers(host, port):
                # Another group of workers (same user, SO_REUSEPORT) would share the port
                # silently: refuse as a single gateway would.
                raise _PortError(
                    f"{config.source}: {setting}: {host}:{port} is already served by another "
                    "process\n"
                    f"  help: change {setting}, or stop the gateway that holds the port"
                )
    except _PortError:
        for sock in reserved.sockets:
            sock.close()
        raise
    return reserved


def _answers(host: str, port: int) -> bool:
    """Whether something accepts connections on `host:port` now."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


class _PortError(Exception):
    """A port the workers need cannot be bound; the text names the setting."""


def _preflight(config: GatewayConfig) -> str | None:
    """Check the policies and the signing key, and create a missing payload key once, before
    the workers race to create it; returns an error text for the operator, or None."""
    from gateway.audit import AuditError
    from gateway.edge.audit_keys import load_signer, payload_digester
    from gateway.edge.reload import SnapshotError, build_snapshot

    try:
        # Policies, tenants and tables once here: an error is printed once, not per worker.
        build_snapshot(config)
        load_signer(config)
        payload_digester(config)
    except SnapshotError as exc:
        return exc.diagnostics_text
    except AuditError as exc:
        return f"{config.source}: audit: {exc}"
    except OSError as exc:
        return (
            f"{config.source}: audit.signing_key `{config.audit.signing_key}`: "
            f"{exc.strerror or exc}"
        )
    return None


def run_workers(
    config: GatewayConfig,
    count: int,
    command: Sequence[str],
    ready: Callable[[str], None] | None = None,
) -> int:
    """Run `count` copies of `command` (a `jurisgate serve` of the same file) as workers of
    this process until SIGTERM or SIGINT; exit 3 or 4 when they cannot start."""
    try:
        reserved = _reserve(config)
    except _PortError as exc:
        print(exc, flush=True)
        return exitcodes.ERROR
    try:
        problem = _preflight(config)
        if problem is not None:
            print(problem, flush=True)
            return exitcodes.INVALID
        run_dir = Path(tempfile.mkdtemp(prefix="jurisgate-workers-"))
        try:
            (run_dir / "metrics").mkdir()
            env = dict(os.environ)
            env.update(reserved.overrides)
            env[RUN_DIR_ENV] = str(run_dir)
            env[PARENT_ENV] = str(os.getpid())
            env[MULTIPROC_ENV] = str(run_dir / "metrics")
            supervisor = _Supervisor(list(command), count, env, run_dir)
            port = reserved.overrides.get("JURISGATE__LISTEN__PORT", str(config.listen_port))
            url = f"http://{config.listen_host}:{port}"

            def announce() -> None:
                log.info("%d workers serving on %s", count, url)
                if ready is not None:
                    ready(url)

            return asyncio.run(supervisor.run(announce))
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        for sock in reserved.sockets:
            sock.close()


# -- a worker --------------------------------------------------------------------------------


def die_with_parent() -> None:
    """Ask the kernel to send SIGTERM when the parent dies (Linux), so no worker outlives a
    parent that was killed; exit at once if the parent is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    expected = os.environ.get(PARENT_ENV)
    # Checked after the request: a parent that died just before it was made is seen here.
    if expected is not None and str(os.getppid()) != expected:
        sys.exit(exitcodes.ERROR)


class WorkerSide:
    """What a worker adds to the gateway: its metric socket, the group's `/metrics`, the
    ready file, and reloads passed to its siblings."""

    def __init__(self, number: int, run_dir: Path, metrics: GatewayMetrics) -> None:
        self.number = number
        self.run_dir = run_dir
        self.metrics = metrics
        self.parent = int(os.environ.get(PARENT_ENV) or os.getppid())
        self._runner: web.AppRunner | None = None
        # The request-path counters and histograms are summed from the multiprocess files;
        # every other family is this worker's own.
        self.shared = frozenset(
            metric._name
            for metric in vars(metrics).values()
            if isinstance(metric, Counter | Histogram)
        )

    @property
    def socket_path(self) -> Path:
        return self.run_dir / f"w{self.number}.sock"

    async def start(self) -> None:
        """Serve this worker's share of `/metrics` on its socket and say it is ready."""

        async def local(request: web.Request) -> web.Response:
            return web.Response(body=self.local_text())

        app = web.Application()
        app.router.add_get("/local-metrics", local)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self.socket_path.unlink(missing_ok=True)
        await web.UnixSite(self._runner, str(self.socket_path)).start()
        (self.run_dir / f"w{self.number}.ready").write_text(f"{os.getpid()}\n")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.socket_path.unlink(missing_ok=True)

    def local_text(self) -> bytes:
        """This worker's own families (everything but the summed ones), in text format."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Filtered(self.metrics.registry, exclude=self.shared))
        return generate_latest(registry)

    def pass_reload_on(self) -> None:
        """An admin reload done here reaches the other workers through the parent."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.parent, signal.SIGHUP)

    async def render(self) -> bytes:
        """The whole group's metrics."""
        texts: dict[int, str] = {self.number: self.local_text().decode()}
        for path in sorted(self.run_dir.glob("w*.sock")):
            number = int(path.stem[1:])
            if number == self.number:
                continue
            try:
                connector = aiohttp.UnixConnector(path=str(path))
                timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
                async with (
                    aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                    session.get("http://worker/local-metrics") as resp,
                ):
                    texts[number] = await resp.text()
            except (aiohttp.ClientError, TimeoutError, OSError):
                # Restarting or gone: its counters are in the files, its live state is not.
                continue
        directory = os.environ[MULTIPROC_ENV]
        summed = await asyncio.to_thread(
            lambda: [
                m
                for m in MultiProcessCollector(None, directory).collect()  # type: ignore[no-untyped-call]
                if m.name in self.shared
            ]
        )
        merged: dict[str, Metric] = {}
        for number, text in sorted(texts.items()):
            for family in text_string_to_metric_families(text):
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    target.samples.append(
                        sample._replace(labels={**sample.labels, "worker": str(number)})
                    )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families([*summed, *merged.values()]))
        return generate_latest(registry)


class _Filtered(Collector):
    """The families of `registry` except those named in `exclude`."""

    def __init__(self, registry: Collector, exclude: frozenset[str]) -> None:
        self._registry = registry
        self._exclude = exclude

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if family.name not in self._exclude:
                yield family


class _Families(Collector):
    """Families collected already, exposed as they are."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def worker_side_for(config: GatewayConfig, metrics: GatewayMetrics) -> WorkerSide | None:
    """The worker side of this process, when `jurisgate serve` started it as a worker."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if config.worker is None or run_dir is None:
        return None
    return WorkerSide(config.worker, Path(run_dir), metrics)


WORKER_SIDE: Final = web.AppKey("jurisgate.worker_side", WorkerSide)
