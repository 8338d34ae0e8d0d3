"""The fast path for predict bodies: orjson, or a byte-level scan, plus cheap checks that
prove the decoded view is the one rapidjson would have.

Rule 1: the fast path never changes an answer: it proves there are no duplicate keys, no
`true`/`false`/`null` that numpy would silently coerce, and a numeric rectangular tensor;
anything it cannot prove falls back (None) to the exact path (`tensors.py`).
Rule 2: it covers well-formed image requests, the common case.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from model_server.tensors import (
    DOUBLE_MAX_EXACT_INT,
    FLOAT_MAX_EXACT_INT,
    PredictInputs,
    RequestFormat,
    TensorSpec,
)

__all__ = [
    "FastDocument",
    "NumericTensor",
    "count_object_keys",
    "fast_tensors",
    "numeric_inputs",
    "prepare_fast",
    "scan_numeric_body",
]


@dataclass(frozen=True)
class FastDocument:
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


def count_object_keys(value: Any) -> int:
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


class NumericTensor:
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


def scan_numeric_body(body: bytes) -> NumericTensor | None:
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
    return NumericTensor(prefix.group(2).decode(), signature_name, values, shape)


def _numeric_inputs_member(value: Any) -> np.ndarray | dict[str, np.ndarray] | None:
    """The `inputs` member as numeric arrays: one array, or one per named input."""
    if not isinstance(value, dict):
        return _numeric_array(value)
    converted: dict[str, np.ndarray] = {}
    for name, item in value.items():
        array = _numeric_array(item)
        if array is None:
            return None
        converted[name] = array
    return converted


def prepare_fast(doc: Any, body: bytes) -> FastDocument | None:
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
            inputs = _numeric_inputs_member(value)
            if inputs is None:
                return None
            keys += len(inputs) if isinstance(inputs, dict) else 0
        else:
            keys += count_object_keys(value)
    # Every object key in the source is followed by one ':'; a duplicate key or a ':' in a
    # string makes the counts differ (the duplicate vanished in the dict).
    if body.count(b":") != keys:
        return None
    if instances is not None and inputs is not None:
        return None
    return FastDocument(
        signature_name=doc.get("signature_name"),
        has_signature_name="signature_name" in doc,
        instances=instances,
        inputs=inputs,
    )


def _fast_float_tensor(array: np.ndarray, dtype: str) -> np.ndarray | None:
    if dtype == "DT_FLOAT":
        # Integers above 2**24 and doubles above FLT_MAX are lossy: let the exact path word it.
        if array.size and float(np.abs(array).max()) > FLOAT_MAX_EXACT_INT:
            return None
        return array.astype(np.float32, copy=False)
    if dtype == "DT_DOUBLE":
        # Integers above 2**53 are lossy. Once mixed with floats the array no longer says
        # which leaves were integers, so any value that large goes to the exact path.
        if array.size and float(np.abs(array).max()) > DOUBLE_MAX_EXACT_INT:
            return None
        return array.astype(np.float64, copy=False)
    return None


def _single_tensor(
    array: np.ndarray, specs: Mapping[str, TensorSpec]
) -> dict[str, np.ndarray] | None:
    """The one input of a one-input signature, converted to its dtype (None: decline)."""
    if len(specs) != 1:
        return None
    ((name, spec),) = specs.items()
    tensor = _fast_float_tensor(array, spec.dtype)
    return None if tensor is None else {name: tensor}


def fast_tensors(fast: FastDocument, specs: Mapping[str, TensorSpec]) -> PredictInputs | None:
    if fast.instances is not None:
        single = _single_tensor(fast.instances, specs)
        return None if single is None else PredictInputs(single, RequestFormat.ROW)
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
        single = _single_tensor(fast.inputs, specs)
        if single is None:
            return None
        tensors = single
    return PredictInputs(tensors, RequestFormat.COLUMNAR)


def numeric_inputs(numeric: NumericTensor, specs: Mapping[str, TensorSpec]) -> PredictInputs | None:
    if len(specs) != 1:
        return None
    ((name, spec),) = specs.items()
    if spec.dtype == "DT_FLOAT":
        limit = FLOAT_MAX_EXACT_INT
    elif spec.dtype == "DT_DOUBLE":
        limit = DOUBLE_MAX_EXACT_INT
    else:
        return None
    # Doubles first, then one cast: the exact path also rounds each double to float32.
    values = np.fromiter(numeric.values, np.float64, len(numeric.values))
    # Integers past `limit` and floats past FLT_MAX are errors the exact path words; the
    # check is wider than needed (any magnitude past `limit`), which only costs a fallback.
    if values.size and (values.max() > limit or values.min() < -limit):
        return None
    tensor = values.astype(np.float32) if limit == FLOAT_MAX_EXACT_INT else values
    request_format = RequestFormat.ROW if numeric.key == "instances" else RequestFormat.COLUMNAR
    return PredictInputs({name: tensor.reshape(numeric.shape)}, request_format)
