"""Hypothesis strategies for request contexts: mostly well-formed, sometimes hostile."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

REGIONS = [
    "DE",
    "FR",
    "US",
    "US-CA",
    "CN",
    "BR",
    "IN",
    "RU",
    "IR",
    "CU",
    "KP",
    "UA-43",
    "UA-14",
    "SY",
    "GB",
    "NO",
    "EU",
    "ZZ",
    "-X",
    "UA-",
    "",
]
PURPOSES = [
    "product_catalog_tagging",
    "emotion_recognition",
    "face_identification",
    "academic_research",
    "targeted_advertising",
    "credit_scoring",
    "style_transfer",
    "nonsense",
]
CATEGORIES = [
    "email",
    "phone",
    "iban",
    "in_aadhaar",
    "br_cpf",
    "us_ssn",
    "payment_card",
    "cn_resident_id",
    "other",
]
CONSENTS = ["parental-verified", "separate", "specific-highlighted", "explicit", "x"]
TIMES = [
    "2024-01-01",
    "2025-02-02",
    "2026-11-27",
    "2026-11-28T10:00:00Z",
    "2027-05-13T00:00:00+05:30",
    "2027-12-31",
]

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


def maybe(strategy: st.SearchStrategy[Any], hostile: float = 0.1) -> st.SearchStrategy[Any]:
    """Usually `strategy` or null; now and then a value of the wrong type."""
    return st.one_of(strategy, strategy, strategy, st.none(), junk) if hostile else strategy


region = maybe(st.sampled_from(REGIONS))
regions = maybe(st.lists(st.sampled_from(REGIONS), max_size=3))


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, Any]:
    """A request context in the shape the gateway builds (values vary, types mostly right)."""
    licence = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    "id": st.just("L1"),
                    "model": st.sampled_from(["m1", "m2"]),
                    "commercial_use": maybe(st.sampled_from(["allowed", "prohibited"])),
                    "valid_from": maybe(st.sampled_from(TIMES)),
                    "valid_until": maybe(st.sampled_from(TIMES)),
                    "licensee_domicile_excluded": regions,
                    "territory": regions,
                    "attribution": st.one_of(
                        st.none(),
                        st.fixed_dictionaries(
                            {
                                "required": maybe(st.booleans()),
                                "text": st.just("by Lab"),
                                "license_url": st.just("https://example.org/l"),
                            }
                        ),
                    ),
                }
            ),
        )
    )
    return {
        "now": draw(
            st.sampled_from(
                [
                    "2026-11-28T10:00:00Z",
                    "2025-02-01T00:00:00Z",
                    "2027-06-01T00:00:00Z",
                    "2026-12-02T00:00:00Z",
                ]
            )
        ),
        "caller": {
            "tenant": draw(maybe(st.sampled_from(["t1", "t2"]))),
            "established_in": draw(region),
            "region": draw(region),
            "region_claims": draw(regions),
            "registered_purposes": draw(maybe(st.lists(st.sampled_from(PURPOSES), max_size=2))),
            "flags": draw(
                st.one_of(
                    st.just({}),
                    st.dictionaries(
                        st.sampled_from(
                            [
                                "mask_pd_in_free_text",
                                "offers_service_to_children",
                                "ccpa_business",
                                "uidai_licensed",
                                "unlabeled_output_agreement",
                            ]
                        ),
                        maybe(st.booleans()),
                        max_size=3,
                    ),
                )
            ),
        },
        "subject": {
            "region": draw(region),
            "citizenship": draw(region),
            "age": draw(maybe(st.integers(0, 40))),
        },
        "request": {
            "model": "m1",
            "method": draw(st.sampled_from(["predict", "metadata", "status"])),
            "purpose": draw(maybe(st.sampled_from(PURPOSES))),
            "lawful_basis": draw(
                maybe(st.sampled_from(["consent", "contract", "legitimate_interests"]))
            ),
            "consents": draw(maybe(st.lists(st.sampled_from(CONSENTS), max_size=2))),
            "deployment_context": draw(maybe(st.sampled_from(["workplace", "consumer_research"]))),
            "gpc": draw(maybe(st.booleans())),
            "exposed_persons_informed": draw(maybe(st.booleans())),
            "explicit_label_omitted": draw(maybe(st.booleans())),
            "personal_data": draw(maybe(st.lists(st.sampled_from(CATEGORIES), max_size=3))),
        },
        "licence": licence,
        "model": {
            "id": "m1",
            "kind": draw(st.sampled_from(["classifier", "generative"])),
            "output": draw(st.sampled_from(["labels", "image", "text"])),
            "substantially_alters_input": draw(maybe(st.booleans())),
            "placed_on_market": draw(maybe(st.sampled_from(TIMES))),
            "cn_public_service": draw(maybe(st.booleans())),
        },
        "backends": draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "id": st.sampled_from(["a", "b", "c"]),
                        "region": st.sampled_from(REGIONS),
                        "transfer_mechanisms": st.lists(
                            st.sampled_from(["eu_scc", "anpd_scc"]), max_size=1
                        ),
                    }
                ),
                max_size=3,
            )
        ),
        "sinks": [
            {
                "id": "ad",
                "category": "cross_context_behavioral_advertising",
                "is_sale_or_share": True,
            }
        ],
    }
