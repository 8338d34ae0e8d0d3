"""`jurisgate serve --config FILE`: run the gateway in front of TF Serving backends."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config.loader import GatewayConfig


def register(subparsers: Any) -> None:
    """Add the `serve` command."""
    parser = subparsers.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway: TF Serving REST surface on `listen`, admin on `admin`.",
    )
    from gateway.commands.config import config_argument

    config_argument(parser)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    add_log_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM or SIGINT; exit 3 when the configuration or policies are invalid."""
    import sys

    from gateway.commands import exitcodes
    from gateway.edge.app import run_gateway

    if args.config is None:
        print("error: give --config FILE or set JURISGATE_CONFIG", file=sys.stderr)
        return exitcodes.USAGE
    if not args.config.is_file():
        print(f"error: --config {args.config}: no such file", file=sys.stderr)
        return exitcodes.ERROR
    from gateway.edge.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    log = logging.getLogger("jurisgate")

    import os

    from gateway.config.loader import WORKER_ENV
    from gateway.edge import workers

    if WORKER_ENV in os.environ:
        # One of several workers started by a `jurisgate serve` parent.
        workers.die_with_parent()
        import signal

        # A reload the parent passes on while this worker still starts would end it (the
        # default action); it reads the files as they are now anyway.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

        def ready(url: str) -> None:
            log.info("worker %s ready on %s", os.environ[WORKER_ENV], url)

    else:
        # A file that does not load runs as one process, which prints every diagnostic and
        # refuses to start, as it always did.
        config = _load_or_none(args.config)
        count = 1 if config is None else workers.worker_count(config)
        if config is not None and count > 1:
            command = [sys.executable, "-m", "gateway", "serve", "--config", str(args.config),
                       "--log-level", args.log_level, "--log-format", args.log_format]  # fmt: skip

            def announce(url: str) -> None:
                print(f"jurisgate: serving on {url} with {count} workers", flush=True)

            return workers.run_workers(config, count, command, announce)

        def ready(url: str) -> None:
            log.info("gateway ready on %s", url)
            print(f"jurisgate: serving on {url}", flush=True)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(run_gateway(args.config, ready=ready))


def _load_or_none(path: Path) -> GatewayConfig | None:
    from gateway.config.loader import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError:
        return None


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    """The `--log-format` option of the commands that run the gateway."""
    parser.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "text", "json"],
        help="log lines as JSON or text (auto: text on a terminal, JSON otherwise)",
    )


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (a faster loop for the same code), else None."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
