"""The TF Serving REST URL grammar: every example of tfserving-api.md section 3 and the path
traps of section 10, plus the canonical paths the gateway forwards instead of the client's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.tfserving import (
    INT64_MAX,
    Route,
    TfsError,
    build_backend_path,
    encode_path_segment,
    error_body,
    libevent_error_page,
    parse_request_target,
    tfs_error,
)

NOT_FOUND_PAGE = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)


def route(model: str, verb: str, *, version: int | None = None, label: str | None = None) -> Route:
    return Route(model, version, label, verb)  # type: ignore[arg-type]


# (method, target, expected Route) -- requests TF Serving executes.
ROUTES: list[tuple[str, str, Route]] = [
    # section 3 table
    ("GET", "/v1/models/m", route("m", "status")),
    ("GET", "/v1/models/m/versions/3", route("m", "status", version=3)),
    ("GET", "/v1/models/m/labels/stable", route("m", "status", label="stable")),
    # labels on status are accepted whatever they are (TF Serving ignores them)
    ("GET", "/v1/models/m/labels/no-such-label", route("m", "status", label="no-such-label")),
    ("GET", "/v1/models/m/metadata", route("m", "metadata")),
    ("GET", "/v1/models/m/versions/3/metadata", route("m", "metadata", version=3)),
    ("GET", "/v1/models/m/labels/stable/metadata", route("m", "metadata", label="stable")),
    ("POST", "/v1/models/m:predict", route("m", "predict")),
    ("POST", "/v1/models/m:classify", route("m", "classify")),
    ("POST", "/v1/models/m:regress", route("m", "regress")),
    ("POST", "/v1/models/m/versions/1:predict", route("m", "predict", version=1)),
    ("POST", "/v1/models/m/labels/canary:predict", route("m", "predict", label="canary")),
    ("POST", "/v1/models/m/labels/canary:classify", route("m", "classify", label="canary")),
    # case-insensitive match, case-sensitive verb and subresource
    ("POST", "/V1/MODELS/m:predict", route("m", "predict")),
    ("POST", "/v1/Models/m/VERSIONS/2:regress", route("m", "regress", version=2)),
    ("POST", "/v1/models/m/LABELS/Canary:predict", route("m", "predict", label="Canary")),
    ("GET", "/v1/models/m/METADATA", route("m", "status")),
    ("GET", "/v1/models/m/versions/4/Metadata", route("m", "status", version=4)),
    ("POST", "/v1/models/MNIST:predict", route("MNIST", "predict")),
    # RE2 folds `s` with U+017F (long s): TF Serving routes this
    ("POST", "/v1/model\u017f/m:predict", route("m", "predict")),
    # percent-decoding of name and label after the match
    ("POST", "/v1/models/%6Dnist:predict", route("mnist", "predict")),
    ("POST", "/v1/models/%6dnist:predict", route("mnist", "predict")),
    ("GET", "/v1/models/a%2Fb", route("a/b", "status")),
    ("GET", "/v1/models/a%2fb/metadata", route("a/b", "metadata")),
    ("POST", "/v1/models/m%3Apredict:predict", route("m:predict", "predict")),
    ("POST", "/v1/models/a+b:predict", route("a+b", "predict")),
    ("POST", "/v1/models/%zz%4:predict", route("%zz%4", "predict")),
    ("POST", "/v1/models/%252F:predict", route("%2F", "predict")),
    ("POST", "/v1/models/m/labels/a%20b:predict", route("m", "predict", label="a b")),
    ("POST", "/v1/models/caf%C3%A9:predict", route("caf\u00e9", "predict")),
    ("POST", "/v1/models/%FF:predict", route("\udcff", "predict")),
    ("POST", "/v1/models/%2E%2E:predict", route("..", "predict")),
    ("POST", "/v1/models/..:predict", route("..", "predict")),
    # versions: leading zeros, int64 bounds
    ("POST", "/v1/models/m/versions/007:predict", route("m", "predict", version=7)),
    ("GET", "/v1/models/m/versions/0", route("m", "status", version=0)),
    (
        "GET",
        f"/v1/models/m/versions/{INT64_MAX}",
        route("m", "status", version=INT64_MAX),
    ),
    ("GET", f"/v1/models/m/versions/000{INT64_MAX}", route("m", "status", version=INT64_MAX)),
    # query strings swallowed into a name by `[^/:]+`
    ("GET", "/v1/models/m?x=1", route("m?x=1", "status")),
    ("GET", "/v1/models/m/labels/l?x=1", route("m", "status", label="l?x=1")),
    ("GET", "/v1/models/m#frag", route("m#frag", "status")),
    # the greedy optional model group: `/v1/models/metadata` is the model named metadata
    ("GET", "/v1/models/metadata", route("metadata", "status")),
    ("GET", "/v1/models/metadata/metadata", route("metadata", "metadata")),
    ("GET", "/v1/models/versions", route("versions", "status")),
    # absolute-form request target
    ("POST", "http://gw.example:8501/v1/models/m:predict", route("m", "predict")),
]


@pytest.mark.parametrize(("method", "target", "expected"), ROUTES)
def test_route(method: str, target: str, expected: Route) -> None:
    assert parse_request_target(method, target) == expected


def malformed(method: str, target: str) -> bytes:
    return f'{{\n    "error": "Malformed request: {method} {target}"\n}}'.encode()


# (method, target) -- TF Serving answers 400 "Malformed request: <METHOD> <target>".
MALFORMED: list[tuple[str, str]] = [
    ("GET", "/v1/foo"),
    ("POST", "/v1/foo"),
    ("GET", "/V1/"),
    ("GET", "/v1/models/debug/model_name"),
    ("POST", "/v1/models"),
    ("GET", "/v1/models/foo:predict"),  # verb on GET
    ("POST", "/v1/models/foo/metadata"),  # metadata on POST
    ("POST", "/v1/models/foo"),  # no verb
    ("POST", "/v1/models/foo:explain"),  # unknown verb
    ("POST", "/v1/models/foo:PREDICT"),  # verb compared case-sensitively
    ("POST", "/v1/models/foo:Classify"),
    ("POST", "/v1/models/foo:claſſify"),  # folds in the regex, still not "classify"
    ("GET", "/v1/models/foo/"),  # trailing slash
    ("POST", "/v1/models/foo/:predict"),
    ("GET", "/v1/models/"),
    ("GET", "/v1/models/foo/metadata/"),
    ("POST", "/v1/models/foo/version/50:predict"),  # singular
    ("GET", "/v1/models/foo/version/50:predict"),
    ("POST", "/v1/models/foo/version/50:regress"),
    ("POST", "/v1/models/foo/label/some_label:regress"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress"),  # both
    ("GET", "/v1/models/foo/versions/50/labels/some_label"),
    ("POST", "/v1/models/foo/versions/HELLO:regress"),  # non-numeric version
    ("POST", "/v1/models/foo/versions/some_label:regress"),
    ("POST", "/v1/models/foo/versions/-1:predict"),
    ("POST", "/v1/models/foo/versions/\u0661:predict"),  # RE2 \d is ASCII only
    ("GET", "/v1/models/foo/versions/"),
    # query strings after a verb, /metadata or a version
    ("POST", "/v1/models/m:predict?x=1"),
    ("GET", "/v1/models/m/metadata?x=1"),
    ("GET", "/v1/models/m/versions/1?x=1"),
    ("GET", "/v1/models?x=1"),
    # dot segments are not resolved
    ("POST", "/v1/models/../models/x:predict"),
    ("POST", "/v1/models/x/../y:predict"),
    ("POST", "/v1/./models/x:predict"),
    ("GET", "/v1/models/x/./metadata"),
    # percent-encoded literals are not decoded before the match
    ("POST", "/v1/%6Dodels/m:predict"),
    ("POST", "/v1/models/m%3Apredict"),
    ("POST", "/v1/models/m/versions%2F1:predict"),
    # RE2 does not fold `i` with U+0131 (dotless i); Python's IGNORECASE would
    ("GET", "/v1/models/m/vers\u0131ons/1"),
    # every method other than GET and POST that libevent accepts
    ("PUT", "/v1/models/m:predict"),
    ("DELETE", "/v1/models/m"),
    ("PATCH", "/v1/models/m:predict"),
    ("HEAD", "/v1/models/m"),
]


@pytest.mark.parametrize(("method", "target"), MALFORMED)
def test_malformed(method: str, target: str) -> None:
    result = parse_request_target(method, target)
    assert result == TfsError(
        400,
        "application/json",
        malformed(method, target),
        "malformed",
        f"Malformed request: {method} {target}",
    )


def test_malformed_message_uses_the_path_of_an_absolute_form_target() -> None:
    result = parse_request_target("POST", "http://gw/v1/models/m")
    assert isinstance(result, TfsError)
    assert result.body == malformed("POST", "/v1/models/m")


@pytest.mark.parametrize(
    "target",
    [
        "/v1/models",
        "/V1/MODELS",
        "/v1/models/versions/1",
        "/v1/models/labels/x",
        "/v1/models/versions/1/metadata",
        "/v1/models/labels/x/metadata",
    ],
)
def test_missing_model_name(target: str) -> None:
    assert parse_request_target("GET", target) == TfsError(
        400,
        "application/json",
        b'{\n    "error": "Missing model name in request."\n}',
        "missing_model",
        "Missing model name in request.",
    )


@pytest.mark.parametrize(
    ("method", "target", "digits"),
    [
        ("POST", "/v1/models/foo/versions/18446744073709551615:regress", "18446744073709551615"),
        ("POST", "/v1/models/foo/versions/9223372036854775808:predict", "9223372036854775808"),
        ("GET", "/v1/models/foo/versions/9223372036854775808", "9223372036854775808"),
        ("GET", "/v1/models/foo/versions/99999999999999999999/metadata", "99999999999999999999"),
        # version parsing happens before the verb check: not "Malformed request"
        ("POST", "/v1/models/foo/versions/99999999999999999999:PREDICT", "99999999999999999999"),
        # and before the missing-name check
        ("GET", "/v1/models/versions/99999999999999999999", "99999999999999999999"),
        # longer than Python's default int() digit limit
        ("GET", "/v1/models/foo/versions/" + "9" * 5000, "9" * 5000),
    ],
)
def test_version_overflow(method: str, target: str, digits: str) -> None:
    result = parse_request_target(method, target)
    message = f"Failed to convert version: {digits} to numeric."
    assert result == TfsError(400, "application/json", error_body(message), "bad_version", message)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/"),
        ("GET", "/v1"),
        ("POST", "/v1"),
        ("GET", "/v2/models/m"),
        ("POST", "/models/m:predict"),
        ("GET", "/monitoring/prometheus/metrics"),
        ("GET", "/healthz"),
        ("GET", "//v1/models/m"),
        ("GET", "/%761/models/m"),  # `%76` is `v`, but dispatch matches the raw target
        ("PUT", "/index"),
        ("HEAD", "/"),
        ("OPTIONS", "/foo"),
        ("OPTIONS", "*"),
        ("GET", "v1/models/m"),
    ],
)
def test_non_api_paths_get_the_libevent_404_page(method: str, target: str) -> None:
    result = parse_request_target(method, target, origin="https://app.example")
    assert isinstance(result, TfsError)
    assert (result.status, result.content_type, result.body) == (404, "text/html", NOT_FOUND_PAGE)
    assert result.reason == "not_found"
    assert result.close_connection


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "get", "Post"])
def test_methods_libevent_refuses_get_501(method: str) -> None:
    result = parse_request_target(method, "/v1/models/m")
    assert isinstance(result, TfsError)
    assert result.status == 501
    assert result.content_type == "text/html"
    assert result.body == (
        b"<HTML><HEAD>\n<TITLE>501 Not Implemented</TITLE>\n</HEAD><BODY>\n"
        b"<H1>Not Implemented</H1>\n</BODY></HTML>\n"
    )


@pytest.mark.parametrize(
    ("origin", "status", "reason"),
    [
        ("http://app.example", 200, "options_allowed"),
        ("https://app.example", 200, "options_allowed"),
        ("null; https://x", 200, "options_allowed"),  # "contains", as TF Serving checks
        (None, 400, "options_refused"),
        ("", 400, "options_refused"),
        ("app.example", 400, "options_refused"),
        ("ftp://app.example", 400, "options_refused"),
    ],
)
def test_options(origin: str | None, status: int, reason: str) -> None:
    for target in ("/v1/models/m:predict", "/v1/anything", "/V1/"):
        result = parse_request_target("OPTIONS", target, origin=origin)
        assert result == TfsError(status, None, b"", reason, result.message)  # type: ignore[union-attr]


# ---------------------------------------------------------------- canonical paths


CANONICAL: list[tuple[str, str, str]] = [
    ("POST", "/v1/models/m:predict", "/v1/models/m:predict"),
    ("POST", "/V1/MODELS/m:predict", "/v1/models/m:predict"),
    ("POST", "/v1/MODELS/%6Dnist:predict", "/v1/models/mnist:predict"),
    ("POST", "/v1/models/%6dnist/VERSIONS/007:classify", "/v1/models/mnist/versions/7:classify"),
    ("POST", "/v1/models/m/Labels/canary:regress", "/v1/models/m/labels/canary:regress"),
    ("GET", "/v1/models/m", "/v1/models/m"),
    ("GET", "/v1/models/m/METADATA", "/v1/models/m"),
    ("GET", "/v1/models/m/versions/2/metadata", "/v1/models/m/versions/2/metadata"),
    ("GET", "/v1/models/m/labels/l%3Fx/metadata", "/v1/models/m/labels/l%3Fx/metadata"),
    ("GET", "/v1/models/m?x=1", "/v1/models/m%3Fx%3D1"),
    ("GET", "/v1/models/a%2Fb", "/v1/models/a%2Fb"),
    ("GET", "/v1/models/a%2fb", "/v1/models/a%2Fb"),
    ("POST", "/v1/models/m%3Apredict:predict", "/v1/models/m%3Apredict:predict"),
    ("POST", "/v1/models/%252F:predict", "/v1/models/%252F:predict"),
    ("POST", "/v1/models/a+b:predict", "/v1/models/a%2Bb:predict"),
    ("POST", "/v1/models/caf%C3%A9:predict", "/v1/models/caf%C3%A9:predict"),
    ("POST", "/v1/models/caf\u00e9:predict", "/v1/models/caf%C3%A9:predict"),
    ("POST", "/v1/models/%FF:predict", "/v1/models/%FF:predict"),
    ("POST", "/v1/models/resnet.v2~x_y-z:predict", "/v1/models/resnet.v2~x_y-z:predict"),
    # dot-only names are fully encoded: never a dot segment on the way to the backend
    ("GET", "/v1/models/..", "/v1/models/%2E%2E"),
    ("GET", "/v1/models/%2e", "/v1/models/%2E"),
    ("POST", "/v1/models/%2E%2E:predict", "/v1/models/%2E%2E:predict"),
    ("GET", "/v1/models/m/labels/..", "/v1/models/m/labels/%2E%2E"),
    ("GET", "/v1/models/...", "/v1/models/%2E%2E%2E"),
]


@pytest.mark.parametrize(("method", "target", "canonical"), CANONICAL)
def test_canonical_backend_path(method: str, target: str, canonical: str) -> None:
    parsed = parse_request_target(method, target)
    assert isinstance(parsed, Route)
    assert build_backend_path(parsed) == canonical
    # TF Serving, given the canonical path, executes the very request the policy saw
    assert parse_request_target(parsed.http_method, canonical) == parsed


def test_every_spelling_of_one_request_has_one_canonical_path() -> None:
    spellings = [
        "/v1/models/mnist/versions/1:predict",
        "/V1/MODELS/mnist/VERSIONS/1:predict",
        "/v1/models/%6Dnist/versions/01:predict",
        "/v1/model\u017f/%6d%6E%69%73%74/versions/0001:predict",
        "http://gw/v1/Models/mnis%74/Versions/1:predict",
    ]
    results = {build_backend_path(r) for r in map(_route_for_post, spellings)}
    assert results == {"/v1/models/mnist/versions/1:predict"}


def _route_for_post(target: str) -> Route:
    result = parse_request_target("POST", target)
    assert isinstance(result, Route), target
    return result


def test_route_http_method() -> None:
    assert [route("m", v).http_method for v in ("predict", "classify", "regress")] == ["POST"] * 3
    assert [route("m", v).http_method for v in ("status", "metadata")] == ["GET"] * 2


def test_encode_path_segment_refuses_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_path_segment("")


_TARGET_ALPHABET = st.sampled_from(
    list("/:%?#.+ -_~aAmMsSvV019") + ["%2F", "%2E", "%3A", "%6D", "%FF", "models", "versions",
    "labels", "metadata", ":predict", "/v1/models/", "\u017f", "\u00e9"]
)  # fmt: skip


@given(st.sampled_from(["GET", "POST"]), st.lists(_TARGET_ALPHABET, max_size=24).map("".join))
def test_any_target_parses_and_routes_round_trip(method: str, tail: str) -> None:
    """No target crashes the parser; every Route's canonical path means exactly that Route."""
    for target in (tail, "/v1/models/" + tail, "/v1/" + tail):
        parsed = parse_request_target(method, target)
        if isinstance(parsed, Route):
            canonical = build_backend_path(parsed)
            assert "?" not in canonical and "#" not in canonical
            assert "/../" not in canonical + "/" and "/./" not in canonical + "/"
            assert parse_request_target(parsed.http_method, canonical) == parsed
        else:
            assert parsed.status in (400, 404)


@given(st.text(min_size=1), st.one_of(st.none(), st.integers(0, INT64_MAX)))
def test_any_model_name_round_trips(model: str, version: int | None) -> None:
    for verb in ("predict", "status", "metadata"):
        original = route(model, verb, version=version)
        assert parse_request_target(original.http_method, build_backend_path(original)) == original


# ---------------------------------------------------------------- error bodies


def test_error_body_layout_is_tf_servings() -> None:
    assert error_body("Servable not found for request: Latest(m)") == (
        b'{\n    "error": "Servable not found for request: Latest(m)"\n}'
    )


def test_error_body_extra_members_follow_error() -> None:
    body = error_body("denied", decision_id="0b9c", status=451, dry_run=False, tenant=None)
    assert body == (
        b'{\n    "error": "denied",\n    "decision_id": "0b9c",\n    "status": 451,\n'
        b'    "dry_run": false,\n    "tenant": null\n}'
    )
    assert list(json.loads(body)) == ["error", "decision_id", "status", "dry_run", "tenant"]


@pytest.mark.parametrize(
    ("message", "escaped"),
    [
        ('say "hi"', b'say \\"hi\\"'),
        ("back\\slash", b"back\\\\slash"),
        ("a\nb\tc\rd\be\ff", b"a\\nb\\tc\\rd\\be\\ff"),
        ("\x00\x1f\x0b", b"\\u0000\\u001F\\u000B"),  # rapidjson writes upper-case hex
        ("/path/é/\u2028/\x7f", "/path/é/\u2028/\x7f".encode()),  # no other escapes
        ("raw \udcff byte", b"raw \xff byte"),  # bytes from the request line come back as sent
    ],
)
def test_error_body_escapes_like_rapidjson(message: str, escaped: bytes) -> None:
    assert error_body(message) == b'{\n    "error": "' + escaped + b'"\n}'


def test_error_body_is_json_a_client_reads() -> None:
    message = 'Malformed request: POST /v1/models/"x"\\:predict\n'
    assert json.loads(error_body(message, decision_id="d1")) == {
        "error": message,
        "decision_id": "d1",
    }


def test_tfs_error_for_gateway_made_errors() -> None:
    err = tfs_error(403, "licence does not cover this purpose", reason="licence", decision_id="d")
    assert err.status == 403
    assert err.content_type == "application/json"
    assert json.loads(err.body) == {
        "error": "licence does not cover this purpose",
        "decision_id": "d",
    }
    assert err.reason == "licence"
    assert not err.close_connection


def test_libevent_error_page() -> None:
    assert libevent_error_page(404) == NOT_FOUND_PAGE


def test_pure_modules_do_not_import_aiohttp() -> None:
    code = "import sys, gateway.tfserving, gateway.request.regions; print('aiohttp' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
