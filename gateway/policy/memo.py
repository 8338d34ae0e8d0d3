"""A bounded memo for pure results: a dict that empties itself when it grows past its bound.

The policy set memoises results that depend only on its rules and on the context values
named in the key (region intersections, rendered texts, plans); contexts can produce many
keys, so each memo is bounded. Emptying it whole is cheaper on the hot path than evicting
one entry at a time, and a cleared memo only costs recomputation.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["BoundedMemo"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class BoundedMemo(dict[_K, _V]):
    """A dict of memoised results; `remember` empties it first when it holds over `bound`."""

    __slots__ = ("bound",)

    def __init__(self, bound: int = 4096) -> None:
        super().__init__()
        self.bound = bound

    def remember(self, key: _K, value: _V) -> _V:
        """Store `value` under `key` and return it (emptying the memo when it is full)."""
        if len(self) > self.bound:
            self.clear()
        self[key] = value
        return value
