"""Decision event sinks against real loopback receivers (pytest-aiohttp test servers)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from gateway.config.webhooks import SALE_OR_SHARE, SinkConfigError, WebhookTarget
from gateway.edge.sinks import EventSinks, minimise_event
from tests.plugins.gateway import free_port

ADTECH = "cross_context_behavioral_advertising"
EVENT = {
    "decision_id": "9b2f7a5e-0000-4000-8000-000000000001",
    "time": "2026-11-28T10:00:00Z",
    "tenant": "westmart-us",
    "model": "imgcls-resnet50",
    "method": "predict",
    "purpose": "product_catalog_tagging",
    "effect": "transform",
    "status": 200,
    "rule_ids": ["ccpa-gpc-opt-out", "gdpr-minimise-free-text"],
    "personal_data_categories": ["email", "phone"],
    "policy_revision": "sha256:0f3a",
}


@dataclass
class Receiver:
    """A webhook receiver: records bodies, answers from a script, can be held."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers in order, then 200
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def events(self) -> list[dict[str, object]]:
        return [json.loads(b) for b in self.bodies]


MakeReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> AsyncIterator[MakeReceiver]:
    made: list[Receiver] = []

    async def make(*, held: bool = False, statuses: tuple[int, ...] = ()) -> Receiver:
        state = Receiver(statuses=list(statuses))
        if not held:
            state.gate.set()

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            state.arrived.set()
            await state.gate.wait()
            state.bodies.append(body)
            status = state.statuses.pop(0) if state.statuses else 200
            return web.Response(status=status)

        app = web.Application()
        app.router.add_post("/events", handle)
        server = await aiohttp_server(app)
        state.url = str(server.make_url("/events"))
        made.append(state)
        return state

    yield make
    for state in made:  # let held handlers finish so the servers shut down cleanly
        state.gate.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _spec(sink_id: str, url: str, category: str = "security", **options: object) -> WebhookTarget:
    values: dict[str, object] = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, **options}
    return WebhookTarget.from_mapping({"id": sink_id, "url": url, "category": category, **values})


async def _until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for a condition the background tasks bring about (bounded, not a timing test)."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_events_are_delivered_minimised(
    receiver: MakeReceiver, session: aiohttp.ClientSession
) -> None:
    siem = await receiver()
    sinks = EventSinks(session, [_spec("siem", siem.url)])
    sinks.start()
    raw = {
        **EVENT,
        "client_ip": "192.0.2.10",
        "payload": {"note": "anna.schmidt@example.de"},
        "personal_data_paths": {"email": ["instances[0].note"]},
        "personal_data_categories": ["email", "anna.schmidt@example.de", "4111111111111111"],
        "rule_ids": ["ok-rule", "bad rule with spaces"],
    }

    assert sinks.emit(raw, suppressed_categories=frozenset()) == ["siem"]
    await sinks.close(deadline=5)

    assert siem.events() == [
        {
            "v": 1,
            **{k: v for k, v in EVENT.items() if k not in ("rule_ids", "personal_data_categories")},
            "rule_ids": ["ok-rule"],
            "personal_data_categories": ["email"],
        }
    ]
    for secret in (b"192.0.2.10", b"anna.schmidt", b"instances[0]", b"4111"):
        assert secret not in siem.bodies[0]
    assert sinks.stats()["siem"].delivered == 1


async def test_suppressed_category_receives_nothing(
    receiver: MakeReceiver, session: aiohttp.ClientSession
) -> None:
    siem, adtech = await receiver(), await receiver()
    sinks = EventSinks(
        session,
        [
            _spec("siem", siem.url),
            _spec("adtech-partner", adtech.url, ADTECH, is_sale_or_share=True),
        ],
    )
    sinks.start()
    shared = ["adtech-partner"]  # the tenant's share_request_events_with

    gpc = sinks.emit(EVENT, suppressed_categories=frozenset({ADTECH}), shared_with=shared)
    by_id = sinks.emit(
        EVENT, suppressed_categories=frozenset(), suppressed_sinks=["siem"], shared_with=shared
    )
    blanket = sinks.emit(
        EVENT, suppressed_categories=frozenset({SALE_OR_SHARE}), shared_with=shared
    )
    not_shared = sinks.emit(EVENT, suppressed_categories=frozenset())
    normal = sinks.emit(
        {**EVENT, "decision_id": "last"}, suppressed_categories=frozenset(), shared_with=shared
    )
    await sinks.close(deadline=5)

    assert (gpc, blanket, not_shared) == (["siem"], ["siem"], ["siem"])
    assert by_id == ["adtech-partner"]
    assert normal == ["siem", "adtech-partner"]
    assert len(siem.bodies) == 4
    assert len(adtech.bodies) == 2 and adtech.events()[-1]["decision_id"] == "last"


async def test_full_queue_drops_the_oldest_and_counts(
    receiver: MakeReceiver, session: aiohttp.ClientSession
) -> None:
    slow = await receiver(held=True)
    sinks = EventSinks(session, [_spec("siem", slow.url, queue_size=2)])
    sinks.start()

    for n in range(10):
        sinks.emit({**EVENT, "decision_id": f"d{n}"}, suppressed_categories=frozenset())

    assert sinks.stats()["siem"].dropped == 8
    assert sinks.stats()["siem"].queued == 2
    await asyncio.wait_for(slow.arrived.wait(), 5)
    slow.gate.set()
    await sinks.close(deadline=5)
    assert [e["decision_id"] for e in slow.events()] == ["d8", "d9"]
    assert sinks.stats()["siem"].delivered == 2


async def test_receiver_down_or_hanging_does_not_hold_up_others(
    receiver: MakeReceiver, session: aiohttp.ClientSession
) -> None:
    healthy, hanging = await receiver(), await receiver(held=True)
    down_url = f"http://127.0.0.1:{free_port()}/events"
    sinks = EventSinks(
        session,
        [
            _spec("down", down_url, max_attempts=3),
            _spec("hanging", hanging.url, timeout_s=30),
            _spec("siem", healthy.url),
        ],
    )
    sinks.start()

    for n in range(5):
        recipients = sinks.emit(
            {**EVENT, "decision_id": f"d{n}"}, suppressed_categories=frozenset()
        )
        assert recipients == ["down", "hanging", "siem"]

    await _until(lambda: len(healthy.bodies) == 5, "the healthy sink got every event")
    await _until(lambda: sinks.stats()["down"].failed == 5, "the down sink gave up on each event")
    assert sinks.stats()["down"].retries == 10  # two retries per event, then given up
    assert hanging.bodies == []
    await sinks.close(deadline=0.1)
    assert sinks.stats()["hanging"].abandoned == 5  # one in flight, four queued


async def test_retries_transient_errors_but_not_rejections(
    receiver: MakeReceiver, session: aiohttp.ClientSession
) -> None:
    flaky = await receiver(statuses=(503, 429))
    rejecting = await receiver(statuses=(400,))
    sinks = EventSinks(session, [_spec("flaky", flaky.url), _spec("strict", rejecting.url)])
    sinks.start()

    sinks.emit(EVENT, suppressed_categories=frozenset())
    await sinks.close(deadline=5)

    stats = sinks.stats()
    assert (stats["flaky"].delivered, stats["flaky"].retries) == (1, 2)
    assert len(set(flaky.bodies)) == 1 and len(flaky.bodies) == 3  # the same event each time
    assert (stats["strict"].failed, stats["strict"].retries, len(rejecting.bodies)) == (1, 0, 1)


async def test_close_drains_queued_events(
    receiver: MakeReceiver, session: aiohttp.ClientSession
) -> None:
    siem = await receiver()
    sinks = EventSinks(session, [_spec("siem", siem.url)])
    sinks.start()

    for n in range(50):
        sinks.emit({**EVENT, "decision_id": f"d{n}"}, suppressed_categories=frozenset())
    await sinks.close(deadline=10)

    assert [e["decision_id"] for e in siem.events()] == [f"d{n}" for n in range(50)]
    assert sinks.stats()["siem"].abandoned == 0
    assert sinks.emit(EVENT, suppressed_categories=frozenset()) == []


async def test_redirects_are_not_followed(
    aiohttp_server: AiohttpServer, receiver: MakeReceiver, session: aiohttp.ClientSession
) -> None:
    elsewhere = await receiver()

    async def bounce(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(elsewhere.url)

    app = web.Application()
    app.router.add_post("/events", bounce)
    server = await aiohttp_server(app)
    sinks = EventSinks(session, [_spec("siem", str(server.make_url("/events")))])
    sinks.start()

    sinks.emit(EVENT, suppressed_categories=frozenset())
    await sinks.close(deadline=5)

    assert elsewhere.bodies == []
    assert sinks.stats()["siem"].failed == 1


def test_fixture_recipient_parses_with_opt_in_by_default() -> None:
    spec = WebhookTarget.from_mapping(
        {
            "id": "adtech-partner",
            "url": "http://127.0.0.1:18600/events",
            "category": ADTECH,
            "is_sale_or_share": True,
        }
    )

    assert spec.needs_tenant_opt_in is True
    assert (
        WebhookTarget("siem", "https://siem.example/hook", "security").needs_tenant_opt_in is False
    )
    assert spec.context_entry() == {
        "id": "adtech-partner",
        "category": ADTECH,
        "is_sale_or_share": True,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"timeout_s": -1}, "sinks[siem].timeout_s: must be a positive number, got `-1`"),
        ({"queue_size": 0}, "sinks[siem].queue_size: must be an integer >= 1, got `0`"),
        ({"url": "ftp://x/y"}, "sinks[siem].url: must be an http(s) URL, got `ftp://x/y`"),
        ({"url": "http://[::1"}, "sinks[siem].url: must be an http(s) URL, got `http://[::1`"),
        ({"timeout_s": "2"}, "sinks[siem].timeout_s: must be a positive number, got `2`"),
        ({"category": SALE_OR_SHARE}, "sinks[siem].category"),
        (
            {"is_sale_or_share": "yes"},
            "sinks[2].is_sale_or_share: must be true or false, got `yes`",
        ),
        ({"colour": "red"}, "sinks[2]: unknown setting `colour`"),
        ({"headers": {"X-Token": 1}}, "sinks[2].headers"),
    ],
)
def test_bad_settings_name_the_setting_and_value(change: dict[str, object], message: str) -> None:
    raw = {"id": "siem", "url": "https://siem.example/hook", "category": "security", **change}

    with pytest.raises(SinkConfigError) as err:
        WebhookTarget.from_mapping(raw, where="sinks[2]")
    assert message in str(err.value)


async def test_duplicate_sink_ids_are_refused(session: aiohttp.ClientSession) -> None:
    spec = _spec("siem", "http://127.0.0.1:1/events")
    with pytest.raises(SinkConfigError, match="duplicate id `siem`"):
        EventSinks(session, [spec, spec])


def test_minimise_keeps_only_token_shaped_allowlisted_values() -> None:
    body = minimise_event(
        {
            "decision_id": "a b",
            "tenant": None,
            "effect": "maybe",
            "status": True,
            "rule_ids": "not-a-list",
            "personal_data_categories": frozenset({"phone", "email"}),
            "note": "free text",
        }
    )

    assert body == {"v": 1, "tenant": None, "personal_data_categories": ["email", "phone"]}
    context_names = minimise_event({"rules": ["r-1"], "personal_data": ["iban", "DE89 3704"]})
    assert context_names == {"v": 1, "rule_ids": ["r-1"], "personal_data_categories": ["iban"]}
