"""The configured receivers of decision events: one `WebhookTarget` per entry of `sinks`.

The configuration model validates the file; a target checks its values again when built
from a plain mapping (the scenario fixtures' recipients), with errors that name the setting.
Delivery is `gateway.edge.sinks`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from yarl import URL

__all__ = ["SALE_OR_SHARE", "SinkConfigError", "WebhookTarget"]

#: A suppressed category that stands for every sink flagged `is_sale_or_share`.
SALE_OR_SHARE: Final = "sale_or_share"

_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CATEGORY: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


class SinkConfigError(ValueError):
    """A sink setting has a bad value; the message names the setting and the value."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One webhook receiver of decision events."""

    id: str
    url: str
    category: str
    is_sale_or_share: bool = False
    tenant_opt_in: bool | None = None
    """Only events of tenants that name this sink; None means `is_sale_or_share`."""
    timeout_s: float = 2.0
    queue_size: int = 1000
    max_attempts: int = 4
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        where = f"sinks[{self.id}]"
        if not _ID.fullmatch(self.id):
            raise SinkConfigError(f"sinks[].id: must be a short identifier, got `{self.id}`")
        try:
            url = URL(self.url)
        except (TypeError, ValueError):
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise SinkConfigError(f"{where}.url: must be an http(s) URL, got `{self.url}`")
        if not _CATEGORY.fullmatch(self.category) or self.category == SALE_OR_SHARE:
            raise SinkConfigError(
                f"{where}.category: must be a snake_case category other than "
                f"`{SALE_OR_SHARE}`, got `{self.category}`"
            )
        for name in ("timeout_s", "backoff_initial_s", "backoff_max_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise SinkConfigError(f"{where}.{name}: must be a positive number, got `{value}`")
        for name in ("queue_size", "max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SinkConfigError(f"{where}.{name}: must be an integer >= 1, got `{value}`")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object], *, where: str = "sinks[]") -> WebhookTarget:
        """Build a spec from a config mapping such as the scenario fixtures' recipients."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SinkConfigError(f"{where}: unknown setting `{unknown[0]}`")
        values = dict(raw)
        for name in ("id", "url", "category"):
            if not isinstance(values.get(name), str):
                raise SinkConfigError(f"{where}.{name}: must be a string, got `{values.get(name)}`")
        for name in ("is_sale_or_share", "tenant_opt_in"):
            if name in values and not isinstance(values[name], bool | None):
                raise SinkConfigError(
                    f"{where}.{name}: must be true or false, got `{values[name]}`"
                )
        headers = values.pop("headers", {})
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise SinkConfigError(f"{where}.headers: must map header names to strings")
        return cls(headers=tuple(headers.items()), **values)  # type: ignore[arg-type]

    @property
    def needs_tenant_opt_in(self) -> bool:
        """True when only tenants that name this sink feed it (sale-or-share sinks default)."""
        return self.is_sale_or_share if self.tenant_opt_in is None else self.tenant_opt_in

    def context_entry(self) -> dict[str, object]:
        """The sink as the policy engine sees it in the request context (`sinks`)."""
        return {"id": self.id, "category": self.category, "is_sale_or_share": self.is_sale_or_share}
