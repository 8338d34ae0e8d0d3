"""Structured logs on stderr without personal data: JSON lines, or text on a terminal.

Fields passed with `extra=` (such as `decision_id`) become members of the JSON object (or
`key=value` pairs in text). Messages are written by the gateway's own code, which never logs
payloads, header values, API keys or client addresses; the formatter adds no request data of
its own.

Other libraries do: aiohttp's server quotes the bytes of a malformed request line and the
peer's address, its access log prints request lines and headers, and an exception's text
can quote anything it was handed. `RequestDataFilter` therefore keeps, for every logger that
is not the project's own, only the static message template (arguments dropped) and the type
and place of an exception (never its text or traceback lines); access-log records are dropped
(the audit log and the metrics count every request).
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Final, Literal

import orjson

from gateway.errors import describe_exception

__all__ = [
    "ACCESS_LOGGER",
    "JsonFormatter",
    "LogFormat",
    "RequestDataFilter",
    "TextFormatter",
    "configure_logging",
    "extra_fields",
]

#: `auto`: text when stderr is a terminal, JSON lines otherwise.
LogFormat = Literal["auto", "text", "json"]
#: The gateway's own access log (`logs.access: true`): no address, query or header values.
ACCESS_LOGGER: Final = "jurisgate.access"

#: Loggers whose messages the project writes itself and keeps free of request data.
_OWN_LOGGERS: Final = ("jurisgate", "gateway", "model_server")
_ACCESS_LOGGERS: Final = ("aiohttp.access",)
_PLACEHOLDER: Final = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdirfgexXco%]")
#: The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def extra_fields(record: logging.LogRecord) -> dict[str, object]:
    """The fields a call passed with `extra=`, in the order given."""
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class RequestDataFilter(logging.Filter):
    """Strip request data from the records of loggers that are not the project's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite `record` in place; drop access-log records."""
        name = record.name
        if name.startswith(_ACCESS_LOGGERS):
            return False
        if name.split(".", 1)[0] in _OWN_LOGGERS:
            return True
        # Another library's `extra=` fields may carry request data as well.
        for key in extra_fields(record):
            delattr(record, key)
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        if record.args:
            template = _PLACEHOLDER.sub("[redacted]", template)
        record.msg = template
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{template} ({describe_exception(record.exc_info[1])})"
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def _timestamp(record: logging.LogRecord) -> str:
    # isoformat, not strftime: it takes about half the time.
    moment = datetime.fromtimestamp(record.created, UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ts, level, logger, msg, the `extra=` fields (a
    field never replaces one of those four), and exc when present."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a JSON line."""
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Format a record as one line for people: `ts level logger: msg key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a text line."""
        fields = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure_logging(level: str = "INFO", fmt: LogFormat = "json") -> None:
    """Send every logger to stderr, request data stripped from other libraries' records:
    JSON lines, or text (`auto`: text when stderr is a terminal)."""
    text = fmt == "text" or (fmt == "auto" and sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
    handler.addFilter(RequestDataFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
