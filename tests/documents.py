"""Reference walks over parsed JSON documents, for comparing fast paths against."""

from __future__ import annotations

from typing import Any


def string_values(document: Any) -> list[str]:
    """Every string value in document order (object keys excluded)."""
    if isinstance(document, str):
        return [document]
    if isinstance(document, dict):
        return [text for child in document.values() for text in string_values(child)]
    if isinstance(document, list):
        return [text for child in document for text in string_values(child)]
    return []
