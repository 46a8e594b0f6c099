"""End to end over real multicast on loopback: engine and publisher as processes, the
subscriber (and a lossy relay) in the test; at the end the subscriber's books equal the books
a replication consumer builds from the engine's BookUpdate events.

Multicast rules: sending interface 127.0.0.1, TTL 0, joins on 127.0.0.1, groups and ports
chosen per test run (239.255.x.y, high ports). The module is skipped with the reason when this
host cannot loop multicast back to itself.
"""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from bourse.config import load_config
from engine.client import EngineLink
from engine.commands import CancelOrder, HaltScope, NewOrder, SetHalt
from engine.events import BookUpdate, Trade
from engine.link import Ack, Events, Nack
from marketdata.channels import (
    INCREMENTAL, ChannelSet, receiver, sender,
)
from marketdata.mbp import FeedBooks
from marketdata.subscriber import FeedSubscriber
from tests.feed_sim import channel_set, require_multicast
from tests.procs import TEST_INSTRUMENTS, run_bourse, write_config

pytestmark = pytest.mark.integration

DEPTH = 10
SYMBOLS = ("SBER", "GAZP")
MID = {"SBER": 2800000, "GAZP": 1300000}


@pytest.fixture(scope="module", autouse=True)
def multicast_on_loopback():
    require_multicast()



def md_section(ch: ChannelSet, **extra) -> str:
    keys = {f"{c.name}_{x}": f"{c.a[0] if x == 'a' else c.b[0]}:{c.a[1] if x == 'a' else c.b[1]}"
            for c in ch for x in ("a", "b")}
    opts = dict(ttl=0, depth=DEPTH, replay_port=0, snapshot_interval_ms=100,
                instrument_interval_ms=500, heartbeat_ms=200)
    opts.update(extra)
    lines = [f'{k} = "{v}"' for k, v in keys.items()] + [f"{k} = {v}" for k, v in opts.items()]
    return "\n[marketdata]\n" + "\n".join(lines) + "\n"


def start_stack(procs, tmp_path, ch: ChannelSet, **md):
    cfg = write_config(tmp_path, instruments=TEST_INSTRUMENTS + md_section(ch, **md))
    eng = procs(["engine", "--config", str(cfg)])
    eng.wait_ready()
    host, port = eng.endpoint("replication")
    pub = procs(["marketdata", "--config", str(cfg), "--engine-replication", f"{host}:{port}"])
    ready = pub.wait_ready()
    assert ready["incremental"] == ch.incremental.describe()
    return cfg, eng, pub


def subscriber(ch: ChannelSet, pub, **kw) -> FeedSubscriber:
    return FeedSubscriber(ch, interface="127.0.0.1", replay=pub.endpoint("replay"),
                          price_exponent=-4, **kw)


class Flow:
    """Random limit orders (some crossing) and cancels on SBER and GAZP."""

    def __init__(self, eng, digest: str, seed: int) -> None:
        self.eng, self.digest = eng, digest
        self.rnd = random.Random(seed)
        self.n = 0
        self.live: list[str] = []
        self.link: EngineLink | None = None
        self.acked = 0

    async def connect(self, node: str) -> None:
        host, port = self.eng.endpoint("order_entry")
        self.link = await EngineLink.connect(host, port, component="gateway", node_id=node,
                                             config_digest=self.digest, subscribe_from=0)

    def command(self):
        rnd = self.rnd
        if self.live and rnd.random() < 0.25:
            clid = self.live.pop(rnd.randrange(len(self.live)))
            self.n += 1
            return CancelOrder("S1", "FIRM1", f"c{self.n}", clid, 0)
        self.n += 1
        sym = rnd.choice(SYMBOLS)
        side = rnd.choice((1, 2))
        price = MID[sym] + rnd.randrange(-30, 31) * 100 + (-1500 if side == 1 else 1500)
        clid = f"o{self.n}"
        self.live.append(clid)
        return NewOrder("S1", "FIRM1", "A1", clid, sym, side, 2, 0, price, 10 * rnd.randint(1, 5))

    async def run(self, count: int, batch: int = 20, pause: float = 0.004) -> None:
        link = self.link
        sent = 0
        while sent < count:
            k = min(batch, count - sent)
            link.submit([self.command() for _ in range(k)])
            sent += k
            await link.drain()
            target = self.acked + k
            while self.acked < target:
                msg = await asyncio.wait_for(link.recv(), 10)
                if isinstance(msg, Ack):
                    self.acked += msg.count
                assert not isinstance(msg, Nack), msg
                assert msg is not None
            await asyncio.sleep(pause)


async def engine_truth(eng, digest: str):
    """(levels per (symbol, side), RptSeq per symbol, last trade per symbol) from the stream."""
    host, port = eng.endpoint("replication")
    link = await EngineLink.connect(host, port, component="test", node_id=f"truth{time.time()}",
                                    config_digest=digest, subscribe_from=1)
    head = link.welcome.next_event_seq
    levels: dict = {}
    last: dict = {}
    fb = FeedBooks(_refdata(), DEPTH)
    seq = 0
    try:
        while seq < head - 1:
            msg = await asyncio.wait_for(link.recv(), 10)
            if isinstance(msg, Events):
                for ev in msg.events:
                    seq = ev.seq
                    fb.on_event(ev)
                    if isinstance(ev, BookUpdate):
                        for side, price, qty, n in ev.levels:
                            book = levels.setdefault((ev.instrument, side), {})
                            if qty:
                                book[price] = (qty, n)
                            else:
                                book.pop(price, None)
                    elif isinstance(ev, Trade):
                        last[ev.instrument] = (ev.price, ev.qty)
    finally:
        await link.close()
    tops = {}
    for (sym, side), book in levels.items():
        prices = sorted(book, reverse=(side == 1))[:DEPTH]
        tops[(sym, side)] = [(p, *book[p]) for p in prices]
    rpt = {s: fb.instruments[s].rpt_seq for s in SYMBOLS}
    return tops, rpt, last


_REF = None


def _refdata():
    global _REF
    if _REF is None:
        from bourse.config import parse_config
        _REF = parse_config(TEST_INSTRUMENTS).market
    return _REF


async def converge(sub: FeedSubscriber, truth, timeout: float = 20.0) -> None:
    tops, rpt, last = truth
    core = sub.core
    deadline = time.monotonic() + timeout
    while True:
        books = core.books
        done = core.synced and all(
            s in books and books[s].reliable and books[s].rpt_seq == rpt[s] for s in SYMBOLS)
        if done or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert done, f"subscriber did not converge: {core.stats}, " + ", ".join(
        f"{s}: rpt {books[s].rpt_seq}/{rpt[s]} reliable {books[s].reliable}"
        for s in SYMBOLS if s in books)
    for s in SYMBOLS:
        b = core.books[s]
        assert b.levels(1) == tops.get((s, 1), []), f"{s} bids"
        assert b.levels(2) == tops.get((s, 2), []), f"{s} offers"
        assert b.last_trade == last.get(s), f"{s} last trade"


def test_feed_end_to_end_with_late_join_and_subscriber_restart(tmp_path, procs):
    ch = channel_set()
    cfg, eng, pub = start_stack(procs, tmp_path, ch)
    digest = load_config(cfg).digest

    async def main():
        early = subscriber(ch, pub)
        await early.start()
        flow = Flow(eng, digest, seed=1)
        await flow.connect("gw-e2e-1")
        await flow.run(400)
        late = subscriber(ch, pub)          # joins mid-stream
        await late.start()
        restarted = subscriber(ch, pub)
        await flow.run(300)
        await early.close()                 # the early subscriber restarts mid-stream
        await restarted.start()
        await flow.run(400)
        truth = await engine_truth(eng, digest)
        try:
            for sub in (late, restarted):
                await converge(sub, truth)
            assert late.core.stats["snapshots_applied"] >= 1
            for _ in range(100):            # the instrument loop runs every 500 ms
                if late.core.instruments.keys() >= set(SYMBOLS):
                    break
                await asyncio.sleep(0.02)
            assert late.core.instruments["SBER"]["SecurityAltIDs"][0]["SecurityAltID"] == \
                "RU0009029540"
        finally:
            await late.close()
            await restarted.close()
            await flow.link.close()
        return truth

    tops, _, _ = asyncio.run(main())

    # The terminal view prints the same top of book.
    res = run_bourse(["feed", "--config", str(cfg), "--once", "--timeout", "20", "SBER"],
                     timeout=40)
    assert res.returncode == 0, res.stderr
    best_bid = tops[("SBER", 1)][0][0]
    from marketdata.view import fmt_price
    assert "SBER" in res.stdout and fmt_price(best_bid, -4) in res.stdout
    assert "synchronised" in res.stdout
    assert pub.stop() == 0


class Relay:
    """Forwards the publisher's feeds to the subscriber's, dropping, duplicating and reordering
    a share of datagrams on each feed independently, and (on request) blacking out a run of
    incremental MsgSeqNums on both feeds."""

    def __init__(self, src: ChannelSet, dst: ChannelSet, seed: int, *, drop=0.1, dup=0.05,
                 reorder=0.05) -> None:
        self.src, self.dst = src, dst
        self.rnd = random.Random(seed)
        self.drop, self.dup, self.reorder = drop, dup, reorder
        self.out = sender("127.0.0.1", 0, True)
        self.transports: list = []
        self.blackout: tuple[int, int] | None = None
        self.blackout_len = 0
        self.counts = {"in": 0, "dropped": 0, "duplicated": 0, "delayed": 0, "blackout": 0}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for c_src, c_dst in zip(self.src, self.dst):
            for f_src, f_dst in zip(c_src.feeds, c_dst.feeds):
                sock = receiver(*f_src, "127.0.0.1")
                proto = _RelayProto(self, c_src.name, f_dst, loop)
                tr, _ = await loop.create_datagram_endpoint(lambda p=proto: p, sock=sock)
                self.transports.append(tr)

    def black_out(self, n: int) -> None:
        self.blackout_len = n

    def forward(self, channel: str, dst, data: bytes, loop) -> None:
        c = self.counts
        c["in"] += 1
        if channel == INCREMENTAL and (self.blackout_len or self.blackout):
            seq = int.from_bytes(data[:4], "little")
            if self.blackout is None:
                self.blackout = (seq, seq + self.blackout_len)
                self.blackout_len = 0
            lo, hi = self.blackout
            if lo <= seq < hi:
                c["blackout"] += 1
                return
        rnd = self.rnd
        if rnd.random() < self.drop:
            c["dropped"] += 1
            return
        for _ in range(2 if rnd.random() < self.dup else 1):
            if rnd.random() < self.reorder:
                c["delayed"] += 1
                loop.call_later(rnd.uniform(0.001, 0.004), self._send, data, dst)
            else:
                self._send(data, dst)

    def _send(self, data: bytes, dst) -> None:
        try:
            self.out.sendto(data, dst)
        except OSError:
            pass

    def close(self) -> None:
        for tr in self.transports:
            tr.close()
        self.out.close()


class _RelayProto(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay, channel: str, dst, loop) -> None:
        self.relay, self.channel, self.dst, self.loop = relay, channel, dst, loop

    def datagram_received(self, data, addr) -> None:
        self.relay.forward(self.channel, self.dst, data, self.loop)


def test_feed_end_to_end_through_a_lossy_relay(tmp_path, procs):
    pub_ch, sub_ch = channel_set(), channel_set()
    cfg, eng, pub = start_stack(procs, tmp_path, pub_ch, replay_max_messages=40)
    digest = load_config(cfg).digest

    async def main():
        relay = Relay(pub_ch, sub_ch, seed=7, drop=0.1, dup=0.05, reorder=0.05)
        await relay.start()
        sub = subscriber(sub_ch, pub, replay_max=40)
        await sub.start()
        flow = Flow(eng, digest, seed=2)
        await flow.connect("gw-e2e-2")
        try:
            await flow.run(700)
            relay.black_out(150)            # more than a replay request may ask for
            await flow.run(700)
            truth = await engine_truth(eng, digest)
            await converge(sub, truth)
            st = sub.core.stats
            assert relay.counts["dropped"] > 50 and relay.counts["blackout"] == 300   # 150 on each feed
            assert st["duplicates"] > 0 and st["replay_requests"] > 0 and st["replayed"] > 0
            assert st["holes"] >= 1 and st["snapshots_applied"] >= 1
        finally:
            await sub.close()
            relay.close()
            await flow.link.close()

    asyncio.run(main())
    assert pub.stop() == 0


def test_index_values_and_trading_status_reach_the_subscriber(tmp_path, procs):
    """The publisher service in-process, fed by an index queue; status from operator halts."""
    from decimal import Decimal
    from types import SimpleNamespace

    from marketdata.publisher import PublisherService

    ch = channel_set()
    cfg_path = write_config(tmp_path, instruments=TEST_INSTRUMENTS + md_section(ch))
    eng = procs(["engine", "--config", str(cfg_path)])
    eng.wait_ready()
    cfg = load_config(cfg_path)

    async def main():
        svc = PublisherService(cfg, replication=eng.endpoint("replication"))
        await svc.start()
        queue: asyncio.Queue = asyncio.Queue()
        svc.add_index_source(queue)
        sub = FeedSubscriber(ch, replay=("127.0.0.1", svc.replay.port), price_exponent=-4)
        await sub.start()
        host, port = eng.endpoint("order_entry")
        op = await EngineLink.connect(host, port, component="operator", node_id="op-e2e",
                                      config_digest=cfg.digest)
        try:
            assert await sub.wait_synced(10)
            queue.put_nowait(SimpleNamespace(code="IMOEX", value=Decimal("3215.47"),
                                             ts=time.time_ns()))
            queue.put_nowait(SimpleNamespace(code="IMOEX", value=(321612, -2), ts=None))
            # the index server's IndexValue shape: decimal string, time in ns
            svc.index_hook(SimpleNamespace(code="RTSI", value="1101.50", time=time.time_ns()))
            svc.index_hook(SimpleNamespace(code="BAD", value=1.5, time=0))      # refused, logged
            op.submit([SetHalt(HaltScope.INSTRUMENT, "SBER", True, "news"),
                       SetHalt(HaltScope.MARKET, "", True, "tech")])
            await op.drain()
            deadline = time.monotonic() + 10
            core = sub.core
            while time.monotonic() < deadline:
                if (core.indices.get("IMOEX") == (321612, -2) and "RTSI" in core.indices
                        and "SBER" in core.books
                        and core.books["SBER"].status == 2 and core.session_status == 1):
                    break
                await asyncio.sleep(0.02)
            assert core.indices.get("IMOEX") == (321612, -2)
            assert core.indices["RTSI"] == (110150, -2) and "BAD" not in core.indices
            assert core.books["SBER"].status == 2 and core.session_status == 1
            # a late subscriber gets the same from the snapshot loop alone
            late = FeedSubscriber(ch, replay=None, price_exponent=-4)
            await late.start()
            try:
                assert await late.wait_synced(10)
                assert late.core.indices["IMOEX"] == (321612, -2)
                assert late.core.books["SBER"].status == 2 and late.core.session_status == 1
            finally:
                await late.close()
        finally:
            await op.close()
            await sub.close()
            await svc.close()

    asyncio.run(main())


def test_bourse_up_starts_the_publisher_and_prints_its_groups(tmp_path, procs):
    ch = channel_set()
    cfg = write_config(tmp_path, instruments=TEST_INSTRUMENTS + md_section(ch))
    up = procs(["up", "--config", str(cfg)])
    ready = up.wait_ready(60)
    assert ready["marketdata"]["incremental"] == ch.incremental.describe()
    assert ready["marketdata"]["replay"].startswith("127.0.0.1:")
    out = "".join(up.stdout_lines)
    assert "marketdata" in out and ch.snapshot.describe() in out
    assert up.stop() == 0


def test_feed_once_without_a_publisher_fails_clearly(tmp_path):
    ch = channel_set()
    cfg = write_config(tmp_path, instruments=TEST_INSTRUMENTS + md_section(ch))
    res = run_bourse(["feed", "--config", str(cfg), "--once", "--timeout", "1"], timeout=30)
    assert res.returncode == 1
    assert "not synchronised" in res.stderr and "Traceback" not in res.stderr
