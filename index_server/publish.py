"""The publish interface: where published ``IndexValue`` records go.

Contract:
- ``Publisher.publish(value)`` hands one ``IndexValue`` to every hook and every subscription,
  synchronously and in the order published; per index, ``value.seq`` only grows.
- A hook (``add_hook(fn)``) is a plain callable ``fn(value) -> None`` run inside the event loop:
  it must not block. An exception in a hook is logged and does not stop the others. This is the
  attachment point of the FAST market data publisher, which sends each value as an index entry
  (MDEntryType '3': Symbol = ``value.code``, MDEntryPx = ``value.value``).
- A subscription (``subscribe(maxsize, codes)``) is a bounded ``asyncio.Queue`` read with
  ``await sub.get()`` or ``async for``. A subscriber that falls ``maxsize`` values behind is
  dropped: its queue is emptied, ``sub.overflowed`` is set and it reads the end (``None``); it
  may resume from its last ``event_seq`` (see spec/index-vendor-api.md). ``close()`` ends every
  subscription the same way (``overflowed`` stays false).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable

from index_server.definitions import IndexValue

__all__ = ["IndexValue", "PublishHook", "Publisher", "Subscription"]

log = logging.getLogger("bourse.index")

PublishHook = Callable[[IndexValue], None]


class Subscription:
    def __init__(self, publisher: "Publisher", maxsize: int,
                 codes: frozenset[str] | None) -> None:
        self._publisher = publisher
        self.codes = codes
        self.queue: asyncio.Queue[IndexValue | None] = asyncio.Queue(maxsize + 1)
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False

    def _offer(self, value: IndexValue) -> None:
        if self.closed or (self.codes is not None and value.code not in self.codes):
            return
        if self.queue.qsize() >= self.maxsize:
            self.overflowed = True
            self._end()
            return
        self.queue.put_nowait(value)

    def _end(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._publisher._subs.discard(self)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def get(self) -> IndexValue | None:
        """The next value, or None once the subscription has ended."""
        if self.closed and self.queue.empty():
            return None
        return await self.queue.get()

    def close(self) -> None:
        self._end()

    def __aiter__(self):
        return self

    async def __anext__(self) -> IndexValue:
        v = await self.get()
        if v is None:
            raise StopAsyncIteration
        return v


class Publisher:
    def __init__(self) -> None:
        self._hooks: list[PublishHook] = []
        self._subs: set[Subscription] = set()
        self.published = 0

    def add_hook(self, hook: PublishHook) -> None:
        self._hooks.append(hook)

    def remove_hook(self, hook: PublishHook) -> None:
        self._hooks.remove(hook)

    def subscribe(self, maxsize: int = 4096, codes: Iterable[str] | None = None) -> Subscription:
        sub = Subscription(self, maxsize, None if codes is None else frozenset(codes))
        self._subs.add(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, value: IndexValue) -> None:
        self.published += 1
        for hook in self._hooks:
            try:
                hook(value)
            except Exception:  # a broken consumer must not stop the index
                log.exception("index publish hook %r failed", hook)
        for sub in tuple(self._subs):
            sub._offer(value)

    def close(self) -> None:
        for sub in tuple(self._subs):
            sub._end()
