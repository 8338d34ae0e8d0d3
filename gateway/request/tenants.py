"""Tenants: who the caller is, from an API key or the network it calls from.

The tenants file (YAML)::

    tenants:
      - id: acme-eu
        api_key_hashes: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
        established_in: DE
        registered_purposes: [product_catalog_tagging, quality_inspection]
        source_networks: ["192.0.2.0/26"]     # keyless callers from here are acme-eu
        default_backend: be-eu-fra
        mask_pd_in_free_text: true             # any other key is a free-form flag
        flags: {offers_service_to_children: false}   # flags may also be grouped here
        attests: [subject_region]              # declarations this tenant is trusted to make

Rule 1 — the file holds hashes only: `sha256:<hex>` of keys that `jurisgate tenants add`
generates with 256 bits of entropy. A fast hash is enough for keys that cannot be guessed (a
slow password hash would only cost CPU on every request); a plain `api_key` entry is refused.

Rule 2 — a presented key is hashed, looked up, and compared with `hmac.compare_digest`. A
key that matches nothing fails (401); it never falls back to the network or default tenant.

Rule 3 — a caller without a key is the tenant whose `source_networks` hold its address
(longest prefix wins), else the configured default tenant, else an unknown caller
(`Authentication.tenant is None`; the policies decide what an unknown caller may do).

Rule 4 — loading reports every mistake at `file:line:col` and loads nothing on error;
unknown keys close to a known one (`registerd_purposes`) are mistakes, not flags.

Rule 5 — a declared fact the gateway also infers (`subject_region`: the data subjects'
region, against the caller's network region) only adds to the inference, unless the tenant's
entry `attests` it; then the declaration replaces the inference and the decision record says
it was attested.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway.errors import Diagnostic, DiagnosticError, Location
from gateway.request.cidr import CidrTable, IPNetwork
from gateway.request.regions import normalise_region
from gateway.source import DataPath, LoadedDocument, load_yaml

__all__ = [
    "AuthFailure",
    "Authentication",
    "Tenant",
    "TenantRegistry",
    "generate_api_key",
    "hash_api_key",
]


HASH_PREFIX: Final = "sha256:"
#: A stored key hash, `sha256:` and 64 lower-case hex digits.
HASH_FORMAT: Final = re.compile(r"sha256:[0-9a-f]{64}")
#: A tenant id.
TENANT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: A registered purpose.
PURPOSE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Keys longer than this are refused before hashing (header values can be large).
MAX_API_KEY_LENGTH: Final = 512

KNOWN_FIELDS: Final = (
    "id",
    "api_key_hashes",
    "established_in",
    "registered_purposes",
    "source_networks",
    "default_backend",
    "flags",
    "attests",
)
#: Declarations a tenant may be trusted to make in place of what the gateway infers.
ATTESTABLE: Final = ("subject_region",)


def generate_api_key() -> str:
    """A new API key: `jg_` and 256 random bits, URL-safe."""
    return "jg_" + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """The stored form of a key: `sha256:<hex>`."""
    return HASH_PREFIX + hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, eq=False)
class Tenant:
    """One tenant: identity, establishment, purposes, networks, backend and free-form flags."""

    id: str
    established_in: str | None = None
    registered_purposes: tuple[str, ...] = ()
    source_networks: tuple[IPNetwork, ...] = ()
    default_backend: str | None = None
    flags: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    key_hashes: tuple[str, ...] = field(default=(), repr=False)
    attests: tuple[str, ...] = ()

    def context_view(self) -> dict[str, Any]:
        """The tenant as the request context's `caller` fields need it (JSON-compatible)."""
        return {
            "id": self.id,
            "established_in": self.established_in,
            "registered_purposes": list(self.registered_purposes),
            "default_backend": self.default_backend,
            "flags": _thaw(self.flags),
        }

    @property
    def shares_with(self) -> tuple[str, ...]:
        """Event sink ids from the `share_request_events_with` flag."""
        value = self.flags.get("share_request_events_with", ())
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list | tuple):
            return tuple(item for item in value if isinstance(item, str))
        return ()


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


Method = Literal["api_key", "network", "default", "anonymous"]


@dataclass(frozen=True)
class Authentication:
    """A caller that may proceed: `tenant` is None for an unknown keyless caller."""

    tenant: Tenant | None
    method: Method


@dataclass(frozen=True)
class AuthFailure:
    """A presented API key that matches no tenant; the gateway answers 401."""

    code: str
    message: str
    http_status: int = 401


_INVALID_KEY: Final = AuthFailure("invalid_api_key", "the API key is not valid")


class TenantRegistry:
    """The loaded tenants, indexed by key hash and by source network."""

    def __init__(self, tenants: Iterable[Tenant], *, default_tenant: str | None = None) -> None:
        """Index `tenants`; raises ValueError for duplicate ids, hashes or networks, or an
        unknown `default_tenant`."""
        self._by_id: dict[str, Tenant] = {}
        self._by_hash: dict[str, Tenant] = {}
        self._networks: CidrTable[Tenant] = CidrTable()
        for tenant in tenants:
            if tenant.id in self._by_id:
                raise ValueError(f"duplicate tenant id `{tenant.id}`")
            self._by_id[tenant.id] = tenant
            for digest in tenant.key_hashes:
                other = self._by_hash.setdefault(digest, tenant)
                if other is not tenant:
                    raise ValueError(
                        f"tenants `{other.id}` and `{tenant.id}` share an API key hash"
                    )
            for network in tenant.source_networks:
                owner = self._networks.setdefault(network, tenant)
                if owner is not tenant:
                    raise ValueError(
                        f"network `{network}` is bound to `{owner.id}` and `{tenant.id}`"
                    )
        if default_tenant is not None and default_tenant not in self._by_id:
            raise ValueError(f"default tenant `{default_tenant}` is not in the tenants file")
        self.default_tenant = default_tenant

    # -- loading --

    @classmethod
    def empty(cls, *, default_tenant: str | None = None) -> TenantRegistry:
        """No tenants (every caller is unknown); a `default_tenant` is then an error."""
        try:
            return cls((), default_tenant=default_tenant)
        except ValueError as exc:
            raise DiagnosticError(
                [
                    Diagnostic(
                        "tenants_unknown_default",
                        str(exc),
                        path="tenants.default_tenant",
                        help="set tenants.file, or remove tenants.default_tenant",
                    )
                ]
            ) from None

    @classmethod
    def load(cls, path: Path | str, *, default_tenant: str | None = None) -> TenantRegistry:
        """Load a tenants file; raises `DiagnosticError` with every located problem."""
        return cls._from_document(load_yaml(Path(path)), default_tenant)

    @classmethod
    def from_text(
        cls, text: str, filename: str = "<tenants>", *, default_tenant: str | None = None
    ) -> TenantRegistry:
        """Load tenants from YAML text (tests, `tenants add` before it writes)."""
        return cls._from_document(load_yaml(text, filename), default_tenant)

    @classmethod
    def _from_document(cls, document: LoadedDocument, default_tenant: str | None) -> TenantRegistry:
        if not document.ok:
            raise DiagnosticError(document.diagnostics)
        tenants, problems = _read_tenants(document)
        if problems:
            raise DiagnosticError(problems)
        try:
            return cls(tenants, default_tenant=default_tenant)
        except ValueError as exc:
            # Constructor checks span tenants; point at the file.
            raise DiagnosticError(
                [Diagnostic("tenants_conflict", str(exc), Location(document.filename))]
            ) from None

    # -- queries --

    def __iter__(self) -> Iterator[Tenant]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, tenant_id: str) -> Tenant | None:
        """The tenant called `tenant_id`, or None."""
        return self._by_id.get(tenant_id)

    def tenant_for_network(self, client_ip: str | None) -> Tenant | None:
        """The tenant whose `source_networks` hold `client_ip` (longest prefix), or None."""
        if not client_ip or not self._networks:
            return None
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return None
        return self._networks.lookup(address)

    def authenticate(
        self, api_key: str | None, client_ip: str | None
    ) -> Authentication | AuthFailure:
        """Identify the caller (rules 2 and 3 of the module docstring)."""
        key = api_key.strip() if api_key is not None else ""
        if key:
            if len(key) > MAX_API_KEY_LENGTH:
                return _INVALID_KEY
            digest = hash_api_key(key)
            tenant = self._by_hash.get(digest)
            # SECURITY: the dict narrows to one candidate; the final comparison is constant-time.
            if tenant is None or not any(
                hmac.compare_digest(digest, stored) for stored in tenant.key_hashes
            ):
                return _INVALID_KEY
            return Authentication(tenant, "api_key")
        bound = self.tenant_for_network(client_ip)
        if bound is not None:
            return Authentication(bound, "network")
        if self.default_tenant is not None:
            return Authentication(self._by_id[self.default_tenant], "default")
        return Authentication(None, "anonymous")


# ---------------------------------------------------------------------------------------------
# Reading the document


def _read_tenants(document: LoadedDocument) -> tuple[list[Tenant], list[Diagnostic]]:
    problems: list[Diagnostic] = []
    data = document.data
    if document.empty or data is None:
        return [], []
    if not isinstance(data, dict):
        return [], [document.type_error((), "a mapping with a `tenants` list", data, what="file")]
    for key in data:
        if key not in ("tenants", "version"):
            hint = _did_you_mean(key, ("tenants", "version"))
            if key == "default_tenant":
                hint = "set tenants.default_tenant in the gateway configuration instead"
            problems.append(
                document.diagnostic(
                    "tenants_schema_error",
                    f"unknown top-level key `{key}`",
                    (key,),
                    help=hint,
                    at_key=True,
                )
            )
    entries = data.get("tenants", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        problems.append(document.type_error(("tenants",), "a list", entries))
        return [], problems
    tenants: list[Tenant] = []
    seen_ids: dict[str, int] = {}
    for index, entry in enumerate(entries):
        tenant = _read_tenant(document, ("tenants", index), entry, problems)
        if tenant is None:
            continue
        if tenant.id in seen_ids:
            first = document.location(("tenants", seen_ids[tenant.id], "id"))
            problems.append(
                document.diagnostic(
                    "tenants_duplicate_id",
                    f"duplicate tenant id `{tenant.id}`",
                    ("tenants", index, "id"),
                    help=f"`{tenant.id}` is first defined at line {first.line}",
                )
            )
            continue
        seen_ids[tenant.id] = index
        tenants.append(tenant)
    return tenants, problems


def _did_you_mean(word: str, options: Iterable[str], cutoff: float = 0.6) -> str | None:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=cutoff)
    return f"did you mean `{close[0]}`?" if close else None


def _read_tenant(
    document: LoadedDocument, path: DataPath, entry: Any, problems: list[Diagnostic]
) -> Tenant | None:
    if not isinstance(entry, dict):
        problems.append(document.type_error(path, "a mapping", entry, what="tenant"))
        return None
    before = len(problems)
    fields = _Fields(document, path, entry, problems)
    tenant_id = fields.tenant_id()
    hashes = fields.checked_strings("api_key_hashes", _key_hash_problem)
    established_in = fields.established_in()
    purposes = fields.checked_strings("registered_purposes", _purpose_problem)
    networks = fields.networks()
    attests = fields.checked_strings("attests", _attest_problem)
    default_backend = entry.get("default_backend")
    if default_backend is not None and not isinstance(default_backend, str):
        problems.append(
            document.type_error((*path, "default_backend"), "a string", default_backend)
        )
    flags = fields.flags()
    if len(problems) > before or not isinstance(tenant_id, str):
        return None
    return Tenant(
        id=tenant_id,
        established_in=established_in,
        registered_purposes=tuple(purposes),
        source_networks=tuple(networks),
        default_backend=default_backend,
        flags=_freeze(flags),
        key_hashes=tuple(hashes),
        attests=tuple(dict.fromkeys(attests)),
    )


#: What is wrong with one item of a string list: (code, message, help), or None.
_ItemProblem = Callable[[str], tuple[str, str, str | None] | None]


def _key_hash_problem(digest: str) -> tuple[str, str, str | None] | None:
    if HASH_FORMAT.fullmatch(digest):
        return None
    return (
        "tenants_key_hash_error",
        f"api key hash `{digest[:20]}` is not `sha256:` and 64 lower-case hex digits",
        "generate keys with `jurisgate tenants add`",
    )


def _purpose_problem(purpose: str) -> tuple[str, str, str | None] | None:
    if PURPOSE.fullmatch(purpose):
        return None
    message = f"purpose `{purpose[:40]}` may hold only letters, digits and `_.:-`"
    return "tenants_schema_error", message, None


def _attest_problem(fact: str) -> tuple[str, str, str | None] | None:
    if fact in ATTESTABLE:
        return None
    return (
        "tenants_schema_error",
        f"`{fact[:40]}` is not a declaration a tenant can attest",
        "attestable: " + ", ".join(f"`{name}`" for name in ATTESTABLE),
    )


@dataclass(slots=True)
class _Fields:
    """Reads the fields of one tenant entry, adding a located problem for each mistake."""

    document: LoadedDocument
    path: DataPath
    entry: dict[Any, Any]
    problems: list[Diagnostic]

    def error(self, code: str, message: str, key: str, help: str | None = None) -> None:
        self.problems.append(self.document.diagnostic(code, message, (*self.path, key), help=help))

    def tenant_id(self) -> Any:
        tenant_id = self.entry.get("id")
        if "id" not in self.entry:
            self.problems.append(
                self.document.diagnostic("tenants_schema_error", "tenant without `id`", self.path)
            )
        elif not isinstance(tenant_id, str):
            self.problems.append(
                self.document.type_error((*self.path, "id"), "a string", tenant_id)
            )
        elif not TENANT_ID.fullmatch(tenant_id):
            self.error(
                "tenants_schema_error",
                f"tenant id `{tenant_id}` may hold only letters, digits, `.`, `_` and `-`",
                "id",
            )
        return tenant_id

    def checked_strings(self, key: str, problem_of: _ItemProblem) -> list[str]:
        items = _string_list(self.document, self.path, self.entry, key, self.problems)
        for position, item in enumerate(items):
            problem = problem_of(item)
            if problem is not None:
                code, message, help = problem
                self.problems.append(
                    self.document.diagnostic(code, message, (*self.path, key, position), help=help)
                )
        return items

    def established_in(self) -> str | None:
        raw_region = self.entry.get("established_in")
        if raw_region is None:
            return None
        if not isinstance(raw_region, str):
            where = (*self.path, "established_in")
            self.problems.append(self.document.type_error(where, "a string", raw_region))
            return None
        try:
            return normalise_region(raw_region)
        except ValueError:
            self.error(
                "tenants_schema_error",
                f"established_in `{raw_region}` is not an ISO 3166 code",
                "established_in",
                help="write a country (`DE`) or subdivision (`US-CA`) code",
            )
            return None

    def networks(self) -> list[IPNetwork]:
        networks: list[IPNetwork] = []
        cidrs = _string_list(self.document, self.path, self.entry, "source_networks", self.problems)
        for position, cidr in enumerate(cidrs):
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                self.problems.append(
                    self.document.diagnostic(
                        "tenants_schema_error",
                        f"source network `{cidr[:60]}` is not a CIDR network",
                        (*self.path, "source_networks", position),
                        help="write e.g. `192.0.2.0/24` or `2001:db8::/48`",
                    )
                )
        return networks

    def flags(self) -> dict[str, Any]:
        """Unknown fields are flags, as are the entries of `flags`; each must be JSON."""
        explicit = self.entry.get("flags", {})
        if explicit is None:
            explicit = {}
        if not isinstance(explicit, dict):
            self.problems.append(
                self.document.type_error((*self.path, "flags"), "a mapping", explicit)
            )
            explicit = {}
        flags: dict[str, Any] = {}
        for key, value in self.entry.items():
            if key not in KNOWN_FIELDS and self._is_flag(key):
                flags[key] = value
        for key, value in explicit.items():
            if key in flags:
                self.error("tenants_schema_error", f"flag `{key}` is set twice", "flags")
            flags[key] = value
        for key, value in flags.items():
            where: DataPath = (*self.path, key) if key in self.entry else (*self.path, "flags", key)
            _check_json_value(self.document, where, value, self.problems)
        return flags

    def _is_flag(self, key: str) -> bool:
        """Whether an unknown field is a flag: not a plain API key, not a misspelt field."""
        if key == "api_key":
            self.problems.append(
                self.document.diagnostic(
                    "tenants_plain_key",
                    "the tenants file must not hold plain API keys",
                    (*self.path, key),
                    help="replace it with `api_key_hashes: [sha256:...]`; "
                    "`jurisgate tenants add` generates a key and stores its hash",
                    at_key=True,
                )
            )
            return False
        hint = _did_you_mean(key, KNOWN_FIELDS, cutoff=0.8)
        if hint is not None:
            self.problems.append(
                self.document.diagnostic(
                    "tenants_schema_error", f"unknown tenant field `{key}`", (*self.path, key),
                    help=hint, at_key=True,
                )
            )  # fmt: skip
            return False
        return True


def _string_list(
    document: LoadedDocument,
    path: DataPath,
    entry: Mapping[str, Any],
    key: str,
    problems: list[Diagnostic],
) -> list[str]:
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(document.type_error((*path, key), "a list of strings", value))
        return []
    strings: list[str] = []
    for position, item in enumerate(value):
        if isinstance(item, str):
            strings.append(item)
        else:
            problems.append(document.type_error((*path, key, position), "a string", item))
    return strings


def _check_json_value(
    document: LoadedDocument, path: DataPath, value: Any, problems: list[Diagnostic]
) -> None:
    """Flags reach the request context, which is JSON: no dates, no non-finite numbers."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    if isinstance(value, list):
        for position, item in enumerate(value):
            _check_json_value(document, (*path, position), item, problems)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json_value(document, (*path, key), item, problems)
        return
    problems.append(
        document.type_error(
            path, "a string, number, boolean, null, list or mapping", value, what="flag"
        )
    )
