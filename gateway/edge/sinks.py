"""Decision event sinks: data-minimised webhooks to a SIEM or analytics, off the request path.

Rules:

1. `EventSinks.emit` never waits and never fails for a receiver's sake: it queues the event
   and returns; one task per sink delivers, with retries and backoff. A receiver that is
   down or slow costs its own queue, nothing else.
2. A sink whose category the decision suppresses receives nothing for that request (an
   opt-out of sale or sharing, e.g. Global Privacy Control under CCPA 11 CCR 7025). The
   reserved category `sale_or_share` suppresses every sink flagged `is_sale_or_share`.
3. A sink that needs tenant opt-in only receives the events of tenants that name it (the
   tenant flag `share_request_events_with`); sale-or-share sinks need it unless configured
   otherwise.
4. Only allow-listed, token-shaped fields leave the gateway: decision id, time, tenant,
   model, method, purpose, effect, status, rule ids, categories of personal data and the
   policy revision. Anything else in the mapping handed to `emit` (payload values, client
   IPs, personal-data paths) is dropped, and so is any value that is not a plain token.
5. A full queue drops its oldest event and counts the drop; `close` drains the queues
   until a deadline, then abandons (and counts) what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import aiohttp
import orjson
from yarl import URL

__all__ = [
    "SALE_OR_SHARE",
    "EventSinks",
    "SinkConfigError",
    "WebhookTarget",
    "SinkStats",
    "minimise_event",
]

#: A suppressed category that stands for every sink flagged `is_sale_or_share`.
SALE_OR_SHARE: Final = "sale_or_share"

logger = logging.getLogger("jurisgate.sinks")

_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CATEGORY: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Tokens that leave the gateway: no '@', spaces or quotes, so an e-mail address, a phrase
# or a JSON fragment can never pass for a tenant id or a rule id.
_TOKEN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_EFFECTS: Final = frozenset({"allow", "deny", "transform"})
_MAX_LIST: Final = 256


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


@dataclass(slots=True)
class SinkStats:
    """Delivery counters of one sink."""

    delivered: int = 0
    failed: int = 0
    """Events given up on: a permanent error, or retries exhausted."""
    retries: int = 0
    dropped: int = 0
    """Events pushed out of a full queue (the oldest first)."""
    abandoned: int = 0
    """Events still queued or in flight when `close` reached its deadline."""
    queued: int = 0


def _token_list(value: object, pattern: re.Pattern[str]) -> list[str] | None:
    if not isinstance(value, list | tuple | frozenset | set):
        return None
    items = [v for v in value if isinstance(v, str) and pattern.fullmatch(v)]
    return (
        sorted(set(items))[:_MAX_LIST] if isinstance(value, set | frozenset) else items[:_MAX_LIST]
    )


def minimise_event(event: Mapping[str, object]) -> dict[str, object]:
    """The data-minimised event body: allow-listed fields with token-shaped values only.

    Reads `decision_id`, `time`, `tenant`, `model`, `method`, `purpose`, `policy_revision`,
    `effect`, `status`, `rule_ids` (or `rules`) and `personal_data_categories` (or
    `personal_data`); writes them under those first names, plus `"v": 1`.
    """
    body: dict[str, object] = {"v": 1}
    for name in ("decision_id", "time", "tenant", "model", "method", "purpose", "policy_revision"):
        value = event.get(name)
        if isinstance(value, str) and _TOKEN.fullmatch(value):
            body[name] = value
        elif name == "tenant" and value is None and name in event:
            body[name] = None  # an unknown keyless caller
    effect = event.get("effect")
    if effect in _EFFECTS:
        body["effect"] = effect
    status = event.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        body["status"] = status
    # `rules` and `personal_data` are the request context's names for the same lists.
    rule_ids = _token_list(event.get("rule_ids", event.get("rules")), _TOKEN)
    if rule_ids is not None:
        body["rule_ids"] = rule_ids
    categories = _token_list(
        event.get("personal_data_categories", event.get("personal_data")), _CATEGORY
    )
    if categories is not None:
        body["personal_data_categories"] = categories
    return body


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(eq=False, slots=True)
class _Sink:
    spec: WebhookTarget
    queue: asyncio.Queue[bytes]
    stats: SinkStats = field(default_factory=SinkStats)
    task: asyncio.Task[None] | None = None
    failing: bool = False


class EventSinks:
    """Queues decision events per sink and delivers them in the background.

    Owns one task per sink between `start()` and `close()`; the `ClientSession` belongs to
    the caller (the app's one session) and is never closed here.
    """

    def __init__(self, session: aiohttp.ClientSession, specs: Sequence[WebhookTarget]) -> None:
        ids = [s.id for s in specs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise SinkConfigError(f"sinks: duplicate id `{duplicates[0]}`")
        self._session = session
        self._sinks = [_Sink(spec, asyncio.Queue(maxsize=spec.queue_size)) for spec in specs]
        self._started = False
        self._closed = False

    @property
    def specs(self) -> tuple[WebhookTarget, ...]:
        """The configured sinks, in configuration order."""
        return tuple(s.spec for s in self._sinks)

    def context_entries(self) -> list[dict[str, object]]:
        """The `sinks` member of the request context."""
        return [s.spec.context_entry() for s in self._sinks]

    def stats(self) -> dict[str, SinkStats]:
        """A snapshot of every sink's counters, by sink id."""
        snapshot: dict[str, SinkStats] = {}
        for sink in self._sinks:
            snapshot[sink.spec.id] = replace(sink.stats, queued=sink.queue.qsize())
        return snapshot

    def start(self) -> None:
        """Start one delivery task per sink (call from the running event loop)."""
        if self._started or self._closed:
            return
        self._started = True
        for sink in self._sinks:
            sink.task = asyncio.create_task(self._run(sink), name=f"event-sink-{sink.spec.id}")

    def emit(
        self,
        event: Mapping[str, object],
        *,
        suppressed_categories: frozenset[str],
        suppressed_sinks: Collection[str] = (),
        shared_with: Collection[str] = (),
    ) -> list[str]:
        """Queue a decision event; return the ids of the sinks that will receive it.

        `suppressed_categories` and `suppressed_sinks` (ids) come from the decision's
        obligations (add `SALE_OR_SHARE` for its `sale_or_share` flag); `shared_with` is the
        tenant's list of sinks it chose to share events with (`share_request_events_with`).
        """
        if self._closed:
            return []
        recipients = [
            s
            for s in self._sinks
            if self._receives(s.spec, suppressed_categories, suppressed_sinks, shared_with)
        ]
        if not recipients:
            return []
        body = orjson.dumps(minimise_event(event))
        for sink in recipients:
            try:
                sink.queue.put_nowait(body)
            except asyncio.QueueFull:
                sink.queue.get_nowait()
                sink.queue.task_done()
                sink.stats.dropped += 1
                sink.queue.put_nowait(body)
        return [s.spec.id for s in recipients]

    async def close(self, deadline: float = 5.0) -> None:
        """Stop accepting events, deliver what is queued until `deadline` seconds, then stop."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline):
                    await asyncio.gather(*(s.queue.join() for s in self._sinks))
        tasks = [s.task for s in self._sinks if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sink in self._sinks:
            sink.stats.abandoned += sink.queue.qsize()
            while not sink.queue.empty():
                sink.queue.get_nowait()
                sink.queue.task_done()
            if sink.stats.abandoned:
                logger.warning(
                    "event sink %s: %d event(s) abandoned at shutdown",
                    sink.spec.id,
                    sink.stats.abandoned,
                )

    @staticmethod
    def _receives(
        spec: WebhookTarget,
        suppressed: frozenset[str],
        suppressed_sinks: Collection[str],
        shared_with: Collection[str],
    ) -> bool:
        if spec.category in suppressed or spec.id in suppressed_sinks:
            return False
        if spec.is_sale_or_share and SALE_OR_SHARE in suppressed:
            return False
        return not spec.needs_tenant_opt_in or spec.id in shared_with

    async def _run(self, sink: _Sink) -> None:
        while True:
            body = await sink.queue.get()
            try:
                await self._deliver(sink, body)
            except asyncio.CancelledError:
                sink.stats.abandoned += 1  # cancelled in flight by `close`
                raise
            finally:
                sink.queue.task_done()

    async def _deliver(self, sink: _Sink, body: bytes) -> None:
        spec = sink.spec
        delay = spec.backoff_initial_s
        for attempt in range(1, spec.max_attempts + 1):
            outcome, reason = await self._post(spec, body)
            if outcome is _Outcome.DELIVERED:
                sink.stats.delivered += 1
                if sink.failing:
                    sink.failing = False
                    logger.info("event sink %s: delivering again", spec.id)
                return
            if not sink.failing:
                # Logged once per outage rather than once per event.
                sink.failing = True
                logger.warning("event sink %s: delivery failing (%s)", spec.id, reason)
            if outcome is _Outcome.FAILED or attempt == spec.max_attempts:
                sink.stats.failed += 1
                return
            sink.stats.retries += 1
            # Full jitter keeps several gateways from retrying a recovering receiver in step.
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, spec.backoff_max_s)

    async def _post(self, spec: WebhookTarget, body: bytes) -> tuple[_Outcome, str]:
        headers = {"Content-Type": "application/json", **dict(spec.headers)}
        try:
            # SECURITY: no redirects, so a receiver cannot bounce events to another host.
            async with self._session.post(
                spec.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
                allow_redirects=False,
            ) as response:
                status = response.status
        except TimeoutError:
            return _Outcome.RETRY, f"no answer within {spec.timeout_s} s"
        except aiohttp.ClientError as exc:
            return _Outcome.RETRY, type(exc).__name__
        if 200 <= status < 300:
            return _Outcome.DELIVERED, ""
        if status in (408, 425, 429) or status >= 500:
            return _Outcome.RETRY, f"HTTP {status}"
        return _Outcome.FAILED, f"HTTP {status}"
