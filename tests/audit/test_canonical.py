"""RFC 8785 canonical form: known answers, the fast path's equality, strict parsing."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.canonical import (
    SAFE_INT_LIMIT,
    canonical_dumps,
    canonicalize,
    is_jcs_safe,
    jcs_violation,
    json_dumps_canonical,
    strict_loads,
)
from gateway.audit.errors import MalformedJSON

VECTORS = json.loads((Path(__file__).parent / "vectors" / "jcs.json").read_text())


@pytest.mark.parametrize("case", VECTORS["documents"], ids=lambda c: c["name"])
def test_reference_canonicalizer_matches_known_answers(case: dict[str, str]) -> None:
    value = json.loads(case["input"])
    assert rfc8785.dumps(value) == case["expected"].encode()
    assert canonicalize(value) == case["expected"].encode()


@pytest.mark.parametrize("bits,expected", VECTORS["numbers"]["cases"])
def test_reference_number_serialization_matches_appendix_b(bits: str, expected: str) -> None:
    number = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert rfc8785.dumps(number) == expected.encode()


_keys = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=12)
# Arbitrary Unicode in values, surrogates excluded (they are rejected, tested below).
_strings = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(SAFE_INT_LIMIT - 1), max_value=SAFE_INT_LIMIT - 1)
    | _strings
)
_safe_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_keys, children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=250, deadline=None)
@given(_safe_values)
def test_fast_path_equals_rfc8785_on_the_safe_subset(value: Any) -> None:
    assert is_jcs_safe(value)
    reference = rfc8785.dumps(value)
    assert canonical_dumps(value) == reference
    assert json_dumps_canonical(value) == reference


@pytest.mark.parametrize(
    "value,reason",
    [
        ({"a": 1.0}, "floats"),
        ({"a": [0.5]}, "floats"),
        ({"a": SAFE_INT_LIMIT}, "outside"),
        ({"a": -SAFE_INT_LIMIT}, "outside"),
        ({"\u00e9": 1}, "not ASCII"),
        ({"a": "\ud800"}, "lone surrogate"),
        ({"a": ("t", "u")}, "tuple"),
        ({1: "x"}, "not a string"),
    ],
)
def test_values_outside_the_subset_are_named(value: Any, reason: str) -> None:
    assert not is_jcs_safe(value)
    problem = jcs_violation(value)
    assert problem is not None and reason in problem


def test_nesting_depth_is_bounded() -> None:
    value: Any = 1
    for _ in range(40):
        value = [value]
    assert not is_jcs_safe(value)
    assert "deeper" in (jcs_violation(value) or "")


def test_json_dumps_differs_from_jcs_outside_the_subset() -> None:
    # Why the subset matters: these are where a plain json.dumps would be wrong.
    assert json_dumps_canonical({"a": 1e-7}) != rfc8785.dumps({"a": 1e-7})
    assert json_dumps_canonical({"\U0001f602": 1, "\ufb33": 2}) != rfc8785.dumps(
        {"\U0001f602": 1, "\ufb33": 2}
    )


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":"\\ud800"}',
        b'{"a":"\xff"}',
        b'{"a":9007199254740993}',
        b'{"a":',
    ],
)
def test_strict_parser_rejects(data: bytes) -> None:
    with pytest.raises(MalformedJSON):
        strict_loads(data)


def test_strict_parser_accepts_plain_json() -> None:
    assert strict_loads(b'{"a":[1,"x",true,null,{"b":2.5}]}') == {
        "a": [1, "x", True, None, {"b": 2.5}]
    }


_any_values = st.recursive(
    _scalars
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(_keys | _strings, children, max_size=6)
    ),
    max_leaves=30,
)


def _reference_canonical(value: Any, data: bytes) -> bool:
    try:
        return is_jcs_safe(value) and canonical_dumps(value) == data
    except TypeError:
        return False


@settings(max_examples=300, deadline=None)
@given(_any_values, st.booleans())
def test_the_verifier_canonical_check_equals_safe_and_equal(value: Any, reencode: bool) -> None:
    import json

    import orjson

    from gateway.audit.canonical import is_canonical_form

    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return
    if reencode:  # the same value in another spelling: escaped non-ASCII, key order
        data = json.dumps(value, ensure_ascii=True).encode()
    parsed = orjson.loads(data)
    assert is_canonical_form(parsed, data) == _reference_canonical(parsed, data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1.0}', b'{"a":1.5}', b'{"a":1e16}', b'{"a":[1,[2,[0.5]]]}',
        b'{"a":9007199254740992}', b'{"a":-9007199254740992}', b'{"\\u00e9":1}',
        '{"é":1}'.encode(), b'{"a":"\\u00e9"}', b'{"b":1,"a":2}', b'{"a":1 }',
        b'{"a":' + b"[" * 40 + b"]" * 40 + b"}",
    ],
)  # fmt: skip
def test_the_verifier_canonical_check_refuses_what_jcs_would_not_write(data: bytes) -> None:
    import orjson

    from gateway.audit.canonical import is_canonical_form

    assert not is_canonical_form(orjson.loads(data), data)


@pytest.mark.parametrize(
    "data",
    [b'{"a":9007199254740991}', '{"a":"é"}'.encode(), b'{"a":"\\u0001"}', b'{"a":[true,null]}'],
)
def test_the_verifier_canonical_check_accepts_canonical_bytes(data: bytes) -> None:
    import orjson

    from gateway.audit.canonical import is_canonical_form

    assert is_canonical_form(orjson.loads(data), data)
