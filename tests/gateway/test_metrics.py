"""`/metrics` by the Prometheus conventions: `_total` counters, `_duration_seconds`
histograms, state read at scrape time, process/GC/build-info metrics, no `_created` series;
promtool's lint rules pass (tests/plugins/promlint.py everywhere, `promtool check metrics` too
where the system's Prometheus package is installed, and the two agree)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from tests.gateway.test_pipeline import IMAGE, KEY, _write_config
from tests.plugins.gateway import GatewayHarness, StubBackend, free_port
from tests.plugins.promlint import lint


async def _scrape(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> tuple[str, GatewayHarness]:
    backend = StubBackend("be-eu", 0)
    await backend.start()
    try:
        harness = await gateway_factory(_write_config(tmp_path, backend.port, free_port()))
        status, _, _ = await harness.request(
            "POST", "/v1/models/mnist:predict",
            headers={"X-Api-Key": KEY, "X-Purpose": "document_classification"},
            json_body={"instances": [IMAGE]},
        )  # fmt: skip
        assert status == 200
        return harness.runtime.metrics.render().decode(), harness
    finally:
        await backend.stop()


async def test_metric_names_follow_the_conventions(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> None:
    text, _ = await _scrape(tmp_path, gateway_factory)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ours = {n: f for n, f in families.items() if n.startswith("jurisgate_")}
    assert ours, text
    for name, family in ours.items():
        assert family.documentation, name
        if family.type == "counter":
            assert all(s.name == f"{name}_total" for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_duration_seconds"), name
        assert not name.endswith("_seconds") or family.type in ("histogram", "gauge"), name
    assert "_created" not in text
    assert 'what="all"' not in text
    for name in ("jurisgate_stage_duration_seconds", "jurisgate_backend_request_duration_seconds",
                 "jurisgate_audit_append_duration_seconds", "jurisgate_requests",
                 "jurisgate_decisions", "jurisgate_audit_queue_depth"):  # fmt: skip
        assert name in ours, name
    build = ours["jurisgate_build_info"].samples[0]
    assert build.value == 1 and build.labels["version"] == __version__
    assert any(n.startswith("process_") for n in families), "process metrics missing"
    assert any(n.startswith("python_gc_") for n in families), "GC metrics missing"
    append = next(
        s for s in ours["jurisgate_audit_append_duration_seconds"].samples
        if s.name.endswith("_count")
    )  # fmt: skip
    assert append.value >= 1  # the request's record


async def test_audit_state_is_read_at_scrape_time(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> None:
    _, harness = await _scrape(tmp_path, gateway_factory)
    size_before = harness.runtime.audit.stats().size

    def fsync_gauge() -> float:
        text = harness.runtime.metrics.render().decode()
        family = next(
            f for f in text_string_to_metric_families(text)
            if f.name == "jurisgate_audit_last_fsync_duration_seconds"
        )  # fmt: skip
        return float(family.samples[0].value)

    # The value tracks the writer's own statistics without any handler copying it.
    assert fsync_gauge() == harness.runtime.audit.stats().last_fsync_seconds
    assert harness.runtime.audit.stats().size == size_before


BAD_EXPOSITION = """\
# HELP a_requests Requests.
# TYPE a_requests counter
a_requests 1
# TYPE b_open_total gauge
b_open_total 2
# HELP c_latency_milliseconds Latency.
# TYPE c_latency_milliseconds gauge
c_latency_milliseconds 3
# HELP d_size_kb Size.
# TYPE d_size_kb gauge
d_size_kb 1
# HELP e_hits_counter_total Hits.
# TYPE e_hits_counter_total counter
e_hits_counter_total 1
# HELP fooBar_x Camel.
# TYPE fooBar_x gauge
fooBar_x{myLabel="1",le="2",quantile="3"} 1
# HELP g:rule Colon.
# TYPE g:rule gauge
g:rule 1
"""


async def test_the_exposition_passes_promtools_lint_rules(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> None:
    text, _ = await _scrape(tmp_path, gateway_factory)
    assert lint(text) == []


def test_the_lint_reports_what_promtool_reports() -> None:
    found = lint(BAD_EXPOSITION)
    assert len(found) == 11 and all(
        any(line.startswith(name + " ") for line in found)
        for name in ("a_requests", "b_open_total", "c_latency_milliseconds", "d_size_kb",
                     "e_hits_counter_total", "fooBar_x", "g:rule")
    ), found  # fmt: skip
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (the system's Prometheus package) is not installed")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=BAD_EXPOSITION, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    reported = {
        line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()
    }
    assert reported == set(found)


async def test_promtool_accepts_the_exposition(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> None:
    promtool = shutil.which("promtool")
    text, _ = await _scrape(tmp_path, gateway_factory)
    if promtool is None:
        pytest.skip("promtool (the system's Prometheus package) is not installed")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr
