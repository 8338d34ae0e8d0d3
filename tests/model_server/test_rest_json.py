"""TF Serving's REST JSON: parser semantics, error messages, float layout, response bytes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_server import fastpath, responses, rest_json, tensors
from model_server.rest_json import (
    JsonObject,
    RequestFormat,
    TensorSpec,
    format_float32,
    format_float64,
    json_value_to_string,
    parse_exact,
    parse_predict_body,
    predict_inputs,
    predict_response_body,
)
from model_server.status import Code, ServingError

IMAGE_SPEC = {"images": TensorSpec("DT_FLOAT", (-1, 28, 28, 1))}
VECTOR_SPEC = {"x": TensorSpec("DT_FLOAT", (-1, 3))}


def parse_error(body: bytes) -> str:
    with pytest.raises(ServingError) as caught:
        parse_exact(body)
    assert caught.value.code is Code.INVALID_ARGUMENT
    return caught.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"   ", "JSON Parse error: The document is empty. at offset: 3"),
        (b"}", "JSON Parse error: The document is empty. at offset: 0"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b'{"a"', "JSON Parse error: Missing a colon after a name of object member. at offset: 4"),
        (b'{"a":', "JSON Parse error: Invalid value. at offset: 5"),
        (
            b'{"a":1',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 6",
        ),
        (b'{"a":1,}', "JSON Parse error: Missing a name for object member. at offset: 7"),
        (b"[1,]", "JSON Parse error: Invalid value. at offset: 3"),
        (b"[1 2]", "JSON Parse error: Missing a comma or ']' after an array element. at offset: 3"),
        (b"[tru]", "JSON Parse error: Invalid value. at offset: 4"),
        (b"[x]", "JSON Parse error: Invalid value. at offset: 1"),
        (b"[-]", "JSON Parse error: Invalid value. at offset: 2"),
        (b"[1.]", "JSON Parse error: Miss fraction part in number. at offset: 3"),
        (b"[1e]", "JSON Parse error: Miss exponent in number. at offset: 3"),
        (b"[1e400]", "JSON Parse error: Number too big to be stored in double. at offset: 1"),
        (b'["a\\x"]', "JSON Parse error: Invalid escape character in string. at offset: 3"),
        (
            b'["a\\u12G4"]',
            "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 3",
        ),
        (
            b'["\\ud800x"]',
            "JSON Parse error: The surrogate pair in string is invalid. at offset: 2",
        ),
        (b'["abc', "JSON Parse error: Missing a closing quotation mark in string. at offset: 5"),
        (b'["a\x01"]', "JSON Parse error: Invalid escape character in string. at offset: 3"),
    ],
)
def test_parse_errors_match_rapidjson(body: bytes, message: str) -> None:
    assert parse_error(body) == message


def test_parser_accepts_what_rapidjson_accepts() -> None:
    doc = parse_exact(b'{"a": [NaN, Infinity, -Infinity, Inf, -Inf]} trailing garbage {')
    assert isinstance(doc, JsonObject)
    values = doc.find("a")[1]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, math.inf, -math.inf]


def test_duplicate_keys_first_wins_but_all_members_are_kept() -> None:
    doc = parse_exact(b'{"k": 1, "k": 2}')
    assert doc.find("k") == (True, 1)
    assert doc.members == [("k", 1), ("k", 2)]


def test_numbers_keep_integer_and_double_kinds() -> None:
    doc = parse_exact(b"[1, -0, 1.0, 1e2, 18446744073709551615, 18446744073709551616]")
    assert doc[:2] == [1, 0] and all(isinstance(v, int) for v in doc[:2])
    assert isinstance(doc[2], float) and isinstance(doc[3], float)
    assert doc[4] == 2**64 - 1 and isinstance(doc[5], float)


def test_deep_nesting_does_not_recurse() -> None:
    depth = 200_000
    doc = parse_exact(b"[" * depth + b"]" * depth)
    assert isinstance(doc, list)
    message = tensors.format_error(doc, "Is not object").message
    assert message.startswith("JSON Value: [\n    [\n")


def test_escapes_and_undecodable_bytes() -> None:
    assert parse_exact(b'["\\u00e9\\n\\/", "\xff"]') == ["\u00e9\n/", "\udcff"]
    assert parse_exact(b'"\\ud83d\\ude00"') == "\U0001f600"


def test_bom_is_skipped() -> None:
    assert parse_exact(b"\xef\xbb\xbf{}").members == []


# ------------------------------------------------------------------- writer / messages


def test_json_value_to_string_is_pretty_and_truncated() -> None:
    doc = parse_exact(b'{"instances": 1, "x": [1.5, "s", null, true, {}, []]}')
    assert json_value_to_string(doc) == (
        '{\n    "instances": 1,\n    "x": [\n        1.5,\n        "s",\n        null,\n'
        "        true,\n        {},\n        []\n    ]\n}"
    )
    long = parse_exact(b"[" + b"1," * 400 + b"1]")
    assert len(json_value_to_string(long).encode()) == 256


def test_json_value_to_string_numbers() -> None:
    assert json_value_to_string(0.1) == "0.1"  # a top-level double is written as a float
    assert json_value_to_string(1e39) == "1e+39"
    assert json_value_to_string([1e-7, 1e21, 123.0]) == "[\n    1e-7,\n    1e21,\n    123.0\n]"
    # rapidjson's writer refuses NaN inside containers and stops there.
    assert json_value_to_string([1, math.nan, 2]) == "[\n    1,\n    "


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0.0"),
        (1.0, "1.0"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (9000000.0, "9e+06"),
        (3e-05, "3e-05"),
        (1435774380.0, "1.43577434e+09"),
        (0.333333343267, "0.333333343"),
        (16777216.0, "16777216.0"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
    ],
)
def test_float32_formatting(value: float, text: str) -> None:
    as_float32 = float(np.float32(value))
    assert format_float32(as_float32) == text
    assert responses._format_float32_array(np.array([as_float32], np.float32)) == [text]


def test_float64_formatting() -> None:
    assert format_float64(0.1) == "0.1"
    assert format_float64(1 / 3) == "0.33333333333333331"
    assert format_float64(100.0) == "100.0"


def test_error_body_layout() -> None:
    assert rest_json.error_body('bad "x"\n') == b'{\n    "error": "bad \\"x\\"\\n"\n}'


def test_row_response_layout() -> None:
    outputs = {"p": np.array([[0.5, 0.25], [1.0, 0.125]], np.float32)}
    assert predict_response_body(outputs, RequestFormat.ROW) == (
        b'{\n    "predictions": [[0.5, 0.25], [1.0, 0.125]\n    ]\n}'
    )


def test_columnar_response_layout() -> None:
    outputs = {"p": np.array([[0.5, 0.25]], np.float32)}
    assert predict_response_body(outputs, RequestFormat.COLUMNAR) == (
        b'{\n    "outputs": [\n        [\n            0.5,\n            0.25\n        ]\n    ]\n}'
    )


def test_multi_output_layouts() -> None:
    outputs = {"b": np.array([1, 2], np.int64), "a": np.array([[0.5], [1.5]], np.float32)}
    row = predict_response_body(outputs, RequestFormat.ROW).decode()
    assert row == (
        '{\n    "predictions": [\n        {\n            "a": [0.5],\n            "b": 1\n'
        '        },\n        {\n            "a": [1.5],\n            "b": 2\n        }\n    ]\n}'
    )
    columnar = predict_response_body(outputs, RequestFormat.COLUMNAR).decode()
    assert json.loads(columnar) == {"outputs": {"a": [[0.5], [1.5]], "b": [1, 2]}}
    assert columnar.startswith('{\n    "outputs": {\n        "a": [\n')


def test_row_response_needs_a_batch_dimension() -> None:
    with pytest.raises(ServingError, match="has no shape information"):
        predict_response_body({"p": np.array(1.0, np.float32)}, RequestFormat.ROW)


# ------------------------------------------------------------------- predict bodies


def inputs(body: bytes, specs: dict[str, TensorSpec] = VECTOR_SPEC) -> rest_json.PredictInputs:
    return predict_inputs(parse_predict_body(body), specs)


def inputs_error(body: bytes, specs: dict[str, TensorSpec] = VECTOR_SPEC) -> ServingError:
    with pytest.raises(ServingError) as caught:
        inputs(body, specs)
    return caught.value


def test_row_and_columnar_tensors() -> None:
    row = inputs(b'{"instances": [[1, 2, 3], [4, 5, 6.5]]}')
    assert row.request_format is RequestFormat.ROW
    np.testing.assert_array_equal(row.tensors["x"], [[1, 2, 3], [4, 5, 6.5]])
    assert row.tensors["x"].dtype == np.float32
    columnar = inputs(b'{"inputs": {"x": [[1, 2, 3]], "ignored": true}}')
    assert columnar.request_format is RequestFormat.COLUMNAR
    np.testing.assert_array_equal(columnar.tensors["x"], [[1, 2, 3]])
    named_rows = inputs(b'{"instances": [{"x": [1, 2, 3]}]}')
    np.testing.assert_array_equal(named_rows.tensors["x"], [[1, 2, 3]])


def test_nan_and_infinity_reach_the_tensor() -> None:
    tensor = inputs(b'{"instances": [[NaN, Infinity, -Inf]]}').tensors["x"]
    assert math.isnan(tensor[0, 0]) and tensor[0, 1] == np.inf and tensor[0, 2] == -np.inf


def test_duplicate_keys_use_the_first_member() -> None:
    body = b'{"instances": [[1, 2, 3]], "instances": [[7, 8, 9]]}'
    np.testing.assert_array_equal(inputs(body).tensors["x"], [[1, 2, 3]])
    body = b'{"signature_name": "a", "signature_name": 5, "instances": [[1, 2, 3]]}'
    assert parse_predict_body(body).signature_name == "a"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "JSON Value: [\n    1\n] Is not object"),
        (
            b'{"signature_name": 1}',
            'JSON Value: {\n    "signature_name": 1\n} not formatted correctly. '
            "'signature_name' key must be a string value.",
        ),
    ],
)
def test_pre_lookup_errors(body: bytes, message: str) -> None:
    with pytest.raises(ServingError) as caught:
        parse_predict_body(body)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"instances": [[1,2,3]], "inputs": [[1,2,3]]}',
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        (b'{"instances": 5}', "Expecting 'instances' to be an list/array"),
        (b'{"instances": []}', "No values in 'instances' array"),
        (b'{"other": 1}', "Missing 'inputs' or 'instances' key"),
        (
            b'{"instances": [[1, 2, 3], [1, 2]]}',
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 3 but got: 2",
        ),
        (
            b'{"instances": [[1, 2, 3], [[1], [2], [3]]]}',
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting shape [3] but got: [3,1]",
        ),
        (
            b'{"instances": [[1, [2], 3]]}',
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Encountered list at unexpected level: 1 expected < 1",
        ),
        (
            b'{"instances": [[[1], 2]]}',
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            b'{"instances": [[[1, 2], [3]]]}',
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
        ),
        (
            b'{"instances": [[1, "a", 3]]}',
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        (
            b'{"instances": [[1, null, true]]}',
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: null Type: Null is not of expected type: float",
        ),
        (
            b'{"instances": [[16777216, 0, 0]]}',
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Cannot convert JSON value: 16777216 to float without loss of precision.",
        ),
        (
            b'{"instances": [{"x": [1, 2, 3], "y": 1}]}',
            "Failed to process element: 0 key: y of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON object: does not have named input: y",
        ),
        (b'{"instances": [[1, 2, 3], {"x": 1}]}', "Expecting value/list but got object at item 1"),
        (
            b'{"instances": [{"x": [1, 2, 3]}, [1, 2, 3]]}',
            "Expecting object but got list at item 1",
        ),
        (b'{"inputs": {"y": [1]}}', "Missing named input: x in 'inputs' object."),
        (
            b'{"inputs": [[1, 2], [3]]}',
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
        ),
    ],
)
def test_tensor_errors(body: bytes, message: str) -> None:
    error = inputs_error(body)
    assert error.code is Code.INVALID_ARGUMENT
    assert message in error.message


def test_unsupported_dtype_is_unimplemented() -> None:
    error = inputs_error(b'{"inputs": [1.5]}', {"h": TensorSpec("DT_HALF", (-1,))})
    assert error.code is Code.UNIMPLEMENTED
    assert error.message == "Conversion of JSON Value: 1.5 to type: half"


def test_b64_strings() -> None:
    specs = {"s": TensorSpec("DT_STRING", (-1,))}
    tensor = inputs(b'{"instances": [{"b64": "aGk="}, "plain"]}', specs).tensors["s"]
    assert tensor.tolist() == [b"hi", b"plain"]
    error = inputs_error(b'{"instances": [{"b64": "!!"}]}', specs)
    assert "Unable to base64 decode" in error.message


def test_numeric_fast_path_is_taken_and_agrees_with_exact_path() -> None:
    image = np.round(np.random.default_rng(1).random((2, 28, 28, 1)), 4)
    body = json.dumps({"instances": image.tolist(), "signature_name": "serving_default"})
    parsed = parse_predict_body(body.encode())
    assert parsed.numeric is not None and parsed.doc is None
    assert parsed.signature_name == "serving_default"
    fast = predict_inputs(parsed, IMAGE_SPEC).tensors["images"]
    exact = tensors.rows_to_tensors(parse_exact(body.encode()).find("instances")[1], IMAGE_SPEC)
    np.testing.assert_array_equal(fast, exact["images"])
    assert fast.shape == (2, 28, 28, 1) and fast.dtype == np.float32


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2, 3], [1, 2]]}',
        b'{"instances": [[1, 2, 3]], "instances": [[1, 2]]}',
        b'{"instances": [[01, 2, 3]]}',
        b'{"instances": [[1, 2, 3,]]}',
        b'{"instances": [[1e999, 2, 3]]}',
        b'{"instances": [[], [1, 2]]}',
        b'{"instances": [[1, 2 3]]}',
    ],
)
def test_numeric_fast_path_declines_what_it_cannot_prove(body: bytes) -> None:
    assert fastpath.scan_numeric_body(body) is None


nested = st.recursive(
    st.one_of(
        st.integers(-(2**30), 2**30),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
    ),
    lambda children: st.lists(children, min_size=1, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(nested)
def test_fast_and_exact_paths_agree(value: object) -> None:
    body = json.dumps({"inputs": value}).encode()
    shape_spec = {"x": TensorSpec("DT_FLOAT", None)}
    parsed = parse_predict_body(body)
    try:
        fast = predict_inputs(parsed, shape_spec).tensors["x"]
    except ServingError as error:
        fast_error: str | None = error.message
    else:
        fast_error = None
    exact_parsed = rest_json.ParsedPredict(body, "", doc=parse_exact(body))
    try:
        exact = predict_inputs(exact_parsed, shape_spec).tensors["x"]
    except ServingError as error:
        assert fast_error == error.message
        return
    assert fast_error is None
    np.testing.assert_array_equal(fast, exact)
    assert fast.shape == exact.shape


def test_classify_body_checks() -> None:
    assert rest_json.check_classify_regress_body(b'{"examples": [{"a": 1}]}') == ("", 1)
    with pytest.raises(ServingError, match="key 'examples' is expected and was not found"):
        rest_json.check_classify_regress_body(b'{"context": {}}')
    with pytest.raises(ServingError, match="'examples' value is an empty array"):
        rest_json.check_classify_regress_body(b'{"examples": []}')
    with pytest.raises(ServingError, match="Unexpected element type in feature: a expecting type"):
        rest_json.check_classify_regress_body(b'{"examples": [{"a": [1, 1.5]}]}')
    with pytest.raises(ServingError, match="Example must be JSON object but got JSON Number"):
        rest_json.check_classify_regress_body(b'{"examples": [1]}')
