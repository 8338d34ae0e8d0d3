"""The `jurisgate` command line.

Exit codes:
  0  success
  1  error: bad input, I/O failure, a broken test case file, an audit log that fails
     verification (`audit verify`: 0 valid, 1 invalid, 2 usage or I/O error)
  2  usage error, or a decision of deny from `policy eval`
  3  policy or configuration diagnostics (`policy check`, `serve` refusing to start)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from gateway import __version__

#: Command-group modules under `gateway.commands`; each provides `register(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = (
    "up",
    "serve",
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
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `jurisgate ... | head`: the reader left; that is not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
