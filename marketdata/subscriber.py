"""Feed subscriber: A/B arbitration, gap detection, replay and snapshot recovery, books.

``SubscriberCore`` is a pure state machine: datagrams, replay answers and the time go in
(``on_datagram``, ``on_replay``, ``on_replay_failed``, ``on_timer``); books, index values,
instrument definitions and requests come out (``books``, ``indices``, ``instruments``,
``take_actions()``, ``take_changes()``, ``wants_snapshot``). ``FeedSubscriber`` is the thin
asyncio adapter that owns the sockets and the replay client.

Rules (spec/feed.md, "Recovery"):
- Arbitration: feeds A and B carry identical datagrams; per channel the first copy of each
  MsgSeqNum is used, later copies are dropped. The incremental channel is processed strictly
  in MsgSeqNum order: a datagram ahead of the expected one is held until the hole before it
  fills.
- A hole older than ``gap_wait`` seconds is a gap: if it spans at most ``replay_max``
  datagrams, a ``ReplayRequest`` is issued (one outstanding at a time); replayed datagrams go
  through the same path. A larger gap, a rejected or failed replay (``replay_timeout``), more
  than ``max_pending`` datagrams held, or no replay service: the hole is accepted and every book
  that the snapshot loop has not confirmed beyond it becomes unreliable.
- Each entry carries RptSeq, gap-free per instrument (or index): an entry with RptSeq <= the
  book's is already included and ignored; a jump makes that book unreliable; an entry that
  does not fit the book (delete or change of a level it does not hold, a new level it holds)
  too.
- An unreliable book buffers its entries and waits for a snapshot whose
  LastMsgSeqNumProcessed is at least the MsgSeqNum it needs (the end of the hole, or the
  message before the RptSeq jump). The snapshot replaces the book (levels, last trade, status,
  RptSeq); buffered entries with RptSeq above the snapshot's are applied in order; the book is
  reliable again when they are contiguous.
- Late join: the first datagram seen on the incremental channel (MsgSeqNum k) starts the
  session with a hole before it: every book needs a snapshot with LastMsgSeqNumProcessed
  >= max(1, k - 1). The subscriber is ``synced`` once it has seen every report of a snapshot
  cycle (TotNumReports, or the chosen symbols) and no book is unreliable.
- A new SequenceReset (MsgSeqNum 1 with a SendingTime not seen before) on a channel means the
  publisher restarted: that channel's numbering starts again; on the incremental channel every
  book needs a snapshot of the new session. If the reset itself was lost, a channel that only
  delivers old MsgSeqNums for ``stall_timeout`` seconds is restarted the same way.
- The snapshot channel is only decoded while ``wants_snapshot``; fragments (RouteFirst ..
  LastFragment, consecutive MsgSeqNums) are assembled per instrument, an incomplete assembly
  is dropped and the next cycle used.
- Incremental fragments: entries apply as they arrive; ``take_changes()`` reports the symbols
  changed, at message boundaries (LastFragment 1) so a reader never sees half a command.

Prices are kept as integers at ``price_exponent`` (the market's ``-price_decimals``); index
values as exact (mantissa, exponent) pairs.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from marketdata.channels import INCREMENTAL, INSTRUMENTS, SNAPSHOT, ChannelSet, receiver
from marketdata.fast import FastError
from marketdata.messages import (
    BID, EMPTY_BOOK, HEARTBEAT, INDEX_VALUE, OFFER, SECURITY_DEFINITION, SECURITY_STATUS,
    SEQUENCE_RESET, SNAPSHOT as SNAPSHOT_TID, TRADE, TRADING_SESSION_STATUS, decoder,
    INCREMENTAL as INCREMENTAL_TID,
)

log = logging.getLogger("bourse.marketdata.subscriber")

_NEW, _CHANGE, _DELETE = 0, 1, 2
_STALL_OLD = 4              # old MsgSeqNums in a row (beyond a B copy) that suggest a restart
_MAX_QUEUE = 100_000        # entries an unreliable book buffers before starting over


@dataclass
class Book:
    symbol: str
    bids: dict[int, tuple[int, int]] = field(default_factory=dict)   # price -> (qty, orders)
    offers: dict[int, tuple[int, int]] = field(default_factory=dict)
    rpt_seq: int = 0
    last_trade: tuple[int, int] | None = None                        # (price, qty)
    last_trade_id: int | None = None
    index_value: tuple[int, int] | None = None                       # (mantissa, exponent)
    status: int | None = None                                        # SecurityTradingStatus
    reliable: bool = False
    need_seq: int = 0          # while unreliable: snapshot LastMsgSeqNumProcessed needed
    sync_seq: int = 0          # LastMsgSeqNumProcessed of the snapshot last applied
    queue: list = field(default_factory=list)
    recoveries: int = 0

    def levels(self, side: int, depth: int | None = None) -> list[tuple[int, int, int]]:
        """Side 1 bids (best = highest first), 2 offers: [(price, qty, orders)]."""
        src = self.bids if side == 1 else self.offers
        prices = sorted(src, reverse=(side == 1))[:depth]
        return [(p, *src[p]) for p in prices]


@dataclass(frozen=True)
class ReplayRequest:
    begin: int
    end: int


class _Inconsistent(Exception):
    pass


class SubscriberCore:
    def __init__(self, *, price_exponent: int = -4, symbols=None, gap_wait: float = 0.02,
                 replay_max: int = 1000, replay_enabled: bool = True,
                 replay_timeout: float = 2.0, max_pending: int = 200_000,
                 stall_timeout: float = 3.0) -> None:
        self.exp = price_exponent
        self.symbols = frozenset(symbols) if symbols else None
        self.gap_wait = gap_wait
        self.replay_max = replay_max
        self.replay_enabled = replay_enabled
        self.replay_timeout = replay_timeout
        self.max_pending = max_pending
        self.stall_timeout = stall_timeout
        self._dec = decoder()
        self.books: dict[str, Book] = {}
        self.instruments: dict[str, dict] = {}
        self.session_status: int | None = None
        self.session_text: str | None = None
        # incremental channel
        self.expected: int | None = None       # next MsgSeqNum to apply
        self.session_time: int | None = None   # SendingTime of the SequenceReset of this session
        self.pending: dict[int, bytes] = {}
        self.gap_since: float | None = None
        self.max_hole = 0                       # highest MsgSeqNum given up (join included)
        self.replay_out: tuple[int, int, float] | None = None
        self._last_progress = 0.0
        self._old_since_progress = 0
        # snapshot channel
        self.snap_last = 0
        self.snap_session_time: int | None = None
        self._snap_asm: dict | None = None
        self._snap_last_accept = 0.0
        self._snap_ignored = 0
        self.snap_total: int | None = None
        self.snap_seen: set[str] = set()
        # outputs
        self._actions: list = []
        self._changed: set[str] = set()
        self._unreliable: set[str] = set()
        self._hold_changes = False        # inside a fragmented incremental message
        self.stats = {k: 0 for k in (
            "datagrams", "duplicates", "applied", "gaps", "replay_requests", "replayed",
            "replay_failures", "holes", "snapshots_applied", "book_recoveries", "rpt_gaps",
            "inconsistent", "sessions", "decode_errors")}

    # -- public state -------------------------------------------------------------------------

    @property
    def wants_snapshot(self) -> bool:
        return bool(self._unreliable) or not self._cycle_complete()

    @property
    def synced(self) -> bool:
        return (self.expected is not None and not self.pending and not self.wants_snapshot
                and self.replay_out is None)

    @property
    def indices(self) -> dict[str, tuple[int, int]]:
        return {s: b.index_value for s, b in self.books.items() if b.index_value is not None}

    def take_actions(self) -> list:
        out, self._actions = self._actions, []
        return out

    @property
    def changes_ready(self) -> bool:
        """Symbols changed and not in the middle of a fragmented message."""
        return bool(self._changed) and not self._hold_changes

    def take_changes(self) -> set[str]:
        out, self._changed = self._changed, set()
        return out

    def _cycle_complete(self) -> bool:
        if self.symbols is not None:
            return self.symbols <= self.snap_seen
        return self.snap_total is not None and len(self.snap_seen) >= self.snap_total

    # -- input --------------------------------------------------------------------------------

    def on_datagram(self, channel: str, data: bytes, now: float) -> None:
        self.stats["datagrams"] += 1
        try:
            if channel == INCREMENTAL:
                self._incremental(data, now)
            elif channel == SNAPSHOT:
                self._snapshot(data, now)
            elif channel == INSTRUMENTS:
                self._instrument(data)
        except FastError as exc:
            self.stats["decode_errors"] += 1
            log.warning("undecodable %s datagram (%d bytes): %s", channel, len(data), exc)

    def on_replay(self, begin: int, end: int, datagrams: list[bytes], now: float) -> None:
        self.replay_out = None
        self.stats["replayed"] += len(datagrams)
        for d in datagrams:
            self._incremental(d, now, replayed=True)
        if self.expected is not None and self.expected <= end:
            self._give_up(end, now)

    def on_replay_failed(self, begin: int, end: int, reason: str, now: float) -> None:
        self.replay_out = None
        self.stats["replay_failures"] += 1
        log.info("replay %d..%d failed (%s): recovering from snapshots", begin, end, reason)
        if self.expected is not None and self.expected <= end:
            self._give_up(end, now)

    def on_timer(self, now: float) -> None:
        if self.replay_out is not None and now - self.replay_out[2] >= self.replay_timeout:
            begin, end, _ = self.replay_out
            self.on_replay_failed(begin, end, "timeout", now)
        if (self.pending and self.replay_out is None and self.gap_since is not None
                and now - self.gap_since >= self.gap_wait):
            first = self.expected
            last = min(self.pending) - 1
            self.stats["gaps"] += 1
            if self.replay_enabled and last - first + 1 <= self.replay_max:
                self.replay_out = (first, last, now)
                self.stats["replay_requests"] += 1
                self._actions.append(ReplayRequest(first, last))
            else:
                self._give_up(last, now)
        if (self._old_since_progress >= _STALL_OLD
                and now - self._last_progress >= self.stall_timeout):
            log.warning("incremental channel only repeats old MsgSeqNums: publisher restarted?")
            self._new_session(None, now)
        if (self.wants_snapshot and self._snap_ignored >= _STALL_OLD and
                now - self._snap_last_accept >= self.stall_timeout):
            self.snap_last = 0              # the snapshot channel restarted its numbering
            self._snap_ignored = 0
            self._snap_last_accept = now

    # -- incremental channel ------------------------------------------------------------------

    def _incremental(self, data: bytes, now: float, replayed: bool = False) -> None:
        seq = int.from_bytes(data[:4], "little")
        exp = self.expected
        if exp is None:
            self._join(data, seq, now)
            return
        if seq < exp:
            if seq == 1 and not replayed and self._is_new_reset(data, self.session_time):
                self._new_session(data, now)
                return
            self.stats["duplicates"] += 1
            if not replayed:
                self._old_since_progress += 1
            return
        self._last_progress = now
        self._old_since_progress = 0
        if seq > exp:
            if seq in self.pending:
                self.stats["duplicates"] += 1
                return
            self.pending[seq] = data
            if self.gap_since is None:
                self.gap_since = now
            if len(self.pending) > self.max_pending:
                self._give_up(min(self.pending) - 1, now)
            return
        self._apply(data, seq)
        self._drain(now)

    def _drain(self, now: float) -> None:
        pending = self.pending
        while self.expected in pending:
            seq = self.expected
            self._apply(pending.pop(seq), seq)
        self.gap_since = now if pending else None

    def _is_new_reset(self, data: bytes, known: int | None) -> bool:
        _, t, v = self._dec.decode_datagram(data)
        return t.id == SEQUENCE_RESET and v["SendingTime"] != known

    def _join(self, data: bytes, seq: int, now: float) -> None:
        """First datagram of a session: everything before it is a hole."""
        self.stats["sessions"] += 1
        self.expected = seq
        self.pending.clear()
        self.gap_since = None
        self.replay_out = None
        self._last_progress = now
        self._old_since_progress = 0
        self.max_hole = max(1, seq - 1)
        for b in self.books.values():
            b.sync_seq = b.need_seq = 0          # numbers of an earlier session mean nothing
            self._unreliable_book(b, self.max_hole)
        self._apply(data, seq)
        self._drain(now)

    def _new_session(self, data: bytes | None, now: float) -> None:
        self.expected = None
        self.session_time = None
        self.pending.clear()
        self.replay_out = None
        self._old_since_progress = 0
        self.snap_seen.clear()
        self.snap_total = None
        if data is not None:
            self._join(data, 1, now)

    def _give_up(self, last_lost: int, now: float) -> None:
        """Accept the hole up to ``last_lost``: books not confirmed beyond it need a snapshot."""
        if self.expected is None or last_lost < self.expected:
            return
        self.stats["holes"] += 1
        self.expected = last_lost + 1
        for seq in [s for s in self.pending if s <= last_lost]:
            del self.pending[seq]
        self._lost_through(last_lost)
        self._drain(now)

    def _lost_through(self, last_lost: int) -> None:
        self.max_hole = max(self.max_hole, last_lost)
        for b in self.books.values():
            if b.sync_seq < last_lost:
                self._unreliable_book(b, last_lost)

    def _unreliable_book(self, b: Book, need_seq: int) -> None:
        if b.reliable:
            b.reliable = False
            b.queue = []
            b.recoveries += 1
            self.stats["book_recoveries"] += 1
            self._changed.add(b.symbol)
        b.need_seq = max(b.need_seq, need_seq)
        self._unreliable.add(b.symbol)

    def _book(self, symbol: str) -> Book:
        b = Book(symbol)
        b.need_seq = self.max_hole
        self._unreliable.add(symbol)
        self.books[symbol] = b
        return b

    def _apply(self, data: bytes, seq: int) -> None:
        self.expected = seq + 1
        self.stats["applied"] += 1
        try:
            _, t, v = self._dec.decode_datagram(data)
        except FastError as exc:             # as good as lost: its entries are unknown
            self.stats["decode_errors"] += 1
            log.warning("undecodable incremental datagram %d: %s", seq, exc)
            self._lost_through(seq)
            return
        tid = t.id
        if self.session_time is not None and v["SendingTime"] < self.session_time:
            self.stats["duplicates"] += 1       # a straggler from before the publisher restart
            return
        if tid == INCREMENTAL_TID:
            for e in v["MDEntries"]:
                self._entry(e, seq)
            self._hold_changes = v["LastFragment"] == 0
            return
        self._hold_changes = False
        if tid == HEARTBEAT:
            pass
        elif tid == SECURITY_STATUS:
            sym = v["Symbol"]
            if self.symbols is None or sym in self.symbols:
                b = self.books.get(sym) or self._book(sym)
                b.status = v["SecurityTradingStatus"]
                self._changed.add(sym)
        elif tid == TRADING_SESSION_STATUS:
            self.session_status = v["TradSesStatus"]
            self.session_text = v["Text"]
        elif tid == SEQUENCE_RESET:
            if seq == 1:
                self.session_time = v["SendingTime"]
            if v["NewSeqNo"] > seq + 1:
                self.expected = v["NewSeqNo"]

    def _entry(self, e: dict, seq: int) -> None:
        sym = e["Symbol"]
        if self.symbols is not None and sym not in self.symbols:
            return
        b = self.books.get(sym)
        r = e["RptSeq"]
        if b is None:
            b = self._book(sym)
            if r == 1:                       # the instrument's first entry ever: complete
                b.reliable = True
                b.need_seq = 0
                self._unreliable.discard(sym)
        if not b.reliable:
            if len(b.queue) >= _MAX_QUEUE:
                b.queue = []
                b.need_seq = max(b.need_seq, seq)
            b.queue.append(e)
            return
        if r <= b.rpt_seq:
            return
        if r != b.rpt_seq + 1:
            self.stats["rpt_gaps"] += 1
            self._unreliable_book(b, seq - 1)
            b.queue.append(e)
            return
        try:
            self._apply_entry(b, e)
        except _Inconsistent:
            self.stats["inconsistent"] += 1
            self._unreliable_book(b, seq)
            return
        b.rpt_seq = r
        self._changed.add(sym)

    def _px(self, pair) -> int:
        m, e = pair
        if e == self.exp:
            return m
        if e > self.exp:
            return m * 10 ** (e - self.exp)
        q, rem = divmod(m, 10 ** (self.exp - e))
        if rem:
            raise _Inconsistent(f"price {pair} finer than 10^{self.exp}")
        return q

    def _apply_entry(self, b: Book, e: dict) -> None:
        t = e["MDEntryType"]
        if t == BID or t == OFFER:
            side = b.bids if t == BID else b.offers
            price = self._px(e["MDEntryPx"])
            act = e["MDUpdateAction"]
            if act == _DELETE:
                if side.pop(price, None) is None:
                    raise _Inconsistent
            else:
                if (act == _NEW) == (price in side):
                    raise _Inconsistent
                side[price] = (e["MDEntrySize"], e["NumberOfOrders"] or 0)
        elif t == TRADE:
            b.last_trade = (self._px(e["MDEntryPx"]), e["MDEntrySize"])
            b.last_trade_id = e.get("TradeID")
        elif t == INDEX_VALUE:
            b.index_value = tuple(e["MDEntryPx"])
        elif t == EMPTY_BOOK:
            b.bids.clear()
            b.offers.clear()

    # -- snapshot channel ---------------------------------------------------------------------

    def _snapshot(self, data: bytes, now: float) -> None:
        if not self.wants_snapshot:
            return
        seq = int.from_bytes(data[:4], "little")
        if seq <= self.snap_last:
            if seq == 1 and self._is_new_reset(data, self.snap_session_time):
                self.snap_last = 0
            else:
                self._snap_ignored += 1
                return
        self.snap_last = seq
        self._snap_last_accept = now
        self._snap_ignored = 0
        _, t, v = self._dec.decode_datagram(data)
        tid = t.id
        if tid == SEQUENCE_RESET:
            self.snap_session_time = v["SendingTime"]
            self._snap_asm = None
            return
        if tid != SNAPSHOT_TID:
            return
        sym = v["Symbol"]
        asm = self._snap_asm
        if v["RouteFirst"] == 1:
            asm = self._snap_asm = {"symbol": sym, "next": seq + 1, "head": v,
                                    "entries": list(v["MDEntries"])}
        elif asm is None or asm["symbol"] != sym or asm["next"] != seq:
            self._snap_asm = None
            return
        else:
            asm["entries"].extend(v["MDEntries"])
            asm["next"] = seq + 1
        if v["LastFragment"] == 1:
            self._snap_asm = None
            if v["TotNumReports"] is not None:
                self.snap_total = v["TotNumReports"]
            if self.symbols is None or sym in self.symbols:
                self._apply_snapshot(asm["head"], asm["entries"])
                self.snap_seen.add(sym)

    def _apply_snapshot(self, head: dict, entries: list[dict]) -> None:
        sym = head["Symbol"]
        b = self.books.get(sym)
        if b is None:
            b = self._book(sym)
        if b.reliable:
            return
        last = head["LastMsgSeqNumProcessed"]
        if last < b.need_seq or self.expected is None:
            return
        b.bids, b.offers = {}, {}
        b.last_trade = None
        for e in entries:
            t = e["MDEntryType"]
            if t == BID or t == OFFER:
                side = b.bids if t == BID else b.offers
                side[self._px(e["MDEntryPx"])] = (e["MDEntrySize"], e["NumberOfOrders"] or 0)
            elif t == TRADE:
                b.last_trade = (self._px(e["MDEntryPx"]), e["MDEntrySize"])
            elif t == INDEX_VALUE:
                b.index_value = tuple(e["MDEntryPx"])
        if head["MDSecurityTradingStatus"] is not None:
            b.status = head["MDSecurityTradingStatus"]
        if head["TradSesStatus"] is not None:
            self.session_status = head["TradSesStatus"]
        b.rpt_seq = head["RptSeq"]
        b.sync_seq = last
        self.stats["snapshots_applied"] += 1
        queue, b.queue = b.queue, []
        b.reliable = True
        b.need_seq = 0
        self._unreliable.discard(sym)
        self._changed.add(sym)
        for i, e in enumerate(queue):
            r = e["RptSeq"]
            if r <= b.rpt_seq:
                continue
            if r != b.rpt_seq + 1:
                self._unreliable_book(b, last + 1)
                b.queue = queue[i:]
                return
            try:
                self._apply_entry(b, e)
            except _Inconsistent:
                self.stats["inconsistent"] += 1
                self._unreliable_book(b, last + 1)
                return
            b.rpt_seq = r

    # -- instruments channel ------------------------------------------------------------------

    def _instrument(self, data: bytes) -> None:
        _, t, v = self._dec.decode_datagram(data)
        if t.id == SECURITY_DEFINITION:
            self.instruments[v["Symbol"]] = v


# ---------------------------------------------------------------------------------------------
# asyncio adapter


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: "FeedSubscriber", channel: str) -> None:
        self.owner, self.channel = owner, channel

    def datagram_received(self, data: bytes, addr) -> None:
        self.owner._datagram(self.channel, data)

    def error_received(self, exc) -> None:      # pragma: no cover - ICMP errors on UDP
        log.debug("%s socket error: %s", self.channel, exc)


class FeedSubscriber:
    """Joins the feeds of a ``ChannelSet`` on ``interface`` and keeps ``core`` fed.

    ``replay`` is the replay service ``(host, port)`` or None (gaps then recover from
    snapshots). ``on_change(symbols)`` is called after datagrams that changed books, at
    message boundaries. The snapshot feeds are joined only while the core wants snapshots.
    """

    def __init__(self, channels: ChannelSet, *, interface: str = "127.0.0.1",
                 replay: tuple[str, int] | None = None, on_change=None, tick: float = 0.005,
                 **core_options) -> None:
        if replay is None:
            core_options.setdefault("replay_enabled", False)
        self.core = SubscriberCore(**core_options)
        self.channels = channels
        self.interface = interface
        self.replay = replay
        self.on_change = on_change
        self.tick = tick
        self._transports: dict[str, list] = {}
        self._tasks: set[asyncio.Task] = set()
        self._timer: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._synced = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._join(INCREMENTAL)
        await self._join(INSTRUMENTS)
        await self._join(SNAPSHOT)
        self._timer = self._loop.create_task(self._tick_loop(), name="feed-subscriber")

    async def _join(self, name: str) -> None:
        if name in self._transports:
            return
        ch = self.channels[name]
        transports = []
        try:
            for group, port in ch.feeds:
                sock = receiver(group, port, self.interface)
                tr, _ = await self._loop.create_datagram_endpoint(
                    lambda: _Proto(self, name), sock=sock)
                transports.append(tr)
        except BaseException:
            for tr in transports:
                tr.close()
            raise
        self._transports[name] = transports

    def _leave(self, name: str) -> None:
        for tr in self._transports.pop(name, ()):
            tr.close()

    def _datagram(self, channel: str, data: bytes) -> None:
        core = self.core
        core.on_datagram(channel, data, self._loop.time())
        if core._actions:
            self._dispatch()
        if self.on_change is not None and core.changes_ready:
            self.on_change(core.take_changes())

    def _dispatch(self) -> None:
        for act in self.core.take_actions():
            if isinstance(act, ReplayRequest):
                t = self._loop.create_task(self._replay(act))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)

    async def _replay(self, req: ReplayRequest) -> None:
        from marketdata.replay import ReplayRejected, request_replay
        host, port = self.replay
        try:
            data = await request_replay(host, port, req.begin, req.end,
                                        timeout=self.core.replay_timeout)
        except ReplayRejected as exc:
            self.core.on_replay_failed(req.begin, req.end, str(exc), self._loop.time())
        except (OSError, asyncio.TimeoutError) as exc:
            self.core.on_replay_failed(req.begin, req.end, f"{type(exc).__name__}: {exc}",
                                       self._loop.time())
        else:
            self.core.on_replay(req.begin, req.end, data, self._loop.time())
        if self.on_change is not None and self.core.changes_ready:
            self.on_change(self.core.take_changes())

    async def _tick_loop(self) -> None:
        core = self.core
        while True:
            await asyncio.sleep(self.tick)
            core.on_timer(self._loop.time())
            if core._actions:
                self._dispatch()
            want = core.wants_snapshot
            if want and SNAPSHOT not in self._transports:
                try:
                    await self._join(SNAPSHOT)
                except OSError as exc:          # pragma: no cover
                    log.error("cannot join the snapshot feeds: %s", exc)
            elif not want and SNAPSHOT in self._transports:
                self._leave(SNAPSHOT)
            if core.synced:
                self._synced.set()
            else:
                self._synced.clear()

    async def wait_synced(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name in list(self._transports):
            self._leave(name)
