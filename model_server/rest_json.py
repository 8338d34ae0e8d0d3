"""TF Serving's REST JSON, byte for byte: request parsing, tensor building, response writing.

TF Serving parses request bodies with rapidjson 1.1.0 (iterative, NaN/Inf accepted, bytes
after the root value ignored, first duplicate key wins, no UTF-8 validation) and writes
responses with rapidjson's PrettyWriter and its own float formatting. Python's `json`
differs on every one of those points, so this module carries:

* a fast path: orjson plus cheap byte-level checks that prove orjson's view of the body is
  the view rapidjson would have (no duplicate keys, no `true`/`false`/`null` that numpy
  would silently coerce, numeric rectangular tensors); it covers well-formed image requests;
* an exact path: the rapidjson-compatible parser of the protocol core
  (`gateway.tfserving.jsonparse`) and a port of `json_tensor.cc`'s tensor filling, used for
  everything else, which reproduces TF Serving's error messages;
* writers for the predict bodies in TF Serving's exact layout, on the core's JSON writers
  (`gateway.tfserving.jsonwrite`); error bodies and the checks made before the model lookup
  come from the core too (`errors`, `bodychecks`).

The module is pure: no I/O, no aiohttp, no TensorFlow (numpy builds the tensors).
"""

from __future__ import annotations

import base64
import enum
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from gateway.tfserving.bodychecks import (
    RequestBodyError,
    check_classify_regress_document,
    decode_b64,
    format_message,
    lossy_message,
    signature_name,
)
from gateway.tfserving.bodychecks import is_b64_object as _is_b64_object
from gateway.tfserving.bodychecks import json_type_string as _json_type_string
from gateway.tfserving.errors import error_body
from gateway.tfserving.jsonparse import JsonObject, JsonParseError
from gateway.tfserving.jsonparse import find_member as _find
from gateway.tfserving.jsonparse import is_object as _is_object
from gateway.tfserving.jsonparse import object_members as _members
from gateway.tfserving.jsonparse import parse_exact as _parse_exact
from gateway.tfserving.jsonwrite import encode_text as _encode
from gateway.tfserving.jsonwrite import (
    format_float32,
    format_float64,
    json_value_to_string,
)
from gateway.tfserving.jsonwrite import json_string as _quote
from model_server.status import Code, ServingError, invalid_argument

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

_FLOAT_MAX_EXACT_INT = 2**24 - 1
_DOUBLE_MAX_EXACT_INT = 2**53 - 1
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


# --------------------------------------------------------------------------------------
# Generic access to parsed documents (orjson dicts or exact-parser JsonObjects)
# --------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------
# Parsing (the rapidjson-compatible parser lives in the protocol core)
# --------------------------------------------------------------------------------------


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
    callers that rely on key semantics must confirm it (see `_fast_predict`) or re-parse
    with `parse_exact`.
    """
    try:
        return orjson.loads(body), False
    except orjson.JSONDecodeError:
        return parse_exact(body), True


# --------------------------------------------------------------------------------------
# Writing JSON the way rapidjson does (the writers live in the protocol core)
# --------------------------------------------------------------------------------------

_FLOAT32_PACKERS: dict[int, struct.Struct] = {}


def _float32_packer(count: int) -> struct.Struct:
    packer = _FLOAT32_PACKERS.get(count)
    if packer is None:
        packer = struct.Struct(f"{count}f")
        if len(_FLOAT32_PACKERS) < 256:
            _FLOAT32_PACKERS[count] = packer
    return packer


def _format_float32_array(flat: np.ndarray) -> list[str]:
    """Vectorised `format_float32` for a 1-D float32 array."""
    values = flat.tolist()
    if len(values) <= 64:
        # Few values (a prediction or a batch of them): one struct round trip rounds every
        # six-digit text to float32 at once, cheaper than numpy's per-call overhead.
        if not all(map(math.isfinite, values)):
            return [format_float32(v) for v in values]
        texts = [f"{v:.6g}" for v in values]
        packer = _float32_packer(len(values))
        back = packer.unpack(packer.pack(*map(float, texts)))
        texts = [
            text if again == value else f"{value:.9g}"
            for text, again, value in zip(texts, back, values, strict=True)
        ]
        return [t if ("." in t or "e" in t) else t + ".0" for t in texts]
    if not np.isfinite(flat).all():
        return [format_float32(v) for v in values]
    texts = [f"{v:.6g}" for v in values]
    # Six significant digits usually round-trip a float32; the rest need nine.
    mismatch = np.flatnonzero(np.array(texts, dtype=np.float32) != flat)
    for index in mismatch.tolist():
        texts[index] = f"{values[index]:.9g}"
    return [t if ("." in t or "e" in t) else t + ".0" for t in texts]


def _format_error(doc: Any, message: str) -> ServingError:
    return invalid_argument(format_message(doc, message))


# --------------------------------------------------------------------------------------
# Predict requests -> tensors
# --------------------------------------------------------------------------------------

#: How each signature dtype accepts JSON values: (numpy dtype, TF DataTypeString name).
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


def _convert_scalar(value: Any, dtype: str) -> Any:
    """AddValueToTensor: one JSON leaf to a Python value of the tensor's dtype."""
    if dtype in ("DT_FLOAT", "DT_DOUBLE"):
        if not _is_number(value):
            raise _type_error(value, dtype)
        target, limit = (
            ("float", _FLOAT_MAX_EXACT_INT)
            if dtype == "DT_FLOAT"
            else ("double", _DOUBLE_MAX_EXACT_INT)
        )
        if isinstance(value, int):
            if abs(value) > limit:
                raise _lossy_error(value, target)
        elif math.isfinite(value) and dtype == "DT_FLOAT" and abs(value) > _FLT_MAX:
            raise _lossy_error(value, target)
        return float(value)
    if dtype in ("DT_INT32", "DT_INT16", "DT_INT8", "DT_UINT8"):
        if not (isinstance(value, int) and not isinstance(value, bool)):
            raise _type_error(value, dtype)
        if not -(2**31) <= value < 2**31:
            raise _type_error(value, dtype)
        return value
    if dtype == "DT_INT64":
        if not (isinstance(value, int) and not isinstance(value, bool)) or value >= 2**63:
            raise _type_error(value, dtype)
        return value
    if dtype == "DT_UINT32" or dtype == "DT_UINT64":
        bits = 32 if dtype == "DT_UINT32" else 64
        if not (isinstance(value, int) and not isinstance(value, bool)) or not (
            0 <= value < 2**bits
        ):
            raise _type_error(value, dtype)
        return value
    if dtype == "DT_BOOL":
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if dtype == "DT_STRING":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return _encode(value)
    raise ServingError(
        Code.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_value_to_string(value)} to type: {dtype_string(dtype)}",
    )


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
                out.append(_convert_scalar(item, dtype))
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


def _rows_to_tensors(
    instances: list[Any], specs: Mapping[str, TensorSpec]
) -> dict[str, np.ndarray]:
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


def _columns_to_tensors(value: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
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


@dataclass(frozen=True)
class _FastDocument:
    """What the fast path proved about an orjson-decoded body."""

    signature_name: Any
    has_signature_name: bool
    instances: np.ndarray | None
    inputs: np.ndarray | dict[str, np.ndarray] | None


def _numeric_array(value: Any) -> np.ndarray | None:
    if not isinstance(value, list) or not value:
        return None
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype.kind not in "fiu":
        return None
    return array


def _count_object_keys(value: Any) -> int:
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


_WS = rb"[ \t\n\r]*"
_SIGNATURE_MEMBER = rb'"signature_name"' + _WS + rb":" + _WS + rb'"([^"\\\x00-\x1f]*)"'
#: `{ ["signature_name": "...",] "instances"|"inputs": ` up to the array's `[`.
_NUMERIC_PREFIX = re.compile(
    _WS
    + rb"\{"
    + _WS
    + rb"(?:"
    + _SIGNATURE_MEMBER
    + _WS
    + rb","
    + _WS
    + rb")?"
    + rb'"(instances|inputs)"'
    + _WS
    + rb":"
    + _WS
    + rb"(?=\[)"
)
#: After the array's `]`: `[, "signature_name": "..."] }` (bytes after the root are ignored).
_NUMERIC_SUFFIX = re.compile(_WS + rb"(?:," + _WS + _SIGNATURE_MEMBER + _WS + rb")?\}")
_BIG_EXPONENT = re.compile(rb"[eE]\+?[0-9]{3,}")
_NUMBER_CHARS = b"0123456789.eE+-"
_WHITESPACE_BYTES = b" \t\n\r"
_canonical_cache: dict[tuple[int, ...], bytes] = {}


def _canonical_skeleton(shape: tuple[int, ...]) -> bytes:
    """The bracket/comma skeleton of a dense array of `shape` with numbers removed."""
    found = _canonical_cache.get(shape)
    if found is None:
        found = b"[" + b"," * (shape[-1] - 1) + b"]"
        for dim in reversed(shape[:-1]):
            found = b"[" + b",".join([found] * dim) + b"]"
        if len(_canonical_cache) < 256:
            _canonical_cache[shape] = found
    return found


def _skeleton_shape(skeleton: bytes) -> tuple[int, ...] | None:
    """Infer the shape of a canonical skeleton from its first path (None if impossible)."""
    rank = len(skeleton) - len(skeleton.lstrip(b"["))
    if rank == 0:
        return None
    first_close = skeleton.find(b"]")
    innermost = first_close - rank + 1  # commas in the first innermost list, plus one
    dims = [innermost]
    length = first_close - (rank - 1) + 1  # length of one innermost list
    for level in range(rank - 2, -1, -1):
        closes = rank - level
        end = skeleton.find(b"]" * closes)
        if end < 0:
            return None
        span = end + closes - level  # this list's length, brackets included
        dim, rest = divmod(span - 2 + 1, length + 1)
        if rest or dim < 1:
            return None
        dims.append(dim)
        length = span
    return tuple(reversed(dims))


class _NumericTensor:
    """A body proven to be one dense numeric tensor, its numbers as JSON reads them."""

    __slots__ = ("key", "signature_name", "values", "shape")

    def __init__(
        self, key: str, signature_name: str | None, values: list[Any], shape: tuple[int, ...]
    ) -> None:
        self.key = key
        self.signature_name = signature_name
        #: Flat, in order: ints (64-bit range) and doubles, as rapidjson reads them.
        self.values = values
        self.shape = shape


#: Skeletons (structure view without numbers) already proven, mapped to their shapes.
_proven_skeletons: dict[bytes, tuple[int, ...]] = {}


def _structure_view_table() -> bytes:
    table = bytearray(range(256))
    for raw in (1, 2, 4, 8):
        table[raw] = 0xFF  # raw bytes that would pass for codes
    for number_byte in _NUMBER_CHARS:
        table[number_byte] = 1
    table[ord("[")], table[ord("]")], table[ord(",")] = 2, 4, 8
    return bytes(table)


#: The structure view: number bytes become 1, `[` 2, `]` 4, `,` 8; whitespace is dropped.
_STRUCTURE_VIEW = _structure_view_table()
_VIEW_TO_SKELETON = bytes.maketrans(b"\x02\x04\x08", b"[],")
#: Differences of neighbouring codes (left minus right, mod 256) that only a number right
#: before `[` (1 - 2) or `]` right before a number (4 - 1) give.
_NUMBER_BEFORE_OPEN = b"\xff"
_CLOSE_BEFORE_NUMBER = b"\x03"


def _misplaced_number(view: bytes) -> bool:
    """Whether a number touches a bracket from the wrong side (`1[` or `]1`).

    `view` holds only the codes 1, 2, 4 and 8 (a proven skeleton says so).
    """
    codes = np.frombuffer(view, dtype=np.uint8)
    pairs = (codes[:-1] - codes[1:]).tobytes()
    return _NUMBER_BEFORE_OPEN in pairs or _CLOSE_BEFORE_NUMBER in pairs


def _array_shape(array: bytes) -> tuple[int, ...] | None:
    """The shape of `array` if it is a dense, rectangular array of plain numbers.

    This proves the structure only; the caller checks that every leaf holds exactly one
    valid number (orjson on the bracket-free text) and that their count fits the shape.
    """
    view = array.translate(_STRUCTURE_VIEW, _WHITESPACE_BYTES)
    coded = view.translate(None, b"\x01")
    shape = _proven_skeletons.get(coded)
    if shape is None:
        if coded.translate(None, b"\x02\x04\x08"):
            return None  # anything but numbers, brackets, commas and whitespace
        skeleton = coded.translate(_VIEW_TO_SKELETON)
        shape = _skeleton_shape(skeleton)
        if shape is None or _canonical_skeleton(shape) != skeleton:
            return None
        if len(_proven_skeletons) < 256:
            _proven_skeletons[coded] = shape
    if (b"e" in array or b"E" in array) and _BIG_EXPONENT.search(array):
        return None
    # With a canonical skeleton a number sits in a leaf unless it touches a bracket from
    # the wrong side (whitespace between does not count). Removing the brackets would glue
    # such a number onto a neighbour or into an empty leaf: a body rapidjson rejects
    # would read as a valid flat list.
    if _misplaced_number(view):
        return None
    return shape


def scan_numeric_body(body: bytes) -> _NumericTensor | None:
    """The hot path: a body that is one dense numeric tensor, read without a DOM.

    The structure checks prove the array is rectangular and well formed; orjson then parses
    the numbers alone (strictly, so malformed numbers fall back to the exact path).
    """
    prefix = _NUMERIC_PREFIX.match(body)
    if prefix is None:
        return None
    start = prefix.end()
    end = body.rfind(b"]") + 1
    suffix = _NUMERIC_SUFFIX.match(body, end)
    if suffix is None:
        return None
    signature = prefix.group(1)
    if suffix.group(1) is not None:
        if signature is not None:
            return None  # two signature_name members: the exact path picks the first
        signature = suffix.group(1)
    array = body[start:end]
    shape = _array_shape(array)
    if shape is None:
        return None
    try:
        values = orjson.loads(b"[" + array.translate(None, b"[]") + b"]")
    except orjson.JSONDecodeError:
        return None
    if len(values) != math.prod(shape):
        return None
    try:
        signature_name = signature.decode("utf-8") if signature is not None else None
    except UnicodeDecodeError:
        return None
    return _NumericTensor(prefix.group(2).decode(), signature_name, values, shape)


def prepare_fast(doc: Any, body: bytes) -> _FastDocument | None:
    """Prove that orjson's reading of `body` equals rapidjson's, and pre-convert tensors.

    Returns None whenever anything is unusual; the caller then takes the exact path.
    """
    if type(doc) is not dict:
        return None
    if b"true" in body or b"false" in body or b"null" in body:
        return None  # numpy would coerce booleans into numbers
    if (b"e" in body or b"E" in body) and _BIG_EXPONENT.search(body):
        return None  # rapidjson refuses an exponent past 308 even for 0.0e625; orjson reads 0
    keys = len(doc)
    instances: np.ndarray | None = None
    inputs: np.ndarray | dict[str, np.ndarray] | None = None
    for key, value in doc.items():
        if key == "instances":
            instances = _numeric_array(value)
            if instances is None:
                return None
        elif key == "inputs":
            if isinstance(value, dict):
                converted: dict[str, np.ndarray] = {}
                keys += len(value)
                for name, item in value.items():
                    array = _numeric_array(item)
                    if array is None:
                        return None
                    converted[name] = array
                inputs = converted
            else:
                inputs = _numeric_array(value)
                if inputs is None:
                    return None
        else:
            keys += _count_object_keys(value)
    # Every object key in the source is followed by one ':'; a duplicate key or a ':' in a
    # string makes the counts differ (the duplicate vanished in the dict).
    if body.count(b":") != keys:
        return None
    if instances is not None and inputs is not None:
        return None
    return _FastDocument(
        signature_name=doc.get("signature_name"),
        has_signature_name="signature_name" in doc,
        instances=instances,
        inputs=inputs,
    )


def _fast_float_tensor(array: np.ndarray, dtype: str) -> np.ndarray | None:
    if dtype == "DT_FLOAT":
        # Integers above 2**24 and doubles above FLT_MAX are lossy: let the exact path word it.
        if array.size and float(np.abs(array).max()) > _FLOAT_MAX_EXACT_INT:
            return None
        return array.astype(np.float32, copy=False)
    if dtype == "DT_DOUBLE":
        # Integers above 2**53 are lossy. Once mixed with floats the array no longer says
        # which leaves were integers, so any value that large goes to the exact path.
        if array.size and float(np.abs(array).max()) > _DOUBLE_MAX_EXACT_INT:
            return None
        return array.astype(np.float64, copy=False)
    return None


def _fast_tensors(fast: _FastDocument, specs: Mapping[str, TensorSpec]) -> PredictInputs | None:
    if fast.instances is not None:
        if len(specs) != 1:
            return None
        ((name, spec),) = specs.items()
        tensor = _fast_float_tensor(fast.instances, spec.dtype)
        if tensor is None:
            return None
        return PredictInputs({name: tensor}, RequestFormat.ROW)
    if fast.inputs is None:
        return None
    tensors: dict[str, np.ndarray] = {}
    if isinstance(fast.inputs, dict):
        for name, spec in specs.items():
            array = fast.inputs.get(name)
            if array is None:
                return None
            converted = _fast_float_tensor(array, spec.dtype)
            if converted is None:
                return None
            tensors[name] = converted
    else:
        if len(specs) != 1:
            return None
        ((name, spec),) = specs.items()
        converted = _fast_float_tensor(fast.inputs, spec.dtype)
        if converted is None:
            return None
        tensors[name] = converted
    return PredictInputs(tensors, RequestFormat.COLUMNAR)


@dataclass
class ParsedPredict:
    """A predict body after the checks that come before the servable lookup."""

    body: bytes
    signature_name: str
    doc: Any = None
    fast: _FastDocument | None = None
    numeric: _NumericTensor | None = None

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


def _numeric_inputs(
    numeric: _NumericTensor, specs: Mapping[str, TensorSpec]
) -> PredictInputs | None:
    if len(specs) != 1:
        return None
    ((name, spec),) = specs.items()
    if spec.dtype == "DT_FLOAT":
        limit = _FLOAT_MAX_EXACT_INT
    elif spec.dtype == "DT_DOUBLE":
        limit = _DOUBLE_MAX_EXACT_INT
    else:
        return None
    # Doubles first, then one cast: the exact path also rounds each double to float32.
    values = np.fromiter(numeric.values, np.float64, len(numeric.values))
    # Integers past `limit` and floats past FLT_MAX are errors the exact path words; the
    # check is wider than needed (any magnitude past `limit`), which only costs a fallback.
    if values.size and (values.max() > limit or values.min() < -limit):
        return None
    tensor = values.astype(np.float32) if limit == _FLOAT_MAX_EXACT_INT else values
    request_format = RequestFormat.ROW if numeric.key == "instances" else RequestFormat.COLUMNAR
    return PredictInputs({name: tensor.reshape(numeric.shape)}, request_format)


def predict_inputs(parsed: ParsedPredict, specs: Mapping[str, TensorSpec]) -> PredictInputs:
    """Steps 7-10: pick row or columnar format and build the input tensors."""
    if parsed.numeric is not None:
        result = _numeric_inputs(parsed.numeric, specs)
        if result is not None:
            return result
    if parsed.fast is not None:
        result = _fast_tensors(parsed.fast, specs)
        if result is not None:
            return result
    doc = parsed.document()
    has_instances, instances = _find(doc, "instances")
    has_inputs, inputs = _find(doc, "inputs")
    if has_instances:
        if has_inputs:
            raise _format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                "keys to exist ",
            )
        if not isinstance(instances, list):
            raise _format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(doc, "No values in 'instances' array")
        return PredictInputs(_rows_to_tensors(instances, specs), RequestFormat.ROW)
    if has_inputs:
        return PredictInputs(_columns_to_tensors(inputs, specs), RequestFormat.COLUMNAR)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# --------------------------------------------------------------------------------------
# Classify / regress request bodies
# --------------------------------------------------------------------------------------


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
    if not exact and _is_object(doc) and body.count(b":") != _count_object_keys(doc):
        doc = parse_exact(body)
    try:
        return check_classify_regress_document(doc)
    except RequestBodyError as error:
        raise invalid_argument(error.message) from None


# --------------------------------------------------------------------------------------
# Predict responses
# --------------------------------------------------------------------------------------


def _scalar_texts(array: np.ndarray, as_bytes: bool) -> list[str]:
    flat = array.reshape(-1)
    kind = array.dtype
    if kind == np.float32:
        return _format_float32_array(flat)
    if kind == np.float64:
        return [format_float64(v) for v in flat.tolist()]
    if kind == np.bool_:
        return ["true" if v else "false" for v in flat.tolist()]
    if kind.kind in "iu":
        return [str(v) for v in flat.tolist()]
    if kind == np.object_ or kind.kind == "S":
        texts = []
        for v in flat.tolist():
            raw = v if isinstance(v, bytes) else str(v).encode()
            if as_bytes:
                texts.append('{"b64": "' + base64.b64encode(raw).decode("ascii") + '"}')
            else:
                texts.append(_quote(raw.decode("utf-8", "surrogateescape")))
        return texts
    raise invalid_argument(f"Failed to write JSON value for tensor type: {kind}")


def _single_line(texts: list[str], shape: Sequence[int]) -> str:
    """Nested single-line arrays (`kFormatSingleLineArray`) over `shape`."""
    if not shape:
        return texts[0]
    if len(shape) == 1:
        return "[" + ", ".join(texts) + "]"
    step = len(texts) // shape[0] if shape[0] else 0
    return (
        "["
        + ", ".join(
            _single_line(texts[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])
        )
        + "]"
    )


def _expanded(texts: list[str], shape: Sequence[int], level: int, out: list[str]) -> None:
    """Fully expanded arrays, one value per line (PrettyWriter's default format)."""
    if not shape:
        out.append(texts[0])
        return
    if shape[0] == 0:
        out.append("[]")
        return
    step = len(texts) // shape[0]
    indent = "\n" + "    " * (level + 1)
    out.append("[")
    for i in range(shape[0]):
        out.append(indent if i == 0 else "," + indent)
        if len(shape) == 1:
            out.append(texts[i])
        else:
            _expanded(texts[i * step : (i + 1) * step], shape[1:], level + 1, out)
    out.append("\n" + "    " * level + "]")


def _row_object(values: Mapping[str, str]) -> str:
    members = ",".join(f"\n            {_quote(name)}: {value}" for name, value in values.items())
    return "{" + members + "\n        }"


def _float32_rows_body(outputs: Mapping[str, np.ndarray]) -> bytes | None:
    """The common answer, one float32 matrix in row format, without the general walk."""
    ((name, array),) = outputs.items()
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] < 1:
        return None
    if name.endswith("_bytes"):
        return None
    texts = _format_float32_array(array.reshape(-1))
    width = array.shape[1]
    rows = (
        [
            "[" + ", ".join(texts[start : start + width]) + "]"
            for start in range(0, len(texts), width)
        ]
        if width
        else ["[]"] * array.shape[0]
    )
    return ('{\n    "predictions": [' + ", ".join(rows) + "\n    ]\n}").encode("ascii")


def predict_response_body(
    outputs: Mapping[str, np.ndarray], request_format: RequestFormat
) -> bytes:
    """MakeJsonFromTensors: the predict response in TF Serving's exact layout."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    if request_format is RequestFormat.ROW and len(outputs) == 1:
        fast = _float32_rows_body(outputs)
        if fast is not None:
            return fast
    names = sorted(outputs)
    texts = {name: _scalar_texts(outputs[name], name.endswith("_bytes")) for name in names}
    if request_format is RequestFormat.ROW:
        batch_size = 0
        for name in names:
            shape = outputs[name].shape
            if not shape:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if shape[0] < 1:
                raise invalid_argument(f"Tensor name: {name} has invalid batch size: {shape[0]}")
            if batch_size and shape[0] != batch_size:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {shape[0]} "
                    f"expecting: {batch_size}"
                )
            batch_size = shape[0]
        items: list[str] = []
        for row in range(batch_size):
            values = {}
            for name in names:
                shape = outputs[name].shape
                step = len(texts[name]) // batch_size
                values[name] = _single_line(texts[name][row * step : (row + 1) * step], shape[1:])
            items.append(values[names[0]] if len(names) == 1 else _row_object(values))
        if len(names) == 1:
            return _encode('{\n    "predictions": [' + ", ".join(items) + "\n    ]\n}")
        # Objects are opened before the single-line format is switched on, so each one
        # starts on its own line, while the arrays inside stay on one line.
        body = ",".join("\n        " + item for item in items)
        return _encode('{\n    "predictions": [' + body + "\n    ]\n}")
    out: list[str] = ['{\n    "outputs": ']
    if len(names) == 1:
        name = names[0]
        _expanded(texts[name], outputs[name].shape, 1, out)
    else:
        out.append("{")
        for index, name in enumerate(names):
            out.append(("\n" if index == 0 else ",\n") + "        " + _quote(name) + ": ")
            _expanded(texts[name], outputs[name].shape, 2, out)
        out.append("\n    }")
    out.append("\n}")
    return _encode("".join(out))
