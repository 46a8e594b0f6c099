"""Helpers for feed tests: an in-process market (engine + publisher) and a lossy network.

``Market`` applies commands to an ``engine.core.Engine`` and publishes its events through a
``FeedPublisher`` whose sink records every datagram (and keeps a replay buffer). ``LossyNet``
delivers a market's datagrams to a ``SubscriberCore`` over two simulated feeds with drops,
duplicates and reordering, answers its replay requests from the market's replay buffer and
drives its clock. Everything is deterministic for a given seed.
"""
from __future__ import annotations

import heapq
import os
import random
import time

import pytest

from bench.workload import default_refdata, generate
from engine.commands import SequencedCommand
from engine.core import Engine
from marketdata.channels import INCREMENTAL, Channel, ChannelSet, multicast_loopback_works
from marketdata.publisher import FeedPublisher
from marketdata.replay import ReplayBuffer
from marketdata.subscriber import SubscriberCore

T0 = 1_700_000_000_000_000_000


class Market:
    def __init__(self, *, depth: int = 10, max_datagram: int = 1400, ref=None,
                 replay_size: int = 1_000_000) -> None:
        self.ref = ref or default_refdata()
        self.depth = depth
        self.max_datagram = max_datagram
        self.engine = Engine(self.ref)
        self.events: list = []
        self.out: list[tuple[str, int, bytes]] = []
        self.listeners: list = []
        self.mono = 0.0
        self.ts = T0
        self.next_cmd = 1
        self.replay = ReplayBuffer(replay_size)
        self.pub = self._publisher()
        self.pub.start()

    def _publisher(self) -> FeedPublisher:
        return FeedPublisher(self.ref, self._sink, depth=self.depth,
                             max_datagram=self.max_datagram, clock_ns=lambda: self.ts,
                             mono=lambda: self.mono)

    def _sink(self, ch: str, seq: int, data: bytes) -> None:
        if ch == INCREMENTAL:
            self.replay.add(seq, data)
        self.out.append((ch, seq, data))
        for listener in list(self.listeners):
            listener(ch, seq, data)

    def apply(self, cmd) -> list:
        evs = self.engine.apply(SequencedCommand(self.next_cmd, self.ts, "t", 0, cmd))
        self.next_cmd += 1
        self.ts += 1_000_000
        self.events.extend(evs)
        self.pub.on_events(evs)
        return evs

    def run(self, cmds, snapshot_every: int = 0) -> None:
        for i, cmd in enumerate(cmds, 1):
            self.apply(cmd)
            if snapshot_every and i % snapshot_every == 0:
                self.pub.snapshot_cycle()

    def restart_publisher(self) -> None:
        """A new publisher process: SequenceReset, silent catch-up from the whole history.

        Datagrams in flight are delivered first (a restart takes longer than any reordering).
        """
        for listener in self.listeners:
            flush = getattr(getattr(listener, "__self__", None), "deliver", None)
            if flush is not None:
                flush(1 << 62)
        pub = self._publisher()
        pub.start()
        pub.live = False
        pub.on_events(self.events)
        pub.go_live()
        self.pub = pub

    def expected(self, symbol: str, side: int) -> list[tuple[int, int, int]]:
        return [tuple(x) for x in self.engine.book_levels(symbol, side)[:self.depth]]


def workload(n: int, seed: int, ref=None) -> list:
    return generate(ref or default_refdata(), n, seed=seed)


class LossyNet:
    """Two feeds between a market and a subscriber core, with a loss model.

    Each datagram is sent on A and B; each copy is dropped with ``drop_a`` / ``drop_b``,
    duplicated with ``dup`` and delayed by 1..8 datagrams with ``reorder``. ``blackout`` is a
    set of incremental MsgSeqNums lost on both feeds. The clock advances 0.5 ms per datagram.
    """

    def __init__(self, sub: SubscriberCore, market: Market, seed: int = 0, *, drop_a=0.0,
                 drop_b=0.0, dup=0.0, reorder=0.0, blackout=(), replay_ok: bool = True,
                 channels=None) -> None:
        self.sub, self.market = sub, market
        self.rnd = random.Random(seed)
        self.drop = (drop_a, drop_b)
        self.dup, self.reorder = dup, reorder
        self.blackout = set(blackout)
        self.replay_ok = replay_ok
        self.channels = channels
        self.inflight: list = []
        self.step = 0
        self.n = 0
        self.now = 0.0
        self.replay_answers = 0

    def attach(self) -> "LossyNet":
        self.market.listeners.append(self.send)
        return self

    def detach(self) -> None:
        self.market.listeners.remove(self.send)

    def send(self, ch: str, seq: int, data: bytes) -> None:
        if self.channels is not None and ch not in self.channels:
            return
        self.step += 1
        rnd = self.rnd
        if not (ch == INCREMENTAL and seq in self.blackout):
            for p in self.drop:
                if rnd.random() < p:
                    continue
                for _ in range(2 if rnd.random() < self.dup else 1):
                    delay = rnd.randint(1, 8) if rnd.random() < self.reorder else 0
                    self.n += 1
                    heapq.heappush(self.inflight, (self.step + delay, self.n, ch, data))
        self.deliver()

    def deliver(self, until: int | None = None) -> None:
        until = self.step if until is None else until
        while self.inflight and self.inflight[0][0] <= until:
            _, _, ch, data = heapq.heappop(self.inflight)
            self.now += 0.0005
            self.sub.on_datagram(ch, data, self.now)
            self.service()

    def service(self) -> None:
        sub = self.sub
        sub.on_timer(self.now)
        for act in sub.take_actions():
            self.replay_answers += 1
            if self.replay_ok:
                try:
                    data = self.market.replay.get(act.begin, act.end)
                except KeyError:
                    sub.on_replay_failed(act.begin, act.end, "out of range", self.now)
                else:
                    sub.on_replay(act.begin, act.end, data, self.now)
            else:
                sub.on_replay_failed(act.begin, act.end, "rejected", self.now)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + 0.01)
            self.service()

    def settle(self, rounds: int = 60) -> bool:
        """Flush, then heartbeats and snapshot cycles until the subscriber is synchronised."""
        for _ in range(rounds):
            self.deliver(self.step + 100)
            self.advance(0.05)
            self.market.mono += 10.0
            self.market.pub.heartbeats(1.0)
            self.market.pub.snapshot_cycle()
            self.deliver(self.step + 100)
            self.advance(0.05)
            if self.sub.synced and self.sub.expected > self.market.pub.last_incremental:
                return True
        return False


def assert_books_equal(sub: SubscriberCore, market: Market, symbols=None) -> None:
    for inst in market.ref.instruments:
        if symbols is not None and inst.symbol not in symbols:
            continue
        b = sub.books.get(inst.symbol)
        exp_bids, exp_offers = market.expected(inst.symbol, 1), market.expected(inst.symbol, 2)
        if b is None:
            assert not exp_bids and not exp_offers, f"{inst.symbol}: no book at the subscriber"
            continue
        assert b.reliable, f"{inst.symbol} still unreliable"
        assert b.levels(1) == exp_bids, f"{inst.symbol} bids differ"
        assert b.levels(2) == exp_offers, f"{inst.symbol} offers differ"
        assert b.rpt_seq == market.pub.books.instruments[inst.symbol].rpt_seq
        lt = market.pub.books.instruments[inst.symbol].last_trade
        assert b.last_trade == (tuple(lt) if lt else None), f"{inst.symbol} last trade differs"


# ------------------------------------------------------------------ real multicast (e2e tests)

_rnd = random.Random(os.getpid() ^ time.time_ns())


def require_multicast() -> None:
    """Skip the calling test module where multicast does not loop back on 127.0.0.1."""
    ok, why = multicast_loopback_works("127.0.0.1")
    if not ok:
        pytest.skip(f"multicast on loopback does not work on this host: {why}")


def channel_set(first_group: int = 1) -> ChannelSet:
    """Six fresh feeds: 239.255.A.<first_group..+5> on six consecutive high ports, random per
    call so that tests running side by side never share a group."""
    a = _rnd.randrange(16, 250)
    port = _rnd.randrange(30000, 60000, 8)
    feeds = [(f"239.255.{a}.{i + first_group}", port + i) for i in range(6)]
    return ChannelSet(Channel(INCREMENTAL, feeds[0], feeds[1]),
                      Channel("snapshot", feeds[2], feeds[3]),
                      Channel("instruments", feeds[4], feeds[5]))
