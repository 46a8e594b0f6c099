"""FAST multicast market-data publisher (spec/feed.md).

Two layers:

``FeedPublisher`` -- the core, no I/O: engine events, index values and "now" in; datagrams out
through ``sink(channel, msg_seq_num, datagram)``.
- Engine events are grouped by ``cmd_seq``: the market-data entries one engine command causes
  (``marketdata.mbp.FeedBooks``: book levels to ``depth`` and trades, RptSeq per instrument)
  travel in one MarketDataIncrementalRefresh, split into fragments (LastFragment) when they do
  not fit ``max_datagram``. ``on_event`` buffers; ``flush`` publishes what is buffered (the
  service flushes as soon as the replication frame holding the events has been read).
- ``TradingStatus`` events: an instrument halt or release becomes SecurityStatus
  (SecurityTradingStatus 2 halted / 17 trading), a market halt or release TradingSessionStatus
  (TradSesStatus 1 halted / 2 open), both on the incremental channel after the command's
  entries. Firm halts are private: only their cancels show, as book entries.
- MsgSeqNum is counted per channel from 1, gap-free, over every datagram of the channel
  (heartbeats included). ``start()`` sends a SequenceReset (MsgSeqNum 1, NewSeqNo 2) on every
  channel: a subscriber seeing a new SequenceReset knows the publisher (re)started.
- ``live = False`` (catch-up): events only update the books and status, nothing is sent; the
  service uses it to rebuild state from the replication history at start.
- ``snapshot_names()`` / ``snapshot_of(name, total)``: one MarketDataSnapshotFullRefresh per
  instrument or index (RouteFirst/LastFragment when it needs several datagrams) with
  LastMsgSeqNumProcessed = the last incremental MsgSeqNum sent, the instrument's RptSeq, the
  cycle's TotNumReports, TradSesStatus and MDSecurityTradingStatus.
- ``instruments_cycle()``: one SecurityDefinition per instrument (TotNumReports, symbol, name,
  ISIN in SecurityAltID, currency, lot, tick and band limits, trading status).
- ``heartbeats(now, interval)``: a Heartbeat on every channel idle for ``interval`` seconds.
- ``publish_index(code, value, ts_ns)``: an index value (MDEntryType 3, Symbol = index code,
  MDEntryPx = value, RptSeq counted per code) on the incremental channel; the latest value of
  every index is in the snapshot loop. See "Index values" in spec/feed.md.
- ``indices=`` (the ``[[indices]]`` definitions): the publisher embeds the index server's pure
  ``IndexCalculator`` and feeds it every engine event of each command (catch-up included), so
  every state of every index travels as an entry of the command's X message, after the entries
  of the event that caused it: Symbol = code, RptSeq = the state's ``seq``, MDEntryPx = its
  ``value`` (exact), MDEntryTime = its ``time``. The snapshot loop carries every index from the
  start (``seq`` 0: the value at reference prices, RptSeq 0). These are, field for field, the
  values the index server serves over HTTP (same calculator, same events).

``PublisherService`` -- the process: reads the engine's replication stream from seq 1
(``engine.client.ReplicationFeed``: events before the engine's head at connection time are a
silent catch-up, later ones are published live), sends every datagram to the channel's A and B
feeds on one UDP socket (IP_MULTICAST_IF, TTL, IP_MULTICAST_LOOP from ``[marketdata]``), keeps
the last ``replay_buffer`` incremental datagrams for the TCP replay service
(``marketdata.replay``), and runs the snapshot, instrument and heartbeat loops.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
from decimal import Decimal

from engine.events import BookUpdate, Trade, TradingStatus
from engine.refdata import MarketRefData
from index_server.calc import IndexCalculator
from marketdata.channels import (
    CHANNELS, INCREMENTAL, INSTRUMENTS, SNAPSHOT, ChannelSet, sender,
)
from marketdata.mbp import FeedBooks
from marketdata.messages import (
    INDEX_VALUE, SECURITY_HALTED, SECURITY_TRADING, SESSION_HALTED, SESSION_OPEN,
    MessageBuilder, entry_time, to_pair,
)
from marketdata.replay import CHANNEL_INCREMENTAL, ReplayBuffer, ReplayServer

log = logging.getLogger("bourse.marketdata")

_MARKET, _INSTRUMENT = 1, 3          # engine.commands.HaltScope


class FeedPublisher:
    def __init__(self, refdata: MarketRefData, sink, *, depth: int = 20,
                 max_datagram: int = 1400, clock_ns=time.time_ns, mono=time.monotonic,
                 indices=()) -> None:
        self.refdata = refdata
        self.exp = -refdata.price_decimals
        self.books = FeedBooks(refdata, depth)
        self.by_symbol = {i.symbol: i for i in refdata.instruments}
        self.builder = MessageBuilder(max_datagram)
        self.sink = sink
        self.clock_ns = clock_ns
        self.mono = mono
        self.next_seq = {c: 1 for c in CHANNELS}
        self.last_sent = {c: float("-inf") for c in CHANNELS}
        self.market_halted = False
        self.halted: set[str] = set()
        self.indices: dict[str, tuple[tuple[int, int], int, int]] = {}   # code -> (px, rpt, ts)
        #: the embedded index calculator (``indices`` given): its codes are computed here
        self.index_calc: IndexCalculator | None = None
        if indices:
            self.index_calc = IndexCalculator(indices, refdata)
            for v in self.index_calc.values():
                self.indices[v.code] = (to_pair(Decimal(v.value)), v.seq, v.time)
        self.live = True
        self._pending: list = []
        self.commands = 0
        self.entries = 0
        self.datagrams = {c: 0 for c in CHANNELS}
        #: benchmarks: when lists, per published command, ns from the event's sequencer
        #: timestamp (wall clock) and from ``arrival_ns`` (perf counter, set by the service
        #: when a replication frame arrives) to its last datagram sent
        self.commit_latency: list[int] | None = None
        self.arrival_latency: list[int] | None = None
        self.arrival_ns = 0

    # -- sending --------------------------------------------------------------------------

    def _emit(self, channel: str, datagrams: list[bytes]) -> None:
        seq = self.next_seq[channel]
        sink = self.sink
        for d in datagrams:
            sink(channel, seq, d)
            seq += 1
        self.next_seq[channel] = seq
        self.datagrams[channel] += len(datagrams)
        self.last_sent[channel] = self.mono()

    @property
    def last_incremental(self) -> int:
        """MsgSeqNum of the last incremental datagram sent (0: none)."""
        return self.next_seq[INCREMENTAL] - 1

    def start(self) -> None:
        """Begin every channel with a SequenceReset (MsgSeqNum 1, NewSeqNo 2)."""
        now = self.clock_ns()
        for ch in CHANNELS:
            if self.next_seq[ch] != 1:
                raise RuntimeError("start() must come first")
            self._emit(ch, [self.builder.sequence_reset(1, 2, now)])

    # -- engine events ----------------------------------------------------------------------

    def on_event(self, ev) -> None:
        pending = self._pending
        if pending and pending[-1].cmd_seq != ev.cmd_seq:
            self.flush()
            pending = self._pending
        pending.append(ev)

    def on_events(self, events) -> None:
        pending = self._pending
        for ev in events:                   # on_event(ev), inlined
            if pending and pending[-1].cmd_seq != ev.cmd_seq:
                self.flush()
                pending = self._pending
            pending.append(ev)
        self.flush()

    def flush(self) -> None:
        evs = self._pending
        if not evs:
            return
        self._pending = []
        entries: list[dict] = []
        status = None
        on_event = self.books.on_event
        calc = self.index_calc
        for ev in evs:
            t = type(ev)
            if t is BookUpdate or t is Trade:
                entries.extend(on_event(ev))
            elif t is TradingStatus:
                (status := status or []).append(ev)
            if calc is not None:
                changed = calc.on_event(ev)
                if changed:
                    self._index_states(changed, entries)
        if status:
            for ev in status:
                self._status_state(ev)
        if not self.live:
            return
        self.commands += 1
        if entries or status:
            now = self.clock_ns()
            if entries:
                self.entries += len(entries)
                self._emit(INCREMENTAL, self.builder.incremental(
                    self.next_seq[INCREMENTAL], now, entries))
            if status:
                for ev in status:
                    self._status_message(ev, now)
            if self.commit_latency is not None:
                self.commit_latency.append(time.time_ns() - evs[0].ts)
            if self.arrival_latency is not None:
                self.arrival_latency.append(time.perf_counter_ns() - self.arrival_ns)

    def _status_state(self, ev: TradingStatus) -> None:
        if ev.scope == _MARKET:
            self.market_halted = ev.halted
        elif ev.scope == _INSTRUMENT and ev.target in self.by_symbol:
            if ev.halted:
                self.halted.add(ev.target)
            else:
                self.halted.discard(ev.target)

    def _status_message(self, ev: TradingStatus, now: int) -> None:
        seq = self.next_seq[INCREMENTAL]
        if ev.scope == _MARKET:
            d = self.builder.trading_session_status(
                seq, now, SESSION_HALTED if ev.halted else SESSION_OPEN, ev.text)
        elif ev.scope == _INSTRUMENT and ev.target in self.by_symbol:
            inst = self.by_symbol[ev.target]
            d = self.builder.security_status(
                seq, now, inst.symbol, SECURITY_HALTED if ev.halted else SECURITY_TRADING,
                (inst.band_high, self.exp), (inst.band_low, self.exp))
        else:
            return
        self._emit(INCREMENTAL, [d])

    def instrument_status(self, symbol: str) -> int:
        return SECURITY_HALTED if symbol in self.halted else SECURITY_TRADING

    def go_live(self) -> None:
        self.flush()
        self.live = True

    # -- index values -------------------------------------------------------------------------

    def _index_states(self, changed: list[str], entries: list[dict]) -> None:
        """The entries of the index states one event made (embedded calculator)."""
        calc = self.index_calc
        indices = self.indices
        for code in dict.fromkeys(changed):
            v = calc.value(code)
            px = to_pair(Decimal(v.value))
            prev_px, rpt, _ = indices[code]
            t = entry_time(v.time)
            # Several states at one event (a day change or rebalance, then a trade): only
            # trades move the value, so the earlier ones carry the previous value.
            while rpt + 1 < v.seq:
                rpt += 1
                entries.append({"MDUpdateAction": 0, "MDEntryType": INDEX_VALUE, "Symbol": code,
                                "RptSeq": rpt, "MDEntryPx": prev_px, "MDEntryTime": t})
            entries.append({"MDUpdateAction": 0, "MDEntryType": INDEX_VALUE, "Symbol": code,
                            "RptSeq": v.seq, "MDEntryPx": px, "MDEntryTime": t})
            indices[code] = (px, v.seq, v.time)

    def publish_index(self, code: str, value, ts_ns: int | None = None) -> None:
        """Publish one index value: ``value`` a Decimal, an int or a (mantissa, exponent) pair;
        ``ts_ns`` nanoseconds since the epoch (default: now)."""
        if code in self.by_symbol:
            raise ValueError(f"index code {code!r} is also an instrument symbol")
        if self.index_calc is not None and code in self.index_calc.codes:
            raise ValueError(f"index {code!r} is computed by this publisher")
        if not code:
            raise ValueError("empty index code")
        px = to_pair(value)
        ts = self.clock_ns() if ts_ns is None else ts_ns
        prev = self.indices.get(code)
        rpt = (prev[1] if prev else 0) + 1
        self.indices[code] = (px, rpt, ts)
        self.flush()
        if not self.live:
            return
        entry = {"MDUpdateAction": 0, "MDEntryType": INDEX_VALUE, "Symbol": code,
                 "RptSeq": rpt, "MDEntryPx": px, "MDEntryTime": entry_time(ts)}
        self.entries += 1
        self._emit(INCREMENTAL, self.builder.incremental(
            self.next_seq[INCREMENTAL], self.clock_ns(), [entry]))

    # -- loops -------------------------------------------------------------------------------

    def snapshot_names(self) -> list[str]:
        return list(self.books.instruments) + list(self.indices)

    def snapshot_of(self, name: str, total: int) -> None:
        """Send the snapshot of one instrument or index (part of a cycle of ``total``)."""
        self.flush()
        if name in self.indices:
            px, rpt, ts = self.indices[name]
            entries = [{"MDEntryType": INDEX_VALUE, "MDEntryPx": px,
                        "MDEntryTime": entry_time(ts) if ts else None}]
            status = None
        else:
            rpt, entries = self.books.snapshot(name)
            status = self.instrument_status(name)
        header = {"LastMsgSeqNumProcessed": self.last_incremental, "RptSeq": rpt,
                  "TotNumReports": total, "Symbol": name,
                  "TradSesStatus": SESSION_HALTED if self.market_halted else SESSION_OPEN,
                  "MDSecurityTradingStatus": status}
        self._emit(SNAPSHOT, self.builder.snapshot(self.next_seq[SNAPSHOT], self.clock_ns(),
                                                   header, entries))

    def snapshot_cycle(self) -> None:
        names = self.snapshot_names()
        for name in names:
            self.snapshot_of(name, len(names))

    def instruments_cycle(self) -> None:
        insts = self.refdata.instruments
        now = self.clock_ns()
        b = self.builder
        for inst in insts:
            d = b.security_definition(self.next_seq[INSTRUMENTS], now, len(insts), inst, self.exp,
                                      self.instrument_status(inst.symbol))
            self._emit(INSTRUMENTS, [d])

    def heartbeats(self, interval: float) -> None:
        now = self.mono()
        for ch in CHANNELS:
            if now - self.last_sent[ch] >= interval:
                self._emit(ch, [self.builder.heartbeat(self.next_seq[ch], self.clock_ns())])


def _index_ts(ts) -> int | None:
    if ts is None:
        return None
    if isinstance(ts, datetime.datetime):
        return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000
    if isinstance(ts, int):
        return ts
    return None


class PublisherService:
    """The market-data process: replication stream in, multicast datagrams and replay out."""

    def __init__(self, cfg, *, replication: tuple[str, int] | None = None,
                 node_id: str | None = None, channels: ChannelSet | None = None,
                 catch_up: bool = True, indices: bool = True) -> None:
        md = cfg.marketdata
        self.catch_up = catch_up       # False: publish the history too (benchmarks)
        self.cfg = cfg
        self.md = md
        self.replication = replication or (cfg.engine.host, cfg.engine.replication_port)
        self.node_id = node_id or f"marketdata-{os.getpid()}"
        self.channels = channels or ChannelSet.from_config(md)
        # one connected socket per feed of each channel: a send names no address to parse
        # and route per datagram (multicast draws no ICMP errors, so nothing is refused)
        self.socks: list = []
        self._sends: dict[str, list] = {}
        try:
            for ch in self.channels:
                for addr in ch.feeds:
                    sock = sender(md.interface, md.ttl, md.loopback)
                    self.socks.append(sock)
                    try:
                        sock.connect(addr)
                    except OSError as exc:
                        raise OSError(exc.errno, f"feed {ch.name} {addr[0]}:{addr[1]}: "
                                                 f"{exc.strerror or exc}") from exc
                    self._sends.setdefault(ch.name, []).append(sock.send)
        except BaseException:
            self.close_sockets()
            raise
        self.replay_buffer = ReplayBuffer(md.replay_buffer)
        self.replay = ReplayServer({CHANNEL_INCREMENTAL: self.replay_buffer}, md.replay_host,
                                   md.replay_port, max_messages=md.replay_max_messages)
        # indices: compute the [[indices]] in this process and publish every state (spec/feed.md
        # "Index values"); False leaves index values to index_hook / add_index_source
        self.publisher = FeedPublisher(cfg.market, self._sink, depth=md.depth,
                                       max_datagram=md.max_datagram,
                                       indices=cfg.indices if indices else ())
        self.send_errors = 0
        self.caught_up = asyncio.Event()
        self.failed: str | None = None
        self.stopped = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._flush_armed = False
        self.last_seq = 0              # last replication event seq handled

    def _sink(self, channel: str, seq: int, data: bytes) -> None:
        if channel == INCREMENTAL:
            self.replay_buffer.add(seq, data)
        for send in self._sends[channel]:
            try:
                send(data)
            except OSError:          # full send buffer: subscribers recover by replay
                self.send_errors += 1

    def close_sockets(self) -> None:
        for sock in self.socks:
            sock.close()

    def endpoints(self) -> dict:
        eps = {"interface": self.md.interface, "ttl": self.md.ttl,
               **{ch.name: ch.describe() for ch in self.channels},
               "replay": f"{self.md.replay_host}:{self.replay.port}"}
        if self.publisher.index_calc is not None:
            eps["indices"] = ",".join(self.publisher.index_calc.codes)
        return eps

    async def start(self) -> None:
        await self.replay.start()
        self.publisher.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._pump(), name="md-pump"),
                       loop.create_task(self._snapshots(), name="md-snapshots"),
                       loop.create_task(self._instruments(), name="md-instruments"),
                       loop.create_task(self._heartbeats(), name="md-heartbeats")]

    def add_index_source(self, source) -> asyncio.Task:
        """Publish index values from an ``asyncio.Queue`` (``None`` ends it) or an async
        iterable of index values (see ``index_hook``)."""
        async def consume():
            if isinstance(source, asyncio.Queue):
                while (item := await source.get()) is not None:
                    self.index_hook(item)
            else:
                async for item in source:
                    if item is not None:
                        self.index_hook(item)

        task = asyncio.get_running_loop().create_task(consume(), name="md-index")
        self._tasks.append(task)
        return task

    def index_hook(self, item) -> None:
        """Publish one index value: an object with ``code``, ``value`` (Decimal, decimal
        string or (mantissa, exponent)) and ``ts`` or ``time`` (ns or datetime; default now).
        A plain callable, usable as a hook of the index server's publisher."""
        try:
            value = item.value
            if isinstance(value, str):
                value = Decimal(value)
            ts = getattr(item, "ts", None)
            if ts is None:
                ts = getattr(item, "time", None) or None
            self.publisher.publish_index(item.code, value, _index_ts(ts))
        except (ValueError, TypeError, ArithmeticError, AttributeError) as exc:
            log.warning("index value %r not published: %s", item, exc)

    def _flush(self) -> None:
        self._flush_armed = False
        self.publisher.flush()

    async def _head(self) -> int:
        from engine.client import EngineLink
        host, port = self.replication
        link = await EngineLink.connect(host, port, component="marketdata",
                                        node_id=self.node_id, config_digest=self.cfg.digest,
                                        subscribe_from=1)
        head = link.welcome.next_event_seq
        await link.close()
        return head

    async def _pump(self) -> None:
        from engine.client import LinkClosed, LinkRefused, ReplicationFeed
        pub = self.publisher
        try:
            head = await self._head() if self.catch_up else 1
            pub.live = head <= 1
            if pub.live:
                self.caught_up.set()
            else:
                log.info("catching up with the replication stream up to seq %d", head - 1)
            host, port = self.replication
            feed = ReplicationFeed(host, port, component="marketdata", node_id=self.node_id,
                                   config_digest=self.cfg.digest, from_seq=1)
            loop = asyncio.get_running_loop()

            def on_batch(batch: list) -> None:    # called as the bytes arrive
                if not self._flush_armed:
                    self._flush_armed = True
                    pub.arrival_ns = time.perf_counter_ns()
                    loop.call_soon(self._flush)
                if pub.live:
                    on_event = pub.on_event
                    for ev in batch:
                        on_event(ev)
                    self.last_seq = batch[-1].seq
                    return
                for ev in batch:
                    pub.on_event(ev)
                    self.last_seq = ev.seq
                    if not pub.live and ev.seq >= head - 1:
                        pub.flush()
                        pub.live = True
                        self.caught_up.set()
                        log.info("caught up at seq %d; publishing live", ev.seq)

            await feed.run(on_batch)
        except asyncio.CancelledError:
            raise
        except (LinkRefused, LinkClosed, OSError, asyncio.TimeoutError) as exc:
            self.failed = f"replication stream from {self.replication[0]}:" \
                          f"{self.replication[1]}: {exc or type(exc).__name__}"
            log.error("%s", self.failed)
            self.stopped.set()

    async def _snapshots(self) -> None:
        await self.caught_up.wait()
        interval = self.md.snapshot_interval_ms / 1000
        loop = asyncio.get_running_loop()
        pub = self.publisher
        while True:
            t0 = loop.time()
            names = pub.snapshot_names()
            for i, name in enumerate(names):
                pub.snapshot_of(name, len(names))
                if i % 16 == 15:
                    await asyncio.sleep(0)
            await asyncio.sleep(max(0.0, interval - (loop.time() - t0)))

    async def _instruments(self) -> None:
        interval = self.md.instrument_interval_ms / 1000
        while True:
            self.publisher.instruments_cycle()
            await asyncio.sleep(interval)

    async def _heartbeats(self) -> None:
        interval = self.md.heartbeat_ms / 1000
        tick = min(interval / 4, 0.25)
        while True:
            await asyncio.sleep(tick)
            self.publisher.heartbeats(interval)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.replay.close()
        self.close_sockets()


def run_marketdata(cfg, replication: str | None = None) -> int:
    """``bourse marketdata``: the publisher and replay service as one process."""
    import sys

    from bourse.run import announce, run_loop, setup_logging, wait_for_stop

    setup_logging()
    rep = None
    if replication:
        host, _, port = replication.rpartition(":")
        if not host or not port.isdigit():
            print(f"bourse marketdata: --engine-replication {replication!r}: expected HOST:PORT",
                  file=sys.stderr)
            return 2
        rep = (host, int(port))

    async def main() -> int:
        try:
            svc = PublisherService(cfg, replication=rep)
        except OSError as exc:
            print(f"bourse marketdata: cannot open the multicast sender on "
                  f"{cfg.marketdata.interface}: {exc}", file=sys.stderr)
            return 1
        try:
            await svc.start()
        except OSError as exc:
            print(f"bourse marketdata: cannot start the replay service on "
                  f"{cfg.marketdata.replay_host}:{cfg.marketdata.replay_port}: {exc}",
                  file=sys.stderr)
            await svc.close()
            return 1
        eps = svc.endpoints()
        log.info("FAST feed: %s; replay %s; engine replication %s:%d",
                 "; ".join(f"{c.name} {c.describe()}" for c in svc.channels), eps["replay"],
                 *svc.replication)
        announce("marketdata", **eps)
        stop = asyncio.ensure_future(wait_for_stop())
        failed = asyncio.ensure_future(svc.stopped.wait())
        await asyncio.wait([stop, failed], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        failed.cancel()
        log.info("stopping")
        await svc.close()
        if svc.failed:
            print(f"bourse marketdata: {svc.failed}", file=sys.stderr)
            return 1
        return 0

    return run_loop(main)


__all__ = ["FeedPublisher", "PublisherService", "run_marketdata"]
