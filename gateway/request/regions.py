"""Region codes and region groups: the one place that knows which country belongs to which group.

Region codes are ISO 3166-1 alpha-2 country codes (`DE`), ISO 3166-2 subdivisions (`US-CA`,
`UA-43`) or the name of a group (`EU`, `EEA`). Codes are upper case; `normalise_region`
upper-cases and validates operator or header input.

Two relations, kept apart on purpose:

* containment (`region_within`): `US-CA` is within `US`, `DE` is within `EU`, but `US` is not
  within `US-CA`. Policies use this one ("is the data subject in the EU?").
* routing (`routes_within`, `routing_region`): the convention of the scenarios file, "a
  subdivision (US-CA) routes as its country (US); EU member states route as EU". An allowed
  backend region `US-CA` therefore admits a backend in `US`, `EU` admits a backend in `DE`, while
  an allowed `DE` admits only backends in Germany (a named member state stays a country, so
  routing never widens a constraint that names one country).

Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "EEA_MEMBERS",
    "EU_MEMBERS",
    "GROUPS",
    "country_of",
    "groups_of",
    "is_group",
    "normalise_region",
    "region_within",
    "routes_within",
    "routing_keys",
    "routing_region",
]

#: The 27 Member States of the European Union (ISO 3166-1 alpha-2; Greece is `GR`, not `EL`).
EU_MEMBERS: frozenset[str] = frozenset(
    {
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
        "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
    }
)  # fmt: skip

#: The European Economic Area: the EU plus Iceland, Liechtenstein and Norway.
EEA_MEMBERS: frozenset[str] = EU_MEMBERS | {"IS", "LI", "NO"}

#: Group name -> member countries. Order matters for `routing_keys`: narrower groups first.
GROUPS: Mapping[str, frozenset[str]] = MappingProxyType({"EU": EU_MEMBERS, "EEA": EEA_MEMBERS})

# A country, a country plus an ISO 3166-2 subdivision suffix, or a group name.
#: A country, a subdivision or a group code, upper-case.
REGION_CODE: Final = re.compile(r"[A-Z]{2}(?:-[A-Z0-9]{1,3})?|[A-Z]{2,6}")


def normalise_region(code: str) -> str:
    """Return `code` stripped and upper-cased; raise ValueError when it is not a region code."""
    region = code.strip().upper()
    if not REGION_CODE.fullmatch(region):
        raise ValueError(
            f"region `{code}` is not an ISO 3166 code (`DE`, `US-CA`) or a group (`EU`)"
        )
    return region


def is_group(region: str) -> bool:
    """True when `region` names a group of countries (`EU`, `EEA`) rather than one country."""
    return region in GROUPS


def country_of(region: str) -> str:
    """The country part of a region: `US-CA` -> `US`, `DE` -> `DE`; a group is returned as is."""
    return region.split("-", 1)[0]


def groups_of(region: str) -> frozenset[str]:
    """The groups the region's country belongs to (`FR` -> {EU, EEA}); a group contains itself."""
    if is_group(region):
        return frozenset({region})
    country = country_of(region)
    return frozenset(name for name, members in GROUPS.items() if country in members)


def region_within(region: str, area: str) -> bool:
    """Containment: `US-CA` is within `US` and `DE` within `EU`, but `US` is not within `US-CA`."""
    if region == area:
        return True
    if is_group(area):
        return country_of(region) in GROUPS[area] or (is_group(region) and _group_in(region, area))
    if "-" in area:
        return False  # only the identical subdivision is within a subdivision
    return not is_group(region) and country_of(region) == area


def routing_region(region: str) -> str:
    """What a region routes as: EU member states as `EU`, a subdivision as its country."""
    country = country_of(region)
    return "EU" if country in EU_MEMBERS else country


def routes_within(backend_region: str, allowed: str) -> bool:
    """Routing convention: may a backend in `backend_region` serve a request limited to `allowed`?

    A subdivision in `allowed` routes as its country (`US-CA` admits a backend in `US` or
    `US-NY`); a group admits any member (`EU` admits `DE`); a country admits the same country
    and its subdivisions only.
    """
    scope = allowed if is_group(allowed) else country_of(allowed)
    if backend_region == scope:
        return True
    if is_group(scope):
        return country_of(backend_region) in GROUPS[scope] or (
            is_group(backend_region) and _group_in(backend_region, scope)
        )
    return not is_group(backend_region) and country_of(backend_region) == scope


def routing_keys(region: str) -> tuple[str, ...]:
    """Lookup keys for per-region settings, most specific first.

    `US-CA` -> (`US-CA`, `US`); `DE` -> (`DE`, `EU`, `EEA`); `NO` -> (`NO`, `EEA`); `EU` -> (`EU`,).
    """
    keys = [region]
    country = country_of(region)
    if country != region:
        keys.append(country)
    keys.extend(name for name, members in GROUPS.items() if country in members)
    return tuple(dict.fromkeys(keys))


def _group_in(inner: str, outer: str) -> bool:
    return GROUPS[inner] <= GROUPS[outer]
