"""TF Serving's JSON writer: rapidjson's Writer and PrettyWriter, TF Serving's float formats.

TF Serving writes JSON with rapidjson (strings escaped minimally with upper-case hex, doubles
in Grisu2's shortest form, a 4-space PrettyWriter layout) and prints tensor values with its own
`WriteDecimal`. Error messages quote the offending request value with `json_value_to_string`,
cut to 256 bytes. Both the gateway and the embedded model server write with these functions,
so they answer byte for byte alike.

Pure: no I/O, no aiohttp, no numpy (float32 rounding goes through `struct`).
"""

from __future__ import annotations

import decimal
import math
import struct
from collections.abc import Iterator
from typing import Any, Final

from gateway.tfserving.jsonparse import is_object, object_members

__all__ = [
    "scalar_token",
    "MAX_JSON_IN_MESSAGE",
    "encode_text",
    "format_float32",
    "format_float64",
    "json_string",
    "json_value_to_string",
    "rapidjson_dtoa",
]

#: JSON in error messages is cut to this many bytes (TF Serving >= 2.18).
MAX_JSON_IN_MESSAGE: Final = 256

_FLOAT32: Final = struct.Struct("<f")


def _to_float32(value: float) -> float:
    """`value` rounded to the nearest float32 (infinite when out of float32's range)."""
    try:
        return float(_FLOAT32.unpack(_FLOAT32.pack(value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _escape_char(ch: str) -> str:
    special = _ESCAPES.get(ch)
    if special is not None:
        return special
    return f"\\u{ord(ch):04X}"


_NEEDS_ESCAPE = frozenset([*_ESCAPES, *(chr(c) for c in range(0x20))])


def json_string(text: str) -> str:
    """A JSON string literal as rapidjson's Writer::String writes it.

    Only `"`, `\\` and C0 controls are escaped (hex in upper case); everything else,
    non-ASCII included, is written as it is.
    """
    if not any(ch in _NEEDS_ESCAPE for ch in text):
        return f'"{text}"'
    return '"' + "".join(_escape_char(ch) if ch in _NEEDS_ESCAPE else ch for ch in text) + '"'


def rapidjson_dtoa(value: float) -> str:
    """Format a finite double as rapidjson's Writer::Double (Grisu2 + Prettify)."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    k = int(digits_tuple.exponent)
    length = len(digits)
    kk = length + k
    if 0 <= k and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * (-kk) + digits
    else:
        exponent = kk - 1
        mantissa = digits if length == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{exponent}"
    return sign + text


def format_float32(value: float) -> str:
    """Format a float32 value as TF Serving's WriteDecimal<float> does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    if _to_float32(float(text)) != _to_float32(value):
        text = f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def format_float64(value: float) -> str:
    """Format a double as TF Serving's WriteDecimal<double> does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    if float(text) != value:
        text = f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


class _StopWriting(Exception):
    """rapidjson's Writer refuses NaN/Inf inside containers; `Accept` stops there."""


def _pretty_tokens(value: Any) -> Iterator[str]:
    """Tokens of rapidjson's PrettyWriter (4-space indent) for a DOM value, iteratively."""
    # Each frame: (iterator over children, in_object, level).
    stack: list[tuple[Iterator[Any], bool, int]] = []
    pending: Any = value
    level = 0
    first = True
    while True:
        if pending is not _NOTHING:
            item = pending
            pending = _NOTHING
            if isinstance(item, list) or is_object(item):
                in_object = not isinstance(item, list)
                if len(item) == 0:
                    yield "{}" if in_object else "[]"
                else:
                    yield "{" if in_object else "["
                    children = iter(object_members(item)) if in_object else iter(item)
                    stack.append((children, in_object, level + 1))
                    level += 1
                    first = True
            else:
                yield scalar_token(item)
        if not stack:
            return
        children, in_object, frame_level = stack[-1]
        child: Any = next(children, _NOTHING)
        if child is _NOTHING:
            stack.pop()
            level = frame_level - 1
            yield "\n" + "    " * level + ("}" if in_object else "]")
            first = False
            continue
        prefix = ("\n" if first else ",\n") + "    " * frame_level
        first = False
        if in_object:
            name, child_value = child
            yield prefix + json_string(name) + ": "
            pending = child_value
        else:
            yield prefix
            pending = child
        if isinstance(pending, float) and not math.isfinite(pending):
            raise _StopWriting
        level = frame_level


_NOTHING = object()


def scalar_token(value: Any) -> str:
    """A JSON scalar as rapidjson's writers print it."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return rapidjson_dtoa(value)
    return json_string(value)


def _truncate_utf8(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "surrogateescape")


def json_value_to_string(value: Any) -> str:
    """TF Serving's JsonValueToString: pretty JSON of a request value, cut to 256 bytes."""
    if isinstance(value, float):
        if -3.4028234e38 <= value <= 3.4028234e38:  # rapidjson's IsFloat()
            return format_float32(_to_float32(value))
        return format_float64(value)
    pieces: list[str] = []
    size = 0
    try:
        for token in _pretty_tokens(value):
            pieces.append(token)
            size += len(token)
            if size > MAX_JSON_IN_MESSAGE:
                break
    except _StopWriting:
        pass
    return _truncate_utf8("".join(pieces), MAX_JSON_IN_MESSAGE)


def encode_text(text: str) -> bytes:
    """UTF-8 of a message that may carry undecodable request bytes or lone surrogates."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
