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

The module is pure: no aiohttp, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, NamedTuple, Protocol, TypedDict

from gateway.errors import GatewayError

__all__ = [
    "AIGC_FIELDS",
    "MARK_CN_AIGC_EXPLICIT_LABEL",
    "MARK_CN_AIGC_IMPLICIT_LABEL",
    "MARK_IPTC_DIGITAL_SOURCE_TYPE",
    "AigcImplicitLabel",
    "DigitalSourceType",
    "ExplicitLabel",
    "DigitalSourceTypeMark",
    "ImageFormat",
    "ImageMarkError",
    "ImageMarks",
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

_NS_X: Final = "adobe:ns:meta/"
_NS_RDF: Final = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_NS_IPTC_EXT: Final = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
_NS_TC260: Final = "http://www.tc260.org.cn/ns/AIGC/1.0/"
_TAG_RDF: Final = f"{{{_NS_RDF}}}RDF"
_TAG_DESCRIPTION: Final = f"{{{_NS_RDF}}}Description"
_ATTR_ABOUT: Final = f"{{{_NS_RDF}}}about"
_ATTR_RESOURCE: Final = f"{{{_NS_RDF}}}resource"
_TAG_SOURCE_TYPE: Final = f"{{{_NS_IPTC_EXT}}}DigitalSourceType"
_TAG_AIGC: Final = f"{{{_NS_TC260}}}AIGC"

# Prefixes readers expect (`Iptc4xmpExt:DigitalSourceType`, `TC260:AIGC`); registering the
# conventional prefixes of standard namespaces is the documented ElementTree way to get them.
for _prefix, _uri in (
    ("x", _NS_X),
    ("rdf", _NS_RDF),
    ("Iptc4xmpExt", _NS_IPTC_EXT),
    ("TC260", _NS_TC260),
):
    ET.register_namespace(_prefix, _uri)

_XPACKET_BEGIN: Final = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
_XPACKET_END: Final = '<?xpacket end="w"?>'
_XMP_PNG_KEYWORD: Final = b"XML:com.adobe.xmp"
_AIGC_PNG_KEYWORD: Final = b"AIGC"
_XMP_JPEG_HEADER: Final = b"http://ns.adobe.com/xap/1.0/\x00"

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_MAX_CHUNK: Final = 0x7FFFFFFF  # PNG spec: a chunk length is at most 2^31 - 1
_MAX_METADATA_TEXT: Final = 1 << 20  # bound on XMP or text we decompress or parse
_JPEG_MAX_SEGMENT_PAYLOAD: Final = 0xFFFF - 2
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


# ---------------------------------------------------------------------------------------
# Public entry points


def detect_format(image: bytes) -> ImageFormat | None:
    """The container format by its signature, or None when it is not one we can mark."""
    if image.startswith(_PNG_SIGNATURE):
        return "png"
    if image.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(image) >= 12 and image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "webp"
    return None


def apply_marks(image: bytes, marks: Sequence[Mark]) -> bytes:
    """Return `image` with `marks` written into its metadata; pixels stay byte-identical."""
    plan = _Plan.of(marks)
    fmt = detect_format(image)
    if fmt == "png":
        return _mark_png(image, plan)
    if fmt == "jpeg":
        return _mark_jpeg(image, plan)
    if fmt == "webp":
        return _mark_webp(image, plan)
    raise ImageMarkError("image_unsupported", _describe_unsupported(image))


def read_marks(image: bytes) -> ImageMarks:
    """Parse the provenance marks back out of an image (for tests and auditors)."""
    fmt = detect_format(image)
    aigc_text: dict[str, str] | None = None
    if fmt == "png":
        png = _PngFile.parse(image)
        xmp_packet = png.xmp
        if png.aigc_text is not None:
            aigc_text = _parse_aigc_json(png.aigc_text)
    elif fmt == "jpeg":
        xmp_packet = _JpegFile.parse(image).xmp
    elif fmt == "webp":
        xmp_packet = _WebpFile.parse(image).xmp
    else:
        raise ImageMarkError("image_unsupported", _describe_unsupported(image))
    source_type: str | None = None
    aigc: dict[str, str] | None = None
    if xmp_packet is not None:
        source_type, aigc = _read_xmp_marks(_find_rdf(_parse_xmp(xmp_packet)))
    return ImageMarks(
        format=fmt,
        xmp=xmp_packet is not None,
        digital_source_type=source_type,
        aigc=aigc,
        aigc_text_chunk=aigc_text,
    )


def mark_predict_response(
    body: bytes, marks: Sequence[Mark], *, require_image: bool = True
) -> MarkedResponse:
    """Mark every image in a TF Serving predict response; everything else keeps its bytes.

    Images are the `{"b64": ...}` values under `predictions` (row format, e.g.
    `predictions[0].image_bytes.b64`) or `outputs` (columnar) whose bytes are PNG, JPEG or
    WebP. Other binary outputs are left alone; an image in a format that cannot carry our
    marks raises. The body is edited in place rather than re-serialised, because TF
    Serving's float layout and its bare `NaN` tokens must reach the client unchanged.
    With `require_image`, a response without any image raises: a mark obligation that
    cannot be met fails closed.
    """
    try:
        text = body.decode("utf-8")
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ImageMarkError("response_malformed", f"predict response is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ImageMarkError("response_malformed", "predict response is not a JSON object")

    replacements: dict[int, tuple[str, str]] = {}  # id() of a `{"b64": ...}` -> (old, new)
    paths: list[str] = []
    marked_cache: dict[str, str] = {}
    for root in ("predictions", "outputs"):
        if root not in document:
            continue
        for path, holder in _b64_objects(document[root], root):
            old = holder["b64"]
            assert isinstance(old, str)
            new = marked_cache.get(old)
            if new is None:
                new = _mark_b64(old, path, marks)
                if new is None:
                    continue
                marked_cache[old] = new
            replacements[id(holder)] = (old, new)
            paths.append(f"{path}.b64")
    if not paths:
        if require_image:
            raise ImageMarkError(
                "image_mark_no_image", "the predict response holds no image that can be marked"
            )
        return MarkedResponse(body, ())
    return MarkedResponse(_splice_strings(body, document, replacements), tuple(paths))


# ---------------------------------------------------------------------------------------
# What to write


@dataclass(frozen=True, slots=True)
class _Plan:
    source_type: str | None
    aigc: dict[str, str] | None

    @classmethod
    def of(cls, marks: Sequence[Mark]) -> _Plan:
        source_types = {m.source_type.value for m in marks if isinstance(m, DigitalSourceTypeMark)}
        labels = {tuple(m.fields().items()) for m in marks if isinstance(m, AigcImplicitLabel)}
        if len(source_types) > 1 or len(labels) > 1:
            raise ImageMarkError("image_mark_conflict", "conflicting marks of the same kind")
        return cls(
            source_type=next(iter(source_types), None),
            aigc=dict(next(iter(labels))) if labels else None,
        )


def _merge_aigc(existing: dict[str, str] | None, ours: dict[str, str]) -> dict[str, str]:
    """Ours fills only what the existing label leaves empty (Labelling Measures Art. 10)."""
    if existing is None:
        return dict(ours)
    merged = {name: existing.get(name) or ours[name] for name in AIGC_FIELDS}
    # Fields a later guide adds (e.g. TC260's signed SecurityData) are carried over.
    merged.update((k, v) for k, v in existing.items() if k not in merged)
    return merged


def _aigc_json(fields: dict[str, str]) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def _parse_aigc_json(text: str) -> dict[str, str]:
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


# ---------------------------------------------------------------------------------------
# XMP


class _DtdRefused(Exception):
    """Raised from inside the XML parser when the packet declares a document type."""


class _NoDtdTreeBuilder(ET.TreeBuilder):
    """A tree builder whose parser stops at the first `<!DOCTYPE`.

    The XML parser calls `doctype` when it meets the declaration, after decoding the
    packet in whatever encoding it declares, and before any entity in its internal subset
    is defined, so no entity is ever expanded.
    """

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise _DtdRefused


def _parse_xmp(packet: bytes) -> ET.Element:
    if len(packet) > _MAX_METADATA_TEXT:
        raise ImageMarkError("image_metadata_malformed", "XMP packet is too large")
    # SECURITY: XMP never needs a DTD; the parser itself refuses one (a byte pattern would
    # miss a UTF-16 or UTF-32 packet), which rules out entity expansion tricks.
    parser = ET.XMLParser(target=_NoDtdTreeBuilder())
    try:
        parser.feed(packet)
        root: ET.Element = parser.close()
    except _DtdRefused:
        raise ImageMarkError("image_metadata_malformed", "XMP packet declares a DTD") from None
    except (ET.ParseError, ValueError) as exc:
        # ValueError: an encoding the parser cannot read (such as UTF-32).
        raise ImageMarkError("image_metadata_malformed", f"XMP packet is not XML: {exc}") from None
    return root


def _find_rdf(root: ET.Element) -> ET.Element:
    if root.tag == _TAG_RDF:
        return root
    rdf = next(root.iter(_TAG_RDF), None)
    if rdf is None:
        raise ImageMarkError("image_metadata_malformed", "XMP packet has no rdf:RDF element")
    return rdf


def _property(desc: ET.Element, tag: str) -> list[str]:
    """Values of a simple property, written as an attribute or as an element."""
    values: list[str] = []
    if tag in desc.attrib:
        values.append(desc.attrib[tag])
    for child in desc.findall(tag):
        resource = child.get(_ATTR_RESOURCE)
        values.append(resource if resource is not None else (child.text or "").strip())
    return values


def _read_xmp_marks(rdf: ET.Element) -> tuple[str | None, dict[str, str] | None]:
    source_types: list[str] = []
    labels: list[str] = []
    for desc in rdf.findall(_TAG_DESCRIPTION):
        source_types += _property(desc, _TAG_SOURCE_TYPE)
        labels += _property(desc, _TAG_AIGC)
    if len(set(source_types)) > 1 or len(set(labels)) > 1:
        raise ImageMarkError("image_metadata_malformed", "XMP packet holds conflicting marks")
    aigc = _parse_aigc_json(labels[0]) if labels else None
    return (source_types[0] if source_types else None), aigc


def _strip_property(desc: ET.Element, tag: str) -> None:
    desc.attrib.pop(tag, None)
    for child in desc.findall(tag):
        desc.remove(child)


def _merged_xmp(
    existing: bytes | None, plan: _Plan, extra_aigc: dict[str, str] | None
) -> tuple[bytes, dict[str, str] | None]:
    """Write the plan into an XMP packet (new or existing); return it and the AIGC label used.

    Our properties go into one `rdf:Description` appended last; descriptions emptied by
    removing an older copy of them are dropped, which makes a second application a no-op.
    """
    if existing is None:
        root = ET.Element(f"{{{_NS_X}}}xmpmeta")
        rdf = ET.SubElement(root, _TAG_RDF)
        old_aigc: dict[str, str] | None = None
    else:
        root = _parse_xmp(existing)
        rdf = _find_rdf(root)
        _, old_aigc = _read_xmp_marks(rdf)
    if old_aigc is not None and extra_aigc is not None and old_aigc != extra_aigc:
        _check_compatible(old_aigc, extra_aigc)
    old_aigc = old_aigc if old_aigc is not None else extra_aigc
    aigc = _merge_aigc(old_aigc, plan.aigc) if plan.aigc is not None else old_aigc

    for desc in rdf.findall(_TAG_DESCRIPTION):
        if plan.source_type is not None:
            _strip_property(desc, _TAG_SOURCE_TYPE)
        if plan.aigc is not None:
            _strip_property(desc, _TAG_AIGC)
        if len(desc) == 0 and set(desc.attrib) <= {_ATTR_ABOUT} and not (desc.text or "").strip():
            rdf.remove(desc)
    if plan.source_type is not None or plan.aigc is not None:
        ours = ET.SubElement(rdf, _TAG_DESCRIPTION, {_ATTR_ABOUT: ""})
        if plan.source_type is not None:
            ET.SubElement(ours, _TAG_SOURCE_TYPE).text = plan.source_type
        if plan.aigc is not None and aigc is not None:
            ET.SubElement(ours, _TAG_AIGC).text = _aigc_json(aigc)
    for element in root.iter():
        # Whitespace-only text and tails are layout, not data; dropping them keeps the
        # serialisation stable from one application to the next.
        if element.text is not None and not element.text.strip() and len(element):
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    packet = _XPACKET_BEGIN + ET.tostring(root, encoding="unicode") + _XPACKET_END
    return packet.encode("utf-8"), aigc


def _check_compatible(a: dict[str, str], b: dict[str, str]) -> None:
    for key in a.keys() & b.keys():
        if a[key] and b[key] and a[key] != b[key]:
            raise ImageMarkError(
                "image_metadata_malformed",
                f"the image carries two AIGC labels that differ in `{key}`",
            )


# ---------------------------------------------------------------------------------------
# PNG


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png_itxt(keyword: bytes, text: str) -> bytes:
    # keyword, NUL, compression flag 0, method 0, empty language tag and translated keyword
    return _png_chunk(b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def _inflate(data: bytes, what: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, _MAX_METADATA_TEXT + 1)
    except zlib.error:
        raise ImageMarkError("image_malformed", f"{what} does not inflate") from None
    if len(out) > _MAX_METADATA_TEXT or inflater.unconsumed_tail:
        raise ImageMarkError("image_malformed", f"{what} inflates past {_MAX_METADATA_TEXT} bytes")
    return out


def _png_text(ctype: bytes, data: bytes) -> tuple[bytes, str] | None:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk; None for other chunks."""
    if ctype not in (b"tEXt", b"zTXt", b"iTXt"):
        return None
    keyword, sep, rest = data.partition(b"\x00")
    if not sep or not 1 <= len(keyword) <= 79:
        raise ImageMarkError("image_malformed", f"PNG {ctype.decode()} chunk has a bad keyword")
    try:
        if ctype == b"tEXt":
            return keyword, rest.decode("latin-1")
        if ctype == b"zTXt":
            if rest[:1] != b"\x00":
                raise ImageMarkError("image_malformed", "PNG zTXt chunk has an unknown method")
            return keyword, _inflate(rest[1:], "PNG zTXt chunk").decode("latin-1")
        if len(rest) < 2:
            raise ImageMarkError("image_malformed", "PNG iTXt chunk is truncated")
        compressed, method = rest[0], rest[1]
        _language, sep1, rest = rest[2:].partition(b"\x00")
        _translated, sep2, text = rest.partition(b"\x00")
        if not (sep1 and sep2) or compressed not in (0, 1) or (compressed and method != 0):
            raise ImageMarkError("image_malformed", "PNG iTXt chunk header is malformed")
        if compressed:
            text = _inflate(text, "PNG iTXt chunk")
        return keyword, text.decode("utf-8")
    except UnicodeDecodeError:
        raise ImageMarkError("image_malformed", "PNG text chunk is not valid text") from None


@dataclass(slots=True)
class _PngFile:
    data: bytes
    chunks: list[tuple[bytes, int, int]]  # (type, start of chunk, end of chunk)
    xmp: bytes | None
    aigc_text: str | None

    @classmethod
    def parse(cls, data: bytes) -> _PngFile:
        if not data.startswith(_PNG_SIGNATURE):
            raise ImageMarkError("image_malformed", "not a PNG file")
        chunks: list[tuple[bytes, int, int]] = []
        xmp: bytes | None = None
        aigc_text: str | None = None
        pos = len(_PNG_SIGNATURE)
        while pos < len(data):
            if len(data) - pos < 12:
                raise ImageMarkError("image_malformed", f"PNG truncated at byte {pos}")
            length, ctype = struct.unpack_from(">I4s", data, pos)
            end = pos + 12 + length
            if length > _PNG_MAX_CHUNK or end > len(data):
                raise ImageMarkError(
                    "image_malformed", f"PNG chunk at byte {pos} claims {length} bytes past the end"
                )
            if not ctype.isalpha() or not ctype.isascii():
                raise ImageMarkError("image_malformed", f"PNG chunk at byte {pos} has a bad type")
            body = data[pos + 8 : end - 4]
            (crc,) = struct.unpack_from(">I", data, end - 4)
            if zlib.crc32(ctype + body) != crc:
                raise ImageMarkError("image_malformed", f"PNG {ctype.decode()} chunk fails its CRC")
            if not chunks and (ctype != b"IHDR" or length != 13):
                raise ImageMarkError("image_malformed", "PNG does not start with IHDR")
            text = _png_text(ctype, body)
            if text is not None and text[0] == _XMP_PNG_KEYWORD:
                if xmp is not None:
                    raise ImageMarkError("image_metadata_malformed", "PNG holds two XMP packets")
                xmp = text[1].encode("utf-8")
            elif text is not None and text[0] == _AIGC_PNG_KEYWORD:
                if aigc_text is not None:
                    raise ImageMarkError("image_metadata_malformed", "PNG holds two AIGC labels")
                aigc_text = text[1]
            chunks.append((ctype, pos, end))
            pos = end
            if ctype == b"IEND":
                break
        if not chunks or chunks[-1][0] != b"IEND":
            raise ImageMarkError("image_malformed", "PNG is truncated (no IEND chunk)")
        if pos != len(data):
            raise ImageMarkError("image_malformed", "PNG has data after its IEND chunk")
        if not any(c[0] == b"IDAT" for c in chunks):
            raise ImageMarkError("image_malformed", "PNG has no image data")
        return cls(data, chunks, xmp, aigc_text)


def _mark_png(image: bytes, plan: _Plan) -> bytes:
    png = _PngFile.parse(image)
    text_label = _parse_aigc_json(png.aigc_text) if png.aigc_text is not None else None
    packet, aigc = _merged_xmp(png.xmp, plan, text_label)
    inserted = [_png_itxt(_XMP_PNG_KEYWORD, packet.decode("utf-8"))]
    # Without an AIGC mark to apply, an AIGC chunk already present is left exactly as it is.
    replace_label = plan.aigc is not None and aigc is not None
    if replace_label and aigc is not None:
        inserted.append(_png_itxt(_AIGC_PNG_KEYWORD, _aigc_json(aigc)))
    out = [_PNG_SIGNATURE]
    for ctype, start, end in png.chunks:
        text = _png_text(ctype, image[start + 8 : end - 4])
        if text is not None and (
            text[0] == _XMP_PNG_KEYWORD or (replace_label and text[0] == _AIGC_PNG_KEYWORD)
        ):
            continue
        if ctype == b"IDAT" and inserted:
            # Metadata before the image data lets streaming readers see it first.
            out += inserted
            inserted = []
        out.append(image[start:end])
    return b"".join(out)


# ---------------------------------------------------------------------------------------
# JPEG

_JPEG_SOF: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


@dataclass(slots=True)
class _JpegFile:
    data: bytes
    segments: list[tuple[int, int, int, int]]  # (marker, start, payload start, end) before SOS
    scan_start: int  # the SOS segment and everything after it is copied untouched
    xmp: bytes | None

    @classmethod
    def parse(cls, data: bytes) -> _JpegFile:
        if not data.startswith(b"\xff\xd8"):
            raise ImageMarkError("image_malformed", "not a JPEG file")
        segments: list[tuple[int, int, int, int]] = []
        xmp: bytes | None = None
        seen_frame = False
        pos = 2
        while True:
            start = pos
            if pos >= len(data) or data[pos] != 0xFF:
                raise ImageMarkError("image_malformed", f"JPEG marker expected at byte {pos}")
            while pos < len(data) and data[pos] == 0xFF:  # fill bytes may precede a marker
                pos += 1
            if pos + 3 > len(data):
                raise ImageMarkError("image_malformed", "JPEG is truncated in its headers")
            marker = data[pos]
            if marker in (0x00, 0x01, 0xD8, 0xD9) or 0xD0 <= marker <= 0xD7:
                raise ImageMarkError(
                    "image_malformed", f"JPEG marker 0xFF{marker:02X} before the first scan"
                )
            (length,) = struct.unpack_from(">H", data, pos + 1)
            end = pos + 1 + length
            if length < 2 or end > len(data):
                raise ImageMarkError(
                    "image_malformed", f"JPEG segment at byte {start} overruns the file"
                )
            if marker == 0xDA:
                if not seen_frame:
                    raise ImageMarkError("image_malformed", "JPEG scan before its frame header")
                if data.find(b"\xff\xd9", end) == -1:
                    raise ImageMarkError("image_malformed", "JPEG is truncated (no end of image)")
                return cls(data, segments, start, xmp)
            seen_frame = seen_frame or marker in _JPEG_SOF
            payload = data[pos + 3 : end]
            if marker == 0xE1 and payload.startswith(_XMP_JPEG_HEADER):
                if xmp is not None:
                    raise ImageMarkError("image_metadata_malformed", "JPEG holds two XMP packets")
                xmp = payload[len(_XMP_JPEG_HEADER) :]
            segments.append((marker, start, pos + 3, end))
            pos = end


def _is_xmp_segment(data: bytes, marker: int, payload_start: int, end: int) -> bool:
    return marker == 0xE1 and data.startswith(_XMP_JPEG_HEADER, payload_start, end)


def _mark_jpeg(image: bytes, plan: _Plan) -> bytes:
    jpeg = _JpegFile.parse(image)
    packet, _ = _merged_xmp(jpeg.xmp, plan, None)
    payload = _XMP_JPEG_HEADER + packet
    if len(payload) > _JPEG_MAX_SEGMENT_PAYLOAD:
        raise ImageMarkError("image_mark_too_large", "XMP packet does not fit one JPEG segment")
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    kept = [s for s in jpeg.segments if not _is_xmp_segment(image, s[0], s[2], s[3])]
    # After JFIF (APP0) and Exif (APP1): readers expect those first.
    insert_at = 0
    while insert_at < len(kept) and kept[insert_at][0] in (0xE0, 0xE1):
        insert_at += 1
    out = [b"\xff\xd8"]
    out += [image[start:end] for _, start, _, end in kept[:insert_at]]
    out.append(segment)
    out += [image[start:end] for _, start, _, end in kept[insert_at:]]
    out.append(image[jpeg.scan_start :])
    return b"".join(out)


# ---------------------------------------------------------------------------------------
# WebP (RIFF container; XMP goes in an `XMP ` chunk flagged in the VP8X header)

_VP8X_XMP: Final = 0x04
_VP8X_ALPHA: Final = 0x10


@dataclass(slots=True)
class _WebpFile:
    data: bytes
    chunks: list[tuple[bytes, int, int]]  # (fourcc, start of chunk, end incl. padding)
    xmp: bytes | None

    @classmethod
    def parse(cls, data: bytes) -> _WebpFile:
        if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            raise ImageMarkError("image_malformed", "not a WebP file")
        (riff_size,) = struct.unpack_from("<I", data, 4)
        if riff_size + 8 != len(data):
            raise ImageMarkError("image_malformed", "WebP RIFF size does not match the file")
        chunks: list[tuple[bytes, int, int]] = []
        xmp: bytes | None = None
        pos = 12
        while pos < len(data):
            if len(data) - pos < 8:
                raise ImageMarkError("image_malformed", "WebP is truncated")
            fourcc, size = struct.unpack_from("<4sI", data, pos)
            end = pos + 8 + size + (size & 1)
            if end > len(data):
                raise ImageMarkError(
                    "image_malformed", f"WebP chunk at byte {pos} overruns the file"
                )
            if fourcc == b"XMP ":
                if xmp is not None:
                    raise ImageMarkError("image_metadata_malformed", "WebP holds two XMP packets")
                xmp = data[pos + 8 : pos + 8 + size]
            chunks.append((fourcc, pos, end))
            pos = end
        if not chunks or chunks[0][0] not in (b"VP8 ", b"VP8L", b"VP8X"):
            raise ImageMarkError("image_malformed", "WebP has no image chunk first")
        return cls(data, chunks, xmp)


def _webp_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return (
        fourcc + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")
    )


def _webp_canvas(fourcc: bytes, payload: bytes) -> tuple[int, int, bool]:
    """Width, height and alpha of a simple-format WebP, read from its bitstream header."""
    if fourcc == b"VP8 ":
        if len(payload) < 10 or payload[3:6] != b"\x9d\x01\x2a":
            raise ImageMarkError("image_malformed", "WebP VP8 frame header is malformed")
        width, height = struct.unpack_from("<HH", payload, 6)
        return width & 0x3FFF, height & 0x3FFF, False
    if len(payload) < 5 or payload[0] != 0x2F:
        raise ImageMarkError("image_malformed", "WebP VP8L header is malformed")
    (bits,) = struct.unpack_from("<I", payload, 1)
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)


def _mark_webp(image: bytes, plan: _Plan) -> bytes:
    webp = _WebpFile.parse(image)
    packet, _ = _merged_xmp(webp.xmp, plan, None)
    first, start, end = webp.chunks[0]
    if first == b"VP8X":
        if end - start < 18:
            raise ImageMarkError("image_malformed", "WebP VP8X chunk is truncated")
        header = bytearray(image[start + 8 : start + 18])
        header[0] |= _VP8X_XMP
        body = [_webp_chunk(b"VP8X", bytes(header))]
        body += [image[s:e] for c, s, e in webp.chunks[1:] if c != b"XMP "]
    else:
        # A simple file becomes an extended one: a VP8X header naming the canvas goes first.
        width, height, alpha = _webp_canvas(first, image[start + 8 : end])
        flags = _VP8X_XMP | (_VP8X_ALPHA if alpha else 0)
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        body = [_webp_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + canvas)]
        body += [image[s:e] for c, s, e in webp.chunks if c != b"XMP "]
    body.append(_webp_chunk(b"XMP ", packet))  # the container spec puts XMP last
    payload = b"WEBP" + b"".join(body)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


# ---------------------------------------------------------------------------------------
# TF Serving predict responses

_UNSUPPORTED_SIGNATURES: Final = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)


def _describe_unsupported(image: bytes) -> str:
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if image.startswith(signature):
            return f"{name} images cannot be marked (PNG, JPEG and WebP can)"
    if image[4:8] == b"ftyp":
        return "HEIF/AVIF images cannot be marked (PNG, JPEG and WebP can)"
    return "not a PNG, JPEG or WebP image"


def _is_unsupported_image(image: bytes) -> bool:
    return image[4:8] == b"ftyp" or any(image.startswith(s) for s, _ in _UNSUPPORTED_SIGNATURES)


def _mark_b64(value: str, path: str, marks: Sequence[Mark]) -> str | None:
    """The marked image as base64, or None when the bytes are not an image at all."""
    try:
        # strict_mode is the C-level check; b64decode(validate=True) runs a slow regex.
        image = binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        raise ImageMarkError("image_b64_invalid", f"`{path}.b64` is not valid base64") from None
    if detect_format(image) is None:
        if _is_unsupported_image(image):
            raise ImageMarkError(
                "image_unsupported", f"`{path}.b64`: {_describe_unsupported(image)}"
            )
        return None
    try:
        for mark in marks:
            if isinstance(mark, ExplicitLabel):
                image = draw_explicit_label(image, mark)
        marked = apply_marks(image, marks)
    except ImageMarkError as exc:
        raise ImageMarkError(exc.code, f"`{path}.b64`: {exc.message}") from None
    return base64.b64encode(marked).decode("ascii")


_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _b64_objects(value: object, path: str) -> Iterator[tuple[str, dict[str, object]]]:
    """TF Serving binary values (`{"b64": "..."}`) under `value`, in document order."""
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        here, item = stack.pop()
        if isinstance(item, dict):
            if len(item) == 1 and isinstance(item.get("b64"), str):
                yield here, item
                continue
            stack.extend((_child_path(here, k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((_child_path(here, i), v) for i, v in reversed(list(enumerate(item))))


def _strings_in_order(
    document: object, replacements: dict[int, tuple[str, str]]
) -> Iterator[tuple[str, str] | None]:
    """For every JSON string token in document order: (old, new) to replace it, or None."""
    stack: list[object] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield None
        elif isinstance(item, dict):
            new = replacements.get(id(item))
            if new is not None:
                yield None  # the key "b64"
                yield new
                continue
            for key, child in reversed(item.items()):
                stack.append(child)
                stack.append(key)
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _string_tokens(body: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of every JSON string token's contents; quotes occur only in strings."""
    pos = body.find(b'"')
    while pos != -1:
        end = body.find(b'"', pos + 1)
        while end != -1:
            before = end - 1
            while body[before] == 0x5C:  # stops at the opening quote at the latest
                before -= 1
            if (end - 1 - before) % 2 == 0:  # an even run of backslashes escapes nothing
                break
            end = body.find(b'"', end + 1)
        if end == -1:
            return
        yield pos + 1, end
        pos = body.find(b'"', end + 1)


def _splice_strings(
    body: bytes, document: object, replacements: dict[int, tuple[str, str]]
) -> bytes:
    """Replace the marked b64 string tokens in the original bytes, leaving the rest as is.

    The parsed document and the raw token stream are walked together; if they disagree
    (which only duplicate keys can cause) the response is refused rather than guessed at.
    """
    out: list[bytes] = []
    copied = 0
    tokens = _string_tokens(body)
    for change in _strings_in_order(document, replacements):
        token = next(tokens, None)
        if token is None:
            break
        if change is not None:
            start, end = token
            old, new = change
            raw = body[start:end]
            if raw != old.encode("ascii") and json.loads(b'"' + raw + b'"') != old:
                break
            out += [body[copied:start], new.encode("ascii")]
            copied = end
    else:
        if next(tokens, None) is None:
            out.append(body[copied:])
            return b"".join(out)
    raise ImageMarkError(
        "response_malformed", "predict response has duplicate keys; refusing to rewrite it"
    )


# ---------------------------------------------------------------------------------------
# The visible CN label (GB 45438-2025: text at least 5% of the shorter side high)

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


def draw_explicit_label(image: bytes, label: ExplicitLabel = ExplicitLabel()) -> bytes:
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
    png = _PngFile.parse(image)
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
    out = [_PNG_SIGNATURE]
    idat_written = False
    for ctype, start, end in png.chunks:
        if ctype == b"IHDR":
            out.append(_png_chunk(b"IHDR", ihdr))
        elif ctype == b"IDAT":
            if not idat_written:
                out.append(_png_chunk(b"IDAT", zlib.compress(raw, 6)))
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
