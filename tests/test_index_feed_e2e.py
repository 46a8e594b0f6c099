"""Index values on the FAST feed and on the vendor HTTP API: the same values, field for field.

The market-data publisher embeds the index calculator (spec/feed.md, "Index values"): every
index state travels on the incremental channel (Symbol = code, RptSeq = the state's ``seq``,
MDEntryPx = ``value``, MDEntryTime = ``time``) and the snapshot loop carries the latest one.

- In process: the publisher core against a calculator fed the same events (every state, one
  RptSeq each, the catch-up, a day change at a trade).
- End to end: engine, index server and market-data publisher as processes, trades through the
  engine link, a vendor client on the HTTP live stream, a multicast subscriber from the start,
  a raw capture of the incremental channel and a late-joining subscriber: every value equals
  the one computed here with fractions from the trade prices and the configured constituents.
- ``bourse up``: the deployed topology puts the index server's values on the feed.

Multicast rules (as tests/test_feed_e2e.py): sending interface 127.0.0.1, TTL 0, joins on
127.0.0.1, groups and ports chosen per test run; skipped with the reason when this host cannot
loop multicast back to itself.
"""
from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from fractions import Fraction

import aiohttp
import pytest

from bourse.config import load_config, parse_config
from engine.client import EngineLink
from engine.commands import NewOrder
from engine.events import OrderAccepted, Trade
from engine.link import Ack, Nack
from index_server.calc import DAY_NS, IndexCalculator
from marketdata.channels import (
    INCREMENTAL, SNAPSHOT, ChannelSet, receiver,
)
from marketdata.messages import INCREMENTAL as X_TID, INDEX_VALUE, SNAPSHOT as W_TID, decoder, \
    entry_time, to_pair
from marketdata.publisher import FeedPublisher
from marketdata.subscriber import FeedSubscriber, SubscriberCore
from tests.feed_sim import channel_set, require_multicast
from tests.procs import TEST_INSTRUMENTS, write_config

# Test instruments (tests/procs.py): SBER 280.00, GAZP 130.00, tick 0.01, price_decimals 4.
# FXB is published over HTTP on change; FXS on a 200 ms cadence (the HTTP stream conflates).
INDICES = """
[index]
host = "127.0.0.1"
http_port = 0
cadence_ms = 100
on_change = true
on_change_max_per_s = 1000

[[indices]]
code = "FXB"
name = "Feed Test Broad"
base_value = "1000"
weight_cap_pct = "50"

[[indices.constituents]]
symbol = "SBER"
shares = 1000000
free_float = "0.5"

[[indices.constituents]]
symbol = "GAZP"
shares = 2000000
free_float = "0.6"

[[indices]]
code = "FXS"
name = "Feed Test Single"
base_value = "100"
weight_cap_pct = "100"
cadence_ms = 200
on_change = false

[[indices.constituents]]
symbol = "SBER"
shares = 1000000
free_float = "0.5"
"""

CODES = ("FXB", "FXS")
T0 = 1_749_970_800 * 10**9                       # 2025-06-15T07:00:00Z
DEC = decoder()


# ---------------------------------------------------------------------------------------------
# The indices computed by hand (spec/index-vendor-api.md, methodology), with fractions


def q2(x: Fraction) -> str:
    """Index points, 2 decimals, half to even (``round`` of a Fraction is half-even)."""
    r = round(x * 100)
    return f"{'-' if r < 0 else ''}{abs(r) // 100}.{abs(r) % 100:02d}"


def floor10(x: Fraction) -> Fraction:
    return Fraction(x.numerator * 10**10 // x.denominator, 10**10)


def weight_caps(x: list[Fraction], w0: list[Fraction], cap: Fraction) -> list[Fraction]:
    """Weight-cap coefficients: capped constituents get ``cap`` of the new total."""
    n = len(x)
    capped: set[int] = set()
    while len(capped) < n:
        free = sum(x[j] for j in range(n) if j not in capped)
        rest = 1 - len(capped) * cap
        new = {i for i in range(n) if i not in capped and x[i] * rest / free > cap}
        if not new:
            break
        capped |= new
    if len(capped) == n:
        target = {i: sum(x) / n for i in range(n)}
    else:
        free = sum(x[j] for j in range(n) if j not in capped)
        target = {i: cap * free / (1 - len(capped) * cap) for i in capped}
    return [floor10(w0[i] * target[i] / x[i]) if i in target else w0[i] for i in range(n)]


class Model:
    """Every index of a configuration without rebalances or given divisors: caps and divisor
    at the reference prices (the index starts at its base value), then one state per trade."""

    def __init__(self, cfg) -> None:
        scale = 10 ** cfg.market.price_decimals
        self.prices = {i.symbol: Fraction(i.ref_price, scale) for i in cfg.market.instruments}
        self.factors: dict[str, dict[str, Fraction]] = {}
        self.divisor: dict[str, Fraction] = {}
        self.states: dict[str, list[str]] = {}          # code -> value of state seq 0, 1, ...
        for d in cfg.indices:
            assert d.divisor is None and d.base_capitalisation is None and not d.rebalances
            cons = d.basket.constituents
            x = [self.prices[c.symbol] * c.shares * Fraction(c.free_float) * Fraction(c.weight_cap)
                 for c in cons]
            w = weight_caps(x, [Fraction(c.weight_cap) for c in cons],
                            Fraction(d.basket.weight_cap_pct) / 100)
            self.factors[d.code] = {c.symbol: c.shares * Fraction(c.free_float) * wi
                                    for c, wi in zip(cons, w)}
            self.divisor[d.code] = self._mc(d.code) / Fraction(d.base_value)
            self.states[d.code] = [q2(self._mc(d.code) / self.divisor[d.code])]

    def _mc(self, code: str) -> Fraction:
        return sum(self.prices[s] * f for s, f in self.factors[code].items())

    def trade(self, symbol: str, price: str) -> None:
        self.prices[symbol] = Fraction(Decimal(price))
        for code, factors in self.factors.items():
            if symbol in factors:
                self.states[code].append(q2(self._mc(code) / self.divisor[code]))

    def new_day(self) -> None:
        """A day change: a new state of every index, same value."""
        for states in self.states.values():
            states.append(states[-1])

    def final(self) -> dict[str, tuple[int, str]]:
        """code -> (seq, value) of the last state."""
        return {c: (len(s) - 1, s[-1]) for c, s in self.states.items()}


def pair(value: str) -> tuple[int, int]:
    return to_pair(Decimal(value))


def index_entries(datagrams) -> list[dict]:
    """The index entries of incremental datagrams, in order."""
    out = []
    for d in datagrams:
        _, t, v = DEC.decode_datagram(d)
        if t.id == X_TID:
            out.extend(e for e in v["MDEntries"] if e["MDEntryType"] == INDEX_VALUE)
    return out


# ---------------------------------------------------------------------------------------------
# In process: the publisher core with the embedded calculator


def trade(seq: int, cmd: int, sym: str, price: str, ts: int) -> Trade:
    return Trade(seq, cmd, ts, seq, sym, int(Decimal(price) * 10_000), 10, 1, 1, 2, 0, 0)


def accepted(seq: int, cmd: int, sym: str, ts: int) -> OrderAccepted:
    return OrderAccepted(seq, cmd, ts, seq, "S1", "FIRM1", "A1", f"o{seq}", sym, 1, 2, 0,
                         2_800_000, 10)


def test_publisher_sends_every_index_state_with_its_seq_as_rptseq():
    cfg = parse_config(TEST_INSTRUMENTS + INDICES, "t.toml")
    model = Model(cfg)
    out: list[tuple[str, int, bytes]] = []
    pub = FeedPublisher(cfg.market, lambda ch, seq, d: out.append((ch, seq, d)),
                        indices=cfg.indices, clock_ns=lambda: T0)
    pub.start()
    ref = IndexCalculator(cfg.indices, cfg.market)     # what the index server computes
    states: dict[tuple[str, int], object] = {}
    day2 = (T0 // DAY_NS + 1) * DAY_NS + 5 * 10**9
    events = [
        accepted(1, 1, "SBER", T0), trade(2, 1, "SBER", "281.00", T0),
        trade(3, 2, "GAZP", "131.15", T0 + 10**9),
        # one command sweeping two levels: two states of each index in one message
        trade(4, 3, "SBER", "282.00", T0 + 2 * 10**9), trade(5, 3, "SBER", "283.50", T0 + 2 * 10**9),
        # the first event of a new day is a trade: day change and trade at one event
        trade(6, 4, "GAZP", "129.00", day2),
        trade(7, 5, "SBER", "279.99", day2 + 10**9),
    ]
    for ev in events:
        pub.on_event(ev)
        ref.on_event(ev)
        for v in ref.values():
            states[(v.code, v.seq)] = v
        if ev.seq == 6:
            model.new_day()
        if isinstance(ev, Trade):
            model.trade(ev.instrument, f"{Decimal(ev.price) / 10_000}")
    pub.flush()

    inc = [d for ch, _, d in out if ch == INCREMENTAL]
    entries = index_entries(inc)
    by_code = {c: [e for e in entries if e["Symbol"] == c] for c in CODES}
    # FXB: 6 trades + 1 day change; FXS: 4 SBER trades + 1 day change
    assert [e["RptSeq"] for e in by_code["FXB"]] == list(range(1, 8))
    assert [e["RptSeq"] for e in by_code["FXS"]] == list(range(1, 6))
    for code, got in by_code.items():
        for e in got:
            v = states.get((code, e["RptSeq"]))
            if v is None:        # the day change, seen only inside the event: previous value
                prev = states[(code, e["RptSeq"] - 1)]
                assert e["MDEntryPx"] == pair(prev.value) and e["MDEntryTime"] == entry_time(day2)
                continue
            assert e["MDEntryPx"] == pair(v.value), (code, e)
            assert e["MDEntryTime"] == entry_time(v.time)
    # the hand computation, state by state
    for code in CODES:
        assert [e["MDEntryPx"] for e in by_code[code]] == [pair(x) for x in model.states[code][1:]]
    # the command sweeping two levels: one X message, each index state after its trade
    sweep = [v for d in inc for _, t, v in [DEC.decode_datagram(d)]
             if t.id == X_TID and any(m["TradeID"] == 5 for m in v["MDEntries"])]
    assert [(m["MDEntryType"], m["Symbol"], m["RptSeq"]) for m in sweep[0]["MDEntries"]
            if m["MDEntryType"] != "0" and m["MDEntryType"] != "1"] == [
        ("2", "SBER", 2), ("3", "FXB", 3), ("3", "FXS", 2),
        ("2", "SBER", 3), ("3", "FXB", 4), ("3", "FXS", 3)]

    # the snapshot loop: every index with its last state; a subscriber follows it all
    pub.snapshot_cycle()
    core = SubscriberCore(price_exponent=-4, replay_enabled=False)
    for ch, _, d in out:
        core.on_datagram(ch, d, 0.0)
    final = {c: (s.seq, pair(s.value)) for c in CODES
             for s in [ref.value(c)]}
    assert {c: (core.books[c].rpt_seq, core.indices[c]) for c in CODES} == final
    assert {c: pair(v) for c, (_, v) in model.final().items()} == \
           {c: px for c, (_, px) in final.items()}

    # a restarted publisher rebuilds the same states silently (catch-up) and snapshots them
    out2: list[tuple[str, int, bytes]] = []
    pub2 = FeedPublisher(cfg.market, lambda ch, seq, d: out2.append((ch, seq, d)),
                         indices=cfg.indices, clock_ns=lambda: T0)
    pub2.start()
    pub2.live = False
    pub2.on_events(events)
    pub2.live = True
    assert index_entries(d for ch, _, d in out2 if ch == INCREMENTAL) == []
    pub2.snapshot_cycle()
    snaps = {v["Symbol"]: v for ch, _, d in out2 if ch == SNAPSHOT
             for _, t, v in [DEC.decode_datagram(d)] if t.id == W_TID}
    assert {c: (snaps[c]["RptSeq"], snaps[c]["MDEntries"][0]["MDEntryPx"]) for c in CODES} == final
    # values of a computed index cannot come from anywhere else
    with pytest.raises(ValueError, match="computed by this publisher"):
        pub.publish_index("FXB", Decimal("1"))


def test_snapshot_carries_every_index_from_the_start():
    cfg = parse_config(TEST_INSTRUMENTS + INDICES, "t.toml")
    out: list[tuple[str, int, bytes]] = []
    pub = FeedPublisher(cfg.market, lambda ch, seq, d: out.append((ch, seq, d)),
                        indices=cfg.indices, clock_ns=lambda: T0)
    pub.start()
    pub.snapshot_cycle()
    snaps = [v for ch, _, d in out if ch == SNAPSHOT
             for _, t, v in [DEC.decode_datagram(d)] if t.id == W_TID]
    assert [v["Symbol"] for v in snaps] == ["SBER", "GAZP", "FXB", "FXS"]
    assert all(v["TotNumReports"] == 4 for v in snaps)
    idx = {v["Symbol"]: (v["RptSeq"], v["MDEntries"][0]["MDEntryPx"],
                         v["MDEntries"][0]["MDEntryTime"]) for v in snaps[2:]}
    assert idx == {"FXB": (0, (100000, -2), None), "FXS": (0, (10000, -2), None)}


# ---------------------------------------------------------------------------------------------
# End to end over real processes and real multicast


@pytest.fixture(scope="module")
def multicast_on_loopback():
    require_multicast()



def md_section(ch: ChannelSet) -> str:
    lines = [f'{c.name}_{x} = "{f[0]}:{f[1]}"' for c in ch for x, f in (("a", c.a), ("b", c.b))]
    lines += ["ttl = 0", "replay_port = 0", "snapshot_interval_ms = 100",
              "instrument_interval_ms = 500", "heartbeat_ms = 200"]
    return "\n[marketdata]\n" + "\n".join(lines) + "\n"


class Capture(asyncio.DatagramProtocol):
    """Every datagram of one feed, raw."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagram_received(self, data, addr) -> None:
        self.datagrams.append(data)


async def read_sse(resp, stop, timeout: float = 10.0) -> list[dict]:
    """Server-sent events (``data`` decoded) until ``stop(events)`` is true."""
    events: list[dict] = []
    fields: dict[str, str] = {}

    async def loop():
        nonlocal fields
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    events.append(json.loads(fields["data"]))
                    if stop(events):
                        return
                fields = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(":")
                fields[k] = v[1:] if v.startswith(" ") else v

    await asyncio.wait_for(loop(), timeout)
    return events


async def trade_through_engine(endpoint, digest: str, node: str, steps) -> None:
    """One trade per step: a resting sell (FIRM2) crossed by a buy (FIRM1) at the price."""
    gw = await EngineLink.connect(*endpoint, component="gateway", node_id=node,
                                  config_digest=digest)
    try:
        cmds = []
        for k, (sym, px) in enumerate(steps):
            units = int(Decimal(px) * 10_000)
            cmds.append(NewOrder("S2", "FIRM2", "B1", f"{node}s{k}", sym, 2, 2, 0, units, 10))
            cmds.append(NewOrder("S1", "FIRM1", "A1", f"{node}b{k}", sym, 1, 2, 0, units, 10))
        gw.submit(cmds)
        acked = 0
        while acked < len(cmds):
            msg = await asyncio.wait_for(gw.recv(), 10)
            assert msg is not None and not isinstance(msg, Nack), msg
            if isinstance(msg, Ack):
                acked += msg.count
    finally:
        await gw.close()


async def until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def feed_state(sub: FeedSubscriber) -> dict[str, tuple[int, tuple[int, int]]]:
    books = sub.core.books
    return {c: (books[c].rpt_seq, books[c].index_value) for c in CODES
            if c in books and books[c].reliable and books[c].index_value is not None}


@pytest.mark.integration
def test_vendor_stream_and_multicast_feed_carry_the_same_index_values(
        tmp_path, procs, multicast_on_loopback):
    ch = channel_set(101)
    cfg_path = write_config(tmp_path, fsync="never",
                            instruments=TEST_INSTRUMENTS + INDICES + md_section(ch))
    cfg = load_config(cfg_path)
    model = Model(cfg)
    start = {c: (0, pair(v)) for c, (_, v) in model.final().items()}
    steps = [("SBER", "281.00"), ("GAZP", "131.15"), ("GAZP", "129.99"), ("SBER", "275.40"),
             ("SBER", "283.33"), ("GAZP", "130.01"), ("SBER", "280.07")]
    for sym, px in steps:
        model.trade(sym, px)
    final = model.final()
    assert final["FXB"][0] == 7 and final["FXS"][0] == 4

    engine = procs(["engine", "--config", str(cfg_path)])
    engine.wait_ready()
    rep = "%s:%d" % engine.endpoint("replication")
    index = procs(["index", "--config", str(cfg_path), "--engine-replication", rep])
    md = procs(["marketdata", "--config", str(cfg_path), "--engine-replication", rep])
    ix_ready, md_ready = index.wait_ready(), md.wait_ready()
    assert ix_ready["indices"] == md_ready["indices"] == "FXB,FXS"
    assert md_ready["incremental"] == ch.incremental.describe()
    base = f"http://{ix_ready['http']}"

    async def main():
        loop = asyncio.get_running_loop()
        capture = Capture()
        tr, _ = await loop.create_datagram_endpoint(
            lambda: capture, sock=receiver(*ch.incremental.a, "127.0.0.1"))
        early = FeedSubscriber(ch, interface="127.0.0.1", replay=md.endpoint("replay"),
                               price_exponent=-4)
        late = None
        try:
            await early.start()
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/stream") as stream:
                    first = await read_sse(stream, lambda e: len(e) == 2)
                    assert {v["code"]: (v["seq"], pair(v["value"])) for v in first} == start
                    # before any trade the feed already carries the start values (snapshot)
                    assert await early.wait_synced(10)
                    assert feed_state(early) == start

                    await trade_through_engine(engine.endpoint("order_entry"), cfg.digest,
                                               "gw-ixfeed", steps)
                    vendor = first + await read_sse(stream, lambda e: all(
                        any(v["code"] == c and v["seq"] == final[c][0] for v in e)
                        for c in CODES), timeout=15)
                async with http.get(f"{base}/indices") as r:
                    polled = {v["code"]: v for v in (await r.json())["indices"]}

            want = {c: (seq, pair(v)) for c, (seq, v) in final.items()}
            await until(lambda: feed_state(early) == want, 10, f"the feed to reach {want}")

            # a subscriber joining now learns the values from the snapshot loop alone
            late = FeedSubscriber(ch, interface="127.0.0.1", replay=None, price_exponent=-4)
            await late.start()
            assert await late.wait_synced(10)
            assert feed_state(late) == want
            assert late.core.stats["snapshots_applied"] >= 4      # 2 books + 2 indices
            await asyncio.sleep(0.1)                               # stragglers of the capture
        finally:
            tr.close()
            await early.close()
            if late is not None:
                await late.close()

        # 1. the vendor: every value streamed is the hand-computed value of its state
        for v in vendor:
            assert v["value"] == model.states[v["code"]][v["seq"]], v
        last = {}
        for v in vendor:
            last[v["code"]] = (v["seq"], v["value"])
        assert last == final
        assert {c: (v["seq"], v["value"]) for c, v in polled.items()} == final
        # 2. the feed: one entry per state (RptSeq 1, 2, ... = seq), each the hand-computed value
        entries = index_entries(capture.datagrams)
        for c in CODES:
            mine = [e for e in entries if e["Symbol"] == c]
            assert [e["RptSeq"] for e in mine] == list(range(1, final[c][0] + 1)), c
            assert [e["MDEntryPx"] for e in mine] == [pair(x) for x in model.states[c][1:]], c
        # 3. field for field: each value the vendor received is the feed entry of that seq
        feed = {(e["Symbol"], e["RptSeq"]): e for e in entries}
        for v in vendor:
            if v["seq"]:
                e = feed[(v["code"], v["seq"])]
                assert (e["MDEntryPx"], e["MDEntryTime"]) == \
                       (pair(v["value"]), entry_time(v["time"])), v
        # the HTTP stream may conflate (FXS is on a cadence): never more than one per state
        assert len([v for v in vendor if v["code"] == "FXS"]) <= final["FXS"][0] + 1

    asyncio.run(main())
    assert md.stop() == 0 and index.stop() == 0 and engine.stop() == 0
    for p in (md, index, engine):
        assert "Traceback" not in p.stderr()


@pytest.mark.integration
def test_bourse_up_puts_the_index_values_on_the_feed(tmp_path, procs, multicast_on_loopback):
    ch = channel_set(101)
    cfg_path = write_config(tmp_path, fsync="never",
                            instruments=TEST_INSTRUMENTS + INDICES + md_section(ch))
    cfg = load_config(cfg_path)
    model = Model(cfg)
    model.trade("SBER", "282.50")
    want = {c: (seq, pair(v)) for c, (seq, v) in model.final().items()}
    up = procs(["up", "--config", str(cfg_path)])
    ready = up.wait_ready(60)
    assert ready["marketdata"]["indices"] == "FXB,FXS" and "http" in ready["index"]
    host, port = ready["engine"]["order_entry"].rsplit(":", 1)

    async def main():
        await trade_through_engine((host, int(port)), cfg.digest, "gw-ixup", [("SBER", "282.50")])
        sub = FeedSubscriber(ch, interface="127.0.0.1", replay=None, price_exponent=-4)
        await sub.start()
        try:
            await until(lambda: feed_state(sub) == want, 15, f"the feed to reach {want}")
        finally:
            await sub.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{ready['index']['http']}/indices") as r:
                polled = (await r.json())["indices"]
        assert {v["code"]: (v["seq"], pair(v["value"])) for v in polled} == want

    asyncio.run(main())
    assert up.stop() == 0
    assert "Traceback" not in up.stderr()
