"""The visible CN label (GB 45438-2025: text at least 5% of the shorter side high).

Drawn on PNG images only: the image data is decoded with Pillow, the label is drawn on the
samples and the image data is re-encoded losslessly; every other chunk is kept as it was.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from gateway.marks.container import PNG_SIGNATURE, detect_format
from gateway.marks.plan import ExplicitLabel, ImageMarkError
from gateway.marks.png import PngFile, png_chunk

__all__ = ["draw_explicit_label"]


#: 16x16 glyphs of the label text; ink spans rows 1-14 (`_GLYPH_INK` rows high).
_GLYPHS: Final[dict[str, tuple[str, ...]]] = {
    "A": (
        "................", ".......##.......", "......####......", "......#..#......",
        ".....##..##.....", ".....#....#.....", "....##....##....", "....#......#....",
        "...##########...", "...#........#...", "..##........##..", "..#..........#..",
        ".##..........##.", ".#............#.", ".#............#.", "................",
    ),
    "I": (
        "................", ".....######.....", ".......##.......", ".......##.......",
        ".......##.......", ".......##.......", ".......##.......", ".......##.......",
        ".......##.......", ".......##.......", ".......##.......", ".......##.......",
        ".......##.......", ".......##.......", ".....######.....", "................",
    ),
    "生": (
        "................", "....#...#.......", "....#...#.......", "...#....#.......",
        "...###########..", "..#.....#.......", ".#......#.......", "........#.......",
        "........#.......", "..###########...", "........#.......", "........#.......",
        "........#.......", "........#.......", ".##############.", "................",
    ),
    "成": (
        "................", "..........#.#...", "..........#..#..", ".##############.",
        ".#.........#....", ".#.........#..#.", ".#.........#.#..", ".#####.....##...",
        ".#...#.....#....", ".#...#....##....", ".#...#...#..#...", ".#.#.#..#....#..",
        "#...##........#.", "#..............#", "#...............", "................",
    ),
}  # fmt: skip


_GLYPH_SIZE: Final = 16
_GLYPH_INK: Final = 14
#: GB 45438-2025: the text of an image's explicit label is at least 5% of the shorter side.
LABEL_MIN_HEIGHT_RATIO: Final = 0.05
_MAX_LABEL_PIXELS: Final = 40_000_000
_CHANNELS: Final = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_PIL_MODES: Final = {0: "L", 2: "RGB", 4: "LA", 6: "RGBA"}


def label_scale(width: int, height: int) -> int:
    """The glyph scale that makes the label text at least 5% of the shorter side high."""
    needed = LABEL_MIN_HEIGHT_RATIO * min(width, height)
    return max(1, -(-int(needed * 1000) // (_GLYPH_INK * 1000)))


_DEFAULT_LABEL: Final = ExplicitLabel()


def draw_explicit_label(image: bytes, label: ExplicitLabel = _DEFAULT_LABEL) -> bytes:
    """Draw `label` in a white band in the bottom-left corner of a PNG image.

    Only the image data changes (re-encoded losslessly, non-interlaced); every other chunk,
    metadata included, is kept in place. Other formats, and images too small to hold a
    legible label, raise `ImageMarkError`: a label that cannot be drawn fails closed.
    """
    fmt = detect_format(image)
    if fmt != "png":
        raise ImageMarkError(
            "image_label_unsupported",
            f"a visible label can only be drawn on PNG images, not {fmt or 'this format'}",
        )
    png = PngFile.parse(image)
    ihdr_start = png.chunks[0][1] + 8
    width, height, depth, colour, _comp, _filter, _interlace = struct.unpack_from(
        ">IIBBBBB", image, ihdr_start
    )
    if depth != 8 or colour not in _CHANNELS:
        raise ImageMarkError(
            "image_label_unsupported",
            "a visible label can be drawn on 8-bit greyscale or RGB(A) PNG images only",
        )
    if width * height > _MAX_LABEL_PIXELS:
        raise ImageMarkError("image_label_unsupported", "image too large to label")
    scale = label_scale(width, height)
    pad = 2 * scale
    glyphs = [_GLYPHS.get(ch) for ch in label.text]
    if any(g is None for g in glyphs):
        raise ImageMarkError("image_mark_invalid", f"no glyph for a character of {label.text!r}")
    band_w = len(glyphs) * _GLYPH_SIZE * scale + 2 * pad
    band_h = _GLYPH_SIZE * scale + 2 * pad
    if band_w > width or band_h > height:
        raise ImageMarkError(
            "image_label_unsupported",
            f"a {width}x{height} image cannot hold a legible label ({band_w}x{band_h} needed)",
        )
    channels = _CHANNELS[colour]
    pixels = bytearray(_decode_png_pixels(image, _PIL_MODES[colour], width * height * channels))
    white = bytes([255] * channels)
    black = bytes([0] * (channels - (1 if colour in (4, 6) else 0))) + (
        b"\xff" if colour in (4, 6) else b""
    )
    stride = width * channels
    top = height - band_h
    for y in range(top, height):
        start = y * stride
        pixels[start : start + band_w * channels] = white * band_w
    for k, glyph in enumerate(glyphs):
        assert glyph is not None
        left = pad + k * _GLYPH_SIZE * scale
        for gy, row in enumerate(glyph):
            run = b"".join(black * scale if c == "#" else white * scale for c in row)
            for dy in range(scale):
                start = (top + pad + gy * scale + dy) * stride + left * channels
                pixels[start : start + len(run)] = run
    raw = b"".join(b"\x00" + bytes(pixels[y * stride : (y + 1) * stride]) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return _with_image_data(png, image, ihdr, raw)


def _with_image_data(png: PngFile, image: bytes, ihdr: bytes, raw: bytes) -> bytes:
    """`image` with a new IHDR and its image data re-encoded from the filtered rows `raw`
    (one IDAT where the first was); every other chunk is copied as it was."""
    out = [PNG_SIGNATURE]
    idat_written = False
    for ctype, start, end in png.chunks:
        if ctype == b"IHDR":
            out.append(png_chunk(b"IHDR", ihdr))
        elif ctype == b"IDAT":
            if not idat_written:
                out.append(png_chunk(b"IDAT", zlib.compress(raw, 6)))
                idat_written = True
        else:
            out.append(image[start:end])
    return b"".join(out)


def _decode_png_pixels(image: bytes, mode: str, size: int) -> bytes:
    """The unfiltered samples of a PNG, row by row (Pillow decodes; nothing is re-saved)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(image), formats=["PNG"]) as decoded:
            decoded.load()
            if decoded.mode != mode:
                raise ImageMarkError(
                    "image_label_unsupported", f"PNG decodes as {decoded.mode}, not {mode}"
                )
            data = decoded.tobytes()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        message = f"PNG image data cannot be decoded: {exc}"
        raise ImageMarkError("image_malformed", message) from None
    if len(data) != size:
        raise ImageMarkError("image_malformed", "PNG image data has an unexpected size")
    return data
