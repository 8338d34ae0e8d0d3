"""The checking parser: iterative, exact positions, and the authority on every refusal.

Whichever path of `strictjson` noticed a problem, the refusal is reported by this parser, so
the message and position do not depend on the path taken.
"""

from __future__ import annotations

import _json
import json
import re
from collections.abc import Callable
from typing import Any, Final

__all__ = ["StrictJsonError"]


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


SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
INF: Final = float("inf")
INT_MIN: Final = -(2**63)
UINT_MAX: Final = 2**64 - 1


def skip_ws(text: str, pos: int) -> int:
    """The position of the first character at or after `pos` that is not JSON whitespace."""
    match = _WS.match(text, pos)
    return match.end() if match else pos


_WS: Final = re.compile(r"[ \t\n\r]*")
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


class CheckingParser:
    """Validates and builds the value, raising `StrictJsonError` at the exact position."""

    def __init__(self, raw: bytes, max_depth: int, allow_non_finite: bool) -> None:
        self.raw = raw
        self.max_depth = max_depth
        self.allow_non_finite = allow_non_finite
        self.text = ""

    # -- errors --

    def fail(self, code: str, message: str, char_pos: int) -> StrictJsonError:
        """A `StrictJsonError` at character `char_pos` of the text, with line and column."""
        prefix = self.text[:char_pos]
        byte_pos = len(prefix.encode("utf-8"))
        line = prefix.count("\n") + 1
        column = char_pos - (prefix.rfind("\n") + 1) + 1
        return StrictJsonError(code, message, byte_pos, line, column)

    def fail_at_byte(self, code: str, message: str, byte_pos: int) -> StrictJsonError:
        """A `StrictJsonError` at byte `byte_pos` of the raw body."""
        prefix = self.raw[:byte_pos]
        line = prefix.count(b"\n") + 1
        last_line = prefix[prefix.rfind(b"\n") + 1 :]
        column = len(last_line.decode("utf-8", "replace")) + 1
        return StrictJsonError(code, message, byte_pos, line, column)

    def describe(self, pos: int) -> str:
        """What the text holds at `pos`, quoted briefly for a message."""
        if pos >= len(self.text):
            return "end of input"
        return f"`{self.text[pos]!s}`" if self.text[pos].isprintable() else repr(self.text[pos])

    # -- parsing --

    def parse(self) -> Any:
        """The whole document; trailing data or nothing at all raises."""
        if self.raw.startswith(b"\xef\xbb\xbf"):
            raise self.fail_at_byte("json_invalid_utf8", "byte order mark is not allowed", 0)
        try:
            self.text = self.raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail_at_byte(
                "json_invalid_utf8", f"invalid UTF-8 byte 0x{self.raw[exc.start]:02x}", exc.start
            ) from None
        text = self.text
        pos = skip_ws(text, 0)
        if pos == len(text):
            raise self.fail("json_empty", "the body is empty", pos)
        value, pos = self.parse_document(pos)
        end = skip_ws(text, pos)
        if end != len(text):
            raise self.fail(
                "json_trailing_data",
                f"unexpected data after the JSON value: {self.describe(end)}",
                end,
            )
        return value

    def parse_document(self, pos: int) -> tuple[Any, int]:
        """The value starting at `pos` and the position after it, containers iteratively."""
        text = self.text
        # Each frame: (container, pending key for objects or None for arrays).
        stack: list[tuple[dict[str, Any] | list[Any], str | None]] = []
        keys: list[str] = []
        while True:
            pos = skip_ws(text, pos)
            char = text[pos] if pos < len(text) else ""
            value: Any
            if char in _CLOSER:
                opened, value, pos = self.open_container(char, pos, stack, keys)
                if opened:
                    continue
            else:
                value, pos = self.parse_scalar(pos)
            done, value, pos = self.attach(value, pos, stack, keys)
            if done:
                return value, pos

    def open_container(
        self,
        char: str,
        pos: int,
        stack: list[tuple[dict[str, Any] | list[Any], str | None]],
        keys: list[str],
    ) -> tuple[bool, Any, int]:
        """Open the container at `pos`: (True, None, pos of its first member), or (False, the
        empty container, pos after it) when it closes at once."""
        text = self.text
        if len(stack) >= self.max_depth:
            raise self.fail(
                "json_too_deep",
                f"nesting deeper than {self.max_depth} levels is not allowed",
                pos,
            )
        container: dict[str, Any] | list[Any] = {} if char == "{" else []
        pos = skip_ws(text, pos + 1)
        if pos < len(text) and text[pos] == _CLOSER[char]:
            return False, container, pos + 1
        stack.append((container, None))
        if isinstance(container, dict):
            key, pos = self.parse_key(container, pos)
            keys.append(key)
        return True, None, pos

    def attach(
        self,
        value: Any,
        pos: int,
        stack: list[tuple[dict[str, Any] | list[Any], str | None]],
        keys: list[str],
    ) -> tuple[bool, Any, int]:
        """Attach a finished value, closing every container it completes: (True, the
        document, pos) at the end, else (False, None, pos of the next member)."""
        text = self.text
        while True:
            if not stack:
                return True, value, pos
            parent, _ = stack[-1]
            if isinstance(parent, dict):
                parent[keys[-1]] = value
            else:
                parent.append(value)
            pos = skip_ws(text, pos)
            char = text[pos] if pos < len(text) else ""
            closer = "}" if isinstance(parent, dict) else "]"
            if char == ",":
                pos = skip_ws(text, pos + 1)
                if isinstance(parent, dict):
                    keys[-1], pos = self.parse_key(parent, pos)
                return False, None, pos
            if char != closer:
                raise self.fail(
                    "json_syntax", f"expected `,` or `{closer}`, found {self.describe(pos)}", pos
                )
            stack.pop()
            if isinstance(parent, dict):
                keys.pop()
            value, pos = parent, pos + 1

    def parse_key(self, container: dict[str, Any], pos: int) -> tuple[str, int]:
        """An object key and the position after its colon; a duplicate key raises."""
        text = self.text
        if pos >= len(text) or text[pos] != '"':
            raise self.fail(
                "json_syntax", f"expected a string key, found {self.describe(pos)}", pos
            )
        key, end = self.parse_string(pos)
        if key in container:
            raise self.fail("json_duplicate_key", f"duplicate key `{key}`", pos)
        colon = skip_ws(text, end)
        if colon >= len(text) or text[colon] != ":":
            raise self.fail(
                "json_syntax", f"expected `:` after a key, found {self.describe(colon)}", colon
            )
        return key, colon + 1

    def parse_string(self, pos: int) -> tuple[str, int]:
        """A string literal's value and the position after it; a lone surrogate raises."""
        try:
            value, end = _scanstring(self.text, pos + 1, True)
        except json.JSONDecodeError as exc:
            raise self.fail("json_syntax", exc.msg.lower(), exc.pos) from None
        if "\\u" in self.text[pos:end] and LONE_SURROGATE.search(value):
            raise self.fail(
                "json_invalid_utf8", "string holds a `\\u` escape of a lone surrogate", pos
            )
        return value, end

    def parse_scalar(self, pos: int) -> tuple[Any, int]:
        """A string, number or literal at `pos`, and the position after it."""
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
        """The value of the number token `match` as orjson reads it; past a double raises."""
        token = match.group()
        if match.group(1) is None and match.group(2) is None and len(token) <= 21:
            integer = int(token)
            if INT_MIN <= integer <= UINT_MAX:
                return integer
        number = float(token)
        if number in (INF, -INF):
            raise self.fail("json_number_range", "number is too large for a double", match.start())
        return number


_scanstring: Final[Callable[[str, int, bool], tuple[str, int]]] = _json.scanstring
