"""The one CIDR table: networks mapped to values, looked up by longest matching prefix.

Used for the region table (`geo.CidrRegionTable`), the trusted proxies
(`clientip.ClientIPConfig`) and the networks tenants are bound to (`tenants.TenantRegistry`).
A lookup costs one dictionary probe per distinct prefix length in the table, longest first,
whatever the number of networks. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["CidrTable", "IPAddress", "IPNetwork"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

V = TypeVar("V")

_BITS = {4: 32, 6: 128}


class CidrTable(Generic[V]):
    """Networks mapped to values; `lookup` answers with the longest prefix holding an address.

    IPv4 and IPv6 are separate: an IPv4 address never matches an IPv6 network (callers that
    want `::ffff:192.0.2.1` read as IPv4 convert it first, as `address.parse_address` does).
    """

    __slots__ = ("_order", "_tables")

    def __init__(self, entries: Iterable[tuple[IPNetwork, V]] = ()) -> None:
        # (version, prefix length) -> {network address as int: value}
        self._tables: dict[tuple[int, int], dict[int, V]] = {}
        # version -> the prefix lengths present, longest first
        self._order: dict[int, list[int]] = {4: [], 6: []}
        for network, value in entries:
            self.setdefault(network, value)

    def setdefault(self, network: IPNetwork, value: V) -> V:
        """Map `network` to `value` unless it is mapped already; the value now mapped.

        A caller detects a network listed twice with different values by comparing the
        answer with `value`.
        """
        key = (network.version, network.prefixlen)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
            lengths = self._order[network.version]
            lengths.append(network.prefixlen)
            lengths.sort(reverse=True)
        return table.setdefault(int(network.network_address), value)

    def lookup(self, address: IPAddress) -> V | None:
        """The value of the longest prefix holding `address`, or None."""
        version = address.version
        bits = _BITS[version]
        value = int(address)
        for length in self._order[version]:
            network = value >> (bits - length) << (bits - length) if length else 0
            found = self._tables[(version, length)].get(network)
            if found is not None:
                return found
        return None

    def __contains__(self, address: object) -> bool:
        """Whether some network in the table holds `address`."""
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return self.lookup(address) is not None

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def __bool__(self) -> bool:
        return bool(self._tables)

    def items(self) -> Iterator[tuple[IPNetwork, V]]:
        """Every `(network, value)` pair, grouped by version and prefix length."""
        for (version, length), table in self._tables.items():
            for network, value in table.items():
                if version == 4:
                    yield ipaddress.IPv4Network((network, length)), value
                else:
                    yield ipaddress.IPv6Network((network, length)), value
