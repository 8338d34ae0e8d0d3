"""Client IP behind trusted proxies, region lookup and untrusted claims (scenarios S19, S21)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DiagnosticError
from gateway.request.address import parse_address
from gateway.request.clientip import ClientIPConfig, ClientResolution, resolve_client
from gateway.request.geo import CidrRegionTable, MaxMindRegionLookup, RegionTable

# fixtures.geoip and fixtures.trusted_proxies of legal-scenarios.yaml
GEOIP = [
    ("192.0.2.0/26", "DE"),
    ("192.0.2.64/26", "FR"),
    ("192.0.2.128/26", "US-CA"),
    ("192.0.2.192/26", "US-NY"),
    ("198.51.100.0/26", "CN"),
    ("198.51.100.64/26", "IN"),
    ("198.51.100.128/26", "BR"),
    ("198.51.100.192/26", "RU"),
    ("203.0.113.0/26", "IR"),
    ("203.0.113.64/26", "UA-43"),
    ("203.0.113.128/26", "NL"),
    ("203.0.113.192/26", "NL"),
]
TABLE = CidrRegionTable(GEOIP + [("2001:db8:cafe::/48", "DE"), ("2001:db8::/32", "FR")])
CONFIG = ClientIPConfig.from_settings(["203.0.113.192/26", "2001:db8:ed9e::/48"])


def resolve(peer: str | None, headers: Any, config: ClientIPConfig = CONFIG) -> ClientResolution:
    return resolve_client(peer, headers, config, TABLE)


# ---------------------------------------------------------------------------------------------
# The scenarios


def test_s19_spoofed_headers_from_an_untrusted_peer_are_claims_only() -> None:
    result = resolve(
        "203.0.113.11",
        {"X-Api-Key": "key", "X-Forwarded-For": "192.0.2.140", "X-Geo-Country": "US"},
    )
    assert (result.ip, result.region, result.source) == ("203.0.113.11", "IR", "peer")
    assert result.established and not result.trusted_peer
    assert result.region_claims == ("US", "US-CA")
    assert result.claimed_addresses == ("192.0.2.140",)
    assert result.anomalies == ()


def test_s21_trusted_edge_forwards_a_california_client() -> None:
    result = resolve("203.0.113.200", {"X-Forwarded-For": "192.0.2.140"})
    assert (result.ip, result.region, result.source) == ("192.0.2.140", "US-CA", "x-forwarded-for")
    assert result.established and result.trusted_peer
    assert result.region_claims == ()
    assert result.peer_ip == "203.0.113.200"


def test_s18_direct_caller_from_crimea() -> None:
    assert resolve("203.0.113.70", {}).region == "UA-43"


# ---------------------------------------------------------------------------------------------
# Walking the chain


@pytest.mark.parametrize(
    ("peer", "xff", "client", "claims"),
    [
        ("203.0.113.200", "192.0.2.10", "192.0.2.10", ()),
        # two trusted hops are skipped
        ("203.0.113.200", "192.0.2.10, 203.0.113.201, 203.0.113.202", "192.0.2.10", ()),
        # what the client wrote itself, left of it, is a claim
        ("203.0.113.200", "203.0.113.5, 192.0.2.10", "192.0.2.10", ("IR",)),
        ("203.0.113.200", "198.51.100.1,192.0.2.140 ,192.0.2.10", "192.0.2.10", ("CN", "US-CA")),
        # only trusted hops: the request came from our own network
        ("203.0.113.200", "203.0.113.201", "203.0.113.201", ()),
        # ports and brackets
        ("203.0.113.200", "192.0.2.10:4711", "192.0.2.10", ()),
        ("203.0.113.200", "[2001:db8:cafe::17]:443", "2001:db8:cafe::17", ()),
        ("203.0.113.200", '"[2001:db8:cafe::17]"', "2001:db8:cafe::17", ()),
        ("203.0.113.200", "2001:db8:cafe::17", "2001:db8:cafe::17", ()),
        ("203.0.113.200", "::ffff:192.0.2.10", "192.0.2.10", ()),
        # an IPv6 peer in a trusted IPv6 range, IPv4-mapped peer, zone ids
        ("2001:db8:ed9e::1", "192.0.2.70", "192.0.2.70", ()),
        ("::ffff:203.0.113.200", "192.0.2.70", "192.0.2.70", ()),
        ("203.0.113.200", "fe80::1%eth0, 192.0.2.70", "192.0.2.70", ()),
    ],
)
def test_x_forwarded_for_walk(peer: str, xff: str, client: str, claims: tuple[str, ...]) -> None:
    result = resolve(peer, {"X-Forwarded-For": xff})
    assert result.ip == client
    assert result.region_claims == claims
    assert result.established
    assert result.anomalies == ()


def test_repeated_header_lines_form_one_list() -> None:
    headers = [
        ("X-Forwarded-For", "198.51.100.1, 192.0.2.10"),
        ("x-forwarded-for", "203.0.113.201"),
    ]
    result = resolve("203.0.113.200", headers)
    assert (result.ip, result.region_claims) == ("192.0.2.10", ("CN",))


def test_untrusted_peer_makes_every_forwarding_header_a_claim() -> None:
    result = resolve(
        "192.0.2.10",
        {"X-Forwarded-For": "203.0.113.5, 198.51.100.70", "Forwarded": "for=198.51.100.130"},
    )
    assert (result.ip, result.region) == ("192.0.2.10", "DE")
    assert result.region_claims == ("IR", "IN", "BR")


def test_no_peer_means_no_client() -> None:
    result = resolve(None, {"X-Forwarded-For": "192.0.2.10"})
    assert (result.ip, result.region, result.established) == (None, None, False)
    assert result.region_claims == ("DE",)


@pytest.mark.parametrize(
    ("xff", "anomaly", "client"),
    [
        ("192.0.2.10, garbage", "forwarding_hop_invalid", "203.0.113.200"),
        ("192.0.2.10, unknown", "forwarding_hop_obfuscated", "203.0.113.200"),
        ("192.0.2.10, _hidden, 203.0.113.201", "forwarding_hop_obfuscated", "203.0.113.201"),
        ("192.0.2.10,", "forwarding_hop_invalid", "203.0.113.200"),
        ("0300.0000.0002.0012", "forwarding_hop_invalid", "203.0.113.200"),  # octal
        ("3221226122", "forwarding_hop_invalid", "203.0.113.200"),  # integer form
        ("0xC0.0.2.10", "forwarding_hop_invalid", "203.0.113.200"),
        ("192.0.2.10:99999999", "forwarding_hop_invalid", "203.0.113.200"),
        ("[2001:db8::1", "forwarding_hop_invalid", "203.0.113.200"),
        ("[2001:db8::1]x", "forwarding_hop_invalid", "203.0.113.200"),
        ("192.0.2.10\x00", "forwarding_hop_invalid", "203.0.113.200"),
        ("１９２.０.２.１０", "forwarding_hop_invalid", "203.0.113.200"),  # full-width digits
    ],
)
def test_broken_chain_is_recorded_and_the_region_is_unknown(
    xff: str, anomaly: str, client: str
) -> None:
    result = resolve("203.0.113.200", {"X-Forwarded-For": xff})
    assert result.ip == client
    assert not result.established
    assert result.region is None
    assert anomaly in result.anomalies


def test_chain_longer_than_the_hop_limit() -> None:
    config = ClientIPConfig.from_settings(["203.0.113.192/26"], max_hops=3)
    xff = "192.0.2.10, " + ", ".join(["203.0.113.201"] * 5)
    result = resolve_client("203.0.113.200", {"X-Forwarded-For": xff}, config, TABLE)
    assert "forwarding_chain_too_long" in result.anomalies
    assert result.region is None


def test_huge_forwarding_header_keeps_the_right_end() -> None:
    xff = ", ".join(["198.51.100.1"] * 5000) + ", 192.0.2.10"
    result = resolve("203.0.113.200", {"X-Forwarded-For": xff})
    assert result.ip == "192.0.2.10"
    assert result.established
    assert "forwarding_header_too_long" in result.anomalies
    assert result.region_claims == ("CN",)
    assert len(result.claimed_addresses) <= CONFIG.max_claims


# ---------------------------------------------------------------------------------------------
# RFC 7239 Forwarded

FORWARDED = ClientIPConfig.from_settings(["203.0.113.192/26"], forwarded_header="forwarded")


@pytest.mark.parametrize(
    ("value", "client", "claims"),
    [
        ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60", ()),
        ('For="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17", ()),
        ("for=198.51.100.1, for=192.0.2.60", "192.0.2.60", ("CN",)),
        ("for=192.0.2.60, for=203.0.113.201;by=_edge", "192.0.2.60", ()),
        ('for="192.0.2.60:8080" ; proto=https', "192.0.2.60", ()),
        ('for="\\[2001:db8:cafe::17\\]"', "2001:db8:cafe::17", ()),
    ],
)
def test_forwarded_walk(value: str, client: str, claims: tuple[str, ...]) -> None:
    result = resolve("203.0.113.200", {"Forwarded": value}, FORWARDED)
    assert (result.ip, result.source, result.region_claims) == (client, "forwarded", claims)
    assert result.established and result.anomalies == ()


@pytest.mark.parametrize(
    ("value", "anomaly"),
    [
        ("for=_hidden", "forwarding_hop_obfuscated"),
        ('for="unknown"', "forwarding_hop_obfuscated"),
        ("proto=https", "forwarded_element_without_for"),
        ("for=192.0.2.60;for=192.0.2.61", "forwarded_header_malformed"),
        ('for="192.0.2.60', "forwarded_header_malformed"),
        ("for 192.0.2.60", "forwarded_header_malformed"),
        ("for=192.0.2.60 x", "forwarded_header_malformed"),
        ("for=" + "1" * 5000, "forwarding_header_too_long"),
    ],
)
def test_forwarded_problems_fall_back_to_the_peer(value: str, anomaly: str) -> None:
    result = resolve("203.0.113.200", {"Forwarded": value}, FORWARDED)
    assert result.ip == "203.0.113.200"
    assert not result.established and result.region is None
    assert anomaly in result.anomalies


def test_the_unconfigured_header_is_only_a_claim() -> None:
    result = resolve(
        "203.0.113.200",
        {"Forwarded": "for=192.0.2.60", "X-Forwarded-For": "198.51.100.1"},
        FORWARDED,
    )
    assert (result.ip, result.region_claims) == ("192.0.2.60", ("CN",))


@pytest.mark.parametrize(
    ("forwarded", "xff"),
    [
        ("for=192.0.2.60", "192.0.2.60"),
        ("for=198.51.100.1, for=192.0.2.60", "198.51.100.1, 192.0.2.60"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ("for=192.0.2.60, for=203.0.113.201;by=_edge", "192.0.2.60, 203.0.113.201"),
    ],
)
@pytest.mark.parametrize("config", [CONFIG, FORWARDED], ids=["prefers-xff", "prefers-forwarded"])
def test_forwarded_and_x_forwarded_for_resolve_the_same_client(
    forwarded: str, xff: str, config: ClientIPConfig
) -> None:
    by_forwarded = resolve("203.0.113.200", {"Forwarded": forwarded}, config)
    by_xff = resolve("203.0.113.200", {"X-Forwarded-For": xff}, config)
    assert by_forwarded.ip == by_xff.ip != "203.0.113.200"
    assert by_forwarded.established and by_xff.established
    assert (by_forwarded.region, by_forwarded.region_claims) == (
        by_xff.region,
        by_xff.region_claims,
    )
    assert {by_forwarded.source, by_xff.source} == {"forwarded", "x-forwarded-for"}


def test_a_malformed_fallback_header_is_not_believed() -> None:
    result = resolve("203.0.113.200", {"Forwarded": 'for="192.0.2.60'}, CONFIG)
    assert result.ip == "203.0.113.200" and not result.established


# ---------------------------------------------------------------------------------------------
# Region headers


@pytest.mark.parametrize(
    ("value", "claims", "anomalies"),
    [
        ("us", ("US",), ()),
        (" US-CA ", ("US-CA",), ()),
        ("US, CU", ("US", "CU"), ()),
        ("EU", ("EU",), ()),
        ("", (), ()),
        ("🇺🇸", (), ("region_claim_invalid",)),
        ("USA-CALIFORNIA", (), ("region_claim_invalid",)),
        ("' OR 1=1 --", (), ("region_claim_invalid",)),
        ("X" * 10_000, (), ("region_claim_invalid",)),
    ],
)
def test_region_claim_header(
    value: str, claims: tuple[str, ...], anomalies: tuple[str, ...]
) -> None:
    result = resolve("192.0.2.10", {"X-Geo-Country": value})
    assert result.region == "DE"
    assert result.region_claims == claims
    assert result.anomalies == anomalies


def test_claims_are_capped() -> None:
    result = resolve("192.0.2.10", {"X-Geo-Country": ",".join(["DE", "FR", "US"] * 1000)})
    assert result.region_claims == ("DE", "FR", "US")
    many = ",".join(f"A{chr(65 + i % 26)}" for i in range(100))
    assert len(resolve("192.0.2.10", {"X-Geo-Country": many}).region_claims) == CONFIG.max_claims


def test_trusted_region_header_only_from_trusted_proxies() -> None:
    config = ClientIPConfig.from_settings(
        ["203.0.113.192/26"], trusted_region_header="X-Edge-Country"
    )
    trusted = resolve_client(
        "203.0.113.200",
        {"X-Forwarded-For": "192.0.2.10", "X-Edge-Country": "CH"},
        config,
        TABLE,
    )
    assert (trusted.region, trusted.region_claims) == ("CH", ())
    untrusted = resolve_client("192.0.2.10", {"X-Edge-Country": "CH"}, config, TABLE)
    assert untrusted.region == "DE"
    assert untrusted.region_claims == ()  # not a configured claim header
    claimed = resolve_client(
        "192.0.2.10",
        {"X-Edge-Country": "CH"},
        ClientIPConfig.from_settings(
            ["203.0.113.192/26"],
            trusted_region_header="X-Edge-Country",
            claim_headers=("X-Edge-Country",),
        ),
        TABLE,
    )
    assert (claimed.region, claimed.region_claims) == ("DE", ("CH",))
    bad = resolve_client(
        "203.0.113.200", {"X-Forwarded-For": "192.0.2.10", "X-Edge-Country": "??"}, config, TABLE
    )
    assert bad.region == "DE"
    assert "trusted_region_header_invalid" in bad.anomalies


def test_geo_header_argument_and_plain_network_list() -> None:
    networks = [ipaddress.ip_network("203.0.113.192/26")]
    result = resolve_client(
        "203.0.113.11", {"X-Country": "US", "X-Forwarded-For": "192.0.2.140"}, networks,
        geo_header="X-Country",
    )  # fmt: skip
    assert (result.ip, result.region, result.region_claims) == ("203.0.113.11", None, ("US",))
    assert result.claimed_addresses == ("192.0.2.140",)


# ---------------------------------------------------------------------------------------------
# Hostile input never raises

header_values = st.text(max_size=300) | st.text(
    alphabet="0123456789abcdef.:[]%, \"';=_-", max_size=300
)


@given(
    st.one_of(st.none(), st.text(max_size=60), st.ip_addresses().map(str)),
    st.lists(
        st.tuples(
            st.sampled_from(["X-Forwarded-For", "Forwarded", "X-Geo-Country", "x-forwarded-for"]),
            header_values,
        ),
        max_size=4,
    ),
    st.sampled_from([CONFIG, FORWARDED]),
)
@settings(max_examples=300, deadline=None)
def test_arbitrary_headers_never_raise(
    peer: str | None, headers: list[tuple[str, str]], config: ClientIPConfig
) -> None:
    result = resolve(peer, headers, config)
    if result.ip is not None:
        assert parse_address(result.ip) is not None
    if not result.trusted_peer:
        assert result.ip == result.peer_ip
    assert len(result.region_claims) <= config.max_claims
    for code in result.region_claims:
        assert code == code.upper()


# ---------------------------------------------------------------------------------------------
# Address parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1:80 ", "192.0.2.1"),
        ("[::1]:8080", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::ffff:c000:0201", "192.0.2.1"),
        ("fe80::1%25eth0", "fe80::1"),
        ("192.0.2.1:_abc", "192.0.2.1"),
        ("192.0.2", None),
        ("", None),
        ("a" * 200, None),
        ("1.2.3.4.5", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed is not None else None) == expected


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(ValueError, match=r"trusted_proxies\[1\] has bad value `nope`"):
        ClientIPConfig.from_settings(["10.0.0.0/8", "nope"])
    with pytest.raises(ValueError, match="forwarded_header"):
        ClientIPConfig(forwarded_header="x-real-ip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_hops"):
        ClientIPConfig(max_hops=0)


# ---------------------------------------------------------------------------------------------
# CIDR tables


def test_longest_prefix_wins() -> None:
    table = CidrRegionTable(
        [("0.0.0.0/0", "ZZ"), ("10.0.0.0/8", "DE"), ("10.1.0.0/16", "FR"), ("10.1.2.3/32", "US")]
    )
    assert table.region_of("10.1.2.3") == "US"
    assert table.region_of("10.1.2.4") == "FR"
    assert table.region_of("10.2.0.1") == "DE"
    assert table.region_of("192.0.2.1") == "ZZ"
    assert table.region_of("2001:db8::1") is None
    assert table.region_of("not an ip") is None
    assert TABLE.region_of("2001:db8:cafe::1") == "DE"
    assert TABLE.region_of("2001:db8:1::1") == "FR"
    assert TABLE.region_of("::ffff:192.0.2.140") == "US-CA"
    assert len(table) == 4


def test_table_conflicts_and_bad_entries() -> None:
    with pytest.raises(ValueError, match="two regions"):
        CidrRegionTable([("10.0.0.0/8", "DE"), ("10.0.0.0/8", "FR")])
    with pytest.raises(ValueError, match="not a CIDR"):
        CidrRegionTable([("10.0.0.0/33", "DE")])
    with pytest.raises(ValueError, match="not a region code"):
        CidrRegionTable([("10.0.0.0/8", "Germany!")])
    assert CidrRegionTable([("10.0.0.1/8", "de")]).region_of("10.9.9.9") == "DE"


def test_table_files(tmp_path: Path) -> None:
    listed = tmp_path / "geoip.yaml"
    listed.write_text(
        "- {cidr: 192.0.2.0/26, region: DE}\n- {cidr: 192.0.2.128/26, region: US-CA}\n"
    )
    assert CidrRegionTable.from_file(listed).region_of("192.0.2.140") == "US-CA"
    nested = tmp_path / "fixtures.yaml"
    nested.write_text("geoip:\n  - {cidr: 198.51.100.0/26, region: CN}\n")
    assert CidrRegionTable.from_file(nested).region_of("198.51.100.1") == "CN"
    csv_file = tmp_path / "geoip.csv"
    csv_file.write_text("cidr,region\n# comment\n192.0.2.0/26,DE\n\n2001:db8::/32, FR\n")
    table = CidrRegionTable.from_file(csv_file)
    assert (table.region_of("192.0.2.1"), table.region_of("2001:db8::5")) == ("DE", "FR")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "bad.yaml",
            "- {cidr: 192.0.2.0/26, region: DE}\n- {cidr: 192.0.2.300/26, region: DE}\n",
            "bad.yaml:2:3: geoip_table_error: `192.0.2.300/26` is not a CIDR network",
        ),
        (
            "keys.yaml",
            "entries:\n  - {cidr: 192.0.2.0/26, country: DE}\n",
            "keys.yaml:2:5: geoip_table_error: each entry needs exactly `cidr` and `region`",
        ),
        (
            "norway.yaml",
            "- {cidr: 192.0.2.0/26, region: NO}\n",
            "norway.yaml:1:32: type_error: region must be a string, got boolean `false`\n"
            '  help: YAML 1.1 reads NO as false; quote it: "NO"',
        ),
        (
            "shape.yaml",
            "cidr: 192.0.2.0/26\n",
            "shape.yaml:1:1: geoip_table_error: expected a list of `{cidr, region}` entries\n"
            "  help: write `- {cidr: 192.0.2.0/24, region: DE}` lines, or put them under "
            "`entries:`",
        ),
        (
            "bad.csv",
            "cidr,region\n192.0.2.0/26,DE\n192.0.2.64/26\n192.0.2.128/26,Calif.\n",
            "bad.csv:3:1: geoip_table_error: expected 2 columns (cidr,region), got 1",
        ),
    ],
)
def test_table_file_errors_are_located(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DiagnosticError) as caught:
        CidrRegionTable.from_file(path)
    rendered = caught.value.diagnostics()[0].text()
    assert rendered == expected.replace(name, str(path), 1)


def test_csv_errors_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("192.0.2.64/26\n192.0.2.128/26,Calif.\n")
    with pytest.raises(DiagnosticError) as caught:
        CidrRegionTable.from_file(path)
    assert [d.location.line for d in caught.value.diagnostics() if d.location] == [1, 2]


# ---------------------------------------------------------------------------------------------
# MaxMind databases (written here in the MaxMind DB format, as GeoLite2 files are)


def _control(kind: int, size: int) -> bytes:
    if size < 29:
        first, extra = size, b""
    elif size < 285:
        first, extra = 29, bytes([size - 29])
    elif size < 65_821:
        first, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        first, extra = 31, (size - 65_821).to_bytes(3, "big")
    if kind <= 7:
        return bytes([(kind << 5) | first]) + extra
    return bytes([first, kind - 7]) + extra


class _U32(int):
    """An integer the format requires as uint32 (libmaxminddb checks metadata types)."""


class _U64(int):
    """An integer stored as uint64."""


def _encode(value: Any) -> bytes:
    if isinstance(value, bool):
        return _control(14, int(value))
    if isinstance(value, str):
        raw = value.encode()
        return _control(2, len(raw)) + raw
    if isinstance(value, int):
        kind = 9 if isinstance(value, _U64) else 6 if isinstance(value, _U32) else 5
        width = (value.bit_length() + 7) // 8
        return _control(kind, width) + value.to_bytes(width, "big")
    if isinstance(value, dict):
        return _control(7, len(value)) + b"".join(_encode(k) + _encode(v) for k, v in value.items())
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(_encode(item) for item in value)
    raise TypeError(value)


def write_mmdb(path: Path, networks: list[tuple[str, dict[str, Any]]]) -> None:
    """A minimal IPv6 MaxMind DB (24-bit records); IPv4 networks live under ::/96."""
    data = b""
    offsets: list[int] = []
    for _, record in networks:
        offsets.append(len(data))
        data += _encode(record)
    nodes: list[list[Any]] = [[None, None]]
    entries = []
    for (cidr, _), offset in zip(networks, offsets, strict=True):
        network = ipaddress.ip_network(cidr)
        bits, length = int(network.network_address), network.prefixlen
        if network.version == 4:
            length += 96
        entries.append((length, bits, offset))
    for length, bits, offset in sorted(entries):
        node = 0
        for depth in range(length):
            bit = (bits >> (127 - depth)) & 1
            if depth == length - 1:
                nodes[node][bit] = ("data", offset)
                break
            record = nodes[node][bit]
            if isinstance(record, int):
                node = record
                continue
            nodes.append([record, record])
            nodes[node][bit] = len(nodes) - 1
            node = len(nodes) - 1
    count = len(nodes)

    def value(record: Any) -> int:
        if record is None:
            return count
        if isinstance(record, int):
            return record
        return count + 16 + record[1]

    tree = b"".join(value(left).to_bytes(3, "big") + value(right).to_bytes(3, "big")
                    for left, right in nodes)  # fmt: skip
    metadata = {
        "node_count": _U32(count),
        "record_size": 24,
        "ip_version": 6,
        "database_type": "Test-Country",
        "languages": ["en"],
        "binary_format_major_version": 2,
        "binary_format_minor_version": 0,
        "build_epoch": _U64(1_700_000_000),
        "description": {"en": "test"},
    }
    path.write_bytes(tree + b"\0" * 16 + data + b"\xab\xcd\xefMaxMind.com" + _encode(metadata))


def test_maxmind_country_and_subdivision(tmp_path: Path) -> None:
    path = tmp_path / "test.mmdb"
    write_mmdb(
        path,
        [
            ("192.0.2.0/24", {"country": {"iso_code": "US"}, "subdivisions": [{"iso_code": "CA"}]}),
            ("198.51.100.0/24", {"country": {"iso_code": "DE", "names": {"en": "Germany"}}}),
            ("203.0.113.0/24", {"continent": {"code": "AS"}}),
            ("2001:db8::/32", {"country": {"iso_code": "FR"}}),
        ],
    )
    lookup = MaxMindRegionLookup(path)
    try:
        assert lookup.region_of("192.0.2.140") == "US-CA"
        assert lookup.region_of("198.51.100.7") == "DE"
        assert lookup.region_of("203.0.113.1") is None
        assert lookup.region_of("2001:db8::1") == "FR"
        assert lookup.region_of("10.0.0.1") is None
        assert lookup.region_of("garbage") is None
    finally:
        lookup.close()
    table = RegionTable.from_sources(entries=[("192.0.2.128/26", "US-NY")], mmdb_file=path)
    assert table.lookup("192.0.2.140") == "US-NY"  # the CIDR entry overrides the database
    assert table.lookup("198.51.100.7") == "DE"
    result = resolve_client("203.0.113.200", {"X-Forwarded-For": "192.0.2.1"}, CONFIG, table)
    assert result.region == "US-CA"


def test_maxmind_errors_are_diagnostics(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"not a database")
    for path in (corrupt, tmp_path / "missing.mmdb"):
        with pytest.raises(DiagnosticError) as caught:
            MaxMindRegionLookup(path)
        assert caught.value.diagnostics()[0].code == "geoip_database_error"


def test_region_table_from_sources_merges_cidr_entries(tmp_path: Path) -> None:
    table_file = tmp_path / "t.csv"
    table_file.write_text("10.0.0.0/8,DE\n")
    table = RegionTable.from_sources(entries=[("10.1.0.0/16", "FR")], table_file=table_file)
    assert (table.lookup("10.1.0.1"), table.lookup("10.2.0.1")) == ("FR", "DE")
    assert RegionTable.from_sources().lookup("10.1.0.1") is None
    with pytest.raises(ValueError, match="two regions"):
        RegionTable.from_sources(entries=[("10.0.0.0/8", "FR")], table_file=table_file)


def test_one_cidr_table_matches_the_longest_prefix_per_address_family() -> None:
    import ipaddress

    from gateway.request.cidr import CidrTable

    table: CidrTable[str] = CidrTable(
        [
            (ipaddress.ip_network("10.0.0.0/8"), "wide"),
            (ipaddress.ip_network("10.1.0.0/16"), "narrow"),
            (ipaddress.ip_network("::/0"), "any-v6"),
        ]
    )
    assert table.lookup(ipaddress.ip_address("10.1.2.3")) == "narrow"
    assert table.lookup(ipaddress.ip_address("10.2.0.1")) == "wide"
    assert table.lookup(ipaddress.ip_address("2001:db8::1")) == "any-v6"
    assert ipaddress.ip_address("192.0.2.1") not in table
    assert table.setdefault(ipaddress.ip_network("10.0.0.0/8"), "other") == "wide"
    assert sorted(str(n) for n, _ in table.items()) == ["10.0.0.0/8", "10.1.0.0/16", "::/0"]
