"""Strict request-body parsing: every refusal, exact positions, agreement with json, inflation."""

from __future__ import annotations

import gzip
import json
import math
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.request import jsoncheck, strictjson
from gateway.request.strictjson import (
    BodyTooLargeError,
    CorruptBodyError,
    StrictJsonError,
    UnsupportedEncodingError,
    inflate,
    loads,
)
from tests.documents import string_values

VALID_DOCUMENTS: list[bytes] = [
    b'{"instances": [{"image_bytes": {"b64": "iVBORw0KGgo="}, "note": "SKU 4711"}]}',
    b'{"signature_name": "", "inputs": {"x": [[1, 2.5, -3e-2], [0, 0.0, 1E+2]]}}',
    b'[true, false, null, "a\\"b\\\\c\\/d\\b\\f\\n\\r\\t", "\\u00e9\\ud83d\\ude00"]',
    '{"note": "Rückruf 客户 😀"}'.encode(),
    b' \t\r\n{"a" : [ ] , "b" : { } }\n',
    b'"just a string"',
    b"-0",
    b'{"url": "https://example.org:8443/a?b=c", "time": "10:00:00"}',
    b'{"k": 18446744073709551615, "n": -9223372036854775808}',
]


def _same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("body", VALID_DOCUMENTS)
def test_valid_documents_parse_like_json(body: bytes) -> None:
    assert _same(loads(body), json.loads(body))


@pytest.mark.parametrize("body", VALID_DOCUMENTS)
def test_checking_parser_agrees_with_fast_path(body: bytes) -> None:
    checked = jsoncheck.CheckingParser(body, 64, True).parse()
    assert _same(checked, loads(body))


def test_str_input_is_accepted() -> None:
    assert loads('{"a": [1]}') == {"a": [1]}


def test_integers_beyond_64_bits_become_floats_on_every_path() -> None:
    big = b"[123456789012345678901234567890]"
    assert loads(big) == [1.2345678901234568e29]
    assert jsoncheck.CheckingParser(big, 8, True).parse() == [1.2345678901234568e29]
    assert loads(b"[NaN, 123456789012345678901234567890]")[1] == 1.2345678901234568e29


# ---------------------------------------------------------------------------------------------
# Refusals: code, byte position, line and column


REFUSALS: list[tuple[str, bytes, str, int]] = [
    ("duplicate top-level key", b'{"a": 1, "a": 2}', "json_duplicate_key", 9),
    ("duplicate nested key", b'{"x": {"c": 1, "c": 2}}', "json_duplicate_key", 15),
    ("duplicate via escape", b'{"\\u0061": 1, "a": 2}', "json_duplicate_key", 14),
    (
        "duplicate hidden by escaped colon",
        b'{"x": "\\u003a", "a": 1, "a": 2}',
        "json_duplicate_key",
        24,
    ),
    ("duplicate next to NaN", b'{"a": NaN, "a": 1}', "json_duplicate_key", 11),
    ("duplicate instances", b'{"instances": [1], "instances": [2]}', "json_duplicate_key", 19),
    ("trailing value", b'{"a": 1} {"a": 2}', "json_trailing_data", 9),
    ("trailing garbage", b"[1]\n\nx", "json_trailing_data", 5),
    ("trailing after NaN document", b"[NaN] x", "json_trailing_data", 6),
    ("invalid byte", b'{"a": "\xff"}', "json_invalid_utf8", 7),
    ("overlong encoding", b'["\xc0\xaf"]', "json_invalid_utf8", 2),
    ("encoded surrogate", b'["\xed\xa0\x80"]', "json_invalid_utf8", 2),
    ("truncated sequence", b'["\xe6\x97"]', "json_invalid_utf8", 2),
    ("byte order mark", b'\xef\xbb\xbf{"a": 1}', "json_invalid_utf8", 0),
    ("lone high surrogate escape", b'["\\ud800"]', "json_invalid_utf8", 1),
    ("lone low surrogate escape", b'{"k": "x\\udc00"}', "json_invalid_utf8", 6),
    ("Inf", b"[Inf]", "json_non_finite", 1),
    ("-Inf", b"[1, -Inf]", "json_non_finite", 4),
    ("-NaN", b"[-NaN]", "json_non_finite", 1),
    ("lower-case nan", b'{"a": nan}', "json_non_finite", 6),
    ("number too large", b"[1e400]", "json_number_range", 1),
    ("huge integer literal", b"[" + b"9" * 400 + b"]", "json_number_range", 1),
    ("empty", b"", "json_empty", 0),
    ("only whitespace", b" \n\t", "json_empty", 3),
    ("trailing comma", b"[1, 2,]", "json_syntax", 6),
    ("missing colon", b'{"a" 1}', "json_syntax", 5),
    ("single quotes", b"{'a': 1}", "json_syntax", 1),
    ("bare word", b"[undefined]", "json_syntax", 1),
    ("control character", b'["a\x01b"]', "json_syntax", 3),
    ("leading zero", b"[01]", "json_syntax", 2),
    ("comment", b"[1] // no", "json_trailing_data", 4),
]


@pytest.mark.parametrize(
    ("body", "code", "position"),
    [pytest.param(body, code, pos, id=name) for name, body, code, pos in REFUSALS],
)
def test_refusals_name_the_problem_and_its_byte(body: bytes, code: str, position: int) -> None:
    with pytest.raises(StrictJsonError) as caught:
        loads(body)
    assert caught.value.code == code
    assert caught.value.position == position
    assert caught.value.http_status == 400
    assert str(caught.value).startswith(caught.value.message)


def test_duplicate_key_message_names_the_key() -> None:
    with pytest.raises(StrictJsonError, match="duplicate key `instances`"):
        loads(b'{"instances": [1], "instances": [2]}')


def test_nan_and_infinity_follow_tf_serving_by_default() -> None:
    value = loads(b'{"inputs": [NaN, Infinity, -Infinity, 1.5]}')
    assert math.isnan(value["inputs"][0])
    assert value["inputs"][1:] == [math.inf, -math.inf, 1.5]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_refused_when_not_allowed(token: bytes) -> None:
    with pytest.raises(StrictJsonError) as caught:
        loads(b"[1, " + token + b"]", allow_non_finite=False)
    assert caught.value.code == "json_non_finite"
    assert caught.value.position == 4


def test_line_and_column_on_multiline_bodies() -> None:
    body = '{\n  "note": "é",\n  "note": 2\n}'.encode()
    with pytest.raises(StrictJsonError) as caught:
        loads(body)
    assert (caught.value.line, caught.value.column) == (3, 3)
    assert caught.value.position == body.index(b'"note": 2')


def test_column_counts_characters_not_bytes() -> None:
    body = '["é€😀", 1] x'.encode()
    with pytest.raises(StrictJsonError) as caught:
        loads(body)
    assert caught.value.column == 12
    assert caught.value.position == len('["é€😀", 1] '.encode())


# ---------------------------------------------------------------------------------------------
# Depth


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("max_depth", [1, 2, 5, 64, 254])
def test_depth_limit_is_exact(max_depth: int) -> None:
    assert loads(_nested(max_depth), max_depth=max_depth) is not None
    with pytest.raises(StrictJsonError) as caught:
        loads(_nested(max_depth + 1), max_depth=max_depth)
    assert caught.value.code == "json_too_deep"
    assert caught.value.position == max_depth


def test_depth_counts_objects_and_ignores_brackets_in_strings() -> None:
    body = b'{"a": {"b": ["[[[[[[[[", "{{{{{{"]}}'
    assert loads(body, max_depth=3) == {"a": {"b": ["[[[[[[[[", "{{{{{{"]}}
    with pytest.raises(StrictJsonError):
        loads(body, max_depth=2)
    escaped = b'{"a": ["\\"[[[[[[[[", 1]}'
    assert loads(escaped, max_depth=2) == {"a": ['"[[[[[[[[', 1]}


def test_depth_of_text_heavy_bodies() -> None:
    # Many strings take the path that walks the parsed value instead of the bytes.
    strings = ", ".join(f'"s{i}"' for i in range(100))
    body = ("[" * 10 + strings + "]" * 10).encode()
    assert len(loads(body, max_depth=10)[0][0][0][0][0][0][0][0][0]) == 100
    with pytest.raises(StrictJsonError) as caught:
        loads(body, max_depth=9)
    assert (caught.value.code, caught.value.position) == ("json_too_deep", 9)


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1, "b": 2}', b'{"a": {"x": 1}, "b": 2}', b'{"a": "x:y"}', b'{"a": ":", "a": 1}'],
)
def test_duplicate_check_shortcut_is_exact(body: bytes) -> None:
    expected_error = body.count(b'"a"') > 1
    if expected_error:
        with pytest.raises(StrictJsonError):
            loads(body)
    else:
        assert loads(body) == json.loads(body)


def test_deep_bodies_with_nan_and_beyond_orjson_are_refused_without_recursion() -> None:
    for body in (_nested(5000), b"[" * 300 + b"NaN" + b"]" * 300):
        with pytest.raises(StrictJsonError) as caught:
            loads(body, max_depth=254)
        assert caught.value.code == "json_too_deep"


def test_max_depth_is_validated() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        loads(b"[]", max_depth=0)
    with pytest.raises(ValueError, match="max_depth"):
        loads(b"[]", max_depth=strictjson.MAX_DEPTH_LIMIT + 1)


# ---------------------------------------------------------------------------------------------
# Whole, byte by byte, with trailing data (h11 style)


@pytest.mark.parametrize("body", VALID_DOCUMENTS)
def test_every_truncation_is_refused_or_a_shorter_valid_document(body: bytes) -> None:
    full = loads(body)
    for cut in range(len(body)):
        prefix = body[:cut]
        try:
            value = loads(prefix)
        except StrictJsonError as exc:
            assert 0 <= exc.position <= len(prefix)
            continue
        # A prefix may itself be a complete document (a number cut short, `12` of `123`).
        assert _same(value, json.loads(prefix))
        assert not _same(value, full) or prefix.strip() == body.strip()


@pytest.mark.parametrize("body", VALID_DOCUMENTS)
@pytest.mark.parametrize("suffix", [b"x", b"{}", b"[1]", b'"s"', b"\x00", b",", b"\xff"])
def test_trailing_data_is_refused_at_its_first_byte(body: bytes, suffix: bytes) -> None:
    stripped = body.rstrip()
    if stripped[-1:].isdigit() and suffix[:1].isdigit():
        pytest.skip("the suffix would extend the number")
    with pytest.raises(StrictJsonError) as caught:
        loads(stripped + b" " + suffix)
    assert caught.value.code in ("json_trailing_data", "json_invalid_utf8")
    assert caught.value.position == len(stripped) + 1


# ---------------------------------------------------------------------------------------------
# Property tests

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_serialised_values_round_trip(value: Any) -> None:
    for body in (orjson.dumps(value), json.dumps(value).encode(), json.dumps(value, indent=1)):
        try:
            parsed = loads(body)
        except StrictJsonError as exc:
            # Only documents deeper than the default limit or with lone surrogates may fail.
            assert exc.code in ("json_too_deep", "json_invalid_utf8")
            continue
        assert _same(parsed, json.loads(body))


def _json_like_orjson(body: bytes) -> Any:
    def integer(token: str) -> int | float:
        number = int(token)
        return number if -(2**63) <= number <= 2**64 - 1 else float(number)

    return json.loads(body, parse_int=integer)


@given(
    st.binary(max_size=40)
    | st.text(alphabet='{}[]",:0123456789.eE+-aNInfity \\u\n').map(str.encode)
)
@settings(max_examples=400, deadline=None)
def test_arbitrary_bytes_never_crash_and_accepted_ones_match_json(body: bytes) -> None:
    try:
        value = loads(body)
    except StrictJsonError as exc:
        assert 0 <= exc.position <= len(body)
        assert exc.line >= 1 and exc.column >= 1
        return
    assert _same(value, _json_like_orjson(body))


@given(st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=6), st.data())
@settings(max_examples=100, deadline=None)
def test_any_duplicated_key_is_refused(members: dict[str, int], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(members)))
    parts = [f"{json.dumps(k)}: {v}" for k, v in members.items()]
    parts.insert(data.draw(st.integers(0, len(parts))), f"{json.dumps(key)}: 0")
    body = ("{" + ", ".join(parts) + "}").encode()
    with pytest.raises(StrictJsonError) as caught:
        loads(body)
    assert caught.value.code == "json_duplicate_key"


# ---------------------------------------------------------------------------------------------
# Content-Encoding

PAYLOAD = b'{"instances": [{"note": "' + b"x" * 2000 + b'"}]}'


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (None, PAYLOAD),
        ("", PAYLOAD),
        ("identity", PAYLOAD),
        ("gzip", gzip.compress(PAYLOAD)),
        ("GZip", gzip.compress(PAYLOAD)),
        ("x-gzip", gzip.compress(PAYLOAD)),
        ("deflate", zlib.compress(PAYLOAD)),
        ("deflate", zlib.compress(PAYLOAD)[2:-4]),  # raw deflate, as some clients send
        ("gzip, identity", gzip.compress(PAYLOAD)),
        ("deflate, gzip", gzip.compress(zlib.compress(PAYLOAD))),
    ],
)
def test_inflate_round_trips(encoding: str | None, body: bytes) -> None:
    assert inflate(body, encoding, max_size=len(PAYLOAD)) == PAYLOAD


def test_inflate_joins_gzip_members() -> None:
    body = gzip.compress(PAYLOAD[:100]) + gzip.compress(PAYLOAD[100:])
    assert inflate(body, "gzip", max_size=len(PAYLOAD)) == PAYLOAD


def test_inflate_limit_is_exact() -> None:
    body = gzip.compress(PAYLOAD)
    assert inflate(body, "gzip", max_size=len(PAYLOAD)) == PAYLOAD
    with pytest.raises(BodyTooLargeError) as caught:
        inflate(body, "gzip", max_size=len(PAYLOAD) - 1)
    assert caught.value.http_status == 413


def test_inflate_stops_a_bomb_early() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    with pytest.raises(BodyTooLargeError):
        inflate(bomb, "gzip", max_size=1024 * 1024)
    bomb_members = gzip.compress(b"\0" * 600_000) * 4
    with pytest.raises(BodyTooLargeError):
        inflate(bomb_members, "gzip", max_size=1024 * 1024)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(PAYLOAD)[:-10]),
        ("gzip", gzip.compress(PAYLOAD) + b"garbage"),
        ("gzip", b""),
        ("deflate", b"\x78\x9c garbage"),
        ("deflate", zlib.compress(PAYLOAD) + b"extra"),
        ("deflate", b""),
        ("gzip", gzip.compress(PAYLOAD)[:10] + b"\xff" * 20),
    ],
)
def test_inflate_refuses_corrupt_bodies(encoding: str, body: bytes) -> None:
    with pytest.raises(CorruptBodyError) as caught:
        inflate(body, encoding, max_size=1 << 20)
    assert caught.value.http_status == 400


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br", "gzip, gzip, gzip"])
def test_inflate_refuses_unsupported_codings(encoding: str) -> None:
    with pytest.raises(UnsupportedEncodingError) as caught:
        inflate(gzip.compress(PAYLOAD), encoding, max_size=1 << 20)
    assert caught.value.http_status == 415


def test_inflate_can_be_limited_to_gzip_only() -> None:
    with pytest.raises(UnsupportedEncodingError):
        inflate(zlib.compress(PAYLOAD), "deflate", max_size=1 << 20, accepted=frozenset({"gzip"}))


def test_inflated_body_is_what_loads_sees() -> None:
    body = gzip.compress(b'{"a": 1, "a": 2}')
    with pytest.raises(StrictJsonError, match="duplicate"):
        loads(inflate(body, "gzip", max_size=1 << 20))


# ---------------------------------------------------------------------------------------------
# String values read from the raw bytes (`parse_body`)


@pytest.mark.parametrize(
    ("body", "duplicated"),
    [
        (b'{"a": 1, "\\u0061": 2}', True),  # the same key, once escaped
        (b'{"{": 1, "{": 2}', True),  # braces inside keys are not structure
        (b'{"a": {"b": 1, "b": 2}}', True),
        (b'{"a": {"b": 1}, "b": 2}', False),  # same name, different objects
        (b'[{"a": 1}, {"a": 2}]', False),
        (b'{"a": [{"x": "}"}, {"x": "{"}], "x": 1}', False),
        (b'{"k\\"": 1, "k\\\\": 2, "k\\\\\\"": 3}', False),  # escaped quotes and backslashes
        (b'{"k\\"": 1, "k\\u0022": 2}', True),
        (b'{"a" \n : 1, "a"\t: 2}', True),  # whitespace before the colon
        (b'{"s": ":", "t": "::", "a": 1, "a": 2}', True),
    ],
)
def test_duplicate_keys_found_from_the_raw_bytes(body: bytes, duplicated: bool) -> None:
    if duplicated:
        with pytest.raises(StrictJsonError) as caught:
            strictjson.parse_body(body)
        assert caught.value.code == "json_duplicate_key"
    else:
        parsed = strictjson.parse_body(body)
        assert parsed.value == json.loads(body)
        assert parsed.strings is not None
        assert list(parsed.strings) == string_values(parsed.value)


def test_a_tensor_without_strings_reports_none_and_a_keyed_one_only_its_values() -> None:
    assert strictjson.parse_body(b"[[0.5, 1], [2, 3e-2]]").strings == ()
    body = b'{"instances": [{"image": [[0.1, 0.2]], "note": "caf\\u00e9 \\"x\\""}]}'
    assert strictjson.parse_body(body).strings == ('café "x"',)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_string_values_match_the_parsed_document(value: Any) -> None:
    for body in (orjson.dumps(value), json.dumps(value).encode(), json.dumps(value, indent=1)):
        try:
            parsed = strictjson.parse_body(body)
        except StrictJsonError as exc:
            assert exc.code in ("json_too_deep", "json_invalid_utf8")
            continue
        assert _same(parsed.value, json.loads(body))
        if parsed.strings is not None:
            assert list(parsed.strings) == string_values(parsed.value)


@given(st.dictionaries(st.text(max_size=3), json_values, min_size=1, max_size=4), st.data())
@settings(max_examples=150, deadline=None)
def test_a_duplicated_key_nested_anywhere_is_refused(
    members: dict[str, Any], data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(members)))
    parts = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in members.items()]
    parts.insert(data.draw(st.integers(0, len(parts))), f"{json.dumps(key)}: 0")
    inner = "{" + ", ".join(parts) + "}"
    body = json.dumps({"instances": [{"x": "{"}, "PLACE"]}).replace('"PLACE"', inner).encode()
    with pytest.raises(StrictJsonError) as caught:
        strictjson.parse_body(body)
    assert caught.value.code in ("json_duplicate_key", "json_too_deep", "json_invalid_utf8")


@pytest.mark.parametrize("duplicated", [False, True])
def test_text_heavy_bodies_take_the_colon_count_check(duplicated: bool) -> None:
    notes = [f"note {i}: a:b" for i in range(300)]  # 600 quotes: past the tokenized limit
    members = '"instances": ' + json.dumps([{"note": n} for n in notes])
    body = ("{" + members + (', "instances": []' if duplicated else "") + "}").encode()
    escaped = body.replace(b"a:b", b"a\\u003ab")  # an escaped colon cannot balance the count
    for candidate in (body, escaped):
        if duplicated:
            with pytest.raises(StrictJsonError) as caught:
                strictjson.parse_body(candidate)
            assert caught.value.code == "json_duplicate_key"
        else:
            parsed = strictjson.parse_body(candidate)
            assert parsed.value == json.loads(candidate)
            assert parsed.strings is None  # the scanner walks these itself
