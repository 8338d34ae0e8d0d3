"""Record shape, minimisation guards and helpers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.audit.errors import RecordInvalid
from gateway.audit.record import (
    MAX_RECORD_BYTES,
    SYSTEM_TYPES,
    PayloadDigester,
    format_ts,
    minimise_ip,
    parse_ts,
    validate_record,
)

from .conftest import decision

KEY = bytes(range(32))


def test_a_gateway_shaped_record_is_accepted_and_copied() -> None:
    record = decision(1)
    fields = validate_record(record)
    assert fields == record and fields is not record


@pytest.mark.parametrize("kind", ["decision", "outcome", "policy_change"])
def test_caller_types(kind: str) -> None:
    assert validate_record({"type": kind})["type"] == kind


@pytest.mark.parametrize("kind", [*sorted(SYSTEM_TYPES), "audit", None])
def test_system_and_unknown_types_are_refused(kind: Any) -> None:
    with pytest.raises(RecordInvalid, match="not allowed"):
        validate_record({"type": kind})


@pytest.mark.parametrize("field", ["seq", "prev", "ts", "kid", "log", "v"])
def test_log_fields_are_refused(field: str) -> None:
    with pytest.raises(RecordInvalid, match="set by the log"):
        validate_record({"type": "decision", field: 1})


@pytest.mark.parametrize(
    "record,match",
    [
        ({"type": "decision", "body": "x"}, "raw content"),
        ({"type": "decision", "prompt": "x"}, "raw content"),
        ({"type": "decision", "headers": {}}, "raw content"),
        ({"type": "decision", "client_ip": "192.0.2.10"}, "full IP"),
        ({"type": "decision", "client_ip": "2001:db8::1"}, "full IP"),
        ({"type": "decision", "req_mac": "5e" * 32}, "hmac-sha256"),
        ({"type": "decision", "resp_mac": "hmac-sha256:k1:XYZ"}, "hmac-sha256"),
        ({"type": "decision", "Tenant": "x"}, "field name"),
        ({"type": "decision", "lat": 1.5}, "floats"),
        ({"type": "decision", "big": 2**60}, "outside"),
        ({"type": "decision", "n": {"\u00e9": 1}}, "not ASCII"),
        ({"type": "decision", "n": "\udc00"}, "surrogate"),
        ({"type": "decision", "blob": "x" * MAX_RECORD_BYTES}, "limit"),
    ],
)
def test_bad_records_are_refused_with_a_reason(record: dict[str, Any], match: str) -> None:
    with pytest.raises(RecordInvalid, match=match):
        validate_record(record)


def test_minimised_ip_forms_are_accepted() -> None:
    validate_record({"type": "decision", "client_ip": "192.0.2.0/24"})
    validate_record({"type": "decision", "client_ip": None})
    digester = PayloadDigester(KEY, "k1")
    validate_record({"type": "decision", "client_ip": minimise_ip("192.0.2.7", digester=digester)})


def test_minimise_ip() -> None:
    assert minimise_ip("192.0.2.77") == "192.0.2.0/24"
    assert minimise_ip("2001:db8:1:2:3::9") == "2001:db8:1::/48"
    assert minimise_ip("192.0.2.77", v4_prefix=16) == "192.0.0.0/16"
    keyed = minimise_ip("192.0.2.77", digester=PayloadDigester(KEY, "k1"))
    assert keyed.startswith("hmac-sha256:k1:") and "192.0.2" not in keyed
    with pytest.raises(ValueError):
        minimise_ip("not an ip")


def test_payload_digests_are_keyed_and_versioned(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b'{"instances": [{"note": "jane@example.com"}]}'
    digest = PayloadDigester(KEY, "k7").digest(payload)
    prefix, version, hexdigest = digest.split(":")
    assert (prefix, version) == ("hmac-sha256", "k7")
    assert hexdigest != hashlib.sha256(payload).hexdigest()
    assert PayloadDigester(bytes(32), "k7").digest(payload) != digest
    monkeypatch.setenv("AUDIT_HMAC", KEY.hex())
    assert PayloadDigester.from_env("AUDIT_HMAC", "k7").digest(payload) == digest
    with pytest.raises(ValueError):
        PayloadDigester(b"short", "k1")
    with pytest.raises(ValueError):
        PayloadDigester(KEY, "bad version")


def test_timestamps() -> None:
    moment = datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=UTC)
    text = format_ts(moment)
    assert text == "2026-03-01T12:00:00.000005Z"
    assert parse_ts(text) == moment
    with pytest.raises(ValueError):
        format_ts(datetime(2026, 3, 1))


@pytest.mark.parametrize("kind", [["decision"], {"a": 1}, 7, None])
def test_a_record_type_that_is_not_a_string_is_named_not_raised(kind: object) -> None:
    from gateway.audit.record import record_shape_problem

    record = {"v": 1, "seq": 0, "prev": "0" * 64, "ts": "2026-01-01T00:00:00.000000Z",
              "kid": "0123abcd", "log": "gw.example/a", "type": kind}  # fmt: skip
    assert "unknown record type" in (record_shape_problem(record) or "")
