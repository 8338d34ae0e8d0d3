"""The REST API end to end against a running embedded server, error catalogue included."""

from __future__ import annotations

import gzip
import http.client
import json
import re

import numpy as np
import pytest

from model_server.rest_json import format_float32
from tests.plugins.model_server import RunningModelServer

HTML_404 = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)
STATUS_V1 = (
    '{\n "model_version_status": [\n  {\n   "version": "1",\n   "state": "AVAILABLE",\n'
    '   "status": {\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}\n'
)


def call(
    server: RunningModelServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def error_of(
    server: RunningModelServer, method: str, path: str, body: bytes | None = None
) -> tuple[int, str]:
    status, headers, payload = call(server, method, path, body)
    assert headers["Content-Type"] == "application/json"
    assert payload.startswith(b'{\n    "error": "') and payload.endswith(b'"\n}')
    return status, json.loads(payload)["error"]


def images(count: int, seed: int = 0) -> list[object]:
    rng = np.random.default_rng(seed)
    return np.round(rng.random((count, 28, 28, 1)), 3).tolist()


def predict_body(count: int = 1, **extra: object) -> bytes:
    return json.dumps({"instances": images(count), **extra}).encode()


# --------------------------------------------------------------------- success paths


def test_model_status_bytes(model_server: RunningModelServer) -> None:
    for path in ("/v1/models/mnist", "/v1/models/mnist/versions/1", "/v1/models/mnist/labels/x"):
        status, headers, payload = call(model_server, "GET", path)
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert payload.decode() == STATUS_V1


def test_metadata_layout(model_server: RunningModelServer) -> None:
    status, _, payload = call(model_server, "GET", "/v1/models/mnist/metadata")
    assert status == 200
    text = payload.decode()
    assert text.startswith(
        '{\n"model_spec":{\n "name": "mnist",\n "version": "1",\n "signature_name": ""\n}\n,\n'
        '"metadata": {"signature_def": {\n "signature_def": {\n'
    )
    assert text.endswith("}\n}\n}\n")
    serving = json.loads(text)["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert serving["method_name"] == "tensorflow/serving/predict"
    image = serving["inputs"]["images"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    output = serving["outputs"]["probabilities"]
    assert [d["size"] for d in output["tensor_shape"]["dim"]] == ["-1", "10"]
    assert call(model_server, "GET", "/v1/models/mnist/versions/1/metadata")[2] == payload


def test_predict_row_layout_and_values(model_server: RunningModelServer) -> None:
    status, headers, payload = call(
        model_server, "POST", "/v1/models/mnist:predict", predict_body(2)
    )
    assert status == 200 and headers["Content-Type"] == "application/json"
    text = payload.decode()
    match = re.fullmatch(r'\{\n    "predictions": \[(\[[^\n]*\]), (\[[^\n]*\])\n    \]\n\}', text)
    assert match is not None, text
    for row_text in match.groups():
        values = [token.strip() for token in row_text.strip("[]").split(",")]
        assert len(values) == 10
        for token in values:
            assert format_float32(float(np.float32(float(token)))) == token  # TF Serving layout
        assert sum(float(v) for v in values) == pytest.approx(1.0, abs=1e-5)


def test_predict_columnar_layout(model_server: RunningModelServer) -> None:
    body = json.dumps({"inputs": images(1)}).encode()
    status, _, payload = call(model_server, "POST", "/v1/models/mnist:predict", body)
    assert status == 200
    lines = payload.decode().split("\n")
    assert lines[:3] == ["{", '    "outputs": [', "        ["]
    assert all(line.startswith("            ") for line in lines[3:13])
    assert lines[13:] == ["        ]", "    ]", "}"]
    row = json.loads(payload)["outputs"][0]
    same = call(model_server, "POST", "/v1/models/mnist/versions/1:predict", predict_body(1))[2]
    assert json.loads(same)["predictions"][0] == row


def test_url_grammar_quirks(model_server: RunningModelServer) -> None:
    body = predict_body(1)
    assert call(model_server, "POST", "/V1/MODELS/mnist:predict", body)[0] == 200
    assert call(model_server, "POST", "/v1/models/%6Dnist:predict", body)[0] == 200
    assert call(model_server, "POST", "/v1/models/mnist/versions/0001:predict", body)[0] == 200
    # A case-changed subresource silently becomes a status request.
    assert call(model_server, "GET", "/v1/models/mnist/METADATA")[2].decode() == STATUS_V1


def test_content_type_is_ignored_and_gzip_is_inflated(model_server: RunningModelServer) -> None:
    body = predict_body(1)
    plain = call(
        model_server, "POST", "/v1/models/mnist:predict", body, {"Content-Type": "text/plain"}
    )
    packed = call(
        model_server,
        "POST",
        "/v1/models/mnist:predict",
        gzip.compress(body),
        {"Content-Encoding": "gzip"},
    )
    assert plain[0] == packed[0] == 200 and plain[2] == packed[2]
    status, _, payload = call(
        model_server, "POST", "/v1/models/mnist:predict", b"not gzip", {"Content-Encoding": "gzip"}
    )
    assert status == 400
    assert json.loads(payload)["error"] == "JSON Parse error: The document is empty"


def test_non_v1_paths_get_libevents_html_404(model_server: RunningModelServer) -> None:
    for path in ("/", "/v1", "/v2/models/mnist", "/monitoring/prometheus/metrics"):
        status, headers, payload = call(model_server, "GET", path)
        assert (status, headers["Content-Type"], payload) == (404, "text/html", HTML_404)
    status, _, payload = call(model_server, "TRACE", "/v1/models/mnist")
    assert status == 501 and b"<TITLE>501 Not Implemented</TITLE>" in payload


def test_options_preflight(model_server: RunningModelServer) -> None:
    status, headers, payload = call(
        model_server, "OPTIONS", "/v1/models/mnist", headers={"Origin": "https://a.example"}
    )
    assert (status, payload) == (200, b"") and "Content-Type" not in headers
    status, headers, payload = call(model_server, "OPTIONS", "/v1/models/mnist")
    assert (status, payload) == (400, b"") and "Content-Type" not in headers
    assert "Access-Control-Allow-Origin" not in headers  # CORS support is off by default


# --------------------------------------------------------------------- error catalogue

MALFORMED_PATHS = [
    ("GET", "/v1/models/mnist:predict"),
    ("POST", "/v1/models/mnist/metadata"),
    ("POST", "/v1/models/mnist"),
    ("POST", "/v1/models/mnist:explain"),
    ("POST", "/v1/models/mnist:PREDICT"),
    ("GET", "/v1/models/mnist/"),
    ("GET", "/v1/models/mnist/version/1"),
    ("GET", "/v1/models/mnist/label/x"),
    ("GET", "/v1/models/mnist/versions/1/labels/x"),
    ("GET", "/v1/models/mnist/versions/one"),
    ("POST", "/v1/models/mnist:predict?x=1"),
    ("GET", "/v1/models/mnist/metadata?x=1"),
    ("PUT", "/v1/models/mnist:predict"),
    ("DELETE", "/v1/models/mnist"),
    ("PATCH", "/v1/models/mnist"),
]


@pytest.mark.parametrize(("method", "path"), MALFORMED_PATHS)
def test_malformed_requests(model_server: RunningModelServer, method: str, path: str) -> None:
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    assert error_of(model_server, method, path, body) == (
        400,
        f"Malformed request: {method} {path}",
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        (
            "GET",
            "/v1/models/mnist?x=1",
            None,
            404,
            "Could not find any versions of model mnist?x=1",
        ),
        (
            "GET",
            "/v1/models/mnist/versions/7",
            None,
            404,
            "Could not find version 7 of model mnist",
        ),
        (
            "GET",
            "/v1/models/mnist/versions/99999999999999999999",
            None,
            400,
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
        (
            "GET",
            "/v1/models/nope/metadata",
            None,
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "GET",
            "/v1/models/mnist/versions/7/metadata",
            None,
            404,
            "Servable not found for request: Specific(mnist, 7)",
        ),
        (
            "GET",
            "/v1/models/mnist/labels/stable/metadata",
            None,
            400,
            "Unrecognized servable version label: stable",
        ),
        ("POST", "/v1/models/mnist:predict", b"", 400, "JSON Parse error: The document is empty"),
        (
            "POST",
            "/v1/models/nope:predict",
            b"{",
            400,
            "JSON Parse error: Missing a name for object member. at offset: 1",
        ),
        (
            "POST",
            "/v1/models/nope:predict",
            b"{}",
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "POST",
            "/v1/models/mnist/versions/2:predict",
            b"{}",
            404,
            "Servable not found for request: Specific(mnist, 2)",
        ),
        (
            "POST",
            "/v1/models/mnist/labels/stable:predict",
            b"{}",
            400,
            "Unrecognized servable version label: stable",
        ),
        ("POST", "/v1/models/mnist:predict", b"[1]", 400, "JSON Value: [\n    1\n] Is not object"),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"signature_name": 5}',
            400,
            'JSON Value: {\n    "signature_name": 5\n} not formatted correctly. '
            "'signature_name' key must be a string value.",
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"signature_name": "nope", "instances": [1]}',
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"signature_name": "__saved_model_init_op", "instances": [1]}',
            400,
            "Failed to get input map for signature: __saved_model_init_op",
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"instances": [1], "inputs": [1]}',
            400,
            'JSON Value: {\n    "instances": [\n        1\n    ],\n    "inputs": [\n        1\n'
            "    ]\n} Not formatted correctly expecting only one of 'inputs' or 'instances' keys "
            "to exist ",
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"x": 1}',
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"instances": {}}',
            400,
            "JSON Value: {\n    \"instances\": {}\n} Expecting 'instances' to be an list/array",
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"instances": []}',
            400,
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"instances": [[1, 2], [3]]}',
            400,
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 2 but got: 1",
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"instances": [["a"]]}',
            400,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        (
            "POST",
            "/v1/models/nope:classify",
            b"{}",
            400,
            "JSON Value: {} When method is classify, key 'examples' is expected and was not found",
        ),
        (
            "POST",
            "/v1/models/nope:regress",
            b'{"examples": [{}]}',
            404,
            "Servable not found for request: Latest(nope)",
        ),
    ],
)
def test_error_catalogue(
    model_server: RunningModelServer,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    message: str,
) -> None:
    assert error_of(model_server, method, path, body) == (status, message)


def test_shape_the_graph_cannot_take_is_a_400(model_server: RunningModelServer) -> None:
    body = json.dumps({"instances": np.zeros((1, 28, 28)).tolist()}).encode()
    status, message = error_of(model_server, "POST", "/v1/models/mnist:predict", body)
    assert status == 400 and "[?,28,28,1]" in message and "[1,28,28]" in message


def test_request_larger_than_a_batch_is_split(model_server: RunningModelServer) -> None:
    # 128 instances against a maximum batch size of 32: four batches, one answer in order.
    rows = np.random.default_rng(7).random((128, 28, 28, 1)).round(3)
    status, _, whole = call(
        model_server, "POST", "/v1/models/mnist:predict",
        json.dumps({"instances": rows.tolist()}).encode(),
    )  # fmt: skip
    assert status == 200
    predictions = json.loads(whole)["predictions"]
    assert len(predictions) == 128
    # Each row's answer is the one it gets alone (the model is row-wise).
    for index in (0, 31, 32, 77, 127):
        status, _, alone = call(
            model_server, "POST", "/v1/models/mnist:predict",
            json.dumps({"instances": rows[index : index + 1].tolist()}).encode(),
        )  # fmt: skip
        assert status == 200
        assert json.loads(alone)["predictions"][0] == pytest.approx(predictions[index], abs=1e-5)


@pytest.mark.parametrize(
    ("verb", "kind"), [("classify", "classification"), ("regress", "regression")]
)
def test_classify_and_regress_on_a_predict_only_model(
    model_server: RunningModelServer, verb: str, kind: str
) -> None:
    body = b'{"examples": [{"pixels": [0.5, 0.25]}]}'
    status, message = error_of(model_server, "POST", f"/v1/models/mnist:{verb}", body)
    assert status == 400
    assert message.startswith(f'No {kind} inputs found in SignatureDef: inputs {{\n  key: "images"')
