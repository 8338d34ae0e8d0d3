"""A bounded least-recently-used cache: the one memo every per-process cache uses.

When full, a new entry evicts the entry used longest ago, so a hot working set survives a
burst of one-off keys (a cache that empties itself when full loses the hot set with the
cold). Not thread-safe: each instance belongs to one event loop or one worker. Pure: no
I/O, no imports beyond the standard library.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar, overload

__all__ = ["LruCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")


class LruCache(Generic[K, V]):
    """A mapping of at most `maxsize` entries that evicts the least recently used one."""

    __slots__ = ("_data", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("an LRU cache holds at least one entry")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: K) -> V:
        """The value for `key`, marked as just used; `KeyError` when absent."""
        value = self._data[key]
        self._data.move_to_end(key)
        return value

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        """The value for `key` (marked as just used), or `default` when absent."""
        try:
            value = self._data[key]
        except KeyError:
            return default
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Store `value` under `key`, evicting the least recently used entry when full."""
        data = self._data
        if key in data:
            data.move_to_end(key)
        elif len(data) >= self.maxsize:
            data.popitem(last=False)
        data[key] = value

    __setitem__ = put

    def get_or_compute(self, key: K, compute: Callable[[K], V]) -> V:
        """The cached value for `key`, computing and storing it on a miss."""
        try:
            value = self._data[key]
        except KeyError:
            value = compute(key)
            self.put(key, value)
            return value
        self._data.move_to_end(key)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        self._data.clear()
