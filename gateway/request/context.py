"""Build the request context the policy engine evaluates (see docs/architecture.md).

Pure: no aiohttp, no I/O. The handler gathers the facts (tenant, client address and region,
parsed route, personal-data findings) and this module turns them, with the declared headers,
into the one JSON-compatible mapping the policies see. `jurisgate policy eval --context`
takes the same mapping, so what an officer tests is what the gateway evaluates.

Rule 1: a declared header that cannot be read (an age that is not a whole number, a region
that is not a region code) is a `ContextError` naming the header: the caller gets a 400 that
says which header and what it should hold, rather than a silently different decision.
Rule 2: region claims from untrusted sources only ever land in `caller.region_claims`.
Rule 3: a declared fact that the gateway also infers (the data subjects' region) adds to the
inference unless the tenant attests it: `inferred_alternative` gives the context to evaluate
beside the declared one, and the stricter of the two decisions applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.config.loader import HeaderNames

__all__ = [
    "ClientFacts",
    "ContextError",
    "RouteFacts",
    "build_context",
    "find_licence",
    "inferred_alternative",
]

_REGION_RE = re.compile(r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: ASCII digits only: `str.isdigit` also accepts `²` and `٣`, which `int` refuses or reads.
_AGE_RE = re.compile(r"[0-9]{1,3}")
_MAX_CONSENTS = 16


class ContextError(ValueError):
    """A declared header holds a value the gateway cannot read; names the header."""

    def __init__(self, header: str, value: str, expected: str) -> None:
        shown = value if len(value) <= 40 else value[:37] + "..."
        super().__init__(f"header {header} has bad value {shown!r}: expected {expected}")
        self.header = header
        self.expected = expected


@dataclass(frozen=True, slots=True)
class ClientFacts:
    """What the gateway established about the network caller."""

    ip: str
    region: str | None
    region_claims: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """The TF Serving endpoint the request addresses."""

    model: str | None
    version: int | None
    label: str | None
    method: str


def find_licence(
    licences: Iterable[Mapping[str, Any]], tenant_id: str | None, model: str | None
) -> Mapping[str, Any] | None:
    """Return the licence record of `tenant_id` for `model`, else a public one (`licensee: "*"`)."""
    public: Mapping[str, Any] | None = None
    for licence in licences:
        if licence.get("model") != model:
            continue
        if tenant_id is not None and licence.get("licensee") == tenant_id:
            return licence
        if licence.get("licensee") == "*" and public is None:
            public = licence
    return public


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _matching(
    headers: Mapping[str, str], name: str, pattern: re.Pattern[str], expected: str
) -> str | None:
    """The header's value when it matches `pattern`; absent is None, anything else raises."""
    value = _header(headers, name)
    if value is not None and not pattern.match(value):
        raise ContextError(name, value, expected)
    return value


def _region(headers: Mapping[str, str], name: str) -> str | None:
    value = _matching(headers, name, _REGION_RE, "an ISO 3166 code such as DE or US-CA")
    return None if value is None else value.upper()


def _token(headers: Mapping[str, str], name: str) -> str | None:
    expected = "a single token of letters, digits, '_', '-' or '.'"
    value = _matching(headers, name, _TOKEN_RE, expected)
    return None if value is None else value.lower()


def _flag(headers: Mapping[str, str], name: str) -> bool:
    value = _header(headers, name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ContextError(name, value, "true or false")


def _age(headers: Mapping[str, str], name: str) -> int | None:
    value = _header(headers, name)
    if value is None:
        return None
    if _AGE_RE.fullmatch(value) is None:
        raise ContextError(name, value, "an age in whole years in ASCII digits, e.g. 15")
    return int(value)


def _consents(headers: Mapping[str, str], name: str) -> list[str]:
    value = _header(headers, name)
    if value is None:
        return []
    tokens = [part.strip().lower() for part in value.split(",") if part.strip()]
    if len(tokens) > _MAX_CONSENTS or not all(_TOKEN_RE.match(t) for t in tokens):
        raise ContextError(name, value, "comma-separated consent tokens, e.g. explicit,separate")
    return sorted(set(tokens))


def build_context(
    *,
    now: datetime,
    tenant: Mapping[str, Any] | None,
    client: ClientFacts,
    headers: Mapping[str, str],
    names: HeaderNames,
    route: RouteFacts,
    findings: Sequence[tuple[str, str]],
    model: Mapping[str, Any] | None,
    licence: Mapping[str, Any] | None,
    backends: Sequence[Mapping[str, Any]],
    sinks: Sequence[Mapping[str, Any]],
    binary_inputs: Sequence[str] = (),
) -> dict[str, Any]:
    """Assemble the request context; raises `ContextError` for an unreadable declared header.

    `tenant` is the tenant record as a mapping (id, established_in, registered_purposes,
    default_backend and free-form flags); `findings` are `(category, json_path)` pairs;
    `binary_inputs` are the media types of decoded values that are not text.
    """
    paths: dict[str, list[str]] = {}
    for category, path in findings:
        bucket = paths.setdefault(category, [])
        if path not in bucket:
            bucket.append(path)
    explicit_label = _header(headers, names.explicit_label)
    caller: dict[str, Any] = {
        "tenant": None,
        "established_in": None,
        "region": client.region,
        "client_ip": client.ip,
        "region_claims": list(client.region_claims),
        "registered_purposes": [],
        "default_backend": None,
        "flags": {},
    }
    if tenant is not None:
        caller["tenant"] = tenant.get("id")
        caller["established_in"] = tenant.get("established_in")
        caller["registered_purposes"] = list(tenant.get("registered_purposes", ()))
        caller["default_backend"] = tenant.get("default_backend")
        caller["flags"] = dict(tenant.get("flags", {}))
    gpc_value = _header(headers, names.gpc)
    return {
        # isoformat, not strftime: it takes about half the time, on every request.
        "now": now.replace(tzinfo=None, microsecond=0).isoformat() + "Z",
        "caller": caller,
        "subject": {
            "region": _region(headers, names.subject_region),
            "citizenship": _region(headers, names.subject_citizenship),
            "age": _age(headers, names.subject_age),
        },
        "request": {
            "model": route.model,
            "version": route.version,
            "label": route.label,
            "method": route.method,
            "purpose": _token(headers, names.purpose),
            "lawful_basis": _token(headers, names.lawful_basis),
            "consents": _consents(headers, names.consents),
            "deployment_context": _token(headers, names.deployment_context),
            "gpc": gpc_value == "1",
            "exposed_persons_informed": _flag(headers, names.exposed_persons_informed),
            "explicit_label_omitted": (explicit_label or "").lower() == "omit",
            "end_user": _header(headers, names.end_user),
            "human_review": _flag(headers, names.human_review),
            "personal_data": sorted(paths),
            "personal_data_paths": paths,
            "binary_inputs": sorted(set(binary_inputs)),
        },
        "licence": dict(licence) if licence is not None else None,
        "model": dict(model) if model is not None else None,
        "backends": [dict(b) for b in backends],
        "sinks": [dict(s) for s in sinks],
    }


def inferred_alternative(context: Mapping[str, Any], *, attested: bool) -> dict[str, Any] | None:
    """The context with the inferred subject region instead of the declared one, or None.

    `subject.presumed_region` is the declared `subject.region` when there is one, else the
    caller's network region. A declaration from a tenant that does not attest it must not
    hide what the gateway inferred (a non-EEA tenant calling from Germany cannot switch GDPR
    off by declaring `US`), so both readings are evaluated. None when there is nothing to
    add: no declaration, an attested one, no inferred region, or the two agree.
    """
    subject = context.get("subject") or {}
    declared = subject.get("region")
    inferred = (context.get("caller") or {}).get("region")
    if attested or declared is None or inferred is None or declared == inferred:
        return None
    alternative = dict(context)
    alternative["subject"] = {**subject, "region": None}
    return alternative
