"""`jurisgate witness serve|vkey`: a standalone C2SP `tlog-witness` for audit checkpoints.

Exit codes (the table in `gateway.commands.exitcodes`): 0 stopped cleanly, 2 usage, 3
configuration diagnostics, 4 an I/O error (key, state file, port).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.commands import exitcodes


def register(subparsers: Any) -> None:
    """Add the `witness` command group."""
    parser = subparsers.add_parser(
        "witness", help="run a witness that cosigns audit checkpoints (C2SP tlog-witness)"
    )
    sub = parser.add_subparsers(dest="witness_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    serve = sub.add_parser(
        "serve",
        help="serve add-checkpoint and the monitoring endpoint",
        description="Run a witness: verify each submitted checkpoint against the log keys "
        "in the configuration and a consistency proof from the last size it saw, record "
        "the new head durably, and answer with an Ed25519 cosignature/v1.",
    )
    serve.add_argument("--config", type=Path, required=True, help="witness configuration file")
    serve.set_defaults(func=_serve)

    vkey = sub.add_parser(
        "vkey",
        help="print the witness's verifier key (what gateways and auditors pin)",
        description="Print `name+keyid+base64(0x04||key)` for the witness in the configuration.",
    )
    vkey.add_argument("--config", type=Path, required=True, help="witness configuration file")
    vkey.set_defaults(func=_vkey)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return exitcodes.USAGE


def _load(path: Path) -> Any:
    """The witness configuration at `path`, or the exit code when it is missing or invalid."""
    from gateway.errors import format_diagnostics
    from gateway.witness.config import WitnessConfigError, load_witness_config

    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return exitcodes.ERROR
    try:
        return load_witness_config(path)
    except WitnessConfigError as exc:
        print(format_diagnostics(exc.diagnostics(), cap=None), file=sys.stderr)
        return exitcodes.INVALID


def _vkey(args: argparse.Namespace) -> int:
    from gateway.audit.witness import Cosigner

    config = _load(args.config)
    if isinstance(config, int):
        return config
    print(Cosigner(config.signer).key.vkey())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.audit.errors import AuditError
    from gateway.edge.logs import configure_logging
    from gateway.witness.server import WitnessService

    config = _load(args.config)
    if isinstance(config, int):
        return config
    configure_logging("INFO")
    try:
        service = WitnessService(config.signer, config.log_keys, config.state)
    except AuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exitcodes.ERROR
    try:
        return asyncio.run(_run(service, config.host, config.port))
    except OSError as exc:
        print(
            f"error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}\n"
            "  help: change `listen` in the witness configuration",
            file=sys.stderr,
        )
        return exitcodes.ERROR


async def _run(service: Any, host: str, port: int) -> int:
    from aiohttp import web

    from gateway.witness.server import create_witness_app

    runner = web.AppRunner(create_witness_app(service), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        bound = runner.addresses[0] if runner.addresses else (host, port)
        print(
            f"jurisgate witness: {service.cosigner.key.vkey()} serving on "
            f"http://{bound[0]}:{bound[1]}",
            flush=True,
        )
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
