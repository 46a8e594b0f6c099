"""A set of every ClOrdID a session has used, kept all day without latency spikes.

Contract: ``UsedIds.add_new(clid)`` adds ``clid`` and returns True, or returns False if it was
already there; ``len()`` and iteration (in no particular order: callers that need an order sort)
cover every id added.

Why not one ``set``: a busy session uses millions of ids a day, and a hash table grows by
copying itself, so one insert in a million would stop matching for tens of milliseconds. The
ids are spread over 1,024 small tables (by the string's hash), each growing on its own: the
largest copy is a thousand times smaller. Membership does not depend on the hash seed, and
nothing in matching iterates these tables, so the engine stays deterministic.
"""
from __future__ import annotations

from typing import Iterator

__all__ = ["UsedIds"]

_SHARDS = 1024
_MASK = _SHARDS - 1


class UsedIds:
    __slots__ = ("_shards", "_n")

    def __init__(self) -> None:
        self._shards: list[set[str] | None] = [None] * _SHARDS
        self._n = 0

    def add_new(self, clid: str) -> bool:
        k = hash(clid) & _MASK
        shard = self._shards[k]
        if shard is None:
            self._shards[k] = {clid}
        elif clid in shard:
            return False
        else:
            shard.add(clid)
        self._n += 1
        return True

    def __contains__(self, clid: object) -> bool:
        shard = self._shards[hash(clid) & _MASK]
        return shard is not None and clid in shard

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[str]:
        for shard in self._shards:
            if shard:
                yield from shard
