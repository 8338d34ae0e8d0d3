"""Replace string values inside a JSON body's bytes, leaving every other byte as it was sent.

Serialising a parsed document again changes what the backend reads: `NaN` and `Infinity`
become `null`, `1.0` becomes `1`, big integers lose their digits, escapes and spacing change.
A gateway that masks one note must not change the numbers of the tensor beside it, so the
masked strings are spliced into the original body instead.

Only for bodies that `strictjson` accepted (well-formed, no duplicate keys): the walk trusts
the structure and tracks only what it needs (brackets, commas, string literals); numbers and
literals are stepped over without being read. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import orjson

__all__ = ["SpliceError", "replace_strings"]

Location = tuple[str | int, ...]

_TOKEN: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)
_QUOTE: Final = ord('"')
_OPEN_OBJECT: Final = ord("{")
_OPEN_ARRAY: Final = ord("[")
_COMMA: Final = ord(",")


class SpliceError(ValueError):
    """A location to replace was not found as a string value of the body."""


# The token loop stays one function: it runs per token of every masked body, and split
# across calls it would pass the path state around for each token.
def replace_strings(raw: bytes, replacements: Mapping[Location, str]) -> bytes:  # noqa: PLR0912
    """`raw` with the string value at each location replaced by the new text.

    A location is the tuple of object keys and array indexes from the root (the empty tuple
    for a body that is one string). Raises `SpliceError` when a location does not hold a
    string value in `raw`.
    """
    if not replacements:
        return raw
    wanted = dict(replacements)
    spans: list[tuple[int, int, bytes]] = []
    path: list[str | int] = []
    in_object: list[bool] = []
    expecting_key = False
    for match in _TOKEN.finditer(raw):
        first = raw[match.start()]
        if first == _QUOTE:
            if expecting_key:
                path[-1] = _key(match.group())
                expecting_key = False
                continue
            location = tuple(path)
            new = wanted.pop(location, None)
            if new is not None:
                spans.append((match.start(), match.end(), orjson.dumps(new)))
                if not wanted:
                    break
        elif first == _OPEN_OBJECT:
            in_object.append(True)
            path.append("")
            expecting_key = True
        elif first == _OPEN_ARRAY:
            in_object.append(False)
            path.append(0)
        elif first == _COMMA:
            if in_object[-1]:
                expecting_key = True
            else:
                index = path[-1]
                assert isinstance(index, int)
                path[-1] = index + 1
        else:  # a closing bracket
            in_object.pop()
            path.pop()
            expecting_key = False
    if wanted:
        missing = next(iter(wanted))
        raise SpliceError(f"no string value at {missing!r} in the body")
    pieces: list[bytes] = []
    cursor = 0
    for start, end, literal in spans:
        pieces.append(raw[cursor:start])
        pieces.append(literal)
        cursor = end
    pieces.append(raw[cursor:])
    return b"".join(pieces)


def _key(literal: bytes) -> str:
    if b"\\" not in literal:
        return literal[1:-1].decode("utf-8")
    key: str = orjson.loads(literal)
    return key
