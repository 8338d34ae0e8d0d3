"""Drop-in: for an allowed tenant, the gateway answers every request of the TF Serving spec
with the same status and body as the backend itself (the embedded model server).

Each case is sent twice, once straight to the model server and once through the gateway;
the statuses must match and so must the bodies, byte for byte (the gateway's own
`X-Decision-Id` header is the only addition).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from yarl import URL

from tests.plugins.gateway import GatewayHarness

ROOT = Path(__file__).resolve().parents[2]
IMAGE = [[[0.5] for _ in range(28)] for _ in range(28)]
ROW = json.dumps({"instances": [IMAGE]}).encode()
HEADERS = {"X-Purpose": "document_classification"}

CASES: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    # status, versions, labels, metadata
    ("GET", "/v1/models/mnist", None, {}),
    ("GET", "/v1/models/mnist/versions/1", None, {}),
    ("GET", "/v1/models/mnist/versions/99", None, {}),
    ("GET", "/v1/models/mnist/labels/stable", None, {}),
    ("GET", "/v1/models/mnist/metadata", None, {}),
    ("GET", "/v1/models/mnist/versions/1/metadata", None, {}),
    ("GET", "/v1/models/mnist/versions/99/metadata", None, {}),
    ("GET", "/v1/models/mnist/labels/canary/metadata", None, {}),
    ("GET", "/v1/models/MNIST", None, {}),
    ("GET", "/V1/MODELS/mnist/METADATA", None, {}),
    # predict: row and columnar forms, versions, labels
    ("POST", "/v1/models/mnist:predict", ROW, {}),
    ("POST", "/v1/models/mnist:predict", json.dumps({"inputs": [IMAGE]}).encode(), {}),
    ("POST", "/v1/models/mnist:predict",
     json.dumps({"signature_name": "serving_default", "instances": [IMAGE, IMAGE]}).encode(), {}),
    ("POST", "/v1/models/mnist/versions/1:predict", ROW, {}),
    ("POST", "/v1/models/mnist/versions/99:predict", ROW, {}),
    ("POST", "/v1/models/mnist/labels/canary:predict", ROW, {}),
    ("POST", "/v1/models/%6Dnist:predict", ROW, {}),
    ("POST", "/v1/models/mnist:predict", gzip.compress(ROW), {"Content-Encoding": "gzip"}),
    # larger than the model server's maximum batch size (32): split into batches
    ("POST", "/v1/models/mnist:predict", json.dumps({"instances": [IMAGE] * 128}).encode(), {}),
    # classify / regress on a model without those signatures
    ("POST", "/v1/models/mnist:classify", json.dumps({"examples": [{"x": [1.0]}]}).encode(), {}),
    ("POST", "/v1/models/mnist:regress", json.dumps({"examples": [{"x": [1.0]}]}).encode(), {}),
    ("POST", "/v1/models/mnist:classify", b"{}", {}),
    # request body errors
    ("POST", "/v1/models/mnist:predict", b"", {}),
    ("POST", "/v1/models/mnist:predict", b"{not json", {}),
    ("POST", "/v1/models/mnist:predict", b'{"instances": [1, 2', {}),
    ("POST", "/v1/models/mnist:predict", b"[1, 2]", {}),
    ("POST", "/v1/models/mnist:predict", b'{"signature_name": 7, "instances": [1]}', {}),
    ("POST", "/v1/models/mnist:predict", b'{"signature_name": "nope", "instances": [1]}', {}),
    ("POST", "/v1/models/mnist:predict", b'{"instances": [1], "inputs": [1]}', {}),
    ("POST", "/v1/models/mnist:predict", b'{"x": 1}', {}),
    ("POST", "/v1/models/mnist:predict", b'{"instances": 5}', {}),
    ("POST", "/v1/models/mnist:predict", b'{"instances": []}', {}),
    ("POST", "/v1/models/mnist:predict", b'{"instances": [[1, 2], [3]]}', {}),
    ("POST", "/v1/models/mnist:predict", b'{"instances": [["a"]]}', {}),
    ("POST", "/v1/models/mnist:predict", b'{"instances": [[1.0, 2.0]]}', {}),
    # URL grammar and methods
    ("GET", "/v1/models/mnist:predict", None, {}),
    ("POST", "/v1/models/mnist", ROW, {}),
    ("POST", "/v1/models/mnist/metadata", ROW, {}),
    ("POST", "/v1/models/mnist:explain", ROW, {}),
    ("POST", "/v1/models/mnist:PREDICT", ROW, {}),
    ("GET", "/v1/models/mnist/", None, {}),
    ("GET", "/v1/models/mnist/version/1", None, {}),
    ("GET", "/v1/models/mnist/versions/1/labels/x", None, {}),
    ("GET", "/v1/models/mnist/versions/abc", None, {}),
    ("GET", "/v1/models/mnist/versions/99999999999999999999", None, {}),
    ("GET", "/v1/models", None, {}),
    ("GET", "/v1/models/mnist/metadata?x=1", None, {}),
    ("PUT", "/v1/models/mnist:predict", ROW, {}),
    ("DELETE", "/v1/models/mnist", None, {}),
    ("GET", "/", None, {}),
    ("GET", "/v2/models/mnist", None, {}),
    ("OPTIONS", "/v1/models/mnist", None, {"Origin": "http://example.com"}),
    ("OPTIONS", "/v1/models/mnist", None, {}),
    # unknown model, in TF Serving's check order: body, then label, then version
    ("GET", "/v1/models/nope", None, {}),
    ("POST", "/v1/models/nope:predict", ROW, {}),
    ("GET", "/v1/models/nope/metadata", None, {}),
    ("GET", "/v1/models/nope/versions/3", None, {}),
    ("GET", "/v1/models/nope/labels/stable", None, {}),
    ("GET", "/v1/models/nope/versions/3/metadata", None, {}),
    ("GET", "/v1/models/nope/labels/stable/metadata", None, {}),
    ("POST", "/v1/models/nope/versions/3:predict", ROW, {}),
    ("POST", "/v1/models/nope/labels/canary:predict", ROW, {}),
    ("POST", "/v1/models/nope:predict", b"[1, 2]", {}),
    ("POST", "/v1/models/nope/versions/3:predict", b'{"signature_name": 7, "instances": [1]}', {}),
    ("POST", "/v1/models/nope/labels/canary:predict", b'"text"', {}),
    ("POST", "/v1/models/nope:predict", b'{"x": 1}', {}),
    ("POST", "/v1/models/nope:predict", b'{"signature_name": "x", "instances": [1]}', {}),
    ("POST", "/v1/models/nope:predict", b"{not json", {}),
    ("POST", "/v1/models/nope:classify", b"{}", {}),
    ("POST", "/v1/models/nope:regress", json.dumps({"examples": [{"x": [1.0]}]}).encode(), {}),
    ("POST", "/v1/models/nope/labels/x:classify", b'{"examples": 5}', {}),
    ("POST", "/v1/models/nope/versions/2:regress", b'{"examples": []}', {}),
    ("POST", "/v1/models/nope:classify", b'{"examples": [{"x": null}]}', {}),
    ("POST", "/v1/models/nope:classify", b'{"examples": [{"x": [1, "a"]}]}', {}),
    ("POST", "/v1/models/nope:regress", b'{"context": 1, "examples": [{}]}', {}),
    ("POST", "/v1/models/nope/labels/x:regress", json.dumps({"examples": [{"x": 1}]}).encode(),
     {}),
]  # fmt: skip


def _config(tmp: Path, backend_url: str) -> Path:
    (tmp / "tenants.yaml").write_text(
        yaml.safe_dump(
            {
                "tenants": [
                    {
                        "id": "local",
                        "established_in": "DE",
                        "registered_purposes": ["document_classification"],
                        "source_networks": ["127.0.0.0/8"],
                    }
                ]
            }  # fmt: skip
        )
    )
    config: dict[str, Any] = {
        "deployment": "gw.dropin",
        "instance": "d1",
        "admin": {"enabled": False},
        "policies": {"paths": [str(ROOT / "policies")], "watch": False},
        "tenants": {"file": "tenants.yaml"},
        "models": [{"id": "mnist", "kind": "classifier", "output": "labels"}],
        "licences": [{"id": "LIC-MNIST", "model": "mnist", "licensee": "*", "kind": "public",
                      "spdx": "Apache-2.0", "commercial_use": "allowed",
                      "valid_from": "2025-01-01"}],
        "backends": [{"id": "local", "url": backend_url, "region": "DE", "models": ["mnist"]}],
        "network": {"geoip": {"entries": [{"cidr": "127.0.0.0/8", "region": "DE"}]}},
    }  # fmt: skip
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def both(
    tmp_path: Path,
    model_server: Any,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
) -> AsyncIterator[tuple[GatewayHarness, str, aiohttp.ClientSession]]:
    harness = await gateway_factory(_config(tmp_path, model_server.rest_url))
    async with aiohttp.ClientSession(auto_decompress=False) as direct:
        yield harness, model_server.rest_url, direct


async def _send(
    session: aiohttp.ClientSession, base: str, method: str, path: str, body: bytes | None,
    headers: dict[str, str],
) -> tuple[int, bytes, str | None]:  # fmt: skip
    async with session.request(
        method, URL(base + path, encoded=True), data=body, headers=headers
    ) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type")


@pytest.mark.slow
async def test_every_spec_request_gets_the_backends_answer(
    both: tuple[GatewayHarness, str, aiohttp.ClientSession],
) -> None:
    harness, direct_url, direct = both
    mismatches: list[str] = []
    for method, path, body, extra in CASES:
        headers = {**HEADERS, **extra}
        want = await _send(direct, direct_url, method, path, body, headers)
        got = await _send(harness.session, harness.url, method, path, body, headers)
        if got != want:
            mismatches.append(
                f"{method} {path} {body[:40] if body else b''!r}:\n"
                f"  direct  {want[0]} {want[2]} {want[1][:300]!r}\n"
                f"  gateway {got[0]} {got[2]} {got[1][:300]!r}"
            )
    assert not mismatches, "\n".join(mismatches)
