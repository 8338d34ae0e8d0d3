"""TF Serving's error answers: its JSON error body and libevent's HTML pages.

`error_body` writes `{"error": message}` in TF Serving's layout (rapidjson PrettyWriter,
4-space indent, upper-case `\\u00XX` escapes, UTF-8 written unescaped); the gateway may append
members after `error` (TF Serving clients read only `error`). `TfsError` is a whole answer TF
Serving would give to a request it does not execute.

Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from gateway.tfserving.jsonwrite import encode_text, json_string, scalar_token

__all__ = [
    "ERROR_CONTENT_TYPE",
    "HTML_CONTENT_TYPE",
    "TfsError",
    "error_body",
    "libevent_error",
    "libevent_error_page",
    "tfs_error",
]

ERROR_CONTENT_TYPE: Final = "application/json"
HTML_CONTENT_TYPE: Final = "text/html"

_REASON_PHRASES: Final = {400: "Bad Request", 404: "Not Found", 501: "Not Implemented"}


@dataclass(frozen=True, slots=True)
class TfsError:
    """A response TF Serving itself would send for a request it does not execute.

    `reason` is a short stable code for logs, metrics and audit records: `not_found` (non-/v1
    target, HTML page), `method_not_implemented` (HTML page), `malformed`, `missing_model`,
    `bad_version`, `options_allowed` (status 200) and `options_refused`.
    `content_type` is None when TF Serving sets none (OPTIONS). `close_connection` is set when
    libevent closes the connection after the response (its HTML error pages). `model` is the
    decoded model name when the target named one (for per-model request counts; not part of
    the answer, so not compared).
    """

    status: int
    content_type: str | None
    body: bytes
    reason: str
    message: str
    close_connection: bool = False
    model: str = field(default="", compare=False)


def error_body(message: str, **extra: str | int | bool | None) -> bytes:
    """A TF Serving error body: `{"error": message}` in TF Serving's layout, then `extra` members.

    >>> error_body("Servable not found")
    b'{\\n    "error": "Servable not found"\\n}'

    Extra members (for example `decision_id`) follow `error` in keyword order, so TF Serving
    clients, which read only `error`, keep working.
    """
    members = [("error", message), *extra.items()]
    lines = ",\n".join(f"    {json_string(key)}: {scalar_token(value)}" for key, value in members)
    return encode_text("{\n" + lines + "\n}")


def tfs_error(
    status: int, message: str, *, reason: str = "error", **extra: str | int | bool | None
) -> TfsError:
    """A JSON `TfsError` with TF Serving's error body (for gateway-made errors too)."""
    return TfsError(status, ERROR_CONTENT_TYPE, error_body(message, **extra), reason, message)


def libevent_error_page(status: int) -> bytes:
    """The HTML page libevent's `evhttp_send_error(req, status, NULL)` writes."""
    phrase = _REASON_PHRASES[status]
    return (
        f"<HTML><HEAD>\n<TITLE>{status} {phrase}</TITLE>\n</HEAD><BODY>\n<H1>{phrase}</H1>\n"
        "</BODY></HTML>\n"
    ).encode("ascii")


def libevent_error(status: int, reason: str, message: str) -> TfsError:
    """A `TfsError` holding libevent's HTML page (the connection is closed after it)."""
    return TfsError(
        status,
        HTML_CONTENT_TYPE,
        libevent_error_page(status),
        reason,
        message,
        close_connection=True,
    )
