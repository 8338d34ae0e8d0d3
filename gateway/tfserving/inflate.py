"""Bounded inflation of compressed request bodies, the gateway's way and TF Serving's way.

`inflate` is the gateway's: `Content-Encoding` gzip (several members), zlib or raw deflate, up
to two layers, with an output limit, and a distinct error for every way a body can be refused
(415, 413, 400), so a compressed body is inspected like any other. `inflate_like_tf_serving` is
TF Serving's (gzip_zlib.cc as its HTTP handler uses it): one gzip member of at most 100 MiB,
anything else (corrupt, truncated, too large) reads as an empty body. Both run on one bounded
stream reader, which never produces more than the limit plus one byte.

Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import zlib
from typing import Any, Final

__all__ = [
    "TF_SERVING_MAX_INFLATED_BYTES",
    "BodyEncodingError",
    "BodyTooLargeError",
    "CorruptBodyError",
    "UnsupportedEncodingError",
    "inflate",
    "inflate_like_tf_serving",
]

#: TF Serving inflates at most this much (gzip_zlib.h).
TF_SERVING_MAX_INFLATED_BYTES: Final = 100 * 1024 * 1024


class BodyEncodingError(ValueError):
    """A compressed request body that cannot be inflated and inspected."""

    http_status: int = 400
    code: str = "body_encoding_error"


class UnsupportedEncodingError(BodyEncodingError):
    """A `Content-Encoding` the gateway does not inflate; maps to 415."""

    http_status = 415
    code = "body_encoding_unsupported"


class BodyTooLargeError(BodyEncodingError):
    """The inflated body exceeds the configured limit; maps to 413."""

    http_status = 413
    code = "body_too_large"


class CorruptBodyError(BodyEncodingError):
    """The compressed stream is truncated, corrupt or followed by garbage; maps to 400."""

    http_status = 400
    code = "body_encoding_corrupt"


_GZIP_MAGIC: Final = b"\x1f\x8b"
_MAX_ENCODING_LAYERS: Final = 2
_INFLATABLE: Final = frozenset({"gzip", "x-gzip", "deflate"})


def inflate(
    body: bytes,
    content_encoding: str | None,
    *,
    max_size: int,
    accepted: frozenset[str] = _INFLATABLE,
) -> bytes:
    """Undo `content_encoding` on `body`, producing at most `max_size` bytes.

    Raises `UnsupportedEncodingError` (415) for codings outside `accepted` (`br`, `zstd`, ...)
    or more than two layers, `BodyTooLargeError` (413) past `max_size`, and
    `CorruptBodyError` (400) for truncated or corrupt streams or bytes after the stream.
    `identity` and an absent header return `body` unchanged (the caller limits its size).
    `deflate` accepts the zlib format RFC 9110 specifies and, as many clients send it, raw
    deflate.
    """
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0, got {max_size}")
    codings = [
        token.strip().lower() for token in (content_encoding or "").split(",") if token.strip()
    ]
    codings = [coding for coding in codings if coding != "identity"]
    if len(codings) > _MAX_ENCODING_LAYERS:
        raise UnsupportedEncodingError(
            f"at most {_MAX_ENCODING_LAYERS} content codings are supported, got {len(codings)}"
        )
    for coding in codings:
        if coding not in accepted:
            raise UnsupportedEncodingError(f"content coding `{coding[:40]}` is not supported")
    for coding in reversed(codings):
        if coding == "deflate":
            body = _inflate_deflate(body, max_size)
        else:
            body = _inflate_gzip(body, max_size)
    return body


def _inflate_gzip(body: bytes, max_size: int) -> bytes:
    out = bytearray()
    remaining = body
    if not remaining:
        raise CorruptBodyError("gzip body is empty")
    # A gzip file may hold several members back to back (RFC 1952 §2.2).
    while remaining:
        if not remaining.startswith(_GZIP_MAGIC):
            raise CorruptBodyError("gzip stream is followed by data that is not a gzip member")
        remaining = _inflate_stream(
            zlib.decompressobj(16 + zlib.MAX_WBITS), remaining, out, max_size
        )
    return bytes(out)


def _inflate_deflate(body: bytes, max_size: int) -> bytes:
    if not body:
        raise CorruptBodyError("deflate body is empty")
    is_zlib = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
    wbits = zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS
    out = bytearray()
    rest = _inflate_stream(zlib.decompressobj(wbits), body, out, max_size)
    if rest:
        raise CorruptBodyError("deflate stream is followed by extra data")
    return bytes(out)


def _inflate_stream(decompressor: Any, data: bytes, out: bytearray, max_size: int) -> bytes:
    """Inflate one stream into `out`; return the bytes after its end."""
    pending = data
    try:
        while pending:
            chunk = decompressor.decompress(pending, max_size + 1 - len(out))
            out += chunk
            if len(out) > max_size:
                raise BodyTooLargeError(f"inflated body exceeds {max_size} bytes")
            pending = decompressor.unconsumed_tail
            if decompressor.eof:
                break
    except zlib.error as exc:
        raise CorruptBodyError(f"compressed body is corrupt: {exc}") from None
    if not decompressor.eof:
        raise CorruptBodyError("compressed body is truncated")
    return bytes(decompressor.unused_data)


def inflate_like_tf_serving(body: bytes, max_size: int = TF_SERVING_MAX_INFLATED_BYTES) -> bytes:
    """A gzip body as TF Serving inflates it: one member, else (any failure) an empty body.

    Bytes after the first member are ignored, as TF Serving's inflater stops at its end.
    """
    out = bytearray()
    try:
        _inflate_stream(zlib.decompressobj(16 + zlib.MAX_WBITS), body, out, max_size)
    except BodyEncodingError:
        return b""
    return bytes(out)
