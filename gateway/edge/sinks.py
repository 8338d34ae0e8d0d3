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
import random
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import aiohttp
import orjson

from gateway.config.webhooks import SALE_OR_SHARE, SinkConfigError, WebhookTarget

__all__ = ["EventSinks", "SinkStats", "minimise_event"]


logger = logging.getLogger("jurisgate.sinks")

# Personal-data categories, as the vocabulary spells them.
_CATEGORY: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Tokens that leave the gateway: no '@', spaces or quotes, so an e-mail address, a phrase
# or a JSON fragment can never pass for a tenant id or a rule id.
_TOKEN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_EFFECTS: Final = frozenset({"allow", "deny", "transform"})
_MAX_LIST: Final = 256


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
