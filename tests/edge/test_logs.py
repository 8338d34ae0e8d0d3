"""Log lines: `extra=` fields (the decision id) as JSON members, other libraries' request data
stripped, a text format for terminals, and the optional access log without personal data."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from gateway.edge.logs import JsonFormatter, RequestDataFilter, TextFormatter, configure_logging
from tests.gateway.test_pipeline import IMAGE, KEY, _write_config
from tests.plugins.gateway import GatewayHarness, StubBackend, free_port


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield buffer
    root.handlers[:] = saved
    root.setLevel(level)


def _lines(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line]


def _configure(buffer: io.StringIO, fmt: str) -> None:
    configure_logging("INFO", fmt)  # type: ignore[arg-type]
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)


def test_extra_fields_are_json_members(stream: io.StringIO) -> None:
    _configure(stream, "json")
    logging.getLogger("jurisgate").error(
        "request failed: %s", "ValueError", extra={"decision_id": "d-1", "msg_count": 2}
    )
    entry = json.loads(_lines(stream)[-1])
    assert entry["decision_id"] == "d-1" and entry["msg_count"] == 2
    assert entry["msg"] == "request failed: ValueError" and entry["level"] == "error"


def test_an_extra_field_never_replaces_a_standard_member(stream: io.StringIO) -> None:
    _configure(stream, "json")
    logging.getLogger("jurisgate").warning("real", extra={"logger": "forged", "ts": "x"})
    entry = json.loads(_lines(stream)[-1])
    assert entry["logger"] == "jurisgate" and entry["ts"] != "x"


def test_other_libraries_lose_their_arguments_and_extras(stream: io.StringIO) -> None:
    _configure(stream, "json")
    logging.getLogger("aiohttp.server").error(
        "bad request line %r", "GET /?email=anna@example.de", extra={"peer": "198.51.100.7"}
    )
    line = _lines(stream)[-1]
    assert "anna@example.de" not in line and "198.51.100.7" not in line
    assert json.loads(line)["msg"] == "bad request line [redacted]"


def test_text_format(stream: io.StringIO) -> None:
    _configure(stream, "text")
    logging.getLogger("jurisgate").info("reloaded", extra={"decision_id": "d-2"})
    line = _lines(stream)[-1]
    assert line.endswith("INFO    jurisgate: reloaded decision_id=d-2")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_auto_is_json_when_not_a_terminal(stream: io.StringIO) -> None:
    configure_logging("INFO", "auto")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler.formatter, JsonFormatter)
    assert not isinstance(handler.formatter, TextFormatter)
    assert any(isinstance(f, RequestDataFilter) for f in handler.filters)


async def test_access_log_has_no_personal_data(
    tmp_path: Path,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = StubBackend("be-eu", 0)
    await backend.start()
    try:
        config = _write_config(tmp_path, backend.port, free_port(), logs={"access": True})
        harness = await gateway_factory(config)
        with caplog.at_level(logging.INFO, logger="jurisgate.access"):
            status, headers, _ = await harness.request(
                "POST", "/v1/models/mnist:predict?email=anna@example.de",
                headers={"X-Api-Key": KEY, "X-Purpose": "document_classification"},
                json_body={"instances": [IMAGE]},
            )  # fmt: skip
    finally:
        await backend.stop()
    records = [r for r in caplog.records if r.name == "jurisgate.access"]
    assert len(records) == 1, records
    line = JsonFormatter().format(records[0])
    entry = json.loads(line)
    assert entry["path"] == "/v1/models/mnist:predict" and entry["status"] == status
    assert entry["decision_id"] == headers["X-Decision-Id"] and entry["duration_ms"] >= 0
    for secret in ("anna@example.de", KEY, "127.0.0.1", "document_classification"):
        assert secret not in line


async def test_access_log_is_off_by_default(
    tmp_path: Path,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = await gateway_factory(_write_config(tmp_path, free_port(), free_port()))
    with caplog.at_level(logging.INFO, logger="jurisgate.access"):
        await harness.request("GET", "/v1/models/mnist")
    assert not [r for r in caplog.records if r.name == "jurisgate.access"]
