"""The acceptance scenarios, over HTTP.

The gateway runs with `tests/scenarios/gateway.yaml` (the scenario fixtures as plain
configuration: no scenario-specific code) and the shipped policy packs, in front of stub
TF Serving backends at the fixture URLs. Each scenario's request is sent as written and every
observable in its `expect` block is checked: status, which backend received what, response
headers, the problem body, the output image's metadata, the audit record and third-party
events; a scenario naming an observable the harness does not know fails, so nothing in an
`expect` block goes unchecked. Each scenario runs at its own `now` (default `default_now`),
and each stub backend answers as `fixtures.backend_stub_responses` says (a generative model
returns a 256x256 RGB PNG without metadata).

`marking-scenarios.yaml` holds further scenarios in the same format over the same fixtures
for the output-labelling duties (AI Act Art. 50(2), CN Labelling Measures) that the shared
twelve do not exercise; a test deletes each marking obligation from a copy of the packs and
shows one of them failing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.marks import read_marks
from tests.plugins.gateway import EventReceiver, GatewayHarness, StubBackend, free_port, png_bytes

HERE = Path(__file__).parent / "scenarios"
POLICIES = HERE.parent.parent / "policies"
SPEC = yaml.safe_load((HERE / "legal-scenarios.yaml").read_text(encoding="utf-8"))
FIXTURES = SPEC["fixtures"]
SCENARIOS = {s["id"]: s for s in SPEC["scenarios"]}
MARKING = {
    s["id"]: s
    for s in yaml.safe_load((HERE / "marking-scenarios.yaml").read_text(encoding="utf-8"))[
        "scenarios"
    ]
}
#: Every observable the scenario format defines (`conventions.outcome_fields`).
EXPECT_KEYS = {
    "decision",
    "status",
    "backend",
    "legal_basis",
    "detected_personal_data",
    "forwarded_must_contain",
    "forwarded_must_not_contain",
    "forwarded_must_not_contain_digits",
    "forwarded_equals_request",
    "response_headers",
    "response_headers_absent",
    "problem",
    "output_image_metadata",
    "third_party_events",
    "audit",
}
AUDIT_KEYS = {
    "decision",
    "caller_region",
    "client_ip",
    "untrusted_region_claims",
    "storage_region",
    "retention_days_min",
    "must_not_contain",
    "must_not_contain_input",
    "must_record",
}
#: The image a generative stub returns: a 256x256 RGB PNG without metadata.
STUB_IMAGE = png_bytes(256)
GENERATIVE = {m["id"] for m in FIXTURES["models"] if m["kind"] == "generative"}
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


def _on_free_ports(tmp: Path, policies: Path = POLICIES) -> tuple[Path, dict[int, int]]:
    """The scenario configuration with each loopback port of the fixtures moved to a free one
    (the fixture ports may be taken on a shared machine); nothing else changes."""
    text = (HERE / "gateway.yaml").read_text(encoding="utf-8")
    ports = {int(p): free_port() for p in re.findall(r"http://127\.0\.0\.1:(\d+)", text)}
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    text = text.replace("paths: [../../policies]", f"paths: [{policies}]")
    shutil.copy(HERE / "tenants.yaml", tmp / "tenants.yaml")
    config = tmp / "gateway.yaml"
    config.write_text(text, encoding="utf-8")
    return config, ports


def _stub_response(model: str) -> Any:
    if model in GENERATIVE:
        b64 = base64.b64encode(STUB_IMAGE).decode("ascii")
        return {"predictions": [{"image_bytes": {"b64": b64}}]}
    return FIXTURES["backend_stub_responses"]["classifier"]


class World:
    """The gateway with the scenario configuration, its stub backends, the third-party
    recipient, and the clock each scenario sets."""

    def __init__(self) -> None:
        self.harness: GatewayHarness | None = None
        self.stubs: dict[str, StubBackend] = {}
        self.receiver: EventReceiver | None = None
        self.now = _time(SPEC["default_now"])

    async def start(
        self, tmp: Path, factory: Callable[..., Awaitable[GatewayHarness]], policies: Path
    ) -> None:
        config, ports = _on_free_ports(tmp, policies)
        for backend in FIXTURES["backends"]:
            stub = StubBackend(
                backend["id"],
                ports[urlsplit(backend["url"]).port or 80],
                predict_response=_stub_response,
            )
            await stub.start()
            self.stubs[backend["id"]] = stub
        recipient = FIXTURES["third_party_recipients"][0]
        self.receiver = EventReceiver(ports[urlsplit(recipient["url"]).port or 80])
        await self.receiver.start()
        self.harness = await factory(config, clock=lambda: self.now)

    def __iter__(self) -> Iterator[Any]:
        """`harness, stubs, receiver = world`, as other gateway tests unpack it."""
        return iter((self.harness, self.stubs, self.receiver))

    async def stop(self) -> None:
        for stub in self.stubs.values():
            await stub.stop()
        if self.receiver is not None:
            await self.receiver.stop()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@pytest.fixture
async def world(
    tmp_path: Path,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
) -> AsyncIterator[World]:
    started = World()
    try:
        await started.start(tmp_path, gateway_factory, POLICIES)  # a failed start still stops
        yield started
    finally:
        await started.stop()


def _hmac_key(harness: GatewayHarness) -> bytes:
    return harness.runtime.masking_key


@pytest.mark.parametrize("scenario_id", sorted(SCENARIOS))
async def test_scenario(scenario_id: str, world: World) -> None:
    await run_scenario(SCENARIOS[scenario_id], world)


@pytest.mark.parametrize("scenario_id", sorted(MARKING))
async def test_marking_scenario(scenario_id: str, world: World) -> None:
    await run_scenario(MARKING[scenario_id], world)


async def run_scenario(scenario: dict[str, Any], world: World) -> None:
    """Send the scenario's request and check every observable of its `expect` block."""
    harness, stubs, receiver = world.harness, world.stubs, world.receiver
    assert harness is not None and receiver is not None
    for stub in stubs.values():
        stub.received.clear()
    receiver.events.clear()
    world.now = _time(scenario.get("now", SPEC["default_now"]))
    request = _substitute(scenario["request"])
    expect = scenario["expect"]
    assert set(expect) <= EXPECT_KEYS, set(expect) - EXPECT_KEYS
    assert set(expect.get("audit", {})) <= AUDIT_KEYS, set(expect["audit"]) - AUDIT_KEYS
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

    # The image the caller receives.
    wanted_meta = expect.get("output_image_metadata")
    explicit = headers.get("X-AIGC-Explicit-Label")
    if wanted_meta or explicit:
        document = json.loads(body)
        image = base64.b64decode(document["predictions"][0]["image_bytes"]["b64"])
        marks = read_marks(image)
        if wanted_meta and wanted_meta.get("must_declare_ai_generated"):
            source = marks["digital_source_type"] or ""
            assert source.rsplit("/", 1)[-1] in (
                "trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia",
            ), marks  # fmt: skip
        for name in (wanted_meta or {}).get("aigc_implicit_label", []):
            label = marks["aigc"] or marks["aigc_text_chunk"] or {}
            assert label.get(name), (name, marks)
        if explicit == "applied":
            # The header may only say what was done: the visible label changed the pixels.
            assert _pixels(image) != _pixels(STUB_IMAGE)
        elif explicit is not None:
            assert _pixels(image) == _pixels(STUB_IMAGE)

    if "untrusted_region_claims" in audit:
        assert sorted(record["untrusted_region_claims"]) == sorted(audit["untrusted_region_claims"])
    if audit.get("must_not_contain_input"):
        for value in _strings(request["body"]):
            assert value not in serialised
    for item in audit.get("must_record", []):
        if item in ("tenant", "tenant id"):
            tenant = next(
                t["id"]
                for t in FIXTURES["tenants"]
                if t["api_key"] == request["headers"]["X-Api-Key"]
            )
            assert record["tenant"] == tenant
        elif item in ("end_user", "end-user reference"):
            reference = request["headers"]["X-End-User-Id"]
            digest = hmac.new(_hmac_key(harness), reference.encode(), hashlib.sha256).hexdigest()
            assert record["end_user_mac"].endswith(digest)
            assert reference not in serialised
        else:
            raise AssertionError(f"unknown must_record item `{item}`")

    # Side flows.
    events = expect.get("third_party_events", {})
    if events and harness.runtime.sinks is not None:
        await harness.runtime.sinks.close()  # drains the queues: every event is delivered
    for recipient, count in events.items():
        assert len(receiver.events) == count, recipient


def _pixels(image: bytes) -> bytes:
    from PIL import Image

    return Image.open(io.BytesIO(image)).convert("RGB").tobytes()


#: Headers that are marking duties themselves (a disclosure, or the statement of the label).
_MARKING_HEADERS = ("X-AI-Generated", "X-AIGC-Explicit-Label")


def _marking_obligations() -> list[tuple[str, str, str, str]]:
    """(pack file, rule id, kind, name) of every marking obligation in the shipped packs
    whose rule concerns images (the fixtures have no audio, video or text generator)."""
    found = []
    for path in sorted(POLICIES.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("kind") != "pack":
            continue
        for rule in data["rules"]:
            obligations = rule.get("obligations") or {}
            if rule.get("when", {}).get("model.output") != "image":
                continue
            rel = path.relative_to(POLICIES).as_posix()
            for mark in obligations.get("image_marks", []):
                found.append((rel, rule["id"], "image_marks", mark["scheme"]))
            for header in obligations.get("headers", {}):
                if header in _MARKING_HEADERS:
                    found.append((rel, rule["id"], "headers", header))
    return found


MARKING_OBLIGATIONS = _marking_obligations()


def test_the_packs_have_marking_obligations_to_delete() -> None:
    kinds = {(rule, name) for _, rule, _, name in MARKING_OBLIGATIONS}
    assert ("euaia-mark-generated-images", "iptc_digital_source_type") in kinds
    assert ("cn-label-implicit", "cn_aigc_implicit_label") in kinds
    assert ("cn-label-explicit", "cn_aigc_explicit_label") in kinds
    assert ("cn-label-explicit-omitted", "X-AIGC-Explicit-Label") in kinds


def _without(tmp: Path, rel: str, rule_id: str, kind: str, name: str) -> Path:
    """A copy of the packs with one marking obligation deleted (and what only it justified:
    an `applied` statement of a label no longer drawn; a rule left with no obligation)."""
    root = tmp / "policies"
    shutil.copytree(POLICIES, root)
    data = yaml.safe_load((root / rel).read_text(encoding="utf-8"))
    rules = data["rules"]
    rule = next(r for r in rules if r["id"] == rule_id)
    obligations = rule["obligations"]
    if kind == "image_marks":
        obligations["image_marks"] = [m for m in obligations["image_marks"] if m["scheme"] != name]
        if name == "cn_aigc_explicit_label":
            obligations.get("headers", {}).pop("X-AIGC-Explicit-Label", None)
    else:
        obligations["headers"].pop(name)
    for key in [k for k, v in obligations.items() if not v]:
        del obligations[key]
    if not obligations:
        rules.remove(rule)
    (root / rel).write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return root


@pytest.mark.parametrize(
    ("rel", "rule_id", "kind", "name"),
    MARKING_OBLIGATIONS,
    ids=[f"{rule}:{name}" for _, rule, _, name in MARKING_OBLIGATIONS],
)
async def test_deleting_a_marking_obligation_fails_a_scenario(
    tmp_path: Path,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
    rel: str,
    rule_id: str,
    kind: str,
    name: str,
) -> None:
    policies = _without(tmp_path, rel, rule_id, kind, name)
    started = World()
    (tmp_path / "world").mkdir()
    await started.start(tmp_path / "world", gateway_factory, policies)
    failed: list[str] = []
    try:
        for scenario_id, scenario in sorted(MARKING.items()):
            try:
                await run_scenario(scenario, started)
            except AssertionError:
                failed.append(scenario_id)
    finally:
        await started.stop()
    assert failed, f"no scenario notices {rule_id} losing {name}"


async def test_the_marking_scenarios_pass_in_sequence_on_the_shipped_packs(world: World) -> None:
    """The control for the deletion test: one world, every marking scenario, no failure."""
    for _scenario_id, scenario in sorted(MARKING.items()):
        await run_scenario(scenario, world)
