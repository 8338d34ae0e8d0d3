"""Marking one image: `apply_marks` and `read_marks` dispatch on its container."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.marks.container import describe_unsupported, detect_format
from gateway.marks.jpeg import JpegFile, mark_jpeg
from gateway.marks.plan import ImageMarkError, ImageMarks, Mark, Plan, parse_aigc_json
from gateway.marks.png import PngFile, mark_png
from gateway.marks.webp import WebpFile, mark_webp
from gateway.marks.xmp import find_rdf, parse_xmp, read_xmp_marks

__all__ = ["apply_marks", "read_marks"]


def apply_marks(image: bytes, marks: Sequence[Mark]) -> bytes:
    """Return `image` with `marks` written into its metadata; pixels stay byte-identical."""
    plan = Plan.of(marks)
    fmt = detect_format(image)
    if fmt == "png":
        return mark_png(image, plan)
    if fmt == "jpeg":
        return mark_jpeg(image, plan)
    if fmt == "webp":
        return mark_webp(image, plan)
    raise ImageMarkError("image_unsupported", describe_unsupported(image))


def read_marks(image: bytes) -> ImageMarks:
    """Parse the provenance marks back out of an image (for tests and auditors)."""
    fmt = detect_format(image)
    aigc_text: dict[str, str] | None = None
    if fmt == "png":
        png = PngFile.parse(image)
        xmp_packet = png.xmp
        if png.aigc_text is not None:
            aigc_text = parse_aigc_json(png.aigc_text)
    elif fmt == "jpeg":
        xmp_packet = JpegFile.parse(image).xmp
    elif fmt == "webp":
        xmp_packet = WebpFile.parse(image).xmp
    else:
        raise ImageMarkError("image_unsupported", describe_unsupported(image))
    source_type: str | None = None
    aigc: dict[str, str] | None = None
    if xmp_packet is not None:
        source_type, aigc = read_xmp_marks(find_rdf(parse_xmp(xmp_packet)))
    return ImageMarks(
        format=fmt,
        xmp=xmp_packet is not None,
        digital_source_type=source_type,
        aigc=aigc,
        aigc_text_chunk=aigc_text,
    )
