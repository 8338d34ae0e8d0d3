"""The acceptance scenarios, over HTTP.

The gateway runs with `tests/scenarios/gateway.yaml` (the scenario fixtures as plain
configuration: no scenario-specific code) and the shipped policy packs, in front of stub
TF Serving backends at the fixture URLs. Each scenario's request is sent as written and every
observable in its `expect` block is checked: status, which backend received what, response
headers, the problem body, the audit record and third-party events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.plugins.gateway import EventReceiver, GatewayHarness, StubBackend, free_port

HERE = Path(__file__).parent / "scenarios"
SPEC = yaml.safe_load((HERE / "legal-scenarios.yaml").read_text(encoding="utf-8"))
FIXTURES = SPEC["fixtures"]
SCENARIOS = {s["id"]: s for s in SPEC["scenarios"]}
COMPARED_TYPES = {
    "email", "phone", "iban", "cn_resident_id", "us_ssn", "payment_card", "in_aadhaar", "br_cpf",
}  # fmt: skip


def test_scenario_copy_matches_shared_spec() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "scenarios" / "legal-scenarios.yaml"
    if not shared.exists():
        pytest.skip("the shared specification folder is not beside this checkout")
    assert yaml.safe_load(shared.read_text(encoding="utf-8")) == SPEC


def _substitute(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("${image_b64}", FIXTURES["image_b64"])
    if isinstance(value, list):
        return [_substitute(v) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v) for k, v in value.items()}
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _on_free_ports(tmp: Path) -> tuple[Path, dict[int, int]]:
    """The scenario configuration with each loopback port of the fixtures moved to a free one
    (the fixture ports may be taken on a shared machine); nothing else changes."""
    text = (HERE / "gateway.yaml").read_text(encoding="utf-8")
    ports = {int(p): free_port() for p in re.findall(r"http://127\.0\.0\.1:(\d+)", text)}
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    text = text.replace("paths: [../../policies]", f"paths: [{HERE.parent.parent / 'policies'}]")
    shutil.copy(HERE / "tenants.yaml", tmp / "tenants.yaml")
    config = tmp / "gateway.yaml"
    config.write_text(text, encoding="utf-8")
    return config, ports


@pytest.fixture
async def world(
    tmp_path: Path,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
) -> AsyncIterator[tuple[GatewayHarness, dict[str, StubBackend], EventReceiver]]:
    config, ports = _on_free_ports(tmp_path)
    stubs: dict[str, StubBackend] = {}
    for backend in FIXTURES["backends"]:
        stub = StubBackend(backend["id"], ports[urlsplit(backend["url"]).port or 80])
        await stub.start()
        stubs[backend["id"]] = stub
    recipient = FIXTURES["third_party_recipients"][0]
    receiver = EventReceiver(ports[urlsplit(recipient["url"]).port or 80])
    await receiver.start()
    now = datetime.fromisoformat(SPEC["default_now"].replace("Z", "+00:00")).astimezone(UTC)
    harness = await gateway_factory(config, clock=lambda: now)
    try:
        yield harness, stubs, receiver
    finally:
        for stub in stubs.values():
            await stub.stop()
        await receiver.stop()


def _hmac_key(harness: GatewayHarness) -> bytes:
    return harness.runtime.masking_key


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
async def test_scenario(
    scenario_id: str,
    world: tuple[GatewayHarness, dict[str, StubBackend], EventReceiver],
) -> None:
    harness, stubs, receiver = world
    scenario = SCENARIOS[scenario_id]
    request = _substitute(scenario["request"])
    expect = scenario["expect"]
    status, headers, body = await harness.request(
        "POST",
        request["path"],
        peer=request["peer_ip"],
        headers={k: str(v) for k, v in request["headers"].items()},
        json_body=request["body"],
    )
    assert status == expect["status"], body.decode(errors="replace")
    decision_id = headers["X-Decision-Id"]

    # Which backend received the request, and what it received.
    receivers = [sid for sid, stub in stubs.items() if stub.received]
    expected_backend = expect["backend"]
    assert receivers == ([expected_backend] if expected_backend else [])
    forwarded: Any = None
    if expected_backend:
        (call,) = stubs[expected_backend].received
        forwarded = json.loads(call["body"])
        assert call["headers"].get("X-Decision-Id") == decision_id
    if expect.get("forwarded_equals_request"):
        assert forwarded == request["body"]
    strings = _strings(forwarded)
    for needle in expect.get("forwarded_must_contain", []):
        assert any(needle in s for s in strings), (needle, strings)
    for needle in expect.get("forwarded_must_not_contain", []):
        assert not any(needle in s for s in strings), (needle, strings)
    for digits in expect.get("forwarded_must_not_contain_digits", []):
        squashed = [re.sub(r"[^0-9A-Za-z]", "", s) for s in strings]
        assert not any(digits in s for s in squashed), (digits, squashed)

    # Response headers.
    for name, value in expect.get("response_headers", {}).items():
        if name == "Link":
            links = [v.strip() for v in headers.getall("Link", [])]
            joined = ", ".join(links)
            assert value in joined, (value, links)
        else:
            assert headers.get(name) == value, (name, headers.get(name))
    for name in expect.get("response_headers_absent", []):
        assert name not in headers

    # The audit trail: one decision record (plus an outcome record when forwarded).
    records = harness.records_for(decision_id)
    decisions = [r for r in records if r["type"] == "decision"]
    assert len(decisions) == 1, records
    record = decisions[0]
    assert record["decision"] == expect["decision"]
    assert record["status"] == expect["status"]
    assert record.get("backend") == expected_backend
    serialised = json.dumps(records, ensure_ascii=False)
    for basis in expect.get("legal_basis", []):
        pair = {"regime": basis["regime"], "ref": basis["ref"]}
        assert pair in record["legal_basis"], (pair, record["legal_basis"])
    if "detected_personal_data" in expect:
        reported = {
            (d["type"], d["path"])
            for d in record.get("detected_personal_data", [])
            if d["type"] in COMPARED_TYPES
        }
        wanted = {(d["type"], d["path"]) for d in expect["detected_personal_data"]}
        assert reported == wanted
    audit = expect.get("audit", {})
    if "caller_region" in audit:
        assert record["caller_region"] == audit["caller_region"]
    if "client_ip" in audit:
        # The record keeps a prefix and a keyed digest, never the full address.
        ip = audit["client_ip"]
        digest = hmac.new(_hmac_key(harness), ip.encode(), hashlib.sha256).hexdigest()
        assert record["client_ip_mac"].endswith(digest)
        assert ip not in serialised
    if "retention_days_min" in audit:
        assert record["retention_days"] >= audit["retention_days_min"]
    if "storage_region" in audit:
        assert record["storage_region"] == audit["storage_region"]
    for needle in audit.get("must_not_contain", []):
        assert needle not in serialised
    for value in _strings(request["body"]):
        if len(value) > 12:
            assert value not in serialised  # no request string values, hashes only

    # Denials: the RFC 9457 / RFC 7725 contract.
    if expect["decision"] == "deny":
        problem = json.loads(body)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert "no-store" in headers["Cache-Control"]
        for member in ("type", "title", "status", "detail", "legal_basis", "audit_id", "error"):
            assert member in problem, member
        assert problem["audit_id"] == decision_id
        for basis in expect.get("legal_basis", []):
            assert any(
                b["regime"] == basis["regime"] and b["ref"] == basis["ref"]
                for b in problem["legal_basis"]
            ), basis
        if expect["status"] == 451:
            operator = FIXTURES["operator"]
            assert problem["type"] == operator["problem_types"]["legal"]
            for member in ("demanding_party", "applies_to", "jurisdiction", "blocked_by"):
                assert member in problem, member
            link = f'<{operator["blocking_entity_uri"]}>; rel="blocked-by"'
            assert link in headers.getall("Link", [])
        remedy = expect.get("problem", {}).get("remedy_mentions")
        if remedy:
            text = json.dumps(problem)
            assert remedy in text

    # Side flows.
    events = expect.get("third_party_events", {})
    if events and harness.runtime.sinks is not None:
        await harness.runtime.sinks.close()  # drains the queues: every event is delivered
    for recipient, count in events.items():
        assert len(receiver.events) == count, recipient
