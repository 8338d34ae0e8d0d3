"""Strict parsing of request bodies: the backend receives exactly the JSON the gateway inspected.

TF Serving parses bodies with rapidjson (tfserving-api.md §4.6), which differs from Python's
`json` and from orjson in several places. Every difference is a way to show the policy engine
one document and the model another, so the gateway refuses the ambiguous inputs instead of
guessing how the backend will read them:

Rule 1 — duplicate keys are refused. rapidjson uses the *first* occurrence, Python and orjson
the *last*; whichever we picked, a body like `{"instances": [..benign..], "instances": [..]}`
would be judged on one array and executed on the other.

Rule 2 — trailing data is refused; only JSON whitespace may follow the top-level value.
TF Serving >= 2.18 silently ignores trailing bytes, older versions reject them: neither reading
is worth a smuggling channel.

Rule 3 — the body must be valid UTF-8 without a byte order mark, and `\\u` escapes must not
produce lone surrogates. rapidjson does not validate encodings, so invalid bytes would reach
the model unseen by the detectors.

Rule 4 — `NaN`, `Infinity` and `-Infinity` are accepted by default: TF Serving documents them
for float tensors (api_rest.md) and refusing them would break drop-in clients. They are parsed
to Python floats. Pass `allow_non_finite=False` for JSON the gateway owns (its own API). The
other spellings rapidjson happens to accept (`Inf`, `-Inf`, `-NaN`) are always refused: they are
undocumented, and a clear 400 beats a differential. Numbers too large for a double (`1e400`)
are refused, as rapidjson does.

Rule 5 — nesting deeper than `max_depth` (default 64, at most 254) is refused. rapidjson
parses iteratively and accepts 500 000 levels, but a masked body is serialised again with
orjson, which stops at 254 levels, and real tensors are a handful of levels deep.

Rule 6 — an empty body (or only whitespace) is refused.

Integers beyond the 64-bit range become floats, as in orjson and in rapidjson.

Speed: the fast path is `orjson.loads` (which enforces rules 2, 3, 6 and part of 4) plus two
cheap checks on the raw bytes, one for duplicate keys (orjson silently keeps the last) and one
for depth. For bodies with few strings (tensors with a few keys and notes) the duplicate check
locates every string literal with `bytes.find`, which also yields the string values for the
scanner (`parse_body`), so neither has to walk the numbers. Bodies with `NaN`/`Infinity` take
the standard library parser with hooks. Every refusal is finally reported by a small checking
parser that knows exact positions, so the messages do not depend on which path noticed the
problem.

Compressed bodies: `inflate()` (from the protocol core, gateway/tfserving/inflate.py, and
re-exported here) undoes `Content-Encoding: gzip` (and `deflate`) with an output size limit, so
the inflated body can be inspected like any other.
"""

from __future__ import annotations

import _json
import json
import re
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import orjson

from gateway.tfserving.inflate import (
    BodyEncodingError,
    BodyTooLargeError,
    CorruptBodyError,
    UnsupportedEncodingError,
    inflate,
)

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "MAX_DEPTH_LIMIT",
    "BodyEncodingError",
    "BodyTooLargeError",
    "CorruptBodyError",
    "StrictJsonError",
    "UnsupportedEncodingError",
    "ParsedBody",
    "inflate",
    "loads",
    "parse_body",
]

DEFAULT_MAX_DEPTH: Final = 64
#: orjson serialises at most 254 levels; a deeper body could be inspected but not re-sent masked.
MAX_DEPTH_LIMIT: Final = 254


class StrictJsonError(ValueError):
    """A request body that is not acceptable JSON; maps to HTTP 400.

    `code` is stable and machine-readable (`json_syntax`, `json_duplicate_key`,
    `json_trailing_data`, `json_invalid_utf8`, `json_non_finite`, `json_number_range`,
    `json_too_deep`, `json_empty`); `position` is the byte offset of the problem in the body,
    `line` and `column` are 1-based (column counted in characters).
    """

    http_status: Final = 400

    def __init__(self, code: str, message: str, position: int, line: int, column: int) -> None:
        self.code = code
        self.message = message
        self.position = position
        self.line = line
        self.column = column
        super().__init__(f"{message} at line {line} column {column} (byte {position})")


# ---------------------------------------------------------------------------------------------
# Public entry point


class ParsedBody(NamedTuple):
    """A body parsed under the module's rules, and its string values when they were read."""

    value: Any
    #: Every string *value* of `value` (not the keys), in document order, when the fast path
    #: read them from the raw bytes and the body has no `b64` key; None otherwise.
    strings: tuple[str, ...] | None
    #: Every object key of `value`, when `strings` is given; None otherwise.
    keys: tuple[str, ...] | None = None


def loads(
    data: bytes | bytearray | memoryview | str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    allow_non_finite: bool = True,
) -> Any:
    """Parse `data` under the rules in the module docstring, or raise `StrictJsonError`."""
    return parse_body(data, max_depth=max_depth, allow_non_finite=allow_non_finite).value


def parse_body(
    data: bytes | bytearray | memoryview | str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    allow_non_finite: bool = True,
) -> ParsedBody:
    """`loads`, also returning the document's string values when the fast path has them
    (so a scanner can look at the text without walking the tensors around it)."""
    if not 1 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_LIMIT}, got {max_depth}")
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ParsedBody(_loads_lenient_tokens(raw, max_depth, allow_non_finite), None)
    # One pass keeps only the bytes the checks below count (colons, openers, quotes, escapes).
    marks = raw.translate(None, _NOT_MARKS)
    openers = marks.count(b"[") + marks.count(b"{")
    quotes = marks.count(b'"')
    if openers > max_depth:
        # Stripping strings from the bytes is cheap for few strings (tensors); walking the
        # containers of the value is cheap for many small strings (text batches).
        too_deep = (
            _deeper_than(raw, max_depth)
            if quotes <= _FEW_QUOTES
            else _value_deeper_than(value, max_depth)
        )
        if too_deep:
            return ParsedBody(_CheckingParser(raw, max_depth, allow_non_finite).parse(), None)
    if not quotes:  # no string at all: no keys, no text (a bare tensor)
        return ParsedBody(value, (), ())
    if quotes > _TOKENIZED_QUOTES:
        # Many strings: one `orjson.dumps` beats a Python step per string literal.
        if _may_hold_duplicates(raw, marks, value):
            return ParsedBody(_CheckingParser(raw, max_depth, allow_non_finite).parse(), None)
        return ParsedBody(value, None)
    tokens = _string_tokens(raw)
    if _has_duplicate_keys(raw, tokens):
        # The checking parser reports the duplicate with its position.
        return ParsedBody(_CheckingParser(raw, max_depth, allow_non_finite).parse(), None)
    if any(key and _decode_string(raw, start, end) == "b64" for start, end, key in tokens):
        # SECURITY: a `{"b64": ...}` value is only readable decoded; the scanner must walk.
        return ParsedBody(value, None)
    return ParsedBody(
        value,
        tuple(_decode_string(raw, start, end) for start, end, key in tokens if not key),
        tuple(_decode_string(raw, start, end) for start, end, key in tokens if key),
    )


# ---------------------------------------------------------------------------------------------
# Fast checks on the raw bytes (only for bodies orjson already accepted, so strings are
# well formed and every quote outside a string opens one)

_NOT_MARKS: Final = bytes(b for b in range(256) if b not in b':[{"\\')
_FEW_QUOTES: Final = 64
#: Up to this many quote characters, string literals are located one by one.
_TOKENIZED_QUOTES: Final = 512
_NOT_BRACES: Final = bytes(b for b in range(256) if b not in b"{}")
_JSON_SPACE: Final = frozenset(b" \t\r\n")
_COLON: Final = ord(":")
_OPEN_BRACE: Final = ord("{")
# SECURITY: a `\u003a` escape decodes to ':' in the parsed value but is not a ':' byte in the
# source, which would let an attacker balance the colon counts below; such bodies are checked
# by the full parser instead.
_ESCAPED_COLONS: Final = (b"\\u003a", b"\\u003A")


def _may_hold_duplicates(raw: bytes, marks: bytes, value: Any) -> bool:
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


def _string_tokens(raw: bytes) -> list[tuple[int, int, bool]]:
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


def _decode_string(raw: bytes, start: int, end: int) -> str:
    literal = raw[start + 1 : end]
    if b"\\" not in literal:
        return literal.decode("utf-8")
    decoded: str = orjson.loads(raw[start : end + 1])
    return decoded


def _has_duplicate_keys(raw: bytes, tokens: list[tuple[int, int, bool]]) -> bool:
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
            key = _decode_string(raw, start, end)
            keys = open_objects[-1]
            if key in keys:
                return True
            keys.add(key)
    return False


_BRACKETS_TO_PARENS: Final = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def _deeper_than(raw: bytes, max_depth: int) -> bool:
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


def _value_deeper_than(value: Any, max_depth: int) -> bool:
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


# ---------------------------------------------------------------------------------------------
# Medium path: standard-library parser with hooks, for bodies orjson refused (mostly because of
# NaN/Infinity). Any doubt is handed to the checking parser, which reports it precisely.


class _Doubt(Exception):
    """Raised inside hooks to abandon the medium path."""


def _loads_lenient_tokens(raw: bytes, max_depth: int, allow_non_finite: bool) -> Any:
    checking = _CheckingParser(raw, max_depth, allow_non_finite)
    if not allow_non_finite:
        # Only the checking parser can tell which error orjson saw; let it report.
        return checking.parse()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return checking.parse()
    # On malformed input the depth estimate may be off; the parsers below then refuse anyway.
    if text.startswith("\ufeff") or _deeper_than(raw, max_depth):
        return checking.parse()
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        return checking.parse()
    try:
        value, end = _STDLIB_DECODER.raw_decode(text, _skip_ws(text, 0))
    except (ValueError, _Doubt, RecursionError):
        return checking.parse()
    if _skip_ws(text, end) != len(text):
        return checking.parse()
    return value


_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Doubt
    return result


def _finite_float(token: str) -> float:
    number = float(token)
    if number in (_INF, -_INF):
        raise _Doubt
    return number


def _int_like_orjson(token: str) -> int | float:
    if len(token) > 20:
        raise _Doubt  # the checking parser handles very long numbers without int() limits
    number = int(token)
    return number if _INT_MIN <= number <= _UINT_MAX else float(number)


def _constant(token: str) -> float:
    # json only calls this for NaN, Infinity and -Infinity.
    return float(token)


_INF: Final = float("inf")
_INT_MIN: Final = -(2**63)
_UINT_MAX: Final = 2**64 - 1

_STDLIB_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_pairs_without_duplicates,
    parse_float=_finite_float,
    parse_int=_int_like_orjson,
    parse_constant=_constant,
    strict=True,
)


def _skip_ws(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


_WS: Final = re.compile(r"[ \t\n\r]*")


# ---------------------------------------------------------------------------------------------
# The checking parser: iterative, exact positions; authority on every refusal.

_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_WORD: Final = re.compile(r"-?[A-Za-z_][A-Za-z0-9_]*")
_LITERALS: Final[dict[str, Any]] = {"true": True, "false": False, "null": None}
_NON_FINITE: Final[dict[str, float]] = {
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}
_NON_FINITE_HINTS: Final[dict[str, str]] = {
    "Inf": "write `Infinity`",
    "-Inf": "write `-Infinity`",
    "-NaN": "write `NaN`",
    "nan": "write `NaN`",
    "inf": "write `Infinity`",
    "-inf": "write `-Infinity`",
    "infinity": "write `Infinity`",
    "-infinity": "write `-Infinity`",
}
_CLOSER: Final = {"{": "}", "[": "]"}


class _CheckingParser:
    """Validates and builds the value, raising `StrictJsonError` at the exact position."""

    def __init__(self, raw: bytes, max_depth: int, allow_non_finite: bool) -> None:
        self.raw = raw
        self.max_depth = max_depth
        self.allow_non_finite = allow_non_finite
        self.text = ""

    # -- errors --

    def fail(self, code: str, message: str, char_pos: int) -> StrictJsonError:
        prefix = self.text[:char_pos]
        byte_pos = len(prefix.encode("utf-8"))
        line = prefix.count("\n") + 1
        column = char_pos - (prefix.rfind("\n") + 1) + 1
        return StrictJsonError(code, message, byte_pos, line, column)

    def fail_at_byte(self, code: str, message: str, byte_pos: int) -> StrictJsonError:
        prefix = self.raw[:byte_pos]
        line = prefix.count(b"\n") + 1
        last_line = prefix[prefix.rfind(b"\n") + 1 :]
        column = len(last_line.decode("utf-8", "replace")) + 1
        return StrictJsonError(code, message, byte_pos, line, column)

    def describe(self, pos: int) -> str:
        if pos >= len(self.text):
            return "end of input"
        return f"`{self.text[pos]!s}`" if self.text[pos].isprintable() else repr(self.text[pos])

    # -- parsing --

    def parse(self) -> Any:
        if self.raw.startswith(b"\xef\xbb\xbf"):
            raise self.fail_at_byte("json_invalid_utf8", "byte order mark is not allowed", 0)
        try:
            self.text = self.raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail_at_byte(
                "json_invalid_utf8", f"invalid UTF-8 byte 0x{self.raw[exc.start]:02x}", exc.start
            ) from None
        text = self.text
        pos = _skip_ws(text, 0)
        if pos == len(text):
            raise self.fail("json_empty", "the body is empty", pos)
        value, pos = self.parse_document(pos)
        end = _skip_ws(text, pos)
        if end != len(text):
            raise self.fail(
                "json_trailing_data",
                f"unexpected data after the JSON value: {self.describe(end)}",
                end,
            )
        return value

    def parse_document(self, pos: int) -> tuple[Any, int]:
        text = self.text
        # Each frame: (container, pending key for objects or None for arrays).
        stack: list[tuple[dict[str, Any] | list[Any], str | None]] = []
        keys: list[str] = []
        while True:
            pos = _skip_ws(text, pos)
            char = text[pos] if pos < len(text) else ""
            value: Any
            if char in _CLOSER:
                if len(stack) >= self.max_depth:
                    raise self.fail(
                        "json_too_deep",
                        f"nesting deeper than {self.max_depth} levels is not allowed",
                        pos,
                    )
                container: dict[str, Any] | list[Any] = {} if char == "{" else []
                pos = _skip_ws(text, pos + 1)
                if pos < len(text) and text[pos] == _CLOSER[char]:
                    value, pos = container, pos + 1
                else:
                    stack.append((container, None))
                    if isinstance(container, dict):
                        key, pos = self.parse_key(container, pos)
                        keys.append(key)
                    continue
            else:
                value, pos = self.parse_scalar(pos)
            # Attach the finished value, closing every container it completes.
            while True:
                if not stack:
                    return value, pos
                parent, _ = stack[-1]
                if isinstance(parent, dict):
                    parent[keys[-1]] = value
                else:
                    parent.append(value)
                pos = _skip_ws(text, pos)
                char = text[pos] if pos < len(text) else ""
                closer = "}" if isinstance(parent, dict) else "]"
                if char == ",":
                    pos = _skip_ws(text, pos + 1)
                    if isinstance(parent, dict):
                        keys[-1], pos = self.parse_key(parent, pos)
                    break
                if char == closer:
                    stack.pop()
                    if isinstance(parent, dict):
                        keys.pop()
                    value, pos = parent, pos + 1
                    continue
                raise self.fail(
                    "json_syntax", f"expected `,` or `{closer}`, found {self.describe(pos)}", pos
                )

    def parse_key(self, container: dict[str, Any], pos: int) -> tuple[str, int]:
        text = self.text
        if pos >= len(text) or text[pos] != '"':
            raise self.fail(
                "json_syntax", f"expected a string key, found {self.describe(pos)}", pos
            )
        key, end = self.parse_string(pos)
        if key in container:
            raise self.fail("json_duplicate_key", f"duplicate key `{key}`", pos)
        colon = _skip_ws(text, end)
        if colon >= len(text) or text[colon] != ":":
            raise self.fail(
                "json_syntax", f"expected `:` after a key, found {self.describe(colon)}", colon
            )
        return key, colon + 1

    def parse_string(self, pos: int) -> tuple[str, int]:
        try:
            value, end = _scanstring(self.text, pos + 1, True)
        except json.JSONDecodeError as exc:
            raise self.fail("json_syntax", exc.msg.lower(), exc.pos) from None
        if "\\u" in self.text[pos:end] and _LONE_SURROGATE.search(value):
            raise self.fail(
                "json_invalid_utf8", "string holds a `\\u` escape of a lone surrogate", pos
            )
        return value, end

    def parse_scalar(self, pos: int) -> tuple[Any, int]:
        text = self.text
        char = text[pos] if pos < len(text) else ""
        if char == '"':
            return self.parse_string(pos)
        number = _NUMBER.match(text, pos)
        if number is not None and char != "":
            return self.parse_number(number), number.end()
        word = _WORD.match(text, pos)
        if word is not None:
            token = word.group()
            if token in _LITERALS:
                return _LITERALS[token], word.end()
            if token in _NON_FINITE:
                if self.allow_non_finite:
                    return _NON_FINITE[token], word.end()
                raise self.fail("json_non_finite", f"`{token}` is not allowed here", pos)
            if token in _NON_FINITE_HINTS:
                raise self.fail(
                    "json_non_finite",
                    f"`{token}` is not accepted; {_NON_FINITE_HINTS[token]}",
                    pos,
                )
            raise self.fail("json_syntax", f"unexpected word `{token[:40]}`", pos)
        if char == "":
            raise self.fail("json_syntax", "unexpected end of input, expected a value", pos)
        raise self.fail("json_syntax", f"expected a value, found {self.describe(pos)}", pos)

    def parse_number(self, match: re.Match[str]) -> int | float:
        token = match.group()
        if match.group(1) is None and match.group(2) is None and len(token) <= 21:
            integer = int(token)
            if _INT_MIN <= integer <= _UINT_MAX:
                return integer
        number = float(token)
        if number in (_INF, -_INF):
            raise self.fail("json_number_range", "number is too large for a double", match.start())
        return number


_scanstring: Final[Callable[[str, int, bool], tuple[str, int]]] = _json.scanstring
