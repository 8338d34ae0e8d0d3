"""One type per context field: the contexts the gateway builds from every declared header
validate against the context schema `policy eval` and the case files use, and every field
they hold is one the schema (and so `policy check`) knows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.config.loader import HeaderNames
from gateway.policy.cases import context_diagnostics
from gateway.policy.language import CONTEXT_FIELDS, DECLARED_FACTS
from gateway.request.context import ClientFacts, RouteFacts, build_context

NAMES = HeaderNames()
#: A readable value for every header the context is built from.
VALUES: dict[str, str] = {
    NAMES.purpose: "emotion_recognition",
    NAMES.lawful_basis: "consent",
    NAMES.consents: "explicit,separate",
    NAMES.subject_region: "DE",
    NAMES.subject_citizenship: "RU",
    NAMES.subject_age: "15",
    NAMES.deployment_context: "workplace",
    NAMES.exposed_persons_informed: "true",
    NAMES.explicit_label: "omit",
    NAMES.end_user: "user-4711",
    NAMES.human_review: "true",
    NAMES.gpc: "1",
}
TENANT = {
    "id": "acme-eu",
    "established_in": "DE",
    "registered_purposes": ["emotion_recognition"],
    "default_backend": "be-eu-fra",
    "flags": {"mask_pd_in_free_text": True},
}


def _build(headers: dict[str, str]) -> dict[str, Any]:
    return build_context(
        now=datetime(2026, 11, 28, 10, tzinfo=UTC),
        tenant=TENANT,
        client=ClientFacts("192.0.2.10", "DE", ("US",)),
        headers=headers,
        names=NAMES,
        route=RouteFacts("imgcls-resnet50", None, None, "predict"),
        findings=[("email", "instances[0].note")],
        model={"id": "imgcls-resnet50", "kind": "classifier", "output": "labels"},
        licence={"id": "LIC-X", "model": "imgcls-resnet50", "commercial_use": "allowed"},
        backends=[{"id": "be-eu-fra", "region": "DE", "transfer_mechanisms": []}],
        sinks=[],
    )


def test_every_header_name_is_exercised() -> None:
    skipped = {NAMES.api_key, NAMES.geo_claim}
    names = NAMES.model_dump()
    assert {v for v in names.values() if v not in skipped} == set(VALUES)
    assert set(DECLARED_FACTS.values()) <= set(VALUES)


@pytest.mark.parametrize("header", [None, *VALUES], ids=["no-headers", *VALUES])
def test_built_contexts_validate_against_the_context_schema(header: str | None) -> None:
    headers = dict(VALUES) if header is None else {header: VALUES[header]}
    for ctx in (_build(headers), _build({})):
        assert [d.text() for d in context_diagnostics(ctx)] == []


def test_every_built_field_is_a_context_field() -> None:
    ctx = _build(VALUES)
    free_form = {"caller.flags", "request.personal_data_paths"}
    for section in ("caller", "subject", "request"):
        for key in ctx[section]:
            path = f"{section}.{key}"
            assert path in CONTEXT_FIELDS or path in free_form, path


def test_the_end_user_reference_is_a_string() -> None:
    assert _build(VALUES)["request"]["end_user"] == "user-4711"
    assert _build({})["request"]["end_user"] is None
    assert CONTEXT_FIELDS["request.end_user"].type == "string"
    assert _build(VALUES)["request"]["human_review"] is True
