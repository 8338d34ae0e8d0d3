"""The configuration file of `jurisgate witness serve`.

```yaml
name: witness.example/w1          # the witness's key name (its cosignature lines)
key: w1-key.pem                   # Ed25519 PKCS#8 (`jurisgate keys generate --name <name>`)
passphrase_env: W1_PASSPHRASE     # optional: variable holding the key's passphrase
state: w1-state.json              # latest tree head per origin (atomic, fsynced)
listen: {host: 127.0.0.1, port: 7380}
logs:                             # the logs this witness cosigns for
  - origin: gw.example/i1
    keys: ["gw.example+1a2b3c4d+AQ..."]   # the log's note verifier keys
```

Relative paths are resolved against the file's directory. Mistakes are reported as
`file:line:col: code: message` with a help line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from gateway.audit.errors import KeyLoadError
from gateway.audit.signing import Signer, Verifier
from gateway.config.diagnostics import schema_error_diagnostic
from gateway.errors import Diagnostic, DiagnosticError
from gateway.source import load_yaml

__all__ = ["WitnessConfig", "WitnessConfigError", "load_witness_config"]


class WitnessConfigError(DiagnosticError):
    """The witness configuration could not be loaded; `diagnostics()` says where and why."""


@dataclass(frozen=True)
class WitnessConfig:
    """A loaded, checked witness configuration."""

    source: Path
    name: str
    signer: Signer
    state: Path
    host: str
    port: int
    log_keys: Mapping[str, tuple[Verifier, ...]]


_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "key", "state", "logs"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "pattern": "^[^\\s+]+$"},
        "key": {"type": "string", "minLength": 1},
        "passphrase_env": {"type": "string", "minLength": 1},
        "state": {"type": "string", "minLength": 1},
        "listen": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "host": {"type": "string", "minLength": 1},
                "port": {"type": "integer", "minimum": 0, "maximum": 65535},
            },
        },
        "logs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["origin", "keys"],
                "properties": {
                    "origin": {"type": "string", "minLength": 1, "pattern": "^[^\\s]+$"},
                    "keys": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                },
            },
        },
    },
}


def load_witness_config(path: Path, environ: Mapping[str, str] | None = None) -> WitnessConfig:
    """Load and check a witness configuration; raises `WitnessConfigError`."""
    env = os.environ if environ is None else environ
    document = load_yaml(path)
    if not document.ok:
        raise WitnessConfigError(document.diagnostics)
    data = document.data if isinstance(document.data, dict) else None
    if data is None:
        raise WitnessConfigError(
            [
                Diagnostic(
                    "config_type_error",
                    "the witness configuration must be a mapping of settings",
                    document.location(()),
                    help="start the file with `name:`, `key:`, `state:` and `logs:`",
                )
            ]
        )
    validator = jsonschema.Draft202012Validator(_SCHEMA)
    diagnostics = [
        schema_error_diagnostic(error, document)
        for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))
    ]
    if diagnostics:
        raise WitnessConfigError(diagnostics)
    base = path.parent
    log_keys: dict[str, tuple[Verifier, ...]] = {}
    for index, entry in enumerate(data["logs"]):
        verifiers: list[Verifier] = []
        for key_index, text in enumerate(entry["keys"]):
            try:
                verifiers.append(Verifier.from_note_key(text))
            except KeyLoadError as exc:
                diagnostics.append(
                    document.diagnostic(
                        "config_value_error",
                        f"logs[{index}].keys[{key_index}]: {exc}",
                        ("logs", index, "keys", key_index),
                        help="use the log's verifier key, as `jurisgate keys generate` prints "
                        "it (name+keyid+base64)",
                    )
                )
        if entry["origin"] in log_keys:
            diagnostics.append(
                document.diagnostic(
                    "config_value_error",
                    f"origin `{entry['origin']}` is listed twice",
                    ("logs", index, "origin"),
                    help="list each log once, with all its keys",
                )
            )
        log_keys[entry["origin"]] = tuple(verifiers)
    key_path = (base / data["key"]).resolve()
    passphrase_env = data.get("passphrase_env")
    passphrase = env.get(passphrase_env, "").encode() if passphrase_env else b""
    signer: Signer | None = None
    try:
        signer = Signer.from_pem_file(key_path, data["name"], passphrase or None)
    except (KeyLoadError, OSError) as exc:
        diagnostics.append(
            document.diagnostic(
                "config_value_error",
                f"key `{key_path}` cannot be loaded: {exc}",
                ("key",),
                help=f"create one with `jurisgate keys generate --out {key_path} "
                f"--name {data['name']}`; an encrypted key needs `passphrase_env`",
            )
        )
    if diagnostics or signer is None:
        raise WitnessConfigError(diagnostics)
    listen = data.get("listen", {})
    return WitnessConfig(
        source=path,
        name=data["name"],
        signer=signer,
        state=(base / data["state"]).resolve(),
        host=listen.get("host", "127.0.0.1"),
        port=listen.get("port", 7380),
        log_keys=log_keys,
    )
