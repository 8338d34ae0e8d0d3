"""Region codes, and the region groups the policy vocabulary defines, as routing reads them.

Region codes are ISO 3166-1 alpha-2 country codes (`DE`), ISO 3166-2 subdivisions (`US-CA`,
`UA-43`) or the name of a group (`EU`, `EEA`). Codes are upper case; `normalise_region`
upper-cases and validates operator or header input. Which country belongs to which group is
read from the vocabulary (`regions.groups` in policies/vocabulary.yaml), never listed here:
`RegionGroups.from_vocabulary` takes the groups of the policy set in force.

Two relations on `RegionGroups`, kept apart on purpose:

* containment (`region_within`): `US-CA` is within `US`, `DE` is within `EU`, but `US` is not
  within `US-CA`. Policies use this one ("is the data subject in the EU?").
* routing (`routes_within`, `routing_region`): the convention of
  tests/scenarios/legal-scenarios.yaml, "a subdivision (US-CA) routes as its country (US); EU
  member states route as EU". An allowed backend region `US-CA` therefore admits a backend in
  `US`, `EU` admits a backend in `DE`, while an allowed `DE` admits only backends in Germany
  (a named member state stays a country, so routing never widens a constraint that names one
  country).

Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "ROUTING_GROUPS",
    "RegionGroups",
    "country_of",
    "normalise_region",
]

#: The groups of the routing convention, narrowest first (the order of `routing_keys`).
ROUTING_GROUPS: Final = ("EU", "EEA")

#: The group whose member states route as the group (`routing_region`).
_ROUTING_GROUP: Final = "EU"

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


def country_of(region: str) -> str:
    """The country part of a region: `US-CA` -> `US`, `DE` -> `DE`; a group is returned as is."""
    return region.split("-", 1)[0]


@dataclass(frozen=True)
class RegionGroups:
    """The routing groups (`ROUTING_GROUPS`) and their member countries, from the vocabulary."""

    members: Mapping[str, frozenset[str]]

    @classmethod
    def from_vocabulary(cls, groups: Mapping[str, Iterable[str]]) -> RegionGroups:
        """The routing groups among a vocabulary's expanded `groups` (name -> members).

        Members that name groups themselves (an expanded `EEA` lists `EU`) are left out: a
        group's members here are countries and subdivisions.
        """
        return cls(
            MappingProxyType(
                {
                    name: frozenset(m for m in groups[name] if m not in groups)
                    for name in ROUTING_GROUPS
                    if name in groups
                }
            )
        )

    def is_group(self, region: str) -> bool:
        """True when `region` names a group of countries (`EU`, `EEA`) rather than one country."""
        return region in self.members

    def groups_of(self, region: str) -> frozenset[str]:
        """The groups the region's country belongs to (`FR` -> {EU, EEA}); a group contains
        itself."""
        if self.is_group(region):
            return frozenset({region})
        country = country_of(region)
        return frozenset(name for name, members in self.members.items() if country in members)

    def region_within(self, region: str, area: str) -> bool:
        """Containment: `US-CA` is within `US` and `DE` within `EU`, but `US` is not within
        `US-CA`."""
        if region == area:
            return True
        if self.is_group(area):
            return country_of(region) in self.members[area] or (
                self.is_group(region) and self._group_in(region, area)
            )
        if "-" in area:
            return False  # only the identical subdivision is within a subdivision
        return not self.is_group(region) and country_of(region) == area

    def routing_region(self, region: str) -> str:
        """What a region routes as: EU member states as `EU`, a subdivision as its country."""
        country = country_of(region)
        return _ROUTING_GROUP if country in self.members.get(_ROUTING_GROUP, ()) else country

    def routes_within(self, backend_region: str, allowed: str) -> bool:
        """Routing convention: may a backend in `backend_region` serve a request limited to
        `allowed`?

        A subdivision in `allowed` routes as its country (`US-CA` admits a backend in `US` or
        `US-NY`); a group admits any member (`EU` admits `DE`); a country admits the same
        country and its subdivisions only.
        """
        scope = allowed if self.is_group(allowed) else country_of(allowed)
        if backend_region == scope:
            return True
        if self.is_group(scope):
            return country_of(backend_region) in self.members[scope] or (
                self.is_group(backend_region) and self._group_in(backend_region, scope)
            )
        return not self.is_group(backend_region) and country_of(backend_region) == scope

    def routing_keys(self, region: str) -> tuple[str, ...]:
        """Lookup keys for per-region settings, most specific first.

        `US-CA` -> (`US-CA`, `US`); `DE` -> (`DE`, `EU`, `EEA`); `NO` -> (`NO`, `EEA`); `EU` ->
        (`EU`,).
        """
        keys = [region]
        country = country_of(region)
        if country != region:
            keys.append(country)
        keys.extend(name for name, members in self.members.items() if country in members)
        return tuple(dict.fromkeys(keys))

    def _group_in(self, inner: str, outer: str) -> bool:
        return self.members[inner] <= self.members[outer]
