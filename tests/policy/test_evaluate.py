"""The decision table: stages, deny-overrides, defaults, fail-closed errors, obligations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.policy import PolicySet
from tests.policy.conftest import context

Build = Callable[..., PolicySet]

GRANT = """
kind: pack
id: grant
stage: licence
rules:
  - id: grant
    effect: allow
    when: {licence: {exists: true}}
"""


def pack(body: str, stage: str = "lawful_basis", regime: str = "GDPR") -> str:
    return (
        f"kind: pack\nid: p-{abs(hash(body)) % 10**8}\nstage: {stage}\nregime: {regime}\n"
        f"rules:\n{body}"
    )


DENY_IR = """
  - id: deny-ir
    stage: sanctions
    effect: deny
    when: {caller.region: {in: [IR]}}
    basis: [{regime: SANCTIONS-US, ref: "31 CFR Part 560"}]
"""


def test_allow_needs_an_allow_rule_default_deny(compile_packs: Build) -> None:
    ps = compile_packs(a=pack(DENY_IR))
    d = ps.evaluate(context())
    assert (d.effect, d.status, d.stage) == ("deny", 403, "default")
    assert d.problem is not None and d.problem.type == "licence"


def test_settings_can_default_to_allow(compile_packs: Build) -> None:
    ps = compile_packs(a=pack(DENY_IR), settings="kind: settings\ndefault: {effect: allow}\n")
    assert ps.evaluate(context()).effect == "allow"
    assert ps.evaluate(context(caller={"region": "IR"})).effect == "deny"


def test_deny_overrides_allow_and_reports_its_basis(compile_packs: Build) -> None:
    ps = compile_packs(g=GRANT, a=pack(DENY_IR))
    assert ps.evaluate(context()).effect == "allow"
    d = ps.evaluate(context(caller={"region": "IR"}))
    assert (d.effect, d.status, d.stage, d.rules) == ("deny", 451, "sanctions", ("deny-ir",))
    assert [(b.regime, b.ref) for b in d.legal_basis] == [("SANCTIONS-US", "31 CFR Part 560")]
    assert (
        d.legal_basis[0].url
        == "https://ofac.treasury.gov/sanctions-programs-and-country-information"
    )
    assert d.problem is not None and d.problem.jurisdiction == "US"


def test_first_failing_stage_decides(compile_packs: Build) -> None:
    later = """
  - id: licence-says-no
    stage: licence
    effect: deny
    when: {licence: {exists: true}}
    basis: [{regime: LICENCE, ref: "x"}]
"""
    ps = compile_packs(g=GRANT, a=pack(DENY_IR + later))
    d = ps.evaluate(context(caller={"region": "IR"}))
    assert d.stage == "sanctions" and d.rules == ("deny-ir",) and d.status == 451
    d = ps.evaluate(context())
    assert d.stage == "licence" and d.status == 403 and d.problem.type == "licence"


def test_a_subdivision_is_inside_its_country_and_groups(compile_packs: Build) -> None:
    body = """
  - id: deny-us
    stage: sanctions
    effect: deny
    when: {caller.region: {in: [US]}}
    basis: [{regime: SANCTIONS-US, ref: "x"}]
  - id: deny-eu
    stage: sanctions
    effect: deny
    when: {caller.region_claims: {contains_any: [EU]}}
    basis: [{regime: SANCTIONS-EU, ref: "y"}]
"""
    ps = compile_packs(g=GRANT, a=pack(body))
    assert ps.evaluate(context(caller={"region": "US-CA"})).rules == ("deny-us",)
    assert ps.evaluate(context(caller={"region": "USA"})).effect == "allow"
    assert ps.evaluate(context(caller={"region": "CA"})).effect == "allow"
    assert ps.evaluate(context(caller={"region_claims": ["FR"]})).rules == ("deny-eu",)


def test_dry_run_is_reported_never_enforced(compile_packs: Build) -> None:
    shadow = DENY_IR.replace("effect: deny", "effect: deny\n    mode: dry-run")
    ps = compile_packs(g=GRANT, a=pack(shadow))
    d = ps.evaluate(context(caller={"region": "IR"}))
    assert d.effect == "allow" and d.dry_run == ("deny-ir",) and d.rules == ("grant",)


def test_effective_window_is_inclusive_by_utc_day(compile_packs: Build) -> None:
    body = DENY_IR.replace(
        "effect: deny",
        "effect: deny\n    effective_from: 2025-02-02\n    effective_until: 2025-02-03",
    )
    ps = compile_packs(g=GRANT, a=pack(body))
    ir = {"region": "IR"}
    assert ps.evaluate(context(now="2025-02-01T23:59:59Z", caller=ir)).effect == "allow"
    assert ps.evaluate(context(now="2025-02-02T00:00:00Z", caller=ir)).effect == "deny"
    assert ps.evaluate(context(now="2025-02-03T23:59:59Z", caller=ir)).effect == "deny"
    assert ps.evaluate(context(now="2025-02-04T00:00:00Z", caller=ir)).effect == "allow"


def test_exception_waives_until_its_expiry(compile_packs: Build) -> None:
    body = (
        DENY_IR
        + """    exceptions:
      - {when: {caller.tenant: t1}, until: 2026-12-31, ticket: LEGAL-42}
"""
    )
    ps = compile_packs(g=GRANT, a=pack(body))
    d = ps.evaluate(context(caller={"region": "IR"}))
    assert d.effect == "allow"
    assert [(w.rule, w.ticket, w.until) for w in d.waivers] == [
        ("deny-ir", "LEGAL-42", "2026-12-31")
    ]
    assert (
        ps.evaluate(context(now="2027-01-01T00:00:00Z", caller={"region": "IR"})).effect == "deny"
    )
    assert ps.evaluate(context(caller={"region": "IR", "tenant": "t2"})).effect == "deny"


@pytest.mark.parametrize(
    ("ctx", "code"),
    [
        (["not", "a", "mapping"], "context_invalid"),
        ({"caller": {}}, "context_invalid_now"),
        ({"now": "2026-11-28"}, "context_invalid_now"),
        ({"now": "yesterday"}, "context_invalid_now"),
        ({"now": "2026-11-28T10:00:00Z", "caller": "DE"}, "context_type_error"),
    ],
)
def test_unreadable_context_is_a_deny_with_its_code(
    compile_packs: Build, ctx: Any, code: str
) -> None:
    ps = compile_packs(g=GRANT, a=pack(DENY_IR))
    d = ps.evaluate(ctx)
    assert d.effect == "deny" and [e.code for e in d.errors] == [code]


def test_wrong_type_in_an_indexed_field_denies(compile_packs: Build) -> None:
    ps = compile_packs(g=GRANT, a=pack(DENY_IR))
    d = ps.evaluate(context(caller={"region": 5}))
    assert d.effect == "deny" and d.errors[0].code == "context_type_error"
    assert d.stage is None


def test_an_erroring_deny_rule_counts_as_matched(compile_packs: Build) -> None:
    body = """
  - id: kids
    effect: deny
    when: {subject.age: {lt: 16}}
    basis: [{ref: "Art. 8(1)"}]
"""
    ps = compile_packs(g=GRANT, a=pack(body))
    d = ps.evaluate(context(subject={"age": "15"}))
    assert (d.effect, d.stage, d.rules) == ("deny", "lawful_basis", ("kids",))
    assert d.errors[0].code == "context_type_error" and d.errors[0].rule == "kids"
    assert d.problem.title == "Policy evaluation error"
    assert ps.evaluate(context(subject={"age": True})).effect == "deny"


def test_an_erroring_allow_rule_denies_too(compile_packs: Build) -> None:
    body = """
  - id: adults-only
    stage: licence
    effect: allow
    when: {subject.age: {ge: 18}}
"""
    ps = compile_packs(a=pack(body))
    assert ps.evaluate(context(subject={"age": 20})).effect == "allow"
    d = ps.evaluate(context(subject={"age": 20.5}))
    assert d.effect == "deny" and d.errors[0].rule == "adults-only"


def test_missing_template_value_fails_closed(compile_packs: Build) -> None:
    body = """
  - id: attribution
    stage: output
    effect: obligate
    basis: [{regime: LICENCE, ref: "attribution"}]
    obligations: {headers: {X-Model-Attribution: "${licence.attribution.text}"}}
"""
    ps = compile_packs(g=GRANT, a=pack(body))
    d = ps.evaluate(context())
    assert d.effect == "deny" and d.errors[0].code == "template_value_missing"
    d = ps.evaluate(context(licence={"id": "L1", "attribution": {"text": "by Lab"}}))
    assert d.obligations.headers == (("X-Model-Attribution", "by Lab"),)


MASKS = """
  - id: redact-mail
    stage: minimisation
    effect: obligate
    when: {request.personal_data: {contains_any: [email, in_aadhaar]}}
    basis: [{ref: "Art. 5(1)(c)"}]
    obligations: {mask: {method: redact, categories: [email, phone]}}
  - id: aadhaar
    stage: minimisation
    effect: obligate
    when: {request.personal_data: {contains: in_aadhaar}}
    basis: [{regime: IN-AADHAAR, ref: "s.29"}]
    obligations:
      mask:
        - {method: keep_last, keep: 4, categories: [in_aadhaar, email]}
        - {method: hash, paths: ["instances[*].customer"]}
"""


def test_masks_merge_to_the_strongest_and_only_found_categories(compile_packs: Build) -> None:
    ps = compile_packs(g=GRANT, a=pack(MASKS))
    d = ps.evaluate(context(request={"personal_data": ["email", "in_aadhaar"]}))
    mask = {k: v.to_json() for k, v in d.obligations.mask.items()}
    assert mask == {"email": {"method": "redact"}, "in_aadhaar": {"method": "keep_last", "keep": 4}}
    assert d.obligations.mask_paths["instances[*].customer"].method == "hash"
    assert d.obligations.changes_exchange()
    assert {b.ref for b in d.legal_basis} >= {"Art. 5(1)(c)", "s.29"}
    d = ps.evaluate(context(request={"personal_data": ["phone"]}))
    assert not d.obligations.mask and not d.obligations.changes_exchange()


ROUTES = """
  - id: eu-only
    stage: residency
    effect: obligate
    when: {subject.region: {in: [EU]}}
    basis: [{ref: "Art. 44"}]
    obligations: {route: {regions: [EEA], or_mechanisms: [eu_scc]}}
  - id: de-only
    stage: residency
    effect: obligate
    when: {subject.citizenship: {in: [DE]}}
    basis: [{ref: "national"}]
    obligations: {route: {regions: [DE, US-CA]}}
  - id: br-only
    stage: residency
    effect: obligate
    when: {subject.citizenship: {in: [BR]}}
    basis: [{regime: BR-LGPD, ref: "Art. 33"}]
    obligations: {route: {regions: [BR]}}
"""


def test_routing_constraints_intersect(compile_packs: Build) -> None:
    ps = compile_packs(g=GRANT, a=pack(ROUTES))
    d = ps.evaluate(context(subject={"region": "FR", "citizenship": "DE"}))
    assert d.effect == "allow"
    assert d.obligations.routing.allowed_regions == ("DE",)
    assert d.obligations.routing.backends == ("be-de",)
    # A member state routes as EU: the allowed set is shown as the group.
    d = ps.evaluate(context(subject={"region": "FR"}))
    assert d.obligations.routing.allowed_regions == ("EEA",)


def test_a_subdivision_backend_routes_as_its_country(compile_packs: Build) -> None:
    ps = compile_packs(g=GRANT, a=pack(ROUTES))
    backends = [{"id": "be-ca", "region": "US-CA"}, {"id": "be-ny", "region": "US-NY"}]
    d = ps.evaluate(context(subject={"citizenship": "DE"}, backends=backends))
    assert d.obligations.routing.backends == ("be-ca",)


def test_empty_intersection_is_a_451_with_the_residency_basis(compile_packs: Build) -> None:
    ps = compile_packs(g=GRANT, a=pack(ROUTES))
    d = ps.evaluate(context(subject={"region": "FR", "citizenship": "BR"}))
    assert (d.effect, d.status, d.stage) == ("deny", 451, "residency")
    assert {b.ref for b in d.legal_basis} == {"Art. 44", "Art. 33"}
    assert set(d.rules) == {"eu-only", "br-only"} and d.problem.type == "legal"


def test_no_candidate_backend_in_the_allowed_regions_is_a_451(compile_packs: Build) -> None:
    ps = compile_packs(g=GRANT, a=pack(ROUTES))
    d = ps.evaluate(context(subject={"citizenship": "BR"}))
    assert (d.effect, d.status, d.stage) == ("deny", 451, "residency")
    d = ps.evaluate(
        context(
            subject={"region": "FR"},
            backends=[{"id": "be-us", "region": "US", "transfer_mechanisms": ["eu_scc"]}],
        )
    )
    assert d.effect == "allow" and d.obligations.routing.backends == ("be-us",)


AUDIT = """
  - id: keep-184
    stage: audit
    effect: obligate
    when: {caller.region: {in: [CN]}}
    basis: [{regime: CN-CSL, ref: "Art. 21(3)"}]
    obligations: {audit: {retention_days: 184}}
  - id: keep-in-india
    stage: audit
    effect: obligate
    when: {caller.region_claims: {contains: IN}}
    basis: [{regime: IN-CERTIN, ref: "para (iv)"}]
    obligations: {audit: {retention_days: 180, storage_region: IN}}
  - id: keep-in-eu
    stage: audit
    effect: obligate
    when: {caller.region_claims: {contains: FR}}
    basis: [{regime: GDPR, ref: "x"}]
    obligations: {audit: {storage_region: EU}}
"""


def test_audit_duties_apply_to_denials_too(compile_packs: Build) -> None:
    ps = compile_packs(g=GRANT, a=pack(DENY_IR + AUDIT))
    d = ps.evaluate(context(caller={"region": "CN", "region_claims": ["IN"]}))
    assert d.effect == "allow"
    assert d.obligations.audit.retention_days_min == 184
    assert d.obligations.audit.storage_region == "IN"
    d = ps.evaluate(context(caller={"region": "IR", "region_claims": ["IN"]}))
    assert d.effect == "deny" and d.obligations.audit.storage_region == "IN"
    assert d.rules == ("deny-ir", "keep-in-india")


def test_incompatible_storage_regions_fail_closed(compile_packs: Build) -> None:
    ps = compile_packs(g=GRANT, a=pack(AUDIT))
    d = ps.evaluate(context(caller={"region_claims": ["IN", "FR"]}))
    assert d.effect == "deny" and d.errors[0].code == "audit_storage_conflict"


def test_purpose_attributes_come_from_the_vocabulary(compile_packs: Build) -> None:
    body = """
  - id: no-emotions
    effect: deny
    when: {purpose.emotion_recognition: true}
    basis: [{regime: EU-AI-ACT, ref: "Art. 5(1)(f)"}]
  - id: non-commercial
    effect: deny
    when: {purpose.commercial: {ne: false}, licence.commercial_use: prohibited}
    basis: [{regime: LICENCE, ref: "NC"}]
"""
    ps = compile_packs(g=GRANT, a=pack(body))
    assert ps.evaluate(context(request={"purpose": "emotion_recognition"})).rules == (
        "no-emotions",
    )
    assert ps.evaluate(context(request={"purpose": "unknown_thing"})).effect == "allow"
    nc = {"id": "L1", "commercial_use": "prohibited"}
    assert (
        ps.evaluate(context(licence=nc, request={"purpose": "academic_research"})).effect == "allow"
    )
    assert ps.evaluate(context(licence=nc, request={"purpose": None})).effect == "deny"


def test_problem_templates_render_null_as_unknown(compile_packs: Build) -> None:
    body = """
  - id: needs-purpose
    effect: deny
    when: {request.purpose: {not_in: {field: caller.registered_purposes}}}
    basis: [{ref: "Art. 5(1)(b)"}]
    problem:
      detail: purpose `${request.purpose}` is not registered
      remedy: {text: "declare a purpose", header: X-Purpose}
"""
    ps = compile_packs(g=GRANT, a=pack(body))
    d = ps.evaluate(context(request={"purpose": None}))
    assert d.problem.detail == "purpose `unknown` is not registered"
    assert d.problem.remedy.header == "X-Purpose"
    assert ps.evaluate(context()).effect == "allow"


def test_decision_json_is_json_safe(shipped: PolicySet) -> None:
    import json

    d = shipped.evaluate(context(caller={"region": "IR"}), explain=True)
    body = d.to_json(include_explanation=True)
    assert json.loads(json.dumps(body)) == body
    assert body["policy_revision"].startswith("sha256:") and "explanation" in body
    assert "explanation" not in d.to_json()
