"""The declarative model of the configuration file: the one place every key is defined.

Each field carries its type, default, constraint and meaning. The JSON Schema
(`jurisgate config schema`), the environment overrides, the reference table in
docs/configuration.md and the values `load_config` resolves are all derived from it, so a
value the model accepts is a value every consumer (backends, sinks, listeners) accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway.config.fields import (
    CATEGORY_PATTERN,
    DEFAULT_READ_S,
    GRPC_ADDRESS_PATTERN,
    ID_PATTERN,
    NAME_PATTERN,
    Cidr,
    Header,
    HttpUrl,
    Port,
    Region,
    Seconds,
    Section,
    unique_ids,
    valid_category,
    valid_witness_key,
)

__all__ = ["ConfigFile", "config_json_schema", "schema_node"]


class SecretRef(Section):
    """Where a secret is read from: exactly one of `env` or `file`."""

    env: str | None = Field(default=None, min_length=1, description="environment variable")
    file: str | None = Field(default=None, min_length=1, description="file (mode 0600)")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise PydanticCustomError("secret_ref", "give exactly one of `env` or `file`")
        return self


class Listen(Section):
    host: str = Field("127.0.0.1", description="address of the TF Serving REST surface")
    port: Port = Field(
        8501, description="its port (TF Serving's REST port, so clients need no change)"
    )


class Admin(Section):
    enabled: bool = Field(True, description="serve the admin listener")
    host: str = Field("127.0.0.1", description="admin address (loopback by default)")
    port: Port = Field(8601, description="admin port: `/metrics`, `/admin/v1/*`")
    token: SecretRef | None = Field(
        None,
        description="secret; bearer token for `/admin/v1/*` (no token: the admin API refuses "
        "every call; `/metrics` stays open)",
    )


class ProblemTypes(Section):
    legal: str = Field(
        "https://jurisgate.invalid/problems/legal-restriction",
        description="problem `type` URI of legal denials (451)",
    )
    licence: str = Field(
        "https://jurisgate.invalid/problems/licence-restriction",
        description="problem `type` URI of licence denials (403)",
    )
    gateway: str = Field(
        "https://jurisgate.invalid/problems/gateway-error",
        description="problem `type` URI of gateway-made errors",
    )


class Operator(Section):
    name: str = Field(
        "Jurisgate operator",
        description="the provider named in implicit AIGC labels (`ContentProducer`); 451 bodies "
        "name the deciding regime's party as `demanding_party`, the operator only as `blocked_by`",
    )
    established_in: Region | None = Field(
        None, description="ISO code of the operator's establishment"
    )
    blocking_entity_uri: HttpUrl = Field(
        "https://jurisgate.invalid/legal/blocking-entity",
        description='target of `Link: <...>; rel="blocked-by"` on 451 responses (RFC 7725)',
    )
    problem_types: ProblemTypes = Field(default_factory=ProblemTypes)


class Policies(Section):
    paths: list[str] = Field(
        default_factory=lambda: ["policies"],
        min_length=1,
        description="policy directories or files (vocabulary, packs); compiled once per load",
    )
    watch: bool = Field(
        True,
        description="reload when a policy, tenants, region-table or this file changes "
        "(SIGHUP always reloads)",
    )


class Tenants(Section):
    file: str | None = Field(
        None,
        description="tenants file (`jurisgate tenants add` writes it); API keys are stored as "
        "hashes only; an entry's `attests: [subject_region]` lets that tenant's declared "
        "data-subject region replace the inferred one (otherwise it only adds to it)",
    )
    default_tenant: str | None = Field(
        None,
        description="tenant id that covers keyless callers not bound to a tenant by network "
        "(off unless set)",
    )


class Model(BaseModel):
    """A catalogue entry: `id` plus any attribute the policies test."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    id: str = Field(min_length=1)


class Licence(BaseModel):
    """A licence record: `id`, `model`, `licensee` plus the attributes the licence pack tests."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    id: str = Field(min_length=1)
    model: str
    licensee: str


class Backend(Section):
    id: str = Field(pattern=NAME_PATTERN, description="unique backend id")
    url: HttpUrl = Field(description="REST base URL, no query, fragment or credentials")
    region: Region = Field(description="ISO code of where it runs")
    models: list[str] = Field(min_length=1, description="model names it serves")
    transfer_mechanisms: list[str] = Field(
        default_factory=list, description="transfer mechanisms (e.g. `eu-scc`, `dpf`)"
    )
    weight: int = Field(1, ge=0, description="orders otherwise equal candidates, higher first")
    grpc: str | None = Field(
        None,
        pattern=GRPC_ADDRESS_PATTERN,
        description="`host:port` of its gRPC port; only backends with one serve gRPC calls",
    )


class GrpcTls(Section):
    cert_file: str = Field(description="PEM certificate chain")
    key_file: str = Field(description="PEM private key")


class Grpc(Section):
    enabled: bool = Field(
        True,
        description="serve TF Serving's gRPC API through the gateway (off without a `grpc` "
        "section)",
    )
    host: str = Field("127.0.0.1", description="the gRPC listener's address")
    port: Port = Field(8500, description="the gRPC listener's port (0: any free port)")
    tls: GrpcTls | None = Field(None, description="serve gRPC over TLS")


class Routing(Section):
    default_by_caller_region: dict[str, str] = Field(
        default_factory=dict,
        description="backend id per caller region (`EU`, `US`, `other`, ...), used when the "
        "tenant has no `default_backend`",
    )


class GeoipEntry(Section):
    cidr: Cidr
    region: Region


class Geoip(Section):
    entries: list[GeoipEntry] = Field(
        default_factory=list,
        description="inline CIDR-to-region table: `{cidr, region}`; the longest prefix wins",
    )
    cidr_table: str | None = Field(
        None, description="the same table in a file (YAML list or CSV `cidr,region`)"
    )
    mmdb: str | None = Field(None, description="a MaxMind GeoIP2/GeoLite2 country or city database")


class Network(Section):
    trusted_proxies: list[Cidr] = Field(
        default_factory=list,
        description="CIDRs of the operator's own proxies; only their `X-Forwarded-For` / "
        "`Forwarded` headers are believed",
    )
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = Field(
        "x-forwarded-for",
        description="the forwarding header the trusted proxies set (`Forwarded` is RFC 7239); "
        "the other one is used only when this one is absent",
    )
    trusted_region_header: Header | None = Field(
        None,
        description="a region header set by the operator's own edge, believed only from a "
        "trusted proxy",
    )
    geoip: Geoip = Field(default_factory=Geoip)


class Headers(Section):
    api_key: Header = Field("X-Api-Key", description="tenant API key")
    purpose: Header = Field("X-Purpose", description="declared purpose")
    lawful_basis: Header = Field("X-Lawful-Basis", description="declared lawful basis")
    consents: Header = Field("X-Consent", description="declared consents")
    subject_region: Header = Field("X-Data-Subject-Region", description="data subject's region")
    subject_citizenship: Header = Field(
        "X-Data-Subject-Citizenship", description="data subject's citizenship"
    )
    subject_age: Header = Field("X-Data-Subject-Age", description="data subject's age")
    deployment_context: Header = Field("X-Deployment-Context", description="deployment context")
    exposed_persons_informed: Header = Field(
        "X-Exposed-Persons-Informed", description="exposed persons were informed"
    )
    explicit_label: Header = Field("X-AIGC-Explicit-Label", description="explicit AIGC label")
    end_user: Header = Field("X-End-User-Id", description="end user id")
    human_review: Header = Field(
        "X-Human-Review",
        description="`true`: a person reviews the outcome (GDPR Art. 22, LGPD Art. 20)",
    )
    gpc: Header = Field("Sec-GPC", description="Global Privacy Control")
    geo_claim: Header = Field("X-Geo-Country", description="region claim (always untrusted)")


class Limits(Section):
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="request body limit (413 past it)"
    )
    max_inflated_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="limit after inflating a gzip/deflate body (413 past it; other codings "
        "are 415)",
    )
    max_json_depth: int = Field(64, ge=2, le=254, description="JSON nesting limit (400 past it)")


class Timeouts(Section):
    connect_s: Seconds = Field(
        2.0, description="backend connect timeout, REST and gRPC (503 when the backend is down)"
    )
    read_s: Seconds = Field(
        DEFAULT_READ_S,
        description="backend read timeout and upstream gRPC deadline (504 past it); above TF "
        "Serving's own 30 s so its answer arrives first",
    )


class Pool(Section):
    limit: int = Field(256, ge=1, description="open backend connections at most")
    limit_per_host: int = Field(64, ge=1, description="open connections to one backend at most")
    keepalive_timeout_s: Seconds = Field(15.0, description="idle backend connection lifetime")
    max_response_bytes: int = Field(
        128 * 1024 * 1024, ge=1024, description="backend response size limit (502 past it)"
    )


class Clients(Section):
    header_timeout_s: Seconds = Field(
        10.0, description="time a client has to send a complete request head (408, then close)"
    )
    body_idle_timeout_s: Seconds = Field(
        30.0,
        description="longest pause between two pieces of a request body (408 problem "
        "`body_timeout`)",
    )
    body_timeout_s: Seconds = Field(
        120.0, description="time a client has to send the whole body (the same 408)"
    )
    keepalive_timeout_s: Seconds = Field(
        60.0, description="an idle kept-alive connection is closed after this"
    )


class Privacy(Section):
    scan_headers: list[str] = Field(
        default_factory=list,
        description="request headers scanned for personal data besides the body",
    )
    hmac_key: SecretRef | None = Field(
        None, description="secret; key of the keyed-hash masking method (default: the audit one)"
    )


class Witness(Section):
    url: HttpUrl = Field(description="the witness's submission prefix")
    key: Annotated[str, Field(min_length=1), AfterValidator(valid_witness_key)] = Field(
        description="the witness verifier key from `jurisgate witness vkey`"
    )


class Audit(Section):
    directory: str = Field(
        "var/audit", description="the audit log directory (segments, checkpoints, keyring)"
    )
    signing_key: str | None = Field(
        None,
        description="Ed25519 PKCS#8 PEM (`jurisgate keys generate`), default "
        "`<directory>/key.pem`; keep it outside `directory` (the default is kept for older "
        "setups, but the payload key beside it is then refused)",
    )
    passphrase: SecretRef | None = Field(None, description="secret; passphrase of the signing key")
    hmac_key: SecretRef | None = Field(
        None,
        description="secret (hex or text); key of the payload and IP digests in records "
        "(default: generated into `audit.hmac_key_file`)",
    )
    hmac_key_file: str | None = Field(
        None,
        description="where the generated payload key is kept, default `payload-hmac.key` "
        "beside `audit.signing_key` (0600; encrypted under `audit.passphrase` when set); never "
        "inside `directory` (refused); an older log's `<directory>/payload-hmac.key` is moved "
        "here at start",
    )
    hmac_key_version: str = Field(
        "k1", pattern=r"^[A-Za-z0-9]+$", description="key version written into every digest"
    )
    durability: Literal["strict", "relaxed"] = Field(
        "strict",
        description="`strict`: no response without an fsynced, signed record; `relaxed`: no "
        "fsync (survives a process crash, not a power loss)",
    )
    per_record_signatures: bool = Field(
        False, description="also sign every record (checkpoints already cover every record)"
    )
    retention_default_days: int = Field(
        183, ge=1, description="retention of a record unless a policy raises it"
    )
    storage_region: Region | None = Field(
        None, description="region where this log is stored, recorded on every record"
    )
    group_commit_max_records: int = Field(
        256, ge=1, description="records written and fsynced together at most"
    )
    group_commit_max_delay_ms: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="extra wait for a fuller batch when idle (batches form on their own while "
        "the previous fsync runs)",
    )
    max_unsynced_records: int = Field(
        2048,
        ge=0,
        le=1_000_000,
        description="records whose notes may still await fsync; with "
        "`group_commit_max_records` it is the crash bound: recovery adopts at most that many "
        "records without a durable note and refuses more",
    )
    witnesses: list[Witness] = Field(
        default_factory=list,
        description="C2SP witnesses the checkpoints are submitted to: `{url, key}`",
    )
    witness_interval_s: Seconds = Field(
        2.0,
        description="seconds between submissions of the newest checkpoint (also sent at shutdown)",
    )
    witness_timeout_s: Seconds = Field(
        5.0, description="timeout of one witness request (and of fetching its checkpoint at start)"
    )


class Sink(Section):
    id: str = Field(pattern=ID_PATTERN, description="unique sink id")
    url: HttpUrl = Field(description="webhook URL")
    category: Annotated[str, Field(pattern=CATEGORY_PATTERN), AfterValidator(valid_category)] = (
        Field(description="recipient category (snake_case)")
    )
    is_sale_or_share: bool = Field(False, description="sending to it is a sale or share")
    tenant_opt_in: bool | None = Field(
        None, description="only events of tenants that name this sink (default: `is_sale_or_share`)"
    )
    timeout_s: Seconds = Field(2.0, description="timeout of one delivery")
    queue_size: int = Field(1000, ge=1, description="events queued at most (older are dropped)")
    max_attempts: int = Field(4, ge=1, description="delivery attempts per event")
    backoff_initial_s: Seconds = Field(0.2, description="first retry delay")
    backoff_max_s: Seconds = Field(5.0, description="longest retry delay")
    headers: dict[Header, str] = Field(
        default_factory=dict, description="extra request headers (e.g. an authorization)"
    )


class Logs(Section):
    access: bool = Field(
        False,
        description="log one line per request on `jurisgate.access`: method, path without "
        "query, status, duration, bytes and decision id (no address, header or body data)",
    )


class ConfigFile(Section):
    """The gateway configuration file."""

    model_config = ConfigDict(title="Jurisgate gateway configuration")

    version: Literal[1] = Field(1, description="file format version")
    deployment: str = Field(
        "jurisgate",
        pattern=NAME_PATTERN,
        description="deployment name; the audit signing key's name and the first half of the "
        "audit log origin",
    )
    instance: str = Field(
        "gw-1",
        pattern=NAME_PATTERN,
        description="instance name; the second half of the audit log origin "
        "`<deployment>/<instance>`",
    )
    workers: int = Field(
        0,
        ge=0,
        le=1024,
        description="worker processes serving the REST, gRPC and admin listeners together; "
        "`0`: one per core this process may run on (affinity mask, cgroup CPU quota); `1`: one "
        "process, its audit log directly in `audit.directory`; more: worker `k` logs to "
        "`<audit.directory>/w<k>` with origin `<deployment>/<instance>/w<k>` "
        "(docs/operations.md)",
    )
    listen: Listen = Field(default_factory=Listen)
    admin: Admin = Field(default_factory=Admin)
    operator: Operator = Field(default_factory=Operator)
    policies: Policies = Field(default_factory=Policies)
    tenants: Tenants = Field(default_factory=Tenants)
    models: list[Model] = Field(
        default_factory=list,
        description="model catalogue: `id` plus any attributes the policies test",
    )
    licences: list[Licence] = Field(
        default_factory=list,
        description="licence records: `id`, `model`, `licensee` and the licence pack's attributes",
    )
    backends: list[Backend] = Field(min_length=1, description="TF Serving backends")
    grpc: Grpc | None = Field(None, description="the gRPC front door (off when absent)")
    routing: Routing = Field(default_factory=Routing)
    network: Network = Field(default_factory=Network)
    headers: Headers = Field(default_factory=Headers)
    limits: Limits = Field(default_factory=Limits)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    pool: Pool = Field(default_factory=Pool)
    clients: Clients = Field(default_factory=Clients)
    privacy: Privacy = Field(default_factory=Privacy)
    audit: Audit = Field(default_factory=Audit)
    sinks: list[Sink] = Field(default_factory=list, description="decision event webhooks")
    logs: Logs = Field(default_factory=Logs)

    @field_validator("backends")
    @classmethod
    def _backend_ids(cls, value: list[Backend]) -> list[Backend]:
        unique_ids(value, "backend")
        return value

    @field_validator("sinks")
    @classmethod
    def _sink_ids(cls, value: list[Sink]) -> list[Sink]:
        unique_ids(value, "sink")
        return value

    @model_validator(mode="after")
    def _routes_known(self) -> ConfigFile:
        known = {b.id for b in self.backends}
        for region, backend_id in self.routing.default_by_caller_region.items():
            if backend_id not in known:
                raise PydanticCustomError(
                    "unknown_backend",
                    "routing.default_by_caller_region.{region} names unknown backend `{id}`",
                    {
                        "region": region,
                        "id": backend_id,
                        "at": ("routing", "default_by_caller_region", region),
                        "choices": sorted(known),
                    },
                )
        return self


def config_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the gateway configuration file (derived from the model)."""
    schema = ConfigFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_node(schema: Mapping[str, Any], keys: list[str]) -> Mapping[str, Any] | None:
    """The schema of the setting at `keys`, following `$ref`s and optional (`anyOf`) values."""
    defs = schema.get("$defs", {})

    def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
        while True:
            if "$ref" in node:
                node = defs[node["$ref"].rsplit("/", 1)[-1]]
            elif "anyOf" in node:
                options = [o for o in node["anyOf"] if o.get("type") != "null"]
                node = options[0] if len(options) == 1 else node
                if node.get("anyOf") is not None:
                    return node
            else:
                return node

    node: Mapping[str, Any] | None = resolve(schema)
    for key in keys:
        props = node.get("properties", {}) if node else {}
        child = props.get(key)
        node = resolve(child) if child is not None else None
    return node
