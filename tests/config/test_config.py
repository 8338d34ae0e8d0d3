"""The configuration model: every key refuses a wrong value with a located diagnostic, at start
(exit 3) and at reload (the last good configuration keeps serving, a later good edit applies);
the schema, the defaults and the reference table in docs/configuration.md come from the model.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.audit.witness import CosignerKey
from gateway.config.loader import ConfigError, load_config
from gateway.config.model import Sink, config_json_schema
from gateway.config.reference import reference_rows
from gateway.edge.app import run_gateway
from gateway.edge.reload import reload_snapshot
from gateway.errors import format_diagnostics
from tests.plugins.gateway import GatewayHarness, StubBackend, free_port

ROOT = Path(__file__).resolve().parents[2]
WITNESS_KEY = CosignerKey("witness.example", bytes(range(32))).vkey()

BASE: dict[str, Any] = {
    "version": 1,
    "admin": {"enabled": False},
    "policies": {"paths": [str(ROOT / "policies")], "watch": False},
    "backends": [
        {"id": "be-eu", "url": "http://127.0.0.1:9", "region": "DE", "models": ["mnist"]},
        {"id": "be-us", "url": "http://127.0.0.1:10", "region": "US", "models": ["mnist"]},
    ],
    "routing": {"default_by_caller_region": {"EU": "be-eu"}},
    "network": {"geoip": {"entries": [{"cidr": "127.0.0.0/8", "region": "DE"}]}},
    "sinks": [{"id": "s1", "url": "http://127.0.0.1:11/events", "category": "analytics"}],
    "audit": {"witnesses": [{"url": "http://127.0.0.1:12/w", "key": WITNESS_KEY}]},
}

#: A value of the wrong JSON type for each JSON-schema type.
WRONG_TYPE = {"string": 12, "integer": "twelve", "number": "fast", "boolean": "yes",
              "array": "a,b", "object": 7, "literal": "twelve"}  # fmt: skip


def _leaf_types() -> Iterator[tuple[str, str]]:
    """(dotted key, JSON type) of every scalar, list and mapping setting of the model."""
    schema = config_json_schema()
    defs = schema["$defs"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            return resolve(options[0])
        return node

    def walk(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
        for key, child in node.get("properties", {}).items():
            child = resolve(child)
            dotted = f"{prefix}{key}"
            if "properties" in child and child.get("additionalProperties") is False:
                yield dotted, "object"
                yield from walk(child, dotted + ".")
            elif child.get("type") == "array" and "properties" in resolve(child["items"]):
                yield dotted, "array"
                yield from walk(resolve(child["items"]), dotted + "[].")
            elif "const" in child or "enum" in child:
                yield dotted, "literal"
            else:
                yield dotted, child.get("type", "string")

    yield from walk(schema, "")


def _set(data: dict[str, Any], dotted: str, value: Any) -> tuple[int | str, ...]:
    """Put `value` at `dotted` (list items: the first one), returning its data path."""
    path: list[int | str] = []
    node: Any = data
    parts = dotted.replace("[]", ".0").split(".")
    for index, part in enumerate(parts):
        key: int | str = int(part) if part.isdigit() else part
        last = index == len(parts) - 1
        if last:
            node[key] = value
        else:
            if isinstance(key, str) and not isinstance(node.get(key), dict | list):
                node[key] = [{}] if parts[index + 1] == "0" else {}
            if isinstance(node[key], list) and not node[key]:
                node[key].append({})
            node = node[key]
        path.append(key)
    return tuple(path)


# Each: (dotted key, bad value, diagnostic code); beside the wrong-type case of every key.
VALUE_CASES: list[tuple[str, Any, str]] = [
    ("version", 2, "config_value_error"),
    ("deployment", "a b", "config_value_error"),
    ("instance", "gw/1", "config_value_error"),
    ("listen.port", 70000, "config_value_error"),
    ("admin.port", -1, "config_value_error"),
    ("admin.token", {"env": "A", "file": "b"}, "config_value_error"),
    ("admin.token", {}, "config_value_error"),
    ("operator.established_in", "Germany", "config_value_error"),
    ("operator.blocking_entity_uri", "mailto:legal@example.org", "config_value_error"),
    ("policies.paths", [], "config_value_error"),
    ("backends", [], "config_value_error"),
    ("backends[].id", "be eu", "config_value_error"),
    ("backends[].url", "http://127.0.0.1:9/?x=1", "config_value_error"),
    ("backends[].url", "http://user:pw@127.0.0.1:9", "config_value_error"),
    ("backends[].url", "http://127.0.0.1:9/#frag", "config_value_error"),
    ("backends[].url", "http://127.0.0.1:99999", "config_value_error"),
    ("backends[].url", "ftp://127.0.0.1", "config_value_error"),
    ("backends[].region", "de", "config_value_error"),
    ("backends[].models", [], "config_value_error"),
    ("backends[].weight", -1, "config_value_error"),
    ("backends[].grpc", "grpc://host:8500", "config_value_error"),
    ("backends[].id", "be-us", "config_duplicate_id"),
    ("grpc.port", 65536, "config_value_error"),
    ("routing.default_by_caller_region", {"EU": "be-mars"}, "config_ref_error"),
    ("network.trusted_proxies", ["10.0.0.0/33"], "config_value_error"),
    ("network.forwarded_header", "x-real-ip", "config_value_error"),
    ("network.trusted_region_header", "X Region", "config_value_error"),
    ("network.geoip.entries[].cidr", "not-a-net", "config_value_error"),
    ("network.geoip.entries[].region", "Deutschland", "config_value_error"),
    ("headers.purpose", "X Purpose", "config_value_error"),
    ("limits.max_body_bytes", 10, "config_value_error"),
    ("limits.max_json_depth", 255, "config_value_error"),
    ("timeouts.read_s", 0, "config_value_error"),
    ("pool.limit", 0, "config_value_error"),
    ("clients.body_timeout_s", -5, "config_value_error"),
    ("audit.hmac_key_version", "k-1", "config_value_error"),
    ("audit.durability", "strikt", "config_value_error"),
    ("audit.retention_default_days", 0, "config_value_error"),
    ("audit.max_unsynced_records", 2_000_000, "config_value_error"),
    ("audit.group_commit_max_delay_ms", -1, "config_value_error"),
    ("audit.witnesses[].key", "not-a-key", "config_value_error"),
    ("audit.witnesses[].url", "http://127.0.0.1:12/w?x=1", "config_value_error"),
    ("sinks[].id", "-bad", "config_value_error"),
    ("sinks[].id", "x" * 65, "config_value_error"),
    ("sinks[].url", "https://hook.example/?token=1", "config_value_error"),
    ("sinks[].category", "sale_or_share", "config_value_error"),
    ("sinks[].category", "Analytics", "config_value_error"),
    ("sinks[].queue_size", 0, "config_value_error"),
    ("sinks[].max_attempts", 0, "config_value_error"),
    ("sinks[].headers", {"Bad Header": "x"}, "config_value_error"),
    ("listen.hots", "127.0.0.1", "config_unknown_key"),
]

TYPE_CASES = [
    (key, WRONG_TYPE[kind], "config_value_error" if kind == "literal" else "config_type_error")
    for key, kind in _leaf_types()
    if key not in ("models[].id", "licences[].id")  # catalogue entries take any attributes
]
CASES = (
    TYPE_CASES
    + VALUE_CASES
    + [
        ("models[].id", 3, "config_type_error"),
        ("licences[].licensee", [], "config_type_error"),
    ]
)


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _bad_config(tmp: Path, key: str, value: Any) -> tuple[Path, tuple[int | str, ...]]:
    data = copy.deepcopy(BASE)
    data_path = _set(data, key, value)
    path = tmp / "gateway.yaml"
    _write(path, data)
    return path, data_path


def test_base_configuration_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    _write(path, BASE)
    config = load_config(path, {})
    assert config.read_timeout_s > 30.0  # above TF Serving's own REST timeout
    assert config.sinks[0].queue_size == Sink.model_fields["queue_size"].default


def test_every_key_has_a_wrong_type_case() -> None:
    keys = {key for key, _, _ in CASES}
    documented = {key for key, _, _ in reference_rows()}
    assert documented <= keys | {"models[].id", "licences[].id"}, documented - keys


@pytest.mark.parametrize(
    ("key", "value", "code"), CASES, ids=[f"{k}={v!r}"[:60] for k, v, _ in CASES]
)
async def test_a_wrong_value_is_a_located_diagnostic_and_exit_3(
    tmp_path: Path, key: str, value: Any, code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data_path = _bad_config(tmp_path, key, value)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"A": "x"})
    diagnostics = caught.value.diagnostics()
    assert any(d.code == code for d in diagnostics), [d.text() for d in diagnostics]
    first = next(d for d in diagnostics if d.code == code)
    assert first.location is not None and first.location.file == str(path)
    assert first.location.line >= 1 and first.help
    text = format_diagnostics(diagnostics, cap=None)
    assert re.search(rf"^{re.escape(str(path))}:\d+:\d+: {code}: ", text, re.M), text
    assert "help:" in text
    assert await run_gateway(path) == 3
    out = capsys.readouterr().out
    assert f"{code}:" in out and "Traceback" not in out


def test_the_schema_is_the_model_s(tmp_path: Path) -> None:
    schema = config_json_schema()
    assert schema["properties"]["timeouts"] == {"$ref": "#/$defs/Timeouts"}
    assert schema["$defs"]["Timeouts"]["properties"]["read_s"]["default"] > 30
    assert "backends" in schema["required"]


def test_environment_overrides_follow_the_model(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    _write(path, BASE)
    env = {
        "JURISGATE__TIMEOUTS__READ_S": "45",
        "JURISGATE__NETWORK__FORWARDED_HEADER": "forwarded",
        "JURISGATE__POOL__LIMIT": "9",
        "JURISGATE__NETWORK__TRUSTED_PROXIES": "10.0.0.0/8",
    }
    config = load_config(path, env)
    assert config.read_timeout_s == 45.0 and config.forwarded_header == "forwarded"
    assert config.pool.limit == 9 and str(config.trusted_proxies[0]) == "10.0.0.0/8"
    for name, raw in (("JURISGATE__POOL__LIMIT", "many"), ("JURISGATE__POOL__NOPE", "1"),
                      ("JURISGATE__BACKENDS", "x"), ("JURISGATE__POOL__LIMIT", "0")):  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            load_config(path, {name: raw})
        text = format_diagnostics(caught.value.diagnostics(), cap=None)
        assert name in text or "pool.limit" in text, text


def test_settings_reach_the_runtime(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["backends"][0]["weight"] = 5
    data["sinks"][0].update(headers={"Authorization": "Bearer x"}, max_attempts=2, queue_size=7)
    data["pool"] = {"limit_per_host": 3}
    path = tmp_path / "gateway.yaml"
    _write(path, data)
    config = load_config(path, {})
    assert config.backends[0].weight == 5
    assert config.sinks[0].headers == (("Authorization", "Bearer x"),)
    assert (config.sinks[0].max_attempts, config.sinks[0].queue_size) == (2, 7)
    assert config.pool.limit_per_host == 3


def test_the_reference_table_is_generated_from_the_model() -> None:
    from gateway.config.reference import render_reference

    text = (ROOT / "docs" / "configuration.md").read_text()
    assert render_reference() in text, "regenerate: python -m gateway.config.reference"


# -- reload -----------------------------------------------------------------------------------


@pytest.fixture
async def serving(tmp_path: Path, gateway_factory: Any) -> Any:
    backend = StubBackend("be-eu", 0)
    await backend.start()
    data = copy.deepcopy(BASE)
    data["backends"][0]["url"] = f"http://127.0.0.1:{backend.port}"
    data["audit"] = {}
    path = tmp_path / "gateway.yaml"
    _write(path, data)
    harness: GatewayHarness = await gateway_factory(path)
    try:
        yield harness, path, data
    finally:
        await backend.stop()


# Overridden by the harness's environment, so the file's value never counts.
_ENV_SET = ("audit.directory", "audit.signing_key", "audit")


async def test_a_wrong_value_at_reload_keeps_the_last_good_configuration(serving: Any) -> None:
    harness, path, good = serving
    runtime = harness.runtime
    serving_config = runtime.snapshot.config
    for key, value, code in CASES:
        if key in _ENV_SET:
            continue
        data = copy.deepcopy(good)
        _set(data, key, value)
        _write(path, data)
        result = await reload_snapshot(runtime, trigger="test")
        assert result["result"] == "error", (key, value)
        assert any(f"{path}:" in line and f"{code}:" in line for line in result["diagnostics"]), (
            key,
            result["diagnostics"],
        )
        assert runtime.snapshot.config is serving_config
    status, _, _ = await harness.request("GET", "/v1/models/mnist")
    assert status != 500
    edited = copy.deepcopy(good)
    edited["headers"] = {"purpose": "X-Use"}
    _write(path, edited)
    assert (await reload_snapshot(runtime, trigger="test"))["result"] == "ok"
    assert runtime.snapshot.config.headers.purpose == "X-Use"


async def test_an_unexpected_error_stays_inside_the_reload_boundary(
    serving: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness, path, good = serving
    runtime = harness.runtime

    def explode(config: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("gateway.edge.reload.build_snapshot", explode)
    result = await reload_snapshot(runtime, trigger="test")
    assert result["result"] == "error" and "disk on fire" in result["diagnostics"][0]
    monkeypatch.undo()
    assert (await reload_snapshot(runtime, trigger="test"))["result"] == "ok"


@pytest.mark.slow
def test_serve_refuses_a_backend_url_with_a_query_with_exit_3(tmp_path: Path) -> None:
    path, _ = _bad_config(tmp_path, "backends[].url", "http://127.0.0.1:9/?x=1")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: config_value_error: backends\[0\]\.url",
                     proc.stdout), proc.stdout  # fmt: skip


@pytest.mark.slow
async def test_the_watcher_survives_a_bad_edit_and_applies_a_later_good_one(
    tmp_path: Path,
) -> None:
    import asyncio
    import os
    import time

    import aiohttp

    from tests.plugins.gateway import make_signing_key

    admin_port = free_port()
    data = copy.deepcopy(BASE)
    data.update(
        listen={"host": "127.0.0.1", "port": free_port()},
        admin={"enabled": True, "port": admin_port, "token": {"env": "TEST_ADMIN_TOKEN"}},
        policies={"paths": [str(ROOT / "policies")], "watch": True},
        audit={"directory": "audit", "signing_key": str(make_signing_key(tmp_path / "k", "gw"))},
    )
    del data["sinks"]
    path = tmp_path / "gateway.yaml"
    _write(path, data)
    env = {**os.environ, "TEST_ADMIN_TOKEN": "t" * 24, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{admin_port}/admin/v1/policy"
    auth = {"Authorization": "Bearer " + "t" * 24}

    async def last_reload(session: aiohttp.ClientSession) -> dict[str, Any]:
        try:
            async with session.get(url, headers=auth) as resp:
                return dict((await resp.json())["last_reload"])
        except aiohttp.ClientError:
            return {}

    async def until(session: aiohttp.ClientSession, result: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = await last_reload(session)
            if seen.get("result") == result and seen.get("trigger") == "file-change":
                return seen
            await asyncio.sleep(0.2)
        raise AssertionError(f"no {result} reload: {seen}")

    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while not await last_reload(session):
                assert time.monotonic() < deadline and proc.poll() is None
                await asyncio.sleep(0.2)
            bad = copy.deepcopy(data)
            bad["backends"][0]["url"] = "http://127.0.0.1:9/?x=1"
            _write(path, bad)
            failed = await until(session, "error")
            assert any("config_value_error: backends[0].url" in d for d in failed["diagnostics"])
            await asyncio.sleep(1.5)
            good = copy.deepcopy(data)
            good["headers"] = {"purpose": "X-Use"}
            _write(path, good)
            await until(session, "ok")
            assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = await asyncio.to_thread(proc.communicate, None, 30)
    assert "Traceback" not in err.decode()
