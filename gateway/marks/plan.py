"""The marks a policy asks for and the plan of what to write into one image.

A mark obligation names a scheme (IPTC digital source type, the GB 45438-2025 implicit
label, the visible CN label); `marks_for_obligations` turns a decision's obligations into
marks, and `Plan` merges them into the one set of metadata values each container writer
(`png`, `jpeg`, `webp`) writes. Pure: no aiohttp, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, NamedTuple, Protocol, TypedDict

from gateway.errors import GatewayError

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
    "build_marks",
    "marks_for_obligations",
]


#: Image-mark schemes of the policy language that this module writes into metadata.
MARK_IPTC_DIGITAL_SOURCE_TYPE: Final = "iptc_digital_source_type"
MARK_CN_AIGC_IMPLICIT_LABEL: Final = "cn_aigc_implicit_label"
#: The visible (explicit) CN label is drawn on the pixels, not written here.
MARK_CN_AIGC_EXPLICIT_LABEL: Final = "cn_aigc_explicit_label"
#: GB 45438-2025 implicit-label fields, in the order the standard lists them.
AIGC_FIELDS: Final = (
    "Label",
    "ContentProducer",
    "ProduceID",
    "ReservedCode1",
    "ContentPropagator",
    "PropagateID",
    "ReservedCode2",
)


ImageFormat = Literal["png", "jpeg", "webp"]
_AIGC_VALUE_MAX: Final = 1024
_AIGC_LABELS: Final = frozenset({"1", "2", "3"})  # GB 45438: generated / possibly / suspected
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")


class ImageMarkError(GatewayError):
    """An image or response could not be marked safely; the gateway fails closed.

    `code` is a stable machine-readable reason; `http_status` is what the gateway answers
    when a backend's output cannot be marked (the fault lies upstream of the gateway).
    """

    http_status: int = 502

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class DigitalSourceType(StrEnum):
    """IPTC digital source type values that declare AI-generated or manipulated media."""

    TRAINED_ALGORITHMIC_MEDIA = (
        "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    )
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
        "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
    )

    @classmethod
    def parse(cls, value: str) -> DigitalSourceType:
        """Accept the full IPTC URI or its last segment (`trainedAlgorithmicMedia`)."""
        for member in cls:
            if value in (member.value, member.value.rsplit("/", 1)[1]):
                return member
        known = ", ".join(m.value.rsplit("/", 1)[1] for m in cls)
        raise ImageMarkError(
            "image_mark_invalid", f"unknown digital source type `{value}` (known: {known})"
        )


@dataclass(frozen=True, slots=True)
class DigitalSourceTypeMark:
    """XMP `Iptc4xmpExt:DigitalSourceType` (EU AI Act Art. 50(2) machine-readable marking)."""

    source_type: DigitalSourceType = DigitalSourceType.TRAINED_ALGORITHMIC_MEDIA


@dataclass(frozen=True, slots=True)
class AigcImplicitLabel:
    """The GB 45438-2025 implicit label: the `AIGC` metadata object.

    `label` is "1" for AI-generated content. `content_producer` is the service provider's
    name or code, `produce_id` the unique content id (the decision id suits it).
    """

    content_producer: str
    produce_id: str
    label: str = "1"
    reserved_code1: str = ""
    content_propagator: str = ""
    propagate_id: str = ""
    reserved_code2: str = ""

    def __post_init__(self) -> None:
        if self.label not in _AIGC_LABELS:
            raise ImageMarkError(
                "image_mark_invalid", f"AIGC Label must be 1, 2 or 3, got `{self.label}`"
            )
        if not self.content_producer or not self.produce_id:
            raise ImageMarkError(
                "image_mark_invalid", "AIGC ContentProducer and ProduceID must not be empty"
            )
        for name, value in self.fields().items():
            if len(value) > _AIGC_VALUE_MAX or _CONTROL_CHARS.search(value):
                raise ImageMarkError(
                    "image_mark_invalid",
                    f"AIGC {name} must be at most {_AIGC_VALUE_MAX} characters "
                    "without control characters",
                )

    def fields(self) -> dict[str, str]:
        """The label as the standard's field names, in the standard's order."""
        return dict(
            zip(
                AIGC_FIELDS,
                (
                    self.label,
                    self.content_producer,
                    self.produce_id,
                    self.reserved_code1,
                    self.content_propagator,
                    self.propagate_id,
                    self.reserved_code2,
                ),
                strict=True,
            )
        )


@dataclass(frozen=True, slots=True)
class ExplicitLabel:
    """The visible CN label (Labelling Measures Art. 4; GB 45438-2025): `AI生成` drawn in a
    band in the bottom-left corner, the text at least 5% of the image's shorter side high."""

    text: str = "AI生成"


Mark = DigitalSourceTypeMark | AigcImplicitLabel | ExplicitLabel


def build_marks(
    kinds: Iterable[str],
    *,
    source_type: DigitalSourceType | str = DigitalSourceType.TRAINED_ALGORITHMIC_MEDIA,
    content_producer: str = "",
    produce_id: str = "",
    content_propagator: str = "",
    propagate_id: str = "",
) -> tuple[Mark, ...]:
    """Turn mark scheme names (`iptc_digital_source_type`, `cn_aigc_implicit_label`) into marks.

    `source_type` is the IPTC value to declare (`compositeWithTrainedAlgorithmicMedia` for a
    model that substantially alters an input image); the AIGC label needs the provider's
    `content_producer` and a unique `produce_id`. Hyphenated spellings are accepted too.
    """
    marks: list[Mark] = []
    for kind in dict.fromkeys(k.replace("-", "_") for k in kinds):
        if kind == MARK_IPTC_DIGITAL_SOURCE_TYPE:
            parsed = (
                source_type
                if isinstance(source_type, DigitalSourceType)
                else DigitalSourceType.parse(source_type)
            )
            marks.append(DigitalSourceTypeMark(parsed))
        elif kind == MARK_CN_AIGC_IMPLICIT_LABEL:
            marks.append(
                AigcImplicitLabel(
                    content_producer=content_producer,
                    produce_id=produce_id,
                    content_propagator=content_propagator,
                    propagate_id=propagate_id,
                )
            )
        else:
            raise ImageMarkError("image_mark_unknown", f"unknown image mark `{kind}`")
    return tuple(marks)


class MarkObligation(Protocol):
    """An image-mark obligation as the policy engine's decision carries it."""

    @property
    def scheme(self) -> str: ...
    @property
    def value(self) -> str | None: ...
    @property
    def fields(self) -> tuple[tuple[str, str], ...]: ...


# Attribute names of AigcImplicitLabel by GB 45438 field name; ProduceID is left out
# because it must be unique per generated image, so a policy cannot fix it.
_AIGC_SETTABLE: Final = {
    "Label": "label",
    "ContentProducer": "content_producer",
    "ReservedCode1": "reserved_code1",
    "ContentPropagator": "content_propagator",
    "PropagateID": "propagate_id",
    "ReservedCode2": "reserved_code2",
}


def marks_for_obligations(
    obligations: Iterable[MarkObligation],
    *,
    content_producer: str,
    produce_id: str,
    content_propagator: str = "",
    propagate_id: str = "",
    substantially_alters_input: bool = False,
) -> tuple[Mark, ...]:
    """The metadata marks a decision's `image_marks` obligations ask for.

    An `iptc_digital_source_type` obligation's `value` picks the IPTC code; without one it
    is `compositeWithTrainedAlgorithmicMedia` for a model that substantially alters its
    input image (the model attribute `substantially_alters_input`), else
    `trainedAlgorithmicMedia`. A `cn_aigc_implicit_label` obligation's `fields` may set
    any GB 45438 field but `ProduceID`, which is `produce_id` (the decision id suits it);
    the keyword arguments fill the rest. `cn_aigc_explicit_label` is the visible label
    (`ExplicitLabel`), drawn on the pixels.
    """
    marks: list[Mark] = []
    for obligation in obligations:
        if obligation.scheme == MARK_CN_AIGC_EXPLICIT_LABEL:
            marks.append(ExplicitLabel())
            continue
        if obligation.scheme == MARK_IPTC_DIGITAL_SOURCE_TYPE:
            value = obligation.value or (
                DigitalSourceType.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
                if substantially_alters_input
                else DigitalSourceType.TRAINED_ALGORITHMIC_MEDIA
            )
            marks.append(DigitalSourceTypeMark(DigitalSourceType.parse(value)))
        elif obligation.scheme == MARK_CN_AIGC_IMPLICIT_LABEL:
            values = {
                "content_producer": content_producer,
                "content_propagator": content_propagator,
                "propagate_id": propagate_id,
            }
            for name, text in obligation.fields:
                if name not in _AIGC_SETTABLE:
                    raise ImageMarkError(
                        "image_mark_invalid", f"AIGC field `{name}` cannot be set by a policy"
                    )
                values[_AIGC_SETTABLE[name]] = text
            marks.append(AigcImplicitLabel(produce_id=produce_id, **values))
        else:
            raise ImageMarkError("image_mark_unknown", f"unknown image mark `{obligation.scheme}`")
    return tuple(marks)


class ImageMarks(TypedDict):
    """What `read_marks` finds in an image's metadata."""

    format: ImageFormat
    xmp: bool
    digital_source_type: str | None
    aigc: dict[str, str] | None
    """The AIGC label carried in the XMP packet."""
    aigc_text_chunk: dict[str, str] | None
    """PNG only: the AIGC label carried in its own `AIGC` text chunk."""


class MarkedResponse(NamedTuple):
    """A predict response body with its images marked, and the JSON paths that changed."""

    body: bytes
    paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """The one set of values to write into an image, merged from its marks."""

    source_type: str | None
    aigc: dict[str, str] | None

    @classmethod
    def of(cls, marks: Sequence[Mark]) -> Plan:
        """Merge `marks`; two different marks of one kind raise `ImageMarkError`."""
        source_types = {m.source_type.value for m in marks if isinstance(m, DigitalSourceTypeMark)}
        labels = {tuple(m.fields().items()) for m in marks if isinstance(m, AigcImplicitLabel)}
        if len(source_types) > 1 or len(labels) > 1:
            raise ImageMarkError("image_mark_conflict", "conflicting marks of the same kind")
        return cls(
            source_type=next(iter(source_types), None),
            aigc=dict(next(iter(labels))) if labels else None,
        )


def merge_aigc(existing: dict[str, str] | None, ours: dict[str, str]) -> dict[str, str]:
    """Ours fills only what the existing label leaves empty (Labelling Measures Art. 10)."""
    if existing is None:
        return dict(ours)
    merged = {name: existing.get(name) or ours[name] for name in AIGC_FIELDS}
    # Fields a later guide adds (e.g. TC260's signed SecurityData) are carried over.
    merged.update((k, v) for k, v in existing.items() if k not in merged)
    return merged


def aigc_json(fields: dict[str, str]) -> str:
    """The GB 45438 implicit label as the compact JSON text the standard shows."""
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def parse_aigc_json(text: str) -> dict[str, str]:
    """The fields of an `AIGC` JSON label; anything else raises `ImageMarkError`."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ImageMarkError("image_metadata_malformed", "AIGC label is not JSON") from None
    if not isinstance(value, dict):
        raise ImageMarkError("image_metadata_malformed", "AIGC label is not a JSON object")
    fields: dict[str, str] = {}
    for key, item in value.items():
        # Some writers emit Label as a number; the standard's values are strings.
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ImageMarkError("image_metadata_malformed", f"AIGC field `{key}` is not a string")
        fields[str(key)] = str(item)
    return fields
