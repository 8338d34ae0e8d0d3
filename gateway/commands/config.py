"""`jurisgate config check [FILE]` and `jurisgate config schema`: the gateway configuration.

`--config`/FILE default to the `JURISGATE_CONFIG` environment variable wherever a gateway
configuration is read (`serve`, `config check`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.commands import exitcodes

CONFIG_ENV = "JURISGATE_CONFIG"


def config_argument(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """Add the configuration file argument, defaulting to `$JURISGATE_CONFIG`."""
    default = os.environ.get(CONFIG_ENV) or None
    help_text = f"gateway configuration file (default: ${CONFIG_ENV})"
    if positional:
        parser.add_argument("file", type=Path, nargs="?", default=default, help=help_text)
    else:
        parser.add_argument("--config", type=Path, default=default, help=help_text)


def register(subparsers: Any) -> None:
    """Add the `config` command group."""
    parser = subparsers.add_parser("config", help="check the gateway configuration")
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = sub.add_parser(
        "check",
        help="validate a configuration file (exit 3 on problems)",
        description="Load and validate a gateway configuration as `serve` does: the file, "
        "the JURISGATE__* overrides and the secrets it names; the policies, tenants and "
        "region table it points at are compiled too.",
    )
    config_argument(check, positional=True)
    check.add_argument(
        "--no-policies", action="store_true", help="check the configuration file only"
    )
    check.set_defaults(func=cmd_check)
    schema = sub.add_parser("schema", help="print the JSON Schema of the configuration file")
    schema.set_defaults(func=cmd_schema)
    parser.set_defaults(func=lambda _args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return exitcodes.USAGE


def cmd_check(args: argparse.Namespace) -> int:
    """0 when the configuration (and what it points at) loads, 3 with diagnostics."""
    from gateway.config.loader import ConfigError, load_config
    from gateway.errors import format_diagnostics

    if args.file is None:
        print(f"error: give FILE or set {CONFIG_ENV}", file=sys.stderr)
        return exitcodes.USAGE
    if not args.file.is_file():
        print(f"error: {args.file}: no such file", file=sys.stderr)
        return exitcodes.ERROR
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(format_diagnostics(exc.diagnostics(), cap=None), file=sys.stderr)
        return exitcodes.INVALID
    if not args.no_policies:
        from gateway.edge.reload import SnapshotError, build_snapshot

        try:
            snapshot = build_snapshot(config)
        except SnapshotError as exc:
            print(exc.diagnostics_text, file=sys.stderr)
            return exitcodes.INVALID
        print(f"OK: {args.file} (policy revision {snapshot.policy_set.revision})")
    else:
        print(f"OK: {args.file}")
    return exitcodes.OK


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the configuration file's JSON Schema."""
    from gateway.config.model import config_json_schema

    print(json.dumps(config_json_schema(), indent=2, sort_keys=True))
    return exitcodes.OK
