"""Predict response bodies in TF Serving's exact layout: rapidjson's PrettyWriter and TF
Serving's float formatting, on the protocol core's JSON writers
(`gateway.tfserving.jsonwrite`)."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np

from gateway.tfserving.jsonwrite import encode_text as _encode
from gateway.tfserving.jsonwrite import format_float32, format_float64
from gateway.tfserving.jsonwrite import json_string as _quote
from model_server.status import invalid_argument
from model_server.tensors import RequestFormat

__all__ = [
    "predict_response_body",
]


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
        return _row_body(outputs, names, texts)
    return _columnar_body(outputs, names, texts)


def _batch_size(outputs: Mapping[str, np.ndarray], names: Sequence[str]) -> int:
    """The batch size every output shares (row format needs one)."""
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
    return batch_size


def _row_body(
    outputs: Mapping[str, np.ndarray], names: Sequence[str], texts: Mapping[str, list[str]]
) -> bytes:
    """`{"predictions": [...]}`: one item per batch row."""
    batch_size = _batch_size(outputs, names)
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


def _columnar_body(
    outputs: Mapping[str, np.ndarray], names: Sequence[str], texts: Mapping[str, list[str]]
) -> bytes:
    """`{"outputs": ...}`: one tensor, or an object of named tensors."""
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
