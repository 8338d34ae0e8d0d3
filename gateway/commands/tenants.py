"""`jurisgate tenants add|list`: manage the tenants file without ever storing a plain key.

`add` generates a key, appends the tenant with the key's hash to the file (keeping the
file's comments and layout: the new entry is inserted as text, then the whole file is loaded
again before it replaces the old one) and prints the key once on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.commands.exitcodes import ERROR as EXIT_ERROR
from gateway.commands.exitcodes import INVALID as EXIT_INVALID
from gateway.commands.exitcodes import OK as EXIT_OK
from gateway.commands.exitcodes import USAGE as EXIT_USAGE


def register(subparsers: Any) -> None:
    """Add the `tenants` command group."""
    parser = subparsers.add_parser("tenants", help="manage tenants and their API keys")
    commands = parser.add_subparsers(dest="tenants_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    add = commands.add_parser(
        "add", help="add a tenant with a new API key (the key is printed once)"
    )
    add.add_argument("--file", required=True, type=Path, help="tenants YAML file")
    add.add_argument("--id", required=True, dest="tenant_id", help="tenant id")
    add.add_argument("--established-in", help="ISO 3166 code of the establishment, e.g. DE")
    add.add_argument(
        "--purpose", action="append", default=[], help="registered purpose (repeatable)"
    )
    add.add_argument(
        "--network",
        action="append",
        default=[],
        help="source network (CIDR) that binds keyless callers to this tenant (repeatable)",
    )
    add.add_argument("--default-backend", help="id of the tenant's preferred backend")
    add.set_defaults(func=_add)

    listing = commands.add_parser("list", help="list the tenants of a file")
    listing.add_argument("--file", required=True, type=Path, help="tenants YAML file")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    listing.set_defaults(func=_list)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _print_diagnostics(error: Any) -> None:
    from gateway.errors import format_diagnostics

    print(format_diagnostics(error.diagnostics(), cap=None), file=sys.stderr)


def _list(args: argparse.Namespace) -> int:
    from gateway.errors import DiagnosticError
    from gateway.request.tenants import TenantRegistry

    path: Path = args.file
    if not path.is_file():
        print(f"error: tenants file `{path}` does not exist", file=sys.stderr)
        return EXIT_ERROR
    try:
        registry = TenantRegistry.load(path)
    except DiagnosticError as exc:
        _print_diagnostics(exc)
        return EXIT_INVALID
    rows = [
        {
            "id": tenant.id,
            "established_in": tenant.established_in,
            "keys": len(tenant.key_hashes),
            "registered_purposes": list(tenant.registered_purposes),
            "source_networks": [str(network) for network in tenant.source_networks],
            "default_backend": tenant.default_backend,
            "flags": sorted(tenant.flags),
        }
        for tenant in registry
    ]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    header = ("ID", "ESTABLISHED", "KEYS", "PURPOSES", "NETWORKS", "BACKEND")
    table: list[tuple[str, ...]] = [header]
    for tenant in registry:
        table.append(
            (
                tenant.id,
                tenant.established_in or "-",
                str(len(tenant.key_hashes)),
                ",".join(tenant.registered_purposes) or "-",
                ",".join(str(network) for network in tenant.source_networks) or "-",
                tenant.default_backend or "-",
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())
    return EXIT_OK


def _add(args: argparse.Namespace) -> int:
    import ipaddress

    from gateway.errors import DiagnosticError
    from gateway.request.regions import normalise_region
    from gateway.request.tenants import TenantRegistry, generate_api_key, hash_api_key

    path: Path = args.file
    established: str | None = None
    if args.established_in is not None:
        try:
            established = normalise_region(args.established_in)
        except ValueError as exc:
            print(f"error: --established-in: {exc}", file=sys.stderr)
            return EXIT_USAGE
    for cidr in args.network:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            print(f"error: --network has bad value `{cidr}`: expected a CIDR", file=sys.stderr)
            return EXIT_USAGE

    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read `{path}`: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        registry = TenantRegistry.from_text(text, str(path))
    except DiagnosticError as exc:
        _print_diagnostics(exc)
        return EXIT_INVALID
    if registry.get(args.tenant_id) is not None:
        print(f"error: tenant `{args.tenant_id}` already exists in `{path}`", file=sys.stderr)
        return EXIT_ERROR

    api_key = generate_api_key()
    fields = _new_entry(args, hash_api_key(api_key), established)
    try:
        new_text = insert_tenant(text, fields)
    except ValueError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        TenantRegistry.from_text(new_text, str(path))
    except DiagnosticError as exc:
        # The new entry itself is invalid (e.g. a bad id or purpose); nothing is written.
        _print_diagnostics(exc)
        return EXIT_INVALID
    try:
        _write_atomically(path, new_text)
    except OSError as exc:
        print(f"error: cannot write `{path}`: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"added tenant `{args.tenant_id}` to {path}; its API key follows and is not stored: "
        "keep it now",
        file=sys.stderr,
    )
    print(api_key)
    return EXIT_OK


def _new_entry(args: argparse.Namespace, key_hash: str, established: str | None) -> dict[str, Any]:
    """The fields of the tenant `tenants add` writes, in the order the file shows them."""
    fields: dict[str, Any] = {"id": args.tenant_id, "api_key_hashes": [key_hash]}
    if established is not None:
        fields["established_in"] = established
    if args.purpose:
        fields["registered_purposes"] = list(args.purpose)
    if args.network:
        fields["source_networks"] = list(args.network)
    if args.default_backend:
        fields["default_backend"] = args.default_backend
    return fields


def _entry_lines(fields: dict[str, Any], dash: str, indent: str) -> list[str]:
    # JSON scalars and flow lists are valid YAML and need no escaping rules of their own.
    lines = []
    for position, (key, value) in enumerate(fields.items()):
        prefix = dash if position == 0 else indent
        lines.append(f"{prefix}{key}: {json.dumps(value, ensure_ascii=False)}")
    return lines


def insert_tenant(text: str, fields: dict[str, Any]) -> str:
    """Return `text` with a tenant entry appended to its `tenants` list, layout preserved.

    Handles a missing or empty file, a missing `tenants` key, `tenants:` with no value or
    `[]`, and a block-style list; raises ValueError for a flow-style list with entries.
    """
    import yaml

    root = yaml.compose(text) if text.strip() else None
    if root is None:
        prefix = text if not text or text.endswith("\n") else text + "\n"
        return prefix + "tenants:\n" + "\n".join(_entry_lines(fields, "  - ", "    ")) + "\n"
    if not isinstance(root, yaml.MappingNode):
        raise ValueError("the tenants file must be a mapping with a `tenants` list")
    value_node = None
    for key_node, node in root.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "tenants":
            value_node = node
    if value_node is None:
        prefix = text if text.endswith("\n") else text + "\n"
        return prefix + "tenants:\n" + "\n".join(_entry_lines(fields, "  - ", "    ")) + "\n"
    block = "\n" + "\n".join(_entry_lines(fields, "  - ", "    "))
    if isinstance(value_node, yaml.ScalarNode) and value_node.tag.endswith(":null"):
        start, end = value_node.start_mark.index, value_node.end_mark.index
        return text[:start].rstrip(" ") + block + text[end:]
    if not isinstance(value_node, yaml.SequenceNode):
        raise ValueError("`tenants` must be a list")
    if value_node.flow_style:
        if value_node.value:
            raise ValueError(
                "`tenants` is a flow-style list (`[...]`); write it as a block list to add entries"
            )
        start, end = value_node.start_mark.index, value_node.end_mark.index
        return text[:start].rstrip(" ") + block + text[end:]
    first_item = value_node.value[0]
    dash_at = text.rfind("-", 0, first_item.start_mark.index)
    line_start = text.rfind("\n", 0, dash_at) + 1
    dash_column = dash_at - line_start
    key_column = first_item.start_mark.column
    dash = " " * dash_column + "-" + " " * max(1, key_column - dash_column - 1)
    lines = _entry_lines(fields, dash, " " * key_column)
    last_end = _last_token_end(value_node.value[-1])
    # Block scalars end at the start of the next line; other nodes end inside their line.
    line_end = last_end - 1 if text[last_end - 1 : last_end] == "\n" else text.find("\n", last_end)
    if line_end < 0:
        return text + "\n" + "\n".join(lines) + "\n"
    return text[: line_end + 1] + "\n".join(lines) + "\n" + text[line_end + 1 :]


def _last_token_end(node: Any) -> int:
    """Where the text of `node` ends: block collections end only at the next token (after any
    trailing comments), so descend to their last scalar or flow collection."""
    import yaml

    while isinstance(node, yaml.CollectionNode) and not node.flow_style and node.value:
        node = node.value[-1][1] if isinstance(node, yaml.MappingNode) else node.value[-1]
    return int(node.end_mark.index)


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` durably (`audit.storage.atomic_write`), keeping its mode."""
    from gateway.audit.storage import atomic_write

    mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
    atomic_write(path, text.encode("utf-8"))
    os.chmod(path, mode)
