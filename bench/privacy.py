"""Personal-data scanning cost next to parsing the same body, in one run.

    python bench/privacy.py

For each body: `json.loads` and `orjson.loads` of its bytes (the baselines: work the gateway
does anyway), then `scan` of the parsed document with the default detectors and region hints,
and the ratio scan / json.loads. Bodies: the S01 predict request (base64 image, a note without
personal data), a 28x28 float tensor, 32 product notes without personal data, the S02 note
(e-mail, phone, IBAN) plus its masking, and a hostile 100 KB digit text that runs into the
scan budget.
"""

from __future__ import annotations

import base64
import json
import random
import sys
from pathlib import Path
from typing import Any

import orjson

# `python bench/<name>.py` puts bench/ first on sys.path, where bench/gateway.py would shadow
# the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_us

from gateway.privacy import MaskRule, apply_masks, scan

HINTS = ("DE", "US")


def _bodies() -> dict[str, Any]:
    rng = random.Random(7)
    image = base64.b64encode(rng.randbytes(5000)).decode()
    tensor = [[[round(rng.random(), 4)] for _ in range(28)] for _ in range(28)]
    return {
        "S01: b64 image + note, no PD": {
            "instances": [
                {"image_bytes": {"b64": image}, "note": "SKU 4711 red sneaker, batch 2026-11"}
            ]
        },
        "28x28 float tensor": {"instances": [tensor]},
        "32 notes, no PD": {
            "instances": [
                {"note": f"item {i}: red sneaker size 42, batch 2026-11, SKU 47{i:02d}"}
                for i in range(32)
            ]
        },
        "S02: e-mail + phone + IBAN": {
            "instances": [
                {
                    "image_bytes": {"b64": image},
                    "note": "Rückruf an anna.schmidt@example.de oder +49 30 23125000, "
                    "Erstattung auf DE89 3704 0044 0532 0130 00",
                }
            ]
        },
        "hostile: 100 KB digit groups": {"note": "1234 5678 " * 10_000},
    }


def main() -> None:
    print(
        f"{'body':32} {'bytes':>7} {'json us':>9} {'orjson us':>10} {'scan us':>10} "
        f"{'scan/json':>10}"
    )
    rules = {category: MaskRule() for category in ("email", "phone", "iban")}
    for label, document in _bodies().items():
        body = orjson.dumps(document)
        slow = len(body) > 50_000
        inner, repeat = (1, 5) if slow else (100, 15)
        base = median_us(lambda body=body: json.loads(body), inner=inner, repeat=repeat)
        fast = median_us(lambda body=body: orjson.loads(body), inner=inner, repeat=repeat)
        cost = median_us(
            lambda document=document: scan(document, region_hints=HINTS),
            inner=inner,
            repeat=repeat,
        )
        print(
            f"{label:32} {len(body):7d} {base:9.1f} {fast:10.1f} {cost:10.1f} {cost / base:9.2f}x"
        )
        findings = scan(document, region_hints=HINTS)
        if findings and findings.complete:
            masking = median_us(
                lambda document=document, findings=findings: apply_masks(document, findings, rules),
                inner=100,
                repeat=15,
            )
            print(f"{'  + apply_masks':32} {'':7} {'':9} {'':10} {masking:10.1f}")
        if not findings.complete:
            print(f"{'  (scan budget ran out)':32}")


if __name__ == "__main__":
    main()
