"""The value types of the configuration model: URLs, CIDRs, regions, ports, durations, ids.

Each type carries its pattern or bound and, where a pattern is not enough, a validator whose
error names the value (`_cidr`, `_http_url`, ...). The section models in `model` use them.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from gateway.audit.errors import KeyLoadError
from gateway.audit.witness import CosignerKey

#: TF Serving answers a REST call that outlives its own 30 s limit itself; the gateway waits
#: longer so a slow model yields TF Serving's answer, not a race between two 504 bodies.
DEFAULT_READ_S = 40.0

_REGION_PATTERN = r"^([A-Z]{2}(-[A-Z0-9]{1,3})?|[A-Z]{2,6})$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_PATTERN = r"^[A-Za-z0-9._-]+$"
_HEADER_PATTERN = r"^[A-Za-z0-9-]+$"
CATEGORY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
GRPC_ADDRESS_PATTERN = r"^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"


def _http_url(value: str) -> str:
    """An http(s) URL with a host, and nothing a request path could not be appended to."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise PydanticCustomError("url", "`{value}` is not a valid URL", {"value": value}) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError(
            "url", "`{value}` must be an http:// or https:// URL with a host", {"value": value}
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise PydanticCustomError(
            "url",
            "`{value}` must not carry a query, a fragment or credentials",
            {"value": value},
        )
    if port == 0:
        raise PydanticCustomError("url", "`{value}` names port 0", {"value": value})
    return value.rstrip("/")


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise PydanticCustomError(
            "cidr", "`{value}` is not a network in CIDR form", {"value": value}
        ) from None
    return value


def valid_witness_key(value: str) -> str:
    """`value` when it is a witness verifier key (a C2SP note vkey); a located error otherwise."""
    try:
        CosignerKey.from_vkey(value)
    except KeyLoadError as exc:
        raise PydanticCustomError(
            "witness_key", "bad witness verifier key: {reason}", {"reason": str(exc)}
        ) from None
    return value


def valid_category(value: str) -> str:
    """`value` unless it is `sale_or_share` (a flag, `is_sale_or_share`): then a located error."""
    if value == "sale_or_share":
        raise PydanticCustomError(
            "category", "`sale_or_share` is set with `is_sale_or_share: true`, not as a category"
        )
    return value


HttpUrl = Annotated[str, Field(pattern=r"^https?://"), AfterValidator(_http_url)]
Cidr = Annotated[str, AfterValidator(_cidr)]
Region = Annotated[str, Field(pattern=_REGION_PATTERN)]
Port = Annotated[int, Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Header = Annotated[str, Field(pattern=_HEADER_PATTERN)]


class Section(BaseModel):
    """A mapping of settings: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def unique_ids(items: list[Any], what: str) -> None:
    """Raise a located error when two of `items` share an id."""
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.id in seen:
            raise PydanticCustomError(
                "duplicate_id",
                "{what} id `{id}` is used twice",
                {"what": what, "id": item.id, "at": (index, "id")},
            )
        seen.add(item.id)
