"""Region codes, groups, containment and the routing convention."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.request.regions import country_of, normalise_region
from tests.vocabulary_groups import vocabulary_groups

GROUPS = vocabulary_groups()
EU_MEMBERS = GROUPS.members["EU"]
EEA_MEMBERS = GROUPS.members["EEA"]
groups_of = GROUPS.groups_of
region_within = GROUPS.region_within
routes_within = GROUPS.routes_within
routing_keys = GROUPS.routing_keys
routing_region = GROUPS.routing_region


def test_member_lists() -> None:
    assert len(EU_MEMBERS) == 27
    assert EEA_MEMBERS - EU_MEMBERS == {"IS", "LI", "NO"}
    assert "GR" in EU_MEMBERS and "EL" not in EU_MEMBERS
    assert "GB" not in EEA_MEMBERS and "CH" not in EEA_MEMBERS


@pytest.mark.parametrize(
    ("code", "expected"),
    [("de", "DE"), (" us-ca ", "US-CA"), ("UA-43", "UA-43"), ("eu", "EU"), ("EEA", "EEA")],
)
def test_normalise_region(code: str, expected: str) -> None:
    assert normalise_region(code) == expected


@pytest.mark.parametrize("code", ["", "D", "DEU1", "US_CA", "US-CALI", "12", "Deutschland"])
def test_normalise_region_refuses(code: str) -> None:
    with pytest.raises(ValueError, match="is not an ISO 3166 code"):
        normalise_region(code)


def test_country_and_groups() -> None:
    assert country_of("US-CA") == "US"
    assert country_of("DE") == "DE"
    assert groups_of("FR") == {"EU", "EEA"}
    assert groups_of("NO") == {"EEA"}
    assert groups_of("US-CA") == frozenset()
    assert groups_of("EU") == {"EU"}


@pytest.mark.parametrize(
    ("region", "area", "within"),
    [
        ("US-CA", "US", True),
        ("US", "US-CA", False),
        ("US-CA", "US-CA", True),
        ("US-NY", "US-CA", False),
        ("DE", "EU", True),
        ("DE", "EEA", True),
        ("NO", "EU", False),
        ("NO", "EEA", True),
        ("EU", "EEA", True),
        ("EEA", "EU", False),
        ("EU", "DE", False),
        ("FR", "DE", False),
        ("UA-43", "UA", True),
        ("CN", "EU", False),
    ],
)
def test_region_within(region: str, area: str, within: bool) -> None:
    assert region_within(region, area) is within


@pytest.mark.parametrize(
    ("backend_region", "allowed", "admitted"),
    [
        ("US", "US-CA", True),  # a subdivision routes as its country
        ("US-NY", "US-CA", True),
        ("US", "US", True),
        ("DE", "EU", True),  # EU admits every member state
        ("NL", "EU", True),
        ("EU", "EU", True),
        ("NO", "EU", False),
        ("NO", "EEA", True),
        ("DE", "DE", True),
        ("FR", "DE", False),  # a named member state is not widened to the EU
        ("EU", "DE", False),
        ("US", "EU", False),
        ("CN", "CN", True),
        ("HK", "CN", False),
    ],
)
def test_routes_within(backend_region: str, allowed: str, admitted: bool) -> None:
    assert routes_within(backend_region, allowed) is admitted


@pytest.mark.parametrize(
    ("region", "keys", "routes_as"),
    [
        ("US-CA", ("US-CA", "US"), "US"),
        ("DE", ("DE", "EU", "EEA"), "EU"),
        ("NO", ("NO", "EEA"), "NO"),
        ("CN", ("CN",), "CN"),
        ("UA-43", ("UA-43", "UA"), "UA"),
        ("EU", ("EU",), "EU"),
    ],
)
def test_routing_keys_and_region(region: str, keys: tuple[str, ...], routes_as: str) -> None:
    assert routing_keys(region) == keys
    assert routing_region(region) == routes_as


def test_group_membership_is_read_from_the_vocabulary_only() -> None:
    import gateway.request.regions

    source = Path(gateway.request.regions.__file__).read_text(encoding="utf-8")
    assert '"AT"' not in source and '"IS"' not in source, "member lists belong in the vocabulary"
