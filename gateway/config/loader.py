"""The gateway's configuration: one YAML file, validated with located diagnostics.

Rule 1: a mistake in the file is reported as `file:line:col: code: message` plus a
`help:` line, every mistake at once, and the previous configuration keeps serving
(`diagnostics`).
Rule 2: secrets (signing-key passphrase, HMAC keys, admin token) never live in the file;
the file names an environment variable (`*_env`) or a file (`*_file`) holding them.
Rule 3: environment variables `JURISGATE__SECTION__KEY=value` override scalar settings;
a bad value names the variable and the value (`environment`).

Relative paths in the file are resolved against the file's directory.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.diagnostics import diagnostics_from_validation, shorten
from gateway.config.environment import apply_env_overrides
from gateway.config.model import Clients, ConfigFile, Headers, Limits, Operator, SecretRef
from gateway.config.webhooks import WebhookTarget
from gateway.errors import Diagnostic, DiagnosticError, Location
from gateway.source import LoadedDocument, load_yaml

__all__ = [
    "AdminConfig",
    "AuditConfig",
    "BackendConfig",
    "ClientTimeouts",
    "ConfigError",
    "GatewayConfig",
    "GrpcListener",
    "HeaderNames",
    "LimitsConfig",
    "OperatorConfig",
    "PoolConfig",
    "WORKER_ENV",
    "WitnessConfigEntry",
    "load_config",
]


class ConfigError(DiagnosticError):
    """The configuration could not be loaded; `diagnostics()` says where and why."""


#: Names of the request headers the declared context is read from.
HeaderNames = Headers
#: Request size and shape limits.
LimitsConfig = Limits
#: How long a client may take: its request head, each pause in its body, the whole body, and
#: an idle kept-alive connection (seconds).
ClientTimeouts = Clients
_OPERATOR = Operator()


@dataclass(frozen=True)
class OperatorConfig:
    """Who runs the gateway: used in 451 bodies (RFC 7725 blocked-by) and problem types."""

    name: str = _OPERATOR.name
    established_in: str | None = None
    blocking_entity_uri: str = _OPERATOR.blocking_entity_uri
    problem_types: Mapping[str, str] = field(
        default_factory=lambda: _OPERATOR.problem_types.model_dump()
    )


@dataclass(frozen=True)
class AdminConfig:
    """The admin listener: loopback by default, a bearer token required."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8601
    token: str | None = None


@dataclass(frozen=True)
class GrpcListener:
    """The gateway's gRPC front door (TF Serving's PredictionService and ModelService)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8500
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Join the other workers on the same port (`grpc.so_reuseport`); only worker processes.
    reuse_port: bool = False


@dataclass(frozen=True)
class BackendConfig:
    """One TF Serving backend as configured."""

    id: str
    url: str
    region: str
    models: tuple[str, ...]
    transfer_mechanisms: tuple[str, ...] = ()
    weight: int = 1
    #: The backend's gRPC address (`host:port`); gRPC requests go there, REST to `url`.
    grpc: str | None = None


@dataclass(frozen=True)
class PoolConfig:
    """The backend connection pool's limits."""

    limit: int = 256
    limit_per_host: int = 64
    keepalive_timeout_s: float = 15.0
    max_response_bytes: int = 128 * 1024 * 1024


@dataclass(frozen=True)
class WitnessConfigEntry:
    """One witness the gateway submits its checkpoints to."""

    url: str
    #: The witness's verifier key `name+keyid+base64(0x04 || key)`.
    key: str


@dataclass(frozen=True)
class AuditConfig:
    """Where and how the signed audit log is written."""

    directory: Path
    signing_key: Path
    passphrase: str | None = None
    hmac_key: bytes | None = None
    hmac_key_version: str = "k1"
    durability: str = "strict"
    per_record_signatures: bool = False
    retention_default_days: int = 183
    storage_region: str | None = None
    group_commit_max_records: int = 256
    group_commit_max_delay_ms: float = 0.0
    #: The payload HMAC key file; None: `payload-hmac.key` beside the signing key.
    hmac_key_file: Path | None = None
    max_unsynced_records: int = 2048
    witnesses: tuple[WitnessConfigEntry, ...] = ()
    witness_interval_s: float = 2.0
    witness_timeout_s: float = 5.0


@dataclass(frozen=True)
class GatewayConfig:
    """The whole, validated gateway configuration."""

    source: Path
    deployment: str
    instance: str
    listen_host: str
    listen_port: int
    admin: AdminConfig
    operator: OperatorConfig
    policy_paths: tuple[Path, ...]
    watch_policies: bool
    tenants_file: Path | None
    default_tenant: str | None
    models: Mapping[str, Mapping[str, Any]]
    licences: tuple[Mapping[str, Any], ...]
    backends: tuple[BackendConfig, ...]
    routing_default: Mapping[str, str]
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    geoip_entries: tuple[tuple[str, str], ...]
    geoip_table: Path | None
    geoip_mmdb: Path | None
    headers: HeaderNames
    limits: LimitsConfig
    connect_timeout_s: float
    read_timeout_s: float
    scan_headers: tuple[str, ...]
    privacy_hmac_key: bytes | None
    audit: AuditConfig
    sinks: tuple[WebhookTarget, ...]
    #: The environment the file was loaded with (overrides, secrets); reloads reuse it.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    client_timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)
    grpc: GrpcListener = field(default_factory=GrpcListener)
    pool: PoolConfig = field(default_factory=PoolConfig)
    #: Which forwarding header trusted proxies set: `x-forwarded-for` or `forwarded`.
    forwarded_header: str = "x-forwarded-for"
    trusted_region_header: str | None = None
    #: Log one line per request on `jurisgate.access` (no personal data).
    access_log: bool = False
    #: Worker processes as configured (`workers`; 0: one per available core).
    workers: int = 1
    #: This process's worker number when it is one of several workers (`WORKER_ENV`).
    worker: int | None = None

    @property
    def origin(self) -> str:
        """The audit log origin: `<deployment>/<instance>`, plus `/w<k>` in worker `k`."""
        base = f"{self.deployment}/{self.instance}"
        return base if self.worker is None else f"{base}/w{self.worker}"


#: Set by `jurisgate serve` in the environment of each worker process it starts: the worker's
#: number. The environment is kept for reloads, so a reloaded worker stays the same worker.
WORKER_ENV = "JURISGATE_WORKER"


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load, validate and resolve the configuration file at `path`.

    Raises `ConfigError` with every diagnostic found; nothing is partially applied.
    """
    env = os.environ if environ is None else environ
    document = load_yaml(path)
    diagnostics: list[Diagnostic] = list(document.diagnostics)
    if not document.ok:
        raise ConfigError(diagnostics)
    data = document.data if document.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                Diagnostic(
                    code="config_type_error",
                    message="the configuration must be a mapping of settings",
                    location=document.location(()),
                    path=None,
                    help="start the file with keys such as `backends:` and `listen:`",
                )
            ]
        )
    data = apply_env_overrides(data, env, diagnostics)
    try:
        model = ConfigFile.model_validate(data)
    except ValidationError as exc:
        diagnostics.extend(diagnostics_from_validation(exc, document, data))
        raise ConfigError(diagnostics) from None
    if diagnostics:
        raise ConfigError(diagnostics)
    return _build(path, model, document, dict(env), diagnostics)


def _resolve_path(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


def _secret(
    ref: SecretRef | None,
    setting: str,
    base: Path,
    env: Mapping[str, str],
    location: Location,
    diagnostics: list[Diagnostic],
) -> str | None:
    if ref is None:
        return None
    if ref.env is not None:
        value = env.get(ref.env)
        if value is None or value == "":
            diagnostics.append(
                Diagnostic(
                    code="config_secret_missing",
                    message=f"{setting}: environment variable `{ref.env}` is not set",
                    location=location,
                    path=setting,
                    help=f"export {ref.env}=... before starting, or use `file:`",
                )
            )
            return None
        return value
    secret_path = _resolve_path(base, ref.file or "")
    try:
        return secret_path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        diagnostics.append(
            Diagnostic(
                code="config_secret_missing",
                message=f"{setting}: cannot read `{secret_path}`: {reason}",
                location=location,
                path=setting,
                help="create the file (mode 0600) or point `file:` at it",
            )
        )
        return None


def _worker_number(env: Mapping[str, str], diagnostics: list[Diagnostic]) -> int | None:
    raw = env.get(WORKER_ENV)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > 1023:
        diagnostics.append(
            Diagnostic(
                code="config_env_error",
                message=f"environment variable `{WORKER_ENV}` has bad value `{shorten(raw)}`: "
                "not a worker number",
                location=Location(WORKER_ENV, 0, 0),
                help=f"`jurisgate serve` sets {WORKER_ENV} for its workers; unset it",
            )
        )
        return None
    return int(raw)


def _build(
    path: Path,
    m: ConfigFile,
    document: LoadedDocument,
    env: Mapping[str, str],
    diagnostics: list[Diagnostic],
) -> GatewayConfig:
    """Resolve the validated model: paths against the file's directory, secrets, catalogue."""
    base = path.resolve().parent
    models: dict[str, Mapping[str, Any]] = {x.id: x.model_dump() for x in m.models}
    for backend in m.backends:
        for name in backend.models:
            models.setdefault(name, {"id": name})

    def secret(section: str, key: str, ref: SecretRef | None) -> str | None:
        location = document.location((section, key))
        return _secret(ref, f"{section}.{key}", base, env, location, diagnostics)

    admin_token = secret("admin", "token", m.admin.token)
    passphrase = secret("audit", "passphrase", m.audit.passphrase)
    audit_hmac = secret("audit", "hmac_key", m.audit.hmac_key)
    privacy_hmac = secret("privacy", "hmac_key", m.privacy.hmac_key)
    if diagnostics:
        raise ConfigError(diagnostics)

    worker = _worker_number(env, diagnostics)
    if diagnostics:
        raise ConfigError(diagnostics)
    audit = m.audit
    audit_dir = _resolve_path(base, audit.directory)
    # A worker writes its own log beside its siblings'; the keys stay where they are shared.
    log_dir = audit_dir if worker is None else audit_dir / f"w{worker}"
    grpc = m.grpc
    return GatewayConfig(
        source=path,
        deployment=m.deployment,
        instance=m.instance,
        listen_host=m.listen.host,
        listen_port=m.listen.port,
        admin=AdminConfig(
            enabled=m.admin.enabled, host=m.admin.host, port=m.admin.port, token=admin_token
        ),
        operator=OperatorConfig(
            name=m.operator.name,
            established_in=m.operator.established_in,
            blocking_entity_uri=m.operator.blocking_entity_uri,
            problem_types=m.operator.problem_types.model_dump(),
        ),
        policy_paths=tuple(_resolve_path(base, p) for p in m.policies.paths),
        watch_policies=m.policies.watch,
        tenants_file=_resolve_path(base, m.tenants.file) if m.tenants.file else None,
        default_tenant=m.tenants.default_tenant,
        models=models,
        licences=tuple(x.model_dump() for x in m.licences),
        backends=tuple(
            BackendConfig(
                id=b.id,
                url=b.url,
                region=b.region,
                models=tuple(b.models),
                transfer_mechanisms=tuple(b.transfer_mechanisms),
                weight=b.weight,
                grpc=b.grpc,
            )
            for b in m.backends
        ),
        routing_default=dict(m.routing.default_by_caller_region),
        trusted_proxies=tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in m.network.trusted_proxies
        ),
        forwarded_header=m.network.forwarded_header,
        access_log=m.logs.access,
        trusted_region_header=m.network.trusted_region_header,
        geoip_entries=tuple((e.cidr, e.region) for e in m.network.geoip.entries),
        geoip_table=(
            _resolve_path(base, m.network.geoip.cidr_table) if m.network.geoip.cidr_table else None
        ),
        geoip_mmdb=_resolve_path(base, m.network.geoip.mmdb) if m.network.geoip.mmdb else None,
        headers=m.headers,
        limits=m.limits,
        client_timeouts=m.clients,
        grpc=GrpcListener(
            enabled=grpc is not None and grpc.enabled,
            host=grpc.host if grpc else GrpcListener.host,
            port=grpc.port if grpc else GrpcListener.port,
            tls_cert_file=_resolve_path(base, grpc.tls.cert_file) if grpc and grpc.tls else None,
            tls_key_file=_resolve_path(base, grpc.tls.key_file) if grpc and grpc.tls else None,
            reuse_port=worker is not None,
        ),
        pool=PoolConfig(
            limit=m.pool.limit,
            limit_per_host=m.pool.limit_per_host,
            keepalive_timeout_s=m.pool.keepalive_timeout_s,
            max_response_bytes=m.pool.max_response_bytes,
        ),
        connect_timeout_s=m.timeouts.connect_s,
        read_timeout_s=m.timeouts.read_s,
        scan_headers=tuple(m.privacy.scan_headers),
        privacy_hmac_key=(privacy_hmac or audit_hmac or "").encode() or None,
        workers=m.workers,
        worker=worker,
        audit=AuditConfig(
            directory=log_dir,
            signing_key=_resolve_path(base, audit.signing_key or str(audit_dir / "key.pem")),
            passphrase=passphrase,
            hmac_key=audit_hmac.encode() if audit_hmac else None,
            hmac_key_version=audit.hmac_key_version,
            durability=audit.durability,
            per_record_signatures=audit.per_record_signatures,
            retention_default_days=audit.retention_default_days,
            storage_region=audit.storage_region,
            group_commit_max_records=audit.group_commit_max_records,
            group_commit_max_delay_ms=audit.group_commit_max_delay_ms,
            hmac_key_file=(
                _resolve_path(base, audit.hmac_key_file) if audit.hmac_key_file else None
            ),
            max_unsynced_records=audit.max_unsynced_records,
            witnesses=tuple(WitnessConfigEntry(url=w.url, key=w.key) for w in audit.witnesses),
            witness_interval_s=audit.witness_interval_s,
            witness_timeout_s=audit.witness_timeout_s,
        ),
        environ=env,
        sinks=tuple(
            WebhookTarget(
                id=x.id,
                url=x.url,
                category=x.category,
                is_sale_or_share=x.is_sale_or_share,
                tenant_opt_in=x.tenant_opt_in,
                timeout_s=x.timeout_s,
                queue_size=x.queue_size,
                max_attempts=x.max_attempts,
                backoff_initial_s=x.backoff_initial_s,
                backoff_max_s=x.backoff_max_s,
                headers=tuple(x.headers.items()),
            )
            for x in m.sinks
        ),
    )
