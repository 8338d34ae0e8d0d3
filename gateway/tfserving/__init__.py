"""The TensorFlow Serving protocol core: what TF Serving says and how, with no I/O.

One sans-IO package that both the gateway and the embedded model server import, so that the
two answer byte for byte alike and a gateway-only install answers like a development one. It
imports no aiohttp, no numpy and no TensorFlow.

* `urls`: the REST URL grammar (`parse_request_target`, `build_backend_path`).
* `errors`: TF Serving's JSON error body and libevent's HTML pages (`TfsError`).
* `jsonparse`: rapidjson as TF Serving runs it, with its exact error texts (`parse_exact`).
* `jsonwrite`: rapidjson's writers and TF Serving's float formats.
* `inflate`: bounded inflation of compressed bodies, the gateway's way and TF Serving's.
* `bodychecks`: TF Serving's checks of a body that precede the model lookup.
* `notfound`: TF Serving's answer for a model it does not serve, in its check order.
* `protos`: TF Serving's and TensorFlow's protobuf messages in their own descriptor pool
  (imported on demand; the REST path never loads it).

The names gateway code imported from the former single module are re-exported here.
"""

from __future__ import annotations

from gateway.tfserving.errors import (
    ERROR_CONTENT_TYPE,
    HTML_CONTENT_TYPE,
    TfsError,
    error_body,
    libevent_error_page,
    tfs_error,
)
from gateway.tfserving.urls import (
    INT64_MAX,
    LIBEVENT_METHODS,
    Route,
    Verb,
    build_backend_path,
    encode_path_segment,
    parse_request_target,
)

__all__ = [
    "ERROR_CONTENT_TYPE",
    "HTML_CONTENT_TYPE",
    "INT64_MAX",
    "LIBEVENT_METHODS",
    "Route",
    "TfsError",
    "Verb",
    "build_backend_path",
    "encode_path_segment",
    "error_body",
    "libevent_error_page",
    "parse_request_target",
    "tfs_error",
]
