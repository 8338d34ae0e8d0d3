"""Which container an image is, by its signature; what cannot be marked, named."""

from __future__ import annotations

from typing import Final

from gateway.marks.plan import ImageFormat

__all__ = ["detect_format"]


PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def detect_format(image: bytes) -> ImageFormat | None:
    """The container format by its signature, or None when it is not one we can mark."""
    if image.startswith(PNG_SIGNATURE):
        return "png"
    if image.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(image) >= 12 and image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "webp"
    return None


_UNSUPPORTED_SIGNATURES: Final = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)


def describe_unsupported(image: bytes) -> str:
    """Why `image` cannot be marked, naming its format when the signature is known."""
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if image.startswith(signature):
            return f"{name} images cannot be marked (PNG, JPEG and WebP can)"
    if image[4:8] == b"ftyp":
        return "HEIF/AVIF images cannot be marked (PNG, JPEG and WebP can)"
    return "not a PNG, JPEG or WebP image"


def is_unsupported_image(image: bytes) -> bool:
    """Whether `image` is an image in a format that cannot carry our marks."""
    return image[4:8] == b"ftyp" or any(image.startswith(s) for s, _ in _UNSUPPORTED_SIGNATURES)
