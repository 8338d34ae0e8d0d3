"""The Prometheus endpoint (`--monitoring-config-file`): config parsing, the page, routing
and the request counts of REST and gRPC calls."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model_server.monitoring import (
    DEFAULT_PROMETHEUS_PATH,
    MonitoringConfig,
    prometheus_page,
    read_monitoring_config,
)
from tests.plugins.model_server import (
    REPO,
    RunningModelServer,
    serve_command,
    start_model_server,
)

HTML_404 = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)
TYPE_LINE = "# TYPE :tensorflow:serving:request_count counter"
SAMPLE = re.compile(
    r':tensorflow:serving:request_count\{model_name="((?:[^"\\]|\\.)*)",status="([A-Z_]+)"\} (\d+)'
)
BODY = json.dumps(
    {"instances": np.round(np.random.default_rng(5).random((1, 28, 28, 1)), 3).tolist()}
).encode()


def call(
    server: RunningModelServer, method: str, path: str, body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def scrape(
    server: RunningModelServer, path: str = DEFAULT_PROMETHEUS_PATH
) -> dict[tuple[str, str], int]:
    """The request counts on the page, checking its layout on the way."""
    status, headers, payload = call(server, "GET", path)
    assert status == 200 and headers["Content-Type"] == "text/plain"
    lines = payload.decode().split("\n")
    assert lines[0] == TYPE_LINE and lines[-1] == ""
    counts: dict[tuple[str, str], int] = {}
    for line in lines[1:-1]:
        match = SAMPLE.fullmatch(line)
        assert match is not None, line
        counts[(match[1], match[2])] = int(match[3])
    assert list(counts) == sorted(counts)  # TensorFlow's cell map order
    return counts


def delta(
    before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


# --------------------------------------------------------------------- config file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    return path


def test_config_file_forms(tmp_path: Path) -> None:
    enabled = 'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n'
    assert read_monitoring_config(write(tmp_path, enabled)) == MonitoringConfig(
        True, DEFAULT_PROMETHEUS_PATH
    )
    # An empty path means TF Serving's default; `:`/`<>` forms and comments are text format.
    assert read_monitoring_config(
        write(tmp_path, "# metrics\nprometheus_config: < enable: true >\n")
    ) == MonitoringConfig(True, DEFAULT_PROMETHEUS_PATH)
    assert read_monitoring_config(
        write(tmp_path, 'prometheus_config {\n  enable: true\n  path: "/metrics"\n}\n')
    ) == MonitoringConfig(True, "/metrics")
    assert read_monitoring_config(write(tmp_path, "")) == MonitoringConfig()
    assert not read_monitoring_config(
        write(tmp_path, "prometheus_config { enable: false }")
    ).prometheus_enable


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            "prometheus_config {\n  enabled: true\n}\n",
            "2:3",
            'Message type "tensorflow.serving.PrometheusConfig" has no field named "enabled".',
        ),
        ("prometheus_config { enable: true\n", "1:29", 'Expected "}".'),
        ("\n\nprometheus { enable: true }\n", "3:1", 'has no field named "prometheus".'),
        ("prometheus_config { enable: yes }", "1:29", 'Expected "true" or "false".'),
        (
            'prometheus_config {\n  enable: true\n  path: "metrics"\n}\n',
            "3",
            'prometheus_config.path must be a URL path starting with "/"',
        ),
        (
            'prometheus_config { enable: true path: "/m?x=1" }',
            "1",
            "without a query or fragment",
        ),
    ],
)
def test_config_errors_name_file_and_line(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        read_monitoring_config(path)
    assert str(caught.value).startswith(f"{path}:{where}: ")
    assert message in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--monitoring-config-file .*: No such file"):
        read_monitoring_config(tmp_path / "absent.config")


def test_bad_config_file_stops_start_up(tmp_path: Path) -> None:
    path = write(tmp_path, "prometheus_config {\n  enable: true\n  port: 9090\n}\n")
    result = subprocess.run(
        serve_command(tmp_path, "--monitoring-config-file", str(path)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert (
        f"model_server serve: error: {path}:3:3: Message type "
        '"tensorflow.serving.PrometheusConfig" has no field named "port".'
    ) in result.stderr


# --------------------------------------------------------------------- the page


def test_page_layout() -> None:
    assert prometheus_page({}) == (TYPE_LINE + "\n").encode()
    page = prometheus_page(
        {("b", "OK"): 2, ("a", "NOT_FOUND"): 1, ("a", "INVALID_ARGUMENT"): 3, ('q"\\\n', "OK"): 1}
    ).decode()
    assert page == (
        f"{TYPE_LINE}\n"
        ':tensorflow:serving:request_count{model_name="a",status="INVALID_ARGUMENT"} 3\n'
        ':tensorflow:serving:request_count{model_name="a",status="NOT_FOUND"} 1\n'
        ':tensorflow:serving:request_count{model_name="b",status="OK"} 2\n'
        ':tensorflow:serving:request_count{model_name="q\\"\\\\\\n",status="OK"} 1\n'
    )


# --------------------------------------------------------------------- served


def test_endpoint_off_is_a_404_page(model_server: RunningModelServer) -> None:
    for path in (DEFAULT_PROMETHEUS_PATH, DEFAULT_PROMETHEUS_PATH + "?x=1", "/metrics"):
        status, headers, payload = call(model_server, "GET", path)
        assert (status, headers["Content-Type"], payload) == (404, "text/html", HTML_404)


@pytest.fixture(scope="module")
def monitored_server(
    trained_model_base: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningModelServer]:
    """Two models (`mnist`, `digits`), Prometheus on at the default path."""
    base = tmp_path_factory.mktemp("monitored-base")
    for name in ("mnist", "digits"):
        shutil.copytree(trained_model_base / "mnist", base / name)
    config = base / "monitoring.config"
    config.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    server = start_model_server(base, "--monitoring-config-file", str(config))
    yield server
    assert server.stop() == 0


def test_counts_rest_requests_per_model_and_status(monitored_server: RunningModelServer) -> None:
    before = scrape(monitored_server)
    for _ in range(3):
        assert call(monitored_server, "POST", "/v1/models/mnist:predict", BODY)[0] == 200
    for _ in range(2):
        assert call(monitored_server, "POST", "/v1/models/digits:predict", BODY)[0] == 200
    assert call(monitored_server, "POST", "/v1/models/mnist:predict", b"{")[0] == 400
    assert call(monitored_server, "POST", "/v1/models/digits/versions/7:predict", BODY)[0] == 404
    assert call(monitored_server, "POST", "/v1/models/nope:predict", BODY)[0] == 404
    assert call(monitored_server, "GET", "/v1/models/digits")[0] == 200
    # The name is the percent-decoded one of the URL; a path without one counts as "".
    assert call(monitored_server, "GET", "/v1/models/%6Dnist/metadata")[0] == 200
    assert call(monitored_server, "GET", "/v1/models")[0] == 400
    assert call(monitored_server, "PUT", "/v1/models/mnist")[0] == 400
    assert call(monitored_server, "POST", "/v1/models/mnist:classify", b"{}")[0] == 400
    # Not counted: OPTIONS (answered before the API handler) and non-/v1 paths.
    assert call(monitored_server, "OPTIONS", "/v1/models/mnist")[0] == 400
    assert call(monitored_server, "GET", "/v2/models/mnist")[0] == 404
    after = scrape(monitored_server)
    assert delta(before, after) == {
        ("mnist", "OK"): 4,
        ("digits", "OK"): 3,
        ("mnist", "INVALID_ARGUMENT"): 2,
        ("digits", "NOT_FOUND"): 1,
        ("nope", "NOT_FOUND"): 1,
        ("", "INVALID_ARGUMENT"): 2,
    }


def test_counts_grpc_predict_classify_regress(monitored_server: RunningModelServer) -> None:
    grpc = pytest.importorskip("grpc")
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        inference_pb2,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    before = scrape(monitored_server)
    with grpc.insecure_channel(monitored_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28, 1), "f4")))
        stub.Predict(request, timeout=30)
        request.model_spec.name = "absent"
        with pytest.raises(grpc.RpcError):
            stub.Predict(request, timeout=30)
        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "mnist"
        with pytest.raises(grpc.RpcError):
            stub.Classify(classify, timeout=30)
        # Neither GetModelMetadata nor MultiInference is counted by TF Serving.
        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata.model_spec.name = "mnist"
        stub.GetModelMetadata(metadata, timeout=30)
        multi = inference_pb2.MultiInferenceRequest()
        multi.tasks.add(method_name="tensorflow/serving/classify").model_spec.name = "mnist"
        with pytest.raises(grpc.RpcError):
            stub.MultiInference(multi, timeout=30)
    assert delta(before, scrape(monitored_server)) == {
        ("digits", "OK"): 1,
        ("absent", "NOT_FOUND"): 1,
        ("mnist", "INVALID_ARGUMENT"): 1,
    }


def test_query_string_is_an_unexpected_path(monitored_server: RunningModelServer) -> None:
    before = scrape(monitored_server)
    for suffix in ("?x=1", "?"):
        path = DEFAULT_PROMETHEUS_PATH + suffix
        status, headers, payload = call(monitored_server, "GET", path)
        assert (status, headers["Content-Type"]) == (400, "text/plain")
        assert payload == f"Unexpected path: {path}. Should be {DEFAULT_PROMETHEUS_PATH}".encode()
    # Exact match only: anything longer is an ordinary non-/v1 path.
    for path in (DEFAULT_PROMETHEUS_PATH + "/", DEFAULT_PROMETHEUS_PATH.upper()):
        status, headers, payload = call(monitored_server, "GET", path)
        assert (status, headers["Content-Type"], payload) == (404, "text/html", HTML_404)
    # The handler does not look at the method.
    status, headers, payload = call(monitored_server, "POST", DEFAULT_PROMETHEUS_PATH, b"x")
    assert status == 200 and payload.startswith(TYPE_LINE.encode())
    assert scrape(monitored_server) == before  # scrapes are not requests to a model


def test_custom_path(trained_model_base: Path, tmp_path: Path) -> None:
    config = write(tmp_path, 'prometheus_config {\n  enable: true\n  path: "/metrics"\n}\n')
    server = start_model_server(trained_model_base, "--monitoring-config-file", str(config))
    try:
        assert call(server, "POST", "/v1/models/mnist:predict", BODY)[0] == 200
        assert scrape(server, "/metrics") == {("mnist", "OK"): 1}
        status, _, payload = call(server, "GET", "/metrics?name[]=x")
        assert (status, payload) == (400, b"Unexpected path: /metrics?name[]=x. Should be /metrics")
        status, headers, payload = call(server, "GET", DEFAULT_PROMETHEUS_PATH)
        assert (status, headers["Content-Type"], payload) == (404, "text/html", HTML_404)
    finally:
        assert server.stop() == 0
