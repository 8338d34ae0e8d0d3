"""Output obligations through the gateway: a generated image leaves marked as AI-generated
in its own metadata (EU AI Act Art. 50(2)), with the disclosure header; a Global Privacy
Control opt-out keeps decision events away from a sale-or-share sink (CCPA)."""

from __future__ import annotations

import base64
import json

from gateway.marks import read_marks
from tests.plugins.gateway import png_bytes
from tests.test_scenarios_http import FIXTURES, world  # noqa: F401 - the fixture

STYLE_BODY = {"instances": [{"image_bytes": {"b64": FIXTURES["image_b64"]}, "style": "ukiyo-e"}]}


async def test_generated_image_is_marked_in_its_metadata(world) -> None:  # noqa: F811
    harness, stubs, _ = world
    image = png_bytes()
    stubs["be-eu-fra"].predict_response = lambda model: {
        "predictions": [{"image_bytes": {"b64": base64.b64encode(image).decode()}}]
    }
    status, headers, body = await harness.request(
        "POST",
        "/v1/models/style-transfer-cnn:predict",
        peer="192.0.2.70",  # FR
        headers={"X-Api-Key": "key-atelier-fr", "X-Purpose": "style_transfer"},
        json_body=STYLE_BODY,
    )
    assert status == 200, body
    returned = base64.b64decode(json.loads(body)["predictions"][0]["image_bytes"]["b64"])
    assert returned != image
    marks = read_marks(returned)
    assert marks["digital_source_type"] is not None
    assert "trainedAlgorithmicMedia" in str(marks["digital_source_type"])
    assert headers.get("X-AI-Generated") == "true"
    (decision, outcome) = harness.records_for(headers["X-Decision-Id"])
    assert decision["decision"] == "transform"
    assert outcome["marked"] == ["predictions[0].image_bytes.b64"]


async def test_unmarkable_output_never_leaves(world) -> None:  # noqa: F811
    harness, stubs, _ = world
    stubs["be-eu-fra"].predict_response = lambda model: {
        "predictions": [{"image_bytes": {"b64": base64.b64encode(b"not an image").decode()}}]
    }
    status, _, body = await harness.request(
        "POST",
        "/v1/models/style-transfer-cnn:predict",
        peer="192.0.2.70",
        headers={"X-Api-Key": "key-atelier-fr", "X-Purpose": "style_transfer"},
        json_body=STYLE_BODY,
    )
    assert status == 502
    assert "labelled" in json.loads(body)["error"]


async def test_global_privacy_control_suppresses_the_sale_or_share_sink(world) -> None:  # noqa: F811
    harness, _, receiver = world
    request = {
        "path": "/v1/models/imgcls-resnet50:predict",
        "peer": "192.0.2.140",  # US-CA
        "body": {"instances": [{"image_bytes": {"b64": FIXTURES["image_b64"]}}]},
    }
    base = {"X-Api-Key": "key-westmart-us", "X-Purpose": "product_catalog_tagging"}
    status, _, _ = await harness.request(
        "POST", request["path"], peer=request["peer"], headers=base, json_body=request["body"]
    )
    assert status == 200
    status, _, _ = await harness.request(
        "POST",
        request["path"],
        peer=request["peer"],
        headers={**base, "Sec-GPC": "1"},
        json_body=request["body"],
    )
    assert status == 200
    assert harness.runtime.sinks is not None
    await harness.runtime.sinks.close()
    assert len(receiver.events) == 1  # the opted-out request fed nothing
