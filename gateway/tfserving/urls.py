"""The TensorFlow Serving REST URL grammar, exactly as TF Serving 2.20 applies it.

`parse_request_target(method, target)` reads the request line the way TF Serving does and
returns either a `Route` (a request TF Serving would execute) or a `TfsError` holding the exact
status, content type and body TF Serving would answer, so the gateway can answer malformed
requests itself without forwarding them. The grammar is TF Serving's REST API
(https://www.tensorflow.org/tfx/serving/api_rest) as `http_rest_api_handler.cc` and libevent
implement it (https://github.com/tensorflow/serving).

Rules, in the order TF Serving applies them:

1. Methods libevent does not accept (anything but GET, POST, HEAD, PUT, DELETE, OPTIONS,
   PATCH; method names are case-sensitive) get libevent's HTML 501 page.
2. Only targets fully matching `(?i)/v1/.*` reach the REST handler; anything else gets
   libevent's HTML 404 page (`/v1` without the slash too).
3. OPTIONS never reaches the handler: 200 when the Origin header contains `http://` or
   `https://`, else 400; empty body.
4. GET and POST targets are matched case-insensitively against TF Serving's two regexes, on
   the raw target: still percent-encoded, query string included. Model name and label are
   percent-decoded after the match; the version is parsed into an int64 ("Failed to convert
   version" when it overflows); then the verb (`:predict`, ...) and the subresource
   (`/metadata`) are compared case-sensitively. `:PREDICT` is malformed, `/METADATA` silently
   becomes a status request. `GET /v1/models` without a name is "Missing model name".
5. Everything else, including HEAD, PUT, DELETE and PATCH, is 400 "Malformed request:
   <METHOD> <target>" (never 404 or 405).

Normalisation: the gateway never forwards the client's target. `build_backend_path(route)`
builds the canonical path from the parsed `Route`, so policy rules and the backend see the
same model, version, label and endpoint:

* Case: the literal parts are written in lower case (`/V1/MODELS/m:predict` is forwarded as
  `/v1/models/m:predict`). Model names and labels keep their case (TF Serving matches them
  case-sensitively).
* Percent-encoding: model name and label are decoded once, as TF Serving does
  (`%6Dnist` is model `mnist`, `%2F` is a `/` inside the name, `+` stays `+`), and re-encoded
  canonically: every byte outside `A-Z a-z 0-9 - _ . ~` becomes `%XX` (upper-case hex), and a
  name made only of dots is encoded entirely (`..` -> `%2E%2E`) so that no client or proxy
  between the gateway and the backend can read it as a dot segment. The backend decodes the
  canonical form back to exactly the name the policy saw.
* Dot segments are not resolved, because TF Serving does not resolve them:
  `/v1/models/../models/x:predict` matches neither regex and is 400 "Malformed request", never
  a request for model `x`. `/v1/models/%2E%2E:predict` is a request for a model literally
  named `..`.
* Query strings: TF Serving matches them as part of the target. A query after a verb,
  `/metadata` or a version makes the request malformed; in `GET /v1/models/m?x=1` it becomes
  part of the model name (`m?x=1`, which the backend answers with 404). A query string is
  never forwarded on its own.
* A trailing slash, `/version/` or `/label/` (singular), `/versions/N/labels/L`, and a
  non-numeric version are malformed; a version is forwarded in decimal without leading zeros.

Pure: no I/O, no aiohttp. Error answers are built by `gateway.tfserving.errors`, in TF
Serving's own layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final, Literal
from urllib.parse import unquote_to_bytes

from gateway.tfserving.errors import TfsError, libevent_error, tfs_error

__all__ = [
    "INT64_MAX",
    "LIBEVENT_METHODS",
    "Route",
    "Verb",
    "build_backend_path",
    "encode_path_segment",
    "parse_request_target",
]

Verb = Literal["predict", "classify", "regress", "status", "metadata"]

INT64_MAX: Final = 2**63 - 1

#: Methods libevent's evhttp accepts for TF Serving; others get its 501 page before routing.
LIBEVENT_METHODS: Final = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})

_POST_VERBS: Final[dict[str | None, Verb]] = {
    "predict": "predict",
    "classify": "classify",
    "regress": "regress",
}


def _ci(literal: str) -> str:
    """A regex for `literal` matching case-insensitively the way RE2's `(?i)` does.

    RE2 folds case with Unicode simple case folding, so `s` also matches U+017F (long s) and `k`
    matches U+212A (Kelvin sign), while `i` does not match the Turkish dotted or dotless i.
    Python's `re.IGNORECASE` differs on the latter, hence explicit classes.
    """
    extra = {"s": "\u017f", "k": "\u212a"}
    out = []
    for char in literal:
        if char.isascii() and char.isalpha():
            lower = char.lower()
            out.append(f"[{lower}{lower.upper()}{extra.get(lower, '')}]")
        else:
            out.append(re.escape(char))
    return "".join(out)


# TF Serving's regexes (http_rest_api_util.cc), transcribed: RE2 `\d` is ASCII only.
_SEGMENT = r"[^/:]+"
_VERSION_OR_LABEL = rf"(?:(?:/{_ci('versions')}/([0-9]+))|(?:/{_ci('labels')}/({_SEGMENT})))?"
_PREDICTION_RE: Final = re.compile(
    rf"/{_ci('v1')}/{_ci('models')}/({_SEGMENT}){_VERSION_OR_LABEL}"
    rf":({_ci('classify')}|{_ci('regress')}|{_ci('predict')})"
)
_MODEL_STATUS_RE: Final = re.compile(
    rf"/{_ci('v1')}/{_ci('models')}(?:/({_SEGMENT}))?{_VERSION_OR_LABEL}"
    rf"(?:/({_ci('metadata')}))?"
)
_API_PATH_RE: Final = re.compile(rf"/{_ci('v1')}/.*")
_ABSOLUTE_FORM_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")

_PLAIN_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._~-]+")
# Bytes kept as they are in a canonical path segment (RFC 3986 unreserved).
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
)


@dataclass(frozen=True, slots=True)
class Route:
    """A TF Serving REST request that TF Serving would execute.

    `model` and `label` are percent-decoded (bytes that are not UTF-8 are kept as surrogate
    escapes, so `build_backend_path` restores them exactly). `version` and `label` are never
    both set. `verb` is the endpoint: predict, classify and regress are POST; status and
    metadata are GET.
    """

    model: str
    version: int | None
    label: str | None
    verb: Verb

    @property
    def http_method(self) -> str:
        """The HTTP method TF Serving expects for this endpoint."""
        return "POST" if self.verb in _POST_VERBS else "GET"


def _version(raw_version: str, model: str) -> int | TfsError:
    """The version segment as TF Serving converts it (an int64), or its error."""
    digits = raw_version.lstrip("0") or "0"
    # Compare lengths first: int() refuses strings past sys.get_int_max_str_digits().
    # TF Serving's handler returns this status before it writes its JSON error body
    # (ParseModelInfo runs ahead of MakeJsonFromStatus); the body is kept here so that
    # clients see TF Serving's message for the error.
    if len(digits) > len(str(INT64_MAX)) or int(digits) > INT64_MAX:
        error = tfs_error(
            400, f"Failed to convert version: {raw_version} to numeric.", reason="bad_version"
        )
        return replace(error, model=model)
    return int(digits)


def parse_request_target(
    method: str, target: str, *, origin: str | None = None
) -> Route | TfsError:
    """Parse one request line as TF Serving 2.20 would.

    `target` is the raw request target exactly as received (aiohttp: `request.raw_path`),
    still percent-encoded, with its query string. `origin` is the Origin header, consulted for
    OPTIONS only. An absolute-form target (`http://host/v1/...`) is reduced to its path first,
    as libevent does.
    """
    if method not in LIBEVENT_METHODS:
        return libevent_error(501, "method_not_implemented", f"method {method} not implemented")
    path = _origin_form(target)
    if not _API_PATH_RE.fullmatch(path):
        return libevent_error(404, "not_found", f"no REST route for {path}")
    if method == "OPTIONS":
        if origin is not None and ("http://" in origin or "https://" in origin):
            return TfsError(200, None, b"", "options_allowed", "CORS preflight accepted")
        return TfsError(400, None, b"", "options_refused", "OPTIONS needs an http(s) Origin")

    if method == "POST":
        match = _PREDICTION_RE.fullmatch(path)
    elif method == "GET":
        match = _MODEL_STATUS_RE.fullmatch(path)
    else:
        match = None
    if match is None:
        return _malformed(method, path)
    raw_model, raw_version, raw_label, last = match.groups()

    # Same order as TF Serving's ParseModelInfo: decode the name, parse the version, decode
    # the label; only then compare the verb or subresource.
    model = _percent_decode(raw_model) if raw_model else ""
    version = _version(raw_version, model) if raw_version else None
    if isinstance(version, TfsError):
        return version
    label = _percent_decode(raw_label) if raw_label else None

    if method == "POST":
        # The regex is case-insensitive, the dispatch on the verb is not: `:PREDICT` is malformed.
        post_verb = _POST_VERBS.get(last)
        if post_verb is None:
            return _malformed(method, path)
        return Route(model, version, label, post_verb)
    if not model:
        return tfs_error(400, "Missing model name in request.", reason="missing_model")
    # `/METADATA` matched the case-insensitive regex but is not "metadata": a status request.
    return Route(model, version, label, "metadata" if last == "metadata" else "status")


def build_backend_path(route: Route) -> str:
    """The canonical path to forward for `route` (see the module docstring)."""
    parts = ["/v1/models/", encode_path_segment(route.model)]
    if route.version is not None:
        parts.append(f"/versions/{route.version}")
    elif route.label is not None:
        parts.append("/labels/")
        parts.append(encode_path_segment(route.label))
    if route.verb == "metadata":
        parts.append("/metadata")
    elif route.verb != "status":
        parts.append(":")
        parts.append(route.verb)
    return "".join(parts)


def encode_path_segment(value: str) -> str:
    """Percent-encode a model name or label for a canonical path (UTF-8, upper-case hex)."""
    if not value:
        raise ValueError("a model name or label cannot be empty")
    if _PLAIN_SEGMENT_RE.fullmatch(value) and value.strip("."):
        return value  # the common case: nothing to encode
    raw = value.encode("utf-8", "surrogateescape")
    if raw.strip(b".") == b"":
        # SECURITY: `.` and `..` would be dot segments to any URL normaliser on the way.
        return "".join(f"%{byte:02X}" for byte in raw)
    return "".join(chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in raw)


def _malformed(method: str, path: str) -> TfsError:
    return tfs_error(400, f"Malformed request: {method} {path}", reason="malformed")


def _origin_form(target: str) -> str:
    """Drop the scheme and authority of an absolute-form target; libevent routes on the path."""
    if target.startswith("/"):
        return target
    match = _ABSOLUTE_FORM_RE.match(target)
    if match is None:
        return target
    rest = target[match.end() :]
    return rest if rest.startswith("/") else "/" + rest


def _percent_decode(value: str) -> str:
    """curl_easy_unescape: `%XX` with two hex digits becomes a byte; anything else stays."""
    if "%" not in value:
        return value
    raw = unquote_to_bytes(value.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")
