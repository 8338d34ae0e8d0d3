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

from gateway.audit.errors import KeyLoadError
from gateway.audit.witness import CosignerKey
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
    "SinkConfig",
    "WitnessConfigEntry",
    "config_schema",
    "load_config",
    "schema_error_diagnostic",
]


class ConfigError(DiagnosticError):
    """The configuration could not be loaded; `diagnostics()` says where and why."""


_REGION = {"type": "string", "pattern": "^[A-Z]{2}(-[A-Z0-9]{1,3})?$|^[A-Z]{2,6}$"}
_SECRET_REF = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"env": {"type": "string", "minLength": 1}, "file": {"type": "string"}},
    "minProperties": 1,
    "maxProperties": 1,
}
_PORT = {"type": "integer", "minimum": 0, "maximum": 65535}


def config_schema() -> dict[str, Any]:
    """Return the JSON Schema of the gateway configuration file."""
    obj = "object"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Jurisgate gateway configuration",
        "type": obj,
        "additionalProperties": False,
        "required": ["backends"],
        "properties": {
            "version": {"const": 1},
            "deployment": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
            "instance": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
            "listen": {
                "type": obj,
                "additionalProperties": False,
                "properties": {"host": {"type": "string"}, "port": _PORT},
            },
            "admin": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "enabled": {"type": "boolean"},
                    "host": {"type": "string"},
                    "port": _PORT,
                    "token": _SECRET_REF,
                },
            },
            "operator": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "established_in": _REGION,
                    "blocking_entity_uri": {"type": "string", "format": "uri"},
                    "problem_types": {
                        "type": obj,
                        "additionalProperties": False,
                        "properties": {
                            "legal": {"type": "string"},
                            "licence": {"type": "string"},
                            "gateway": {"type": "string"},
                        },
                    },
                },
            },
            "policies": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "paths": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "watch": {"type": "boolean"},
                },
            },
            "tenants": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "file": {"type": "string"},
                    "default_tenant": {"type": ["string", "null"]},
                },
            },
            "models": {
                "type": "array",
                "items": {
                    "type": obj,
                    "required": ["id"],
                    "properties": {"id": {"type": "string", "minLength": 1}},
                },
            },
            "licences": {
                "type": "array",
                "items": {
                    "type": obj,
                    "required": ["id", "model", "licensee"],
                    "properties": {
                        "id": {"type": "string", "minLength": 1},
                        "model": {"type": "string"},
                        "licensee": {"type": "string"},
                    },
                },
            },
            "backends": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": obj,
                    "additionalProperties": False,
                    "required": ["id", "url", "region", "models"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
                        "url": {"type": "string", "pattern": "^https?://"},
                        "region": _REGION,
                        "models": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        "transfer_mechanisms": {"type": "array", "items": {"type": "string"}},
                        "grpc": {"type": "string", "pattern": "^[^\\s/]+:[0-9]{1,5}$"},
                    },
                },
            },
            "grpc": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "enabled": {"type": "boolean"},
                    "host": {"type": "string"},
                    "port": _PORT,
                    "tls": {
                        "type": obj,
                        "additionalProperties": False,
                        "required": ["cert_file", "key_file"],
                        "properties": {
                            "cert_file": {"type": "string"},
                            "key_file": {"type": "string"},
                        },
                    },
                },
            },
            "routing": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "default_by_caller_region": {
                        "type": obj,
                        "additionalProperties": {"type": "string"},
                    }
                },
            },
            "network": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "trusted_proxies": {"type": "array", "items": {"type": "string"}},
                    "geoip": {
                        "type": obj,
                        "additionalProperties": False,
                        "properties": {
                            "cidr_table": {"type": "string"},
                            "mmdb": {"type": "string"},
                            "entries": {
                                "type": "array",
                                "items": {
                                    "type": obj,
                                    "additionalProperties": False,
                                    "required": ["cidr", "region"],
                                    "properties": {
                                        "cidr": {"type": "string"},
                                        "region": _REGION,
                                    },
                                },
                            },
                        },
                    },
                },
            },
            "headers": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    name: {"type": "string", "pattern": "^[A-Za-z0-9-]+$"}
                    for name in HeaderNames.__dataclass_fields__
                },
            },
            "limits": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "max_body_bytes": {"type": "integer", "minimum": 1024},
                    "max_inflated_bytes": {"type": "integer", "minimum": 1024},
                    "max_json_depth": {"type": "integer", "minimum": 2, "maximum": 254},
                },
            },
            "timeouts": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "connect_s": {"type": "number", "exclusiveMinimum": 0},
                    "read_s": {"type": "number", "exclusiveMinimum": 0},
                },
            },
            "clients": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "header_timeout_s": {"type": "number", "exclusiveMinimum": 0},
                    "body_idle_timeout_s": {"type": "number", "exclusiveMinimum": 0},
                    "body_timeout_s": {"type": "number", "exclusiveMinimum": 0},
                    "keepalive_timeout_s": {"type": "number", "exclusiveMinimum": 0},
                },
            },
            "privacy": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "scan_headers": {"type": "array", "items": {"type": "string"}},
                    "hmac_key": _SECRET_REF,
                },
            },
            "audit": {
                "type": obj,
                "additionalProperties": False,
                "properties": {
                    "directory": {"type": "string"},
                    "signing_key": {"type": "string"},
                    "passphrase": _SECRET_REF,
                    "hmac_key": _SECRET_REF,
                    "hmac_key_version": {"type": "string", "pattern": "^[A-Za-z0-9]+$"},
                    "durability": {"enum": ["strict", "relaxed"]},
                    "per_record_signatures": {"type": "boolean"},
                    "retention_default_days": {"type": "integer", "minimum": 1},
                    "storage_region": _REGION,
                    "group_commit_max_records": {"type": "integer", "minimum": 1},
                    "group_commit_max_delay_ms": {"type": "number", "minimum": 0},
                    "hmac_key_file": {"type": "string"},
                    "witnesses": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["url", "key"],
                            "properties": {
                                "url": {"type": "string", "pattern": "^https?://"},
                                "key": {"type": "string", "minLength": 1},
                            },
                        },
                    },
                    "witness_interval_s": {"type": "number", "exclusiveMinimum": 0},
                    "witness_timeout_s": {"type": "number", "exclusiveMinimum": 0},
                    "max_unsynced_records": {"type": "integer", "minimum": 0, "maximum": 1000000},
                },
            },
            "sinks": {
                "type": "array",
                "items": {
                    "type": obj,
                    "additionalProperties": False,
                    "required": ["id", "url", "category"],
                    "properties": {
                        "id": {"type": "string"},
                        "url": {"type": "string", "pattern": "^https?://"},
                        "category": {"type": "string"},
                        "is_sale_or_share": {"type": "boolean"},
                        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
                    },
                },
            },
        },
    }


@dataclass(frozen=True)
class HeaderNames:
    """Names of the request headers the gateway reads the declared context from."""

    api_key: str = "X-Api-Key"
    purpose: str = "X-Purpose"
    lawful_basis: str = "X-Lawful-Basis"
    consents: str = "X-Consent"
    subject_region: str = "X-Data-Subject-Region"
    subject_citizenship: str = "X-Data-Subject-Citizenship"
    subject_age: str = "X-Data-Subject-Age"
    deployment_context: str = "X-Deployment-Context"
    exposed_persons_informed: str = "X-Exposed-Persons-Informed"
    explicit_label: str = "X-AIGC-Explicit-Label"
    end_user: str = "X-End-User-Id"
    human_review: str = "X-Human-Review"
    gpc: str = "Sec-GPC"
    geo_claim: str = "X-Geo-Country"


@dataclass(frozen=True)
class OperatorConfig:
    """Who runs the gateway: used in 451 bodies (RFC 7725 blocked-by) and problem types."""

    name: str = "Jurisgate operator"
    established_in: str | None = None
    blocking_entity_uri: str = "https://jurisgate.invalid/legal/blocking-entity"
    problem_types: Mapping[str, str] = field(
        default_factory=lambda: {
            "legal": "https://jurisgate.invalid/problems/legal-restriction",
            "licence": "https://jurisgate.invalid/problems/licence-restriction",
            "gateway": "https://jurisgate.invalid/problems/gateway-error",
        }
    )


@dataclass(frozen=True)
class AdminConfig:
    """The admin listener: loopback by default, a bearer token required."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8601
    token: str | None = None


@dataclass(frozen=True)
class LimitsConfig:
    """Request size and shape limits."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_inflated_bytes: int = 64 * 1024 * 1024
    max_json_depth: int = 64


@dataclass(frozen=True)
class ClientTimeouts:
    """How long a client may take: its request head, each pause in its body, the whole body,
    and an idle kept-alive connection (seconds)."""

    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    body_timeout_s: float = 120.0
    keepalive_timeout_s: float = 60.0


@dataclass(frozen=True)
class GrpcListener:
    """The gateway's gRPC front door (TF Serving's PredictionService and ModelService)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8500
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


@dataclass(frozen=True)
class BackendConfig:
    """One TF Serving backend as configured."""

    id: str
    url: str
    region: str
    models: tuple[str, ...]
    transfer_mechanisms: tuple[str, ...] = ()
    #: The backend's gRPC address (`host:port`); gRPC requests go there, REST to `url`.
    grpc: str | None = None


@dataclass(frozen=True)
class SinkConfig:
    """One decision event sink (webhook)."""

    id: str
    url: str
    category: str
    is_sale_or_share: bool = False
    timeout_s: float = 2.0


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

    @property
    def origin(self) -> str:
        """The audit log origin: `<deployment>/<instance>`."""
        return f"{self.deployment}/{self.instance}"


def _grpc_listener(section: Mapping[str, Any], base: Path) -> GrpcListener:
    tls = section.get("tls") or {}
    cert, key = tls.get("cert_file"), tls.get("key_file")
    return GrpcListener(
        enabled=bool(section.get("enabled", bool(section))),
        host=str(section.get("host", "127.0.0.1")),
        port=int(section.get("port", 8500)),
        tls_cert_file=_resolve_path(base, cert) if cert else None,
        tls_key_file=_resolve_path(base, key) if key else None,
    )


ENV_PREFIX = "JURISGATE__"


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
    schema = config_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        diagnostics.append(_diagnostic_from_schema_error(error, document))
    if diagnostics:
        raise ConfigError(diagnostics)
    return _build(path, data, document, dict(env), diagnostics)


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
        node_schema: Mapping[str, Any] | None = schema
        for key in keys:
            props = node_schema.get("properties", {}) if node_schema else {}
            node_schema = props.get(key)
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
        return [part.strip() for part in raw.split(",") if part.strip()]
    if kind == "object":
        raise ValueError("a section cannot be set from the environment; set one of its keys")
    return raw


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


_PATTERN_HINTS = {
    "url": "use an http:// or https:// URL, e.g. http://127.0.0.1:8501",
    "region": "use an ISO 3166 code such as DE, US-CA or UA-43, or a group such as EU",
    "established_in": "use an ISO 3166 code such as DE or US-CA",
    "storage_region": "use an ISO 3166 code such as DE or IN",
    "id": "use letters, digits, `.`, `_` or `-`",
}


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _schema_hint(error: jsonschema.ValidationError) -> str:
    if error.validator == "pattern":
        last = error.absolute_path[-1] if error.absolute_path else ""
        return _PATTERN_HINTS.get(str(last), f"must match `{error.validator_value}`")
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
    ref: Mapping[str, str] | None,
    setting: str,
    base: Path,
    env: Mapping[str, str],
    location: Location,
    diagnostics: list[Diagnostic],
) -> str | None:
    if not ref:
        return None
    if "env" in ref:
        value = env.get(ref["env"])
        if value is None or value == "":
            diagnostics.append(
                Diagnostic(
                    code="config_secret_missing",
                    message=f"{setting}: environment variable `{ref['env']}` is not set",
                    location=location,
                    path=setting,
                    help=f"export {ref['env']}=... before starting, or use `file:`",
                )
            )
            return None
        return value
    secret_path = _resolve_path(base, ref["file"])
    try:
        return secret_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        diagnostics.append(
            Diagnostic(
                code="config_secret_missing",
                message=f"{setting}: cannot read `{secret_path}`: {exc.strerror}",
                location=location,
                path=setting,
                help="create the file (mode 0600) or point `file:` at it",
            )
        )
        return None


def _build(
    path: Path,
    data: Mapping[str, Any],
    document: LoadedDocument,
    env: Mapping[str, str],
    diagnostics: list[Diagnostic],
) -> GatewayConfig:
    base = path.resolve().parent
    listen = data.get("listen", {})
    admin = data.get("admin", {})
    operator = data.get("operator", {})
    policies = data.get("policies", {})
    tenants = data.get("tenants", {})
    network = data.get("network", {})
    geoip = network.get("geoip", {})
    limits = data.get("limits", {})
    timeouts = data.get("timeouts", {})
    privacy = data.get("privacy", {})
    audit = data.get("audit", {})

    proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for index, cidr in enumerate(network.get("trusted_proxies", [])):
        try:
            proxies.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            diagnostics.append(
                Diagnostic(
                    code="config_value_error",
                    message=f"network.trusted_proxies[{index}] has bad value `{cidr}`",
                    location=document.location(("network", "trusted_proxies", index)),
                    path=f"network.trusted_proxies[{index}]",
                    help="write a network in CIDR form, e.g. 203.0.113.0/24 or 2001:db8::/32",
                )
            )
    entries: list[tuple[str, str]] = []
    for index, entry in enumerate(geoip.get("entries", [])):
        try:
            ipaddress.ip_network(entry["cidr"], strict=False)
        except ValueError:
            diagnostics.append(
                Diagnostic(
                    code="config_value_error",
                    message=f"network.geoip.entries[{index}].cidr has bad value `{entry['cidr']}`",
                    location=document.location(("network", "geoip", "entries", index, "cidr")),
                    path=f"network.geoip.entries[{index}].cidr",
                    help="write a network in CIDR form, e.g. 192.0.2.0/26",
                )
            )
            continue
        entries.append((entry["cidr"], entry["region"]))

    backends = tuple(
        BackendConfig(
            id=item["id"],
            url=item["url"].rstrip("/"),
            region=item["region"],
            models=tuple(item["models"]),
            transfer_mechanisms=tuple(item.get("transfer_mechanisms", ())),
            grpc=item.get("grpc"),
        )
        for item in data["backends"]
    )
    seen: set[str] = set()
    for index, backend in enumerate(backends):
        if backend.id in seen:
            diagnostics.append(
                Diagnostic(
                    code="config_duplicate_id",
                    message=f"backend id `{backend.id}` is used twice",
                    location=document.location(("backends", index, "id")),
                    path=f"backends[{index}].id",
                    help="give every backend a unique id",
                )
            )
        seen.add(backend.id)
    routing = data.get("routing", {}).get("default_by_caller_region", {})
    for region, backend_id in routing.items():
        if backend_id not in seen:
            diagnostics.append(
                Diagnostic(
                    code="config_ref_error",
                    message=f"routing.default_by_caller_region.{region} names unknown backend "
                    f"`{backend_id}`",
                    location=document.location(("routing", "default_by_caller_region", region)),
                    path=f"routing.default_by_caller_region.{region}",
                    help=did_you_mean(backend_id, sorted(seen)) or "name a configured backend",
                )
            )

    models: dict[str, Mapping[str, Any]] = {m["id"]: dict(m) for m in data.get("models", [])}
    for backend in backends:
        for model in backend.models:
            models.setdefault(model, {"id": model})

    secrets: dict[str, str | None] = {}
    for section, key in (("admin", "token"), ("audit", "passphrase"), ("audit", "hmac_key"),
                         ("privacy", "hmac_key")):  # fmt: skip
        secrets[f"{section}.{key}"] = _secret(
            data.get(section, {}).get(key),
            f"{section}.{key}",
            base,
            env,
            document.location((section, key)),
            diagnostics,
        )
    admin_token = secrets["admin.token"]
    passphrase = secrets["audit.passphrase"]
    audit_hmac = secrets["audit.hmac_key"]
    privacy_hmac = secrets["privacy.hmac_key"]
    for index, witness in enumerate(audit.get("witnesses", [])):
        try:
            CosignerKey.from_vkey(witness["key"])
        except KeyLoadError as exc:
            diagnostics.append(
                Diagnostic(
                    code="config_value_error",
                    message=f"audit.witnesses[{index}].key has bad value: {exc}",
                    location=document.location(("audit", "witnesses", index, "key")),
                    path=f"audit.witnesses[{index}].key",
                    help="use the witness's verifier key as `jurisgate witness vkey` prints it",
                )
            )
    if diagnostics:
        raise ConfigError(diagnostics)

    audit_dir = _resolve_path(base, audit.get("directory", "var/audit"))
    default_operator = OperatorConfig()
    problem_types = dict(default_operator.problem_types)
    problem_types.update(operator.get("problem_types", {}))
    return GatewayConfig(
        source=path,
        deployment=data.get("deployment", "jurisgate"),
        instance=data.get("instance", "gw-1"),
        listen_host=listen.get("host", "127.0.0.1"),
        listen_port=listen.get("port", 8501),
        admin=AdminConfig(
            enabled=admin.get("enabled", True),
            host=admin.get("host", "127.0.0.1"),
            port=admin.get("port", 8601),
            token=admin_token,
        ),
        operator=OperatorConfig(
            name=operator.get("name", default_operator.name),
            established_in=operator.get("established_in"),
            blocking_entity_uri=operator.get(
                "blocking_entity_uri", default_operator.blocking_entity_uri
            ),
            problem_types=problem_types,
        ),
        policy_paths=tuple(_resolve_path(base, p) for p in policies.get("paths", ["policies"])),
        watch_policies=policies.get("watch", True),
        tenants_file=_resolve_path(base, tenants["file"]) if "file" in tenants else None,
        default_tenant=tenants.get("default_tenant"),
        models=models,
        licences=tuple(dict(item) for item in data.get("licences", [])),
        backends=backends,
        routing_default=dict(routing),
        trusted_proxies=tuple(proxies),
        geoip_entries=tuple(entries),
        geoip_table=_resolve_path(base, geoip["cidr_table"]) if "cidr_table" in geoip else None,
        geoip_mmdb=_resolve_path(base, geoip["mmdb"]) if "mmdb" in geoip else None,
        headers=HeaderNames(**data.get("headers", {})),
        limits=LimitsConfig(**limits),
        client_timeouts=ClientTimeouts(**data.get("clients", {})),
        grpc=_grpc_listener(data.get("grpc", {}), base),
        connect_timeout_s=float(timeouts.get("connect_s", 2.0)),
        read_timeout_s=float(timeouts.get("read_s", 30.0)),
        scan_headers=tuple(privacy.get("scan_headers", ())),
        privacy_hmac_key=(privacy_hmac or audit_hmac or "").encode() or None,
        audit=AuditConfig(
            directory=audit_dir,
            signing_key=_resolve_path(base, audit.get("signing_key", str(audit_dir / "key.pem"))),
            passphrase=passphrase,
            hmac_key=audit_hmac.encode() if audit_hmac else None,
            hmac_key_version=audit.get("hmac_key_version", "k1"),
            durability=audit.get("durability", "strict"),
            per_record_signatures=audit.get("per_record_signatures", False),
            retention_default_days=audit.get("retention_default_days", 183),
            storage_region=audit.get("storage_region"),
            group_commit_max_records=audit.get("group_commit_max_records", 256),
            group_commit_max_delay_ms=float(audit.get("group_commit_max_delay_ms", 0.0)),
            hmac_key_file=(
                _resolve_path(base, audit["hmac_key_file"]) if "hmac_key_file" in audit else None
            ),
            max_unsynced_records=audit.get("max_unsynced_records", 2048),
            witnesses=tuple(
                WitnessConfigEntry(url=w["url"], key=w["key"]) for w in audit.get("witnesses", [])
            ),
            witness_interval_s=float(audit.get("witness_interval_s", 2.0)),
            witness_timeout_s=float(audit.get("witness_timeout_s", 5.0)),
        ),
        environ=env,
        sinks=tuple(
            SinkConfig(
                id=item["id"],
                url=item["url"],
                category=item["category"],
                is_sale_or_share=item.get("is_sale_or_share", False),
                timeout_s=float(item.get("timeout_s", 2.0)),
            )
            for item in data.get("sinks", [])
        ),
    )
