"""PNG: reading and rewriting metadata chunks (iTXt XMP and the `AIGC` text chunk)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

from gateway.marks.container import PNG_SIGNATURE
from gateway.marks.plan import ImageMarkError, Plan, aigc_json, parse_aigc_json
from gateway.marks.xmp import MAX_METADATA_TEXT, merged_xmp

_XMP_PNG_KEYWORD: Final = b"XML:com.adobe.xmp"
_AIGC_PNG_KEYWORD: Final = b"AIGC"
_PNG_MAX_CHUNK: Final = 0x7FFFFFFF  # PNG spec: a chunk length is at most 2^31 - 1


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png_itxt(keyword: bytes, text: str) -> bytes:
    # keyword, NUL, compression flag 0, method 0, empty language tag and translated keyword
    return png_chunk(b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def _inflate(data: bytes, what: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_METADATA_TEXT + 1)
    except zlib.error:
        raise ImageMarkError("image_malformed", f"{what} does not inflate") from None
    if len(out) > MAX_METADATA_TEXT or inflater.unconsumed_tail:
        raise ImageMarkError("image_malformed", f"{what} inflates past {MAX_METADATA_TEXT} bytes")
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
class PngFile:
    """A PNG split into chunks, with its XMP packet and `AIGC` text if it has them."""

    data: bytes
    chunks: list[tuple[bytes, int, int]]  # (type, start of chunk, end of chunk)
    xmp: bytes | None
    aigc_text: str | None

    @classmethod
    def parse(cls, data: bytes) -> PngFile:
        """Split `data` into checked chunks; anything unexpected raises `ImageMarkError`."""
        if not data.startswith(PNG_SIGNATURE):
            raise ImageMarkError("image_malformed", "not a PNG file")
        chunks: list[tuple[bytes, int, int]] = []
        xmp: bytes | None = None
        aigc_text: str | None = None
        pos = len(PNG_SIGNATURE)
        while pos < len(data):
            if len(data) - pos < 12:
                raise ImageMarkError("image_malformed", f"PNG truncated at byte {pos}")
            ctype, length, body, end = _read_chunk(data, pos)
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
        _check_complete(chunks, pos, len(data))
        return cls(data, chunks, xmp, aigc_text)


def _read_chunk(data: bytes, pos: int) -> tuple[bytes, int, bytes, int]:
    """The chunk at `pos`, checked: (type, length, data, end of chunk)."""
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
    return ctype, length, body, end


def _check_complete(chunks: list[tuple[bytes, int, int]], pos: int, size: int) -> None:
    """A PNG ends with IEND, has nothing after it, and holds image data."""
    if not chunks or chunks[-1][0] != b"IEND":
        raise ImageMarkError("image_malformed", "PNG is truncated (no IEND chunk)")
    if pos != size:
        raise ImageMarkError("image_malformed", "PNG has data after its IEND chunk")
    if not any(c[0] == b"IDAT" for c in chunks):
        raise ImageMarkError("image_malformed", "PNG has no image data")


def mark_png(image: bytes, plan: Plan) -> bytes:
    """`image` with the plan's XMP and `AIGC` chunks; image data is copied byte for byte."""
    png = PngFile.parse(image)
    text_label = parse_aigc_json(png.aigc_text) if png.aigc_text is not None else None
    packet, aigc = merged_xmp(png.xmp, plan, text_label)
    inserted = [_png_itxt(_XMP_PNG_KEYWORD, packet.decode("utf-8"))]
    # Without an AIGC mark to apply, an AIGC chunk already present is left exactly as it is.
    replace_label = plan.aigc is not None and aigc is not None
    if replace_label and aigc is not None:
        inserted.append(_png_itxt(_AIGC_PNG_KEYWORD, aigc_json(aigc)))
    out = [PNG_SIGNATURE]
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
