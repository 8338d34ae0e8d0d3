"""Strict, located YAML loading shared by the policy loader and the gateway configuration.

Rule 1: the result is plain data (dict, list, str, int, float, bool, None, and
`datetime.date`/`datetime.datetime` for YAML timestamps) plus a map from every data path to
where it was written, so any later check can point at `file:line:col`.
Rule 2: the loader refuses what YAML accepts silently and people rarely mean: duplicate
keys, non-string mapping keys (`NO:` is the boolean false), merge keys, custom tags,
non-finite numbers, several documents in one file, and alias expansion beyond a budget
(the "billion laughs" shape). Parse errors never raise; they become diagnostics.
Rule 3: YAML 1.1 coercions in *string slots* (`NO` -> false, `1.10` -> 1.1, `2025-02-02` ->
a date) cannot be judged here because the loader does not know the schema; instead
`LoadedDocument.type_error` builds the diagnostic with a "quote it" help when the consumer
finds a non-string where it wanted a string.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import Diagnostic, Location, describe_value

__all__ = [
    "DataPath",
    "LoadedDocument",
    "NodeInfo",
    "SourceLimits",
    "format_path",
    "load_yaml",
]

#: A path into decoded data: mapping keys and list indexes.
DataPath = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class SourceLimits:
    """Budgets that keep hostile or accidental inputs cheap to reject."""

    max_bytes: int = 4 * 1024 * 1024
    #: Nodes visited while expanding aliases; a document without aliases visits each once.
    max_nodes: int = 200_000
    max_depth: int = 64


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Where a value was written and how: enough to explain a YAML 1.1 surprise."""

    location: Location
    key_location: Location | None
    tag: str
    #: True for an unquoted scalar (the only kind YAML 1.1 re-types).
    plain: bool
    #: The scalar's source text (None for mappings and lists).
    raw: str | None


@dataclass(slots=True)
class LoadedDocument:
    """The outcome of loading one YAML source.

    `data` is None when loading failed (see `diagnostics`) or the document was empty
    (`empty` is then True).
    """

    filename: str
    text: str
    data: Any = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    empty: bool = False
    nodes: dict[DataPath, NodeInfo] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the document loaded without errors."""
        return not any(d.severity == "error" for d in self.diagnostics)

    def node(self, path: DataPath) -> NodeInfo | None:
        """Return what is known about the node at `path`, if it exists."""
        return self.nodes.get(tuple(path))

    def location(self, path: DataPath) -> Location:
        """Location of the value at `path`, or of its nearest existing ancestor."""
        probe = tuple(path)
        while True:
            info = self.nodes.get(probe)
            if info is not None:
                return info.location
            if not probe:
                return Location(self.filename, 1, 1)
            probe = probe[:-1]

    def key_location(self, path: DataPath) -> Location:
        """Location of the mapping key that introduces `path` (falls back to the value)."""
        info = self.nodes.get(tuple(path))
        if info is not None and info.key_location is not None:
            return info.key_location
        return self.location(path)

    def diagnostic(
        self,
        code: str,
        message: str,
        path: DataPath,
        *,
        help: str | None = None,
        at_key: bool = False,
        severity: Any = "error",
    ) -> Diagnostic:
        """Build a diagnostic located at `path` in this document."""
        loc = self.key_location(path) if at_key else self.location(path)
        return Diagnostic(code, message, loc, format_path(path), help, severity)

    def type_error(
        self,
        path: DataPath,
        expected: str,
        value: object,
        *,
        what: str | None = None,
        code: str = "type_error",
    ) -> Diagnostic:
        """Diagnose a value of the wrong type, explaining YAML 1.1 re-typing when it applies.

        `expected` reads like "a string" or "an integer"; `what` names the slot (defaults to
        the last path element).
        """
        slot = what if what is not None else (str(path[-1]) if path else "value")
        message = f"{slot} must be {expected}, got {describe_value(value)}"
        return self.diagnostic(code, message, path, help=yaml11_help(self.node(path), value))


def yaml11_help(info: NodeInfo | None, value: object) -> str | None:
    """Explain how an unquoted scalar was re-typed by YAML 1.1, with the quoted fix."""
    if info is None or not info.plain or info.raw is None or isinstance(value, str):
        return None
    raw = info.raw
    if not raw.strip():
        # `obligations:` with nothing after the colon: there is nothing to quote.
        return (
            "nothing follows the key, so YAML reads it as null; write a value (`{}` for an "
            "empty mapping, `[]` for an empty list) or remove the key"
        )
    if info.tag == _BOOL:
        kind = "true" if value else "false"
    elif info.tag == _NULL:
        kind = "null"
    elif info.tag in (_INT, _FLOAT):
        kind = f"the number {value}"
    elif info.tag == _TIMESTAMP:
        kind = "a date"
    else:
        return None
    return f'YAML 1.1 reads {raw} as {kind}; quote it: "{raw}"'


def format_path(path: DataPath) -> str:
    """Render a data path as `rules[1].when.region` (the form diagnostics carry)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class _Budget(Exception):
    """Raised internally when the expansion or depth budget is exhausted."""


class _Decoder:
    """Walk a composed node graph into plain data while recording locations."""

    def __init__(self, doc: LoadedDocument, limits: SourceLimits) -> None:
        self.doc = doc
        self.limits = limits
        self.visited = 0
        self.active: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def loc(self, mark: Any) -> Location:
        return Location(self.doc.filename, mark.line + 1, mark.column + 1)

    def error(
        self, code: str, message: str, mark: Any, path: DataPath, help: str | None = None
    ) -> None:
        self.doc.diagnostics.append(
            Diagnostic(code, message, self.loc(mark), format_path(path), help)
        )

    def decode(self, node: Any, path: DataPath, key_loc: Location | None, depth: int) -> Any:
        self.visited += 1
        if self.visited > self.limits.max_nodes:
            self.error(
                "yaml_alias_expansion",
                f"document expands to more than {self.limits.max_nodes} nodes",
                node.start_mark,
                path,
                "anchors and aliases multiply the data; write the values out or shrink them",
            )
            raise _Budget
        if depth > self.limits.max_depth:
            self.error(
                "yaml_too_deep",
                f"nesting deeper than {self.limits.max_depth} levels",
                node.start_mark,
                path,
            )
            raise _Budget
        if id(node) in self.active:
            self.error(
                "yaml_recursive_alias",
                "an alias refers to a node that contains it",
                node.start_mark,
                path,
            )
            raise _Budget
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path, key_loc)
        plain = False
        info = NodeInfo(self.loc(node.start_mark), key_loc, node.tag, plain, None)
        self.doc.nodes[path] = info
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ:
                    self.error(
                        "yaml_tag_error", f"unsupported tag `{node.tag}`", node.start_mark, path
                    )
                return [
                    self.decode(item, (*path, i), None, depth + 1)
                    for i, item in enumerate(node.value)
                ]
            if node.tag != _MAP:
                self.error("yaml_tag_error", f"unsupported tag `{node.tag}`", node.start_mark, path)
            return self.mapping(node, path, depth)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: Any, path: DataPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_seen: dict[str, Location] = {}
        for key_node, value_node in node.value:
            key_loc = self.loc(key_node.start_mark)
            if key_node.tag == _MERGE:
                self.error(
                    "yaml_merge_key",
                    "merge keys (`<<`) are not supported",
                    key_node.start_mark,
                    path,
                    "write the keys out in full",
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(
                    "yaml_key_type",
                    "mapping key must be a string, got a collection",
                    key_node.start_mark,
                    path,
                )
                continue
            key = self.construct(key_node, path)
            if not isinstance(key, str):
                raw = key_node.value
                info = NodeInfo(key_loc, None, key_node.tag, _is_plain(key_node), raw)
                self.error(
                    "yaml_key_type",
                    f"mapping key must be a string, got {describe_value(key)}",
                    key_node.start_mark,
                    path,
                    yaml11_help(info, key),
                )
                key = str(raw)
            if key in first_seen:
                first = first_seen[key]
                self.error(
                    "yaml_duplicate_key",
                    f"duplicate key `{key}`",
                    key_node.start_mark,
                    (*path, key),
                    f"`{key}` is first set at line {first.line}; keep one",
                )
                continue
            first_seen[key] = key_loc
            out[key] = self.decode(value_node, (*path, key), key_loc, depth + 1)
        return out

    def scalar(self, node: Any, path: DataPath, key_loc: Location | None) -> Any:
        plain = _is_plain(node)
        self.doc.nodes[path] = NodeInfo(
            self.loc(node.start_mark), key_loc, node.tag, plain, node.value
        )
        return self.construct(node, path)

    def construct(self, node: Any, path: DataPath) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag not in (_NULL, _BOOL, _INT, _FLOAT, _TIMESTAMP):
            self.error(
                "yaml_tag_error",
                f"unsupported tag `{tag}`",
                node.start_mark,
                path,
                "only plain YAML data is accepted (strings, numbers, booleans, "
                "null, dates, lists and mappings)",
            )
            return node.value
        try:
            value = self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            self.error(
                "yaml_value_error",
                f"cannot read `{node.value}`: {_first_line(exc)}",
                node.start_mark,
                path,
            )
            return node.value
        if isinstance(value, float) and not math.isfinite(value):
            self.error(
                "yaml_value_error",
                f"non-finite number `{node.value}`",
                node.start_mark,
                path,
                "JSON has no NaN or infinity; use a string",
            )
            return node.value
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value


def _is_plain(node: Any) -> bool:
    # The C loader reports plain scalars with style '', the Python loader with None.
    return node.style in (None, "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_yaml(
    source: Path | str | bytes,
    filename: str | None = None,
    *,
    limits: SourceLimits | None = None,
) -> LoadedDocument:
    """Load one YAML document strictly, never raising for bad input.

    `source` is a `Path` (read from disk), or the document text itself (`str` or `bytes`);
    `filename` is the name diagnostics carry (defaults to the path, or `<input>`).
    """
    limits = limits or SourceLimits()
    if isinstance(source, Path):
        name = filename or str(source)
        try:
            raw = source.read_bytes()
        except OSError as exc:
            doc = LoadedDocument(name, "")
            reason = exc.strerror or type(exc).__name__
            doc.diagnostics.append(
                Diagnostic("io_error", f"cannot read file: {reason.lower()}", Location(name))
            )
            return doc
    else:
        name = filename or "<input>"
        raw = source.encode("utf-8") if isinstance(source, str) else source
    doc = LoadedDocument(name, "")
    if len(raw) > limits.max_bytes:
        doc.diagnostics.append(
            Diagnostic(
                "yaml_too_large", f"file is larger than {limits.max_bytes} bytes", Location(name)
            )
        )
        return doc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        doc.diagnostics.append(
            Diagnostic(
                "yaml_encoding_error", f"file is not UTF-8 (byte {exc.start})", Location(name)
            )
        )
        return doc
    doc.text = text
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        doc.diagnostics.append(Diagnostic("yaml_syntax_error", problem, loc))
        return doc
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        doc.diagnostics.append(
            Diagnostic("yaml_syntax_error", _first_line(exc).lower(), Location(name))
        )
        return doc
    if not nodes:
        doc.empty = True
        return doc
    if len(nodes) > 1:
        second = nodes[1].start_mark
        doc.diagnostics.append(
            Diagnostic(
                "yaml_multiple_documents",
                "more than one YAML document in one file",
                Location(name, second.line + 1, second.column + 1),
                None,
                "keep one document per file (remove the `---` separator)",
            )
        )
        return doc
    decoder = _Decoder(doc, limits)
    try:
        data = decoder.decode(nodes[0], (), None, 0)
    except (_Budget, RecursionError):
        doc.nodes.clear()
        return doc
    if doc.ok:
        doc.data = data
    return doc
