"""The JSON Schemas committed under `schemas/`, generated from their one definition each.

`python -m gateway.config.json_schemas` rewrites them; a test checks the committed files
still match, so an editor or `check-jsonschema` pointed at `schemas/*.schema.json` sees
what the gateway enforces. ("Schema" here always means a JSON Schema document; the terms a
policy may name are the vocabulary, and a document's structural errors are diagnostics.)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SCHEMAS", "main", "render"]


def _config() -> dict[str, Any]:
    from gateway.config.model import config_json_schema

    return config_json_schema()


def _policy() -> dict[str, Any]:
    from gateway.policy import policy_json_schema

    return policy_json_schema()


def _context() -> dict[str, Any]:
    from gateway.policy import context_json_schema

    return context_json_schema()


def _tenants() -> dict[str, Any]:
    from gateway.request.tenants_schema import tenants_json_schema

    return tenants_json_schema()


#: File stem under `schemas/` -> the function that builds the schema.
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "config": _config,
    "policy": _policy,
    "context": _context,
    "tenants": _tenants,
}


def render(name: str) -> str:
    """The committed text of schema `name`: sorted keys, two-space indent, final newline."""
    return json.dumps(SCHEMAS[name](), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write every schema into the directory named in `argv` (default: the checkout's)."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else Path(__file__).resolve().parents[2] / "schemas"
    target.mkdir(parents=True, exist_ok=True)
    for name in SCHEMAS:
        (target / f"{name}.schema.json").write_text(render(name), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
