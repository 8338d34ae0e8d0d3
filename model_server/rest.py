"""The REST API of TF Serving on aiohttp's low-level server.

The low-level server is used (not `web.Application`) because TF Serving's routing is not
a router's: the raw path *with* its query string is matched case-insensitively by two
regular expressions, anything outside `/v1/` gets libevent's HTML 404, OPTIONS is answered
before any routing, Content-Type is ignored and gzip bodies are inflated by hand (aiohttp's
own decompression is turned off so that a broken gzip body reads as empty, as in TF
Serving).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.tfserving import LIBEVENT_METHODS, Route, TfsError, parse_request_target
from gateway.tfserving.errors import error_body, libevent_error_page
from gateway.tfserving.inflate import inflate_like_tf_serving
from model_server import rest_json
from model_server.core import ServingCore
from model_server.monitoring import RequestCounts, prometheus_page
from model_server.proto_json import message_to_json, metadata_to_json
from model_server.status import Code, ServingError

__all__ = ["RestApi", "html_error_page", "start_rest_server"]

log = logging.getLogger("model_server.rest")

_JSON = "application/json"
_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}


def html_error_page(status: int) -> web.Response:
    """libevent 2.1's `evhttp_send_error` page."""
    return web.Response(
        status=status,
        body=libevent_error_page(status),
        headers={"Content-Type": "text/html", "Connection": "close"},
    )


class RestApi:
    """Request handling for TF Serving's `/v1/` REST API."""

    def __init__(
        self,
        core: ServingCore,
        *,
        enable_cors: bool = False,
        stats_path: str | None = None,
        prometheus_path: str | None = None,
        request_counts: RequestCounts | None = None,
    ) -> None:
        self.core = core
        self.enable_cors = enable_cors
        self.stats_path = stats_path
        #: Where the Prometheus page is served (None: monitoring is off).
        self.prometheus_path = prometheus_path
        #: `request_count` per (model, status), shared with gRPC; None: not counted.
        self.request_counts = request_counts
        if prometheus_path is not None and request_counts is None:
            self.request_counts = {}

    def handler(self) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        """The low-level aiohttp handler."""
        return self.handle

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route one request the way TF Serving's HTTP server does."""
        method = request.method
        if method not in LIBEVENT_METHODS:
            return html_error_page(501)
        path = request.raw_path
        prometheus_path = self.prometheus_path
        if prometheus_path is not None and path.startswith(prometheus_path):
            response = self.prometheus(path, prometheus_path)
            if response is not None:
                return response
        if self.stats_path is not None and path == self.stats_path and method == "GET":
            return web.Response(
                body=orjson.dumps(self.stats_snapshot()), content_type="application/json"
            )
        parsed = parse_request_target(method, path, origin=request.headers.get("Origin", ""))
        if isinstance(parsed, TfsError) and parsed.close_connection:
            return html_error_page(parsed.status)
        headers = dict(_CORS_HEADERS) if self.enable_cors else {}
        if isinstance(parsed, TfsError) and parsed.content_type is None:
            # OPTIONS, answered before routing. An empty body: aiohttp then adds no
            # Content-Type, and TF Serving sets none.
            return web.Response(status=parsed.status, headers=headers)
        body = await request.content.read()
        if "gzip" in request.headers.get("Content-Encoding", ""):
            body = inflate_like_tf_serving(body)
        if isinstance(parsed, TfsError):
            # The URL grammar's own refusals (malformed, bad version, missing name) are 400s.
            payload, status, code = parsed.body, parsed.status, Code.INVALID_ARGUMENT.name
        else:
            payload, status, code = await self.answer(method, path, parsed, body)
        counts = self.request_counts
        if counts is not None:
            # Every /v1 request, with the model name of the URL ("" when the path has none).
            key = (parsed.model, code)
            counts[key] = counts.get(key, 0) + 1
        headers["Content-Type"] = _JSON
        return web.Response(status=status, body=payload, headers=headers)

    async def answer(
        self, method: str, path: str, route: Route, body: bytes
    ) -> tuple[bytes, int, str]:
        """(body, HTTP status, status code name) for a request the URL grammar accepted."""
        try:
            return await self.dispatch(route, body), 200, Code.OK.name
        except ServingError as error:
            return error_body(error.message), error.code.http_status, error.code.name
        except Exception as error:  # a bug must still answer in TF Serving's error format
            log.exception("request failed: %s %s", method, path)
            return (
                error_body(f"Internal error: {error}"),
                Code.INTERNAL.http_status,
                Code.INTERNAL.name,
            )

    def prometheus(self, path: str, prometheus_path: str) -> web.Response | None:
        """The metrics route (http_server.cc ProcessPrometheusRequest), or None if not it.

        libevent finds the handler by the path without query and fragment, then the
        handler compares the whole path and query with the configured path; any method
        is answered.
        """
        rest = path[len(prometheus_path) :]
        if not rest:
            body = prometheus_page(self.request_counts or {})
            return web.Response(status=200, body=body, headers={"Content-Type": "text/plain"})
        if rest[0] not in "?#":
            return None
        message = f"Unexpected path: {path}. Should be {prometheus_path}"
        return web.Response(
            status=Code.INVALID_ARGUMENT.http_status,
            body=message.encode("utf-8", "surrogateescape"),
            headers={"Content-Type": "text/plain"},
        )

    def stats_snapshot(self) -> dict[str, Any]:
        """Counters for tests and benchmarks (not part of TF Serving's API)."""
        snapshot = self.core.stats.as_json()
        snapshot["available"] = {k: v for k, v in self.core.registry.available().items()}
        return snapshot

    async def dispatch(self, route: Route, body: bytes) -> bytes:
        """HttpRestApiHandler::ProcessRequest for a request the URL grammar accepted."""
        name, version, label = route.model, route.version, route.label
        if route.verb == "predict":
            return await self.predict(name, version, label, body)
        if route.verb in ("classify", "regress"):
            return self.classify_regress(name, version, label, body, route.verb)
        if route.verb == "metadata":
            return self.metadata(name, version, label)
        return self.model_status(name, version)

    async def predict(
        self, name: str, version: int | None, label: str | None, body: bytes
    ) -> bytes:
        """POST .../{model}[...]:predict."""
        parsed = rest_json.parse_predict_body(body)
        servable = self.core.registry.resolve(name, version, label)
        signature = self.core.rest_signature(servable, parsed.signature_name)
        inputs = rest_json.predict_inputs(parsed, signature.inputs)
        outputs = await self.core.predict(servable, signature, inputs.tensors)
        return rest_json.predict_response_body(outputs, inputs.request_format)

    def classify_regress(
        self, name: str, version: int | None, label: str | None, body: bytes, verb: str
    ) -> bytes:
        """POST ...:classify / ...:regress (the body is checked before the model lookup)."""
        signature_name, _ = rest_json.check_classify_regress_body(body)
        servable = self.core.registry.resolve(name, version, label)
        self.core.classify_regress_error(servable, signature_name, verb)

    def model_status(self, name: str, version: int | None) -> bytes:
        """GET /v1/models/{model}[/versions/{n}] (a label selects all versions)."""
        from tensorflow_serving.apis import get_model_status_pb2

        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state, error in self.core.registry.status(name, version):
            entry = response.model_version_status.add()
            entry.version = number
            entry.state = state.value
            if error is not None:
                entry.status.error_code = _error_code_number(error.code)
                entry.status.error_message = error.message
            else:
                entry.status.SetInParent()
        return message_to_json(response).encode("utf-8")

    def metadata(self, name: str, version: int | None, label: str | None) -> bytes:
        """GET .../metadata: the signature_def metadata field only."""
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        servable = self.core.registry.resolve(name, version, label)
        spec = model_pb2.ModelSpec(name=servable.name)
        spec.version.value = servable.version
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.meta_graph.signature_def.items():
            signatures.signature_def[key].CopyFrom(signature_def)
        return metadata_to_json(spec, signatures).encode("utf-8")


def _error_code_number(code: Code) -> int:
    from tensorflow.core.protobuf import error_codes_pb2

    return int(error_codes_pb2.Code.Value(code.name))


async def start_rest_server(api: RestApi, host: str, port: int) -> tuple[Any, int]:
    """Listen on host:port (0 picks a free port); returns (runner, bound port)."""
    server = web.Server(api.handle, auto_decompress=False)
    runner = web.ServerRunner(server, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
