"""Protobuf messages as TF Serving's REST layer prints them.

TF Serving prints model status and metadata with protobuf's C++ `MessageToJsonString`
(`add_whitespace`, fields without presence always printed). That printer indents by one
space per level, orders fields by field number, quotes 64-bit integers, ends the root
value with a newline, and writes `{}`/`[]` for empty messages and lists. Python's
`json_format` differs in ordering and layout, hence this small printer. Map entries are
printed sorted by key (protobuf leaves their order unspecified).
"""

from __future__ import annotations

import base64
import math
from typing import Any

from google.protobuf import descriptor  # type: ignore[import-untyped]
from google.protobuf.message import Message  # type: ignore[import-untyped]

__all__ = ["message_to_json", "metadata_to_json"]

_QUOTED_INTEGERS = {
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_SINT64,
    descriptor.FieldDescriptor.TYPE_FIXED64,
    descriptor.FieldDescriptor.TYPE_SFIXED64,
}
_WRAPPERS = {
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
}


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def _quote(text: str) -> str:
    out = ['"']
    for ch in text:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ord(ch) < 0x20 or ch in "<>" or 0x7F <= ord(ch) < 0xA0:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _float_text(value: float) -> str:
    if math.isnan(value):
        return '"NaN"'
    if math.isinf(value):
        return '"Infinity"' if value > 0 else '"-Infinity"'
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


class _Printer:
    def __init__(self, preserve_names: bool) -> None:
        self.preserve_names = preserve_names
        self.out: list[str] = []
        self.indent = 0

    def newline(self) -> None:
        self.out.append("\n" + " " * self.indent)

    def scalar(self, field: descriptor.FieldDescriptor, value: Any) -> None:
        kind = field.type
        if kind == descriptor.FieldDescriptor.TYPE_MESSAGE:
            self.message(value)
        elif kind == descriptor.FieldDescriptor.TYPE_ENUM:
            enum_value = field.enum_type.values_by_number.get(value)
            self.out.append(_quote(enum_value.name) if enum_value else str(value))
        elif kind in _QUOTED_INTEGERS:
            self.out.append(f'"{value}"')
        elif kind == descriptor.FieldDescriptor.TYPE_BOOL:
            self.out.append("true" if value else "false")
        elif kind == descriptor.FieldDescriptor.TYPE_STRING:
            self.out.append(_quote(value))
        elif kind == descriptor.FieldDescriptor.TYPE_BYTES:
            self.out.append('"' + base64.b64encode(value).decode("ascii") + '"')
        elif kind in (
            descriptor.FieldDescriptor.TYPE_FLOAT,
            descriptor.FieldDescriptor.TYPE_DOUBLE,
        ):
            self.out.append(_float_text(value))
        else:
            self.out.append(str(value))

    def message(self, message: Message) -> None:
        desc = message.DESCRIPTOR
        if desc.full_name in _WRAPPERS:
            self.scalar(desc.fields_by_name["value"], message.value)
            return
        self.out.append("{")
        self.indent += 1
        first = True
        for field in sorted(desc.fields, key=lambda f: f.number):
            is_map = (
                field.type == descriptor.FieldDescriptor.TYPE_MESSAGE
                and field.message_type.GetOptions().map_entry
            )
            repeated = field.is_repeated
            if not repeated and field.has_presence and not message.HasField(field.name):
                continue
            self.out.append("" if first else ",")
            first = False
            self.newline()
            name = field.name if self.preserve_names else field.json_name
            self.out.append(_quote(name) + ": ")
            value = getattr(message, field.name)
            if is_map:
                self.map(field, value)
            elif repeated:
                self.repeated(field, value)
            else:
                self.scalar(field, value)
        self.indent -= 1
        if not first:
            self.newline()
        self.out.append("}")

    def repeated(self, field: descriptor.FieldDescriptor, values: Any) -> None:
        self.out.append("[")
        self.indent += 1
        for index, value in enumerate(values):
            self.out.append("" if index == 0 else ",")
            self.newline()
            self.scalar(field, value)
        self.indent -= 1
        if len(values):
            self.newline()
        self.out.append("]")

    def map(self, field: descriptor.FieldDescriptor, mapping: Any) -> None:
        value_field = field.message_type.fields_by_name["value"]
        self.out.append("{")
        self.indent += 1
        keys = sorted(mapping)
        for index, key in enumerate(keys):
            self.out.append("" if index == 0 else ",")
            self.newline()
            self.out.append(_quote(str(key).lower() if isinstance(key, bool) else str(key)))
            self.out.append(": ")
            self.scalar(value_field, mapping[key])
        self.indent -= 1
        if keys:
            self.newline()
        self.out.append("}")


def message_to_json(message: Message, *, preserve_proto_field_names: bool = False) -> str:
    """One message in TF Serving's REST layout, with the trailing newline of a root value."""
    printer = _Printer(preserve_proto_field_names)
    printer.message(message)
    return "".join(printer.out) + "\n"


def metadata_to_json(model_spec: Message, signature_def_map: Message) -> str:
    """The hand-assembled GetModelMetadata body of `http_rest_api_util.cc` ToJsonString."""
    spec = message_to_json(model_spec, preserve_proto_field_names=True)
    signatures = message_to_json(signature_def_map, preserve_proto_field_names=True)
    return (
        "{\n"
        + '"model_spec":'
        + spec
        + ",\n"
        + '"metadata": {'
        + '"signature_def": '
        + signatures
        + "}\n"
        + "}\n"
    )
