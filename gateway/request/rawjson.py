"""Fast checks on the raw bytes of a body orjson has already accepted.

orjson keeps the last of duplicate keys and nests up to 254 levels; these checks find both
without walking the numbers: string literals are located with `bytes.find` (a body orjson
accepted has well-formed strings, and every quote outside a string opens one), and depth is
counted on the brackets left once strings are stripped. See `strictjson` for the rules.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

NOT_MARKS: Final = bytes(b for b in range(256) if b not in b':[{"\\')
FEW_QUOTES: Final = 64
#: Up to this many quote characters, string literals are located one by one.
TOKENIZED_QUOTES: Final = 512
_NOT_BRACES: Final = bytes(b for b in range(256) if b not in b"{}")
_JSON_SPACE: Final = frozenset(b" \t\r\n")
_COLON: Final = ord(":")
_OPEN_BRACE: Final = ord("{")
# SECURITY: a `\u003a` escape decodes to ':' in the parsed value but is not a ':' byte in the
# source, which would let an attacker balance the colon counts below; such bodies are checked
# by the full parser instead.
_ESCAPED_COLONS: Final = (b"\\u003a", b"\\u003A")


def may_hold_duplicates(raw: bytes, marks: bytes, value: Any) -> bool:
    """True unless the body provably has no duplicate keys (for bodies with many strings).

    Without `\\u003a` escapes, every ':' in the source is either a member separator or a
    character of a string; re-serialising the parsed value keeps all strings that survived and
    one separator per surviving member. A duplicate drops a member (and the strings inside
    it), so the re-serialised text has strictly fewer ':' than the source.
    """
    colons = marks.count(b":")
    if colons == 0 or (type(value) is dict and colons == len(value)):
        return False
    if b"\\" in marks and any(escape in raw for escape in _ESCAPED_COLONS):
        return True
    try:
        return orjson.dumps(value).count(b":") != colons
    except orjson.JSONEncodeError:
        return True


def string_tokens(raw: bytes) -> list[tuple[int, int, bool]]:
    """`(opening quote, closing quote, is a key)` of every string literal, in order.

    `find` runs at memchr speed, so a tensor with a few keys costs a few calls however many
    numbers it holds. A string is a key when the next byte after JSON whitespace is `:`.
    """
    tokens: list[tuple[int, int, bool]] = []
    size = len(raw)
    start = raw.find(b'"')
    while start >= 0:
        end = raw.find(b'"', start + 1)
        while raw[end - 1] == 0x5C:  # a closing quote follows an even run of backslashes
            backslashes = 1
            while raw[end - 1 - backslashes] == 0x5C:
                backslashes += 1
            if backslashes % 2 == 0:
                break
            end = raw.find(b'"', end + 1)
        after = end + 1
        while after < size and raw[after] in _JSON_SPACE:
            after += 1
        tokens.append((start, end, after < size and raw[after] == _COLON))
        start = raw.find(b'"', after)
    return tokens


def decode_string(raw: bytes, start: int, end: int) -> str:
    """The value of the string literal at `raw[start:end + 1]` (quotes included)."""
    literal = raw[start + 1 : end]
    if b"\\" not in literal:
        return literal.decode("utf-8")
    decoded: str = orjson.loads(raw[start : end + 1])
    return decoded


def has_duplicate_keys(raw: bytes, tokens: list[tuple[int, int, bool]]) -> bool:
    """Whether any object of the body has the same key twice (after decoding escapes).

    Only `{` and `}` between string literals change which object a key belongs to, so each
    gap is reduced to its braces (one `translate`) and a stack holds the keys of every open
    object.
    """
    open_objects: list[set[str]] = []
    position = 0
    for start, end, is_key in tokens:
        for brace in raw[position:start].translate(None, _NOT_BRACES):
            if brace == _OPEN_BRACE:
                open_objects.append(set())
            else:
                open_objects.pop()
        position = end + 1
        if is_key:
            key = decode_string(raw, start, end)
            keys = open_objects[-1]
            if key in keys:
                return True
            keys.add(key)
    return False


_BRACKETS_TO_PARENS: Final = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def deeper_than(raw: bytes, max_depth: int) -> bool:
    """Whether the (orjson-valid) body nests deeper than `max_depth` containers."""
    openers = raw.count(b"[") + raw.count(b"{")
    if openers <= max_depth:
        return False
    brackets = _strip_strings(raw).translate(_BRACKETS_TO_PARENS, _NOT_BRACKETS)
    # bytes.replace never rescans its own output, so each pass removes exactly one level.
    for _ in range(max_depth):
        brackets = brackets.replace(b"()", b"")
        if not brackets:
            return False
    return True


def value_deeper_than(value: Any, max_depth: int) -> bool:
    """Whether a parsed value nests deeper than `max_depth` containers (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def _strip_strings(raw: bytes) -> bytes:
    """The body without its string literals (memchr-speed `find`; regexes are 10x slower)."""
    parts: list[bytes] = []
    start = 0
    while True:
        quote = raw.find(b'"', start)
        if quote < 0:
            parts.append(raw[start:])
            return b"".join(parts)
        parts.append(raw[start:quote])
        end = quote + 1
        while True:
            end = raw.find(b'"', end)
            if end < 0:
                return b"".join(parts)
            backslashes = 0
            while raw[end - 1 - backslashes] == 0x5C:
                backslashes += 1
            if backslashes % 2 == 0:
                break
            end += 1
        start = end + 1
