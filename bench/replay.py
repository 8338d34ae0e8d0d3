"""Replay throughput and the log growth of recorded evaluation inputs.

    python bench/replay.py                     # 1,000,000 recorded decisions (about a minute)
    python bench/replay.py --decisions 200000  # a quicker run

1. Growth: the `input` member a decision record now carries, for the standard request of
   `bench/gateway.py` (a tenant with a licence, a 28x28 image and a note without personal
   data), in bytes of canonical JSON; bar: at most 1 KB more per decision.
2. Throughput: `N` decision records are written as a log segment would hold them (one JSON
   line each), their inputs taken in turn from the contexts of the legal scenarios
   (`tests/policy/scenario_contexts.yaml`) with their recorded outcome; `replay_log` then
   re-derives every one with the shipped policies. Measured: decisions/s and peak RSS of the
   replay (a child process, so the records written do not count); bar: at least 20,000
   decisions/s in bounded memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))


def _policies() -> Any:
    from gateway.policy import load_policy_set

    result = load_policy_set([REPO / "policies"])
    assert result.policy_set is not None
    return result.policy_set


def _contexts() -> list[dict[str, Any]]:
    from gateway.policy.cases import load_case_file, to_json_data

    cases = load_case_file(REPO / "tests" / "policy" / "scenario_contexts.yaml").cases
    return [dict(to_json_data(case.context)) for case in cases]


def write_log(path: Path, count: int) -> int:
    """`count` decision records with inputs and the outcomes the policies give them."""
    from gateway.replay.decisions import recorded_outcome  # noqa: F401  (the record shape it reads)

    policy_set = _policies()
    templates = []
    for context in _contexts():
        decision = policy_set.evaluate(context)
        templates.append(
            {
                "type": "decision",
                "policy": policy_set.revision,
                "decision": "allow" if decision.allowed else "deny",
                "status": 200 if decision.allowed else decision.status,
                "rules": list(decision.rules),
                "input": context,
                "tenant": (context.get("caller") or {}).get("tenant"),
                "model": (context.get("request") or {}).get("model"),
            }
        )
    with path.open("w", encoding="utf-8") as out:
        for seq in range(count):
            record = dict(templates[seq % len(templates)], seq=seq, decision_id=f"d{seq}")
            out.write(json.dumps({"r": record, "s": ""}, separators=(",", ":")) + "\n")
    return len(templates)


def replay_child(path: Path) -> None:
    """Replay the records of `path`; print decisions/s, mismatches and peak RSS as JSON."""
    import orjson

    from gateway.replay.decisions import replay_log

    policy_set = _policies()

    def records() -> Any:
        with path.open("rb") as handle:
            for line in handle:
                yield orjson.loads(line)["r"]

    started = time.perf_counter()
    report = replay_log(records(), lambda revision: policy_set)
    elapsed = time.perf_counter() - started
    print(json.dumps({
        "decisions": report.replayed,
        "mismatches": len(report.mismatches),
        "seconds": elapsed,
        "per_second": report.replayed / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))  # fmt: skip


def input_growth() -> int:
    """Bytes of the canonical `input` member for the gateway bench's standard request."""
    import rfc8785

    policy_set = _policies()
    from datetime import UTC, datetime

    from gateway.config.loader import HeaderNames
    from gateway.request.context import ClientFacts, RouteFacts, build_context

    context = build_context(
        now=datetime(2026, 12, 6, tzinfo=UTC),
        tenant={"id": "bench-eu", "established_in": "DE",
                "registered_purposes": ["product_catalog_tagging"], "default_backend": None,
                "flags": {"mask_pd_in_free_text": True}},
        client=ClientFacts(ip="127.0.0.1", region="DE"),
        headers={"X-Purpose": "product_catalog_tagging"},
        names=HeaderNames(),
        route=RouteFacts("bench-mnist", None, None, "predict"),
        findings=[],
        model={"id": "bench-mnist", "kind": "classifier", "output": "labels",
               "placed_on_market": "2025-03-01"},
        licence={"id": "LIC-BENCH-MNIST", "model": "bench-mnist", "licensee": "bench-eu",
                 "kind": "contract", "commercial_use": "allowed",
                 "valid_from": "2025-01-01", "valid_until": "2099-12-31"},
        backends=[{"id": "be-bench-de", "region": "DE", "transfer_mechanisms": []}],
        sinks=[],
    )  # fmt: skip
    assert policy_set.evaluate(context).allowed
    context["caller"]["client_ip"] = None
    return len(rfc8785.dumps(context))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        replay_child(args.child)
        return 0
    growth = input_growth()
    print(f"input per decision (standard request, canonical JSON): {growth} bytes "
          f"(bar: <= 1024) {'PASS' if growth <= 1024 else 'MISS'}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="jurisgate-replay-") as tmp:
        log = Path(tmp) / "decisions.jsonl"
        kinds = write_log(log, args.decisions)
        print(f"{args.decisions} records ({kinds} distinct inputs), {log.stat().st_size >> 20} MiB")
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(log)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rate = result["per_second"]
    print(
        f"replay: {result['decisions']} decisions in {result['seconds']:.1f} s = {rate:,.0f}/s "
        f"(bar: >= 20,000) {'PASS' if rate >= 20_000 else 'MISS'}; mismatches "
        f"{result['mismatches']}; peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
