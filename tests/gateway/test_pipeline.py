"""The gateway end to end against stub TF Serving backends on loopback.

Allow, mask, deny 451 and 403, reroute, unknown caller, upstream down and slow, audit
fail-closed, hostile bodies and paths; every request must leave the audit log verifiable.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main as cli_main
from gateway.request.tenants import hash_api_key
from tests.plugins.gateway import GatewayHarness, StubBackend

ROOT = Path(__file__).resolve().parents[2]
KEY = "key-test-tenant-0123456789abcdef"
IMAGE = [[[0.0] for _ in range(28)] for _ in range(28)]


def _write_config(tmp: Path, eu_port: int, us_port: int, **overrides: Any) -> Path:
    tenants = {
        "tenants": [
            {
                "id": "acme",
                "api_key_hashes": [hash_api_key(KEY)],
                "established_in": "DE",
                "registered_purposes": ["document_classification"],
                "mask_pd_in_free_text": True,
            },
            {
                "id": "no-licence",
                "api_key_hashes": [hash_api_key(KEY + "-2")],
                "established_in": "DE",
                "registered_purposes": ["document_classification"],
            },
        ]
    }
    (tmp / "tenants.yaml").write_text(yaml.safe_dump(tenants))
    config: dict[str, Any] = {
        "version": 1,
        "deployment": "gw.test",
        "instance": "t1",
        "admin": {"enabled": False},
        "operator": {"name": "Test Operator", "established_in": "DE"},
        "policies": {"paths": [str(ROOT / "policies")], "watch": False},
        "tenants": {"file": "tenants.yaml"},
        "models": [{"id": "mnist", "kind": "classifier", "output": "labels",
                    "placed_on_market": "2026-01-01"}],
        "licences": [{"id": "LIC-MNIST-ACME", "model": "mnist", "licensee": "acme",
                      "kind": "contract", "commercial_use": "allowed",
                      "valid_from": "2025-01-01", "valid_until": "2030-12-31"}],
        "backends": [
            {"id": "be-eu", "url": f"http://127.0.0.1:{eu_port}", "region": "DE",
             "models": ["mnist"]},
            {"id": "be-us", "url": f"http://127.0.0.1:{us_port}", "region": "US",
             "models": ["mnist"]},
        ],
        "routing": {"default_by_caller_region": {"EU": "be-eu", "US": "be-us", "other": "be-eu"}},
        "network": {"geoip": {"entries": [
            {"cidr": "127.0.0.0/8", "region": "DE"},
            {"cidr": "192.0.2.0/26", "region": "DE"},
            {"cidr": "192.0.2.128/26", "region": "US-CA"},
            {"cidr": "203.0.113.0/26", "region": "IR"},
        ]}},
        "limits": {"max_body_bytes": 200_000, "max_inflated_bytes": 400_000,
                   "max_json_depth": 32},
        "timeouts": {"connect_s": 1.0, "read_s": 1.0},
    }  # fmt: skip
    config.update(overrides)
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


Env = tuple[GatewayHarness, StubBackend, StubBackend]


@pytest.fixture
async def env(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> AsyncIterator[Env]:
    eu = StubBackend("be-eu", 0)
    us = StubBackend("be-us", 0)
    await eu.start()
    await us.start()
    harness = await gateway_factory(_write_config(tmp_path, eu.port, us.port))
    try:
        yield harness, eu, us
    finally:
        await eu.stop()
        await us.stop()


def _headers(**extra: str) -> dict[str, str]:
    return {"X-Api-Key": KEY, "X-Purpose": "document_classification", **extra}


def _verify(harness: GatewayHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`jurisgate audit verify` accepts the log the requests wrote."""
    code = cli_main(
        ["audit", "verify", str(harness.audit_dir), "--trusted-keys", str(harness.trusted_keys)]
    )
    out = capsys.readouterr()
    assert code == 0, out.out + out.err


async def test_allowed_request_is_relayed_byte_for_byte(env: Env) -> None:
    harness, eu, us = env
    status, headers, body = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=_headers(),
        json_body={"instances": [IMAGE]},
    )  # fmt: skip
    assert status == 200
    assert (
        body
        == json.dumps(
            {"predictions": [{"classes": ["sneaker", "boot"], "scores": [0.91, 0.05]}]}, indent=4
        ).encode()
    )
    assert headers["Content-Type"] == "application/json"
    decision_id = headers["X-Decision-Id"]
    assert len(eu.received) == 1 and not us.received
    assert eu.received[0]["path"] == "/v1/models/mnist:predict"
    assert "X-Api-Key" not in eu.received[0]["headers"]
    kinds = [r["type"] for r in harness.records_for(decision_id)]
    assert kinds == ["decision", "outcome"]
    record = harness.records_for(decision_id)[0]
    assert record["decision"] == "allow" and record["tenant"] == "acme"


async def test_wrong_key_is_401_and_audited(env: Env) -> None:
    harness, eu, _ = env
    status, headers, body = await harness.request(
        "POST", "/v1/models/mnist:predict", headers={"X-Api-Key": "nope"},
        json_body={"instances": [IMAGE]},
    )  # fmt: skip
    assert status == 401
    problem = json.loads(body)
    assert "error" in problem and problem["decision_id"] == headers["X-Decision-Id"]
    assert "X-Api-Key" in problem["remedy"]
    assert not eu.received
    (record,) = harness.records_for(headers["X-Decision-Id"])
    assert record["decision"] == "reject" and record["status"] == 401


async def test_sanctioned_region_is_451_and_nothing_forwarded(env: Env) -> None:
    harness, eu, us = env
    status, headers, body = await harness.request(
        "POST", "/v1/models/mnist:predict", peer="203.0.113.9", headers=_headers(),
        json_body={"instances": [IMAGE]},
    )  # fmt: skip
    assert status == 451
    assert headers["Content-Type"].startswith("application/problem+json")
    assert 'rel="blocked-by"' in headers["Link"] and "no-store" in headers["Cache-Control"]
    problem = json.loads(body)
    assert any(b["regime"] == "SANCTIONS-US" for b in problem["legal_basis"])
    assert problem["rules"] and problem["error"]
    assert not eu.received and not us.received


async def test_untrusted_region_claim_tightens_only(env: Env) -> None:
    harness, eu, _ = env
    # A claim of Iran from an untrusted client is a red flag: stricter, never looser.
    status, _, _ = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=_headers(**{"X-Geo-Country": "IR"}),
        json_body={"instances": [IMAGE]},
    )  # fmt: skip
    assert status == 451
    # A claim of the US from an Iranian address does not unlock anything.
    status, _, _ = await harness.request(
        "POST", "/v1/models/mnist:predict", peer="203.0.113.9",
        headers=_headers(**{"X-Geo-Country": "US", "X-Forwarded-For": "192.0.2.130"}),
        json_body={"instances": [IMAGE]},
    )  # fmt: skip
    assert status == 451
    assert not eu.received


async def test_missing_licence_is_403(env: Env) -> None:
    harness, eu, _ = env
    status, headers, body = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=_headers(**{"X-Api-Key": KEY + "-2"}),
        json_body={"instances": [IMAGE]},
    )  # fmt: skip
    assert status == 403
    problem = json.loads(body)
    assert problem["type"].endswith("licence-restriction")
    assert any(b["regime"] == "LICENCE" for b in problem["legal_basis"])
    assert "Link" not in headers
    assert not eu.received


async def test_personal_data_is_masked_before_forwarding(env: Env) -> None:
    harness, eu, _ = env
    note = "call anna.schmidt@example.de or +49 30 23125000"
    status, headers, _ = await harness.request(
        "POST", "/v1/models/mnist:predict",
        headers=_headers(**{"X-Data-Subject-Region": "DE"}),
        json_body={"instances": [{"image": IMAGE, "note": note}]},
    )  # fmt: skip
    assert status == 200
    forwarded = json.loads(eu.received[0]["body"])
    masked = forwarded["instances"][0]["note"]
    assert "anna.schmidt" not in masked and "23125000" not in masked
    assert forwarded["instances"][0]["image"] == IMAGE
    (record, _) = harness.records_for(headers["X-Decision-Id"])
    assert record["decision"] == "transform"
    assert {t["category"] for t in record["transformations"]} == {"email", "phone"}
    assert "anna" not in json.dumps(harness.audit_records())


async def test_gzip_body_is_inflated_and_inspected(env: Env) -> None:
    harness, eu, _ = env
    body = json.dumps({"instances": [{"image": IMAGE, "note": "mail me: bob@example.org"}]})
    status, _, _ = await harness.request(
        "POST", "/v1/models/mnist:predict",
        headers=_headers(**{"Content-Encoding": "gzip", "X-Data-Subject-Region": "DE"}),
        body=gzip.compress(body.encode()),
    )  # fmt: skip
    assert status == 200
    assert b"bob@example.org" not in eu.received[0]["body"]
    assert "Content-Encoding" not in eu.received[0]["headers"]


@pytest.mark.parametrize(
    ("body", "encoding", "status", "needle"),
    [
        (b"", None, 400, "The document is empty"),
        (b'{"instances": [1, 2', None, 400, "JSON Parse error"),
        (b'{"instances": [1], "instances": [2]}', None, 400, "duplicate"),
        (b'{"instances": [1]} trailing', None, 400, "JSON Parse error"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, None, 400, "JSON Parse error"),
        (b"\xff\xfe{}", None, 400, "JSON Parse error"),
        (b"x" * 300_000, None, 413, "limit"),
        (zlib.compress(b"{" * 10), "br", 415, "not supported"),
        (gzip.compress(b" " * 500_000), "gzip", 413, "exceeds"),
        (b"\x1f\x8b\x08garbage", "gzip", 400, ""),
    ],
)
async def test_bad_bodies_get_clear_errors_and_are_not_forwarded(
    env: Env, body: bytes, encoding: str | None, status: int, needle: str
) -> None:
    harness, eu, _ = env
    headers = _headers(**({"Content-Encoding": encoding} if encoding else {}))
    got, resp_headers, text = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=headers, body=body
    )
    assert got == status, text
    payload = json.loads(text)
    assert needle in payload["error"]
    # Errors TF Serving also makes keep its exact body; the decision id is in the header.
    assert (
        payload.get("decision_id", resp_headers["X-Decision-Id"]) == resp_headers["X-Decision-Id"]
    )
    assert not eu.received


@pytest.mark.parametrize(
    ("method", "path", "status", "content_type"),
    [
        ("GET", "/", 404, "text/html"),
        ("GET", "/v2/models/mnist", 404, "text/html"),
        ("GET", "/v1/models", 400, "application/json"),
        ("GET", "/v1/models/mnist:predict", 400, "application/json"),
        ("PUT", "/v1/models/mnist:predict", 400, "application/json"),
        ("POST", "/v1/models/mnist:PREDICT", 400, "application/json"),
        ("POST", "/v1/models/../models/mnist:predict", 400, "application/json"),
    ],
)
async def test_tf_serving_url_grammar_is_enforced_before_forwarding(
    env: Env, method: str, path: str, status: int, content_type: str
) -> None:
    harness, eu, _ = env
    got, headers, _ = await harness.request(method, path, headers=_headers(), body=b"{}")
    assert got == status
    assert headers["Content-Type"].startswith(content_type)
    assert not eu.received


async def test_encoded_model_name_reaches_the_canonical_path(env: Env) -> None:
    harness, eu, _ = env
    status, _, _ = await harness.request(
        "POST", "/V1/MODELS/%6Dnist:predict", headers=_headers(), json_body={"instances": [IMAGE]}
    )
    assert status == 200
    assert eu.received[0]["path"] == "/v1/models/mnist:predict"


async def test_status_and_metadata_are_forwarded(env: Env) -> None:
    harness, eu, _ = env
    status, _, body = await harness.request("GET", "/v1/models/mnist", headers=_headers())
    assert status == 200 and b"AVAILABLE" in body
    status, _, _ = await harness.request("GET", "/v1/models/mnist/metadata", headers=_headers())
    assert status == 200
    assert [c["path"] for c in eu.received] == ["/v1/models/mnist", "/v1/models/mnist/metadata"]


async def test_unknown_model_answers_like_tf_serving(env: Env) -> None:
    harness, eu, _ = env
    status, _, body = await harness.request(
        "POST", "/v1/models/nope:predict", headers=_headers(), json_body={"instances": [IMAGE]}
    )
    assert status == 404
    assert json.loads(body)["error"] == "Servable not found for request: Latest(nope)"


async def test_backend_down_is_503_and_slow_is_504(env: Env) -> None:
    harness, eu, _ = env
    eu.delay_s = 1.5  # beyond timeouts.read_s
    status, headers, body = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=_headers(), json_body={"instances": [IMAGE]}
    )
    assert status == 504
    assert json.loads(body)["decision_id"] == headers["X-Decision-Id"]
    outcome = harness.records_for(headers["X-Decision-Id"])[-1]
    assert outcome["type"] == "outcome" and outcome["status"] == 504
    await eu.stop()
    status, headers, body = await harness.request(
        "POST", "/v1/models/mnist:predict", headers=_headers(), json_body={"instances": [IMAGE]}
    )
    assert status in (502, 503)
    assert "error" in json.loads(body)


async def test_audit_failure_fails_closed(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    harness, eu, _ = env
    import gateway.audit.storage as storage

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", disk_full)
    for _ in range(2):
        status, headers, body = await harness.request(
            "POST", "/v1/models/mnist:predict", headers=_headers(),
            json_body={"instances": [IMAGE]},
        )  # fmt: skip
        assert status == 503
        assert "Audit log unavailable" in json.loads(body)["error"]
    assert not eu.received
    status, _, body = await harness.request("GET", "/readyz")
    assert status == 503 and json.loads(body)["audit"]["healthy"] is False


async def test_audit_log_of_a_session_verifies(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    harness, _, _ = env
    for peer in ("192.0.2.5", "203.0.113.9", "192.0.2.140"):
        await harness.request(
            "POST", "/v1/models/mnist:predict", peer=peer, headers=_headers(),
            json_body={"instances": [IMAGE]},
        )  # fmt: skip
    await harness.request("POST", "/v1/models/mnist:predict", headers={"X-Api-Key": "bad"})
    # Close the log (stop record, final checkpoint) before verifying it offline.
    await harness.runtime.audit.close()
    _verify(harness, tmp_path, capsys)
    assert os.path.isdir(harness.audit_dir)


async def test_a_policy_evaluation_error_is_a_500_and_audited(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> None:
    """A policy that cannot be evaluated is a fault, not a legal demand: 500, never 451."""
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    (policies / "broken.yaml").write_text(
        "kind: pack\nversion: 1\nid: broken\nregime: GDPR\nrules:\n"
        "  - id: cites-an-absent-field\n    stage: lawful_basis\n    effect: deny\n"
        "    when: {request.method: predict}\n"
        '    basis: [{ref: "Art. ${subject.age}"}]\n',
        encoding="utf-8",
    )
    eu = StubBackend("be-eu", 0)
    us = StubBackend("be-us", 0)
    await eu.start()
    await us.start()
    try:
        config = _write_config(
            tmp_path, eu.port, us.port, policies={"paths": [str(policies)], "watch": False}
        )
        harness = await gateway_factory(config)
        status, headers, body = await harness.request(
            "POST", "/v1/models/mnist:predict", headers=_headers(),
            json_body={"instances": [IMAGE]},
        )  # fmt: skip
        assert status == 500
        assert headers["Content-Type"].startswith("application/problem+json")
        assert "Link" not in headers
        problem = json.loads(body)
        assert problem["status"] == 500 and problem["type"].endswith("#policy-evaluation-error")
        assert "legal_basis" not in problem and "demanding_party" not in problem
        (record,) = [
            r for r in harness.records_for(headers["X-Decision-Id"]) if r["type"] == "decision"
        ]
        assert record["decision"] == "deny" and record["status"] == 500 and record["errors"]
        assert not eu.received and not us.received
    finally:
        await eu.stop()
        await us.stop()
