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

Regions come from a `RegionLookup`: a CIDR table (longest prefix wins), a MaxMind database
(country ISO code plus the first subdivision, `US-CA`), or several chained. Pure: no aiohttp,
no network I/O (files are read when a lookup is built).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from gateway.errors import Diagnostic, DiagnosticError, Location
from gateway.lru import LruCache
from gateway.request.regions import normalise_region
from gateway.source import load_yaml

__all__ = [
    "CachedRegionLookup",
    "CidrRegionTable",
    "ClientResolution",
    "ClientIPConfig",
    "IPAddress",
    "IPNetwork",
    "MaxMindRegionLookup",
    "RegionLookup",
    "RegionTable",
    "parse_address",
    "resolve_client",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ForwardingHeader = Literal["x-forwarded-for", "forwarded"]
Source = Literal["peer", "x-forwarded-for", "forwarded"]

# Anomaly codes (stable; recorded, never raised).
PEER_UNPARSEABLE: Final = "peer_unparseable"
HEADER_TOO_LONG: Final = "forwarding_header_too_long"
FORWARDED_MALFORMED: Final = "forwarded_header_malformed"
HOP_INVALID: Final = "forwarding_hop_invalid"
HOP_OBFUSCATED: Final = "forwarding_hop_obfuscated"
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

    def __post_init__(self) -> None:
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
        return any(address in network for network in self.trusted_proxies)


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


class RegionLookup(Protocol):
    """Maps an IP address to a region code (`DE`, `US-CA`) or None when unknown."""

    def region_of(self, address: str) -> str | None:
        """The region of `address`, or None."""


# ---------------------------------------------------------------------------------------------
# Address parsing

_PORT: Final = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]{1,64}")
_MAX_NODE_LENGTH: Final = 100


def parse_address(text: str) -> IPAddress | None:
    """A strict IP address from a peer string or a forwarding-header node, or None.

    Accepts `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]:443`, `"[::1]"`,
    `fe80::1%eth0`; IPv4-mapped IPv6 becomes IPv4.
    """
    return _parse_node(text)[0]


def _parse_node(text: str) -> tuple[IPAddress | None, str | None]:
    """(address, None) or (None, anomaly code)."""
    node = text.strip()
    if len(node) >= 2 and node[0] == '"' and node[-1] == '"':
        node = node[1:-1].strip()
    if not node or len(node) > _MAX_NODE_LENGTH:
        return None, HOP_INVALID
    if node.lower() == "unknown" or node.startswith("_"):
        return None, HOP_OBFUSCATED
    if node.startswith("["):
        close = node.find("]")
        if close < 0:
            return None, HOP_INVALID
        host, rest = node[1:close], node[close + 1 :]
        if rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:])):
            return None, HOP_INVALID
    elif node.count(":") == 1:
        host, port = node.split(":")
        if not _PORT.fullmatch(port):
            return None, HOP_INVALID
    else:
        host = node
    host = host.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None, HOP_INVALID
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped, None
    return address, None


# ---------------------------------------------------------------------------------------------
# Header collection and forwarding-header parsing


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


# ---------------------------------------------------------------------------------------------
# Resolution


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
        peer_address, problem = _parse_node(peer)
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

    client = peer_address
    source: Source = "peer"
    established = peer_address is not None
    claimed_nodes: list[str | None]
    if not trusted_peer:
        claimed_nodes = [*xff, *(forwarded or [])]
    else:
        header: ForwardingHeader = config.forwarded_header
        chain = xff if header == "x-forwarded-for" else forwarded
        other = (forwarded or []) if header == "x-forwarded-for" else xff
        if chain == [] and (xff if header == "forwarded" else forwarded) != []:
            # The operator's proxy sent only the other header: it is the same hop list (RFC
            # 7239 section 7.4), so read it the same way rather than take the proxy as client.
            header = "forwarded" if header == "x-forwarded-for" else "x-forwarded-for"
            chain = xff if header == "x-forwarded-for" else forwarded
            other = []
        if chain is None:
            established = False
            chain = []
        left_of_client = len(chain)
        hops = 0
        for index in range(len(chain) - 1, -1, -1):
            node = chain[index]
            address, problem = (None, HOP_MISSING_FOR) if node is None else _parse_node(node)
            if address is None:
                anomalies.append(problem or HOP_INVALID)
                established = False
                left_of_client = index
                break
            client, source, left_of_client = address, header, index
            if not config.is_trusted(address):
                break
            hops += 1
            if hops >= config.max_hops:
                anomalies.append(CHAIN_TOO_LONG)
                established = False
                break
        claimed_nodes = [*chain[:left_of_client], *other]

    region: str | None = None
    claims: list[str] = []
    trusted_region_key = (config.trusted_region_header or "").lower()
    if established and client is not None:
        trusted_region = values.get(trusted_region_key) if trusted_peer else None
        if trusted_region:
            region = _region_code(trusted_region[0])
            if region is None:
                anomalies.append(TRUSTED_REGION_INVALID)
        if region is None and regions is not None:
            region = _lookup(regions, client)

    for name in config.claim_headers:
        key = name.lower()
        if trusted_peer and key == trusted_region_key:
            continue
        for value in values.get(key, ()):
            for item in value.split(",")[: config.max_claims]:
                if not item.strip():
                    continue
                code = _region_code(item)
                if code is None:
                    if REGION_CLAIM_INVALID not in anomalies:
                        anomalies.append(REGION_CLAIM_INVALID)
                elif code not in claims:
                    claims.append(code)
    # The left-most entries are the ones a client writes itself.
    claimed_addresses: list[IPAddress] = []
    for node in claimed_nodes[: config.max_claims]:
        address = None if node is None else _parse_node(node)[0]
        if address is not None and address not in claimed_addresses:
            claimed_addresses.append(address)
    if regions is not None:
        for address in claimed_addresses:
            code = _lookup(regions, address)
            if code is not None and code not in claims:
                claims.append(code)

    return ClientResolution(
        ip=None if client is None else str(client),
        peer_ip=None if peer_address is None else str(peer_address),
        source=source,
        established=established,
        trusted_peer=trusted_peer,
        region=region,
        region_claims=tuple(claims[: config.max_claims]),
        claimed_addresses=tuple(str(address) for address in claimed_addresses),
        anomalies=tuple(dict.fromkeys(anomalies)),
    )


def _region_code(text: str) -> str | None:
    candidate = text.strip()
    if not candidate or len(candidate) > 16:
        return None
    try:
        return normalise_region(candidate)
    except ValueError:
        return None


def _lookup(regions: RegionLookup, address: IPAddress) -> str | None:
    try:
        return regions.region_of(str(address))
    except (ValueError, TypeError, LookupError):
        return None


# ---------------------------------------------------------------------------------------------
# Region lookups


class CidrRegionTable:
    """A table of `{cidr, region}`; the longest matching prefix wins."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        # (version, prefix length) -> {network address as int: region}
        self._tables: dict[tuple[int, int], dict[int, str]] = {}
        for index, (cidr, region) in enumerate(entries):
            network, code = _table_entry(cidr, region, f"entries[{index}]")
            table = self._tables.setdefault((network.version, network.prefixlen), {})
            key = int(network.network_address)
            if table.get(key, code) != code:
                raise ValueError(
                    f"entries[{index}]: network `{network}` is listed with two regions "
                    f"(`{table[key]}` and `{code}`)"
                )
            table[key] = code
        self._order = {
            version: sorted((length for v, length in self._tables if v == version), reverse=True)
            for version in (4, 6)
        }

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def entries(self) -> list[tuple[str, str]]:
        """The table as `(cidr, region)` pairs."""
        pairs: list[tuple[str, str]] = []
        for (version, length), table in self._tables.items():
            for network, region in table.items():
                address: IPAddress = (
                    ipaddress.IPv4Address(network)
                    if version == 4
                    else ipaddress.IPv6Address(network)
                )
                pairs.append((f"{address}/{length}", region))
        return pairs

    def region_of(self, address: str) -> str | None:
        """The region of the longest prefix containing `address`, or None."""
        parsed = parse_address(address)
        if parsed is None:
            return None
        bits = 32 if parsed.version == 4 else 128
        value = int(parsed)
        for length in self._order[parsed.version]:
            network = value >> (bits - length) << (bits - length) if length else 0
            region = self._tables[(parsed.version, length)].get(network)
            if region is not None:
                return region
        return None

    @classmethod
    def from_file(cls, path: Path | str) -> CidrRegionTable:
        """Load a `.yaml`/`.yml` list of `{cidr, region}` (or a mapping with an `entries`
        or `geoip` list) or a `.csv` with `cidr,region` lines; raises `DiagnosticError`."""
        path = Path(path)
        if path.suffix.lower() == ".csv":
            return cls._from_csv(path)
        return cls._from_yaml(path)

    @classmethod
    def _from_yaml(cls, path: Path) -> CidrRegionTable:
        document = load_yaml(path)
        if not document.ok:
            raise DiagnosticError(document.diagnostics)
        data = document.data
        list_path: tuple[str | int, ...] = ()
        if isinstance(data, dict):
            keys = [key for key in ("entries", "geoip") if key in data]
            if len(keys) == 1:
                list_path = (keys[0],)
                data = data[keys[0]]
        if not isinstance(data, list):
            raise DiagnosticError(
                [
                    document.diagnostic(
                        "geoip_table_error",
                        "expected a list of `{cidr, region}` entries",
                        list_path,
                        help="write `- {cidr: 192.0.2.0/24, region: DE}` lines, or put them "
                        "under `entries:`",
                    )
                ]
            )
        entries: list[tuple[str, str]] = []
        problems: list[Diagnostic] = []
        for index, item in enumerate(data):
            item_path = (*list_path, index)
            if not isinstance(item, dict) or set(item) != {"cidr", "region"}:
                problems.append(
                    document.diagnostic(
                        "geoip_table_error",
                        "each entry needs exactly `cidr` and `region`",
                        item_path,
                    )
                )
                continue
            wrong_types = [
                document.type_error((*item_path, key), "a string", item[key])
                for key in ("cidr", "region")
                if not isinstance(item[key], str)
            ]
            if wrong_types:
                problems.extend(wrong_types)
                continue
            try:
                _table_entry(item["cidr"], item["region"], "")
            except ValueError as exc:
                problems.append(
                    document.diagnostic("geoip_table_error", str(exc).lstrip(": "), item_path)
                )
                continue
            entries.append((item["cidr"], item["region"]))
        return cls._checked(entries, problems, path)

    @classmethod
    def _from_csv(cls, path: Path) -> CidrRegionTable:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DiagnosticError(
                [Diagnostic("io_error", f"cannot read file: {exc}", Location(str(path)))]
            ) from None
        entries: list[tuple[str, str]] = []
        problems: list[Diagnostic] = []
        for line_number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            cells = [cell.strip() for cell in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if line_number == 1 and [c.lower() for c in cells] == ["cidr", "region"]:
                continue
            where = Location(str(path), line_number, 1)
            if len(cells) != 2:
                problems.append(
                    Diagnostic(
                        "geoip_table_error",
                        f"expected 2 columns (cidr,region), got {len(cells)}",
                        where,
                    )
                )
                continue
            try:
                _table_entry(cells[0], cells[1], "")
            except ValueError as exc:
                problems.append(Diagnostic("geoip_table_error", str(exc).lstrip(": "), where))
                continue
            entries.append((cells[0], cells[1]))
        return cls._checked(entries, problems, path)

    @classmethod
    def _checked(
        cls, entries: list[tuple[str, str]], problems: list[Diagnostic], path: Path | str
    ) -> CidrRegionTable:
        """The table of `entries`, or every problem found in the file at `path`."""
        if problems:
            raise DiagnosticError(problems)
        try:
            return cls(entries)
        except ValueError as exc:
            raise DiagnosticError(
                [Diagnostic("geoip_table_error", str(exc), Location(str(path)))]
            ) from None


def _table_entry(cidr: str, region: str, where: str) -> tuple[IPNetwork, str]:
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{where}: `{cidr}` is not a CIDR network") from None
    try:
        code = normalise_region(region)
    except ValueError:
        raise ValueError(f"{where}: `{region}` is not a region code") from None
    return network, code


class MaxMindRegionLookup:
    """Regions from a MaxMind DB (GeoIP2/GeoLite2 Country or City): `DE`, or `US-CA` when the
    record has a subdivision. Raises `DiagnosticError` when the file cannot be opened."""

    def __init__(self, path: Path | str) -> None:
        import maxminddb  # only deployments with a database pay for the import

        try:
            self._reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise DiagnosticError(
                [
                    Diagnostic(
                        "geoip_database_error",
                        f"cannot open MaxMind database: {exc}",
                        Location(str(path)),
                        help="point network.geoip.mmdb at a GeoIP2/GeoLite2 Country or City "
                        "`.mmdb` file",
                    )
                ]
            ) from None

    def region_of(self, address: str) -> str | None:
        """The country ISO code, with the first subdivision when present; None if unknown."""
        try:
            record = self._reader.get(address)
        except ValueError:  # an IPv6 address in an IPv4-only database, or a bad address
            return None
        if not isinstance(record, dict):
            return None
        country = record.get("country")
        code = country.get("iso_code") if isinstance(country, dict) else None
        if not isinstance(code, str):
            return None
        subdivisions = record.get("subdivisions")
        if isinstance(subdivisions, list) and subdivisions and isinstance(subdivisions[0], dict):
            sub = subdivisions[0].get("iso_code")
            if isinstance(sub, str) and sub:
                return _region_code(f"{code}-{sub}") or _region_code(code)
        return _region_code(code)

    def close(self) -> None:
        """Release the database file."""
        self._reader.close()


class RegionTable:
    """The gateway's region lookup: CIDR entries first (inline entries and a table file merged,
    longest prefix wins), then a MaxMind database; the first region found wins."""

    def __init__(self, *lookups: RegionLookup) -> None:
        self._lookups = lookups

    @classmethod
    def from_sources(
        cls,
        entries: Iterable[tuple[str, str]] = (),
        table_file: Path | str | None = None,
        mmdb_file: Path | str | None = None,
    ) -> RegionTable:
        """Build from configuration; raises `DiagnosticError` (file problems) or ValueError."""
        cidr_entries = list(entries)
        if table_file is not None:
            cidr_entries.extend(CidrRegionTable.from_file(table_file).entries())
        lookups: list[RegionLookup] = []
        if cidr_entries:
            lookups.append(CidrRegionTable(cidr_entries))
        if mmdb_file is not None:
            lookups.append(MaxMindRegionLookup(mmdb_file))
        return cls(*lookups)

    def region_of(self, address: str) -> str | None:
        """The first non-None region any lookup returns."""
        for lookup in self._lookups:
            region = lookup.region_of(address)
            if region is not None:
                return region
        return None

    def lookup(self, address: str) -> str | None:
        """Alias of `region_of`."""
        return self.region_of(address)


class CachedRegionLookup:
    """A region lookup that remembers its answers (clients repeat; lookups parse addresses).

    Bounded: at most `size` answers, the least recently used evicted first. One instance
    belongs to one snapshot, so a reloaded region table never serves stale answers.
    """

    def __init__(self, lookup: RegionLookup, size: int = 65536) -> None:
        self._lookup = lookup
        self._cache: LruCache[str, str | None] = LruCache(size)

    def region_of(self, address: str) -> str | None:
        """The region of `address`, from the cache when seen before."""
        return self._cache.get_or_compute(address, self._lookup.region_of)
