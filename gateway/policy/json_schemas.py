"""JSON Schemas (draft 2020-12) for policy files and for the request context.

`policy_json_schema()` describes every document kind (`vocabulary`, `pack`, `settings`,
`cases`) for editors (`# yaml-language-server: $schema=...`); `jurisgate policy schema`
prints it. It checks shape only: references to the vocabulary are checked by the compiler.
`context_json_schema()` describes the request context (docs/architecture.md); the CLI and
the case runner validate contexts with it before evaluating.
Both are generated from the tables in `language.py`, so they cannot drift from the parser.
"""

from __future__ import annotations

from typing import Any

from gateway.policy.language import (
    CONTEXT_FIELDS,
    DECLARED_FACTS,
    EFFECTS,
    IMAGE_MARK_SCHEMES,
    MASK_METHODS,
    METHODS,
    MODES,
    OPERATORS,
    PROBLEM_TYPES,
    STAGES,
)

__all__ = ["context_json_schema", "policy_json_schema"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}([T ].+)?$"}
_REGION = {"type": "string", "pattern": r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$|^[A-Z][A-Z0-9_]+$"}
_NAME_LIST = {"type": "array", "items": {"type": "string"}}


def _strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    return out


def _condition_defs() -> dict[str, Any]:
    operand = {
        "oneOf": [
            {"type": ["string", "integer", "boolean", "null"]},
            {"type": "array"},
            _strict({"field": {"type": "string"}}, ("field",)),
        ]
    }
    test = {
        "oneOf": [
            {"type": ["string", "integer", "boolean", "null"]},
            {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"enum": list(OPERATORS)},
                "additionalProperties": operand,
            },
        ]
    }
    return {
        "condition": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                "all": {"type": "array", "items": {"$ref": "#/$defs/condition"}},
                "any": {"type": "array", "items": {"$ref": "#/$defs/condition"}},
                "not": {"$ref": "#/$defs/condition"},
            },
            "additionalProperties": {"$ref": "#/$defs/test"},
            "description": "field tests (`caller.region: {in: [EU]}`) and all/any/not; "
            "several keys in one mapping must all hold",
        },
        "test": test,
    }


def _problem() -> dict[str, Any]:
    return _strict(
        {
            "type": {"enum": list(PROBLEM_TYPES)},
            "title": {"type": "string"},
            "detail": {"type": "string", "description": "may use ${field.path} placeholders"},
            "remedy": _strict(
                {
                    "text": {"type": "string"},
                    "header": {"type": "string"},
                    "value": {"type": "string"},
                },
                ("text",),
            ),
        }
    )


def _obligations() -> dict[str, Any]:
    mask = _strict(
        {
            "categories": _NAME_LIST,
            "paths": _NAME_LIST,
            "method": {"enum": list(MASK_METHODS)},
            "keep": {"type": "integer", "minimum": 1},
        },
        ("method",),
    )
    return _strict(
        {
            "mask": {"oneOf": [mask, {"type": "array", "items": mask}]},
            "route": _strict(
                {
                    "regions": {"type": "array", "items": _REGION, "minItems": 1},
                    "or_mechanisms": _NAME_LIST,
                },
                ("regions",),
            ),
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "image_marks": {
                "type": "array",
                "items": _strict(
                    {
                        "scheme": {"enum": list(IMAGE_MARK_SCHEMES)},
                        "value": {"type": "string"},
                        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                    ("scheme",),
                ),
            },
            "suppress_sinks": _strict(
                {"categories": _NAME_LIST, "sale_or_share": {"type": "boolean"}}
            ),
            "audit": _strict(
                {"retention_days": {"type": "integer", "minimum": 1}, "storage_region": _REGION}
            ),
        }
    )


def _rule() -> dict[str, Any]:
    return _strict(
        {
            "id": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{0,127}$"},
            "description": {"type": "string"},
            "stage": {"enum": list(STAGES)},
            "effect": {"enum": list(EFFECTS)},
            "mode": {"enum": list(MODES)},
            "status": {"enum": [451, 403]},
            "applies_to": {"type": "string"},
            "when": {"$ref": "#/$defs/condition"},
            "basis": {
                "type": "array",
                "items": _strict(
                    {
                        "regime": {"type": "string"},
                        "ref": {"type": "string"},
                        "url": {"type": "string"},
                    },
                    ("ref",),
                ),
            },
            "problem": _problem(),
            "obligations": _obligations(),
            "effective_from": _TIME,
            "effective_until": _TIME,
            "exceptions": {
                "type": "array",
                "items": _strict(
                    {
                        "when": {"$ref": "#/$defs/condition"},
                        "until": _TIME,
                        "ticket": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                    ("until", "ticket"),
                ),
            },
            "when_absent": {
                "type": "object",
                "propertyNames": {"enum": list(DECLARED_FACTS)},
                "additionalProperties": {
                    "oneOf": [
                        {"const": "ask"},
                        _strict(
                            {"not_applicable": {"type": "string", "minLength": 1}},
                            ("not_applicable",),
                        ),
                    ]
                },
            },
        },
        ("id", "effect"),
    )


def _vocabulary() -> dict[str, Any]:
    names = {
        "oneOf": [
            _NAME_LIST,
            {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        ]
    }
    return _strict(
        {
            "kind": {"const": "vocabulary"},
            "version": {"const": 1},
            "regions": _strict(
                {
                    "countries": {
                        "type": "array",
                        "items": {"type": "string", "pattern": "^[A-Z]{2}$"},
                    },
                    "subdivisions": {
                        "type": "object",
                        "propertyNames": {"pattern": "^[A-Z]{2}-[A-Z0-9]{1,3}$"},
                        "additionalProperties": {"type": "string"},
                    },
                    "groups": {"type": "object", "additionalProperties": _NAME_LIST},
                },
                ("countries",),
            ),
            "purpose_attributes": names,
            "purposes": {
                "type": "object",
                "additionalProperties": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": "boolean"},
                },
            },
            "personal_data": names,
            "regimes": {
                "type": "object",
                "additionalProperties": _strict(
                    {
                        "name": {"type": "string"},
                        "url": {"type": "string"},
                        "demanding_party": {"type": "string"},
                        "jurisdiction": {"type": "string"},
                    },
                    ("name",),
                ),
            },
            "lawful_bases": names,
            "consents": names,
            "deployment_contexts": names,
            "transfer_mechanisms": names,
            "sink_categories": names,
            "model_kinds": names,
            "model_outputs": names,
            "licence_kinds": names,
            "tenant_flags": {
                "type": "object",
                "additionalProperties": _strict(
                    {
                        "type": {"enum": ["boolean", "string", "integer"]},
                        "description": {"type": "string"},
                    },
                    ("type",),
                ),
            },
        },
        ("kind", "regions", "purposes", "personal_data", "regimes"),
    )


def _cases() -> dict[str, Any]:
    want = _strict(
        {
            "effect": {"enum": ["allow", "deny"]},
            "status": {"enum": [200, 403, 451]},
            "stage": {"type": ["string", "null"]},
            "rules": _NAME_LIST,
            "rules_include": _NAME_LIST,
            "dry_run": _NAME_LIST,
            "legal_basis": {
                "type": "array",
                "items": _strict(
                    {
                        "regime": {"type": "string"},
                        "ref": {"type": "string"},
                        "url": {"type": ["string", "null"]},
                    },
                    ("regime", "ref"),
                ),
            },
            "problem": {"type": "object"},
            "remedy_mentions": {"type": "string"},
            "obligations": {"type": "object"},
            "errors": _NAME_LIST,
        }
    )
    case = _strict(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "note": {"type": "string"},
            "context": {"type": "object"},
            "want": want,
            "meta": {"type": "object"},
        },
        ("name", "context", "want"),
    )
    return _strict(
        {
            "kind": {"const": "cases"},
            "version": {"const": 1},
            "description": {"type": "string"},
            "defaults": _strict({"context": {"type": "object"}}),
            "cases": {"type": "array", "items": case},
        },
        ("kind", "cases"),
    )


_KINDS = ("pack", "vocabulary", "settings", "cases")


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema for every policy document kind, selected by `kind`."""
    pack = _strict(
        {
            "kind": {"const": "pack"},
            "version": {"const": 1},
            "id": {"type": "string"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "regime": {"type": "string"},
            "sanctions_program": {"type": "string"},
            "stage": {"enum": list(STAGES)},
            "rules": {"type": "array", "items": _rule()},
        },
        ("kind", "id", "rules"),
    )
    settings = _strict(
        {
            "kind": {"const": "settings"},
            "version": {"const": 1},
            "default": _strict(
                {
                    "effect": {"enum": ["allow", "deny"]},
                    "status": {"enum": [451, 403]},
                    "problem": _problem(),
                },
                ("effect",),
            ),
            "operator": _strict(
                {
                    "established_in": {"type": "string"},
                    "sanctions_programs": {"type": "array", "items": {"type": "string"}},
                    "us_nexus": {"type": "string"},
                },
                (),
            ),
        },
        ("kind", "default"),
    )
    return {
        "$schema": _DIALECT,
        "$id": "https://jurisgate.example/schemas/policy.json",
        "title": "Jurisgate policy file",
        # Branch on `kind` (not `oneOf`): an editor then reports the mistake inside the
        # document's own kind, not "valid under none of four schemas".
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": list(_KINDS)}},
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"$ref": f"#/$defs/{kind}"},
            }
            for kind in _KINDS
        ],
        "$defs": {
            "pack": pack,
            "vocabulary": _vocabulary(),
            "settings": settings,
            "cases": _cases(),
            **_condition_defs(),
        },
    }


_CONTEXT_JSON: dict[str, dict[str, Any]] = {
    "string": {"type": ["string", "null"]},
    "integer": {"type": ["integer", "null"]},
    "boolean": {"type": ["boolean", "null"]},
    "time": {"type": ["string", "null"], "pattern": r"^\d{4}-\d{2}-\d{2}"},
    "region": {"type": ["string", "null"]},
    "method": {"enum": [*METHODS, None]},
}


def _context_type(ftype: str) -> dict[str, Any]:
    if ftype.startswith("list:"):
        return {"type": ["array", "null"], "items": {"type": "string"}}
    return _CONTEXT_JSON.get(ftype, {"type": ["string", "null"]})


def _identified_list(properties: dict[str, Any], description: str) -> dict[str, Any]:
    """A nullable list of objects, each with a string `id` and the given properties."""
    return {
        "type": ["array", "null"],
        "items": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}, **properties},
        },
        "description": description,
    }


def context_json_schema() -> dict[str, Any]:
    """JSON Schema of the request context the engine evaluates."""
    root: dict[str, Any] = {"type": "object", "properties": {}, "required": ["now"]}
    for path, spec in CONTEXT_FIELDS.items():
        if spec.derived:
            continue
        parts = path.split(".")
        node = root
        for part in parts[:-1]:
            node = node["properties"].setdefault(
                part, {"type": ["object", "null"], "properties": {}}
            )
        leaf = parts[-1]
        if spec.type == "object":
            node["properties"].setdefault(leaf, {"type": ["object", "null"], "properties": {}})
            node["properties"][leaf]["description"] = spec.doc
        else:
            node["properties"][leaf] = {**_context_type(spec.type), "description": spec.doc}
    root["properties"]["now"] = {
        "type": "string",
        "format": "date-time",
        "pattern": r"^\d{4}-\d{2}-\d{2}T",
        "description": CONTEXT_FIELDS["now"].doc,
    }
    caller = root["properties"]["caller"]
    caller["properties"]["flags"] = {
        "type": ["object", "null"],
        "description": "tenant flags (declared in the vocabulary)",
    }
    request = root["properties"]["request"]
    request["properties"]["personal_data_paths"] = {
        "type": ["object", "null"],
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
        "description": "where each category was found (paths, never values)",
    }
    root["properties"]["backends"] = _identified_list(
        {
            "region": {"type": ["string", "null"]},
            "transfer_mechanisms": {"type": ["array", "null"], "items": {"type": "string"}},
        },
        "candidate backends serving the model",
    )
    root["properties"]["sinks"] = _identified_list(
        {
            "category": {"type": ["string", "null"]},
            "is_sale_or_share": {"type": ["boolean", "null"]},
        },
        "third-party event sinks this request would feed",
    )
    return {
        "$schema": _DIALECT,
        "$id": "https://jurisgate.example/schemas/context.json",
        "title": "Jurisgate request context",
        **root,
    }
