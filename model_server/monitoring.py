"""TF Serving's Prometheus monitoring: the `--monitoring_config_file` and the metrics page.

TF Serving serves `/monitoring/prometheus/metrics` (or the configured path) on the REST
port only when the text `MonitoringConfig` says `prometheus_config { enable: true }`
(`model_servers/http_server.cc` CreateAndStartHttpServer). The page is the TensorFlow
monitoring registry written by `util/prometheus_exporter.cc`: one `# TYPE` line per metric,
then one line per label set, `/` in metric names replaced by `:`.

Only `/tensorflow/serving/request_count` (labels `model_name`, `status`; defined in
`servables/tensorflow/util.cc`) is kept here. It is counted once per REST request with the
model name parsed from the URL, and once per gRPC Predict, Classify and Regress call with
the request's `model_spec.name` (`model_servers/prediction_service_impl.cc`); the status
label is the canonical code name (`error::Code_Name`). The counters are a plain dict keyed
by `(model_name, status)`: every increment and every scrape runs on the event loop thread,
so no lock is needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PROMETHEUS_PATH",
    "REQUEST_COUNT",
    "MonitoringConfig",
    "RequestCounts",
    "monitoring_config_message",
    "prometheus_page",
    "read_monitoring_config",
]

#: PrometheusExporter::kPrometheusPath, used when `prometheus_config.path` is empty.
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
#: `/tensorflow/serving/request_count` after GetPrometheusMetricName.
REQUEST_COUNT = ":tensorflow:serving:request_count"

#: Requests per (model name, canonical status code name).
RequestCounts = dict[tuple[str, str], int]


@dataclass(frozen=True)
class MonitoringConfig:
    """What a `MonitoringConfig` text file asks for."""

    prometheus_enable: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


_message_class: Any = None


def monitoring_config_message() -> Any:
    """The `tensorflow.serving.MonitoringConfig` message class (config/monitoring_config.proto).

    `tensorflow-serving-api` does not ship `monitoring_config_pb2`; when it does not, the
    two messages are declared here with the fields and numbers of the .proto file, in a
    private pool, so protobuf's own text parser reads the file exactly as TF Serving does.
    """
    global _message_class
    if _message_class is not None:
        return _message_class
    try:
        from tensorflow_serving.config import monitoring_config_pb2
    except ImportError:
        pass
    else:
        _message_class = monitoring_config_pb2.MonitoringConfig
        return _message_class
    from google.protobuf import (  # type: ignore[import-untyped]
        descriptor_pb2,
        descriptor_pool,
        message_factory,
    )

    field_type = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(
        name="enable", number=1, type=field_type.TYPE_BOOL, label=field_type.LABEL_OPTIONAL
    )
    prometheus.field.add(
        name="path", number=2, type=field_type.TYPE_STRING, label=field_type.LABEL_OPTIONAL
    )
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=field_type.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=field_type.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    _message_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    )
    return _message_class


def read_monitoring_config(path: Path) -> MonitoringConfig:
    """Read a text `MonitoringConfig`; raise ValueError naming the file (and line) at fault."""
    from google.protobuf import text_format

    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"--monitoring-config-file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason})") from None
    message = monitoring_config_message()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        where = f"{line}:{column}" if column else str(line)
        # The message itself starts with "LINE:COLUMN : "; keep the compiler-style prefix only.
        reason = re.sub(r"^\d+(?::\d+)? : ", "", str(error))
        raise ValueError(f"{path}:{where}: {reason}") from None
    prometheus = message.prometheus_config
    url_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if prometheus.enable and (
        not url_path.startswith("/") or any(c in url_path for c in "?# \t\r\n")
    ):
        # TF Serving registers such a path too, but no request can ever reach it.
        raise ValueError(
            f"{path}:{_line_of(text, 'path')}: prometheus_config.path must be a URL path "
            f'starting with "/" without a query or fragment, got "{prometheus.path}"'
        )
    return MonitoringConfig(prometheus_enable=bool(prometheus.enable), prometheus_path=url_path)


def _line_of(text: str, field: str) -> int:
    """The line where `field` is set (1 if it cannot be found), for error messages."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(field)}\s*:")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.search(line):
            return number
    return 1


def _label_value(value: str) -> str:
    # prometheus_exporter.cc SanitizeLabelValue escapes `\` and `"`; a newline is escaped
    # too, as the Prometheus text format requires, so a model name from a URL cannot
    # break the page.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_page(request_counts: Mapping[tuple[str, str], int]) -> bytes:
    """PrometheusExporter::GeneratePage for the metrics kept here.

    The `# TYPE` line is written even before the first request, as TF Serving writes it
    for every registered metric. Label sets come in the order of TensorFlow's cell map
    (byte-wise by model name, then status); lines end with `\\n`.
    """
    lines = [f"# TYPE {REQUEST_COUNT} counter"]
    rows = sorted(
        request_counts.items(),
        key=lambda item: (item[0][0].encode("utf-8", "surrogateescape"), item[0][1]),
    )
    for (model, status), count in rows:
        lines.append(
            f'{REQUEST_COUNT}{{model_name="{_label_value(model)}",status="{status}"}} {count}'
        )
    lines.append("")
    return "\n".join(lines).encode("utf-8", "surrogateescape")
