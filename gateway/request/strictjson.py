"""Strict parsing of request bodies: the backend receives exactly the JSON the gateway inspected.

TF Serving parses bodies with rapidjson (https://rapidjson.org), which differs from Python's
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
for float tensors (https://www.tensorflow.org/tfx/serving/api_rest) and refusing them would
break drop-in clients. They are parsed to Python floats. Pass `allow_non_finite=False` for JSON
the gateway owns (its own API). The other spellings rapidjson happens to accept (`Inf`, `-Inf`,
`-NaN`) are always refused: they are undocumented, and a clear 400 beats a differential. Numbers
too large for a double (`1e400`) are refused, as rapidjson does.

Rule 5 — nesting deeper than `max_depth` (default 64, at most 254) is refused. rapidjson
parses iteratively and accepts 500 000 levels, but a masked body is serialised again with
orjson, which stops at 254 levels, and real tensors are a handful of levels deep.

Rule 6 — an empty body (or only whitespace) is refused.

Integers beyond the 64-bit range become floats, as in orjson and in rapidjson.

Speed: the fast path is `orjson.loads` (which enforces rules 2, 3, 6 and part of 4) plus two
cheap checks on the raw bytes (`rawjson`), one for duplicate keys (orjson silently keeps the
last) and one for depth. For bodies with few strings (tensors with a few keys and notes) the
duplicate check locates every string literal with `bytes.find`, which also yields the string
values for the scanner (`parse_body`), so neither has to walk the numbers. Bodies with
`NaN`/`Infinity` take the standard library parser with hooks. Every refusal is finally reported
by a small checking parser (`jsoncheck`) that knows exact positions, so the messages do not
depend on which path noticed the problem.

Compressed bodies: `inflate()` (from the protocol core, gateway/tfserving/inflate.py, and
re-exported here) undoes `Content-Encoding: gzip` (and `deflate`) with an output size limit, so
the inflated body can be inspected like any other.
"""

from __future__ import annotations

import json
from typing import Any, Final, NamedTuple

import orjson

from gateway.request.jsoncheck import (
    INF,
    INT_MIN,
    SURROGATE_ESCAPE,
    UINT_MAX,
    CheckingParser,
    StrictJsonError,
    skip_ws,
)
from gateway.request.rawjson import (
    FEW_QUOTES,
    NOT_MARKS,
    TOKENIZED_QUOTES,
    decode_string,
    deeper_than,
    has_duplicate_keys,
    may_hold_duplicates,
    string_tokens,
    value_deeper_than,
)
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
    "ParsedBody",
    "StrictJsonError",
    "UnsupportedEncodingError",
    "inflate",
    "loads",
    "parse_body",
]


DEFAULT_MAX_DEPTH: Final = 64
#: orjson serialises at most 254 levels; a deeper body could be inspected but not re-sent masked.
MAX_DEPTH_LIMIT: Final = 254


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
    marks = raw.translate(None, NOT_MARKS)
    openers = marks.count(b"[") + marks.count(b"{")
    quotes = marks.count(b'"')
    if openers > max_depth:
        # Stripping strings from the bytes is cheap for few strings (tensors); walking the
        # containers of the value is cheap for many small strings (text batches).
        too_deep = (
            deeper_than(raw, max_depth)
            if quotes <= FEW_QUOTES
            else value_deeper_than(value, max_depth)
        )
        if too_deep:
            return ParsedBody(CheckingParser(raw, max_depth, allow_non_finite).parse(), None)
    if not quotes:  # no string at all: no keys, no text (a bare tensor)
        return ParsedBody(value, (), ())
    if quotes > TOKENIZED_QUOTES:
        # Many strings: one `orjson.dumps` beats a Python step per string literal.
        if may_hold_duplicates(raw, marks, value):
            return ParsedBody(CheckingParser(raw, max_depth, allow_non_finite).parse(), None)
        return ParsedBody(value, None)
    tokens = string_tokens(raw)
    if has_duplicate_keys(raw, tokens):
        # The checking parser reports the duplicate with its position.
        return ParsedBody(CheckingParser(raw, max_depth, allow_non_finite).parse(), None)
    if any(key and decode_string(raw, start, end) == "b64" for start, end, key in tokens):
        # SECURITY: a `{"b64": ...}` value is only readable decoded; the scanner must walk.
        return ParsedBody(value, None)
    return ParsedBody(
        value,
        tuple(decode_string(raw, start, end) for start, end, key in tokens if not key),
        tuple(decode_string(raw, start, end) for start, end, key in tokens if key),
    )


# Medium path: standard-library parser with hooks, for bodies orjson refused (mostly because
# of NaN/Infinity). Any doubt is handed to the checking parser, which reports it precisely.


class _Doubt(Exception):
    """Raised inside hooks to abandon the medium path."""


def _loads_lenient_tokens(raw: bytes, max_depth: int, allow_non_finite: bool) -> Any:
    checking = CheckingParser(raw, max_depth, allow_non_finite)
    if not allow_non_finite:
        # Only the checking parser can tell which error orjson saw; let it report.
        return checking.parse()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return checking.parse()
    # On malformed input the depth estimate may be off; the parsers below then refuse anyway.
    if text.startswith("\ufeff") or deeper_than(raw, max_depth):
        return checking.parse()
    if "\\u" in text and SURROGATE_ESCAPE.search(text):
        return checking.parse()
    try:
        value, end = _STDLIB_DECODER.raw_decode(text, skip_ws(text, 0))
    except (ValueError, _Doubt, RecursionError):
        return checking.parse()
    if skip_ws(text, end) != len(text):
        return checking.parse()
    return value


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Doubt
    return result


def _finite_float(token: str) -> float:
    number = float(token)
    if number in (INF, -INF):
        raise _Doubt
    return number


def _int_like_orjson(token: str) -> int | float:
    if len(token) > 20:
        raise _Doubt  # the checking parser handles very long numbers without int() limits
    number = int(token)
    return number if INT_MIN <= number <= UINT_MAX else float(number)


def _constant(token: str) -> float:
    # json only calls this for NaN, Infinity and -Infinity.
    return float(token)


_STDLIB_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_pairs_without_duplicates,
    parse_float=_finite_float,
    parse_int=_int_like_orjson,
    parse_constant=_constant,
    strict=True,
)
