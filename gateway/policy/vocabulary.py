"""The vocabulary rules are checked against, and the region algebra.

Rule 1: a region term is an ISO 3166-1 alpha-2 country (`DE`), an ISO 3166-2 subdivision
declared in the vocabulary (`UA-43`), or a group name (`EU`); groups may contain groups.
Rule 2: a value is *in* a set of terms when it is listed, when its country is listed (a
subdivision is inside its country: `US-CA` is in `[US]`), or when a listed group contains
it (`DE` is in `[EU]`). Routing uses the same rule, so "a subdivision routes as its
country and EU member states route as EU".
Rule 3: expanded sets hold only countries and subdivisions, plus the names of the groups
they fully contain (so a value that is itself a group name matches too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "RegimeInfo",
    "Vocabulary",
    "country_of",
    "region_in",
]


def country_of(code: str) -> str:
    """The country part of a region code (`US-CA` -> `US`; `DE` -> `DE`)."""
    dash = code.find("-")
    return code[:dash] if dash > 0 else code


def region_in(value: str, expanded: frozenset[str]) -> bool:
    """True when region `value` lies inside an expanded set of region terms."""
    if value in expanded:
        return True
    dash = value.find("-")
    return dash > 0 and value[:dash] in expanded


@dataclass(frozen=True, slots=True)
class RegimeInfo:
    """A legal regime: the id rules cite, and what a 451 body says about it."""

    id: str
    name: str
    url: str | None
    demanding_party: str | None
    jurisdiction: str | None


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """The closed sets rules and contexts are checked against (immutable once built)."""

    countries: frozenset[str]
    subdivisions: Mapping[str, str]
    groups: Mapping[str, frozenset[str]]  # name -> expanded members (countries/subdivisions)
    purposes: Mapping[str, Mapping[str, bool]]
    purpose_attributes: Mapping[str, str]
    personal_data: Mapping[str, str]
    regimes: Mapping[str, RegimeInfo]
    lawful_bases: frozenset[str]
    consents: frozenset[str]
    deployment_contexts: frozenset[str]
    transfer_mechanisms: frozenset[str]
    sink_categories: frozenset[str]
    model_kinds: frozenset[str]
    model_outputs: frozenset[str]
    licence_kinds: frozenset[str]
    tenant_flags: Mapping[str, str]  # flag -> boolean | string | integer
    file: str = "<vocabulary>"
    _group_order: tuple[str, ...] = field(default=(), repr=False)

    def is_region_term(self, term: str) -> bool:
        """True for a known country, declared subdivision or group name."""
        return term in self.countries or term in self.subdivisions or term in self.groups

    def region_terms(self) -> list[str]:
        """All region terms (for "did you mean")."""
        return [*self.countries, *self.subdivisions, *self.groups]

    def expand(self, terms: Iterable[str]) -> frozenset[str]:
        """Expand region terms into countries/subdivisions plus fully contained groups.

        Unknown terms are kept as they are (contexts may carry codes the vocabulary does not
        declare; they then match only themselves).
        """
        members: set[str] = set()
        for term in terms:
            group = self.groups.get(term)
            if group is not None:
                members |= group
            else:
                members.add(term)
        return self._with_group_names(members)

    def _with_group_names(self, members: set[str]) -> frozenset[str]:
        out = set(members)
        for name, group in self.groups.items():
            if group and all(region_in(m, frozenset(members)) for m in group):
                out.add(name)
        return frozenset(out)

    def intersect(self, a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
        """Regions inside both expanded sets (a subdivision survives when its country does)."""
        plain_a = {m for m in a if m not in self.groups}
        plain_b = {m for m in b if m not in self.groups}
        frozen_a, frozen_b = frozenset(plain_a), frozenset(plain_b)
        kept = {m for m in plain_a | plain_b if region_in(m, frozen_a) and region_in(m, frozen_b)}
        return self._with_group_names(kept)

    def compress(self, expanded: frozenset[str]) -> list[str]:
        """Render an expanded set compactly: largest fully-contained groups first."""
        remaining = {m for m in expanded if m not in self.groups}
        out: list[str] = []
        for name in self._group_order:
            group = self.groups[name]
            if group and group <= remaining:
                out.append(name)
                remaining -= group
        # Subdivisions whose country is already listed add nothing.
        countries = {m for m in remaining if "-" not in m}
        leftovers = sorted(m for m in remaining if "-" not in m or country_of(m) not in countries)
        return out + leftovers

    def purpose_attribute(self, purpose: object, attribute: str) -> bool | None:
        """The attribute of a purpose; None when the purpose is undeclared or unknown."""
        if not isinstance(purpose, str):
            return None
        attrs = self.purposes.get(purpose)
        if attrs is None:
            return None
        return attrs.get(attribute, False)


def build_groups(
    raw_groups: Mapping[str, list[str]],
) -> tuple[dict[str, frozenset[str]], tuple[str, ...], list[tuple[str, str]]]:
    """Resolve group definitions (groups may name groups) into expanded member sets.

    Returns the groups, their compression order (largest first), and a list of
    `(group, problem)` pairs for cycles.
    """
    resolved: dict[str, frozenset[str]] = {}
    problems: list[tuple[str, str]] = []

    def resolve(name: str, stack: tuple[str, ...]) -> frozenset[str]:
        if name in resolved:
            return resolved[name]
        if name in stack:
            problems.append((name, " -> ".join((*stack, name))))
            return frozenset()
        members: set[str] = set()
        for term in raw_groups.get(name, []):
            if term in raw_groups:
                members |= resolve(term, (*stack, name))
            else:
                members.add(term)
        resolved[name] = frozenset(members)
        return resolved[name]

    for name in raw_groups:
        resolve(name, ())
    order = tuple(sorted(resolved, key=lambda n: (-len(resolved[n]), n)))
    return resolved, order, problems
