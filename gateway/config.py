"""The gateway's configuration: one YAML file, validated with located diagnostics.

Rule 1: a mistake in the file is reported as `file:line:col: code: message` plus a
`help:` line, every mistake at once, and the previous configuration keeps serving.
Rule 2: secrets (signing-key passphrase, HMAC keys, admin token) never live in the file;
the file names an environment variable (`*_env`) or a file (`*_file`) holding them.
Rule 3: environment variables `JURISGATE__SECTION__KEY=value` override scalar settings;
a bad value names the variable and the value.

Relative paths in the file are resolved against the file's directory.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import ValidationError

from gateway.config_model import (
    Clients,
    ConfigFile,
    Headers,
    Limits,
    Operator,
    SecretRef,
)
from gateway.errors import Diagnostic, DiagnosticError, Location, describe_value, did_you_mean
from gateway.source import LoadedDocument, format_path, load_yaml, yaml11_help

__all__ = [
    "AdminConfig",
    "AuditConfig",
    "BackendConfig",
    "ClientTimeouts",
    "GrpcListener",
    "ConfigError",
    "GatewayConfig",
    "HeaderNames",
    "LimitsConfig",
    "OperatorConfig",
    "PoolConfig",
    "SinkConfig",
    "WitnessConfigEntry",
    "config_schema",
    "load_config",
    "schema_error_diagnostic",
]


class ConfigError(DiagnosticError):
    """The configuration could not be loaded; `diagnostics()` says where and why."""


def config_schema() -> dict[str, Any]:
    """Return the JSON Schema of the gateway configuration file (derived from the model)."""
    schema = ConfigFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


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
class SinkConfig:
    """One decision event sink (webhook)."""

    id: str
    url: str
    category: str
    is_sale_or_share: bool = False
    tenant_opt_in: bool | None = None
    timeout_s: float = 2.0
    queue_size: int = 1000
    max_attempts: int = 4
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()


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
    sinks: tuple[SinkConfig, ...]
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


ENV_PREFIX = "JURISGATE__"
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
    data = _apply_env_overrides(data, env, diagnostics)
    try:
        model = ConfigFile.model_validate(data)
    except ValidationError as exc:
        diagnostics.extend(_diagnostics_from_validation(exc, document, data))
        raise ConfigError(diagnostics) from None
    if diagnostics:
        raise ConfigError(diagnostics)
    return _build(path, model, document, dict(env), diagnostics)


def _schema_node(schema: Mapping[str, Any], keys: list[str]) -> Mapping[str, Any] | None:
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


def _apply_env_overrides(
    data: dict[str, Any], env: Mapping[str, str], diagnostics: list[Diagnostic]
) -> dict[str, Any]:
    """Overlay `JURISGATE__A__B=value` variables onto the parsed file."""
    schema = config_schema()
    merged: dict[str, Any] = {key: value for key, value in data.items()}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        node_schema = _schema_node(schema, keys) if keys else None
        if not keys or node_schema is None:
            diagnostics.append(
                Diagnostic(
                    code="config_env_error",
                    message=f"environment variable `{name}` names no setting",
                    location=Location(name, 0, 0),
                    help="use JURISGATE__SECTION__KEY, e.g. JURISGATE__LISTEN__PORT",
                )
            )
            continue
        raw = env[name]
        try:
            value = _cast_env(raw, node_schema)
        except ValueError as exc:
            diagnostics.append(
                Diagnostic(
                    code="config_env_error",
                    message=f"environment variable `{name}` has bad value `{raw}`: {exc}",
                    location=Location(name, 0, 0),
                    help=f"expected {node_schema.get('type', 'a value')}",
                )
            )
            continue
        target = merged
        for key in keys[:-1]:
            child = target.get(key)
            child = dict(child) if isinstance(child, dict) else {}
            target[key] = child
            target = child
        target[keys[-1]] = value
    return merged


def _cast_env(raw: str, node_schema: Mapping[str, Any]) -> Any:
    kind = node_schema.get("type")
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("not an integer") from None
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            raise ValueError("not a number") from None
    if kind == "boolean":
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError("not a boolean (use true or false)")
    if kind == "array":
        items = node_schema.get("items", {})
        if "$ref" in items or items.get("type", "string") != "string":
            raise ValueError("a list of sections cannot be set from the environment")
        return [part.strip() for part in raw.split(",") if part.strip()]
    if kind == "object" or "properties" in node_schema:
        raise ValueError("a section cannot be set from the environment; set one of its keys")
    return raw


_TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "int_from_float": "an integer",
    "finite_number": "a finite number",
}

_PATTERN_HINTS = {
    "url": "use an http:// or https:// URL without query or credentials, e.g. "
    "http://127.0.0.1:8501",
    "region": "use an ISO 3166 code such as DE, US-CA or UA-43, or a group such as EU",
    "established_in": "use an ISO 3166 code such as DE or US-CA",
    "storage_region": "use an ISO 3166 code such as DE or IN",
    "id": "use letters, digits, `.`, `_` or `-` (a sink id: at most 64, starting with a letter "
    "or digit)",
    "grpc": "write the backend's gRPC address as host:port, e.g. 127.0.0.1:8500",
    "category": "use a snake_case category such as `analytics`",
}


def _data_path(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    """The part of a validation error's location that names places in the document (union
    branch tags and `[key]` markers are not data)."""
    path: list[int | str] = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        elif index == len(loc) - 1 and isinstance(node, dict) and part != "[key]":
            path.append(part)
    return tuple(path)


def _known_keys(path: tuple[int | str, ...]) -> list[str]:
    """The settings the model allows in the mapping at `path` (a list item's, for a list)."""
    schema = config_schema()
    node = _schema_node(schema, [str(p) for p in path if isinstance(p, str)]) or {}
    items = node.get("items")
    if isinstance(items, Mapping):
        ref = items.get("$ref", "")
        node = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], items)
    return sorted(node.get("properties", {}))


def _diagnostics_from_validation(
    exc: ValidationError, document: LoadedDocument, data: Any
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for error in exc.errors(include_url=False):
        loc = _data_path(tuple(error["loc"]), data)
        ctx = error.get("ctx") or {}
        at = ctx.get("at")
        if isinstance(at, tuple):
            loc = (*loc, *at)
        out.append(_diagnostic(error["type"], error["msg"], error.get("input"), ctx, loc, document))
    return out


def _diagnostic(
    kind: str,
    message: str,
    value: Any,
    ctx: Mapping[str, Any],
    loc: tuple[int | str, ...],
    document: LoadedDocument,
) -> Diagnostic:
    dotted = format_path(loc) or "(top level)"
    last = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = _known_keys(parent)
        key = str(loc[-1])
        return Diagnostic(
            code="config_unknown_key",
            message=f"unknown setting `{key}` in {format_path(parent) or '(top level)'}",
            location=document.key_location(loc),
            path=dotted,
            help=did_you_mean(key, allowed) or f"known keys: {', '.join(allowed)}",
        )
    if kind == "missing":
        parent = loc[:-1]
        return Diagnostic(
            code="config_missing_key",
            message=f"{format_path(parent) or '(top level)'}: `{loc[-1]}` is required",
            location=document.location(parent),
            path=dotted,
            help="add the missing setting; docs/configuration.md lists every key",
        )
    if kind in _TYPE_WORDS:
        expected = _TYPE_WORDS[kind]
        return Diagnostic(
            code="config_type_error",
            message=f"{dotted} must be {expected}, got {describe_value(value)}",
            location=document.location(loc),
            path=dotted,
            help=yaml11_help(document.node(loc), value) or f"write {expected} here",
        )
    if kind == "duplicate_id":
        return Diagnostic(
            code="config_duplicate_id",
            message=message,
            location=document.location(loc),
            path=dotted,
            help=f"give every {ctx.get('what', 'entry')} a unique id",
        )
    if kind == "unknown_backend":
        return Diagnostic(
            code="config_ref_error",
            message=message,
            location=document.location(loc),
            path=dotted,
            help=did_you_mean(ctx.get("id"), ctx.get("choices", [])) or "name a configured backend",
        )
    if kind == "literal_error":
        choices = [
            c.strip(" '") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")
        ]
        choices = [c for c in choices if c]
        return Diagnostic(
            code="config_value_error",
            message=f"{dotted} has bad value `{_short(value)}`",
            location=document.location(loc),
            path=dotted,
            help=did_you_mean(value, choices) or f"one of {ctx.get('expected')}",
        )
    if kind == "string_pattern_mismatch":
        key = "url" if last in ("url", "blocking_entity_uri") else last
        if isinstance(loc[-1], int) and last == "trusted_proxies":
            key = "cidr"
        return Diagnostic(
            code="config_value_error",
            message=f"{dotted} has bad value `{_short(value)}`",
            location=document.location(loc),
            path=dotted,
            help=_PATTERN_HINTS.get(key, f"must match `{ctx.get('pattern')}`"),
        )
    help_text = {
        "url": _PATTERN_HINTS["url"],
        "cidr": "write a network in CIDR form, e.g. 203.0.113.0/24 or 2001:db8::/32",
        "witness_key": "use the witness's verifier key as `jurisgate witness vkey` prints it",
        "secret_ref": "write `{env: NAME}` or `{file: path}`",
        "category": _PATTERN_HINTS["category"],
    }.get(kind, "see docs/configuration.md")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        help_text = message.replace("Input should be", "use a value")
    if kind in ("too_short", "too_long"):
        help_text = message.replace("List should", "the list must")
    text = (
        f"{dotted}: {message}"
        if f"`{value}`" in message
        else f"{dotted} has bad value `{_short(value)}`: {message}"
    )
    return Diagnostic(
        code="config_value_error",
        message=text,
        location=document.location(loc),
        path=dotted,
        help=help_text,
    )


_SCHEMA_PATTERN_HINTS = {
    "url": "use an http:// or https:// URL, e.g. http://127.0.0.1:8501",
    "key": "use the witness's verifier key as `jurisgate witness vkey` prints it",
}


def schema_error_diagnostic(
    error: jsonschema.ValidationError, document: LoadedDocument
) -> Diagnostic:
    """A located, helpful diagnostic for one JSON-schema error in a YAML document (shared
    with the other configuration files, such as a witness's)."""
    return _diagnostic_from_schema_error(error, document)


def _diagnostic_from_schema_error(
    error: jsonschema.ValidationError, document: LoadedDocument
) -> Diagnostic:
    path = tuple(error.absolute_path)
    dotted = format_path(path) or "(top level)"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        allowed = sorted(schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        key = unknown[0] if unknown else "?"
        return Diagnostic(
            code="config_unknown_key",
            message=f"unknown setting `{key}` in {dotted}",
            location=document.key_location((*path, key)),
            path=format_path((*path, key)),
            help=did_you_mean(key, allowed) or f"known keys: {', '.join(allowed)}",
        )
    if error.validator == "required":
        return Diagnostic(
            code="config_missing_key",
            message=f"{dotted}: {error.message}",
            location=document.location(path),
            path=dotted,
            help="add the missing setting; docs/configuration.md lists every key",
        )
    if error.validator == "enum":
        choices = [str(o) for o in error.validator_value]  # type: ignore[union-attr]
        options = ", ".join(f"`{o}`" for o in choices)
        return Diagnostic(
            code="config_value_error",
            message=f"{dotted} has bad value `{_short(error.instance)}`",
            location=document.location(path),
            path=dotted,
            help=did_you_mean(error.instance, choices) or f"one of {options}",
        )
    if error.validator == "type":
        return Diagnostic(
            code="config_type_error",
            message=f"{dotted} must be {error.validator_value}, got "
            f"{describe_value(error.instance)}",
            location=document.location(path),
            path=dotted,
            help=yaml11_help(document.node(path), error.instance)
            or f"write {_article(str(error.validator_value))} here",
        )
    detail = "" if error.validator == "pattern" else f": {error.message}"
    return Diagnostic(
        code="config_value_error",
        message=f"{dotted} has bad value `{_short(error.instance)}`{detail}",
        location=document.location(path),
        path=dotted,
        help=_schema_hint(error),
    )


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _schema_hint(error: jsonschema.ValidationError) -> str:
    if error.validator == "pattern":
        last = error.absolute_path[-1] if error.absolute_path else ""
        return _SCHEMA_PATTERN_HINTS.get(str(last), f"must match `{error.validator_value}`")
    if error.validator in ("minimum", "maximum", "exclusiveMinimum"):
        return f"{error.validator} is {error.validator_value}"
    return "see docs/configuration.md"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
                message=f"environment variable `{WORKER_ENV}` has bad value `{_short(raw)}`: "
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
            SinkConfig(
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
