"""Complete mediation: what the backend decodes, the gateway decodes; what it cannot read, it
refuses; masking changes nothing but the masked characters; every request ends audited.

Each test here reproduces a way personal data used to reach the model unmasked or unrecorded.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.request.tenants import hash_api_key
from tests.gateway.test_pipeline import IMAGE, KEY, Env, _headers, _verify, _write_config
from tests.gateway.test_pipeline import env as pipeline_env
from tests.plugins.gateway import GatewayHarness, StubBackend, free_port, png_bytes

PREDICT = "/v1/models/mnist:predict"
# The same gateway and stub backends as the pipeline tests.
env = pipeline_env


async def _predict(harness: GatewayHarness, body: bytes, **headers: str) -> tuple[int, Any, str]:
    status, response_headers, payload = await harness.request(
        "POST", PREDICT, headers=_headers(**headers), body=body
    )
    return status, payload, response_headers.get("X-Decision-Id", "")


def _forwarded(backend: StubBackend) -> bytes:
    body: bytes = backend.received[-1]["body"]
    return body


def _decision(harness: GatewayHarness, decision_id: str) -> dict[str, Any]:
    (record,) = [r for r in harness.records_for(decision_id) if r["type"] == "decision"]
    return record


# -- encodings the backend decodes ------------------------------------------------------------


NOTE = "Rückruf an anna.schmidt@example.de oder +49 30 23125000"


@pytest.mark.parametrize(
    ("encode", "alphabet_chars"),
    [
        (lambda raw: base64.b64encode(raw).decode(), "+/="),
        (lambda raw: base64.b64encode(raw).decode().rstrip("="), "+/"),
        (lambda raw: base64.urlsafe_b64encode(raw).decode(), "-_="),
        (lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("="), "-_"),
    ],
    ids=["standard", "standard-unpadded", "urlsafe", "urlsafe-unpadded"],
)
async def test_b64_strings_are_decoded_masked_and_reencoded_in_the_callers_form(
    env: Env, encode: Callable[[bytes], str], alphabet_chars: str
) -> None:
    harness, eu, _ = env
    # Padding chosen so that every form differs from the others (a `?` byte gives `/` or `_`).
    raw = (NOTE + " ??>").encode()
    note = encode(raw)
    assert set(note) & set(alphabet_chars)
    body = json.dumps({"instances": [{"images": IMAGE, "note": {"b64": note}}]}).encode()
    status, _, decision_id = await _predict(harness, body)
    assert status == 200
    forwarded = json.loads(_forwarded(eu))
    sent = forwarded["instances"][0]["note"]["b64"]
    other = "+/" if "-" in alphabet_chars else "-_"
    assert not set(sent) & set(other), "the caller's alphabet is kept"
    assert sent.endswith("=") == note.endswith("=")
    decoded = base64.b64decode(sent.translate(str.maketrans("-_", "+/")) + "==").decode()
    assert decoded == "Rückruf an [EMAIL] oder [PHONE] ??>"
    record = _decision(harness, decision_id)
    assert {"type": "email", "path": "instances[0].note.b64"} in record["detected_personal_data"]
    assert {"type": "phone", "path": "instances[0].note.b64"} in record["detected_personal_data"]
    assert record["decision"] == "transform"


async def test_columnar_b64_and_data_urls_are_masked(env: Env) -> None:
    harness, eu, _ = env
    note = base64.b64encode(b"iban DE89 3704 0044 0532 0130 00").decode()
    data_url = "data:text/plain;charset=utf-8;base64," + base64.b64encode(NOTE.encode()).decode()
    body = json.dumps(
        {"inputs": {"images": [IMAGE], "note": [{"b64": note}], "extra": data_url}}
    ).encode()
    status, _, decision_id = await _predict(harness, body)
    assert status == 200
    forwarded = json.loads(_forwarded(eu))["inputs"]
    assert base64.b64decode(forwarded["note"][0]["b64"]) == b"iban [IBAN]"
    header, content = forwarded["extra"].split(",", 1)
    assert header == "data:text/plain;charset=utf-8;base64"
    assert base64.b64decode(content).decode() == "Rückruf an [EMAIL] oder [PHONE]"
    record = _decision(harness, decision_id)
    found = {(f["type"], f["path"]) for f in record["detected_personal_data"]}
    assert ("iban", "inputs.note[0].b64") in found and ("email", "inputs.extra") in found


async def test_binary_values_are_recorded_with_their_media_type(env: Env) -> None:
    harness, eu, _ = env
    image = base64.b64encode(png_bytes(16)).decode()
    body = json.dumps({"instances": [{"images": IMAGE, "photo": {"b64": image}}]}).encode()
    status, _, decision_id = await _predict(harness, body)
    assert status == 200
    record = _decision(harness, decision_id)
    assert record["binary_inputs"] == [
        {"path": "instances[0].photo.b64", "media_type": "image/png", "size": len(png_bytes(16))}
    ]
    assert _forwarded(eu) == body


async def test_personal_data_inside_a_binary_value_that_must_be_masked_is_refused(
    env: Env,
) -> None:
    harness, eu, _ = env
    # A serialised record: text fields between binary framing bytes (not valid UTF-8).
    record_bytes = b"\x0a\x8f\xff\x01note\x12\x20anna.schmidt@example.de \xfe\x00"
    body = json.dumps(
        {"instances": [{"images": IMAGE, "note": {"b64": base64.b64encode(record_bytes).decode()}}]}
    ).encode()
    status, payload, decision_id = await _predict(harness, body)
    assert status == 422, payload
    problem = json.loads(payload)
    assert problem["code"] == "unmaskable_personal_data"
    assert not eu.received
    record = _decision(harness, decision_id)
    assert record["decision"] == "reject" and record["status"] == 422
    assert {"type": "email", "path": "instances[0].note.b64"} in record["detected_personal_data"]


async def test_a_b64_value_the_gateway_cannot_decode_is_refused(env: Env) -> None:
    harness, eu, _ = env
    body = json.dumps({"instances": [{"images": IMAGE, "note": {"b64": "not base64!"}}]}).encode()
    status, payload, decision_id = await _predict(harness, body)
    assert status == 400
    assert json.loads(payload)["code"] == "undecodable_value"
    assert not eu.received
    assert _decision(harness, decision_id)["decision"] == "reject"


# -- strings that look like base64, Unicode tricks --------------------------------------------


@pytest.mark.parametrize(
    "note",
    [
        "Please-charge-card-4111111111111111-for-the-order-of-the-customer-thanks-a-lot",
        "Refund_to_IBAN_DE89370400440532013000_as_agreed_with_the_customer_yesterday_ok",
        "CallTheCustomerBackOnTheNumber-+4930231250000-BeforeTheEndOfTheWorkingDayPlease",
    ],
    ids=["card", "iban", "phone"],
)
async def test_long_base64_alphabet_sentences_are_scanned(env: Env, note: str) -> None:
    harness, eu, _ = env
    assert len(note) >= 64
    body = json.dumps({"instances": [{"images": IMAGE, "note": note}]}).encode()
    status, _, _ = await _predict(harness, body)
    assert status == 200
    sent = json.loads(_forwarded(eu))["instances"][0]["note"]
    assert "[" in sent and "4111111111111111" not in sent
    assert "DE89370400440532013000" not in sent and "4930231250000" not in sent


@pytest.mark.parametrize(
    "note",
    [
        "mail anna\u200b.schmidt@example.de now",
        "mail anna.schmidt\uff20example.de now",
        "mail anna.schmidt@exa\u0000mple.de now",
        "card 4111\u00ad1111\u00ad1111\u00ad1111 ok",
        "card \uff14\uff11\uff11\uff11 1111 1111 1111 ok",
        "iban DE89\u20603704\u20600044\u20600532\u20600130\u206000 ok",
        "tel +49\u00a030\u200d23125000 ok",
    ],
    ids=["zwsp", "fullwidth-at", "nul", "soft-hyphen", "fullwidth-digits", "word-joiner", "zwj"],
)
async def test_unicode_variants_are_masked_exactly(env: Env, note: str) -> None:
    harness, eu, _ = env
    body = json.dumps({"instances": [{"images": IMAGE, "note": note}]}).encode()
    status, _, decision_id = await _predict(harness, body)
    assert status == 200
    sent = json.loads(_forwarded(eu))["instances"][0]["note"]
    prefix, suffix = note.split(" ", 1)[0], note.rsplit(" ", 1)[1]
    # The whole value, invisible characters included, is replaced; the words around stay.
    assert sent.startswith(prefix + " [") and sent.endswith("] " + suffix), sent
    assert sent.count("[") == 1
    assert _decision(harness, decision_id)["detected_personal_data"]


# -- masking leaves the rest of the document as sent ------------------------------------------


async def test_masking_keeps_numbers_nan_key_order_and_spacing(env: Env) -> None:
    harness, eu, _ = env
    body = (
        b'{"signature_name" : "annotated",\n "instances": [{"note": "mail anna@example.de",'
        b' "images": [[[NaN], [Infinity], [-Infinity], [1.0], [1e5], [0.10000000000000001]]]}],'
        b' "z": 12345678901234567890}'
    )
    status, _, _ = await _predict(harness, body)
    assert status == 200
    assert _forwarded(eu) == body.replace(b"mail anna@example.de", b"mail [EMAIL]")


# -- declared facts only tighten --------------------------------------------------------------


def _us_tenant_config(tmp: Path, eu_port: int, us_port: int, *, attests: bool) -> Path:
    path = _write_config(tmp, eu_port, us_port)
    config = yaml.safe_load(path.read_text())
    # Only a US backend: a GDPR-bound request has nowhere lawful to go.
    config["backends"] = [b for b in config["backends"] if b["id"] == "be-us"]
    config["routing"] = {"default_by_caller_region": {"other": "be-us"}}
    config["licences"][0]["licensee"] = "us-corp"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    tenant: dict[str, Any] = {
        "id": "us-corp",
        "api_key_hashes": [hash_api_key(KEY)],
        "established_in": "US",
        "registered_purposes": ["document_classification"],
    }
    if attests:
        tenant["attests"] = ["subject_region"]
    (tmp / "tenants.yaml").write_text(yaml.safe_dump({"tenants": [tenant]}))
    return path


@pytest.mark.parametrize("attests", [False, True])
async def test_a_declared_subject_region_adds_to_the_inferred_one_unless_attested(
    tmp_path: Path,
    gateway_factory: Callable[..., Awaitable[GatewayHarness]],
    attests: bool,
) -> None:
    us = StubBackend("be-us", 0)
    await us.start()
    try:
        harness = await gateway_factory(
            _us_tenant_config(tmp_path, free_port(), us.port, attests=attests)
        )
        body = json.dumps({"instances": [{"images": IMAGE, "note": "mail a@b.de"}]}).encode()
        # From a German address (127.0.0.0/8 is DE in the test table) with personal data.
        status, _, _ = await _predict(harness, body)
        assert status == 451
        status, payload, decision_id = await _predict(
            harness, body, **{"X-Data-Subject-Region": "US"}
        )
        record = _decision(harness, decision_id)
        assert record["declared_subject_region"] == {"region": "US", "attested": attests}
        if attests:
            assert status == 200, payload
        else:
            assert status == 451, payload
            assert not us.received
    finally:
        await us.stop()


# -- every failure is decided, audited and counted --------------------------------------------


@pytest.mark.parametrize("age", ["\u00b2", "\u0661\u0665", "\uff11\uff15", "1 5", "-3", "1000"])
async def test_non_ascii_declared_numbers_are_a_400_naming_the_header(env: Env, age: str) -> None:
    harness, eu, _ = env
    body = json.dumps({"instances": [IMAGE]}).encode()
    status, response_headers, payload = await harness.request(
        "POST", PREDICT, headers={**_headers(), "X-Data-Subject-Age": age}, body=body
    )
    assert status == 400, payload
    problem = json.loads(payload)
    assert "X-Data-Subject-Age" in problem["detail"]
    record = _decision(harness, response_headers["X-Decision-Id"])
    assert record["decision"] == "reject" and record["status"] == 400
    assert not eu.received


async def test_an_unexpected_failure_is_an_audited_500(
    env: Env,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    harness, eu, _ = env
    import gateway.pipeline.steps as steps

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret anna@example.de")

    monkeypatch.setattr(steps, "build_context", explode)
    body = json.dumps({"instances": [IMAGE]}).encode()
    status, response_headers, payload = await harness.request(
        "POST", PREDICT, headers=_headers(), body=body
    )
    assert status == 500
    problem = json.loads(payload)
    assert problem["code"] == "internal_error"
    assert "anna@example.de" not in payload.decode()
    record = _decision(harness, response_headers["X-Decision-Id"])
    assert record["decision"] == "error" and record["status"] == 500
    assert record["error_type"] == "RuntimeError"
    assert not eu.received
    metrics = harness.runtime.metrics.render().decode()
    assert 'outcome="error"' in metrics and 'status="500"' in metrics
    _verify(harness, tmp_path, capsys)


BINARY_PACK = """\
kind: pack
version: 1
id: binary-uploads
title: Binary uploads
regime: GDPR
stage: minimisation
rules:
  - id: no-opaque-binary-for-classification
    description: opaque binary inputs cannot be inspected for personal data
    effect: deny
    status: 451
    when:
      request.purpose: document_classification
      request.binary_inputs: {contains_any: [application/octet-stream]}
    basis: [{ref: "Art. 5(1)(c)"}]
    problem:
      title: Binary input refused
      detail: inputs the gateway cannot inspect are refused for this purpose
"""


async def test_a_policy_can_refuse_binary_inputs_by_media_type(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[GatewayHarness]]
) -> None:
    import shutil

    policies = tmp_path / "policies"
    shutil.copytree(Path(__file__).resolve().parents[2] / "policies", policies)
    (policies / "binary-uploads.yaml").write_text(BINARY_PACK)
    eu = StubBackend("be-eu", 0)
    await eu.start()
    try:
        config = _write_config(tmp_path, eu.port, free_port())
        data = yaml.safe_load(config.read_text())
        data["policies"]["paths"] = [str(policies)]
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        harness = await gateway_factory(config)
        opaque = base64.b64encode(bytes(range(128, 256))).decode()
        png = base64.b64encode(png_bytes(16)).decode()
        body = json.dumps({"instances": [{"images": IMAGE, "blob": {"b64": opaque}}]}).encode()
        status, payload, _ = await _predict(harness, body)
        assert status == 451 and json.loads(payload)["rules"] == [
            "no-opaque-binary-for-classification"
        ]
        body = json.dumps({"instances": [{"images": IMAGE, "blob": {"b64": png}}]}).encode()
        status, _, _ = await _predict(harness, body)
        assert status == 200
    finally:
        await eu.stop()


async def test_personal_data_in_an_object_key_never_reaches_the_log_or_the_model(
    env: Env,
) -> None:
    harness, eu, _ = env
    body = json.dumps(
        {"instances": [{"images": IMAGE, "anna.schmidt@example.de": "call +49 30 23125000"}]}
    ).encode()
    status, payload, decision_id = await _predict(harness, body)
    # The policy masks e-mail addresses, and a key cannot be rewritten: refused.
    assert status == 422, payload
    assert not eu.received
    record = _decision(harness, decision_id)
    assert {"type": "email", "path": 'instances[0]["[key]"]'} in record["detected_personal_data"]
    assert {"type": "phone", "path": 'instances[0]["[key]"]'} in record["detected_personal_data"]
    log_bytes = b"".join(path.read_bytes() for path in harness.audit_dir.rglob("*.jsonl"))
    assert b"anna.schmidt" not in log_bytes
