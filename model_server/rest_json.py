"""TF Serving's REST JSON request bodies, byte for byte: predict and classify/regress.

TF Serving parses request bodies with rapidjson 1.1.0 (iterative, NaN/Inf accepted, bytes
after the root value ignored, first duplicate key wins, no UTF-8 validation) and writes
responses with rapidjson's PrettyWriter and its own float formatting. Python's `json`
differs on every one of those points, so a predict body takes one of two paths:

* the fast path (`fastpath.py`): orjson or a byte-level scan, plus cheap checks that prove
  the decoded view is the one rapidjson would have; it covers well-formed image requests;
* the exact path: the rapidjson-compatible parser of the protocol core
  (`gateway.tfserving.jsonparse`) and a port of `json_tensor.cc`'s tensor filling
  (`tensors.py`), used for everything else, which reproduces TF Serving's error messages.

Responses are written by `responses.py`; error bodies and the checks made before the model
lookup come from the protocol core (`errors`, `bodychecks`). This module re-exports the
names `rest.py` uses.

The module is pure: no I/O, no aiohttp, no TensorFlow (numpy builds the tensors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.tfserving.bodychecks import (
    RequestBodyError,
    check_classify_regress_document,
    signature_name,
)
from gateway.tfserving.errors import error_body
from gateway.tfserving.jsonparse import JsonObject, JsonParseError
from gateway.tfserving.jsonparse import find_member as _find
from gateway.tfserving.jsonparse import is_object as _is_object
from gateway.tfserving.jsonparse import parse_exact as _parse_exact
from gateway.tfserving.jsonwrite import format_float32, format_float64, json_value_to_string
from model_server.fastpath import (
    FastDocument,
    NumericTensor,
    count_object_keys,
    fast_tensors,
    numeric_inputs,
    prepare_fast,
    scan_numeric_body,
)
from model_server.responses import predict_response_body
from model_server.status import invalid_argument
from model_server.tensors import (
    PredictInputs,
    RequestFormat,
    TensorSpec,
    columns_to_tensors,
    format_error,
    rows_to_tensors,
)

__all__ = [
    "JsonObject",
    "RequestFormat",
    "TensorSpec",
    "PredictInputs",
    "decode_body",
    "parse_exact",
    "json_value_to_string",
    "format_float32",
    "format_float64",
    "predict_inputs",
    "predict_response_body",
    "error_body",
    "check_classify_regress_body",
]


def parse_exact(body: bytes) -> Any:
    """Parse `body` exactly as TF Serving does; raise its 400 error on failure.

    See `gateway.tfserving.jsonparse.parse_exact` for the document's shape.
    """
    try:
        return _parse_exact(body)
    except JsonParseError as error:
        raise invalid_argument(error.message) from None


def decode_body(body: bytes) -> tuple[Any, bool]:
    """Decode a request body; returns (document, exact).

    `exact` is False when orjson decoded it: such a document may hide duplicate keys, so
    callers that rely on key semantics must confirm it (see `fastpath.prepare_fast`) or re-parse
    with `parse_exact`.
    """
    try:
        return orjson.loads(body), False
    except orjson.JSONDecodeError:
        return parse_exact(body), True


@dataclass
class ParsedPredict:
    """A predict body after the checks that come before the servable lookup."""

    body: bytes
    signature_name: str
    doc: Any = None
    fast: FastDocument | None = None
    numeric: NumericTensor | None = None

    def document(self) -> Any:
        """The DOM, parsed exactly on first use (the numeric fast path skips it)."""
        if self.doc is None:
            self.doc = parse_exact(self.body)
        return self.doc


def parse_predict_body(body: bytes) -> ParsedPredict:
    """Steps 1-4 of TF Serving's predict: parse, object check, `signature_name` check."""
    numeric = scan_numeric_body(body)
    if numeric is not None:
        return ParsedPredict(body, numeric.signature_name or "", numeric=numeric)
    doc, exact = decode_body(body)
    fast = None if exact else prepare_fast(doc, body)
    if not exact and fast is None and _is_object(doc):
        # orjson may have merged duplicate keys: re-read the body the way rapidjson does.
        doc = parse_exact(body)
    return ParsedPredict(body, _signature_name(doc), doc=doc, fast=fast)


def predict_inputs(parsed: ParsedPredict, specs: Mapping[str, TensorSpec]) -> PredictInputs:
    """Steps 7-10: pick row or columnar format and build the input tensors."""
    if parsed.numeric is not None:
        result = numeric_inputs(parsed.numeric, specs)
        if result is not None:
            return result
    if parsed.fast is not None:
        result = fast_tensors(parsed.fast, specs)
        if result is not None:
            return result
    doc = parsed.document()
    has_instances, instances = _find(doc, "instances")
    has_inputs, inputs = _find(doc, "inputs")
    if has_instances:
        if has_inputs:
            raise format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                "keys to exist ",
            )
        if not isinstance(instances, list):
            raise format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise format_error(doc, "No values in 'instances' array")
        return PredictInputs(rows_to_tensors(instances, specs), RequestFormat.ROW)
    if has_inputs:
        return PredictInputs(columns_to_tensors(inputs, specs), RequestFormat.COLUMNAR)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _signature_name(doc: Any) -> str:
    """The request object's `signature_name` ("" when absent), after TF Serving's checks that
    the body is an object and the name a string."""
    try:
        return signature_name(doc)
    except RequestBodyError as error:
        raise invalid_argument(error.message) from None


def check_classify_regress_body(body: bytes) -> tuple[str, int]:
    """FillClassifyRegressRequestFromJson's checks; returns (signature_name, examples)."""
    doc, exact = decode_body(body)
    if not exact and _is_object(doc) and body.count(b":") != count_object_keys(doc):
        doc = parse_exact(body)
    try:
        return check_classify_regress_document(doc)
    except RequestBodyError as error:
        raise invalid_argument(error.message) from None
