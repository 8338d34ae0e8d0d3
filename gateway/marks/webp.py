"""WebP: the RIFF container's `XMP ` chunk, flagged in the VP8X header."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from gateway.marks.plan import ImageMarkError, Plan
from gateway.marks.xmp import merged_xmp

_VP8X_XMP: Final = 0x04
_VP8X_ALPHA: Final = 0x10


@dataclass(slots=True)
class WebpFile:
    """A WebP split into RIFF chunks, with its XMP packet if it has one."""

    data: bytes
    chunks: list[tuple[bytes, int, int]]  # (fourcc, start of chunk, end incl. padding)
    xmp: bytes | None

    @classmethod
    def parse(cls, data: bytes) -> WebpFile:
        """Split `data` into RIFF chunks; anything unexpected raises `ImageMarkError`."""
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


def mark_webp(image: bytes, plan: Plan) -> bytes:
    """`image` with the plan's XMP chunk, flagged in VP8X; the bitstream is copied as is."""
    webp = WebpFile.parse(image)
    packet, _ = merged_xmp(webp.xmp, plan, None)
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
