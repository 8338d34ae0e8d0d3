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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--dir", type=Path, default=None, help="where the logs go")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--latency-appends", type=int, default=2000,
                        help="appends per row of the latency table")  # fmt: skip
    parser.add_argument("--latency-only", action="store_true", help="only the latency table")
    args = parser.parse_args(argv)
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
