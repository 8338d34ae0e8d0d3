"""Per-request identity: decision ids, and the client resolution a snapshot keeps per peer."""

from __future__ import annotations

import uuid

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.edge.middleware import new_decision_id
from gateway.edge.runtime import Snapshot
from gateway.request.clientip import ClientIPConfig, resolve_client
from gateway.request.geo import RegionTable


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


def _snapshot(trusted: tuple[str, ...] = ()) -> Snapshot:
    regions = RegionTable.from_sources(
        entries=[("198.51.100.0/24", "DE"), ("203.0.113.0/24", "CN"), ("10.0.0.0/8", "US-CA")]
    )
    client_ip = ClientIPConfig.from_settings(trusted)
    # Only the client-address parts of a snapshot take part here.
    return Snapshot(None, None, None, regions, client_ip, ())  # type: ignore[arg-type]


def test_decision_ids_are_unique_random_uuids_across_refills() -> None:
    ids = [new_decision_id() for _ in range(1000)]  # several blocks of pooled randomness
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_peer_only_requests_resolve_once_per_peer_and_match_the_full_resolution() -> None:
    snap = _snapshot()
    first = snap.resolve_client("198.51.100.7", _headers(Host="gw"))
    again = snap.resolve_client("198.51.100.7", _headers(X_Api_Key="k"))
    assert again is first
    assert first == resolve_client("198.51.100.7", (), snap.client_ip, snap.regions)
    assert first.region == "DE"
    other = snap.resolve_client("203.0.113.9", _headers())
    assert other.region == "CN" and other is not first


def test_forwarding_and_claim_headers_are_never_answered_from_the_peer_cache() -> None:
    snap = _snapshot()
    snap.resolve_client("198.51.100.7", _headers())  # fills the cache for this peer
    for headers in (
        _headers(X_Forwarded_For="203.0.113.9"),
        _headers(x_forwarded_for="203.0.113.9"),  # header names match in any case
        _headers(Forwarded="for=203.0.113.9"),
        _headers(X_Geo_Country="CN"),
    ):
        got = snap.resolve_client("198.51.100.7", headers)
        assert got == resolve_client("198.51.100.7", headers, snap.client_ip, snap.regions)
        # An untrusted peer's forwarding or region header is a claim, never the region.
        assert got.region == "DE" and "CN" in got.region_claims


def test_a_trusted_proxy_still_forwards_the_client_address() -> None:
    snap = _snapshot(trusted=("10.0.0.0/8",))
    assert snap.resolve_client("10.1.2.3", _headers()).region == "US-CA"
    behind = snap.resolve_client("10.1.2.3", _headers(X_Forwarded_For="203.0.113.9"))
    assert behind.ip == "203.0.113.9" and behind.region == "CN"
    assert snap.resolve_client("10.1.2.3", _headers()).region == "US-CA"


def test_settling_the_heap_freezes_the_living_and_reclaims_replaced_cycles() -> None:
    import gc
    import weakref

    from gateway.edge.reload import settle_heap

    class Node:
        partner: object

    node = Node()
    node.partner = node  # a cycle only the collector can free
    alive = weakref.ref(node)
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # frozen: full collections no longer look at it
        settle_heap()  # as after a reload: unfreeze, collect, freeze again
        assert alive() is None
    finally:
        gc.unfreeze()
