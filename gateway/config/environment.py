"""Rule 3 of the configuration: `JURISGATE__SECTION__KEY=value` overrides a scalar setting.

The variable's path is checked against the model's JSON Schema and its text is read as the
setting's type; a bad name or value is a diagnostic that names the variable and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.model import config_json_schema, schema_node
from gateway.errors import Diagnostic, Location

__all__ = ["ENV_PREFIX", "apply_env_overrides"]

ENV_PREFIX = "JURISGATE__"


def apply_env_overrides(
    data: dict[str, Any], env: Mapping[str, str], diagnostics: list[Diagnostic]
) -> dict[str, Any]:
    """Overlay `JURISGATE__A__B=value` variables onto the parsed file."""
    schema = config_json_schema()
    merged: dict[str, Any] = {key: value for key, value in data.items()}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        node_schema = schema_node(schema, keys) if keys else None
        if not keys or node_schema is None:
            diagnostics.append(
                Diagnostic(
                    code="config_env_error",
                    message=f"environment variable `{name}` names no setting",
                    location=Location(name, 0, 0),
                    help="use JURISGATE__SECTION__KEY, e.g. JURISGATE__LISTEN__PORT",
                )
            )
            continue
        raw = env[name]
        try:
            value = _cast_env(raw, node_schema)
        except ValueError as exc:
            diagnostics.append(
                Diagnostic(
                    code="config_env_error",
                    message=f"environment variable `{name}` has bad value `{raw}`: {exc}",
                    location=Location(name, 0, 0),
                    help=f"expected {node_schema.get('type', 'a value')}",
                )
            )
            continue
        target = merged
        for key in keys[:-1]:
            child = target.get(key)
            child = dict(child) if isinstance(child, dict) else {}
            target[key] = child
            target = child
        target[keys[-1]] = value
    return merged


def _cast_env(raw: str, node_schema: Mapping[str, Any]) -> Any:
    kind = node_schema.get("type")
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("not an integer") from None
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            raise ValueError("not a number") from None
    if kind == "boolean":
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError("not a boolean (use true or false)")
    if kind == "array":
        items = node_schema.get("items", {})
        if "$ref" in items or items.get("type", "string") != "string":
            raise ValueError("a list of sections cannot be set from the environment")
        return [part.strip() for part in raw.split(",") if part.strip()]
    if kind == "object" or "properties" in node_schema:
        raise ValueError("a section cannot be set from the environment; set one of its keys")
    return raw
