"""The index service: replication stream in, calculated and published index values out.

Contract:
- ``IndexService(market, definitions, clock=...)`` owns an ``IndexCalculator`` and a
  ``Publisher``. ``apply(ev)`` feeds one replication event (every event, in sequence order:
  all of them carry time); ``consume(feed)`` does it for an async source with an ``events()``
  iterator such as ``engine.client.ReplicationFeed``; ``follow(host, port, digest)`` keeps a
  ``ReplicationFeed`` going across engine restarts and refusals, resuming after the last event
  applied.
- Values depend only on the events (the calculator is pure). The ``clock`` (integer ns,
  monotonic) is used only to decide *when* to publish:
  - cadence: every ``cadence_ms`` of the index (default 1 s), an index that changed since its
    last publication is published once, with its latest state;
  - on change (``on_change``): an index is published right after the event that changed it,
    at most ``on_change_max_per_s`` times a second; a change inside that interval is published
    when the interval ends (latest state only).
  A publication is always the latest state; intermediate states are conflated, so the
  per-index ``seq`` of published values may skip.
- Day history, per index: the state at the end of every ``cadence_ms`` bucket of *event time*
  (``ts``) in which the index changed, so the history is the same on every replay. It restarts
  at each new trading day (UTC day of ``ts``). ``history(code)`` includes the state of the
  bucket still open.
- ``current(code)`` is the latest calculated state (it may be newer than the last publication).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterable, Sequence

from engine.client import LinkClosed, LinkRefused, ReplicationFeed
from engine.refdata import MarketRefData
from index_server.calc import IndexCalculator
from index_server.definitions import IndexDefinition, IndexValue
from index_server.publish import Publisher

__all__ = ["IndexService"]

log = logging.getLogger("bourse.index")

_NEVER = 1 << 126
_MS = 1_000_000


class IndexService:
    def __init__(self, market: MarketRefData, definitions: Sequence[IndexDefinition], *,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.definitions = {d.code: d for d in definitions}
        self.calc = IndexCalculator(definitions, market)
        self.publisher = Publisher()
        self.clock = clock
        self.event_seq = 0                       # seq of the last event applied
        self.events_applied = 0
        self._bucket_ns = {c: d.cadence_ms * _MS for c, d in self.definitions.items()}
        self._min_gap_ns = {c: 1_000_000_000 // d.on_change_max_per_s
                            for c, d in self.definitions.items()}
        self._on_change = {c for c, d in self.definitions.items() if d.on_change}
        self._snap: dict[str, IndexValue | None] = {c: None for c in self.definitions}
        self._history: dict[str, list[IndexValue]] = {c: [] for c in self.definitions}
        self._hist_open: dict[str, int] = {}     # code -> end of its open bucket (ns, event time)
        self._hist_due = _NEVER
        self._dirty: set[str] = set()            # changed since last published
        self._last_pub: dict[str, int] = {}
        self._deferred: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    # ------------------------------------------------------------------ events in

    def apply(self, ev) -> None:
        """Apply one replication event; publishes at once for indices in on-change mode."""
        ts = ev.ts
        if ts >= self._hist_due:
            self._close_buckets(ts)
        day = self.calc.day
        changed = self.calc.on_event(ev)
        self.event_seq = ev.seq
        self.events_applied += 1
        if not changed:
            return
        if day is not None and self.calc.day != day:
            self._new_day()
        snap = self._snap
        for code in changed:
            snap[code] = None
            self._dirty.add(code)
            if code not in self._hist_open:
                b = self._bucket_ns[code]
                end = (ts // b + 1) * b
                self._hist_open[code] = end
                if end < self._hist_due:
                    self._hist_due = end
        on_change = self._on_change
        if on_change:
            for code in set(changed) & on_change:
                self._on_change_publish(code)

    async def consume(self, feed) -> None:
        """Apply every event of ``feed.events()`` until it ends."""
        async for ev in feed.events():
            self.apply(ev)

    async def follow(self, host: str, port: int, *, config_digest: str,
                     node_id: str = "index") -> None:
        """Follow the engine's replication stream for ever, resuming after the last event."""
        while not self._stopping:
            feed = ReplicationFeed(host, port, component="index", node_id=node_id,
                                   config_digest=config_digest, from_seq=self.event_seq + 1)
            try:
                await self.consume(feed)
            except LinkRefused as exc:
                log.critical("ALERT CRITICAL: the engine refused the index server: %s", exc)
                await asyncio.sleep(5)
            except (OSError, asyncio.TimeoutError, LinkClosed) as exc:
                log.warning("replication stream at %s:%d lost (%s); retrying", host, port, exc)
                await asyncio.sleep(0.5)
            finally:
                await feed.close()

    # ------------------------------------------------------------------ reading

    @property
    def codes(self) -> list[str]:
        return list(self.definitions)

    def current(self, code: str) -> IndexValue:
        """The latest calculated state of ``code`` (KeyError if unknown)."""
        v = self._snap[code]
        if v is None:
            v = self._snap[code] = self.calc.value(code)
        return v

    def history(self, code: str, since_event_seq: int = 0) -> list[IndexValue]:
        """Today's history of ``code``: one state per changed bucket, ``event_seq >= since``."""
        points = list(self._history[code])
        if code in self._hist_open:
            points.append(self.current(code))
        if since_event_seq:
            points = [p for p in points if p.event_seq >= since_event_seq]
        return points

    def history_since(self, since_event_seq: int,
                      codes: Iterable[str] | None = None) -> list[IndexValue]:
        """History points of several indices with ``event_seq >= since``, in event order."""
        out = []
        for code in (codes or self.definitions):
            out.extend(self.history(code, since_event_seq))
        out.sort(key=lambda v: (v.event_seq, v.code))
        return out

    # ------------------------------------------------------------------ publication

    def start(self) -> None:
        """Start the cadence timers (call from inside the running event loop)."""
        by_cadence: dict[int, list[str]] = {}
        for code, d in self.definitions.items():
            by_cadence.setdefault(d.cadence_ms, []).append(code)
        for cadence, codes in sorted(by_cadence.items()):
            self._tasks.append(asyncio.ensure_future(self._cadence(cadence, codes)))

    def flush(self, codes: Iterable[str] | None = None) -> None:
        """Publish every index (of ``codes``) changed since its last publication."""
        now = self.clock()
        for code in list(codes if codes is not None else self.definitions):
            if code in self._dirty:
                self._publish(code, now)

    async def close(self) -> None:
        self._stopping = True
        for h in self._deferred.values():
            h.cancel()
        self._deferred.clear()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        self.publisher.close()

    def _publish(self, code: str, now: int) -> None:
        self._dirty.discard(code)
        self._last_pub[code] = now
        self.publisher.publish(self.current(code))

    def _on_change_publish(self, code: str) -> None:
        if code not in self._dirty:
            return
        now = self.clock()
        last = self._last_pub.get(code)
        gap = self._min_gap_ns[code]
        if last is None or now - last >= gap:
            self._publish(code, now)
        elif code not in self._deferred:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:                 # no loop (pure use): the cadence publishes
                return
            self._deferred[code] = loop.call_later((last + gap - now) / 1e9,
                                                   self._deferred_publish, code)

    def _deferred_publish(self, code: str) -> None:
        self._deferred.pop(code, None)
        self._on_change_publish(code)

    async def _cadence(self, cadence_ms: int, codes: list[str]) -> None:
        loop = asyncio.get_running_loop()
        period = cadence_ms / 1000
        next_tick = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += period
            if next_tick < loop.time():          # fell behind: skip missed ticks
                next_tick = loop.time() + period
            self.flush(codes)

    # ------------------------------------------------------------------ history

    def _close_buckets(self, ts: int) -> None:
        """Before an event at ``ts``: record the states whose bucket ended."""
        due = _NEVER
        for code, end in list(self._hist_open.items()):
            if end <= ts:
                self._history[code].append(self.current(code))
                del self._hist_open[code]
            elif end < due:
                due = end
        self._hist_due = due

    def _new_day(self) -> None:
        for code in self._history:
            self._history[code] = []
        self._hist_open.clear()
        self._hist_due = _NEVER
