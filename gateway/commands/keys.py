"""`jurisgate keys generate|rotate`: audit signing keys.

Exit codes (`gateway.commands.exitcodes`): 0 ok, 2 usage (a bad --name), 4 error (existing file,
unreadable key, locked log).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.commands import exitcodes

PASSPHRASE_HELP = (
    "environment variable holding the key passphrase (default JURISGATE_AUDIT_KEY_PASSPHRASE; "
    "unset or empty means an unencrypted key)"
)


def register(subparsers: Any) -> None:
    """Add the `keys` command group."""
    parser = subparsers.add_parser("keys", help="generate and rotate audit signing keys")
    sub = parser.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    gen = sub.add_parser(
        "generate",
        help="write a new Ed25519 key (PKCS#8 PEM, mode 0600)",
        description="Write a new Ed25519 signing key as PKCS#8 PEM (mode 0600, encrypted "
        "when a passphrase is set) and print its public key; optionally add it to a keyring.",
    )
    gen.add_argument("--out", required=True, help="path of the new private key file")
    gen.add_argument("--name", required=True, help="key name: the deployment name")
    gen.add_argument(
        "--passphrase-env", default="JURISGATE_AUDIT_KEY_PASSPHRASE", help=PASSPHRASE_HELP
    )
    gen.add_argument(
        "--keyring", help="add the public key to this keyring file (created if missing)"
    )
    gen.add_argument(
        "--origin",
        action="append",
        default=[],
        help="origin prefix the key may sign for (repeatable; default: the name)",
    )
    gen.set_defaults(func=_generate)

    rot = sub.add_parser(
        "rotate",
        help="rotate a log to a new key (logged, co-signed checkpoint)",
        description="Open the log with the current key, write a key_rotation record, co-sign "
        "the next checkpoint with both keys, then close; update the keyring windows. The "
        "gateway must not be running on this log.",
    )
    rot.add_argument("--log", required=True, help="audit log directory")
    rot.add_argument("--key", required=True, help="current private key")
    rot.add_argument("--new-key", required=True, help="new private key (from `keys generate`)")
    rot.add_argument("--key-name", help="key name (default: the log's key name)")
    rot.add_argument(
        "--passphrase-env", default="JURISGATE_AUDIT_KEY_PASSPHRASE", help=PASSPHRASE_HELP
    )
    rot.add_argument(
        "--new-passphrase-env",
        default="JURISGATE_AUDIT_NEW_KEY_PASSPHRASE",
        help="environment variable holding the new key's passphrase",
    )
    rot.add_argument("--keyring", help="keyring file to update (old key retired at the rotation)")
    rot.set_defaults(func=_rotate)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return exitcodes.USAGE


def _fail(message: str, help_text: str | None = None, code: int = exitcodes.ERROR) -> int:
    print(f"error: {message}", file=sys.stderr)
    if help_text:
        print(f"  help: {help_text}", file=sys.stderr)
    return code


def _generate(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gateway.audit.errors import KeyLoadError
    from gateway.audit.keyring import Keyring, KeyringEntry
    from gateway.audit.record import format_ts
    from gateway.audit.signing import Signer, passphrase_from_env, write_private_key

    out = Path(args.out)
    if out.exists():
        return _fail(f"{out} already exists", "keys are never overwritten; choose another --out")
    try:
        signer = Signer.generate(args.name)
    except KeyLoadError as exc:
        return _fail(f"--name: {exc}", code=exitcodes.USAGE)
    passphrase = passphrase_from_env(args.passphrase_env)
    try:
        write_private_key(out, signer, passphrase)
    except OSError as exc:
        return _fail(f"cannot write {out}: {exc.strerror}")
    print(f"wrote {out} (PKCS#8 PEM, mode 0600, {'encrypted' if passphrase else 'NOT encrypted'})")
    print(f"key id:       {signer.kid}")
    print(f"verifier key: {signer.verifier.note_key()}")
    if args.keyring:
        path = Path(args.keyring)
        try:
            ring = Keyring.load(path) if path.exists() else Keyring()
        except KeyLoadError as exc:
            return _fail(str(exc))
        origins = tuple(args.origin) or (args.name,)
        ring.upsert(KeyringEntry(signer.verifier, origins, not_before=format_ts(datetime.now(UTC))))
        ring.save(path)
        print(f"added to keyring {path} for origins {', '.join(origins)}")
    if not passphrase:
        print(f"warning: set {args.passphrase_env} to encrypt the key at rest", file=sys.stderr)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.audit.errors import AuditError, KeyLoadError
    from gateway.audit.keyring import Keyring, KeyringEntry
    from gateway.audit.signing import Signer, passphrase_from_env
    from gateway.audit.storage import read_meta
    from gateway.audit.writer import AuditLog

    log_dir = Path(args.log)
    try:
        meta = read_meta(log_dir)
    except AuditError as exc:
        return _fail(str(exc))
    if meta is None:
        return _fail(f"--log: `{log_dir}` is not an audit log directory")
    name = args.key_name or meta.key_name
    try:
        old = Signer.from_pem_file(args.key, name, passphrase_from_env(args.passphrase_env))
        new = Signer.from_pem_file(args.new_key, name, passphrase_from_env(args.new_passphrase_env))
    except KeyLoadError as exc:
        return _fail(str(exc), "check --key/--new-key and the passphrase variables")

    async def run() -> str:
        log = await AuditLog.open(log_dir, old, origin=meta.base_origin)
        try:
            receipt = await log.rotate_key(new)
        finally:
            await log.close()
        return receipt.ts

    try:
        rotated_at = asyncio.run(run())
    except AuditError as exc:
        return _fail(str(exc))
    print(f"rotated {meta.origin} from key {old.kid} to {new.kid} at {rotated_at}")
    if args.keyring:
        path = Path(args.keyring)
        try:
            ring = Keyring.load(path) if path.exists() else Keyring()
            old_entry = ring.find(old.verifier)
            origins = old_entry.origins if old_entry else (meta.base_origin,)
            if old_entry is None:
                ring.upsert(KeyringEntry(old.verifier, origins))
            ring.update(old.verifier, not_after=rotated_at, status="retired")
            existing = ring.find(new.verifier)
            if existing is None:
                ring.upsert(KeyringEntry(new.verifier, origins, not_before=rotated_at))
            elif existing.not_before is None or existing.not_before > rotated_at:
                ring.update(new.verifier, not_before=rotated_at)
            ring.save(path)
        except KeyLoadError as exc:
            return _fail(str(exc))
        print(f"keyring {path}: {old.kid} retired at {rotated_at}, {new.kid} valid from then")
    return 0
