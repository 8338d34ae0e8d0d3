"""Located diagnostics and the gateway's error tree.

Rule 1: every mistake a person can fix in a file is reported as a `Diagnostic` that names
the file, line and column, a stable code, a lowercase message with user input in backticks
and, where we can guess the fix, a `help` line.
Rule 2: diagnostics are collected (not raised one by one), sorted by location and capped, so
a single run shows every problem in reading order.

Text form::

    policies/privacy/gdpr.yaml:5:13: policy_schema_error: unknown effect `alow`
      help: did you mean `allow`?

JSON form: ``{"code", "message", "severity", "file", "line", "col", "path", "help"}``.
"""

from __future__ import annotations

import difflib
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "describe_exception",
    "DEFAULT_DIAGNOSTIC_CAP",
    "Diagnostic",
    "DiagnosticError",
    "GatewayError",
    "Location",
    "Severity",
    "describe_value",
    "did_you_mean",
    "format_diagnostics",
    "has_errors",
    "sort_diagnostics",
]

#: How many diagnostics a report shows before summarising the rest (OPA caps at 10 too).
DEFAULT_DIAGNOSTIC_CAP = 10

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True, slots=True)
class Location:
    """A 1-based position in a named source (a file path or a label such as `<context>`)."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        if self.col <= 0:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a file, with where it is and how to fix it.

    `path` is the data path inside the document (for example `rules[1].when.region`); it
    stays meaningful when the location is unknown (data that did not come from a file).
    """

    code: str
    message: str
    location: Location | None = None
    path: str | None = None
    help: str | None = None
    severity: Severity = "error"

    def text(self) -> str:
        """Render as `file:line:col: code: message`, plus an indented `help:` line."""
        where = str(self.location) if self.location is not None else (self.path or "<input>")
        head = f"{where}: {self.code}: {self.message}"
        if self.severity == "warning":
            head += " (warning)"
        if self.help:
            return f"{head}\n  help: {self.help}"
        return head

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (all fields, nulls included, so consumers see a fixed shape)."""
        loc = self.location
        return {
            "code": self.code,
            "message": self.message,
            "severity": self.severity,
            "file": loc.file if loc else None,
            "line": loc.line if loc and loc.line > 0 else None,
            "col": loc.col if loc and loc.col > 0 else None,
            "path": self.path,
            "help": self.help,
        }

    def sort_key(self) -> tuple[str, int, int, str, str]:
        """Order by file, line, column, then code and message (stable, reading order)."""
        loc = self.location or Location("")
        return (loc.file, loc.line, loc.col, self.code, self.message)


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Return the diagnostics sorted by location with exact duplicates removed."""
    unique = dict.fromkeys(diagnostics)
    return sorted(unique, key=Diagnostic.sort_key)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    """True when at least one diagnostic is an error (warnings alone do not fail a load)."""
    return any(d.severity == "error" for d in diagnostics)


def format_diagnostics(
    diagnostics: Sequence[Diagnostic], *, cap: int | None = DEFAULT_DIAGNOSTIC_CAP
) -> str:
    """Render sorted diagnostics as text, at most `cap` of them plus a count of the rest."""
    ordered = sort_diagnostics(diagnostics)
    shown = ordered if cap is None else ordered[:cap]
    lines = [d.text() for d in shown]
    hidden = len(ordered) - len(shown)
    if hidden > 0:
        lines.append(f"... and {hidden} more diagnostic{'s' if hidden != 1 else ''}")
    return "\n".join(lines)


def did_you_mean(word: object, candidates: Iterable[str]) -> str | None:
    """Return a `did you mean ...?` help text for the closest candidate, if one is close."""
    if not isinstance(word, str):
        return None
    options = list(candidates)
    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not matches:
        lowered = {o.lower(): o for o in options}
        if word.lower() in lowered:
            matches = [lowered[word.lower()]]
    if not matches:
        return None
    return f"did you mean `{matches[0]}`?"


def describe_value(value: object) -> str:
    """Describe a decoded value for a message: its JSON type name and a short rendering."""
    kind = _type_name(value)
    rendered = _render(value)
    return f"{kind} `{rendered}`" if rendered else kind


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _render(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return ""
    text = str(value).replace("\n", " ").replace("`", "'")
    return text if len(text) <= 60 else text[:57] + "..."


class GatewayError(Exception):
    """Base of every error the gateway reports to a person or a client.

    `http_status` is the status a request-time occurrence maps to (a hint, in the spirit of
    h11's `error_status_hint`); `diagnostics()` lists the located problems behind it.
    """

    http_status: int = 500

    def diagnostics(self) -> list[Diagnostic]:
        """Return the located problems behind this error (may be empty)."""
        return []


class DiagnosticError(GatewayError):
    """An error that carries one or more diagnostics (for example a file that failed to load)."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self._diagnostics = sort_diagnostics(diagnostics)
        first = self._diagnostics[0].text() if self._diagnostics else "invalid input"
        super().__init__(first)

    def diagnostics(self) -> list[Diagnostic]:
        """Return the sorted diagnostics this error was raised with."""
        return list(self._diagnostics)


def describe_exception(exc: BaseException) -> str:
    """The type of `exc` and where it was raised (`file:line in function`), never its text.

    An exception's message may quote the input that caused it (a header value, a body
    fragment); its type and place are enough to find the bug.
    """
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if not frames:
        return name
    last = frames[-1]
    return f"{name} at {last.filename}:{last.lineno} in {last.name}"
