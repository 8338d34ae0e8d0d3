"""The audit keys a gateway process loads from its configuration: the signing key and the
payload HMAC key (kept with the signing key, never inside the log directory).
"""

from __future__ import annotations

import logging

from gateway.audit import PayloadDigester, Signer
from gateway.audit.payload_key import LEGACY_KEY_FILE as LEGACY_PAYLOAD_KEY_FILE
from gateway.audit.payload_key import load_or_create_payload_key
from gateway.config.loader import GatewayConfig
from gateway.edge.reload import SnapshotError

__all__ = ["load_signer", "payload_digester"]

log = logging.getLogger("jurisgate")


def load_signer(config: GatewayConfig) -> Signer:
    """The audit signing key named by `audit.signing_key`; a missing file is a diagnostic."""
    passphrase = config.audit.passphrase.encode() if config.audit.passphrase else None
    path = config.audit.signing_key
    if not path.exists():
        raise SnapshotError(
            f"{config.source}: audit.signing_key: `{path}` does not exist\n"
            f"  help: create one with `jurisgate keys generate --out {path} "
            f"--name {config.deployment}`"
        )
    return Signer.from_pem_file(path, config.deployment, passphrase)


def payload_digester(config: GatewayConfig) -> tuple[PayloadDigester, bytes]:
    """The keyed payload digester and its key: `audit.hmac_key`, else the key file beside the
    signing key (created once, moved out of the log directory if an older version left it
    there)."""
    key = config.audit.hmac_key
    if key is None:
        # Keep digests linkable across restarts without putting a secret in the config,
        # and keep the key with the signing key: never inside the log directory.
        passphrase = config.audit.passphrase.encode() if config.audit.passphrase else None
        path = config.audit.hmac_key_file or (
            config.audit.signing_key.parent / LEGACY_PAYLOAD_KEY_FILE
        )
        loaded = load_or_create_payload_key(path, config.audit.directory, passphrase)
        if loaded.migrated_from is not None:
            log.warning(
                "moved the payload HMAC key out of the audit log directory: %s -> %s "
                "(copies of the log made before hold the key; change audit.hmac_key_version "
                "if they left this host)",
                loaded.migrated_from,
                loaded.path,
            )
        key = loaded.key
    return PayloadDigester(key, config.audit.hmac_key_version), key
