"""Marks on generated content: the plan from policy obligations, and the image writers.

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
