"""Region lookups: where an IP address is, from a CIDR table, a MaxMind database, or both.

A `RegionLookup` maps an address to a region code (`DE`, `US-CA`) or None. The CIDR table
(`CidrRegionTable`, longest prefix wins) is read from configuration entries and a `.yaml` or
`.csv` file; the MaxMind reader gives the country ISO code plus the first subdivision. Files
are read when a lookup is built, never per request.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from gateway.errors import Diagnostic, DiagnosticError, Location
from gateway.lru import LruCache
from gateway.request.address import parse_address
from gateway.request.cidr import CidrTable, IPNetwork
from gateway.request.regions import normalise_region
from gateway.source import load_yaml

__all__ = [
    "CachedRegionLookup",
    "CidrRegionTable",
    "MaxMindRegionLookup",
    "RegionLookup",
    "RegionTable",
]


class RegionLookup(Protocol):
    """Maps an IP address to a region code (`DE`, `US-CA`) or None when unknown."""

    def region_of(self, address: str) -> str | None:
        """The region of `address`, or None."""


def region_code(text: str) -> str | None:
    """`text` as a normalised region code, or None when it is not one (never raises)."""
    candidate = text.strip()
    if not candidate or len(candidate) > 16:
        return None
    try:
        return normalise_region(candidate)
    except ValueError:
        return None


class CidrRegionTable:
    """A table of `{cidr, region}`; the longest matching prefix wins."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self._table: CidrTable[str] = CidrTable()
        for index, (cidr, region) in enumerate(entries):
            network, code = _table_entry(cidr, region, f"entries[{index}]")
            listed = self._table.setdefault(network, code)
            if listed != code:
                raise ValueError(
                    f"entries[{index}]: network `{network}` is listed with two regions "
                    f"(`{listed}` and `{code}`)"
                )

    def __len__(self) -> int:
        return len(self._table)

    def entries(self) -> list[tuple[str, str]]:
        """The table as `(cidr, region)` pairs."""
        return [(str(network), region) for network, region in self._table.items()]

    def region_of(self, address: str) -> str | None:
        """The region of the longest prefix containing `address`, or None."""
        parsed = parse_address(address)
        if parsed is None:
            return None
        return self._table.lookup(parsed)

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
                return region_code(f"{code}-{sub}") or region_code(code)
        return region_code(code)

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
