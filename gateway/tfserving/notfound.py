"""What TF Serving answers for a request to a model it does not serve, in its check order.

TF Serving checks the body before the servable (a predict body's object shape and
`signature_name`; a classify or regress body whole), then resolves a label before a version
(an unknown label is 400 `Unrecognized servable version label`), and only then reports the
servable missing: `Specific(m, n)` for a version, `Latest(m)` otherwise. A status request
ignores labels and has its own texts (TF Serving's `ServerCore` and
`http_rest_api_handler.cc`: https://github.com/tensorflow/serving); the embedded model
server's registry answers the same way (docs/model-server.md).

Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

from typing import Any

from gateway.tfserving.bodychecks import (
    RequestBodyError,
    check_classify_regress_document,
    signature_name,
)
from gateway.tfserving.errors import TfsError, tfs_error
from gateway.tfserving.urls import Route

__all__ = ["unknown_model_error"]


def unknown_model_error(route: Route, document: Any = None) -> TfsError:
    """TF Serving's answer to `route` when no version of its model is served.

    `document` is the parsed body of a POST (predict, classify, regress); it is checked first.
    """
    try:
        if route.verb == "predict":
            signature_name(document)
        elif route.verb in ("classify", "regress"):
            check_classify_regress_document(document)
    except RequestBodyError as error:
        return tfs_error(400, error.message, reason="invalid_body")
    model = route.model
    if route.verb == "status":
        if route.version is not None:
            message = f"Could not find version {route.version} of model {model}"
        else:
            message = f"Could not find any versions of model {model}"
        return tfs_error(404, message, reason="unknown_model")
    if route.label is not None:
        return tfs_error(
            400, f"Unrecognized servable version label: {route.label}", reason="unknown_label"
        )
    if route.version is not None:
        message = f"Servable not found for request: Specific({model}, {route.version})"
    else:
        message = f"Servable not found for request: Latest({model})"
    return tfs_error(404, message, reason="unknown_model")
