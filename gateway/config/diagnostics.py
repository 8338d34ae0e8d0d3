"""Located diagnostics for configuration mistakes (Rule 1 of the configuration).

A pydantic validation error or a JSON Schema error becomes `file:line:col: code: message`
with a `help:` line: the setting's path in the file, what was expected, what was found,
and the nearest known key for a misspelt one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
from pydantic import ValidationError

from gateway.config.model import config_json_schema, schema_node
from gateway.errors import Diagnostic, describe_value, did_you_mean
from gateway.source import LoadedDocument, format_path, yaml11_help

__all__ = ["diagnostics_from_validation", "schema_error_diagnostic"]


_TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "int_from_float": "an integer",
    "finite_number": "a finite number",
}

_PATTERN_HINTS = {
    "url": "use an http:// or https:// URL without query or credentials, e.g. "
    "http://127.0.0.1:8501",
    "region": "use an ISO 3166 code such as DE, US-CA or UA-43, or a group such as EU",
    "established_in": "use an ISO 3166 code such as DE or US-CA",
    "storage_region": "use an ISO 3166 code such as DE or IN",
    "id": "use letters, digits, `.`, `_` or `-` (a sink id: at most 64, starting with a letter "
    "or digit)",
    "grpc": "write the backend's gRPC address as host:port, e.g. 127.0.0.1:8500",
    "category": "use a snake_case category such as `analytics`",
}


def _data_path(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    """The part of a validation error's location that names places in the document (union
    branch tags and `[key]` markers are not data)."""
    path: list[int | str] = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        elif index == len(loc) - 1 and isinstance(node, dict) and part != "[key]":
            path.append(part)
    return tuple(path)


def _known_keys(path: tuple[int | str, ...]) -> list[str]:
    """The settings the model allows in the mapping at `path` (a list item's, for a list)."""
    schema = config_json_schema()
    node = schema_node(schema, [str(p) for p in path if isinstance(p, str)]) or {}
    items = node.get("items")
    if isinstance(items, Mapping):
        ref = items.get("$ref", "")
        node = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], items)
    return sorted(node.get("properties", {}))


def diagnostics_from_validation(
    exc: ValidationError, document: LoadedDocument, data: Any
) -> list[Diagnostic]:
    """One located diagnostic per error pydantic found in the file's data."""
    out: list[Diagnostic] = []
    for error in exc.errors(include_url=False):
        loc = _data_path(tuple(error["loc"]), data)
        ctx = error.get("ctx") or {}
        at = ctx.get("at")
        if isinstance(at, tuple):
            loc = (*loc, *at)
        out.append(_diagnostic(error["type"], error["msg"], error.get("input"), ctx, loc, document))
    return out


def _diagnostic(
    kind: str,
    message: str,
    value: Any,
    ctx: Mapping[str, Any],
    loc: tuple[int | str, ...],
    document: LoadedDocument,
) -> Diagnostic:
    dotted = format_path(loc) or "(top level)"
    last = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = _known_keys(parent)
        key = str(loc[-1])
        return Diagnostic(
            code="config_unknown_key",
            message=f"unknown setting `{key}` in {format_path(parent) or '(top level)'}",
            location=document.key_location(loc),
            path=dotted,
            help=did_you_mean(key, allowed) or f"known keys: {', '.join(allowed)}",
        )
    if kind == "missing":
        parent = loc[:-1]
        return Diagnostic(
            code="config_missing_key",
            message=f"{format_path(parent) or '(top level)'}: `{loc[-1]}` is required",
            location=document.location(parent),
            path=dotted,
            help="add the missing setting; docs/configuration.md lists every key",
        )
    if kind in _TYPE_WORDS:
        expected = _TYPE_WORDS[kind]
        return Diagnostic(
            code="config_type_error",
            message=f"{dotted} must be {expected}, got {describe_value(value)}",
            location=document.location(loc),
            path=dotted,
            help=yaml11_help(document.node(loc), value) or f"write {expected} here",
        )
    if kind == "duplicate_id":
        return Diagnostic(
            code="config_duplicate_id",
            message=message,
            location=document.location(loc),
            path=dotted,
            help=f"give every {ctx.get('what', 'entry')} a unique id",
        )
    if kind == "unknown_backend":
        return Diagnostic(
            code="config_ref_error",
            message=message,
            location=document.location(loc),
            path=dotted,
            help=did_you_mean(ctx.get("id"), ctx.get("choices", [])) or "name a configured backend",
        )
    if kind == "literal_error":
        choices = [
            c.strip(" '") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")
        ]
        choices = [c for c in choices if c]
        return Diagnostic(
            code="config_value_error",
            message=f"{dotted} has bad value `{shorten(value)}`",
            location=document.location(loc),
            path=dotted,
            help=did_you_mean(value, choices) or f"one of {ctx.get('expected')}",
        )
    if kind == "string_pattern_mismatch":
        key = "url" if last in ("url", "blocking_entity_uri") else last
        if isinstance(loc[-1], int) and last == "trusted_proxies":
            key = "cidr"
        return Diagnostic(
            code="config_value_error",
            message=f"{dotted} has bad value `{shorten(value)}`",
            location=document.location(loc),
            path=dotted,
            help=_PATTERN_HINTS.get(key, f"must match `{ctx.get('pattern')}`"),
        )
    help_text = {
        "url": _PATTERN_HINTS["url"],
        "cidr": "write a network in CIDR form, e.g. 203.0.113.0/24 or 2001:db8::/32",
        "witness_key": "use the witness's verifier key as `jurisgate witness vkey` prints it",
        "secret_ref": "write `{env: NAME}` or `{file: path}`",
        "category": _PATTERN_HINTS["category"],
    }.get(kind, "see docs/configuration.md")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        help_text = message.replace("Input should be", "use a value")
    if kind in ("too_short", "too_long"):
        help_text = message.replace("List should", "the list must")
    text = (
        f"{dotted}: {message}"
        if f"`{value}`" in message
        else f"{dotted} has bad value `{shorten(value)}`: {message}"
    )
    return Diagnostic(
        code="config_value_error",
        message=text,
        location=document.location(loc),
        path=dotted,
        help=help_text,
    )


_SCHEMA_PATTERN_HINTS = {
    "url": "use an http:// or https:// URL, e.g. http://127.0.0.1:8501",
    "key": "use the witness's verifier key as `jurisgate witness vkey` prints it",
}


def schema_error_diagnostic(
    error: jsonschema.ValidationError, document: LoadedDocument
) -> Diagnostic:
    """A located, helpful diagnostic for one JSON-schema error in a YAML document (shared
    with the other configuration files, such as a witness's)."""
    return _diagnostic_from_schema_error(error, document)


def _diagnostic_from_schema_error(
    error: jsonschema.ValidationError, document: LoadedDocument
) -> Diagnostic:
    path = tuple(error.absolute_path)
    dotted = format_path(path) or "(top level)"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        allowed = sorted(schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        key = unknown[0] if unknown else "?"
        return Diagnostic(
            code="config_unknown_key",
            message=f"unknown setting `{key}` in {dotted}",
            location=document.key_location((*path, key)),
            path=format_path((*path, key)),
            help=did_you_mean(key, allowed) or f"known keys: {', '.join(allowed)}",
        )
    if error.validator == "required":
        return Diagnostic(
            code="config_missing_key",
            message=f"{dotted}: {error.message}",
            location=document.location(path),
            path=dotted,
            help="add the missing setting; docs/configuration.md lists every key",
        )
    if error.validator == "enum":
        choices = [str(o) for o in error.validator_value]  # type: ignore[union-attr]
        options = ", ".join(f"`{o}`" for o in choices)
        return Diagnostic(
            code="config_value_error",
            message=f"{dotted} has bad value `{shorten(error.instance)}`",
            location=document.location(path),
            path=dotted,
            help=did_you_mean(error.instance, choices) or f"one of {options}",
        )
    if error.validator == "type":
        return Diagnostic(
            code="config_type_error",
            message=f"{dotted} must be {error.validator_value}, got "
            f"{describe_value(error.instance)}",
            location=document.location(path),
            path=dotted,
            help=yaml11_help(document.node(path), error.instance)
            or f"write {_article(str(error.validator_value))} here",
        )
    detail = "" if error.validator == "pattern" else f": {error.message}"
    return Diagnostic(
        code="config_value_error",
        message=f"{dotted} has bad value `{shorten(error.instance)}`{detail}",
        location=document.location(path),
        path=dotted,
        help=_schema_hint(error),
    )


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _schema_hint(error: jsonschema.ValidationError) -> str:
    if error.validator == "pattern":
        last = error.absolute_path[-1] if error.absolute_path else ""
        return _SCHEMA_PATTERN_HINTS.get(str(last), f"must match `{error.validator_value}`")
    if error.validator in ("minimum", "maximum", "exclusiveMinimum"):
        return f"{error.validator} is {error.validator_value}"
    return "see docs/configuration.md"


def shorten(value: Any) -> str:
    """`value` as text, cut to 60 characters for a diagnostic."""
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
