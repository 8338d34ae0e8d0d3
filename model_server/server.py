"""Running the embedded server: both listeners, version polling, ready line, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model_server.batching import BatchingParameters
from model_server.monitoring import MonitoringConfig, RequestCounts
from model_server.registry import (
    ModelConfig,
    ModelRegistry,
    StartupError,
    configs_from_config_file,
    configs_from_model_base,
)
from model_server.servables import SessionOptions

__all__ = ["ServeOptions", "serve", "ready_line"]

log = logging.getLogger("model_server")


@dataclass(frozen=True)
class ServeOptions:
    """Everything `python -m model_server serve` accepts."""

    model_base: Path | None = None
    model_config_file: Path | None = None
    host: str = "0.0.0.0"
    rest_port: int = 8501
    grpc_port: int = 8500
    batching: BatchingParameters | None = field(default_factory=BatchingParameters)
    model_threads: int = 2
    session: SessionOptions = SessionOptions()
    poll_seconds: float = 1.0
    timeout_seconds: float = 30.0
    enable_cors: bool = False
    stats_path: str | None = None
    monitoring: MonitoringConfig = MonitoringConfig()
    event_loop: str = "auto"


def ready_line(rest_port: int, grpc_port: int, available: dict[str, list[int]]) -> str:
    """The single line other processes wait for once both listeners accept connections."""
    models = ",".join(f"{name}:{max(v)}" for name, v in available.items() if v)
    return f"ready rest_port={rest_port} grpc_port={grpc_port} models={models}"


def _configs(options: ServeOptions) -> list[ModelConfig]:
    if options.model_config_file is not None:
        return configs_from_config_file(
            options.model_config_file, relative_to=options.model_config_file.parent
        )
    assert options.model_base is not None
    return configs_from_model_base(options.model_base)


async def _serve(options: ServeOptions) -> int:
    from model_server.core import ServingCore

    configs = _configs(options)
    core_holder: list[ServingCore] = []
    registry = ModelRegistry(
        configs,
        options.session,
        model_base=options.model_base if options.model_config_file is None else None,
        on_load=lambda s: core_holder[0].attach(s) if core_holder else None,
        on_unload=lambda s: core_holder[0].detach(s) if core_holder else None,
    )
    core = ServingCore(
        registry,
        batching=options.batching,
        model_threads=options.model_threads,
        timeout_seconds=options.timeout_seconds,
    )
    core_holder.append(core)
    await registry.start()
    # These import TensorFlow (through the serving protos): only once the models loaded.
    from model_server.grpc_service import start_grpc_server
    from model_server.rest import RestApi, start_rest_server

    # Counted only when someone can read the counts: the page is the only reader.
    prometheus = options.monitoring.prometheus_enable
    request_counts: RequestCounts | None = {} if prometheus else None
    api = RestApi(
        core,
        enable_cors=options.enable_cors,
        stats_path=options.stats_path,
        prometheus_path=options.monitoring.prometheus_path if prometheus else None,
        request_counts=request_counts,
    )
    try:
        runner, rest_port = await start_rest_server(api, options.host, options.rest_port)
    except OSError as error:
        raise StartupError(
            f"--rest-port {options.rest_port}: cannot listen on {options.host}: {error.strerror}"
        ) from None
    try:
        grpc_server, grpc_port = await start_grpc_server(
            core, options.host, options.grpc_port, request_counts
        )
    except (OSError, RuntimeError) as error:
        await runner.cleanup()
        raise StartupError(
            f"--grpc-port {options.grpc_port}: cannot listen on {options.host}: {error}"
        ) from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    poller = loop.create_task(registry.poll_forever(options.poll_seconds))
    print(ready_line(rest_port, grpc_port, registry.available()), flush=True)
    await stop.wait()
    log.info("stopping")
    poller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poller
    await grpc_server.stop(grace=2.0)
    await runner.cleanup()
    await registry.close()
    core.shutdown()
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise StartupError("--event-loop uvloop: the uvloop package is not installed") from None
        return None
    return uvloop.new_event_loop


def serve(options: ServeOptions) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (1 on a start-up error)."""
    try:
        with asyncio.Runner(loop_factory=_loop_factory(options.event_loop)) as runner:
            return runner.run(_serve(options))
    except StartupError as error:
        print(f"model_server: error: {error}", file=sys.stderr, flush=True)
        return 1
