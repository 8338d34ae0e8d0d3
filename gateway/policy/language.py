"""The policy language's tables: stages, effects, the request-context fields rules may test,
and the operators.

These tables (`STAGES`, `CONTEXT_FIELDS`, `OPERATORS`) are the single source of truth for
the parser, the compiler, the JSON Schemas (`json_schemas.py`) and
`docs/policy-language.md`. The syntax tree built against them is in `ast.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "ContextField",
    "CONTEXT_FIELDS",
    "DECLARED_FACTS",
    "DERIVED_PREFIXES",
    "EFFECTS",
    "declared_fact_of",
    "FieldType",
    "IMAGE_MARK_SCHEMES",
    "MASK_METHODS",
    "METHODS",
    "MODES",
    "OPERATORS",
    "OperatorSpec",
    "PROBLEM_TYPES",
    "STAGE_OBLIGATIONS",
    "STAGES",
    "TIME_FIELDS_DOC",
]

#: Stages in evaluation order; the first stage with a matching deny decides. `audit` runs
#: on every decision (it only sets record-keeping obligations).
STAGES: tuple[str, ...] = (
    "sanctions",
    "licence",
    "lawful_basis",
    "residency",
    "minimisation",
    "output",
    "audit",
)

#: Which obligation kinds a rule in each stage may set (keeps each concern in one place).
STAGE_OBLIGATIONS: dict[str, frozenset[str]] = {
    "sanctions": frozenset(),
    "licence": frozenset({"headers"}),
    "lawful_basis": frozenset(),
    "residency": frozenset({"route"}),
    "minimisation": frozenset({"mask"}),
    "output": frozenset({"headers", "image_marks", "suppress_sinks"}),
    "audit": frozenset({"audit"}),
}

EFFECTS: tuple[str, ...] = ("allow", "deny", "obligate")
MODES: tuple[str, ...] = ("enforce", "dry-run")
PROBLEM_TYPES: tuple[str, ...] = ("legal", "licence")
MASK_METHODS: tuple[str, ...] = ("redact", "hash", "keep_last")
IMAGE_MARK_SCHEMES: tuple[str, ...] = (
    "iptc_digital_source_type",
    "cn_aigc_implicit_label",
    "cn_aigc_explicit_label",
)
METHODS: tuple[str, ...] = ("predict", "classify", "regress", "status", "metadata")

#: Value types of context fields. `list:<t>` is a list of `<t>`; domains name vocabulary
#: sections that literals are checked against.
FieldType = Literal[
    "string",
    "integer",
    "boolean",
    "time",
    "region",
    "object",
    "purpose",
    "lawful_basis",
    "deployment_context",
    "method",
    "model_kind",
    "model_output",
    "licence_kind",
    "commercial_use",
    "list:region",
    "list:string",
    "list:purpose",
    "list:consent",
    "list:personal_data",
]


@dataclass(frozen=True, slots=True)
class ContextField:
    """One field of the request context that a rule may test."""

    type: FieldType
    doc: str
    derived: bool = False


#: Field paths of the request context (docs/architecture.md is the contract); rules name
#: them with dots. `caller.flags.<flag>` and `purpose.<attribute>` come from the vocabulary.
CONTEXT_FIELDS: dict[str, ContextField] = {
    "now": ContextField("time", "RFC 3339 UTC time of the request (the injected clock)"),
    "caller": ContextField("object", "who is calling"),
    "caller.tenant": ContextField("string", "tenant id, null for an unknown keyless caller"),
    "caller.established_in": ContextField("region", "ISO code of the tenant's establishment"),
    "caller.region": ContextField("region", "trusted region of the client IP, null if unknown"),
    "caller.client_ip": ContextField("string", "client IP after trusted-proxy resolution"),
    "caller.region_claims": ContextField(
        "list:region", "untrusted region claims (may tighten a decision, never loosen it)"
    ),
    "caller.registered_purposes": ContextField(
        "list:purpose", "purposes in the tenant's record of processing"
    ),
    "caller.default_backend": ContextField("string", "tenant's preferred backend id"),
    "subject": ContextField("object", "the data subjects the payload is about"),
    "subject.region": ContextField("region", "declared data-subject region, null if undeclared"),
    "subject.citizenship": ContextField("region", "declared data-subject citizenship"),
    "subject.age": ContextField("integer", "declared data-subject age in whole years"),
    "subject.presumed_region": ContextField(
        "region", "subject.region when declared, else caller.region", derived=True
    ),
    "request": ContextField("object", "what is asked"),
    "request.model": ContextField("string", "model name from the URL"),
    "request.version": ContextField("integer", "model version from the URL, or null"),
    "request.label": ContextField("string", "model version label from the URL, or null"),
    "request.method": ContextField("method", "predict | classify | regress | status | metadata"),
    "request.purpose": ContextField("purpose", "declared purpose (X-Purpose), or null"),
    "request.lawful_basis": ContextField("lawful_basis", "declared lawful basis, or null"),
    "request.consents": ContextField("list:consent", "consent tokens (X-Consent)"),
    "request.deployment_context": ContextField(
        "deployment_context", "declared deployment context, or null"
    ),
    "request.gpc": ContextField("boolean", "Global Privacy Control opt-out (Sec-GPC: 1)"),
    "request.exposed_persons_informed": ContextField(
        "boolean", "deployer attests exposed persons were informed (EU AI Act Art. 50(3))"
    ),
    "request.explicit_label_omitted": ContextField(
        "boolean", "user asked for output without a visible AI label (X-AIGC-Explicit-Label)"
    ),
    "request.end_user": ContextField("string", "opaque end-user reference (X-End-User-Id)"),
    "request.human_review": ContextField(
        "boolean", "deployer attests a human reviews the outcome (X-Human-Review: true)"
    ),
    "request.personal_data": ContextField(
        "list:personal_data", "personal-data categories the detectors found"
    ),
    "request.binary_inputs": ContextField(
        "list:string",
        "media types of decoded values that are not text (image/png, application/octet-stream)",
    ),
    "request.has_personal_data": ContextField(
        "boolean",
        "true when personal data was found or the purpose processes personal data by nature",
        derived=True,
    ),
    "purpose.known": ContextField(
        "boolean", "true when request.purpose is declared and in the vocabulary", derived=True
    ),
    "licence": ContextField("object", "the tenant's licence record for this model, or null"),
    "licence.id": ContextField("string", "licence record id"),
    "licence.model": ContextField("string", "model the licence covers"),
    "licence.licensee": ContextField("string", "tenant the licence is granted to"),
    "licence.kind": ContextField("licence_kind", "contract | public"),
    "licence.spdx": ContextField("string", "SPDX id of a public licence"),
    "licence.commercial_use": ContextField("commercial_use", "allowed | prohibited"),
    "licence.territory": ContextField("list:region", "where the licensee may be established"),
    "licence.licensee_domicile_excluded": ContextField(
        "list:region", "establishments the grant excludes"
    ),
    "licence.end_users_exempt": ContextField(
        "boolean", "the exclusion does not reach end users of the licensee's product"
    ),
    "licence.valid_from": ContextField("time", "first day of the term (UTC date, inclusive)"),
    "licence.valid_until": ContextField("time", "last day of the term (UTC date, inclusive)"),
    "licence.attribution": ContextField("object", "attribution the licence requires"),
    "licence.attribution.required": ContextField("boolean", "attribution must be shown"),
    "licence.attribution.text": ContextField("string", "attribution text"),
    "licence.attribution.license_url": ContextField("string", "URL of the licence text"),
    "operator": ContextField("object", "the gateway operator, from the policy settings"),
    "operator.established_in": ContextField("region", "where the gateway operator is established"),
    "operator.sanctions_programs": ContextField(
        "list:string", "the sanctions programmes the operator applies"
    ),
    "model": ContextField("object", "the model registry record"),
    "model.id": ContextField("string", "model id"),
    "model.kind": ContextField("model_kind", "classifier | generative"),
    "model.output": ContextField("model_output", "labels | image | text | ..."),
    "model.placed_on_market": ContextField("time", "date the model was placed on the market"),
    "model.substantially_alters_input": ContextField(
        "boolean", "a generative model whose output substantially alters its input"
    ),
    "model.cn_public_service": ContextField(
        "boolean", "offered as a generative service to the public in the PRC"
    ),
}

#: Families of fields whose members come from the vocabulary.
DERIVED_PREFIXES: dict[str, str] = {
    "purpose.": "a purpose attribute from the vocabulary (null when the purpose is unknown)",
    "caller.flags.": "a tenant flag declared in the vocabulary",
}

#: The facts a caller declares in request headers, with the header that declares each. The
#: gateway cannot know them otherwise, so a deny rule that reads one states what its
#: absence means (`when_absent`): leaving a header out must never be a way around a rule.
DECLARED_FACTS: dict[str, str] = {
    "request.purpose": "X-Purpose",
    "request.lawful_basis": "X-Lawful-Basis",
    "request.consents": "X-Consent",
    "request.deployment_context": "X-Deployment-Context",
    "request.exposed_persons_informed": "X-Exposed-Persons-Informed",
    "request.human_review": "X-Human-Review",
    "request.end_user": "X-End-User-Id",
    "request.gpc": "Sec-GPC",
    "request.explicit_label_omitted": "X-AIGC-Explicit-Label",
    "subject.region": "X-Data-Subject-Region",
    "subject.citizenship": "X-Data-Subject-Citizenship",
    "subject.age": "X-Data-Subject-Age",
}

#: Derived fields computed from a declared fact: absent fact, absent (or fallback) value.
_DERIVED_FACTS: dict[str, str] = {
    "subject.presumed_region": "subject.region",
    "request.has_personal_data": "request.purpose",
    "purpose.known": "request.purpose",
}


def declared_fact_of(field_path: str) -> str | None:
    """The declared fact a field reads (itself, or the fact a derived field comes from)."""
    if field_path in DECLARED_FACTS:
        return field_path
    if field_path in _DERIVED_FACTS:
        return _DERIVED_FACTS[field_path]
    if field_path.startswith("purpose."):
        return "request.purpose"
    return None


TIME_FIELDS_DOC = (
    "times are RFC 3339 strings; a bare date is the whole UTC calendar day, so "
    "`now: {le: 2026-11-27}` holds until 2026-11-27T23:59:59.999999Z"
)


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """What an operator accepts: field types, operand shape, and its documentation."""

    field_types: frozenset[str]
    #: `scalar`: one value of the field's type; `list`: a list of such values; `element`:
    #: one element of a list field; `elements`: a list of elements; `bool`; `pair`: [lo, hi].
    operand: Literal["scalar", "list", "element", "elements", "bool", "pair"]
    doc: str
    negated: bool = False


#: Field types holding one value (every `FieldType` but objects and lists).
_SCALARS = frozenset(t for t in get_args(FieldType) if t != "object" and not t.startswith("list:"))
_ORDERED = frozenset({"integer", "time"})
_LISTS = frozenset(
    {"list:region", "list:string", "list:purpose", "list:consent", "list:personal_data"}
)
_ALL = _SCALARS | _LISTS | {"object"}

OPERATORS: dict[str, OperatorSpec] = {
    "eq": OperatorSpec(_SCALARS, "scalar", "equals (regions: the exact code)"),
    "ne": OperatorSpec(
        _SCALARS, "scalar", "differs from (null differs from everything)", negated=True
    ),
    "in": OperatorSpec(
        _SCALARS - {"boolean"},
        "list",
        "is one of; for regions, also when inside a listed country or group",
    ),
    "not_in": OperatorSpec(
        _SCALARS - {"boolean"}, "list", "is not one of (null is not in any list)", negated=True
    ),
    "lt": OperatorSpec(_ORDERED, "scalar", "less than / before"),
    "le": OperatorSpec(_ORDERED, "scalar", "less than or equal / on or before"),
    "gt": OperatorSpec(_ORDERED, "scalar", "greater than / after"),
    "ge": OperatorSpec(_ORDERED, "scalar", "greater than or equal / on or after"),
    "between": OperatorSpec(_ORDERED, "pair", "within [lo, hi], both inclusive"),
    "exists": OperatorSpec(_ALL, "bool", "present and not null (`exists: false`: absent/null)"),
    "contains": OperatorSpec(_LISTS, "element", "the list holds this element"),
    "contains_any": OperatorSpec(_LISTS, "elements", "the list holds at least one of these"),
    "contains_all": OperatorSpec(_LISTS, "elements", "the list holds all of these"),
    "contains_none": OperatorSpec(_LISTS, "elements", "the list holds none of these", negated=True),
    "empty": OperatorSpec(_LISTS, "bool", "the list is empty or null (`empty: false`: not)"),
}
