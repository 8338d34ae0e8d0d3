"""TF Serving's JSON reader: rapidjson 1.1.0 as TF Serving configures it, and its error texts.

TF Serving parses request bodies with rapidjson (iterative, `NaN`/`Infinity` accepted, bytes
after the root value ignored, first duplicate key wins, no UTF-8 validation) and answers a body
it cannot parse with rapidjson's English message and byte offset. `parse_exact` reproduces
both, so the embedded model server and the gateway (which has its own, stricter parser but
reports TF Serving's message for a body TF Serving also refuses) answer alike.

Pure: no I/O, no aiohttp, no numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

__all__ = [
    "JsonObject",
    "JsonParseError",
    "find_member",
    "is_object",
    "object_members",
    "parse_exact",
]

#: rapidjson's error strings (`rapidjson/error/en.h`).
_DOCUMENT_EMPTY = "The document is empty."
_VALUE_INVALID = "Invalid value."
_OBJECT_MISS_NAME = "Missing a name for object member."
_OBJECT_MISS_COLON = "Missing a colon after a name of object member."
_OBJECT_MISS_COMMA = "Missing a comma or '}' after an object member."
_ARRAY_MISS_COMMA = "Missing a comma or ']' after an array element."
_BAD_HEX = "Incorrect hex digit after \\u escape in string."
_BAD_SURROGATE = "The surrogate pair in string is invalid."
_BAD_ESCAPE = "Invalid escape character in string."
_MISS_QUOTE = "Missing a closing quotation mark in string."
_NUMBER_TOO_BIG = "Number too big to be stored in double."
_MISS_FRACTION = "Miss fraction part in number."
_MISS_EXPONENT = "Miss exponent in number."

_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1


class JsonParseError(ValueError):
    """A body TF Serving's parser refuses; `message` is TF Serving's whole error text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JsonObject:
    """A JSON object as rapidjson's DOM keeps it: every member, in order, duplicates too.

    Lookups return the first member with the key, as rapidjson's `FindMember` does.
    """

    __slots__ = ("members",)

    def __init__(self, members: list[tuple[str, Any]] | None = None) -> None:
        self.members: list[tuple[str, Any]] = members if members is not None else []

    def find(self, key: str) -> tuple[bool, Any]:
        """Return (found, value) for the first member named `key`."""
        for name, value in self.members:
            if name == key:
                return True, value
        return False, None

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"JsonObject({self.members!r})"


def is_object(value: Any) -> bool:
    """Whether a parsed value is a JSON object (an orjson dict or a `JsonObject`)."""
    return isinstance(value, (dict, JsonObject))


def find_member(obj: Any, key: str) -> tuple[bool, Any]:
    """(found, value) of the first member named `key` of a parsed object."""
    if isinstance(obj, JsonObject):
        return obj.find(key)
    if key in obj:
        return True, obj[key]
    return False, None


def object_members(obj: Any) -> Sequence[tuple[str, Any]]:
    """Every (name, value) member of a parsed object, in document order."""
    if isinstance(obj, JsonObject):
        return obj.members
    return list(obj.items())


class _ParseFailure(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


_WHITESPACE = frozenset(b" \t\n\r")
_STRUCTURAL = frozenset(b"[]{},:")
_SIMPLE_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")


class _Parser:
    """rapidjson 1.1.0's iterative parser with kParseNanAndInfFlag | kParseStopWhenDoneFlag."""

    def __init__(self, data: bytes) -> None:
        # A NUL byte reads as end of input, exactly as rapidjson's MemoryStream.Peek() does.
        nul = data.find(b"\0")
        self.data = data
        self.end = nul if nul >= 0 else len(data)

    def peek(self, i: int) -> int:
        return self.data[i] if i < self.end else 0

    def skip(self, i: int) -> int:
        data, end = self.data, self.end
        while i < end and data[i] in _WHITESPACE:
            i += 1
        return i

    # The parser's loop, kept whole: a value costs no call beyond its own reader. Moving the
    # container handling into methods (a call per value and per container) measured 2-7%
    # slower on predict bodies of 4k-12k values (best of 35 runs each).
    def parse(self) -> Any:  # noqa: C901, PLR0912, PLR0915
        i = 0
        if self.data.startswith(b"\xef\xbb\xbf"):
            i = 3  # the UTF-8 input stream skips a byte-order mark
        i = self.skip(i)
        # Stack frames: [container, is_object]; `key` waits for its value inside objects.
        stack: list[tuple[Any, str | None]] = []
        state = "start"
        while True:
            # Value position: `state` says which parser state we are in for error reporting.
            c = self.peek(i)
            if c == 0 or c in _STRUCTURAL and c not in (ord("["), ord("{")):
                if state == "start":
                    raise _ParseFailure(_DOCUMENT_EMPTY, i)
                raise _ParseFailure(_VALUE_INVALID, i)
            value: Any
            if c == ord("["):
                i = self.skip(i + 1)
                if self.peek(i) == ord("]"):
                    value, i = [], i + 1
                else:
                    stack.append(([], None))
                    state = "array_initial"
                    continue
            elif c == ord("{"):
                i = self.skip(i + 1)
                if self.peek(i) == ord("}"):
                    value, i = JsonObject(), i + 1
                else:
                    key, i = self.member_key(i)
                    stack.append((JsonObject(), key))
                    state = "key_value_delimiter"
                    continue
            elif c == ord('"'):
                value, i = self.string(i)
            elif c in (ord("n"), ord("t"), ord("f")):
                value, i = self.literal(i)
            else:
                value, i = self.number(i)
            # A value is complete: attach it and read what follows, closing containers.
            while True:
                if not stack:
                    return value  # kParseStopWhenDoneFlag: bytes after the root are ignored
                container, pending_key = stack[-1]
                i = self.skip(i)
                c = self.peek(i)
                if pending_key is None:
                    container.append(value)
                    if c == ord(","):
                        i = self.skip(i + 1)
                        state = "element_delimiter"
                        break
                    if c == ord("]"):
                        stack.pop()
                        value, i = container, i + 1
                        continue
                    raise _ParseFailure(_ARRAY_MISS_COMMA, i)
                container.members.append((pending_key, value))
                if c == ord(","):
                    i = self.skip(i + 1)
                    new_key, i = self.member_key(i)
                    stack[-1] = (container, new_key)
                    state = "key_value_delimiter"
                    break
                if c == ord("}"):
                    stack.pop()
                    value, i = container, i + 1
                    continue
                raise _ParseFailure(_OBJECT_MISS_COMMA, i)

    def member_key(self, i: int) -> tuple[str, int]:
        if self.peek(i) != ord('"'):
            raise _ParseFailure(_OBJECT_MISS_NAME, i)
        key, i = self.string(i)
        i = self.skip(i)
        if self.peek(i) != ord(":"):
            raise _ParseFailure(_OBJECT_MISS_COLON, i)
        return key, self.skip(i + 1)

    def hex4(self, i: int, escape_offset: int) -> tuple[int, int]:
        digits = self.data[i : i + 4] if i + 4 <= self.end else b""
        if len(digits) != 4 or any(d not in _HEX for d in digits):
            raise _ParseFailure(_BAD_HEX, escape_offset)
        return int(digits, 16), i + 4

    def string(self, i: int) -> tuple[str, int]:
        data, end = self.data, self.end
        i += 1
        parts: list[str] = []
        start = i
        while True:
            c = data[i] if i < end else 0
            if c == ord('"'):
                parts.append(data[start:i].decode("utf-8", "surrogateescape"))
                return "".join(parts), i + 1
            if c == ord("\\"):
                parts.append(data[start:i].decode("utf-8", "surrogateescape"))
                escape_offset = i
                e = data[i + 1] if i + 1 < end else 0
                if e in _SIMPLE_ESCAPES:
                    parts.append(_SIMPLE_ESCAPES[e])
                    i += 2
                elif e == ord("u"):
                    code, i = self.hex4(i + 2, escape_offset)
                    if 0xD800 <= code <= 0xDBFF:
                        if data[i : i + 2] != b"\\u" or i + 2 > end:
                            raise _ParseFailure(_BAD_SURROGATE, escape_offset)
                        low, i = self.hex4(i + 2, escape_offset)
                        if not 0xDC00 <= low <= 0xDFFF:
                            raise _ParseFailure(_BAD_SURROGATE, escape_offset)
                        code = (((code - 0xD800) << 10) | (low - 0xDC00)) + 0x10000
                    parts.append(chr(code))
                else:
                    raise _ParseFailure(_BAD_ESCAPE, escape_offset)
                start = i
                continue
            if c < 0x20:
                raise _ParseFailure(_MISS_QUOTE if c == 0 else _BAD_ESCAPE, i)
            i += 1

    def literal(self, i: int) -> tuple[Any, int]:
        for text, value in ((b"null", None), (b"true", True), (b"false", False)):
            if self.data[i] == text[0]:
                for j in range(1, len(text)):
                    if self.peek(i + j) != text[j]:
                        raise _ParseFailure(_VALUE_INVALID, i + j)
                return value, i + len(text)
        raise AssertionError("unreachable")

    def consume_word(self, i: int, word: bytes) -> tuple[bool, int]:
        for j, ch in enumerate(word):
            if self.peek(i + j) != ch:
                return False, i + j
        return True, i + len(word)

    def number(self, i: int) -> tuple[Any, int]:
        start = i
        minus = self.peek(i) == ord("-")
        if minus:
            i += 1
        c = self.peek(i)
        if c == ord("N") or c == ord("I"):
            return self.nan_or_infinity(i, minus)
        if c == ord("0"):
            i += 1
        elif ord("1") <= c <= ord("9"):
            while self.peek(i) in _DIGITS:
                i += 1
        else:
            raise _ParseFailure(_VALUE_INVALID, i)
        is_double = False
        fraction_digits = 0
        if self.peek(i) == ord("."):
            i += 1
            if self.peek(i) not in _DIGITS:
                raise _ParseFailure(_MISS_FRACTION, i)
            while self.peek(i) in _DIGITS:
                i += 1
                fraction_digits += 1
            is_double = True
        if self.peek(i) in (ord("e"), ord("E")):
            i = self.exponent(i + 1, start, fraction_digits)
            is_double = True
        text = self.data[start:i]
        if is_double:
            return float(text), i
        # A sign and 20 digits hold every 64-bit integer; longer texts go straight to a
        # double (int() would refuse texts past sys.get_int_max_str_digits()).
        if len(text) <= 21 and _INT64_MIN <= (integer := int(text)) <= _UINT64_MAX:
            return integer, i
        return _beyond_int64(text, start), i

    def nan_or_infinity(self, i: int, minus: bool) -> tuple[float, int]:
        """`NaN`, `Inf` or `Infinity` (kParseNanAndInfFlag), after an optional minus."""
        ok, i = self.consume_word(i, b"NaN") if self.peek(i) == ord("N") else (False, i)
        if ok:
            return math.nan, i
        ok, i = self.consume_word(i, b"Inf")
        if not ok:
            raise _ParseFailure(_VALUE_INVALID, i)
        if self.peek(i) == ord("i"):
            ok, i = self.consume_word(i, b"inity")
            if not ok:
                raise _ParseFailure(_VALUE_INVALID, i)
        return (-math.inf if minus else math.inf), i

    def exponent(self, i: int, start: int, fraction_digits: int) -> int:
        """Read an exponent's sign and digits (after the `e`); a positive exponent past what
        a double holds is rapidjson's "Number too big" at the number's start."""
        negative_exponent = False
        if self.peek(i) in (ord("+"), ord("-")):
            negative_exponent = self.peek(i) == ord("-")
            i += 1
        if self.peek(i) not in _DIGITS:
            raise _ParseFailure(_MISS_EXPONENT, i)
        exponent = 0
        while self.peek(i) in _DIGITS:
            exponent = exponent * 10 + self.peek(i) - ord("0")
            i += 1
            if not negative_exponent and exponent > 308 + fraction_digits:
                raise _ParseFailure(_NUMBER_TOO_BIG, start)
        return i


def _beyond_int64(text: bytes, start: int) -> float:
    """An integer text past the 64-bit range, as rapidjson reads it: a double."""
    as_double = float(text)
    if math.isinf(as_double):
        raise _ParseFailure(_NUMBER_TOO_BIG, start)
    return as_double


def parse_exact(body: bytes) -> Any:
    """Parse `body` exactly as TF Serving does; raise `JsonParseError` with its message.

    Objects come back as `JsonObject`, arrays as lists, numbers as int (64-bit range) or
    float, strings as str (undecodable bytes kept as surrogate escapes).
    """
    if not body:
        raise JsonParseError("JSON Parse error: The document is empty")
    try:
        return _Parser(body).parse()
    except _ParseFailure as failure:
        raise JsonParseError(
            f"JSON Parse error: {failure.reason} at offset: {failure.offset}"
        ) from None
