"""The tenants file's JSON Schema (`schemas/tenants.schema.json`), for editors.

Built from the constants the reader in `gateway.request.tenants` checks against, so the two
cannot drift apart; the reader stays the authority for what a schema cannot express.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.request.regions import REGION_CODE
from gateway.request.tenants import ATTESTABLE, HASH_FORMAT, PURPOSE, TENANT_ID

__all__ = ["tenants_json_schema"]


def _editor_pattern(pattern: re.Pattern[str], *, any_case: bool = False) -> str:
    """`pattern` anchored for JSON Schema (which searches); `any_case` as the reader upper-cases."""
    text = pattern.pattern.replace("A-Z", "A-Za-z") if any_case else pattern.pattern
    return f"^\\s*(?:{text})\\s*$" if any_case else f"^(?:{text})$"


def tenants_json_schema() -> dict[str, Any]:
    """JSON Schema of the tenants file, built from the constants the reader checks against.

    It is what an editor can check as one types: field names and types, id, purpose and key
    hash patterns, attestable facts, no plain `api_key`. The reader stays the authority for
    what a schema cannot say (CIDR validity, duplicate ids, a misspelt field name taken for a
    flag, a flag set twice) and reports those at `file:line:col` when the file is loaded.
    """
    strings = {"type": "array", "items": {"type": "string"}}
    json_value = {
        "description": "Any JSON value: flags reach the request context as they are.",
        "type": ["string", "number", "integer", "boolean", "null", "array", "object"],
    }
    tenant: dict[str, Any] = {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "pattern": _editor_pattern(TENANT_ID)},
            "api_key_hashes": {
                **strings,
                "items": {"type": "string", "pattern": _editor_pattern(HASH_FORMAT)},
                "description": "`sha256:` hashes of the tenant's API keys "
                "(`jurisgate tenants add` writes them).",
            },
            "established_in": {
                "type": ["string", "null"],
                "pattern": _editor_pattern(REGION_CODE, any_case=True),
                "description": "ISO 3166 country (`DE`) or subdivision (`US-CA`) code.",
            },
            "registered_purposes": {
                **strings,
                "items": {"type": "string", "pattern": _editor_pattern(PURPOSE)},
            },
            "source_networks": {
                **strings,
                "description": "CIDR networks; keyless callers from them are this tenant.",
            },
            "default_backend": {"type": ["string", "null"]},
            "flags": {"type": ["object", "null"], "additionalProperties": json_value},
            "attests": {**strings, "items": {"enum": list(ATTESTABLE)}},
        },
        "not": {
            "required": ["api_key"],
            "description": "The tenants file holds key hashes only, never a plain `api_key`.",
        },
        "additionalProperties": {
            **json_value,
            "description": "Any other key is a free-form flag.",
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Jurisgate tenants file",
        "type": ["object", "null"],
        "properties": {
            "version": {"type": "integer"},
            "tenants": {"type": ["array", "null"], "items": tenant},
        },
        "additionalProperties": False,
    }
