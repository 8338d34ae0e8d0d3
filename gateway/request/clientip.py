"""Who is calling from where: the client IP behind trusted proxies, its region, and claims.

Rule 1 — the client IP is the TCP peer, unless the peer is a configured trusted proxy; then
the forwarding header (`X-Forwarded-For`, or RFC 7239 `Forwarded` when configured) is walked
from the right, skipping trusted proxies, and the first address that is not a trusted proxy
is the client. Only the right-most part of the chain, the part our own proxies wrote, is
believed.

Rule 2 — everything else a caller says about its location is an untrusted *claim*: region
headers (`X-Geo-Country`) unless the configured trusted region header comes from a trusted
proxy, the entries left of the client in the forwarding header, and all forwarding headers
from an untrusted peer. Claims may tighten a decision (a sanctions red flag), never loosen it
or change routing; they are returned apart from the region.

Rule 3 — hostile headers never raise. An oversized, malformed or obfuscated header yields a
result with an anomaly code recorded in `anomalies`; when the chain through our own proxies
is broken, `established` is False and `region` is None, so the policy sees an unknown region
rather than a guessed one.

Rule 4 — addresses are read strictly (`ipaddress`: no octal, hex or integer forms), ports and
IPv6 brackets are removed, zone ids dropped, and IPv4-mapped IPv6 (`::ffff:192.0.2.1`) is
treated as the IPv4 address, for the peer as much as for header entries.

Addresses are read by `address.parse_address`; regions come from a `geo.RegionLookup`.
Pure: no aiohttp, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from gateway.request.address import HOP_INVALID, parse_node
from gateway.request.cidr import CidrTable, IPAddress, IPNetwork
from gateway.request.geo import RegionLookup, region_code

__all__ = ["ClientIPConfig", "ClientResolution", "resolve_client"]


ForwardingHeader = Literal["x-forwarded-for", "forwarded"]
Source = Literal["peer", "x-forwarded-for", "forwarded"]

# Anomaly codes (stable; recorded, never raised).
PEER_UNPARSEABLE: Final = "peer_unparseable"
HEADER_TOO_LONG: Final = "forwarding_header_too_long"
FORWARDED_MALFORMED: Final = "forwarded_header_malformed"
HOP_MISSING_FOR: Final = "forwarded_element_without_for"
CHAIN_TOO_LONG: Final = "forwarding_chain_too_long"
REGION_CLAIM_INVALID: Final = "region_claim_invalid"
TRUSTED_REGION_INVALID: Final = "trusted_region_header_invalid"


@dataclass(frozen=True)
class ClientIPConfig:
    """How to find the client address: trusted proxies, header names, and hard limits."""

    trusted_proxies: tuple[IPNetwork, ...] = ()
    forwarded_header: ForwardingHeader = "x-forwarded-for"
    claim_headers: tuple[str, ...] = ("X-Geo-Country",)
    #: A region header set by the operator's own edge; believed only from a trusted peer.
    trusted_region_header: str | None = None
    max_header_length: int = 4096
    max_hops: int = 16
    max_claims: int = 8
    _trusted: CidrTable[bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_trusted", CidrTable((n, True) for n in self.trusted_proxies))
        if self.forwarded_header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(
                f"forwarded_header has bad value `{self.forwarded_header}`: "
                "expected `x-forwarded-for` or `forwarded`"
            )
        for name in ("max_header_length", "max_hops", "max_claims"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} has bad value `{getattr(self, name)}`: expected >= 1")

    @classmethod
    def from_settings(
        cls, trusted_proxies: Iterable[str | IPNetwork] = (), **settings: Any
    ) -> ClientIPConfig:
        """Build from configuration values; a bad CIDR raises ValueError naming it."""
        networks: list[IPNetwork] = []
        for index, entry in enumerate(trusted_proxies):
            if isinstance(entry, ipaddress.IPv4Network | ipaddress.IPv6Network):
                networks.append(entry)
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies[{index}] has bad value `{entry}`: expected a CIDR "
                    "such as `203.0.113.0/24` or `2001:db8::/32`"
                ) from None
        return cls(trusted_proxies=tuple(networks), **settings)

    def is_trusted(self, address: IPAddress) -> bool:
        """Whether `address` is one of the operator's own proxies."""
        return address in self._trusted


@dataclass(frozen=True)
class ClientResolution:
    """The outcome of `resolve_client`.

    `ip` is the client address (None when the peer itself is unknown, e.g. a Unix socket);
    `source` says where it came from; `established` is False when a hop between our trusted
    proxies and the client could not be read, in which case `ip` is the last trusted hop and
    `region` is None. `region_claims` lists untrusted region claims in order of appearance:
    header claims first, then the regions of `claimed_addresses`.
    """

    ip: str | None
    peer_ip: str | None
    source: Source
    established: bool
    trusted_peer: bool
    region: str | None
    region_claims: tuple[str, ...] = ()
    #: Addresses from forwarding entries that were not believed (their regions are claims).
    claimed_addresses: tuple[str, ...] = ()
    anomalies: tuple[str, ...] = field(default=())


def _collect(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], names: Iterable[str]
) -> dict[str, list[str]]:
    wanted = {name.lower() for name in names}
    found: dict[str, list[str]] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        key = name.lower()
        if key in wanted:
            found.setdefault(key, []).append(value)
    return found


def _joined(values: Sequence[str] | None) -> str:
    # Repeated header lines form one comma-separated list (RFC 9110 §5.3).
    return ",".join(values) if values else ""


def _xff_nodes(value: str, limit: int, anomalies: list[str]) -> list[str | None]:
    if not value.strip():
        return []
    if len(value) > limit:
        anomalies.append(HEADER_TOO_LONG)
        # Only the right end matters for the walk; drop the entry the cut went through.
        value = value[-limit:]
        comma = value.find(",")
        value = value[comma + 1 :] if comma >= 0 else ""
    return [node for node in value.split(",")]


_FORWARDED_PAIR: Final = re.compile(
    r"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*"
    r"(\"(?:[^\"\\]|\\.){0,256}\"|[^;,\"\s]{0,256})[ \t]*"
)
_QUOTED_PAIR: Final = re.compile(r"\\(.)")


def _forwarded_nodes(value: str, limit: int, anomalies: list[str]) -> list[str | None] | None:
    """The `for=` value of each element (None where an element has none), or None if malformed."""
    if not value.strip():
        return []
    if len(value) > limit:
        # A cut through a quoted string cannot be repaired; distrust the whole header.
        anomalies.append(HEADER_TOO_LONG)
        return None
    nodes: list[str | None] = []
    current: str | None = None
    seen: set[str] = set()
    pos = 0
    while True:
        match = _FORWARDED_PAIR.match(value, pos)
        if match is None:
            anomalies.append(FORWARDED_MALFORMED)
            return None
        name, raw = match.group(1).lower(), match.group(2)
        if name in seen:
            anomalies.append(FORWARDED_MALFORMED)
            return None
        seen.add(name)
        if raw.startswith('"'):
            raw = _QUOTED_PAIR.sub(r"\1", raw[1:-1])
        if name == "for":
            current = raw
        pos = match.end()
        if pos == len(value):
            nodes.append(current)
            return nodes
        separator = value[pos]
        pos += 1
        if separator == ",":
            nodes.append(current)
            current = None
            seen = set()
        elif separator != ";":
            anomalies.append(FORWARDED_MALFORMED)
            return None


def resolve_client(
    peer: str | None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    config: ClientIPConfig | Iterable[IPNetwork],
    regions: RegionLookup | None = None,
    *,
    geo_header: str | None = None,
) -> ClientResolution:
    """Find the client address, its region and the untrusted region claims (never raises).

    `config` may be just the trusted proxy networks; `geo_header` replaces the configured
    claim headers. Without `regions`, `region` is None and only header claims are listed;
    the addresses behind the other claims are in `claimed_addresses` either way.
    """
    if not isinstance(config, ClientIPConfig):
        config = ClientIPConfig(trusted_proxies=tuple(config))
    if geo_header is not None:
        config = replace(config, claim_headers=(geo_header,))
    anomalies: list[str] = []
    peer_address: IPAddress | None = None
    if peer is not None:
        peer_address, problem = parse_node(peer)
        if problem is not None:
            anomalies.append(PEER_UNPARSEABLE)
    trusted_peer = peer_address is not None and config.is_trusted(peer_address)

    names = ["x-forwarded-for", "forwarded", *config.claim_headers]
    if config.trusted_region_header:
        names.append(config.trusted_region_header)
    values = _collect(headers, names)
    limit = config.max_header_length
    xff = _xff_nodes(_joined(values.get("x-forwarded-for")), limit, anomalies)
    forwarded = _forwarded_nodes(_joined(values.get("forwarded")), limit, anomalies)

    walk = (
        _walk_forwarding(xff, forwarded, config, peer_address, anomalies)
        if trusted_peer
        else _Walk(peer_address, "peer", peer_address is not None, [*xff, *(forwarded or [])])
    )
    client = walk.client
    trusted_region_key = (config.trusted_region_header or "").lower()
    region: str | None = None
    if walk.established and client is not None:
        trusted_region = values.get(trusted_region_key) if trusted_peer else None
        region = _client_region(client, trusted_region, regions, anomalies)
    claims = _header_claims(values, config, trusted_peer, trusted_region_key, anomalies)
    # The left-most entries are the ones a client writes itself.
    claimed_addresses = _claimed_addresses(walk.claimed_nodes[: config.max_claims])
    if regions is not None:
        for address in claimed_addresses:
            code = _lookup(regions, address)
            if code is not None and code not in claims:
                claims.append(code)

    return ClientResolution(
        ip=None if client is None else str(client),
        peer_ip=None if peer_address is None else str(peer_address),
        source=walk.source,
        established=walk.established,
        trusted_peer=trusted_peer,
        region=region,
        region_claims=tuple(claims[: config.max_claims]),
        claimed_addresses=tuple(str(address) for address in claimed_addresses),
        anomalies=tuple(dict.fromkeys(anomalies)),
    )


@dataclass(slots=True)
class _Walk:
    """Where the walk of the forwarding chain ended (Rule 1)."""

    client: IPAddress | None
    source: Source
    established: bool
    #: Forwarding entries left of the client, and the other header's entries: claims only.
    claimed_nodes: list[str | None]


def _chains(
    xff: list[str | None], forwarded: list[str | None] | None, header: ForwardingHeader
) -> tuple[ForwardingHeader, list[str | None] | None, list[str | None]]:
    """The configured forwarding header's entries, and the other header's (claims only)."""
    chain: list[str | None] | None
    fallback: list[str | None] | None
    if header == "x-forwarded-for":
        chain, other, fallback = xff, forwarded or [], forwarded
    else:
        chain, other, fallback = forwarded, xff, xff
    if chain == [] and fallback != []:
        # The operator's proxy sent only the other header: it is the same hop list (RFC
        # 7239 section 7.4), so read it the same way rather than take the proxy as client.
        header = "forwarded" if header == "x-forwarded-for" else "x-forwarded-for"
        return header, (xff if header == "x-forwarded-for" else forwarded), []
    return header, chain, other


def _walk_forwarding(
    xff: list[str | None],
    forwarded: list[str | None] | None,
    config: ClientIPConfig,
    peer_address: IPAddress | None,
    anomalies: list[str],
) -> _Walk:
    """Rule 1: from a trusted peer, walk the chain from the right past our own proxies."""
    header, chain, other = _chains(xff, forwarded, config.forwarded_header)
    walk = _Walk(peer_address, "peer", peer_address is not None, [])
    if chain is None:
        walk.established = False
        chain = []
    left_of_client = len(chain)
    hops = 0
    for index in range(len(chain) - 1, -1, -1):
        node = chain[index]
        address, problem = (None, HOP_MISSING_FOR) if node is None else parse_node(node)
        if address is None:
            anomalies.append(problem or HOP_INVALID)
            walk.established = False
            left_of_client = index
            break
        walk.client, walk.source, left_of_client = address, header, index
        if not config.is_trusted(address):
            break
        hops += 1
        if hops >= config.max_hops:
            anomalies.append(CHAIN_TOO_LONG)
            walk.established = False
            break
    walk.claimed_nodes = [*chain[:left_of_client], *other]
    return walk


def _client_region(
    client: IPAddress,
    trusted_region: list[str] | None,
    regions: RegionLookup | None,
    anomalies: list[str],
) -> str | None:
    """The region of an established client: the trusted region header, else the lookup."""
    region: str | None = None
    if trusted_region:
        region = region_code(trusted_region[0])
        if region is None:
            anomalies.append(TRUSTED_REGION_INVALID)
    if region is None and regions is not None:
        region = _lookup(regions, client)
    return region


def _header_claims(
    values: Mapping[str, list[str]],
    config: ClientIPConfig,
    trusted_peer: bool,
    trusted_region_key: str,
    anomalies: list[str],
) -> list[str]:
    """Rule 2: the region codes claimed in the claim headers, first occurrence first."""
    claims: list[str] = []
    for name in config.claim_headers:
        key = name.lower()
        if trusted_peer and key == trusted_region_key:
            continue
        for value in values.get(key, ()):
            for item in value.split(",")[: config.max_claims]:
                if not item.strip():
                    continue
                code = region_code(item)
                if code is None:
                    if REGION_CLAIM_INVALID not in anomalies:
                        anomalies.append(REGION_CLAIM_INVALID)
                elif code not in claims:
                    claims.append(code)
    return claims


def _claimed_addresses(nodes: Iterable[str | None]) -> list[IPAddress]:
    """The distinct readable addresses among forwarding entries that were not believed."""
    addresses: list[IPAddress] = []
    for node in nodes:
        address = None if node is None else parse_node(node)[0]
        if address is not None and address not in addresses:
            addresses.append(address)
    return addresses


def _lookup(regions: RegionLookup, address: IPAddress) -> str | None:
    try:
        return regions.region_of(str(address))
    except (ValueError, TypeError, LookupError):
        return None
