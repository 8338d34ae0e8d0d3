"""JPEG: reading and rewriting the APP1 XMP segment; the scan is copied byte for byte."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from gateway.marks.plan import ImageMarkError, Plan
from gateway.marks.xmp import merged_xmp

_XMP_JPEG_HEADER: Final = b"http://ns.adobe.com/xap/1.0/\x00"
_JPEG_MAX_SEGMENT_PAYLOAD: Final = 0xFFFF - 2
_JPEG_SOF: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


@dataclass(slots=True)
class JpegFile:
    """A JPEG split into segments up to the scan, with its XMP packet if it has one."""

    data: bytes
    segments: list[tuple[int, int, int, int]]  # (marker, start, payload start, end) before SOS
    scan_start: int  # the SOS segment and everything after it is copied untouched
    xmp: bytes | None

    @classmethod
    def parse(cls, data: bytes) -> JpegFile:
        """Split `data` into segments up to the scan; anything unexpected is an `ImageMarkError`."""
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


def mark_jpeg(image: bytes, plan: Plan) -> bytes:
    """`image` with the plan's XMP in an APP1 segment; the scan is copied byte for byte."""
    jpeg = JpegFile.parse(image)
    packet, _ = merged_xmp(jpeg.xmp, plan, None)
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
