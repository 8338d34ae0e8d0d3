"""TF Serving's checks of a REST request body that come before it looks the model up.

TF Serving reads a predict body's `signature_name` (after checking the body is an object),
and a classify or regress body whole, before asking for the servable (handler.cc, then
json_tensor.cc); so a malformed body sent to an unknown model is a 400 about the body, not a
404. These checks, with TF Serving's messages, serve both the embedded model server and the
gateway (which answers for models no backend serves). Documents are what `jsonparse` or
orjson produced: objects as `JsonObject` or dict.

Pure: no I/O, no aiohttp, no numpy.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Final

from gateway.tfserving.jsonparse import find_member, is_object, object_members
from gateway.tfserving.jsonwrite import json_value_to_string

__all__ = [
    "FLT_MAX",
    "RequestBodyError",
    "check_classify_regress_document",
    "decode_b64",
    "format_message",
    "is_b64_object",
    "json_type_string",
    "lossy_message",
    "signature_name",
]

#: The largest finite float32.
FLT_MAX: Final = 3.4028234663852886e38

_URLSAFE_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")


class RequestBodyError(ValueError):
    """A body TF Serving refuses with INVALID_ARGUMENT (400); `message` is its text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def format_message(doc: Any, message: str) -> str:
    """`JSON Value: <doc> <message>`, the doc cut as TF Serving cuts it."""
    return f"JSON Value: {json_value_to_string(doc)} {message}"


def lossy_message(value: Any, target: str) -> str:
    """TF Serving's message for a number that `target` (float, double) cannot hold."""
    return (
        f"Cannot convert JSON value: {json_value_to_string(value)} to {target}"
        " without loss of precision."
    )


def json_type_string(value: Any) -> str:
    """rapidjson's type name of a parsed value, as TF Serving's messages print it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if is_object(value):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def is_b64_object(value: Any) -> bool:
    """Whether `value` is `{"b64": "<string>"}` (TF Serving's binary value)."""
    if not is_object(value) or len(value) != 1:
        return False
    found, inner = find_member(value, "b64")
    return found and isinstance(inner, str)


def decode_b64(value: Any) -> bytes:
    """The bytes of a `{"b64": ...}` value, as TensorFlow's decoder reads them."""
    if not is_b64_object(value):
        raise RequestBodyError(
            f"JSON Value: {json_value_to_string(value)} not formatted correctly for base64 data"
        )
    _, text = find_member(value, "b64")
    # TensorFlow's decoder reads the standard and the URL-safe alphabet, padded or not.
    raw = text.encode("ascii", "replace").translate(_URLSAFE_TO_STANDARD)
    body = raw.rstrip(b"=")
    if (len(raw) != len(body) and len(raw) % 4) or len(body) % 4 == 1:
        raise RequestBodyError("Unable to base64 decode")
    try:
        return base64.b64decode(body + b"=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise RequestBodyError("Unable to base64 decode") from None


def signature_name(doc: Any) -> str:
    """The request's `signature_name` ("" when absent), after TF Serving's checks that the
    body is an object and the name a string (predict steps 3 and 4)."""
    if not is_object(doc):
        raise RequestBodyError(format_message(doc, "Is not object"))
    found, name = find_member(doc, "signature_name")
    if found and not isinstance(name, str):
        raise RequestBodyError(
            f"JSON Value: {json_value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name if found else ""


def _check_feature_value(value: Any, feature: str, kind: list[str | None]) -> None:
    """AddValueToFeature: only the checks (the value itself is not kept)."""

    def expect(wanted: str) -> None:
        if kind[0] is not None and kind[0] != wanted:
            raise RequestBodyError(
                f"Unexpected element type in feature: {feature} expecting type: {kind[0]}"
            )
        kind[0] = wanted

    if value is None or isinstance(value, list):
        raise RequestBodyError(
            f"Feature: {feature} has element with unexpected JSON type: {json_type_string(value)}"
        )
    if isinstance(value, bool):
        expect("int64")
    elif is_object(value):
        if not is_b64_object(value):
            raise RequestBodyError(
                f"Feature: {feature} has element with unexpected JSON type: Object"
            )
        expect("bytes")
        decode_b64(value)
    elif isinstance(value, str):
        expect("bytes")
    elif isinstance(value, float):
        expect("float")
        if math.isfinite(value) and abs(value) > FLT_MAX:
            raise RequestBodyError(lossy_message(value, "float"))
    else:
        expect("int64")
        if value >= 2**63:
            raise RequestBodyError(
                f"Feature: {feature} has uint64 element. Only int64 is supported."
            )


def _check_example(value: Any) -> None:
    if not is_object(value):
        raise RequestBodyError(
            f"Example must be JSON object but got JSON {json_type_string(value)}"
        )
    for name, content in object_members(value):
        kind: list[str | None] = [None]
        for item in content if isinstance(content, list) else [content]:
            _check_feature_value(item, name, kind)


def check_classify_regress_document(doc: Any) -> tuple[str, int]:
    """FillClassifyRegressRequestFromJson's checks; returns (signature_name, examples)."""
    name = signature_name(doc)
    has_context, context = find_member(doc, "context")
    if has_context:
        _check_example(context)
    has_examples, examples = find_member(doc, "examples")
    if not has_examples:
        raise RequestBodyError(
            format_message(
                doc, "When method is classify, key 'examples' is expected and was not found"
            )
        )
    if not isinstance(examples, list):
        raise RequestBodyError(
            format_message(doc, "Expecting 'examples' value to be an list/array")
        )
    if not examples:
        raise RequestBodyError(format_message(doc, "'examples' value is an empty array"))
    for example in examples:
        _check_example(example)
    return name, len(examples)
