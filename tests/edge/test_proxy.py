"""Backend selection (pure) and forwarding through UpstreamPool against fake TF Serving backends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.edge.proxy import UpstreamPool, strip_hop_by_hop
from gateway.pipeline.upstream import UpstreamError, UpstreamResponse
from gateway.request.routing import BackendSpec, is_rerouted, select_backend
from gateway.tfserving import Route, build_backend_path, parse_request_target
from tests.vocabulary_groups import vocabulary_groups

# ---------------------------------------------------------------- fixtures from the scenarios

RESNET, NC, PARTNER, STYLE = "imgcls-resnet50", "imgcls-nc", "imgcls-partner", "style-transfer-cnn"


def _models(*names: str) -> dict[str, dict[str, Any]]:
    return {name: {"id": name} for name in names}


# Copied from tests/scenarios/legal-scenarios.yaml `fixtures.backends` and
# `fixtures.operator.routing_default_by_caller_region` (test_scenario_fixtures_match checks it).
SCENARIO_BACKENDS = (
    BackendSpec("be-eu-fra", "http://127.0.0.1:18501", "DE", _models(RESNET, NC, PARTNER, STYLE)),
    BackendSpec("be-us-east", "http://127.0.0.1:18502", "US", _models(RESNET, NC, PARTNER)),
    BackendSpec("be-cn-sha", "http://127.0.0.1:18503", "CN", _models(RESNET, STYLE)),
    BackendSpec("be-br-sao", "http://127.0.0.1:18504", "BR", _models(RESNET)),
    BackendSpec("be-in-mum", "http://127.0.0.1:18505", "IN", _models(RESNET)),
)
ROUTING_DEFAULT = {
    "EU": "be-eu-fra",
    "US": "be-us-east",
    "CN": "be-cn-sha",
    "BR": "be-br-sao",
    "IN": "be-in-mum",
    "other": "be-eu-fra",
}
SCENARIOS_FILE = Path(__file__).resolve().parents[1] / "scenarios" / "legal-scenarios.yaml"


def test_scenario_fixtures_match() -> None:
    fixtures = yaml.safe_load(SCENARIOS_FILE.read_text(encoding="utf-8"))["fixtures"]
    expected = [(b["id"], b["region"], b["url"], set(b["models"])) for b in fixtures["backends"]]
    assert [(b.id, b.region, b.url, set(b.models)) for b in SCENARIO_BACKENDS] == expected
    assert fixtures["operator"]["routing_default_by_caller_region"] == ROUTING_DEFAULT


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    caller_region: str | None
    preferred: str | None
    allowed: frozenset[str] | None
    chosen: str | None
    rerouted: bool
    unavailable: frozenset[str] = frozenset()


SELECTION = [
    # S08: CN caller, cn-retail prefers be-us-east, CN personal data stays in CN (PIPL)
    Case("S08", RESNET, "CN", "be-us-east", frozenset({"CN"}), "be-cn-sha", True),
    # S13: BR caller, br-varejo prefers be-us-east, BR personal data stays in BR (LGPD Art. 33)
    Case("S13", RESNET, "BR", "be-us-east", frozenset({"BR"}), "be-br-sao", True),
    # S21: California client via the trusted edge: US-CA routes as US
    Case("S21", RESNET, "US-CA", None, None, "be-us-east", False),
    # S01 / S02: German caller routes as EU; an EU constraint changes nothing
    Case("S01", RESNET, "DE", None, None, "be-eu-fra", False),
    Case("S02", RESNET, "DE", None, frozenset({"EU"}), "be-eu-fra", False),
    Case("S15", RESNET, "IN", None, None, "be-in-mum", False),
    Case("S23", NC, "FR", None, None, "be-eu-fra", False),
    Case("cn-studio style transfer", STYLE, "CN", None, None, "be-cn-sha", False),
    # the preferred backend wins when allowed and serving the model
    Case("preferred", RESNET, "CN", "be-us-east", None, "be-us-east", False),
    Case("preferred within constraint", RESNET, "DE", "be-us-east", frozenset({"US-CA"}),
         "be-us-east", False),
    # a preferred backend that does not serve the model is skipped
    Case("preferred lacks model", STYLE, "CN", "be-us-east", None, "be-cn-sha", False),
    Case("unknown preferred id", RESNET, "US-NY", "be-nowhere", None, "be-us-east", False),
    # callers without an own routing entry: `other`
    Case("no caller region", RESNET, None, None, None, "be-eu-fra", False),
    Case("KZ caller", RESNET, "KZ", None, None, "be-eu-fra", False),
    Case("SG caller", RESNET, "SG", None, None, "be-eu-fra", False),
    Case("NO caller (EEA, not EU)", RESNET, "NO", None, None, "be-eu-fra", False),
    # constraints that move a request
    Case("EU data from a US caller", RESNET, "US-NY", None, frozenset({"EU"}), "be-eu-fra", True),
    Case("US-CA constraint routes as US", RESNET, "DE", None, frozenset({"US-CA"}),
         "be-us-east", True),
    Case("DE constraint", RESNET, "US", None, frozenset({"DE"}), "be-eu-fra", True),
    Case("several allowed regions", RESNET, "US", None, frozenset({"BR", "IN"}),
         "be-br-sao", True),
    # nothing fits: the gateway answers 451
    Case("RU citizens: no RU backend", RESNET, "RU", None, frozenset({"RU"}), None, True),
    Case("FR is not DE", RESNET, "FR", None, frozenset({"FR"}), None, True),
    Case("empty constraint", RESNET, "DE", None, frozenset(), None, True),
    Case("model served nowhere", "no-such-model", "DE", None, None, None, False),
    Case("CN model data, no CN backend", PARTNER, "CN", None, frozenset({"CN"}), None, True),
    # a backend marked down is skipped, the rest of the order applies
    Case("down: falls back", RESNET, "DE", None, None, "be-us-east", False,
         frozenset({"be-eu-fra"})),
    Case("down: preferred skipped", RESNET, "BR", "be-us-east", None, "be-br-sao", False,
         frozenset({"be-us-east"})),
]  # fmt: skip


@pytest.mark.parametrize("case", SELECTION, ids=lambda c: c.name)
def test_select_backend(case: Case) -> None:
    chosen = select_backend(
        SCENARIO_BACKENDS,
        case.model,
        allowed_regions=case.allowed,
        caller_region=case.caller_region,
        preferred=case.preferred,
        region_routing_default=ROUTING_DEFAULT,
        groups=vocabulary_groups(),
        unavailable=case.unavailable,
    )
    assert (chosen.id if chosen else None) == case.chosen
    rerouted = is_rerouted(
        chosen,
        SCENARIO_BACKENDS,
        case.model,
        caller_region=case.caller_region,
        preferred=case.preferred,
        region_routing_default=ROUTING_DEFAULT,
        groups=vocabulary_groups(),
        unavailable=case.unavailable,
    )
    assert rerouted is case.rerouted


def _be(id_: str, region: str, weight: int = 1) -> BackendSpec:
    return BackendSpec(id_, f"http://{id_}.internal:8501", region, _models("m"), weight=weight)


@pytest.mark.parametrize(
    ("backends", "caller", "routing", "chosen"),
    [
        # caller's country before `other`, even without a routing entry
        ([_be("eu", "DE"), _be("jp", "JP")], "JP", {"other": "eu"}, "jp"),
        # a subdivision's own entry before its country's
        ([_be("east", "US"), _be("west", "US")], "US-CA", {"US-CA": "west", "US": "east"}, "west"),
        ([_be("east", "US"), _be("west", "US")], "US-TX", {"US-CA": "west", "US": "east"}, "east"),
        # a member state's own entry before the EU's
        ([_be("fra", "DE"), _be("par", "FR")], "FR", {"FR": "par", "EU": "fra"}, "par"),
        # no entry at all: same country, then same routing group (EU)
        ([_be("us", "US"), _be("ams", "NL"), _be("par", "FR")], "FR", {}, "par"),
        ([_be("us", "US"), _be("ams", "NL"), _be("fra", "DE")], "FR", {}, "ams"),
        # weights order equal candidates; ties keep configuration order
        ([_be("a", "US"), _be("b", "US", weight=5)], "US-CA", {}, "b"),
        ([_be("a", "US", weight=2), _be("b", "US", weight=2)], "US", {}, "a"),
        ([_be("a", "JP"), _be("b", "KR", weight=3)], None, {}, "b"),
        # a routing default naming a backend that does not serve the model is skipped
        ([_be("a", "US"), _be("b", "US")], "US", {"US": "missing", "other": "b"}, "a"),
    ],
)
def test_select_backend_order(
    backends: list[BackendSpec], caller: str | None, routing: dict[str, str], chosen: str
) -> None:
    selected = select_backend(
        backends,
        "m",
        allowed_regions=None,
        caller_region=caller,
        preferred=None,
        region_routing_default=routing,
        groups=vocabulary_groups(),
    )
    assert selected is not None and selected.id == chosen


# ---------------------------------------------------------------- BackendSpec


def test_backend_spec_normalises_and_freezes() -> None:
    attrs = {"kind": "classifier"}
    models = {"m": attrs}
    spec = BackendSpec("be-1", "http://h:8501/", "us-ca", models, ["SCC"])
    attrs["kind"] = "changed"
    models["other"] = {}
    assert spec.url == "http://h:8501"
    assert spec.region == "US-CA"
    assert dict(spec.models) == {"m": {"kind": "classifier"}}
    assert spec.transfer_mechanisms == ("SCC",)
    assert spec.serves("m") and not spec.serves("other")
    assert spec.context_view() == {"id": "be-1", "region": "US-CA", "transfer_mechanisms": ["SCC"]}
    with pytest.raises(TypeError):
        spec.models["x"] = {}  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": "be 1"}, "backend id `be 1`"),
        ({"url": "ftp://h"}, "url `ftp://h` must be http:// or https://"),
        ({"url": "http://"}, "must be http:// or https:// with a host"),
        ({"url": "http://u:p@h"}, "must not carry a query, fragment or credentials"),
        ({"url": "http://h/?x=1"}, "must not carry"),
        ({"region": "Germany"}, "region `Germany` is not an ISO 3166 code"),
        ({"weight": -1}, "weight `-1` must be an integer >= 0"),
    ],
)
def test_backend_spec_refuses(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"id": "be-1", "url": "http://h:8501", "region": "DE", "models": {}}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        BackendSpec(**args)


# ---------------------------------------------------------------- hop-by-hop


def test_strip_hop_by_hop() -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("Connection", "keep-alive, X-Hop , Retry-After"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Authorization", "Basic eA=="),
        ("x-hop", "1"),
        ("Retry-After", "5"),
        ("X-End-To-End", "kept"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    assert strip_hop_by_hop(headers) == [
        ("Content-Type", "application/json"),
        ("X-End-To-End", "kept"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


# ---------------------------------------------------------------- fake backends

PREDICT_ROW = (
    b'{\n    "predictions": [[0.0260158, 0.973984], [1.0, 9e+06], [NaN, -Infinity]\n    ]\n}'
)
STATUS_AVAILABLE = (
    b'{\n "model_version_status": [\n  {\n   "version": "1",\n   "state": "AVAILABLE",\n'
    b'   "status": {\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}\n'
)


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes


Respond = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeBackend:
    """A stand-in TF Serving: records every request and answers with `respond`."""

    server: TestServer
    seen: list[Seen] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    respond: Respond | None = None

    def spec(self, suffix: str = "", **models: dict[str, Any]) -> BackendSpec:
        return BackendSpec(
            "be-test", str(self.server.make_url(suffix)), "DE", models or _models("m")
        )


async def _tfs_like(request: web.Request) -> web.StreamResponse:
    return web.Response(body=PREDICT_ROW, content_type="application/json")


@pytest.fixture
async def backend(aiohttp_server: Any) -> AsyncIterator[FakeBackend]:
    holder: list[FakeBackend] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        fake = holder[0]
        fake.peers.add(request.transport.get_extra_info("peername")[:2])  # type: ignore[union-attr]
        fake.seen.append(
            Seen(request.method, request.raw_path, list(request.headers.items()),
                 await request.read())
        )  # fmt: skip
        return await (fake.respond or _tfs_like)(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    fake = FakeBackend(server)
    holder.append(fake)
    yield fake
    fake.release.set()


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., Awaitable[UpstreamPool]]]:
    pools: list[UpstreamPool] = []

    async def factory(**kwargs: Any) -> UpstreamPool:
        pool = UpstreamPool(**kwargs)
        await pool.start()
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        await pool.close()


@dataclass
class RawServer:
    url: str
    connections: int = 0


RawScript = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawScript], Awaitable[RawServer]]]:
    """A bare TCP server speaking whatever bytes a test scripts (for broken backends)."""
    servers: list[asyncio.Server] = []

    async def start(script: RawScript) -> RawServer:
        state = RawServer("")

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            try:
                await script(reader, writer, state.connections)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))
    return head


def raw_spec(server: RawServer) -> BackendSpec:
    return BackendSpec("be-raw", server.url, "DE", _models("m"))


PREDICT = build_backend_path(Route("m", None, None, "predict"))

# ---------------------------------------------------------------- relaying


async def test_body_bytes_and_status_relayed_unchanged(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    pool = await make_pool()
    request_body = b'{"instances": [1.0, NaN], "instances": [2], "x": Inf}\n  trailing'
    resp = await pool.forward(backend.spec(), "POST", PREDICT, request_body, {})
    assert resp == UpstreamResponse(200, (("Content-Type", "application/json"),), PREDICT_ROW)
    assert resp.content_type == "application/json"
    assert [(s.method, s.raw_path, s.body) for s in backend.seen] == [
        ("POST", "/v1/models/m:predict", request_body)
    ]


async def test_backend_errors_are_relayed_not_raised(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    error = b'{\n    "error": "Servable not found for request: Latest(nope)"\n}'

    async def not_found(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, body=error, content_type="application/json")

    backend.respond = not_found
    pool = await make_pool()
    resp = await pool.forward(backend.spec(), "POST", PREDICT, b"{}", None)
    assert (resp.status, resp.body) == (404, error)


async def test_large_chunked_columnar_body_relayed_unchanged(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    rows = b",\n".join(b"            %.9g" % (i / 7) for i in range(200_000))
    body = b'{\n    "outputs": [\n        [\n' + rows + b"\n        ]\n    ]\n}"

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(body), 65_521):
            await resp.write(body[start : start + 65_521])
        await resp.write_eof()
        return resp

    backend.respond = chunked
    pool = await make_pool()
    resp = await pool.forward(backend.spec(), "POST", PREDICT, b"{}", None)
    assert len(body) > 3_000_000
    assert resp.body == body


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_response_is_bad_response(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]], chunked: bool
) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = 5000
        await resp.prepare(request)
        await resp.write(b"x" * 5000)
        await resp.write_eof()
        return resp

    backend.respond = big
    pool = await make_pool(max_response_bytes=1000)
    with pytest.raises(UpstreamError) as info:
        await pool.forward(backend.spec(), "POST", PREDICT, b"{}", None)
    assert (info.value.kind, info.value.status) == ("bad_response", 502)


async def test_only_allowed_request_headers_reach_the_backend(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    pool = await make_pool()
    client_headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Accept", "*/*"),
        ("X-Api-Key", "key-acme-eu"),
        ("Authorization", "Bearer t"),
        ("Cookie", "sid=1"),
        ("X-Forwarded-For", "192.0.2.10"),
        ("Content-Encoding", "gzip"),  # the gateway forwards the inflated body
        ("Keep-Alive", "timeout=5"),
    ]
    await pool.forward(backend.spec(), "POST", PREDICT, b"{}", client_headers)
    await pool.forward(
        backend.spec(),
        "POST",
        PREDICT,
        b"{}",
        [("Connection", "X-Decision-Id"), ("X-Decision-Id", "d")],
    )
    await pool.forward(backend.spec(), "POST", PREDICT, b"{}", {"X-Decision-Id": "d2"})
    names = [{name.lower(): value for name, value in s.headers} for s in backend.seen]
    forwarded = {"content-type", "accept"}
    assert forwarded <= names[0].keys()
    assert names[0]["content-type"] == "application/x-www-form-urlencoded"
    for dropped in ("x-api-key", "authorization", "cookie", "x-forwarded-for",
                    "content-encoding", "accept-encoding", "keep-alive"):  # fmt: skip
        assert dropped not in names[0]
    assert "x-decision-id" not in names[1]  # named in Connection: hop-by-hop
    assert names[2]["x-decision-id"] == "d2"
    # no Content-Type is invented for a body sent without one
    assert "content-type" not in names[1]


async def test_hop_by_hop_and_unlisted_response_headers_are_dropped(
    raw_server: Callable[[RawScript], Awaitable[RawServer]],
    make_pool: Callable[..., Awaitable[UpstreamPool]],
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 2\r\n"
            b"Connection: keep-alive, Retry-After, X-Hop\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Retry-After: 5\r\n"
            b"X-Hop: 1\r\n"
            b"Access-Control-Allow-Origin: *\r\n"
            b"Proxy-Authenticate: Basic\r\n"
            b"Set-Cookie: sid=1\r\n"
            b"X-Internal-Node: gpu-7\r\n"
            b"\r\n{}"
        )
        await writer.drain()

    server = await raw_server(script)
    relayed = ["content-type", "retry-after", "keep-alive", "access-control-allow-origin"]
    pool = await make_pool(response_headers=[*relayed, "proxy-authenticate"])
    resp = await pool.forward(raw_spec(server), "POST", PREDICT, b"{}", None)
    assert resp.headers == (
        ("Content-Type", "application/json"),
        ("Access-Control-Allow-Origin", "*"),
    )
    assert resp.body == b"{}"


async def test_cookies_and_redirects_are_not_followed(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        resp = web.Response(status=302, headers={"Location": "/elsewhere"})
        resp.set_cookie("sid", "tenant-a")
        return resp

    backend.respond = redirect
    pool = await make_pool()
    first = await pool.forward(backend.spec(), "POST", PREDICT, b"{}", None)
    await pool.forward(backend.spec(), "POST", PREDICT, b"{}", None)
    assert first.status == 302
    assert [s.raw_path for s in backend.seen] == [PREDICT, PREDICT]
    assert all("Cookie" not in dict(s.headers) for s in backend.seen)


@pytest.mark.parametrize(
    ("route", "raw_path", "model"),
    [
        (Route("..", None, None, "status"), "/v1/models/%2E%2E", ".."),
        (Route("a/b", None, None, "predict"), "/v1/models/a%2Fb:predict", "a/b"),
        (Route("caf\u00e9", 2, None, "classify"), "/v1/models/caf%C3%A9/versions/2:classify",
         "caf\u00e9"),
        (Route("m", None, "x?y=1", "metadata"), "/v1/models/m/labels/x%3Fy%3D1/metadata", "m"),
    ],
)  # fmt: skip
async def test_canonical_paths_reach_the_backend_byte_for_byte(
    backend: FakeBackend,
    make_pool: Callable[..., Awaitable[UpstreamPool]],
    route: Route,
    raw_path: str,
    model: str,
) -> None:
    pool = await make_pool()
    body = None if route.http_method == "GET" else b"{}"
    await pool.forward(backend.spec(), route.http_method, build_backend_path(route), body, None)
    assert backend.seen[0].raw_path == raw_path
    # what TF Serving makes of the path it received is what the policy saw
    assert parse_request_target(route.http_method, backend.seen[0].raw_path) == route


async def test_backend_url_path_prefix(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    pool = await make_pool()
    await pool.forward(backend.spec("/tfs/"), "POST", PREDICT, b"{}", None)
    assert backend.seen[0].raw_path == "/tfs/v1/models/m:predict"


@pytest.mark.parametrize(
    "path", ["v1/models/m", "//evil.example/v1", "http://evil/v1", "/v1/models/m?x=1", "/a#b"]
)
async def test_non_canonical_paths_are_refused(
    make_pool: Callable[..., Awaitable[UpstreamPool]], path: str
) -> None:
    pool = await make_pool()
    spec = BackendSpec("be", "http://127.0.0.1:9", "DE", {})
    with pytest.raises(ValueError, match="not a canonical path"):
        await pool.forward(spec, "GET", path, None, None)


# ---------------------------------------------------------------- failures


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_backend_down_is_503_unavailable(
    make_pool: Callable[..., Awaitable[UpstreamPool]],
) -> None:
    pool = await make_pool()
    spec = BackendSpec("be-down", f"http://127.0.0.1:{_closed_port()}", "DE", _models("m"))
    with pytest.raises(UpstreamError) as info:
        await pool.forward(spec, "POST", PREDICT, b"{}", None)
    err = info.value
    assert (err.kind, err.status, err.backend_id) == ("unavailable", 503, "be-down")
    assert "127.0.0.1" not in err.message  # clients see the id, never the address
    tfs = err.to_tfs_error(decision_id="d-1")
    assert (tfs.status, tfs.content_type) == (503, "application/json")
    assert json.loads(tfs.body) == {"error": "Backend be-down is unavailable", "decision_id": "d-1"}


async def test_slow_backend_is_504_timeout(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(backend.release.wait(), 10)
        return web.Response(body=b"{}")

    backend.respond = slow
    pool = await make_pool(read_timeout=0.2)
    try:
        with pytest.raises(UpstreamError) as info:
            await pool.forward(backend.spec(), "POST", PREDICT, b"{}", None)
    finally:
        backend.release.set()
    assert (info.value.kind, info.value.status) == ("timeout", 504)
    assert info.value.detail.startswith("read timeout")
    assert len(backend.seen) == 1  # a timeout is not retried


async def test_waiting_for_a_pooled_connection_times_out_as_connect_timeout(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(backend.release.wait(), 10)
        return web.Response(body=b"{}")

    backend.respond = slow
    pool = await make_pool(limit_per_host=1, pool_timeout=0.1, connect_timeout=0.1)
    first = asyncio.create_task(pool.forward(backend.spec(), "POST", PREDICT, b"{}", None))
    while not backend.seen:
        await asyncio.sleep(0.01)
    with pytest.raises(UpstreamError) as info:
        await pool.forward(backend.spec(), "POST", PREDICT, b"{}", None)
    backend.release.set()
    assert (await first).status == 200
    assert (info.value.kind, info.value.status) == ("timeout", 504)
    assert info.value.detail.startswith("connect timeout")


async def _close_without_answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
) -> None:
    await read_request(reader)


@pytest.mark.parametrize(("retry", "connections"), [(True, 2), (False, 1)])
async def test_backend_closing_without_answer_is_502_after_one_retry(
    raw_server: Callable[[RawScript], Awaitable[RawServer]],
    make_pool: Callable[..., Awaitable[UpstreamPool]],
    retry: bool,
    connections: int,
) -> None:
    server = await raw_server(_close_without_answer)
    pool = await make_pool(retry_on_disconnect=retry)
    with pytest.raises(UpstreamError) as info:
        await pool.forward(raw_spec(server), "POST", PREDICT, b"{}", None)
    assert (info.value.kind, info.value.status) == ("bad_response", 502)
    assert server.connections == connections


async def test_stale_keepalive_connection_is_retried_once(
    raw_server: Callable[[RawScript], Awaitable[RawServer]],
    make_pool: Callable[..., Awaitable[UpstreamPool]],
) -> None:
    """The backend answers once, keeps the connection, then drops it on the next request."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        await writer.drain()
        if n == 1:
            await read_request(reader)  # the second request dies with the connection

    server = await raw_server(script)
    pool = await make_pool()
    first = await pool.forward(raw_spec(server), "POST", PREDICT, b"{}", None)
    second = await pool.forward(raw_spec(server), "POST", PREDICT, b"{}", None)
    assert (first.body, second.body) == (b"1", b"1")
    assert server.connections == 2


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}",
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"truncated',
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_protocol_errors_are_502_bad_response(
    raw_server: Callable[[RawScript], Awaitable[RawServer]],
    make_pool: Callable[..., Awaitable[UpstreamPool]],
    reply: bytes,
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    server = await raw_server(script)
    pool = await make_pool()
    with pytest.raises(UpstreamError) as info:
        await pool.forward(raw_spec(server), "POST", PREDICT, b"{}", None)
    assert (info.value.kind, info.value.status) == ("bad_response", 502)


# ---------------------------------------------------------------- connection reuse


async def test_sequential_requests_reuse_one_connection(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    pool = await make_pool()
    for _ in range(20):
        resp = await pool.forward(backend.spec(), "POST", PREDICT, b"{}", None)
        assert resp.status == 200
    status = build_backend_path(Route("m", None, None, "status"))
    await pool.forward(backend.spec(), "GET", status, None, None)
    assert len(backend.seen) == 21
    assert len(backend.peers) == 1


async def test_concurrent_requests_stay_within_the_per_host_limit(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    async def brief(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.02)
        return web.Response(body=b"{}")

    backend.respond = brief
    pool = await make_pool(limit_per_host=2)
    results = await asyncio.gather(
        *(pool.forward(backend.spec(), "POST", PREDICT, b"{}", None) for _ in range(12))
    )
    assert [r.status for r in results] == [200] * 12
    assert len(backend.peers) == 2


async def test_pool_lifecycle() -> None:
    pool = UpstreamPool()
    with pytest.raises(RuntimeError, match="not started"):
        _ = pool.session
    async with pool:
        assert not pool.session.closed
        session = pool.session
    assert session.closed
    with pytest.raises(ValueError, match="read_timeout must be > 0"):
        UpstreamPool(read_timeout=0)


# ---------------------------------------------------------------- readiness


@pytest.mark.parametrize(
    ("status", "body", "ready"),
    [
        (200, STATUS_AVAILABLE, True),
        (200, STATUS_AVAILABLE.replace(b"AVAILABLE", b"LOADING"), False),
        (200, b'{"model_version_status": [{"version": "2", "state": "END"},'
              b' {"version": "1", "state": "AVAILABLE"}]}', True),
        (200, b'{"model_version_status": []}', False),
        (200, b"[]", False),
        (200, b"not json", False),
        (404, b'{\n    "error": "Could not find any versions of model m"\n}', False),
    ],
)  # fmt: skip
async def test_probe_model(
    backend: FakeBackend,
    make_pool: Callable[..., Awaitable[UpstreamPool]],
    status: int,
    body: bytes,
    ready: bool,
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type="application/json")

    backend.respond = answer
    pool = await make_pool()
    assert await pool.probe_model(backend.spec(), "m/x") is ready
    assert [(s.method, s.raw_path) for s in backend.seen] == [("GET", "/v1/models/m%2Fx")]


async def test_probe_unreachable_or_slow_backend_is_not_ready(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(backend.release.wait(), 10)
        return web.Response(body=STATUS_AVAILABLE)

    backend.respond = slow
    pool = await make_pool(probe_timeout=0.1)
    down = BackendSpec("be-down", f"http://127.0.0.1:{_closed_port()}", "DE", _models("m"))
    try:
        assert await pool.probe_model(down, "m") is False
        assert await pool.probe_model(backend.spec(), "m") is False
    finally:
        backend.release.set()


async def test_probe_backend_covers_every_model(
    backend: FakeBackend, make_pool: Callable[..., Awaitable[UpstreamPool]]
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        if request.raw_path.endswith("/ready"):
            return web.Response(body=STATUS_AVAILABLE)
        return web.Response(status=404, body=b"{}")

    backend.respond = answer
    pool = await make_pool()
    spec = backend.spec(ready={}, gone={})
    assert await pool.probe_backend(spec) == {"ready": True, "gone": False}
