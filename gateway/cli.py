"""The `jurisgate` command line; exit codes are `gateway.commands.exitcodes`, one table for all."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from gateway import __version__
from gateway.commands import exitcodes

#: Command-group modules under `gateway.commands`; each provides `register(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = (
    "up",
    "serve",
    "config",
    "policy",
    "audit",
    "keys",
    "tenants",
    "witness",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser with every available command group."""
    parser = argparse.ArgumentParser(
        prog="jurisgate",
        description="Policy-as-code gateway for TensorFlow Serving.",
        epilog=exitcodes.TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"jurisgate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"gateway.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gateway.commands.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return exitcodes.USAGE
    try:
        return func(args)
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        # `jurisgate ... | head`: the reader left; that is not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
