"""The one bounded cache (`gateway.lru.LruCache`): least recently used out first."""

from __future__ import annotations

import pytest

from gateway.lru import LruCache


def test_a_full_cache_evicts_the_least_recently_used_entry() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache["a"] == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert "b" not in cache
    assert cache.get("a") == 1
    assert cache.get("c") == 3
    assert len(cache) == 2


def test_get_or_compute_computes_once_and_keeps_none_values() -> None:
    calls: list[str] = []

    def compute(key: str) -> int | None:
        calls.append(key)
        return None

    cache: LruCache[str, int | None] = LruCache(4)
    assert cache.get_or_compute("x", compute) is None
    assert cache.get_or_compute("x", compute) is None
    assert calls == ["x"]
    assert cache.get("missing", 7) == 7


def test_updating_a_key_does_not_evict() -> None:
    cache: LruCache[int, int] = LruCache(2)
    cache.put(1, 1)
    cache.put(2, 2)
    cache.put(2, 20)
    assert len(cache) == 2 and cache[1] == 1 and cache[2] == 20
    cache.clear()
    assert len(cache) == 0


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError):
        LruCache(0)
