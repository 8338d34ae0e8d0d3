"""Predict request values -> tensors, as TF Serving's `json_tensor.cc` fills them.

The exact path: row (`instances`) and columnar (`inputs`) formats, base64 objects, the
dtype conversions with their range checks, dense shapes, and TF Serving's error messages
word for word. The module is pure: no I/O, no TensorFlow (numpy builds the tensors).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.tfserving.bodychecks import (
    RequestBodyError,
    decode_b64,
    format_message,
    lossy_message,
)
from gateway.tfserving.bodychecks import is_b64_object as _is_b64_object
from gateway.tfserving.bodychecks import json_type_string as _json_type_string
from gateway.tfserving.jsonparse import find_member as _find
from gateway.tfserving.jsonparse import is_object as _is_object
from gateway.tfserving.jsonparse import object_members as _members
from gateway.tfserving.jsonwrite import encode_text as _encode
from gateway.tfserving.jsonwrite import json_value_to_string
from model_server.status import Code, ServingError, invalid_argument

__all__ = [
    "DOUBLE_MAX_EXACT_INT",
    "FLOAT_MAX_EXACT_INT",
    "PredictInputs",
    "RequestFormat",
    "TensorSpec",
    "columns_to_tensors",
    "dtype_string",
    "format_error",
    "is_number",
    "rows_to_tensors",
]


#: The largest integers a float32 and a float64 hold exactly.
FLOAT_MAX_EXACT_INT = 2**24 - 1
DOUBLE_MAX_EXACT_INT = 2**53 - 1
_FLT_MAX = float(np.finfo(np.float32).max)


class RequestFormat(enum.Enum):
    """Which key carried the tensors; the response envelope follows it."""

    ROW = "instances"
    COLUMNAR = "inputs"


@dataclass(frozen=True)
class TensorSpec:
    """A signature input or output: TF dtype name (`DT_FLOAT`), shape (None = unknown rank)."""

    dtype: str
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class PredictInputs:
    """Tensors built from a predict body, keyed by signature input alias."""

    tensors: dict[str, np.ndarray]
    request_format: RequestFormat


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_error(doc: Any, message: str) -> ServingError:
    return invalid_argument(format_message(doc, message))


_DTYPES: dict[str, tuple[Any, str]] = {
    "DT_FLOAT": (np.float32, "float"),
    "DT_DOUBLE": (np.float64, "double"),
    "DT_INT32": (np.int32, "int32"),
    "DT_INT16": (np.int16, "int16"),
    "DT_INT8": (np.int8, "int8"),
    "DT_UINT8": (np.uint8, "uint8"),
    "DT_INT64": (np.int64, "int64"),
    "DT_BOOL": (np.bool_, "bool"),
    "DT_UINT32": (np.uint32, "uint32"),
    "DT_UINT64": (np.uint64, "uint64"),
    "DT_STRING": (np.object_, "string"),
}
_OTHER_DTYPE_NAMES = {
    "DT_HALF": "half",
    "DT_BFLOAT16": "bfloat16",
    "DT_COMPLEX64": "complex64",
    "DT_COMPLEX128": "complex128",
    "DT_UINT16": "uint16",
    "DT_RESOURCE": "resource",
    "DT_VARIANT": "variant",
    "DT_QINT8": "qint8",
    "DT_QUINT8": "quint8",
    "DT_QINT32": "qint32",
}


def dtype_string(dtype: str) -> str:
    """TF's DataTypeString for a `DT_*` enum name."""
    if dtype in _DTYPES:
        return _DTYPES[dtype][1]
    return _OTHER_DTYPE_NAMES.get(dtype, dtype.removeprefix("DT_").lower())


def _type_error(value: Any, dtype: str) -> ServingError:
    return invalid_argument(
        f"JSON Value: {json_value_to_string(value)} Type: {_json_type_string(value)}"
        f" is not of expected type: {dtype_string(dtype)}"
    )


def _lossy_error(value: Any, target: str) -> ServingError:
    return invalid_argument(lossy_message(value, target))


# AddValueToTensor: one JSON leaf to a Python value of the tensor's dtype, one function per
# dtype family (`_fill_values` looks it up once per tensor).


def _to_floating(value: Any, dtype: str) -> float:
    if not is_number(value):
        raise _type_error(value, dtype)
    target, limit = (
        ("float", FLOAT_MAX_EXACT_INT) if dtype == "DT_FLOAT" else ("double", DOUBLE_MAX_EXACT_INT)
    )
    if isinstance(value, int):
        if abs(value) > limit:
            raise _lossy_error(value, target)
    elif math.isfinite(value) and dtype == "DT_FLOAT" and abs(value) > _FLT_MAX:
        raise _lossy_error(value, target)
    return float(value)


def _to_int32(value: Any, dtype: str) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool)):
        raise _type_error(value, dtype)
    if not -(2**31) <= value < 2**31:
        raise _type_error(value, dtype)
    return value


def _to_int64(value: Any, dtype: str) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool)) or value >= 2**63:
        raise _type_error(value, dtype)
    return value


def _to_unsigned(value: Any, dtype: str) -> int:
    bits = 32 if dtype == "DT_UINT32" else 64
    if not (isinstance(value, int) and not isinstance(value, bool)) or not (0 <= value < 2**bits):
        raise _type_error(value, dtype)
    return value


def _to_bool(value: Any, dtype: str) -> bool:
    if not isinstance(value, bool):
        raise _type_error(value, dtype)
    return value


def _to_string(value: Any, dtype: str) -> bytes:
    if not isinstance(value, str):
        raise _type_error(value, dtype)
    return _encode(value)


def _unconvertible(value: Any, dtype: str) -> Any:
    raise ServingError(
        Code.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_value_to_string(value)} to type: {dtype_string(dtype)}",
    )


_CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "DT_FLOAT": _to_floating,
    "DT_DOUBLE": _to_floating,
    "DT_INT32": _to_int32,
    "DT_INT16": _to_int32,
    "DT_INT8": _to_int32,
    "DT_UINT8": _to_int32,
    "DT_INT64": _to_int64,
    "DT_UINT32": _to_unsigned,
    "DT_UINT64": _to_unsigned,
    "DT_BOOL": _to_bool,
    "DT_STRING": _to_string,
}


def _decode_b64_object(value: Any) -> bytes:
    try:
        return decode_b64(value)
    except RequestBodyError as error:
        raise invalid_argument(error.message) from None


def _dense_shape(value: Any) -> list[int]:
    """GetDenseTensorShape: follow first elements down."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _shape_string(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _fill_values(value: Any, shape: list[int], dtype: str, out: list[Any]) -> None:
    """FillTensorProto, iteratively (documents may nest far deeper than Python recursion)."""
    rank = len(shape)
    convert = _CONVERTERS.get(dtype, _unconvertible)
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, list):
            if level != rank:
                raise invalid_argument(
                    f"JSON Value: {json_value_to_string(item)} found at incorrect level: "
                    f"{level + 1} in the JSON DOM. Expected at level: {rank}"
                )
            if _is_object(item):
                if dtype != "DT_STRING":
                    raise _type_error(item, dtype)
                out.append(_decode_b64_object(item))
            else:
                out.append(convert(item, dtype))
            continue
        if level >= rank:
            raise invalid_argument(
                f"Encountered list at unexpected level: {level} expected < {rank}"
            )
        if len(item) != shape[level]:
            raise invalid_argument(
                f"Encountered list at unexpected size: {len(item)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        stack.extend((child, level + 1) for child in reversed(item))


def _to_array(values: list[Any], shape: Sequence[int], dtype: str) -> np.ndarray:
    numpy_dtype = _DTYPES[dtype][0] if dtype in _DTYPES else np.float32
    if dtype == "DT_STRING":
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        array = np.array(values, dtype=numpy_dtype if dtype != "DT_UINT64" else np.uint64)
    count = int(np.prod(shape)) if shape else 1
    if array.size != count:
        # A repeated key in an instance object appends its values twice; TF Serving then
        # fails to turn the proto into a tensor.
        raise _TensorParsingError
    return array.reshape(shape)


class _TensorParsingError(Exception):
    pass


@dataclass
class _Accumulated:
    values: list[Any]
    shape: list[int] | None = None
    size: int = 0


def _add_instance_item(
    item: Any,
    name: str,
    specs: Mapping[str, TensorSpec],
    accumulated: dict[str, _Accumulated],
) -> None:
    """AddInstanceItem: one instance's value for input `name`."""
    if name not in specs:
        raise invalid_argument(f"JSON object: does not have named input: {name}")
    shape = _dense_shape(item)
    values: list[Any] = []
    _fill_values(item, shape, specs[name].dtype, values)
    entry = accumulated.get(name)
    if entry is None:
        accumulated[name] = _Accumulated(values=values, shape=shape, size=len(values))
        return
    if entry.size != len(values):
        raise invalid_argument(f"Expecting tensor size: {entry.size} but got: {len(values)}")
    if entry.shape != shape:
        assert entry.shape is not None
        raise invalid_argument(
            f"Expecting shape {_shape_string(entry.shape)} but got: {_shape_string(shape)}"
        )
    entry.values.extend(values)


def _status_text(error: ServingError) -> str:
    return f"{error.code.name}: {error.message}"


def rows_to_tensors(instances: list[Any], specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList."""
    first = instances[0]
    if not _is_object(first) and len(specs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )

    def element_is_object(value: Any) -> bool:
        return _is_object(value) and not _is_b64_object(value)

    objects = element_is_object(first)
    names = sorted(specs)
    accumulated: dict[str, _Accumulated] = {}
    for index, element in enumerate(instances):
        if objects:
            if not element_is_object(element):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            keys: set[str] = set()
            for key, value in _members(element):
                keys.add(key)
                try:
                    _add_instance_item(value, key, specs, accumulated)
                except ServingError as error:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {key} of 'instances' list."
                        f" Error: {_status_text(error)}"
                    ) from None
            if keys != set(names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_value_to_string(element)} keys must be equal to: {','.join(names)}"
                )
        else:
            if element_is_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                _add_instance_item(element, names[0], specs, accumulated)
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"{_status_text(error)}"
                ) from None
    tensors: dict[str, np.ndarray] = {}
    for name, entry in accumulated.items():
        assert entry.shape is not None
        try:
            tensors[name] = _to_array(
                entry.values, [len(instances), *entry.shape], specs[name].dtype
            )
        except _TensorParsingError:
            raise invalid_argument(f"tensor parsing error: {name}") from None
    return tensors


def columns_to_tensors(value: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap."""
    names = sorted(specs)
    items: list[tuple[str, Any]]
    if not _is_object(value) or _is_b64_object(value):
        if len(specs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        items = [(names[0], value)]
    else:
        items = []
        for name in names:
            found, item = _find(value, name)
            if not found:
                raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
            items.append((name, item))
    tensors: dict[str, np.ndarray] = {}
    for name, item in items:
        shape = _dense_shape(item)
        values: list[Any] = []
        _fill_values(item, shape, specs[name].dtype, values)
        tensors[name] = _to_array(values, shape, specs[name].dtype)
    return tensors
