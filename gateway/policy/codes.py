"""The diagnostic codes of the policy loader, parser and compiler (docs/policy-language.md).

`SHAPE` is a document whose structure is wrong (an unknown key, a missing field, a value of
the wrong kind); its code is `policy_schema_error`, the code reports and tools match on.
The JSON Schemas for editors are in `json_schemas.py`.
"""

from __future__ import annotations

__all__ = [
    "ABSENCE",
    "BLOCKING_STATUTE",
    "CONFLICT",
    "REF",
    "SHAPE",
    "TYPE",
    "UNREACHABLE",
]

#: A document's structure is wrong: unknown or missing keys, a value of the wrong kind.
SHAPE = "policy_schema_error"
#: A value of the wrong type for its field or operator.
TYPE = "policy_type_error"
#: A name the vocabulary or the request context does not define.
REF = "policy_ref_error"
#: Two definitions of one thing (rule ids, vocabularies, settings).
CONFLICT = "policy_conflict"
#: A condition that can never hold (or always holds).
UNREACHABLE = "policy_unreachable"
#: A deny rule that reads a declared fact without saying what its absence means.
ABSENCE = "policy_absence_implicit"
#: An operator in the EU applying US measures the EU Blocking Statute lists (a warning).
BLOCKING_STATUTE = "policy_blocking_statute"
