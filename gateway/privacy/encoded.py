"""Values the backend decodes before the model reads them: TF Serving's `{"b64": ...}`, and
`data:` URLs (base64 or percent-encoded), which a model may decode itself.

The gateway must see what the model will see, so it decodes these values exactly as (or more
leniently than) the backend does, classifies the bytes as text or binary, and can write a
masked text back in the form the caller used.

Rule 1 — base64 is read as TensorFlow's decoder reads it (TF Serving hands `b64` values to
it): the standard alphabet (`+/`) and the URL-safe one (`-_`), with or without `=` padding.
A value no reading accepts is `InvalidBase64` (the backend would refuse it too, and the
gateway forwards nothing it could not read).

Rule 2 — bytes are text when they decode as UTF-8 (an optional byte order mark is kept aside),
or as UTF-16 behind its byte order mark. Everything else is binary: its media type is sniffed
from magic numbers, and its readable runs (what a `strings` tool would print) are still scanned
so that personal data inside a serialised record is found even though it cannot be rewritten.

Rule 3 — re-encoding keeps the caller's alphabet, padding and text encoding, so a masked value
differs from the original only where something was masked.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote_from_bytes, unquote_to_bytes

__all__ = [
    "Base64Form",
    "BinaryPayload",
    "DataUrl",
    "InvalidBase64",
    "TextPayload",
    "classify_bytes",
    "decode_base64",
    "encode_base64",
    "encode_text",
    "parse_data_url",
    "readable_text",
    "sniff_media_type",
]


class InvalidBase64(ValueError):
    """A value that claims to be base64 but that no base64 reading accepts."""


@dataclass(frozen=True, slots=True)
class Base64Form:
    """How a base64 value was written: alphabet (`standard` or `urlsafe`) and padding."""

    alphabet: Literal["standard", "urlsafe"]
    padded: bool


_BASE64_CHARS: Final = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}\Z")
_TO_STANDARD: Final = str.maketrans("-_", "+/")
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def decode_base64(text: str) -> tuple[bytes, Base64Form]:
    """Decode `text` as TensorFlow's base64 reader does; raise `InvalidBase64` otherwise."""
    if not text.isascii() or _BASE64_CHARS.match(text) is None:
        raise InvalidBase64("not base64")
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if padding and len(text) % 4:
        raise InvalidBase64("wrong padding")
    if len(body) % 4 == 1:
        raise InvalidBase64("truncated")
    standard = body.translate(_TO_STANDARD)
    try:
        data = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBase64("not base64") from None
    urlsafe = "-" in body or "_" in body
    needs_padding = len(body) % 4 != 0
    # A value that needed no padding says nothing about the caller's habit: write it padded,
    # as the standard encoders do.
    padded = bool(padding) or not needs_padding
    return data, Base64Form("urlsafe" if urlsafe else "standard", padded)


def encode_base64(data: bytes, form: Base64Form) -> str:
    """`data` in base64, written in `form`."""
    encoded = base64.b64encode(data)
    if form.alphabet == "urlsafe":
        encoded = encoded.translate(_TO_URLSAFE)
    if not form.padded:
        encoded = encoded.rstrip(b"=")
    return encoded.decode("ascii")


@dataclass(frozen=True, slots=True)
class DataUrl:
    """A `data:` URL (RFC 2397) split into its header and decoded data.

    `form` is the base64 form of a `;base64` URL, None for a percent-encoded one.
    """

    header: str
    media_type: str
    data: bytes
    form: Base64Form | None

    def with_data(self, data: bytes) -> str:
        """The same URL carrying `data` instead, encoded as the original was."""
        if self.form is None:
            return f"{self.header},{quote_from_bytes(data, safe=_URL_SAFE)}"
        return f"{self.header},{encode_base64(data, self.form)}"


_DATA_URL: Final = re.compile(r"data:([^,;]{0,127})((?:;[^,;]{1,127}){0,8}),", re.I)
#: Characters a percent-encoded data URL may carry as they are (RFC 3986 unreserved and
#: sub-delimiters, `:`, `@`, `/`, `?`).
_URL_SAFE: Final = "-._~!$&'()*+,;=:@/?"


def parse_data_url(text: str) -> DataUrl | None:
    """The decoded content of a `data:` URL, or None for any other string."""
    if not text[:5].lower() == "data:":
        return None
    match = _DATA_URL.match(text)
    if match is None:
        return None
    content = text[match.end() :]
    parameters = match.group(2).lower().split(";")
    form: Base64Form | None = None
    if parameters[-1].strip() == "base64":
        try:
            data, form = decode_base64(content)
        except InvalidBase64:
            return None
    else:
        data = unquote_to_bytes(content)
    media_type = match.group(1).strip().lower() or "text/plain"
    return DataUrl(text[: match.end() - 1], media_type, data, form)


@dataclass(frozen=True, slots=True)
class TextPayload:
    """Bytes that are text: the decoded `text` and how to write it back (`codec`, `bom`)."""

    text: str
    codec: Literal["utf-8", "utf-16-le", "utf-16-be"]
    bom: bytes


@dataclass(frozen=True, slots=True)
class BinaryPayload:
    """Bytes that are not text, with the media type their magic number says."""

    media_type: str
    size: int


_BOMS: Final[tuple[tuple[bytes, Literal["utf-8", "utf-16-le", "utf-16-be"]], ...]] = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def classify_bytes(data: bytes) -> TextPayload | BinaryPayload:
    """Text (UTF-8, or UTF-16 behind a byte order mark) or binary with its media type."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return TextPayload(data[len(bom) :].decode(codec), codec, bom)
            except UnicodeDecodeError:
                break
    else:
        try:
            return TextPayload(data.decode("utf-8"), "utf-8", b"")
        except UnicodeDecodeError:
            pass
    return BinaryPayload(sniff_media_type(data), len(data))


def encode_text(payload: TextPayload, text: str) -> bytes:
    """`text` written as `payload` was (same codec and byte order mark)."""
    return payload.bom + text.encode(payload.codec, "surrogatepass")


# Magic numbers of the formats a model is commonly sent (offset, bytes, media type).
_MAGIC: Final[tuple[tuple[int, bytes, str], ...]] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"\x00\x00\x01\x00", "image/vnd.microsoft.icon"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"\x1aE\xdf\xa3", "video/webm"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"\x93NUMPY", "application/x-npy"),
)


def sniff_media_type(data: bytes) -> str:
    """The media type announced by `data`'s magic number, else `application/octet-stream`."""
    if data[:4] == b"RIFF" and len(data) >= 12:
        kind = data[8:12]
        if kind == b"WEBP":
            return "image/webp"
        if kind == b"WAVE":
            return "audio/wav"
        if kind == b"AVI ":
            return "video/x-msvideo"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"mif1"):
            return "image/heic"
        return "video/mp4"
    if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    for offset, magic, media_type in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return media_type
    return "application/octet-stream"


def readable_text(data: bytes) -> str:
    """The readable runs of binary `data` as one string, runs separated by U+FFFD.

    A serialised record (a `tf.Example`, a protobuf, a CSV inside a zip entry stored
    uncompressed) holds its strings as plain bytes between binary fields; the detectors find
    values there although the record cannot be rewritten.
    """
    return data.decode("utf-8", "replace")
