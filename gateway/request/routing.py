"""Backends and the choice of one for a request: pure, no I/O.

`BackendSpec` is a configured backend; `select_backend` picks the one a request goes to and
`is_rerouted` says whether the decision's routing constraint moved it.

Selection, in order (`select_backend`):

1. Keep the backends that serve the model (and are not marked unavailable).
2. When the decision limits backend regions, keep those inside an allowed region under the
   routing convention of `RegionGroups.routes_within` (`US-CA` routes as `US`; `EU`
   admits every member state). Nothing left: None, and the gateway answers 451 with the
   residency basis.
3. The tenant's preferred backend, when it survived 1 and 2.
4. The operator's default for the caller's region (`region_routing_default`), looked up most
   specific first: `US-CA`, then `US`; `DE`, then `EU`, then `EEA`.
5. A backend in the caller's country, then one in the caller's routing group (`EU`).
6. The operator's default for `other` callers.
7. The first remaining backend.

Within steps 5 and 7 a higher `weight` wins; equal weights keep configuration order, so the
choice is deterministic and the audit record can explain it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from gateway.request.regions import RegionGroups, country_of, normalise_region

__all__ = ["BackendSpec", "ROUTING_FALLBACK_KEY", "is_rerouted", "select_backend"]


#: Key of `region_routing_default` used for callers whose region has no entry of its own.
ROUTING_FALLBACK_KEY: Final = "other"


_BACKEND_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
#: A gRPC target the gateway dials: host (name, IPv4 or bracketed IPv6) and port, no scheme.
_GRPC_ADDRESS_RE: Final = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One TF Serving backend: where it is, which region it is in, and what it serves.

    `models` maps a model name to its attributes (kind, output, placed_on_market, licence...),
    the `model` member of the request context. `weight` orders otherwise equal candidates
    (higher first). `grpc` is the backend's gRPC address (`host:port`), None when it is reached
    over REST only. Field values are validated and frozen on construction; a bad value raises
    ValueError naming the backend and the setting.
    """

    id: str
    url: str
    region: str
    models: Mapping[str, Mapping[str, Any]]
    transfer_mechanisms: Sequence[str] = ()
    weight: int = 1
    #: `host:port` of the backend's gRPC port, or None when it serves REST only.
    grpc: str | None = None

    def __post_init__(self) -> None:
        if not _BACKEND_ID_RE.fullmatch(self.id):
            raise ValueError(f"backend id `{self.id}` may only use letters, digits, `.`, `_`, `-`")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"backend `{self.id}`: url `{self.url}` must be http:// or https:// with a host"
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(
                f"backend `{self.id}`: url `{self.url}` must not carry a query, fragment or "
                "credentials"
            )
        try:
            region = normalise_region(self.region)
        except ValueError as exc:
            raise ValueError(f"backend `{self.id}`: {exc}") from None
        if self.grpc is not None and not _GRPC_ADDRESS_RE.fullmatch(self.grpc):
            raise ValueError(f"backend `{self.id}`: grpc address `{self.grpc}` must be host:port")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or self.weight < 0:
            raise ValueError(f"backend `{self.id}`: weight `{self.weight}` must be an integer >= 0")
        frozen_models = MappingProxyType(
            {str(name): MappingProxyType(dict(attrs)) for name, attrs in self.models.items()}
        )
        object.__setattr__(self, "url", self.url.rstrip("/"))
        object.__setattr__(self, "region", region)
        object.__setattr__(self, "models", frozen_models)
        object.__setattr__(self, "transfer_mechanisms", tuple(self.transfer_mechanisms))

    def serves(self, model: str) -> bool:
        """True when this backend serves `model`."""
        return model in self.models

    def context_view(self) -> dict[str, Any]:
        """This backend as the request context lists it under `backends`."""
        return {
            "id": self.id,
            "region": self.region,
            "transfer_mechanisms": list(self.transfer_mechanisms),
        }


def select_backend(
    candidates: Iterable[BackendSpec],
    model: str,
    *,
    allowed_regions: frozenset[str] | None,
    caller_region: str | None,
    preferred: str | None,
    region_routing_default: Mapping[str, str],
    groups: RegionGroups,
    unavailable: Collection[str] = frozenset(),
) -> BackendSpec | None:
    """Choose the backend for a request to `model` (the order is in the module docstring).

    `allowed_regions` is the decision's routing constraint (None: unconstrained; an empty set
    admits nothing). `groups` are the region groups of the policy vocabulary in force.
    `unavailable` holds ids of backends known to be down.
    """
    serving = [b for b in candidates if b.serves(model) and b.id not in unavailable]
    if allowed_regions is not None:
        serving = [
            b
            for b in serving
            if any(groups.routes_within(b.region, area) for area in allowed_regions)
        ]
    if not serving:
        return None
    by_id = {b.id: b for b in serving}
    if preferred is not None and preferred in by_id:
        return by_id[preferred]
    if caller_region:
        for key in groups.routing_keys(caller_region):
            default = region_routing_default.get(key)
            if default is not None and default in by_id:
                return by_id[default]
        country = country_of(caller_region)
        same_country = [b for b in serving if country_of(b.region) == country]
        if same_country:
            return _heaviest(same_country)
        group = groups.routing_region(caller_region)
        same_group = [b for b in serving if groups.routing_region(b.region) == group]
        if same_group:
            return _heaviest(same_group)
    fallback = region_routing_default.get(ROUTING_FALLBACK_KEY)
    if fallback is not None and fallback in by_id:
        return by_id[fallback]
    return _heaviest(serving)


def is_rerouted(
    chosen: BackendSpec | None,
    candidates: Iterable[BackendSpec],
    model: str,
    *,
    caller_region: str | None,
    preferred: str | None,
    region_routing_default: Mapping[str, str],
    groups: RegionGroups,
    unavailable: Collection[str] = frozenset(),
) -> bool:
    """True when `chosen` differs from the backend chosen without routing constraints.

    The gateway labels such a request a transform: the decision moved it.
    """
    unconstrained = select_backend(
        candidates,
        model,
        allowed_regions=None,
        caller_region=caller_region,
        preferred=preferred,
        region_routing_default=region_routing_default,
        groups=groups,
        unavailable=unavailable,
    )
    if chosen is None or unconstrained is None:
        return chosen is not unconstrained
    return chosen.id != unconstrained.id


def _heaviest(backends: Sequence[BackendSpec]) -> BackendSpec:
    # max() keeps the first of equal weights: configuration order breaks ties.
    return max(backends, key=lambda b: b.weight)
