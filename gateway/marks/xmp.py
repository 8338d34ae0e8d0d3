"""XMP packets: parsing without DTDs, reading our two properties, merging ours in."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Final

from gateway.marks.plan import ImageMarkError, Plan, aigc_json, merge_aigc, parse_aigc_json

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
MAX_METADATA_TEXT: Final = 1 << 20  # bound on XMP or text we decompress or parse


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


def parse_xmp(packet: bytes) -> ET.Element:
    """Parse an XMP packet, refusing DTDs (and so entity expansion)."""
    if len(packet) > MAX_METADATA_TEXT:
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


def find_rdf(root: ET.Element) -> ET.Element:
    """The `rdf:RDF` element of a parsed packet."""
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


def read_xmp_marks(rdf: ET.Element) -> tuple[str | None, dict[str, str] | None]:
    """The digital source type and the `AIGC` label fields found under `rdf`."""
    source_types: list[str] = []
    labels: list[str] = []
    for desc in rdf.findall(_TAG_DESCRIPTION):
        source_types += _property(desc, _TAG_SOURCE_TYPE)
        labels += _property(desc, _TAG_AIGC)
    if len(set(source_types)) > 1 or len(set(labels)) > 1:
        raise ImageMarkError("image_metadata_malformed", "XMP packet holds conflicting marks")
    aigc = parse_aigc_json(labels[0]) if labels else None
    return (source_types[0] if source_types else None), aigc


def _strip_property(desc: ET.Element, tag: str) -> None:
    desc.attrib.pop(tag, None)
    for child in desc.findall(tag):
        desc.remove(child)


def merged_xmp(
    existing: bytes | None, plan: Plan, extra_aigc: dict[str, str] | None
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
        root = parse_xmp(existing)
        rdf = find_rdf(root)
        _, old_aigc = read_xmp_marks(rdf)
    if old_aigc is not None and extra_aigc is not None and old_aigc != extra_aigc:
        _check_compatible(old_aigc, extra_aigc)
    old_aigc = old_aigc if old_aigc is not None else extra_aigc
    aigc = merge_aigc(old_aigc, plan.aigc) if plan.aigc is not None else old_aigc

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
            ET.SubElement(ours, _TAG_AIGC).text = aigc_json(aigc)
    _drop_layout_whitespace(root)
    packet = _XPACKET_BEGIN + ET.tostring(root, encoding="unicode") + _XPACKET_END
    return packet.encode("utf-8"), aigc


def _drop_layout_whitespace(root: ET.Element) -> None:
    """Whitespace-only text and tails are layout, not data; dropping them keeps the
    serialisation stable from one application to the next."""
    for element in root.iter():
        if element.text is not None and not element.text.strip() and len(element):
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None


def _check_compatible(a: dict[str, str], b: dict[str, str]) -> None:
    for key in a.keys() & b.keys():
        if a[key] and b[key] and a[key] != b[key]:
            raise ImageMarkError(
                "image_metadata_malformed",
                f"the image carries two AIGC labels that differ in `{key}`",
            )
