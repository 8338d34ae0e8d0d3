"""Image marking cost, side by side with the obvious alternatives, in one run.

    python bench/marks.py

Rows: our PNG chunk insertion vs a Pillow re-save with the same text chunks (the pixels
survive both; only ours keeps every other chunk and the compressed data as they were);
our JPEG segment insertion; a whole TF Serving predict response marked and spliced into
its own bytes vs the same marking followed by a json.dumps of the whole document.
Reports the median per call and the ratio baseline / ours.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import random
import sys
from pathlib import Path

from PIL import Image, PngImagePlugin
from timing import median_us

# `python bench/<name>.py` puts bench/ first on sys.path, where bench/gateway.py would shadow
# the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.marks import apply_marks, build_marks, mark_predict_response

MARKS = build_marks(
    ["iptc_digital_source_type", "cn_aigc_implicit_label"],
    content_producer="001191101085MA01KP2T5U00001",
    produce_id="3f0c2b9e-decision",
)


def _image(size: int) -> Image.Image:
    return Image.frombytes("RGB", (size, size), random.Random(size).randbytes(size * size * 3))


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def _pillow_resave(png: bytes, info: PngImagePlugin.PngInfo) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        out = io.BytesIO()
        image.save(out, "PNG", pnginfo=info)
        return out.getvalue()


def _same_text_chunks(png: bytes) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    with PngImagePlugin.PngImageFile(io.BytesIO(apply_marks(png, MARKS))) as image:
        for key, value in image.text.items():
            info.add_itxt(key, value)
    return info


def _mark_by_reserialising(body: bytes) -> bytes:
    """The same marking, but writing the whole document anew (loses TF Serving's layout)."""
    document = json.loads(body)
    for prediction in document["predictions"]:
        image = base64.b64decode(prediction["image_bytes"]["b64"])
        prediction["image_bytes"]["b64"] = base64.b64encode(apply_marks(image, MARKS)).decode()
    return json.dumps(document).encode()


def _row(label: str, micros: float, ratio: float | None = None) -> None:
    tail = f" {ratio:7.2f}x" if ratio is not None else ""
    print(f"{label:56} {micros:10.0f}{tail}")


def main() -> None:
    print(f"{'case':56} {'median us':>10} {'ratio':>8}")
    for size in (256, 1024):
        png = _encode(_image(size), "PNG")
        ours = median_us(functools.partial(apply_marks, png, MARKS), inner=1, repeat=30)
        resave = functools.partial(_pillow_resave, png, _same_text_chunks(png))
        _row(f"PNG {size}x{size} ({len(png) // 1024} KiB): chunk insertion", ours)
        base = median_us(resave, repeat=10)
        _row("  baseline: Pillow re-save with PngInfo", base, base / ours)
        jpeg = _encode(_image(size), "JPEG")
        _row(
            f"JPEG {size}x{size} ({len(jpeg) // 1024} KiB): APP1 insertion",
            median_us(functools.partial(apply_marks, jpeg, MARKS), inner=1, repeat=30),
        )
        body = json.dumps(
            {"predictions": [{"image_bytes": {"b64": base64.b64encode(png).decode()}}]}, indent=4
        ).encode()
        spliced = median_us(
            functools.partial(mark_predict_response, body, MARKS), inner=1, repeat=30
        )
        rewritten = median_us(functools.partial(_mark_by_reserialising, body), inner=1, repeat=30)
        _row("  predict response: mark, splice into its bytes", spliced)
        _row("  baseline: mark, re-serialise with json.dumps", rewritten, rewritten / spliced)


if __name__ == "__main__":
    main()
