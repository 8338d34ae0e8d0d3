"""The REST fast paths give exactly what the exact (rapidjson-compatible) paths give.

Predict bodies that are one dense numeric tensor skip the DOM (`scan_numeric_body`), and
a single float32 matrix in row format is written without the general walk
(`_float32_rows_body`). Each is compared here with the path it shortcuts: same tensor bits,
dtype and shape, or the same error message; same response bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_server import fastpath, responses, rest_json
from model_server.rest_json import (
    RequestFormat,
    TensorSpec,
    format_float32,
    parse_exact,
    parse_predict_body,
    predict_inputs,
    predict_response_body,
)
from model_server.status import ServingError

Outcome = tuple[str, Any]


@contextmanager
def exact_only() -> Iterator[None]:
    """Every fast path off: the body is read by the rapidjson-compatible parser alone."""
    with (
        mock.patch.object(rest_json, "scan_numeric_body", lambda body: None),
        mock.patch.object(rest_json, "decode_body", lambda body: (parse_exact(body), True)),
    ):
        yield


def outcome(body: bytes, specs: dict[str, TensorSpec]) -> Outcome:
    """The tensors (bits, dtype, shape) or the error a predict body leads to."""
    try:
        built = predict_inputs(parse_predict_body(body), specs)
    except ServingError as error:
        return ("error", (error.code, error.message))
    return (
        built.request_format.value,
        {
            name: (tensor.dtype.str, tensor.shape, tensor.tobytes())
            for name, tensor in sorted(built.tensors.items())
        },
    )


def exact_outcome(body: bytes, specs: dict[str, TensorSpec]) -> Outcome:
    with exact_only():
        return outcome(body, specs)


FLOAT_SPEC = {"x": TensorSpec("DT_FLOAT", None)}
DOUBLE_SPEC = {"x": TensorSpec("DT_DOUBLE", None)}

# ---------------------------------------------------------------------------- bodies

number_texts = st.one_of(
    st.integers(-(2**25), 2**25).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:.9g}"),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    st.sampled_from(["0", "-0", "-0.0", "0.0", "1e5", "1E-5", "2.5e+3", "1e308", "1e-400"]),
)
spaces = st.sampled_from(["", "", "", " ", "\n", " \t", "\r\n  "])


@st.composite
def dense_arrays(draw: st.DrawFn) -> str:
    """A rectangular nested array of number texts with random whitespace."""
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))

    def render(level: int) -> str:
        if level == len(shape):
            number: str = draw(number_texts)
            return draw(spaces) + number + draw(spaces)
        items = [render(level + 1) for _ in range(shape[level])]
        return draw(spaces) + "[" + ",".join(items) + "]" + draw(spaces)

    return render(0)


@st.composite
def numeric_bodies(draw: st.DrawFn) -> bytes:
    array = draw(dense_arrays())
    key = draw(st.sampled_from(["instances", "inputs"]))
    members = [f'"{key}": {array}']
    signature = draw(st.sampled_from([None, "serving_default", "other"]))
    if signature is not None:
        member = f'"signature_name": "{signature}"'
        members.insert(draw(st.integers(0, 1)), member)
    return ("{" + draw(spaces) + ",".join(members) + draw(spaces) + "}").encode()


#: Bytes a near miss may insert: JSON punctuation, number bytes, whitespace, a letter.
NEAR_MISS_BYTES = st.sampled_from(list(b'[],0123456789.-+eE \n\t:"{}tn\x00'))


@st.composite
def near_misses(draw: st.DrawFn) -> bytes:
    """A valid numeric body with one to three bytes deleted, inserted or replaced."""
    body = bytearray(draw(numeric_bodies()))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(body) - 1))
        action = draw(st.sampled_from(["delete", "insert", "replace"]))
        if action == "delete" and len(body) > 1:
            del body[position]
        elif action == "insert":
            body.insert(position, draw(NEAR_MISS_BYTES))
        else:
            body[position] = draw(NEAR_MISS_BYTES)
    return bytes(body)


# ---------------------------------------------------------------------------- requests


@settings(max_examples=400, deadline=None)
@given(numeric_bodies(), st.sampled_from([FLOAT_SPEC, DOUBLE_SPEC]))
def test_numeric_bodies_agree_with_the_exact_path(
    body: bytes, specs: dict[str, TensorSpec]
) -> None:
    assert outcome(body, specs) == exact_outcome(body, specs)


@settings(max_examples=800, deadline=None)
@given(near_misses(), st.sampled_from([FLOAT_SPEC, DOUBLE_SPEC]))
def test_near_miss_bodies_agree_with_the_exact_path(
    body: bytes, specs: dict[str, TensorSpec]
) -> None:
    assert outcome(body, specs) == exact_outcome(body, specs)


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [ [0,0] ,[\r\n  0.0e625,0]]}',
        b'{"instances": [[0.0E+400, 1]]}',
        b'{"inputs": {"x": [[0e999]]}}',
    ],
)
def test_zero_with_an_exponent_past_308_is_refused_as_rapidjson_refuses_it(body: bytes) -> None:
    # rapidjson stops at an exponent over 308 whatever the mantissa; orjson reads 0.0.
    assert outcome(body, FLOAT_SPEC) == exact_outcome(body, FLOAT_SPEC)
    assert outcome(body, FLOAT_SPEC)[0] == "error"


def test_image_bodies_take_the_fast_path() -> None:
    rng = np.random.default_rng(3)
    image = np.round(rng.random((2, 28, 28, 1)), 4).tolist()
    for body in (
        json.dumps({"instances": image}).encode(),
        json.dumps({"inputs": image, "signature_name": "serving_default"}, indent=1).encode(),
    ):
        parsed = parse_predict_body(body)
        assert parsed.numeric is not None
        specs = {"images": TensorSpec("DT_FLOAT", (-1, 28, 28, 1))}
        assert outcome(body, specs) == exact_outcome(body, specs)


@pytest.mark.parametrize(
    "array",
    [
        b"[[1]2]",  # a number glued after a closing bracket
        b"[[1,]5]",  # ... or standing in for an empty leaf
        b"[[1,2]3,[4,5]]",
        b"[5[1],[2]]",  # a number right before an opening bracket
        b"[[1] , 2[3]]",
        b"[[1]\n2]",
        b"[[1]e5]",
        b"[[1],[]]",
        b"[]",
        b"[[1],[2],]",
        b"[[1] [2]]",
        b"[[1,2],[3,4]5]",
        b"[[1\x01],[2]]",
    ],
)
def test_misplaced_numbers_decline_and_fail_like_rapidjson(array: bytes) -> None:
    body = b'{"instances": ' + array + b"}"
    assert fastpath.scan_numeric_body(body) is None
    failed = outcome(body, FLOAT_SPEC)
    assert failed[0] == "error"
    assert failed == exact_outcome(body, FLOAT_SPEC)


def test_float_range_limits_fall_back_to_the_exact_wording() -> None:
    for number in ("16777216", "-16777217", "1e39", "3.5e38", "16777215.5"):
        body = f'{{"instances": [[{number}, 1]]}}'.encode()
        assert outcome(body, FLOAT_SPEC) == exact_outcome(body, FLOAT_SPEC)
    for number in ("9007199254740992", "-9007199254740993", "1e300"):
        body = f'{{"inputs": [{number}]}}'.encode()
        assert outcome(body, DOUBLE_SPEC) == exact_outcome(body, DOUBLE_SPEC)
        # Beside a float the array turns float64, which must not hide a lossy integer.
        body = f'{{"instances": [[[[{number}, 1e308]]]]}}'.encode()
        assert outcome(body, DOUBLE_SPEC) == exact_outcome(body, DOUBLE_SPEC)


def test_negative_zero_keeps_its_json_kind() -> None:
    # rapidjson reads `-0` as the integer 0 (+0.0 as a float) and `-0.0` as a double.
    body = b'{"instances": [-0, -0.0]}'
    tensor = predict_inputs(parse_predict_body(body), FLOAT_SPEC).tensors["x"]
    assert np.signbit(tensor).tolist() == [False, True]
    assert outcome(body, FLOAT_SPEC) == exact_outcome(body, FLOAT_SPEC)


# ---------------------------------------------------------------------------- responses

float32_bits = st.integers(0, 2**32 - 1).map(
    lambda bits: float(np.array([bits], dtype=np.uint32).view(np.float32)[0])
)
float32_values = st.one_of(
    float32_bits,
    st.floats(width=32),
    st.floats(0, 1, width=32),
    st.integers(-(2**24), 2**24).map(float),
)


@st.composite
def float32_matrices(draw: st.DrawFn) -> np.ndarray:
    rows = draw(st.integers(1, 5))
    width = draw(st.integers(0, 14))
    values = draw(st.lists(float32_values, min_size=rows * width, max_size=rows * width))
    return np.array(values, dtype=np.float32).reshape(rows, width)


@settings(max_examples=300, deadline=None)
@given(float32_matrices(), st.sampled_from(["probabilities", "scores_bytes"]))
def test_float32_row_answers_match_the_general_writer(matrix: np.ndarray, name: str) -> None:
    fast = predict_response_body({name: matrix}, RequestFormat.ROW)
    with mock.patch.object(responses, "_float32_rows_body", lambda outputs: None):
        general = predict_response_body({name: matrix}, RequestFormat.ROW)
    assert fast == general


@settings(max_examples=300, deadline=None)
@given(st.lists(float32_values, min_size=0, max_size=90))
def test_float32_texts_match_one_value_formatting(values: list[float]) -> None:
    flat = np.array(values, dtype=np.float32)
    assert responses._format_float32_array(flat) == [format_float32(v) for v in flat.tolist()]


def test_float32_rows_body_declines_other_layouts() -> None:
    assert responses._float32_rows_body({"p": np.zeros((2,), np.float32)}) is None
    assert responses._float32_rows_body({"p": np.zeros((2, 2), np.float64)}) is None
    assert responses._float32_rows_body({"p": np.zeros((0, 2), np.float32)}) is None
    assert responses._float32_rows_body({"p_bytes": np.zeros((1, 2), np.float32)}) is None
