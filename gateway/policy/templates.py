"""Templates: strings with `${field.path}` placeholders (problem texts, headers, image-mark
fields, legal-basis references), rendered from the context.

A null, an empty list or an object has nothing to render: rendering raises `EvalError`
unless the caller gives the text to use instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway.policy.predicates import make_getter
from gateway.policy.state import EvalError, EvalState, Getter
from gateway.policy.vocabulary import Vocabulary

__all__ = [
    "Template",
    "compile_template",
    "render_value",
    "template_fields",
]

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


class Template:
    """A string with `${field.path}` placeholders, rendered from the context."""

    __slots__ = ("parts", "source", "fields", "fast")

    def __init__(self, source: str, parts: tuple[str | tuple[str, Getter], ...]) -> None:
        self.source = source
        self.parts = parts
        self.fields = tuple(p[0] for p in parts if isinstance(p, tuple))
        #: A generated renderer with the same result (set by `codegen.fast_template`).
        self.fast: Callable[[Mapping[str, Any], EvalState, str | None], str] | None = None

    def render(self, ctx: Mapping[str, Any], st: EvalState, *, null: str | None = None) -> str:
        """Render; a null or non-scalar value raises `EvalError` unless `null` is given."""
        if not self.fields:
            return self.source
        if self.fast is not None:
            return self.fast(ctx, st, null)
        return self.render_slowly(ctx, st, null)

    def render_slowly(self, ctx: Mapping[str, Any], st: EvalState, null: str | None) -> str:
        """The reference rendering (closures over the context)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, get = part
            out.append(render_value(get(ctx, st), name, null))
        return "".join(out)


def render_value(value: Any, name: str, null: str | None) -> str:
    """Render one template value: a scalar as text, a list of scalars comma-separated.

    A null, an empty list or an object has nothing to render: an `EvalError`, unless `null`
    gives the text to use instead.
    """
    if type(value) is tuple:  # the clock
        value = value[0].isoformat().replace("+00:00", "Z")
    if isinstance(value, list) and value and all(_scalar(v) for v in value):
        return ", ".join(render_value(v, name, null) for v in value)
    if value is None or isinstance(value, dict | list):
        if null is None:
            raise EvalError("template_value_missing", f"`${{{name}}}` has no value to render")
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and value is not None


def template_fields(source: str) -> list[str]:
    """The field paths a template string names."""
    return _PLACEHOLDER.findall(source)


def compile_template(source: str, vocabulary: Vocabulary) -> Template:
    """Split a template into literal text and field getters."""
    parts: list[str | tuple[str, Getter]] = []
    last = 0
    for match in _PLACEHOLDER.finditer(source):
        if match.start() > last:
            parts.append(source[last : match.start()])
        name = match.group(1)
        parts.append((name, make_getter(name, vocabulary)))
        last = match.end()
    if last < len(source):
        parts.append(source[last:])
    return Template(source, tuple(parts))
