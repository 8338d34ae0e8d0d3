"""The visible CN label (Labelling Measures Art. 4, GB 45438-2025) is drawn on the pixels of
generated PNG images: `AI生成` in a bottom-left band, the text at least 5% of the shorter
side high; other chunks and the metadata marks survive; anything else fails closed."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest
from PIL import Image

from gateway.marks import (
    AigcImplicitLabel,
    ExplicitLabel,
    ImageMarkError,
    draw_explicit_label,
    mark_predict_response,
    read_marks,
)
from gateway.marks.label import LABEL_MIN_HEIGHT_RATIO


def _png(width: int, height: int, mode: str = "RGB", colour: object = (30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, "PNG")  # type: ignore[arg-type]
    return buffer.getvalue()


def _ink_rows(image: bytes) -> list[int]:
    """Rows holding black label ink."""
    decoded = Image.open(io.BytesIO(image)).convert("RGB")
    width, height = decoded.size
    pixels = decoded.load()
    assert pixels is not None
    return [y for y in range(height) if any(pixels[x, y] == (0, 0, 0) for x in range(width))]


@pytest.mark.parametrize(("width", "height"), [(256, 256), (640, 480), (300, 1200)])
def test_the_label_is_drawn_at_least_five_percent_high(width: int, height: int) -> None:
    original = _png(width, height)
    labelled = draw_explicit_label(original)
    rows = _ink_rows(labelled)
    assert rows, "no label ink"
    assert max(rows) - min(rows) + 1 >= LABEL_MIN_HEIGHT_RATIO * min(width, height)
    assert min(rows) >= height * 0.8  # in the bottom band
    before = Image.open(io.BytesIO(original)).convert("RGB")
    after = Image.open(io.BytesIO(labelled)).convert("RGB")
    assert before.size == after.size
    # Outside the band nothing changed.
    assert (
        before.crop((0, 0, width, min(rows) - 8)).tobytes()
        == after.crop((0, 0, width, min(rows) - 8)).tobytes()
    )


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA"])
def test_greyscale_and_alpha_images_are_labelled(mode: str) -> None:
    colour = 128 if mode == "L" else ((128, 255) if mode == "LA" else (1, 2, 3, 40))
    labelled = draw_explicit_label(_png(256, 256, mode, colour))
    assert _ink_rows(labelled)
    assert Image.open(io.BytesIO(labelled)).mode == mode


def test_drawing_twice_gives_the_same_bytes() -> None:
    once = draw_explicit_label(_png(256, 256))
    assert draw_explicit_label(once) == once


def test_other_chunks_are_kept() -> None:
    original = _png(256, 256)
    body = b"c2pa manifest"
    chunk = struct.pack(">I", len(body)) + b"caBX" + body
    chunk += struct.pack(">I", zlib.crc32(b"caBX" + body))
    with_manifest = original[:33] + chunk + original[33:]
    labelled = draw_explicit_label(with_manifest)
    assert chunk in labelled


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(b"\xff\xd8\xff\xe0" + b"\x00" * 64, id="jpeg"),
        pytest.param(_png(1, 1), id="too-small"),
        pytest.param(_png(256, 256, "P", 3), id="palette"),
    ],
)
def test_a_label_that_cannot_be_drawn_fails_closed(image: bytes) -> None:
    with pytest.raises(ImageMarkError) as caught:
        draw_explicit_label(image)
    assert caught.value.code.startswith("image_")


def test_a_marked_response_carries_the_visible_label_and_the_metadata() -> None:
    original = _png(256, 256)
    body = json.dumps(
        {"predictions": [{"image_bytes": {"b64": base64.b64encode(original).decode()}}]}
    ).encode()
    marks = (AigcImplicitLabel(content_producer="op", produce_id="d-1"), ExplicitLabel())
    marked, paths = mark_predict_response(body, marks)
    assert paths == ("predictions[0].image_bytes.b64",)
    image = base64.b64decode(json.loads(marked)["predictions"][0]["image_bytes"]["b64"])
    assert _ink_rows(image)  # the pixels changed: the label is really there
    found = read_marks(image)
    assert found["aigc"] is not None and found["aigc"]["Label"] == "1"


def test_policy_check_refuses_saying_applied_without_drawing(tmp_path: object) -> None:
    from pathlib import Path

    from gateway.policy import load_policy_set

    root = Path(str(tmp_path))
    shipped = Path(__file__).resolve().parents[2] / "policies" / "vocabulary.yaml"
    (root / "vocabulary.yaml").write_text(shipped.read_text(encoding="utf-8"), encoding="utf-8")
    (root / "pack.yaml").write_text(
        """
kind: pack
version: 1
id: p
regime: CN-LABEL-2025
rules:
  - id: says-applied
    stage: output
    effect: obligate
    when: {model.kind: generative}
    basis: [{ref: "Art. 4"}]
    obligations:
      headers: {X-AIGC-Explicit-Label: applied}
""",
        encoding="utf-8",
    )
    result = load_policy_set([root])
    assert result.policy_set is None
    assert any("without drawing the label" in d.message for d in result.diagnostics)
