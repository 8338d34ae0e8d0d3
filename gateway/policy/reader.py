"""`Reader`: typed reads of located YAML values, each failure a diagnostic at the value.

Rule 1: a read never raises for bad input; it records a diagnostic with the data path and
the location of the offending value or key, and returns None (or an empty value).
Rule 2: the diagnostic codes are `policy_schema_error` (a value of the wrong shape) and
`policy_type_error` (a value of the wrong type).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.errors import Diagnostic, Location, describe_value, did_you_mean
from gateway.policy.codes import SHAPE, TYPE
from gateway.source import DataPath, LoadedDocument

__all__ = [
    "HEADER_NAME",
    "parse_time",
    "Reader",
    "expected_keys",
    "one_of",
    "quoted_list",
]


#: An HTTP header name (RFC 9110 token).
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def parse_time(value: object) -> dt.date | dt.datetime | None:
    """Parse a date or RFC 3339 date-time (YAML-decoded or string); naive means UTC."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value)
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


class Reader:
    """Typed, located accessors over a `LoadedDocument` that collect diagnostics."""

    def __init__(self, doc: LoadedDocument) -> None:
        self.doc = doc
        self.diagnostics: list[Diagnostic] = []

    def loc(self, path: DataPath) -> Location:
        """Location of the value at `path`."""
        return self.doc.location(path)

    def error(
        self,
        code: str,
        message: str,
        path: DataPath,
        *,
        help: str | None = None,
        at_key: bool = False,
        severity: str = "error",
    ) -> None:
        """Record a diagnostic at `path`."""
        self.diagnostics.append(
            self.doc.diagnostic(code, message, path, help=help, at_key=at_key, severity=severity)
        )

    def type_error(
        self, path: DataPath, expected: str, value: object, what: str | None = None
    ) -> None:
        """Record a wrong-type diagnostic (with YAML 1.1 help where it applies)."""
        self.diagnostics.append(self.doc.type_error(path, expected, value, what=what, code=TYPE))

    def mapping(
        self,
        value: object,
        path: DataPath,
        *,
        what: str,
        required: Iterable[str] = (),
        optional: Iterable[str] = (),
    ) -> dict[str, Any] | None:
        """Check `value` is a mapping with only known keys and all required ones."""
        if not isinstance(value, dict):
            self.type_error(path, "a mapping", value, what)
            return None
        req = tuple(required)
        known = (*req, *optional)
        for key in value:
            if key not in known:
                self.error(
                    SHAPE,
                    f"unknown key `{key}` in {what}",
                    (*path, key),
                    help=did_you_mean(key, known) or expected_keys(known),
                    at_key=True,
                )
        for key in req:
            if key not in value:
                self.error(SHAPE, f"{what} is missing `{key}`", path)
        return value

    def keyed(self, value: object, path: DataPath, what: str) -> dict[str, Any] | None:
        """Check `value` is a mapping keyed by names of the author's choosing (any key)."""
        return self.mapping(
            value, path, what=what, optional=tuple(value) if isinstance(value, dict) else ()
        )

    def string(
        self,
        value: object,
        path: DataPath,
        what: str,
        *,
        choices: Iterable[str] = (),
        pattern: re.Pattern[str] | None = None,
        pattern_help: str | None = None,
    ) -> str | None:
        """Check `value` is a non-empty string (one of `choices` when given)."""
        if not isinstance(value, str):
            self.type_error(path, "a string", value, what)
            return None
        if not value.strip():
            self.error(SHAPE, f"{what} must not be empty", path)
            return None
        options = tuple(choices)
        if options and value not in options:
            self.error(
                SHAPE,
                f"unknown {what} `{value}`",
                path,
                help=did_you_mean(value, options) or one_of(options),
            )
            return None
        if pattern is not None and not pattern.match(value):
            self.error(SHAPE, f"invalid {what} `{value}`", path, help=pattern_help)
            return None
        return value

    def optional_string(
        self, data: Mapping[str, Any], key: str, path: DataPath, what: str
    ) -> str | None:
        """Read an optional string member."""
        if key not in data or data[key] is None:
            return None
        return self.string(data[key], (*path, key), what)

    def integer(
        self,
        value: object,
        path: DataPath,
        what: str,
        *,
        minimum: int | None = None,
        choices: Iterable[int] = (),
    ) -> int | None:
        """Check `value` is an integer (not a boolean), optionally bounded or enumerated."""
        if not isinstance(value, int) or isinstance(value, bool):
            self.type_error(path, "an integer", value, what)
            return None
        options = tuple(choices)
        if options and value not in options:
            self.error(SHAPE, f"{what} must be one of {quoted_list(options)}, got `{value}`", path)
            return None
        if minimum is not None and value < minimum:
            self.error(SHAPE, f"{what} must be at least {minimum}, got `{value}`", path)
            return None
        return value

    def boolean(self, value: object, path: DataPath, what: str) -> bool | None:
        """Check `value` is a boolean."""
        if not isinstance(value, bool):
            self.type_error(path, "a boolean", value, what)
            return None
        return value

    def time(self, value: object, path: DataPath, what: str) -> dt.date | dt.datetime | None:
        """Read a date (`2025-02-02`) or an RFC 3339 date-time."""
        parsed = parse_time(value)
        if parsed is None:
            self.error(
                TYPE,
                f"{what} must be a date (YYYY-MM-DD) or an RFC 3339 time, "
                f"got {describe_value(value)}",
                path,
            )
        return parsed

    def date(self, value: object, path: DataPath, what: str) -> dt.date | None:
        """Read a calendar date."""
        parsed = parse_time(value)
        if parsed is None or isinstance(parsed, dt.datetime):
            self.error(
                TYPE, f"{what} must be a date (YYYY-MM-DD), got {describe_value(value)}", path
            )
            return None
        return parsed

    def string_list(
        self, value: object, path: DataPath, what: str, *, allow_empty: bool = True
    ) -> list[str]:
        """Read a list of strings (a single string is not accepted: write `[x]`)."""
        if not isinstance(value, list):
            self.type_error(path, "a list", value, what)
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            text = self.string(item, (*path, i), what + " entry")
            if text is not None:
                out.append(text)
        if not value and not allow_empty:
            self.error(SHAPE, f"{what} must not be empty", path)
        return out

    def listing(self, value: object, path: DataPath, what: str) -> list[Any]:
        """Check `value` is a list."""
        if not isinstance(value, list):
            self.type_error(path, "a list", value, what)
            return []
        return value


def quoted_list(options: Iterable[object]) -> str:
    """Options as a comma-separated list of code spans."""
    return ", ".join(f"`{o}`" for o in options)


def one_of(options: Iterable[object]) -> str:
    """Help text naming the allowed options."""
    return f"use one of {quoted_list(options)}"


def expected_keys(known: Iterable[str]) -> str | None:
    """Help text naming the keys a mapping may hold (None when it holds none)."""
    keys = tuple(known)
    return f"expected one of {quoted_list(keys)}" if keys else None
