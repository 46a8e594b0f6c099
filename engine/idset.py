"""A set of every ClOrdID a session has used, kept all day without latency spikes.

Contract: ``UsedIds.add_new(clid)`` adds ``clid`` and returns True, or returns False if it was
already there; ``len()`` and iteration (in no particular order: callers that need an order sort)
cover every id added. ``sorted_ids()`` lists them sorted (the same list in any process, as a
snapshot needs); ``update(ids)`` adds many (restoring a snapshot).

Why not one ``set``: a busy session uses millions of ids a day, and a hash table grows by
copying itself, so one insert in a million would stop matching for tens of milliseconds. The
ids are spread over 1,024 small tables (by the string's hash), each growing on its own: the
largest copy is a thousand times smaller. Membership does not depend on the hash seed, and
nothing in matching iterates these tables, so the engine stays deterministic.
"""
from __future__ import annotations

from itertools import chain
from typing import Iterable, Iterator

__all__ = ["UsedIds", "SHARD_MASK"]

_SHARDS = 1024
_MASK = SHARD_MASK = _SHARDS - 1


class UsedIds:
    """``shards`` is public for the engine's hot path, which inlines ``add_new``:
    ``shard = ids.shards[hash(clid) & SHARD_MASK]``, then a membership test and an add."""

    __slots__ = ("shards",)

    def __init__(self) -> None:
        self.shards: list[set[str]] = [set() for _ in range(_SHARDS)]

    def add_new(self, clid: str) -> bool:
        shard = self.shards[hash(clid) & _MASK]
        if clid in shard:
            return False
        shard.add(clid)
        return True

    def __contains__(self, clid: object) -> bool:
        return clid in self.shards[hash(clid) & _MASK]

    def __len__(self) -> int:
        return sum(map(len, self.shards))

    def __iter__(self) -> Iterator[str]:
        for shard in self.shards:
            yield from shard

    def sorted_ids(self) -> list[str]:
        """Every id, sorted: independent of the hash seed that spread them over the shards."""
        ids = list(chain.from_iterable(self.shards))
        ids.sort()
        return ids

    def update(self, ids: Iterable[str]) -> None:
        shards = self.shards
        for clid in ids:
            shards[hash(clid) & _MASK].add(clid)
