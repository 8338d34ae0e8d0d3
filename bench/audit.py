"""Audit-log throughput: durable appends with checkpoint signatures vs per-record signatures
vs no fsync, and verification speed, side by side in one run.

Each variant writes the same gateway-shaped decision records (about 600 bytes canonical)
from many concurrent appenders into a fresh log under --dir (default: the system temp
directory), then the logs are verified offline. CPU us per record is process CPU time
(event loop + writer thread) divided by records; fsync time is not CPU.

    python bench/audit.py                        # 50,000 records per variant, 256 appenders
    python bench/audit.py --records 100000 --concurrency 512 --json out.json

Bars (issue 4): >= 20,000 durable records/s with checkpoint signatures; verification of
>= 20,000 records/s without per-record signatures.

A second table measures append latency at low load (strict durability, checkpoint
signatures): 1 and 4 closed-loop appenders, p50/p99 of `await log.append(...)`, the
event-loop thread's CPU per record and fsyncs per record, next to the floor of the same
disk measured in the same run (one `write` + `fsync` of a record-sized line).

    python bench/audit.py --latency-only         # only the latency table (about 10 s)

Two more measurements (issue 12):

    python bench/audit.py --scale 1000000        # export + verify of a log of N records:
                                                 # records/s and peak RSS of each, each in
                                                 # its own process (bars: >= 50,000/s and
                                                 # < 300 MB at 10,000,000 records)
    python bench/audit.py --witness-only         # durable appends with a witness
                                                 # (`jurisgate witness serve`, another
                                                 # process) vs without (bar: within 5%)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.audit import (  # noqa: E402
    AuditLog,
    AuditOptions,
    Keyring,
    KeyringEntry,
    PayloadDigester,
    Signer,
    VerifyOptions,
    verify_source,
)

DEPLOYMENT = "bench.example"


@dataclass
class Row:
    variant: str
    records: int
    seconds: float
    records_per_second: float
    cpu_us_per_record: float
    batches: int
    ratio: float = 1.0


def _record(i: int, digester: PayloadDigester) -> dict[str, Any]:
    deny = i % 4 == 0
    return {
        "type": "decision",
        "decision_id": f"7d3c9a4e-1b2f-4c5d-8e9f-{i:012d}",
        "route": "POST /v1/models/imgcls-resnet50:predict",
        "policy": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "model": "imgcls-resnet50",
        "tenant": "acme-eu",
        "caller_region": "DE",
        "untrusted_region_claims": [],
        "client_ip": "192.0.2.0/24",
        "decision": "deny" if deny else "allow",
        "status": 451 if deny else 200,
        "rules": ["gdpr.transfer.no_adequacy"] if deny else ["allow.catalog_tagging"],
        "legal_basis": [{"regime": "GDPR", "ref": "Art. 44"}] if deny else [],
        "detected_personal_data": [{"type": "email", "path": "/instances/0/note"}],
        "retention_days": 183,
        "req_mac": digester.digest(i.to_bytes(8, "big")),
    }


async def _write(directory: Path, signer: Signer, options: AuditOptions, records: int,
                 concurrency: int) -> tuple[float, float, int]:  # fmt: skip
    digester = PayloadDigester(bytes(32), "k1")
    bodies = [_record(i, digester) for i in range(records)]
    log = await AuditLog.open(directory, signer, origin=f"{DEPLOYMENT}/bench", options=options)
    per_worker = records // concurrency

    async def worker(w: int) -> None:
        for body in bodies[w * per_worker : (w + 1) * per_worker]:
            await log.append(body)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    batches = log.stats().batches_written
    await log.close()
    return seconds, cpu_seconds, batches


@dataclass
class LatencyRow:
    variant: str
    appends: int
    p50_us: float
    p99_us: float
    loop_cpu_us_per_record: float
    cpu_us_per_record: float
    fsyncs_per_record: float
    ratio_p50: float = 1.0


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _fsync_floor(directory: Path, appends: int) -> LatencyRow:
    """One `write` + `fsync` of a record-sized line per append, called directly: what the
    disk alone costs an append."""
    directory.mkdir(parents=True)
    line = b"x" * 640 + b"\n"
    samples: list[float] = []
    fd = os.open(directory / "floor.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for _ in range(appends):
            started = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            samples.append((time.perf_counter() - started) * 1e6)
    finally:
        os.close(fd)
    return LatencyRow("floor: write + fsync", appends, statistics.median(samples),
                      _percentile(samples, 0.99), 0.0, 0.0, 1.0)  # fmt: skip


async def _latency(directory: Path, signer: Signer, options: AuditOptions, appenders: int,
                   appends: int) -> LatencyRow:  # fmt: skip
    digester = PayloadDigester(bytes(32), "k1")
    bodies = [_record(i, digester) for i in range(appends)]
    log = await AuditLog.open(directory, signer, origin=f"{DEPLOYMENT}/latency", options=options)
    for body in bodies[:20]:  # warm-up: imports, caches, the first segment
        await log.append(body)
    per_worker = appends // appenders
    samples: list[float] = []

    async def worker(w: int) -> None:
        for body in bodies[w * per_worker : (w + 1) * per_worker]:
            started = time.perf_counter()
            await log.append(body)
            samples.append((time.perf_counter() - started) * 1e6)

    batches_before = log.stats().batches_written
    loop_cpu, cpu = time.thread_time(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(appenders)))
    loop_cpu, cpu = time.thread_time() - loop_cpu, time.process_time() - cpu
    batches = log.stats().batches_written - batches_before
    await log.close()
    n = len(samples)
    return LatencyRow(f"{appenders} appender{'s' if appenders > 1 else ''}", n,
                      statistics.median(samples), _percentile(samples, 0.99),
                      loop_cpu / n * 1e6, cpu / n * 1e6, batches / n)  # fmt: skip


def _latency_table(root: Path, signer: Signer, appends: int) -> list[LatencyRow]:
    rows = [_fsync_floor(root / "floor", min(appends, 1000))]
    for appenders in (1, 4):
        directory = root / f"latency{appenders}"
        rows.append(asyncio.run(_latency(directory, signer, AuditOptions(), appenders, appends)))
    for row in rows:
        row.ratio_p50 = row.p50_us / rows[0].p50_us
    print(f"append latency, strict durability, checkpoint signatures, {appends} appends per row")
    print(f"{'variant':34} {'p50 us':>8} {'p99 us':>8} {'loop CPU us/rec':>16} "
          f"{'CPU us/rec':>11} {'fsyncs/rec':>11} {'p50/floor':>10}")  # fmt: skip
    for row in rows:
        print(f"{row.variant:34} {row.p50_us:8.0f} {row.p99_us:8.0f} "
              f"{row.loop_cpu_us_per_record:16.1f} {row.cpu_us_per_record:11.1f} "
              f"{row.fsyncs_per_record:11.2f} {row.ratio_p50:10.2f}")  # fmt: skip
    return rows


def _generate_log(directory: Path, signer: Signer, records: int) -> None:
    """A log of `records` gateway-shaped records, written straight to its files (the
    writer's batching is not what the scale test measures): segments and one checkpoint
    per segment end plus one at the end."""
    from datetime import UTC, datetime

    from gateway.audit.chain import ChainState, seal
    from gateway.audit.note import checkpoint_text, sign_note
    from gateway.audit.record import format_ts
    from gateway.audit.storage import META_FILE, LogMeta, dump_json, segment_name

    origin = f"{DEPLOYMENT}/scale"
    segment_records = 65536
    directory.mkdir(parents=True)
    (directory / "segments").mkdir()
    ts = format_ts(datetime.now(UTC))
    meta = LogMeta(origin, 1, DEPLOYMENT, segment_records, ts)
    (directory / META_FILE).write_bytes(dump_json(meta.to_json()))
    digester = PayloadDigester(bytes(32), "k1")
    state = ChainState(origin)
    notes = []
    first = _record(0, digester)
    with open(directory / "checkpoints.notes", "w", encoding="utf-8") as cp_file:
        for start in range(0, records, segment_records):
            end = min(start + segment_records, records)
            with open(directory / "segments" / segment_name(start), "wb") as segment:
                chunk = []
                for i in range(start, end):
                    fields = dict(first, decision_id=f"7d3c9a4e-1b2f-4c5d-8e9f-{i:012d}")
                    fields["type"] = "start" if i == 0 else "decision"
                    chunk.append(seal(state, fields, signer, ts, sign_record=False).line)
                segment.write(b"".join(chunk))
            note = sign_note(checkpoint_text(state.checkpoint(ts)), [signer])
            cp_file.write(note + "\n")
            notes.append(note)


def _own_peak_kib() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: on Linux that keeps the high-water
    mark of the process that forked this one (here the generator, large), so it would
    report the parent's peak instead of this phase's."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _phase(args: argparse.Namespace) -> int:
    """One scale phase in this process; prints seconds, records and peak RSS as JSON."""
    from gateway.audit import export_bundle

    signer = Signer.from_seed(bytes(32), DEPLOYMENT)
    keyring = Keyring([KeyringEntry(signer.verifier, (DEPLOYMENT,))])
    started = time.perf_counter()
    if args.phase == "export":
        result = export_bundle(args.log, args.out, signer, keyring=keyring)
        records = result.records
    else:
        report = verify_source(args.out, keyring, VerifyOptions(record_signatures=False))
        if not report.valid:
            print(json.dumps({"error": [f.text() for f in report.errors[:3]]}))
            return 1
        records = report.records_total
    seconds = time.perf_counter() - started
    peak_kib = _own_peak_kib()
    # Large ranges make one view in a second process: its peak counts too. A child's
    # ru_maxrss is at least the RSS of this process when it started the child (Linux
    # keeps the parent's high-water mark across the vfork/exec), so this bounds the
    # helper's own peak from above.
    helper_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    own, helper = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    own_cpu, helper_cpu = own.ru_utime + own.ru_stime, helper.ru_utime + helper.ru_stime
    print(json.dumps({"records": records, "seconds": seconds, "peak_rss_mb": peak_kib / 1024,
                      "helper_peak_rss_mb": helper_kib / 1024,
                      "cpu_us_per_record": own_cpu / records * 1e6,
                      "helper_cpu_us_per_record": helper_cpu / records * 1e6,
                      "load_average": os.getloadavg()[0]}))  # fmt: skip
    return 0


def _scale(root: Path, records: int) -> list[dict[str, Any]]:
    signer = Signer.from_seed(bytes(32), DEPLOYMENT)
    log_dir, bundle = root / "scale-log", root / "scale-bundle"
    started = time.perf_counter()
    _generate_log(log_dir, signer, records)
    print(f"generated {records:,} records in {time.perf_counter() - started:.1f} s")
    rows = []
    for phase in ("export", "verify"):
        out = subprocess.run(
            [sys.executable, __file__, "--phase", phase, "--log", str(log_dir), "--out",
             str(bundle)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(f"{phase} failed: {out.stdout}{out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["phase"] = phase
        row["records_per_second"] = row["records"] / row["seconds"]
        rows.append(row)
    return rows


def _witness_table(root: Path, records: int, concurrency: int, rounds: int) -> list[Row]:
    """Durable appends without and with a witness in another process, in paired rounds.

    Returns the two rows; the second row's `ratio` is the median over pairs of
    throughput with / without, the first row's the median of CPU per record with /
    without (CPU of this process: the event loop and the writer thread, the request path;
    the witness itself runs in another process)."""
    import aiohttp
    import yaml

    from gateway.audit.witness import Cosigner
    from gateway.witness.client import CheckpointWitnessing, WitnessEndpoint

    signer = Signer.generate(DEPLOYMENT)
    witness_signer = Signer.generate("bench.example/witness")
    from gateway.audit.signing import write_private_key

    wdir = root / "witness"
    wdir.mkdir()
    write_private_key(wdir / "key.pem", witness_signer)
    (wdir / "witness.yaml").write_text(yaml.safe_dump({
        "name": witness_signer.name, "key": "key.pem", "state": "state.json",
        "listen": {"host": "127.0.0.1", "port": 0},
        "logs": [{"origin": f"{DEPLOYMENT}/bench-{n}", "keys": [signer.verifier.note_key()]}
                 for n in range(2 * rounds)],
    }))  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "witness", "serve", "--config",
         str(wdir / "witness.yaml")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        found = re.search(r"serving on (http://\S+)", proc.stdout.readline().decode())
        if not found:
            raise SystemExit("the witness did not start")
        endpoint = WitnessEndpoint(Cosigner(witness_signer).key, found.group(1))

        async def run(directory: Path, witnessed: bool, n: int) -> tuple[float, float, int]:
            digester = PayloadDigester(bytes(32), "k1")
            bodies = [_record(i, digester) for i in range(records)]
            # A new log per run, so a new origin: the witness remembers every origin it saw.
            log = await AuditLog.open(directory, signer, origin=f"{DEPLOYMENT}/bench-{n}")
            session = aiohttp.ClientSession()
            witnessing = None
            if witnessed:
                witnessing = CheckpointWitnessing(log, [endpoint], session, interval=2.0)
                witnessing.start()
            per_worker = records // concurrency

            async def worker(w: int) -> None:
                for body in bodies[w * per_worker : (w + 1) * per_worker]:
                    await log.append(body)

            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
            await log.close()
            if witnessing is not None:
                await witnessing.close()
                if witnessing.statuses[0].size != log.stats().size:
                    raise SystemExit(f"witness lagging: {witnessing.report()}")
            await session.close()
            return seconds, cpu_seconds, 0

        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        # Paired rounds in ABBA order, so that drift (other load, a warming disk) falls on
        # both variants alike; the bar is judged on the median of the per-pair ratios.
        for attempt in range(rounds):
            order = (False, True) if attempt % 2 == 0 else (True, False)
            for witnessed in order:
                directory = root / f"w{attempt}-{int(witnessed)}"
                seconds, cpu, _ = asyncio.run(run(directory, witnessed, attempt * 2 + witnessed))
                results[witnessed].append((seconds, cpu))
                shutil.rmtree(directory, ignore_errors=True)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    rows = []
    for witnessed, label in ((False, "durable, no witness"), (True, "durable, one witness")):
        rate = statistics.median(records / s for s, _c in results[witnessed])
        cpu = statistics.median(c for _s, c in results[witnessed]) / records * 1e6
        rows.append(Row(label, records, records / rate, rate, cpu, 0))
    pairs = list(zip(results[False], results[True], strict=True))
    rows[1].ratio = statistics.median(plain[0] / witnessed[0] for plain, witnessed in pairs)
    rows[0].ratio = statistics.median(witnessed[1] / plain[1] for plain, witnessed in pairs)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--dir", type=Path, default=None, help="where the logs go")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--latency-appends", type=int, default=2000,
                        help="appends per row of the latency table")  # fmt: skip
    parser.add_argument("--latency-only", action="store_true", help="only the latency table")
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="only export + verify of a generated log of N records")  # fmt: skip
    parser.add_argument("--witness-only", action="store_true",
                        help="only appends with and without a witness")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=6,
                        help="paired rounds of --witness-only")  # fmt: skip
    parser.add_argument("--phase", choices=("export", "verify"), help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        return _phase(args)
    if args.scale or args.witness_only:
        root = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=args.dir))
        try:
            if args.scale:
                for row in _scale(root, args.scale):
                    print(f"{row['phase']:7} {row['records']:>11,} records "
                          f"{row['records_per_second']:>10,.0f} records/s "
                          f"peak RSS {row['peak_rss_mb']:7.1f} MB "
                          f"(helper {row['helper_peak_rss_mb']:6.1f} MB) "
                          f"CPU {row['cpu_us_per_record']:5.1f} us/rec "
                          f"(helper {row['helper_cpu_us_per_record']:5.1f}) "
                          f"load {row['load_average']:.1f}")  # fmt: skip
                    peak = row["peak_rss_mb"] + row["helper_peak_rss_mb"]
                    ok = row["records_per_second"] >= 50_000 and peak < 300
                    print(f"bar: {row['phase']} >= 50,000 records/s and < 300 MB for both "
                          f"processes: {'met' if ok else 'NOT met'}")  # fmt: skip
            if args.witness_only:
                records = args.records - args.records % args.concurrency
                rows = _witness_table(root, records, args.concurrency, args.rounds)
                for row in rows:
                    rate, cpu = row.records_per_second, row.cpu_us_per_record
                    print(f"{row.variant:24} {rate:11,.0f} records/s {cpu:7.1f} CPU us/rec "
                          f"(median of {args.rounds})")  # fmt: skip
                print(f"with / without, median of {args.rounds} paired rounds: throughput "
                      f"{rows[1].ratio:.3f}, CPU per record {rows[0].ratio:.3f}")  # fmt: skip
                ok = rows[1].ratio >= 0.95
                print(f"bar: with a witness within 5% of without: {'met' if ok else 'NOT met'}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return 0
    records = args.records - args.records % args.concurrency
    root = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=args.dir))
    signer = Signer.generate(DEPLOYMENT)
    try:
        latency = _latency_table(root, signer, args.latency_appends - args.latency_appends % 4)
    finally:
        if args.latency_only:
            shutil.rmtree(root, ignore_errors=True)
    if args.latency_only:
        if args.json is not None:
            args.json.write_text(json.dumps({"latency": [asdict(r) for r in latency]}, indent=2))
        return 0
    keyring = Keyring([KeyringEntry(signer.verifier, (DEPLOYMENT,))])
    variants = [
        ("durable, checkpoint signatures", AuditOptions()),
        ("durable, per-record signatures", AuditOptions(record_signatures=True)),
        ("no fsync (relaxed-no-fsync)", AuditOptions(durability="relaxed-no-fsync")),
    ]
    rows: list[Row] = []
    try:
        for index, (label, options) in enumerate(variants):
            directory = root / f"log{index}"
            seconds, cpu, batches = asyncio.run(
                _write(directory, signer, options, records, args.concurrency)
            )
            rows.append(Row(label, records, seconds, records / seconds, cpu / records * 1e6,
                            batches))  # fmt: skip
        for index, label, check_sigs in ((0, "verify, no per-record signatures", False),
                                         (1, "verify, per-record signatures", True)):  # fmt: skip
            started, cpu = time.perf_counter(), time.process_time()
            report = verify_source(root / f"log{index}", keyring,
                                   VerifyOptions(record_signatures=check_sigs))  # fmt: skip
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
            if not report.valid:
                print(f"verification failed: {report.errors[:3]}", file=sys.stderr)
                return 1
            total = report.records_total
            rows.append(Row(label, total, seconds, total / seconds, cpu_seconds / total * 1e6, 0))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base_write, base_verify = rows[0].records_per_second, rows[3].records_per_second
    for row in rows:
        row.ratio = row.records_per_second / (base_verify if row.variant.startswith("verify")
                                              else base_write)  # fmt: skip
    print(f"{records} records per variant, {args.concurrency} concurrent appenders, "
          f"logs under {root.parent}")  # fmt: skip
    print(f"{'variant':34} {'records/s':>11} {'CPU us/rec':>11} {'batches':>8} {'ratio':>6}")
    for row in rows:
        print(f"{row.variant:34} {row.records_per_second:11,.0f} {row.cpu_us_per_record:11.1f} "
              f"{row.batches:8d} {row.ratio:6.2f}")  # fmt: skip
    bars = {
        "durable with checkpoint signatures >= 20,000/s": rows[0].records_per_second >= 20_000,
        "verify without per-record signatures >= 20,000/s": rows[3].records_per_second >= 20_000,
    }
    for name, ok in bars.items():
        print(f"bar: {name}: {'met' if ok else 'NOT met'}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "bars": bars,
                                         "latency": [asdict(r) for r in latency]},
                                        indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
