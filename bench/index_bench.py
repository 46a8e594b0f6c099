"""Index server benchmark: calculator throughput and trade-to-publication latency.

Usage: ``python -m bench.index_bench [--trades N] [--seed S]``

Contract: uses the embedded default configuration (BRSX: 10 constituents, BRSOG: 4) and a
pre-built stream of N ``Trade`` events on its 10 instruments (random prices within the price
bands, 1 ms apart in event time). It prints, and asserts nothing:
- calculator throughput: ``IndexCalculator.on_event`` over the whole stream (one timer);
- service throughput (cadence mode): ``IndexService.apply`` (calculator + history + dirty
  marking), with the cadence publisher running;
- on-change latency: ``IndexService`` with every index in on-change mode and a rate cap that
  does not throttle (so every trade is published), trades fed from an async source under
  uvloop in batches as the replication feed delivers them; per trade, from just before
  ``apply(trade)`` to the publish hook receiving the ``IndexValue`` (``perf_counter_ns``);
- SSE latency: the same, but to the moment an aiohttp client on loopback has parsed the
  server-sent event (vendor view), for a paced stream of 2,000 trades/s.
The stream is replayed into two fresh calculators and the final values compared, as a check.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import time

import msgspec

from bench.stats import percentiles
from bourse.config import load_config
from engine.events import Trade
from index_server.calc import IndexCalculator
from index_server.service import IndexService

T0 = 1_749_970_800 * 10**9      # 07:00 UTC


def make_trades(cfg, n: int, seed: int) -> list[Trade]:
    rnd = random.Random(seed)
    ins = cfg.market.instruments
    out = []
    for k in range(n):
        i = rnd.choice(ins)
        ticks = rnd.randrange(i.band_low // i.tick, i.band_high // i.tick + 1)
        out.append(Trade(k + 1, k + 1, T0 + k * 1_000_000, k + 1, i.symbol, ticks * i.tick,
                         i.lot, 1, 1, 2, 0, 0))
    return out


def on_change_defs(cfg, max_per_s: int):
    return tuple(msgspec.structs.replace(d, on_change=True, on_change_max_per_s=max_per_s)
                 for d in cfg.indices)


def bench_calc(cfg, trades) -> float:
    calc = IndexCalculator(cfg.indices, cfg.market)
    on_event = calc.on_event
    t0 = time.perf_counter_ns()
    for ev in trades:
        on_event(ev)
    dt = time.perf_counter_ns() - t0
    check = IndexCalculator(cfg.indices, cfg.market)
    for ev in trades:
        check.on_event(ev)
    assert check.values() == calc.values(), "replay diverged"
    return len(trades) / (dt / 1e9)


async def bench_service(cfg, trades) -> float:
    svc = IndexService(cfg.market, cfg.indices)
    svc.start()
    apply = svc.apply
    t0 = time.perf_counter_ns()
    for k in range(0, len(trades), 256):          # yield to the loop as a feed would
        for ev in trades[k:k + 256]:
            apply(ev)
        await asyncio.sleep(0)
    dt = time.perf_counter_ns() - t0
    await svc.close()
    return len(trades) / (dt / 1e9)


async def bench_on_change(cfg, trades, batch: int) -> tuple[float, dict]:
    svc = IndexService(cfg.market, on_change_defs(cfg, 1_000_000_000))
    clock = time.perf_counter_ns
    t_in = [0] * (len(trades) + 2)
    lat: list[int] = []

    def hook(v):
        lat.append(clock() - t_in[v.event_seq])

    svc.publisher.add_hook(hook)
    svc.start()
    apply = svc.apply
    t0 = clock()
    for k in range(0, len(trades), batch):
        for ev in trades[k:k + batch]:
            t_in[ev.seq] = clock()
            apply(ev)
        await asyncio.sleep(0)
    dt = clock() - t0
    await svc.close()
    return len(trades) / (dt / 1e9), percentiles(lat)


async def bench_sse(cfg, trades, rate: int) -> dict:
    import aiohttp

    from index_server.http import VendorAPI

    svc = IndexService(cfg.market, on_change_defs(cfg, 1_000_000_000))
    api = VendorAPI(svc)
    host, port = await api.start("127.0.0.1", 0)
    svc.start()
    clock = time.perf_counter_ns
    t_in = [0] * (len(trades) + 2)
    lat: list[int] = []
    got = asyncio.Event()
    last_seq = trades[-1].seq

    async def client(http):
        async with http.get(f"http://{host}:{port}/stream") as r:
            async for raw in r.content:
                if raw.startswith(b"data: "):
                    v = json.loads(raw[6:])
                    if v["event_seq"]:
                        lat.append(clock() - t_in[v["event_seq"]])
                        if v["event_seq"] == last_seq:
                            got.set()
                            return

    async with aiohttp.ClientSession() as http:
        reader = asyncio.ensure_future(client(http))
        await asyncio.sleep(0.2)
        gap = 1.0 / rate
        start = time.perf_counter()
        for k, ev in enumerate(trades):
            delay = start + k * gap - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t_in[ev.seq] = clock()
            svc.apply(ev)
        await asyncio.wait_for(got.wait(), 10)
        await reader
    await api.close()
    await svc.close()
    return percentiles(lat)


def _us(p: dict) -> str:
    return "  ".join(f"p{k:g} {v / 1000:.1f} us" for k, v in p.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cfg = load_config(None)
    trades = make_trades(cfg, args.trades, args.seed)
    gc.collect()
    gc.freeze()
    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    print(f"index bench: default config ({', '.join(d.code for d in cfg.indices)}), "
          f"{len(trades):,} trades on {len(cfg.market.instruments)} instruments")
    rate = bench_calc(cfg, trades)
    print(f"calculator          {rate:>12,.0f} trades/s   (target >= 50,000)")
    rate = run(bench_service(cfg, trades))
    print(f"service (cadence)   {rate:>12,.0f} trades/s")
    rate, p = run(bench_on_change(cfg, trades, batch=64))
    print(f"service (on change) {rate:>12,.0f} trades/s   trade -> published: {_us(p)}"
          "   (target p99 <= 1 ms)")
    n = min(len(trades), 10_000)
    p = run(bench_sse(cfg, trades[:n], rate=2_000))
    print(f"SSE on loopback     {n:>12,} trades at 2,000/s   trade -> vendor parsed: {_us(p)}")


if __name__ == "__main__":
    main()
