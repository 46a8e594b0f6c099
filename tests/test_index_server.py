"""Index service, vendor API and the index server as a real process next to the engine."""
from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from fractions import Fraction

import aiohttp
import pytest

from bourse.config import load_config, parse_config
from bourse.launcher import components
from engine.client import EngineLink
from engine.commands import NewOrder
from engine.events import Trade
from engine.link import Ack, Nack
from index_server.http import VendorAPI
from index_server.publish import Publisher
from index_server.service import IndexService
from tests.procs import TEST_INSTRUMENTS, run_bourse, write_config

F = Fraction
T0 = 1_749_970_800 * 10**9                       # 2025-06-15T07:00:00Z

# Two test instruments (tests/procs.py): SBER 280.00, GAZP 130.00, tick 0.01, lot 10.
INDICES = """
[index]
host = "127.0.0.1"
http_port = 0
cadence_ms = 100
on_change = true
on_change_max_per_s = 1000

[[indices]]
code = "TSTX"
name = "Test Broad"
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
code = "TSBR"
name = "Test Single"
base_value = "100"
weight_cap_pct = "100"
on_change = false

[[indices.constituents]]
symbol = "SBER"
shares = 1000000
free_float = "0.5"
"""


def q2(x: Fraction) -> str:
    r = round(x * 100)
    return f"{'-' if r < 0 else ''}{abs(r) // 100}.{abs(r) % 100:02d}"


def floor10(x: Fraction) -> Fraction:
    return F(x.numerator * 10**10 // x.denominator, 10**10)


class HandModel:
    """The two test indices computed by hand with fractions."""

    def __init__(self) -> None:
        # TSTX: SBER 280 x 1e6 x 0.5 = 1.4e8, GAZP 130 x 2e6 x 0.6 = 1.56e8 (52.7 % > 50 %):
        # GAZP' = 0.5 T with T = 1.4e8 / 0.5 = 2.8e8: W = 1.4e8 / 1.56e8, rounded down.
        self.w_gazp = floor10(F(140_000_000, 156_000_000))
        self.prices = {"SBER": F(280), "GAZP": F(130)}
        self.d_tstx = self.mc_tstx() / 1000
        self.d_tsbr = F(280) * 500_000 / 100

    def mc_tstx(self) -> Fraction:
        return self.prices["SBER"] * 500_000 + self.prices["GAZP"] * 1_200_000 * self.w_gazp

    def trade(self, sym: str, price: str) -> dict[str, str]:
        self.prices[sym] = F(Decimal(price))
        out = {"TSTX": q2(self.mc_tstx() / self.d_tstx)}
        if sym == "SBER":
            out["TSBR"] = q2(self.prices["SBER"] * 500_000 / self.d_tsbr)
        return out


def trade_ev(seq: int, sym: str, price: str, ts: int) -> Trade:
    return Trade(seq, seq, ts, seq, sym, int(Decimal(price) * 10_000), 10, 1, 1, 2, 0, 0)


def service_of(extra: str = "", clock=None) -> IndexService:
    cfg = parse_config(TEST_INSTRUMENTS + INDICES + extra, "t.toml")
    return IndexService(cfg.market, cfg.indices, **({"clock": clock} if clock else {}))


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


# ---------------------------------------------------------------------------------------------
# Service: publication modes


def test_on_change_publishes_each_change_within_the_rate_cap():
    clock = Clock()
    svc = service_of(clock=clock)          # TSTX on change, 1000/s: 1 ms apart
    got = []
    svc.publisher.add_hook(got.append)

    async def main():
        svc.apply(trade_ev(1, "GAZP", "131.00", T0))
        assert [v.code for v in got] == ["TSTX"] and got[-1].seq == 1
        clock.now += 200_000                       # 0.2 ms later: over the cap, deferred
        svc.apply(trade_ev(2, "GAZP", "132.00", T0 + 1))
        clock.now += 200_000
        svc.apply(trade_ev(3, "GAZP", "133.00", T0 + 2))
        assert len(got) == 1
        clock.now += 1_000_000
        await asyncio.sleep(0.01)                  # the deferred publication: latest state only
        assert [v.seq for v in got] == [1, 3] and got[-1].event_seq == 3
        clock.now += 5_000_000
        svc.apply(trade_ev(4, "GAZP", "134.00", T0 + 3))   # past the gap: at once
        assert [v.seq for v in got] == [1, 3, 4]
        await svc.close()

    asyncio.run(main())


def test_cadence_publishes_the_latest_state_once_per_tick():
    svc = service_of('\n[[indices]]\ncode = "SLOW"\nname = "Slow"\nbase_value = "10"\n'
                     'weight_cap_pct = "100"\ncadence_ms = 60\non_change = false\n'
                     '[[indices.constituents]]\nsymbol = "GAZP"\nshares = 10\nfree_float = "1"\n')
    got = []
    svc.publisher.add_hook(got.append)

    async def main():
        svc.start()
        for k in range(5):
            svc.apply(trade_ev(k + 1, "GAZP", f"13{k}.00", T0 + k))
        slow = [v for v in got if v.code == "SLOW"]
        assert slow == []                           # cadence only
        await asyncio.sleep(0.2)
        slow = [v for v in got if v.code == "SLOW"]
        assert len(slow) == 1 and slow[0].seq == 5 and slow[0].value == "10.31"   # 10 x 134 / 130
        await asyncio.sleep(0.15)                   # nothing changed: nothing more
        assert len([v for v in got if v.code == "SLOW"]) == 1
        await svc.close()

    asyncio.run(main())


def test_subscriptions_overflow_and_broken_hooks():
    pub = Publisher()
    calls = []

    def broken(v):
        raise RuntimeError("boom")

    pub.add_hook(broken)
    pub.add_hook(calls.append)

    async def main():
        slow = pub.subscribe(maxsize=2)
        only = pub.subscribe(maxsize=10, codes=["TSBR"])
        svc = service_of()
        for code in ("TSTX", "TSBR", "TSTX"):
            pub.publish(svc.current(code))
        assert len(calls) == 3                      # the broken hook did not stop the others
        assert slow.overflowed and await slow.get() is None
        assert (await only.get()).code == "TSBR"
        pub.close()
        assert await only.get() is None and not only.overflowed
        assert pub.subscribers == 0

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# Vendor API in process


async def read_sse(resp, stop, timeout: float = 10.0) -> list[dict]:
    """Parse server-sent events until ``stop(events)`` is true."""
    events: list[dict] = []
    fields: dict[str, str] = {}

    async def loop():
        nonlocal fields
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    events.append({"id": fields.get("id"), "event": fields.get("event"),
                                   "data": json.loads(fields["data"])})
                    if stop(events):
                        return
                fields = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(":")
                fields[k] = v[1:] if v.startswith(" ") else v

    await asyncio.wait_for(loop(), timeout)
    return events


def seen(events, code, seq) -> bool:
    return any(e["data"]["code"] == code and e["data"]["seq"] == seq for e in events)


def test_vendor_api_endpoints_and_resume():
    clock = Clock()
    svc = service_of(clock=clock)              # fake clock: trades 10 ms apart, over the cap
    model = HandModel()

    async def main():
        api = VendorAPI(svc, keepalive_s=0.05)
        host, port = await api.start("127.0.0.1", 0)
        svc.start()
        base = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/indices") as r:
                body = await r.json()
                assert r.status == 200 and body["event_seq"] == 0
                assert [v["value"] for v in body["indices"]] == ["1000.00", "100.00"]
            async with http.get(f"{base}/indices/NOPE") as r:
                assert r.status == 404 and "NOPE" in (await r.json())["error"]
            async with http.get(f"{base}/indices/TSTX/history?since=x") as r:
                assert r.status == 400
            async with http.get(f"{base}/stream?codes=TSTX,NOPE") as r:
                assert r.status == 404
            async with http.get(f"{base}/indices/TSTX/constituents") as r:
                comp = await r.json()
                assert comp["weight_cap_pct"] == "50"
                assert [c["weight_pct"] for c in comp["constituents"]] == ["50.0000", "50.0000"]

            async with http.get(f"{base}/stream") as stream:
                assert stream.headers["Content-Type"].startswith("text/event-stream")
                first = await read_sse(stream, lambda e: len(e) == 2)
                assert [(e["id"], e["data"]["code"], e["data"]["seq"]) for e in first] == \
                       [("0", "TSTX", 0), ("0", "TSBR", 0)]
                expected = {}
                steps = [("SBER", "281.50"), ("GAZP", "128.37"), ("SBER", "279.99")]
                for k, (sym, px) in enumerate(steps):
                    clock.now += 10_000_000
                    svc.apply(trade_ev(k + 1, sym, px, T0 + k * 10**9))
                    expected.update(model.trade(sym, px))
                live = await read_sse(stream, lambda e: seen(e, "TSBR", 2) and seen(e, "TSTX", 3))
            tstx = [e["data"] for e in live if e["data"]["code"] == "TSTX"]
            # TSTX is on change: every state, in order, each equal to the hand computation
            assert [v["seq"] for v in tstx] == [1, 2, 3]
            assert tstx[-1]["value"] == expected["TSTX"]
            assert [e["id"] for e in live if e["data"]["code"] == "TSTX"] == ["1", "2", "3"]
            tsbr = [e["data"] for e in live if e["data"]["code"] == "TSBR"]
            assert tsbr[-1]["value"] == expected["TSBR"] and tsbr[-1]["seq"] == 2

            async with http.get(f"{base}/indices") as r:
                body = await r.json()
                assert body["event_seq"] == 3
                assert {v["code"]: v["value"] for v in body["indices"]} == expected

            # history: one point per 100 ms bucket of event time (trades 1 s apart: every state)
            async with http.get(f"{base}/indices/TSTX/history") as r:
                h = await r.json()
                assert [p["seq"] for p in h["points"]] == [1, 2, 3] and h["cadence_ms"] == 100
            async with http.get(f"{base}/indices/TSTX/history?since=2") as r:
                assert [p["event_seq"] for p in (await r.json())["points"]] == [2, 3]

            # resume: Last-Event-ID 2 replays history from event 2 on (inclusive), then live
            async with http.get(f"{base}/stream", headers={"Last-Event-ID": "2"}) as stream:
                again = await read_sse(stream, lambda e: len(e) == 3)
                assert [(e["id"], e["data"]["code"]) for e in again] == \
                       [("2", "TSTX"), ("3", "TSBR"), ("3", "TSTX")]
                clock.now += 10_000_000
                svc.apply(trade_ev(4, "GAZP", "129.00", T0 + 10**10))
                expected.update(model.trade("GAZP", "129.00"))
                more = await read_sse(stream, lambda e: len(e) == 1)
                assert more[0]["data"]["value"] == expected["TSTX"] and more[0]["id"] == "4"
        await api.close()
        await svc.close()

    asyncio.run(main())


def test_stream_ends_cleanly_on_close():
    svc = service_of()

    async def main():
        api = VendorAPI(svc)
        host, port = await api.start("127.0.0.1", 0)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{port}/stream?codes=TSBR") as stream:
                assert len(await read_sse(stream, lambda e: len(e) == 1)) == 1
                await api.close()
                rest = await asyncio.wait_for(stream.content.read(), 5)
                assert b"data" not in rest
        await svc.close()

    asyncio.run(main())


def test_launcher_starts_the_index_server_after_the_gateways():
    default = load_config(None)
    names = [n for n, _ in components(default)]
    assert names[0] == "engine" and names[-1] == "index" and "gateway gw1" in names
    assert components(default)[-1][1] == ["index", "--engine-replication",
                                          "{engine.replication}"]
    bare = parse_config(TEST_INSTRUMENTS, "t.toml")
    assert "index" not in [n for n, _ in components(bare)]


# ---------------------------------------------------------------------------------------------
# End to end: engine and index server as processes


@pytest.mark.integration
def test_end_to_end_trades_to_vendor_stream(tmp_path, procs):
    cfg_path = write_config(tmp_path, fsync="never", instruments=TEST_INSTRUMENTS + INDICES)
    digest = load_config(cfg_path).digest
    engine = procs(["engine", "--config", str(cfg_path)])
    engine.wait_ready()
    rep_host, rep_port = engine.endpoint("replication")
    index = procs(["index", "--config", str(cfg_path),
                   "--engine-replication", f"{rep_host}:{rep_port}"])
    ready = index.wait_ready()
    assert ready["component"] == "index" and ready["indices"] == "TSTX,TSBR"
    base = f"http://{ready['http']}"
    model = HandModel()
    steps = [("SBER", "281.00"), ("GAZP", "131.15"), ("GAZP", "129.99"), ("SBER", "275.40"),
             ("SBER", "283.33"), ("GAZP", "130.01")]
    expected: dict[str, list[str]] = {"TSTX": [], "TSBR": []}
    for sym, px in steps:
        for code, value in model.trade(sym, px).items():
            expected[code].append(value)

    async def main():
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/stream") as stream:
                snapshot = await read_sse(stream, lambda e: len(e) == 2)
                assert {e["data"]["code"]: e["data"]["value"] for e in snapshot} == \
                       {"TSTX": "1000.00", "TSBR": "100.00"}
                oe_host, oe_port = engine.endpoint("order_entry")
                gw = await EngineLink.connect(oe_host, oe_port, component="gateway",
                                              node_id="gw-test", config_digest=digest)
                cmds = []
                for k, (sym, px) in enumerate(steps):
                    units = int(Decimal(px) * 10_000)
                    cmds.append(NewOrder("S2", "FIRM2", "B1", f"s{k}", sym, 2, 2, 0, units, 10))
                    cmds.append(NewOrder("S1", "FIRM1", "A1", f"b{k}", sym, 1, 2, 0, units, 10))
                gw.submit(cmds)
                acked = 0
                while acked < len(cmds):
                    msg = await asyncio.wait_for(gw.recv(), 10)
                    assert not isinstance(msg, Nack)
                    if isinstance(msg, Ack):
                        acked += msg.count
                await gw.close()
                final = {c: v[-1] for c, v in expected.items()}
                got = await read_sse(stream, lambda e: all(
                    any(x["data"]["code"] == c and x["data"]["seq"] == len(expected[c])
                        for x in e) for c in expected), timeout=15)
            # every value streamed is the hand-computed value of its state (seq k = k-th trade
            # of a constituent); TSTX is on change, TSBR on a 100 ms cadence (may conflate)
            for e in got:
                v = e["data"]
                assert v["value"] == expected[v["code"]][v["seq"] - 1], v
                assert int(e["id"]) == v["event_seq"]
            tstx = [e["data"]["seq"] for e in got if e["data"]["code"] == "TSTX"]
            assert tstx == sorted(tstx) and tstx[-1] == 6
            async with http.get(f"{base}/indices") as r:
                body = await r.json()
            current = {v["code"]: v for v in body["indices"]}
            assert {c: v["value"] for c, v in current.items()} == final
            t = current["TSTX"]
            vals = [Decimal(x) for x in expected["TSTX"]]
            assert (t["open"], t["high"], t["low"]) == (expected["TSTX"][0], str(max(vals)),
                                                       str(min(vals)))
            assert t["prev_close"] == "1000.00"
            assert t["change"] == str(Decimal(final["TSTX"]) - 1000)
            assert t["capitalisation"] == q2(model.mc_tstx())

    asyncio.run(main())
    assert index.stop() == 0
    assert "Traceback" not in index.stderr()


def test_index_command_usage_errors(tmp_path):
    bare = write_config(tmp_path)
    res = run_bourse(["index", "--config", str(bare)])
    assert res.returncode == 2 and "no [[indices]]" in res.stderr
    cfg = write_config(tmp_path, instruments=TEST_INSTRUMENTS + INDICES, name="ix.toml")
    res = run_bourse(["index", "--config", str(cfg), "--engine-replication", "nohostport"])
    assert res.returncode == 2 and "HOST:PORT" in res.stderr
    bad = write_config(tmp_path, name="bad.toml", instruments=TEST_INSTRUMENTS + INDICES.replace(
        'free_float = "0.6"', 'free_float = "1.6"'))
    res = run_bourse(["check-config", str(bad)])
    assert res.returncode == 2 and "indices[0].constituents[1].free_float" in res.stderr
