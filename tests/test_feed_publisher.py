"""The publisher core (messages, sequencing, loops, status, index values), the replay
service and the ``[marketdata]`` configuration."""
from __future__ import annotations

import asyncio
import struct
from decimal import Decimal

import pytest

from bourse.config import ConfigError, load_config, parse_config
from engine.commands import HaltScope, MassCancel, SetHalt
from marketdata.channels import INCREMENTAL, INSTRUMENTS, SNAPSHOT, ChannelSet
from marketdata.messages import (
    HEARTBEAT, INCREMENTAL as X, SECURITY_DEFINITION, SECURITY_STATUS, SEQUENCE_RESET,
    TRADING_SESSION_STATUS, MessageBuilder, decoder, sending_time, to_pair,
)
from marketdata.replay import (
    BAD_REQUEST, OUT_OF_RANGE, TOO_MANY, UNKNOWN_CHANNEL, LEN, REQ, ReplayBuffer,
    ReplayRejected, ReplayServer, request_replay,
)
from tests.feed_sim import Market, T0, workload
from tests.procs import TEST_INSTRUMENTS

DEC = decoder()


def decoded(m: Market, channel: str | None = None):
    for ch, seq, d in m.out:
        if channel is None or ch == channel:
            s, t, v = DEC.decode_datagram(d)
            assert s == seq == v["MsgSeqNum"]
            yield ch, seq, t.id, v


def test_every_channel_starts_with_a_sequence_reset_and_counts_without_gaps():
    m = Market(max_datagram=300)
    m.run(workload(800, seed=1), snapshot_every=200)
    m.pub.instruments_cycle()
    m.mono += 5
    m.pub.heartbeats(1.0)
    for ch in (INCREMENTAL, SNAPSHOT, INSTRUMENTS):
        msgs = list(decoded(m, ch))
        assert [s for _, s, _, _ in msgs] == list(range(1, len(msgs) + 1))
        assert msgs[0][2] == SEQUENCE_RESET and msgs[0][3]["NewSeqNo"] == 2
        assert msgs[-1][2] == HEARTBEAT
    assert all(len(d) <= 300 for _, _, d in m.out)


def test_one_incremental_message_per_command_with_its_entries_in_order():
    m = Market(depth=20)
    cmds = workload(500, seed=2)
    from marketdata.mbp import FeedBooks
    shadow = FeedBooks(m.ref, 20)
    expected = []
    for cmd in cmds:
        entries = []
        for ev in m.apply(cmd):
            entries.extend(shadow.on_event(ev))
        if entries:
            expected.append(entries)
    got = [v["MDEntries"] for _, _, tid, v in decoded(m, INCREMENTAL) if tid == X]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert [(x["Symbol"], x["RptSeq"], x["MDUpdateAction"], x["MDEntryType"],
                 tuple(x["MDEntryPx"]), x["MDEntrySize"]) for x in g] == \
               [(x["Symbol"], x["RptSeq"], x["MDUpdateAction"], x["MDEntryType"],
                 x["MDEntryPx"], x.get("MDEntrySize")) for x in e]


def test_large_command_is_fragmented_with_last_fragment():
    m = Market(depth=50, max_datagram=256)
    m.run(workload(600, seed=3))
    n = len(m.out)
    m.apply(MassCancel("ops", "mc", "MC0003", "", ""))
    frags = [v for ch, s, tid, v in list(decoded(m, INCREMENTAL))[-(len(m.out) - n):]]
    assert len(frags) > 2
    assert [f["LastFragment"] for f in frags] == [0] * (len(frags) - 1) + [1]
    rpts: dict = {}
    for f in frags:
        for e in f["MDEntries"]:
            assert e["RptSeq"] == rpts.get(e["Symbol"], e["RptSeq"] - 1) + 1
            rpts[e["Symbol"]] = e["RptSeq"]


def test_snapshot_carries_the_book_the_sequence_numbers_and_fragments():
    m = Market(depth=30, max_datagram=256)
    m.run(workload(800, seed=4))
    n = len(m.out)
    m.pub.snapshot_cycle()
    snaps = [DEC.decode_datagram(d)[2] for ch, s, d in m.out[n:]]
    assert all(v["LastMsgSeqNumProcessed"] == m.pub.last_incremental for v in snaps)
    assert all(v["TotNumReports"] == len(m.ref.instruments) for v in snaps)
    by_symbol: dict[str, list] = {}
    for v in snaps:
        by_symbol.setdefault(v["Symbol"], []).append(v)
    assert list(by_symbol) == [i.symbol for i in m.ref.instruments]
    multi = 0
    for sym, frags in by_symbol.items():
        assert [f["RouteFirst"] for f in frags] == [1] + [0] * (len(frags) - 1)
        assert [f["LastFragment"] for f in frags] == [0] * (len(frags) - 1) + [1]
        multi += len(frags) > 1
        entries = [e for f in frags for e in f["MDEntries"]]
        assert all(f["RptSeq"] == m.pub.books.instruments[sym].rpt_seq for f in frags)
        bids = [(e["MDEntryPx"][0], e["MDEntrySize"], e["NumberOfOrders"])
                for e in entries if e["MDEntryType"] == "0"]
        assert bids == m.expected(sym, 1)
        trades = [e for e in entries if e["MDEntryType"] == "2"]
        lt = m.pub.books.instruments[sym].last_trade
        assert [(e["MDEntryPx"][0], e["MDEntrySize"]) for e in trades] == ([lt] if lt else [])
    assert multi, "at 256 bytes some books need several datagrams"


def test_security_definitions_describe_every_instrument():
    m = Market()
    m.pub.instruments_cycle()
    defs = [v for _, _, tid, v in decoded(m, INSTRUMENTS) if tid == SECURITY_DEFINITION]
    assert [d["Symbol"] for d in defs] == [i.symbol for i in m.ref.instruments]
    for d, inst in zip(defs, m.ref.instruments):
        assert d["TotNumReports"] == len(m.ref.instruments)
        assert d["SecurityAltIDs"] == [{"SecurityAltID": inst.isin, "SecurityAltIDSource": "4"}]
        assert d["RoundLot"] == inst.lot and d["Currency"] == inst.currency
        seg = d["MarketSegments"][0]
        assert seg["PriceLimits"]["TickRules"]["MinPriceIncrement"] == (inst.tick, -4)
        assert seg["PriceLimits"]["HighLimitPx"] == (inst.band_high, -4)
        assert seg["PriceLimits"]["LowLimitPx"] == (inst.band_low, -4)
        assert d["SecurityTradingStatus"] == 17


def test_halts_and_releases_become_status_messages():
    m = Market()
    m.run(workload(100, seed=5))
    n = len(m.out)
    m.apply(SetHalt(HaltScope.INSTRUMENT, "SBER", True, "news pending"))
    m.apply(SetHalt(HaltScope.MARKET, "", True, "technical halt"))
    m.apply(SetHalt(HaltScope.FIRM, "MC0001", True, "kill switch"))
    m.pub.snapshot_cycle()
    m.pub.instruments_cycle()
    m.apply(SetHalt(HaltScope.MARKET, "", False, ""))
    m.apply(SetHalt(HaltScope.INSTRUMENT, "SBER", False, ""))
    msgs = [(t.id, v) for ch, s, d in m.out[n:] if ch == INCREMENTAL
            for _, t, v in [DEC.decode_datagram(d)] if t.id != X]
    assert [(tid, v.get("Symbol"), v.get("SecurityTradingStatus"), v.get("TradSesStatus"))
            for tid, v in msgs] == [
        (SECURITY_STATUS, "SBER", 2, None), (TRADING_SESSION_STATUS, None, None, 1),
        (TRADING_SESSION_STATUS, None, None, 2), (SECURITY_STATUS, "SBER", 17, None)]
    assert msgs[1][1]["Text"] == "technical halt"
    snaps = {v["Symbol"]: v for ch, s, d in m.out[n:] if ch == SNAPSHOT
             for v in [DEC.decode_datagram(d)[2]] if "Symbol" in v}
    assert snaps["SBER"]["MDSecurityTradingStatus"] == 2 and snaps["SBER"]["TradSesStatus"] == 1
    assert snaps["GAZP"]["MDSecurityTradingStatus"] == 17
    defs = {v["Symbol"]: v for ch, s, d in m.out[n:] if ch == INSTRUMENTS
            for v in [DEC.decode_datagram(d)[2]] if "Symbol" in v}
    assert defs["SBER"]["SecurityTradingStatus"] == 2


def test_heartbeats_only_on_idle_channels():
    m = Market()
    m.mono = 10.0
    m.run(workload(50, seed=6))                 # incremental active at t=10
    m.pub.snapshot_cycle()                      # snapshot active at t=10
    n = len(m.out)
    m.mono = 10.5
    m.pub.heartbeats(1.0)
    assert {ch for ch, _, _ in m.out[n:]} == {INSTRUMENTS}     # idle since start (t=0)
    m.mono = 11.2                               # instruments sent a heartbeat at 10.5
    m.pub.heartbeats(1.0)
    assert sorted(ch for ch, _, _ in m.out[n + 1:]) == [INCREMENTAL, SNAPSHOT]


def test_index_values_on_the_incremental_channel_and_in_the_snapshot_loop():
    m = Market()
    m.pub.publish_index("IMOEX", Decimal("3215.47"), T0)
    m.pub.publish_index("IMOEX", (321612, -2), T0 + 10**9)
    m.pub.publish_index("RTSI", Decimal("1101.5"))
    entries = [e for _, _, tid, v in decoded(m, INCREMENTAL) if tid == X
               for e in v["MDEntries"]]
    assert [(e["Symbol"], e["MDEntryType"], e["RptSeq"], tuple(e["MDEntryPx"]))
            for e in entries] == [("IMOEX", "3", 1, (321547, -2)), ("IMOEX", "3", 2, (321612, -2)),
                                  ("RTSI", "3", 1, (11015, -1))]
    n = len(m.out)
    m.pub.snapshot_cycle()
    snaps = [DEC.decode_datagram(d)[2] for _, _, d in m.out[n:]]
    assert all(v["TotNumReports"] == len(m.ref.instruments) + 2 for v in snaps)
    imoex = next(v for v in snaps if v["Symbol"] == "IMOEX")
    assert imoex["RptSeq"] == 2 and imoex["MDEntries"][0]["MDEntryPx"] == (321612, -2)
    with pytest.raises(ValueError):
        m.pub.publish_index("SBER", Decimal(1))
    with pytest.raises(TypeError):
        m.pub.publish_index("IMOEX", 3215.47)


def test_catch_up_is_silent():
    m = Market()
    n = len(m.out)
    m.pub.live = False
    m.run(workload(200, seed=7))
    assert len(m.out) == n
    m.pub.go_live()
    m.pub.snapshot_cycle()
    snaps = [DEC.decode_datagram(d)[2] for ch, _, d in m.out[n:]]
    assert snaps and all(v["LastMsgSeqNumProcessed"] == 1 for v in snaps)
    assert sum(v["RptSeq"] for v in snaps) > 0


def test_helpers():
    assert to_pair(Decimal("-12.50")) == (-1250, -2)
    assert to_pair(7) == (7, 0) and to_pair((5, -1)) == (5, -1)
    assert sending_time(1_700_000_000_123_000_000) == 20231114221320123
    with pytest.raises(ValueError, match="does not fit"):
        MessageBuilder(256).incremental(1, T0, [{
            "MDUpdateAction": 0, "MDEntryType": "0", "Symbol": "X" * 400, "RptSeq": 1,
            "MDEntryPx": (1, 0), "MDEntryTime": 0}])


# ---------------------------------------------------------------------------------------------
# Replay service


def test_replay_buffer_ring():
    b = ReplayBuffer(4)
    for s in range(1, 8):
        b.add(s, bytes([s]))
    assert (b.first, b.last) == (4, 7)
    assert b.get(4, 7) == [bytes([s]) for s in range(4, 8)]
    with pytest.raises(KeyError):
        b.get(3, 5)
    b.add(1, b"\x01")                  # a new session numbers from 1 again
    assert (b.first, b.last) == (1, 1)


def test_replay_over_tcp_and_its_rejects():
    async def main():
        buf = ReplayBuffer(100)
        for s in range(1, 151):
            buf.add(s, s.to_bytes(4, "little") + b"x" * (s % 7))
        srv = ReplayServer({1: buf}, "127.0.0.1", 0, max_messages=20)
        await srv.start()
        try:
            got = await request_replay("127.0.0.1", srv.port, 60, 79)
            assert [int.from_bytes(d[:4], "little") for d in got] == list(range(60, 80))
            assert got[0] == buf.get(60, 60)[0]
            for (b, e, ch), code in [((60, 80, 1), TOO_MANY), ((40, 50, 1), OUT_OF_RANGE),
                                     ((149, 151, 1), OUT_OF_RANGE), ((9, 8, 1), BAD_REQUEST),
                                     ((0, 3, 1), BAD_REQUEST), ((60, 61, 2), UNKNOWN_CHANNEL)]:
                with pytest.raises(ReplayRejected) as exc:
                    await request_replay("127.0.0.1", srv.port, b, e, channel=ch)
                assert exc.value.code == code, (b, e, ch)
                if code == OUT_OF_RANGE:
                    assert (exc.value.first, exc.value.last) == (51, 150)
                    assert "51..150" in exc.value.text
            # two requests on one connection, then a malformed frame closes it
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            for b, e in ((51, 52), (150, 150)):
                w.write(LEN.pack(REQ.size) + REQ.pack(0x52, 1, 0, b, e))
            w.write(LEN.pack(3) + b"bad")
            data = await asyncio.wait_for(r.read(), 5)
            w.close()
            frames = []
            while data:
                (n,) = struct.unpack_from("<I", data)
                frames.append(data[4:4 + n])
                data = data[4 + n:]
            assert [f[0] for f in frames] == [0x44, 0x44, 0x45, 0x44, 0x45, 0x4A]
        finally:
            await srv.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# Configuration


def test_marketdata_defaults():
    md = load_config(None).marketdata
    assert md.interface == "127.0.0.1" and md.ttl == 1 and md.loopback
    chans = ChannelSet.from_config(md)
    assert chans.incremental.a == ("239.195.1.1", 16001)
    assert chans.incremental.b == ("239.195.1.129", 17001)
    assert (md.replay_port, md.replay_max_messages, md.max_datagram, md.depth) == \
           (9200, 1000, 1400, 20)


@pytest.mark.parametrize("line, key, words", [
    ("ttl = 2", "marketdata.ttl", "0 or 1"),
    ("incremental_a = \"10.1.1.1:16001\"", "marketdata.incremental_a", "multicast"),
    ("snapshot_a = \"239.195.1.1:16001\"", "marketdata.snapshot_a", "already used"),
    ("interface = \"lo\"", "marketdata.interface", "IPv4"),
    ("max_datagram = 100", "marketdata.max_datagram", ">= 256"),
])
def test_marketdata_bad_values_are_named(line, key, words):
    with pytest.raises(ConfigError) as exc:
        parse_config(f"[marketdata]\n{line}\n{TEST_INSTRUMENTS}", "t.toml")
    assert exc.value.key == key and words in exc.value.problem


def test_routed_ttl_needs_an_explicit_opt_in():
    cfg = parse_config(f"[marketdata]\nttl = 8\nallow_routed_ttl = true\n{TEST_INSTRUMENTS}")
    assert cfg.marketdata.ttl == 8
