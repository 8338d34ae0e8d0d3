"""The TF Serving protocol core (gateway/tfserving/): one copy, shared, free of I/O libraries.

The byte-for-byte behaviour is covered where it is used (tests/model_server/test_rest_json.py,
tests/test_tfserving_routes.py, tests/gateway/test_dropin.py); these tests cover the sharing
itself and what moved.
"""

from __future__ import annotations

import ast
import gzip
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.request.strictjson import inflate as strict_inflate
from gateway.tfserving import Route, Verb, error_body, jsonwrite
from gateway.tfserving.inflate import CorruptBodyError, inflate, inflate_like_tf_serving
from gateway.tfserving.jsonparse import JsonObject, JsonParseError, parse_exact
from gateway.tfserving.notfound import unknown_model_error

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
CORE_MODULES = [
    "gateway.tfserving",
    "gateway.tfserving.urls",
    "gateway.tfserving.errors",
    "gateway.tfserving.jsonparse",
    "gateway.tfserving.jsonwrite",
    "gateway.tfserving.inflate",
    "gateway.tfserving.bodychecks",
    "gateway.tfserving.notfound",
    "gateway.tfserving.protos",
]


def _imported_modules(path: Path) -> list[str]:
    """Every module `path` imports, at any depth (lazy imports too), by statement or by name.

    Calls such as `importlib.import_module("x")` and `__import__("x")` count with their
    literal argument. (`jurisgate up` starting `python -m model_server` as another process
    is not an import.)
    """
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                names.append(str(first.value))
    return names


def test_no_gateway_module_imports_model_server() -> None:
    sources = sorted(GATEWAY.rglob("*.py"))
    assert len(sources) > 40  # the walk found the package
    offenders = {
        str(path.relative_to(GATEWAY)): name
        for path in sources
        for name in _imported_modules(path)
        if name == "model_server" or name.startswith("model_server.")
    }
    assert offenders == {}


def test_the_import_check_sees_lazy_and_dynamic_imports(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import importlib\n"
        "def f():\n"
        "    from model_server.rest_json import parse_exact\n"
        "    return importlib.import_module('model_server.rest')\n"
    )
    assert _imported_modules(source) == ["importlib", "model_server.rest_json", "model_server.rest"]


def test_importing_every_gateway_module_loads_no_model_server() -> None:
    code = (
        "import importlib, pkgutil, sys, gateway\n"
        "names = [m.name for m in pkgutil.walk_packages(gateway.__path__, 'gateway.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'model_server', 'tensorflow', 'tensorflow_serving'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True
    )
    count, loaded = out.stdout.split("\n")[:2]
    assert int(count) > 40
    assert loaded == "[]"


def test_core_imports_no_aiohttp_numpy_or_tensorflow() -> None:
    code = "import sys\n" + "".join(f"import {m}\n" for m in CORE_MODULES)
    code += (
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'aiohttp', 'numpy', 'tensorflow', 'model_server'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_model_server_uses_the_core() -> None:
    from model_server import rest, rest_json

    assert rest_json.JsonObject is JsonObject
    assert rest_json.json_value_to_string is jsonwrite.json_value_to_string
    assert rest_json.error_body is error_body
    assert rest.inflate_like_tf_serving is inflate_like_tf_serving
    assert strict_inflate is inflate


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        # Longer than Python's int() accepts from text: a double, then too big for one.
        (b"1" * 5000, "JSON Parse error: Number too big to be stored in double. at offset: 0"),
    ],
)
def test_parse_errors_carry_tf_servings_text(body: bytes, message: str) -> None:
    with pytest.raises(JsonParseError) as caught:
        parse_exact(body)
    assert caught.value.message == message


def test_long_integers_read_as_doubles() -> None:
    assert parse_exact(b"18446744073709551615") == 2**64 - 1
    assert parse_exact(b"18446744073709551616") == float(2**64)
    assert parse_exact(b"-" + b"1" * 300) == -float("1" * 300)


def test_error_body_writes_lone_surrogates() -> None:
    # A JSON `\udc00` escape decodes to a lone surrogate that UTF-8 cannot hold.
    assert error_body("x\udc00") == b'{\n    "error": "x\xed\xb0\x80"\n}'
    assert error_body('a\x01"', decision_id="d") == (
        b'{\n    "error": "a\\u0001\\"",\n    "decision_id": "d"\n}'
    )


def _numpy_format_float32(value: float) -> str:
    """The former numpy-based formatting, as the reference."""
    text = f"{value:.6g}"
    with np.errstate(over="ignore"):
        if np.float32(float(text)) != np.float32(value):
            text = f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


@settings(max_examples=3000, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_float32_formatting_matches_numpy(bits: int) -> None:
    value = struct.unpack("<f", struct.pack("<I", bits))[0]
    if not math.isfinite(value):
        return
    assert jsonwrite.format_float32(value) == _numpy_format_float32(value)


def test_float32_formatting_near_the_largest_float32() -> None:
    largest = float(np.finfo(np.float32).max)
    for value in (largest, -largest, float(np.nextafter(np.float32(largest), np.float32(0)))):
        assert jsonwrite.format_float32(value) == _numpy_format_float32(value)


def test_tf_serving_inflation() -> None:
    document = b'{"instances": [1, 2, 3]}'
    packed = gzip.compress(document)
    assert inflate_like_tf_serving(packed) == document
    # Bytes after the first member are ignored; anything broken reads as empty.
    assert inflate_like_tf_serving(packed + gzip.compress(b"more")) == document
    assert inflate_like_tf_serving(packed[:-3]) == b""
    assert inflate_like_tf_serving(b"not gzip") == b""
    assert inflate_like_tf_serving(b"") == b""
    assert inflate_like_tf_serving(gzip.compress(b"x" * 1000), max_size=999) == b""
    assert inflate_like_tf_serving(gzip.compress(b"x" * 1000), max_size=1000) == b"x" * 1000


def test_gateway_inflation_refuses_what_tf_serving_reads_as_empty() -> None:
    with pytest.raises(CorruptBodyError):
        inflate(gzip.compress(b"{}")[:-3], "gzip", max_size=100)
    # Several members are one body for the gateway.
    assert inflate(gzip.compress(b"[1,") + gzip.compress(b"2]"), "gzip", max_size=100) == b"[1,2]"


@pytest.mark.parametrize(
    ("verb", "version", "label", "document", "status", "message"),
    [
        ("predict", None, None, {}, 404, "Servable not found for request: Latest(m)"),
        ("predict", 3, None, {}, 404, "Servable not found for request: Specific(m, 3)"),
        ("predict", None, "l", {}, 400, "Unrecognized servable version label: l"),
        # The body comes before the label and the version.
        ("predict", None, "l", [1], 400, "JSON Value: [\n    1\n] Is not object"),
        ("classify", 3, None, {}, 400, "key 'examples' is expected and was not found"),
        ("regress", None, "l", {"examples": [{"x": 1}]}, 400, "Unrecognized servable version"),
        ("regress", 3, None, {"examples": [{"x": 1}]}, 404, "Specific(m, 3)"),
        ("metadata", None, "l", None, 400, "Unrecognized servable version label: l"),
        ("metadata", 3, None, None, 404, "Servable not found for request: Specific(m, 3)"),
        # Status ignores labels and has its own texts.
        ("status", None, "l", None, 404, "Could not find any versions of model m"),
        ("status", 3, None, None, 404, "Could not find version 3 of model m"),
    ],
)
def test_unknown_model_answers_in_tf_servings_check_order(
    verb: Verb, version: int | None, label: str | None, document: object, status: int, message: str
) -> None:
    error = unknown_model_error(Route("m", version, label, verb), document)
    assert error.status == status
    assert message in error.message
    assert error.body == error_body(error.message)
