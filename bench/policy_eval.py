"""Benchmark: the shipped policy packs vs an equivalent Cedar policy set (cedarpy), one run.

    python bench/policy_eval.py [--contexts 3000] [--seed 7] [--cedar-sample 1000]

Generates varied request contexts (tenants, regions incl. sanctioned and subdivisions,
purposes, personal data, licences valid/expired/non-commercial/missing, generative models,
ages, consents, backends, sinks), evaluates each with `PolicySet.evaluate` and, on the same
contexts, with cedarpy on `bench/cedar/policies.cedar` (90 policies: the allow/deny rules on
Action::"invoke" plus one permit per obligation rule on Action::"obligations", so both
engines produce a decision and its obligations). It checks the two agree on every effect and
on the obligation rules that apply, then prints per-decision latency (median, p90, p99) and
the ratio. Cedar requests are built before timing (that favours Cedar); the engine's timing
includes everything from the raw context to the final `Decision`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.policy import PolicySet, load_policy_set  # noqa: E402
from gateway.policy.vocabulary import Vocabulary, region_in  # noqa: E402

TENANTS: list[dict[str, Any]] = [
    {
        "tenant": "acme-eu",
        "established_in": "DE",
        "registered_purposes": ["product_catalog_tagging", "quality_inspection"],
        "flags": {"mask_pd_in_free_text": True},
    },
    {
        "tenant": "kids-photo-de",
        "established_in": "DE",
        "registered_purposes": ["photo_organisation"],
        "flags": {"offers_service_to_children": True},
    },
    {
        "tenant": "hr-analytics-de",
        "established_in": "DE",
        "registered_purposes": ["emotion_recognition"],
        "flags": {},
    },
    {
        "tenant": "adtest-fr",
        "established_in": "FR",
        "registered_purposes": ["emotion_recognition"],
        "flags": {},
    },
    {
        "tenant": "atelier-fr",
        "established_in": "FR",
        "registered_purposes": ["style_transfer"],
        "flags": {},
    },
    {
        "tenant": "cn-studio",
        "established_in": "CN",
        "registered_purposes": ["style_transfer"],
        "flags": {"labelling_terms_in_agreement": True, "unlabeled_output_agreement": True},
    },
    {
        "tenant": "cn-retail",
        "established_in": "CN",
        "registered_purposes": ["product_catalog_tagging"],
        "flags": {"mask_pd_in_free_text": True},
    },
    {
        "tenant": "westmart-us",
        "established_in": "US-CA",
        "registered_purposes": ["product_catalog_tagging"],
        "flags": {"ccpa_business": True, "mask_pd_in_free_text": True},
    },
    {
        "tenant": "br-varejo",
        "established_in": "BR",
        "registered_purposes": ["product_catalog_tagging", "face_identification"],
        "flags": {"mask_pd_in_free_text": True},
    },
    {
        "tenant": "in-fintech",
        "established_in": "IN",
        "registered_purposes": ["document_classification"],
        "flags": {"uidai_licensed": False, "mask_pd_in_free_text": True},
    },
    {
        "tenant": "in-edtech",
        "established_in": "IN",
        "registered_purposes": ["targeted_advertising"],
        "flags": {},
    },
    {
        "tenant": "kz-retail",
        "established_in": "KZ",
        "registered_purposes": ["product_catalog_tagging"],
        "flags": {},
    },
    {
        "tenant": "globalapp-sg",
        "established_in": "SG",
        "registered_purposes": ["product_catalog_tagging"],
        "flags": {},
    },
    {
        "tenant": "uni-lab",
        "established_in": "FR",
        "registered_purposes": ["academic_research", "commercial_product_tagging"],
        "flags": {},
    },
    {
        "tenant": "eu-vision",
        "established_in": "DE",
        "registered_purposes": ["product_catalog_tagging"],
        "flags": {},
    },
]
REGIONS = [
    "DE",
    "FR",
    "NL",
    "IT",
    "ES",
    "PL",
    "SE",
    "US-CA",
    "US-NY",
    "US",
    "CN",
    "IN",
    "BR",
    "RU",
    "KZ",
    "SG",
    "GB",
    "JP",
    "IR",
    "CU",
    "KP",
    "UA-43",
    "UA-40",
    "UA-14",
    "SY",
    "NO",
    "CH",
    None,
]
REGION_WEIGHTS = [
    8,
    6,
    3,
    2,
    2,
    2,
    2,
    6,
    3,
    3,
    6,
    5,
    5,
    1,
    1,
    3,
    2,
    2,
    1,
    1,
    1,
    1,
    1,
    1,
    1,
    1,
    1,
    2,
]
PURPOSES = [
    "product_catalog_tagging",
    "quality_inspection",
    "document_classification",
    "photo_organisation",
    "style_transfer",
    "academic_research",
    "commercial_product_tagging",
    "emotion_recognition",
    "face_identification",
    "targeted_advertising",
    "credit_scoring",
    None,
]
CATEGORIES = [
    "email",
    "phone",
    "iban",
    "payment_card",
    "cn_resident_id",
    "us_ssn",
    "in_aadhaar",
    "br_cpf",
    "ip_address",
]
BACKENDS: list[dict[str, Any]] = [
    {"id": "be-eu-fra", "region": "DE", "transfer_mechanisms": []},
    {"id": "be-us-east", "region": "US", "transfer_mechanisms": []},
    {"id": "be-cn-sha", "region": "CN", "transfer_mechanisms": []},
    {"id": "be-br-sao", "region": "BR", "transfer_mechanisms": []},
    {"id": "be-in-mum", "region": "IN", "transfer_mechanisms": []},
]
MODELS: list[dict[str, Any]] = [
    {
        "id": "imgcls-resnet50",
        "kind": "classifier",
        "output": "labels",
        "placed_on_market": "2025-03-01",
    },
    {"id": "imgcls-nc", "kind": "classifier", "output": "labels", "placed_on_market": "2025-06-01"},
    {
        "id": "style-transfer-cnn",
        "kind": "generative",
        "output": "image",
        "substantially_alters_input": True,
        "placed_on_market": "2026-09-15",
        "cn_public_service": True,
    },
]
NOWS = [
    "2026-11-28T10:00:00Z",
    "2026-11-27T23:59:59Z",
    "2027-06-01T08:00:00Z",
    "2025-06-01T12:00:00Z",
    "2026-12-05T00:00:00Z",
]


def make_contexts(n: int, seed: int) -> list[dict[str, Any]]:
    """Varied, mostly realistic contexts (deterministic for a seed)."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        tenant = dict(rnd.choice(TENANTS))
        region = rnd.choices(REGIONS, REGION_WEIGHTS)[0]
        model = rnd.choice(MODELS)
        purpose = (
            rnd.choice(tenant["registered_purposes"])
            if rnd.random() < 0.8
            else rnd.choice(PURPOSES)
        )
        pd = rnd.sample(CATEGORIES, rnd.choice([0, 0, 0, 1, 1, 2, 3]))
        subject_region = rnd.choice(
            [None, None, region, tenant["established_in"], "DE", "CN", "BR", "IN", "US-CA"]
        )
        licence: dict[str, Any] | None = {
            "id": f"LIC-{tenant['tenant']}",
            "model": model["id"],
            "licensee": tenant["tenant"],
            "kind": "contract",
            "commercial_use": "allowed",
            "valid_from": "2025-01-01",
            "valid_until": rnd.choice(["2027-12-31", "2027-12-31", "2026-11-27", None]),
        }
        roll = rnd.random()
        if roll < 0.08:
            licence = None
        elif roll < 0.2:
            assert licence is not None
            licence.update(
                {
                    "kind": "public",
                    "spdx": "CC-BY-NC-4.0",
                    "commercial_use": "prohibited",
                    "attribution": {
                        "required": True,
                        "text": "Model by Example Lab",
                        "license_url": "https://example.org/licence",
                    },
                }
            )
        elif roll < 0.25:
            assert licence is not None
            licence["licensee_domicile_excluded"] = ["EU"]
        backends = rnd.sample(BACKENDS, rnd.randint(1, len(BACKENDS)))
        if rnd.random() < 0.1:
            backends = [dict(b, transfer_mechanisms=["eu_scc", "anpd_scc"]) for b in backends]
        out.append(
            {
                "now": rnd.choice(NOWS),
                "caller": {
                    "tenant": tenant["tenant"],
                    "established_in": tenant["established_in"],
                    "region": region,
                    "client_ip": "192.0.2.10",
                    "region_claims": rnd.choice([[], [], [], ["US"], ["CU"], ["US-CA", "US"]]),
                    "registered_purposes": tenant["registered_purposes"],
                    "default_backend": None,
                    "flags": tenant["flags"],
                },
                "subject": {
                    "region": subject_region,
                    "citizenship": rnd.choice([None, None, None, "RU", "DE"]),
                    "age": rnd.choice([None, None, None, 10, 13, 15, 17, 30]),
                },
                "request": {
                    "model": model["id"],
                    "version": None,
                    "label": None,
                    "method": rnd.choice(["predict"] * 9 + ["metadata"]),
                    "purpose": purpose,
                    "lawful_basis": rnd.choice(
                        [None, "consent", "contract", "legitimate_interests"]
                    ),
                    "consents": rnd.choice(
                        [
                            [],
                            [],
                            ["parental-verified"],
                            ["explicit"],
                            ["separate"],
                            ["specific-highlighted"],
                        ]
                    ),
                    "deployment_context": rnd.choice(
                        [None, None, "workplace", "consumer_research", "consumer_app"]
                    ),
                    "gpc": rnd.random() < 0.2,
                    "exposed_persons_informed": rnd.random() < 0.5,
                    "explicit_label_omitted": rnd.random() < 0.2,
                    "end_user": None,
                    "personal_data": pd,
                    "personal_data_paths": {c: ["instances[0].note"] for c in pd},
                },
                "licence": licence,
                "model": model,
                "backends": backends,
                "sinks": [
                    {
                        "id": "adtech-partner",
                        "category": "cross_context_behavioral_advertising",
                        "is_sale_or_share": True,
                    }
                ],
            }
        )
    return out


# --------------------------------------------------------------------------- Cedar side


def _ancestors(vocab: Vocabulary, code: str | None) -> list[str]:
    if not code:
        return []
    out = {code}
    if "-" in code:
        out.add(code.partition("-")[0])
    for name, members in vocab.groups.items():
        if region_in(code, members):
            out.add(name)
    return sorted(out)


def _day(text: str | None) -> int:
    if not text:
        return 0
    return (dt.date.fromisoformat(text[:10]) - dt.date(1970, 1, 1)).days


def cedar_context(ctx: dict[str, Any], vocab: Vocabulary) -> dict[str, Any]:
    """Flatten a Jurisgate context into the Cedar request context the .cedar set reads."""
    caller, subject, request = ctx["caller"], ctx["subject"], ctx["request"]
    licence, model = ctx["licence"] or {}, ctx["model"]
    purpose = request["purpose"]
    attrs = vocab.purposes.get(purpose) if purpose else None
    flags = caller.get("flags") or {}
    presumed = subject["region"] if subject["region"] is not None else caller["region"]
    has_pd = bool(request["personal_data"]) or bool(attrs and attrs.get("personal_data"))
    return {
        "caller_regions": _ancestors(vocab, caller["region"]),
        "claim_regions": sorted({a for c in caller["region_claims"] for a in _ancestors(vocab, c)}),
        "established": _ancestors(vocab, caller["established_in"]),
        "subject_regions": _ancestors(vocab, presumed),
        "citizenship": _ancestors(vocab, subject["citizenship"]),
        "registered_purposes": caller["registered_purposes"],
        "method": request["method"],
        "purpose": purpose or "",
        # Declared facts a rule asks for when absent (`when_absent: ask`).
        "purpose_absent": purpose is None,
        "lb_absent": request["lawful_basis"] is None,
        "dc_absent": request["deployment_context"] is None,
        "lawful_basis": request["lawful_basis"] or "",
        "consents": request["consents"],
        "personal_data": request["personal_data"],
        "has_pd": has_pd,
        "deployment_context": request["deployment_context"] or "",
        "exposed_persons_informed": bool(request["exposed_persons_informed"]),
        "human_review": request.get("human_review") is True,
        "gpc": bool(request["gpc"]),
        "explicit_label_omitted": bool(request["explicit_label_omitted"]),
        "has_age": subject["age"] is not None,
        "age": subject["age"] or 0,
        "now_day": _day(ctx["now"]),
        "purpose_non_commercial": bool(attrs is not None and attrs.get("commercial") is False),
        **{
            f"p_{a}": bool(attrs and attrs.get(a))
            for a in (
                "biometric_identification",
                "biometric_categorisation",
                "biometric_categorisation_non_sensitive",
                "emotion_recognition",
                "behavioural_advertising",
                "significant_decision",
            )
        },
        **{
            f"f_{f}": flags.get(f) is True
            for f in (
                "offers_service_to_children",
                "mask_pd_in_free_text",
                "ccpa_business",
                "uidai_licensed",
                "unlabeled_output_agreement",
            )
        },
        "has_licence": bool(ctx["licence"]),
        "has_licence_model": "model" in licence,
        "licence_model_matches": licence.get("model") == request["model"],
        "has_licence_from": bool(licence.get("valid_from")),
        "licence_from_day": _day(licence.get("valid_from")),
        "has_licence_until": bool(licence.get("valid_until")),
        "licence_until_day": _day(licence.get("valid_until")),
        "licence_non_commercial": licence.get("commercial_use") == "prohibited",
        "licence_spdx": licence.get("spdx") or "",
        "licence_excluded": licence.get("licensee_domicile_excluded") or [],
        "has_licence_territory": licence.get("territory") is not None,
        "licence_territory": licence.get("territory") or [],
        "licence_attribution_required": bool((licence.get("attribution") or {}).get("required")),
        "model_kind": model["kind"],
        "model_output": model["output"],
        "model_alters_input": model.get("substantially_alters_input") is not False,
        "model_cn_public_service": model.get("cn_public_service") is True,
        "placed_on_market_day": _day(model.get("placed_on_market")),
        **_backend_slots(ctx["backends"], vocab),
    }


def _backend_slots(backends: list[dict[str, Any]], vocab: Vocabulary) -> dict[str, Any]:
    """Up to five candidate backends as b0..b4 (Cedar has no quantifier over a set)."""
    slots: dict[str, Any] = {}
    for i in range(5):
        b = backends[i] if i < len(backends) else None
        slots[f"b{i}_present"] = b is not None
        slots[f"b{i}_regions"] = _ancestors(vocab, b["region"]) if b else []
        slots[f"b{i}_mechanisms"] = list(b["transfer_mechanisms"]) if b else []
    return slots


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))]


def time_engine(ps: PolicySet, contexts: list[dict[str, Any]], rounds: int) -> list[float]:
    """Per-decision latency in microseconds (best of `rounds` per context)."""
    clock = time.perf_counter_ns
    best = [float("inf")] * len(contexts)
    gc.disable()
    try:
        for _ in range(rounds):
            for i, ctx in enumerate(contexts):
                t0 = clock()
                ps.evaluate(ctx)
                elapsed = clock() - t0
                if elapsed < best[i]:
                    best[i] = elapsed
    finally:
        gc.enable()
    return [b / 1000 for b in best]


def _calibrate() -> float:
    """Nanoseconds per empty loop iteration (best of five), to compare machines."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(200_000):
            pass
        best = min(best, (time.perf_counter_ns() - t0) / 200_000)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; exit 1 if the engines disagree."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=5, help="engine passes (best kept)")
    parser.add_argument(
        "--cedar-sample",
        type=int,
        default=1000,
        help="contexts timed with cedarpy (all are checked for agreement)",
    )
    args = parser.parse_args(argv)

    import cedarpy

    result = load_policy_set([ROOT / "policies"])
    if result.policy_set is None:
        for d in result.diagnostics:
            print(d.text(), file=sys.stderr)
        return 1
    ps = result.policy_set
    contexts = make_contexts(args.contexts, args.seed)
    cedar_text = (ROOT / "bench" / "cedar" / "policies.cedar").read_text(encoding="utf-8")
    cedar_ids = [line.split('"')[1] for line in cedar_text.splitlines() if line.startswith("@id(")]
    cedar_set = cedarpy.PolicySet.from_str(cedar_text)
    obligation_ids = {r.id for r in ps.rules if r.spec.effect == "obligate"}

    requests = []
    for ctx in contexts:
        cctx = cedar_context(ctx, ps.vocabulary)
        base = {
            "principal": f'Tenant::"{ctx["caller"]["tenant"]}"',
            "resource": f'Model::"{ctx["request"]["model"]}"',
            "context": cctx,
        }
        requests.append(
            [{**base, "action": 'Action::"invoke"'}, {**base, "action": 'Action::"obligations"'}]
        )

    # Agreement: effects on every context, and obligation rules on every allow.
    decisions = [ps.evaluate(ctx) for ctx in contexts]
    disagree = 0
    obligation_mismatch = 0
    for decision, reqs in zip(decisions, requests, strict=True):
        invoke, obligations = cedarpy.is_authorized_batch(reqs, cedar_set, [])
        if invoke.allowed != decision.allowed:
            disagree += 1
            if disagree <= 3:
                print(
                    f"effect differs: engine {decision.effect} {decision.rules} "
                    f"{[e.code for e in decision.errors]} / cedar {invoke.decision} "
                    f"{[cedar_ids[int(p[6:])] for p in invoke.diagnostics.reasons]}",
                    file=sys.stderr,
                )
        if decision.allowed:
            cedar_obl = {cedar_ids[int(p[6:])] for p in obligations.diagnostics.reasons}
            engine_obl = {r for r in decision.rules if r in obligation_ids}
            if cedar_obl != engine_obl:
                obligation_mismatch += 1
                if obligation_mismatch <= 3:
                    print(
                        f"obligations differ: engine {sorted(engine_obl)} / cedar "
                        f"{sorted(cedar_obl)}",
                        file=sys.stderr,
                    )

    engine = time_engine(ps, contexts, args.rounds)
    sample = requests[: args.cedar_sample]
    clock = time.perf_counter_ns
    cedar: list[float] = []
    for reqs in sample:
        t0 = clock()
        cedarpy.is_authorized_batch(reqs, cedar_set, [])
        cedar.append((clock() - t0) / 1000)
    engine_sample = engine[: args.cedar_sample]

    allows = sum(d.allowed for d in decisions)
    loop_ns = _calibrate()
    print(
        f"machine: an empty Python loop iteration takes {loop_ns:.1f} ns "
        "(best of five; compare runs by it: it grows when the machine is busy)"
    )
    print(
        f"policy set: {len(ps.rules)} rules, revision {ps.revision[:19]}...; "
        f"cedar set: {len(cedar_ids)} policies"
    )
    print(
        f"contexts: {len(contexts)} ({allows} allow, {len(contexts) - allows} deny); "
        f"effect disagreements: {disagree}; obligation disagreements: {obligation_mismatch}"
    )
    print(
        f"jurisgate  median {statistics.median(engine):7.2f} us   "
        f"p90 {_percentile(engine, 0.90):7.2f} us   p99 {_percentile(engine, 0.99):7.2f} us"
        f"   (all {len(engine)} contexts, best of {args.rounds})"
    )
    print(
        f"cedarpy    median {statistics.median(cedar):7.2f} us   "
        f"p90 {_percentile(cedar, 0.90):7.2f} us   p99 {_percentile(cedar, 0.99):7.2f} us"
        f"   ({len(cedar)} contexts, pre-parsed policy set, requests built untimed)"
    )
    ratio_median = statistics.median(cedar) / statistics.median(engine_sample)
    ratio_mean = statistics.fmean(cedar) / statistics.fmean(engine_sample)
    print(
        f"ratio cedarpy/jurisgate on the same contexts: median {ratio_median:.1f}x, "
        f"mean {ratio_mean:.1f}x"
    )
    bars = (
        statistics.median(engine) <= 10 and _percentile(engine, 0.99) <= 50 and ratio_median >= 20
    )
    print(f"bars (median <= 10 us, p99 <= 50 us, >= 20x): {'met' if bars else 'NOT met'}")
    return 1 if disagree or obligation_mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
