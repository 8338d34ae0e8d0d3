"""The one JSON path formatter: where a value sits in a JSON document, as a reader writes it.

`("instances", 0, "note")` reads `instances[0].note`; a key that is not an identifier is
written as a JSON string in brackets (`outputs["my key"]`), so every path names one place.
Audit records, findings and marked-response reports carry these paths. (Diagnostics about
YAML documents use `gateway.source.format_path`, which writes keys bare.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["json_path", "json_path_child"]

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def json_path_child(path: str, key: str | int) -> str:
    """The path of member `key` (an object key or an array index) of the value at `path`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def json_path(steps: Iterable[str | int]) -> str:
    """`("instances", 0, "note")` -> `instances[0].note`; other keys in JSON string brackets."""
    path = ""
    for step in steps:
        path = json_path_child(path, step)
    return path
