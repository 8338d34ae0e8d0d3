"""`jurisgate audit verify|export|new-epoch|prune`.

Exit codes are the table in `gateway.commands.exitcodes`: `verify` exits 0 when every input is
valid, 1 when something is invalid (each problem printed with its code and line), 2 on a usage
error, 4 when an input cannot be read (missing path, unreadable keyring or state file). The
other subcommands: 0 ok, 2 usage, 4 error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.commands import exitcodes

if TYPE_CHECKING:
    from gateway.audit.signing import Signer
    from gateway.audit.verify import SourceReport

PASSPHRASE_ENV = "JURISGATE_AUDIT_KEY_PASSPHRASE"
_PROGRESS_MIN_BYTES = 8 << 20


def register(subparsers: Any) -> None:
    """Add the `audit` command group."""
    parser = subparsers.add_parser("audit", help="verify, export and maintain audit logs")
    sub = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    ver = sub.add_parser(
        "verify",
        help="verify log directories and export bundles offline",
        description="Verify audit log directories and export bundles against a pinned "
        "keyring. Exit 0 valid, 1 invalid, 2 usage error, 4 a file cannot be read.",
    )
    ver.add_argument("paths", nargs="+", metavar="PATH", help="log directory or bundle")
    ver.add_argument(
        "--trusted-keys",
        required=True,
        metavar="KEYRING",
        help="keyring obtained out of band (trust comes only from here)",
    )
    ver.add_argument(
        "--state",
        metavar="FILE",
        help="verifier state: detects rollback and forks; advanced on success",
    )
    ver.add_argument("--json", metavar="REPORT", help="write the JSON report here (`-`: stdout)")
    ver.add_argument(
        "--no-record-sigs",
        action="store_true",
        help="skip per-record signatures (checkpoints and roots still checked)",
    )
    ver.add_argument(
        "--max-gap",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="longest checkpoint gap without a restart (default 120)",
    )
    ver.add_argument(
        "--until",
        metavar="TS",
        help="requested end (RFC 3339): an older last checkpoint is STALE_TAIL",
    )
    ver.add_argument("--origin", help="require this log origin")
    ver.add_argument(
        "--replay",
        action="store_true",
        help="also re-derive every decision with the policy revision recorded in it; a "
        "decision its revision does not give is an integrity failure",
    )
    ver.add_argument(
        "--revisions",
        metavar="DIR",
        help="where the policy revisions are filed (default: PATH/policy-revisions)",
    )
    ver.add_argument(
        "--witness-keys",
        metavar="FILE",
        help="witness verifier keys (one `name+keyid+base64` per line), obtained out of band",
    )
    ver.add_argument(
        "--min-witnesses",
        type=int,
        default=0,
        metavar="N",
        help="require cosignatures from N distinct pinned witnesses on a verified checkpoint",
    )
    ver.add_argument(
        "--quiet",
        action="store_true",
        help="print only failures, the summary and warnings about what is not proven",
    )
    ver.set_defaults(func=_verify)

    exp = sub.add_parser(
        "export",
        help="write an offline-verifiable bundle",
        description="Write a bundle (signed manifest, records, checkpoints, proofs, keyring "
        "copy, VERIFY.txt, CSV/JSONL views, HTML report) of the records with FROM <= ts < TO. "
        "Several logs (workers, replicas) go into one bundle: a bundle per log under logs/<i>/, "
        "a signed index, and views of every log's records interleaved by time.",
    )
    exp.add_argument(
        "--log",
        required=True,
        action="append",
        metavar="DIR",
        help="audit log directory; repeat for several logs (each origin once). A directory "
        "that is not a log but holds worker logs w0, w1, ... (each with LOG.json) stands "
        "for all of them",
    )
    exp.add_argument("--out", required=True, help="bundle directory to create")
    exp.add_argument("--key", required=True, help="private key that signs the manifest")
    _key_options(exp)
    exp.add_argument("--from", dest="from_ts", metavar="T", help="start time (RFC 3339)")
    exp.add_argument("--to", dest="to_ts", metavar="T", help="end time, exclusive (RFC 3339)")
    exp.add_argument("--tenant", help="only this tenant (filtered: completeness not proven)")
    exp.add_argument("--jurisdiction", help="only this jurisdiction / legal-basis regime")
    exp.add_argument(
        "--decision",
        choices=("allow", "transform", "deny", "reject"),
        help="only this outcome (reject: refused before a policy decision, e.g. 401)",
    )
    exp.add_argument("--rule", help="only decisions that matched this rule id")
    exp.add_argument("--keyring", help="keyring to copy into the bundle (informational)")
    exp.add_argument(
        "--no-log-record", action="store_true", help="do not append an `export` record to the log"
    )
    exp.set_defaults(func=_export)

    epoch = sub.add_parser(
        "new-epoch",
        help="archive a damaged epoch and start a new one",
        description="The explicit answer to a refused recovery: moves the current files to "
        "epochs/<n>/ untouched and starts a new tree with origin <origin>/epoch-<n+1>, whose "
        "first records describe the discontinuity.",
    )
    epoch.add_argument("--log", required=True, help="audit log directory")
    epoch.add_argument("--key", required=True, help="private key")
    _key_options(epoch)
    epoch.add_argument("--reason", required=True, help="why (written into the recovery record)")
    epoch.set_defaults(func=_new_epoch)

    prune = sub.add_parser(
        "prune",
        help="delete whole segments past retention (logged)",
        description="Delete the oldest whole segments whose every record is past retention, "
        "after logging a prune record. The gateway must not be running on this log.",
    )
    prune.add_argument("--log", required=True, help="audit log directory")
    prune.add_argument("--key", required=True, help="private key")
    _key_options(prune)
    prune.add_argument(
        "--default-retention-days",
        type=int,
        default=183,
        help="retention of records without retention_days (default 183)",
    )
    prune.set_defaults(func=_prune)


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-name", help="key name (default: the log's key name)")
    parser.add_argument(
        "--passphrase-env",
        default=PASSPHRASE_ENV,
        help=f"environment variable holding the key passphrase ({PASSPHRASE_ENV})",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(message: str, help_text: str | None = None, code: int = exitcodes.ERROR) -> int:
    print(f"error: {message}", file=sys.stderr)
    if help_text:
        print(f"  help: {help_text}", file=sys.stderr)
    return code


class _Progress:
    """A progress line on stderr for large inputs on a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.shown = -1
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if total < _PROGRESS_MIN_BYTES:
            return
        percent = done * 100 // total
        if percent == self.shown:
            return
        self.shown = percent
        filled = percent // 4
        rate = done / max(time.monotonic() - self.started, 1e-6) / (1 << 20)
        sys.stderr.write(
            f"\r{self.label}: [{'#' * filled}{'.' * (25 - filled)}] {percent:3d}% "
            f"{done >> 20}/{total >> 20} MiB {rate:.0f} MiB/s"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _summary(report: SourceReport) -> str:
    found = report.found
    req = report.requested or {}
    lines = []
    if req:
        lines.append(
            f"  Results requested for {req.get('from_ts') or 'start'} to "
            f"{req.get('to_ts') or 'end'}"
        )
    if found:
        span = (
            f"selected records up to seq {found.get('to')}"
            if found.get("from") is None
            else f"seq {found.get('from')}..{found.get('to')}"
        )
        lines.append(f"  Results found for {span} ({found.get('from_ts')} to {found.get('to_ts')})")
    valid = report.records_total - report.records_invalid
    cp_valid = report.checkpoints_total - report.checkpoints_invalid
    lines.append(
        f"  {valid}/{report.records_total} records valid, "
        f"{cp_valid}/{report.checkpoints_total} checkpoints valid, "
        f"completeness {report.completeness}"
    )
    return "\n".join(lines)


def _verify(args: argparse.Namespace) -> int:
    from gateway.audit.verify import VerifyOptions, verify_paths

    inputs = _verify_inputs(args)
    if isinstance(inputs, int):
        return inputs
    keyring, witness_keys = inputs
    options = VerifyOptions(
        record_signatures=not args.no_record_sigs,
        max_gap_seconds=args.max_gap,
        until=args.until,
        expect_origin=args.origin,
        progress=_Progress("verifying") if sys.stderr.isatty() else None,
        witness_keys=witness_keys,
        min_witnesses=args.min_witnesses,
    )
    try:
        result = verify_paths(args.paths, keyring, options, args.state)
    except OSError as exc:
        return _fail(f"cannot read input: {exc}")
    for source in result.sources:
        _print_source(source, args.quiet)
    if args.json:
        text = json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text, encoding="utf-8")
    replayed_ok = all(_replay(p, args) for p in _replay_paths(args.paths)) if args.replay else True
    return 0 if result.valid and replayed_ok else 1


def _verify_inputs(args: argparse.Namespace) -> int | tuple[Any, tuple[Any, ...]]:
    """The trusted keyring and witness keys `verify` needs, or the exit code of a bad input."""
    from gateway.audit.errors import KeyLoadError
    from gateway.audit.keyring import Keyring
    from gateway.audit.verify import load_state

    for raw in args.paths:
        if not Path(raw).is_dir():
            return _fail(f"`{raw}` is not a directory", "give a log directory or a bundle")
    try:
        keyring = Keyring.load(args.trusted_keys)
    except KeyLoadError as exc:
        return _fail(f"--trusted-keys: {exc}")
    if args.state:
        try:
            load_state(Path(args.state))
        except (OSError, ValueError) as exc:
            return _fail(f"--state: {exc}")
    if args.min_witnesses < 0:
        return _fail(
            f"--min-witnesses: {args.min_witnesses} must be 0 or more", code=exitcodes.USAGE
        )
    witness_keys: tuple[Any, ...] = ()
    if args.witness_keys:
        try:
            witness_keys = _load_witness_keys(Path(args.witness_keys))
        except (OSError, KeyLoadError) as exc:
            return _fail(
                f"--witness-keys: {exc}",
                "one witness verifier key per line, as `jurisgate witness vkey` prints it",
            )
    if args.min_witnesses > len(witness_keys):
        return _fail(
            f"--min-witnesses {args.min_witnesses} needs at least that many keys in --witness-keys",
            code=exitcodes.USAGE,
        )
    return keyring, witness_keys


def _print_source(source: Any, quiet: bool) -> None:
    """One verified log or bundle: its errors, its warnings and its status line."""
    for finding in sorted(source.errors, key=lambda f: f.sort_key()):
        print(f"{finding.text()}")
    for finding in sorted(source.warnings, key=lambda f: f.sort_key()):
        # What is not proven is never hidden, not even by --quiet.
        if not quiet or finding.code in _NEVER_QUIET:
            print(f"warning: {finding.text()}")
    status = "OK" if source.valid else "FAIL"
    if source.kind == "index":
        _print_index(source, status)
        return
    head = source.head or {}
    print(
        f"{status}: {source.path} ({source.kind} {source.origin}, "
        f"{source.records_total} records, size {head.get('size', '-')}, "
        f"root {head.get('root', '-')})"
    )
    if not quiet or not source.valid:
        print(_summary(source))
    if source.witnessed is not None:
        print(
            f"  witnessed: size {source.witnessed['size']} cosigned by "
            f"{', '.join(source.witnessed['witnesses'])}"
        )


def _print_index(source: Any, status: str) -> None:
    """The index of a bundle of many logs: per origin, what is proven."""
    logs = source.found.get("logs", [])
    print(f"{status}: {source.path} (bundle of {len(logs)} logs, {source.records_total} records)")
    for log in logs:
        head = log.get("head") or {}
        print(
            f"  {log['origin']}: {'valid' if log['valid'] else 'INVALID'}, {log['records']} "
            f"records, completeness {log['completeness']}, size {head.get('size', '-')}"
        )
    print(f"  index and interleaved views: completeness {source.completeness}")


def _replay_paths(paths: list[str]) -> list[Path]:
    """The logs and single-log bundles to replay: a bundle of many logs is its parts."""
    from gateway.audit.multi_export import INDEX_FILE, LOGS_DIR

    found: list[Path] = []
    for path in map(Path, paths):
        if (path / INDEX_FILE).is_file():
            # logs/0, logs/1, ..., logs/10: in index order (verify reports any stray entry).
            parts = (path / LOGS_DIR).iterdir()
            found.extend(sorted(parts, key=lambda p: (len(p.name), p.name)))
        else:
            found.append(path)
    return found


def _replay(source: Path, args: argparse.Namespace) -> bool:
    """Re-derive the decisions of one log or bundle; print what does not match."""
    from gateway.replay.decisions import iter_decision_records, replay_log
    from gateway.replay.revisions import STORE_DIR, load_revision

    store = Path(args.revisions) if args.revisions else source / STORE_DIR
    report = replay_log(iter_decision_records(source), lambda rev: load_revision(store, rev))
    for name, reason in sorted(report.missing_revisions.items()):
        print(f"REPLAY_REVISION_MISSING: {source}: revision {name}: {reason}")
    for mismatch in report.mismatches:
        print(f"REPLAY_MISMATCH: {source}: {mismatch.text()}")
    status = "OK" if report.ok else "FAIL"
    print(
        f"replay {status}: {source}: {report.replayed} decisions re-derived, "
        f"{len(report.mismatches)} mismatches, {report.not_replayable} not replayable"
    )
    return report.ok


#: Warnings about what a verification did not prove: shown even with --quiet.
_NEVER_QUIET = frozenset(
    {"COMPLETENESS_NOT_PROVEN", "WITNESS_TAIL", "UNCHECKPOINTED_TAIL", "KEY_BESIDE_LOG"}
)


def _load_witness_keys(path: Path) -> tuple[Any, ...]:
    from gateway.audit.errors import KeyLoadError
    from gateway.audit.witness import CosignerKey

    keys = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            keys.append(CosignerKey.from_vkey(text))
        except KeyLoadError as exc:
            raise KeyLoadError(f"{path}:{number}: {exc}") from None
    return tuple(keys)


def _load_signer(args: argparse.Namespace, log_dir: Path) -> tuple[Signer, Any]:
    from gateway.audit.errors import AuditError
    from gateway.audit.signing import Signer, passphrase_from_env
    from gateway.audit.storage import read_meta

    meta = read_meta(log_dir)
    if meta is None:
        raise AuditError(f"--log: `{log_dir}` is not an audit log directory (no LOG.json)")
    name = args.key_name or meta.key_name
    signer = Signer.from_pem_file(args.key, name, passphrase_from_env(args.passphrase_env))
    return signer, meta


def _export(args: argparse.Namespace) -> int:
    from gateway.audit.bundle import ExportFilter
    from gateway.audit.errors import AuditError
    from gateway.audit.export import export_bundle
    from gateway.audit.keyring import Keyring
    from gateway.audit.multi_export import expand_log_dirs, export_many

    try:
        log_dirs = expand_log_dirs(args.log)
        signer, _meta = _load_signer(args, log_dirs[0])
        keyring = Keyring.load(args.keyring) if args.keyring else None
        window: dict[str, Any] = {
            "from_ts": args.from_ts,
            "to_ts": args.to_ts,
            "export_filter": ExportFilter(args.tenant, args.jurisdiction, args.decision, args.rule),
            "keyring": keyring,
        }
        if len(log_dirs) == 1:
            results = [export_bundle(log_dirs[0], args.out, signer, **window)]
        else:
            results = list(export_many(log_dirs, args.out, signer, **window).logs)
    except (AuditError, ValueError) as exc:
        return _fail(str(exc))
    for result in results:
        print(
            f"wrote {result.path}: {result.records} records of {result.origin}, seq "
            f"{result.range_from}..{result.range_to}, completeness {result.completeness}"
        )
    if len(results) > 1:
        print(f"wrote {args.out}: one bundle of {len(results)} logs")
    if args.no_log_record:
        return 0
    status = 0
    for log_dir, result in zip(log_dirs, results, strict=True):
        status = max(status, _log_export(args, log_dir, result))
    return status


def _log_export(args: argparse.Namespace, log_dir: Path, result: Any) -> int:
    """Append the `export` record of `result` to the log it exported."""
    import asyncio

    from gateway.audit.errors import AuditError, AuditLogLocked
    from gateway.audit.writer import AuditLog

    try:
        signer, meta = _load_signer(args, log_dir)
    except (AuditError, ValueError) as exc:
        return _fail(f"bundle written, but the export record failed: {exc}")

    async def log_it() -> None:
        log = await AuditLog.open(log_dir, signer, origin=meta.base_origin)
        try:
            await log.log_export({**result.record_fields(), "out": Path(args.out).name})
        finally:
            await log.close()

    try:
        asyncio.run(log_it())
    except AuditLogLocked as exc:
        print(f"note: export record not written: {exc}", file=sys.stderr)
    except AuditError as exc:
        return _fail(f"bundle written, but the export record failed: {exc}")
    return 0


def _new_epoch(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.audit.errors import AuditError
    from gateway.audit.writer import AuditLog

    log_dir = Path(args.log)
    try:
        signer, meta = _load_signer(args, log_dir)
    except (AuditError, ValueError) as exc:
        return _fail(str(exc))

    async def run() -> str:
        log = await AuditLog.open_new_epoch(
            log_dir, signer, origin=meta.base_origin, reason=args.reason
        )
        origin = log.origin
        await log.close()
        return origin

    try:
        origin = asyncio.run(run())
    except AuditError as exc:
        return _fail(str(exc))
    print(f"archived epoch {meta.epoch} under {log_dir}/epochs/{meta.epoch}; new origin {origin}")
    print("  help: publish the new origin to auditors; keyring origins given as prefixes cover it")
    return 0


def _prune(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.audit.errors import AuditError
    from gateway.audit.writer import AuditLog, AuditOptions

    log_dir = Path(args.log)
    try:
        signer, meta = _load_signer(args, log_dir)
    except (AuditError, ValueError) as exc:
        return _fail(str(exc))

    async def run() -> Any:
        options = AuditOptions(default_retention_days=args.default_retention_days)
        log = await AuditLog.open(log_dir, signer, origin=meta.base_origin, options=options)
        try:
            return await log.prune()
        finally:
            await log.close()

    try:
        result = asyncio.run(run())
    except AuditError as exc:
        return _fail(str(exc))
    if result is None:
        print("nothing to prune: no whole segment is past retention")
    else:
        print(
            f"pruned seq {result.from_seq}..{result.to_seq - 1} ({len(result.segments)} segments)"
        )
    return 0
