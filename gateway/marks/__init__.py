"""Machine-readable provenance marks in a generated image's own metadata.

This is the one place where the gateway changes a response body: EU AI Act Art. 50(2) asks
for AI-generated images to be marked in a machine-readable way, and the CN Labelling
Measures (Art. 5, GB 45438-2025) ask for an implicit label in the file metadata.

Invariants:

1. Metadata marks never decode or re-encode pixels. PNG image-data chunks, the JPEG
   entropy-coded scan and the WebP bitstream are copied byte for byte; only metadata chunks
   or segments are added or replaced. (A Pillow re-save would keep the pixels but drop
   chunks it does not know, such as a C2PA `caBX` manifest, so the containers are edited
   directly.) The one exception is the visible CN label (`ExplicitLabel`), which must change
   pixels: it is drawn on PNG images only, whose image data is re-encoded losslessly while
   every other chunk is kept as it was; any other format fails closed.
2. An existing GB 45438 `AIGC` label keeps every non-empty field it has: the Labelling
   Measures Art. 10 forbid removing or forging labels, so ours only fills empty fields.
   Other XMP properties already present are kept.
3. Applying the same marks twice yields the same bytes as applying them once.
4. Input that cannot be parsed with certainty raises `ImageMarkError`, never anything else;
   the gateway fails closed on it.

Modules: `plan` (the marks a policy asks for), `container` (which image format), `xmp`,
`png`, `jpeg`, `webp` (the metadata writers), `label` (the visible CN label), `image` (one
image), `response` (every image in a TF Serving predict response). Pure: no aiohttp, no I/O.
"""

from __future__ import annotations

from gateway.marks.container import detect_format
from gateway.marks.image import apply_marks, read_marks
from gateway.marks.label import draw_explicit_label
from gateway.marks.plan import (
    AIGC_FIELDS,
    MARK_CN_AIGC_EXPLICIT_LABEL,
    MARK_CN_AIGC_IMPLICIT_LABEL,
    MARK_IPTC_DIGITAL_SOURCE_TYPE,
    AigcImplicitLabel,
    DigitalSourceType,
    DigitalSourceTypeMark,
    ExplicitLabel,
    ImageFormat,
    ImageMarkError,
    ImageMarks,
    Mark,
    MarkedResponse,
    MarkObligation,
    build_marks,
    marks_for_obligations,
)
from gateway.marks.response import mark_predict_response

__all__ = [
    "AIGC_FIELDS",
    "AigcImplicitLabel",
    "DigitalSourceType",
    "DigitalSourceTypeMark",
    "ExplicitLabel",
    "ImageFormat",
    "ImageMarkError",
    "ImageMarks",
    "MARK_CN_AIGC_EXPLICIT_LABEL",
    "MARK_CN_AIGC_IMPLICIT_LABEL",
    "MARK_IPTC_DIGITAL_SOURCE_TYPE",
    "Mark",
    "MarkObligation",
    "MarkedResponse",
    "apply_marks",
    "build_marks",
    "detect_format",
    "draw_explicit_label",
    "mark_predict_response",
    "marks_for_obligations",
    "read_marks",
]
