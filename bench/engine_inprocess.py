"""In-process throughput and latency benchmark of the core trade engine.

Usage: ``python -m bench.engine_inprocess [--commands N] [--seed S]``

Contract: builds ``bench.workload.default_refdata()``, generates the prefill plus N commands
(``bench.workload.generate_parts``), pre-sequences them (fake sequencer timestamps), then for a
fresh ``Engine`` each time: applies the prefill untimed and times ``Engine.apply`` over the N
commands -- once for throughput (a single timer around the loop), once with
``time.perf_counter_ns`` around every call for the latency percentiles, and the same two passes
again with ``msgspec.msgpack.Encoder().encode(events)`` of every command's events, as production
does. Before timing, ``gc.collect(); gc.freeze()`` moves the pre-built workload out of the
collector's view (as a server does after start-up); the collector stays enabled. The runs are
also cross-checked: every pass must end in the same ``state_digest``.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time

import msgspec

from bench.workload import default_refdata, generate_parts, sequence
from engine.commands import NewOrder
from engine.core import Engine
from engine.events import Trade


def _fresh(refdata, prefill):
    eng = Engine(refdata)
    for sc in prefill:
        eng.apply(sc)
    return eng


def _throughput(refdata, prefill, main, encode: bool):
    eng = _fresh(refdata, prefill)
    apply = eng.apply
    ev0 = eng.next_event_seq
    if encode:
        enc = msgspec.msgpack.Encoder().encode
        nbytes = 0
        t0 = time.perf_counter_ns()
        for sc in main:
            nbytes += len(enc(apply(sc)))
        dt = time.perf_counter_ns() - t0
    else:
        nbytes = 0
        t0 = time.perf_counter_ns()
        for sc in main:
            apply(sc)
        dt = time.perf_counter_ns() - t0
    return eng, dt, eng.next_event_seq - ev0, nbytes


def _latency(refdata, prefill, main, encode: bool):
    eng = _fresh(refdata, prefill)
    apply = eng.apply
    clock = time.perf_counter_ns
    lat = [0] * len(main)
    traded = 0
    enc = msgspec.msgpack.Encoder().encode
    i = 0
    if encode:
        for sc in main:
            t0 = clock()
            enc(apply(sc))
            lat[i] = clock() - t0
            i += 1
    else:
        for sc in main:
            t0 = clock()
            events = apply(sc)
            lat[i] = clock() - t0
            i += 1
            for e in events:
                if e.__class__ is Trade:
                    traded += 1
                    break
    lat.sort()
    return eng, lat, traded


def _pct(lat: list[int]) -> str:
    n = len(lat)
    out = []
    for name, num, den in (("p50", 50, 100), ("p90", 90, 100), ("p99", 99, 100),
                           ("p99.9", 999, 1000)):
        out.append(f"{name}={lat[min(n - 1, n * num // den)] / 1000:.1f}")
    out.append(f"max={lat[-1] / 1000:.1f}")
    return " ".join(out) + " us"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    refdata = default_refdata()
    t0 = time.perf_counter()
    pre_cmds, main_cmds = generate_parts(refdata, args.commands, args.seed)
    prefill = sequence(pre_cmds)
    main_sc = sequence(main_cmds, first_seq=len(prefill) + 1)
    gen_s = time.perf_counter() - t0
    n = len(main_sc)
    kinds: dict[str, int] = {}
    for c in main_cmds:
        k = c.__class__.__name__
        if c.__class__ is NewOrder:
            k = {3: "NewOrder(IOC)", 4: "NewOrder(FOK)"}.get(c.tif, "NewOrder(day)")
        kinds[k] = kinds.get(k, 0) + 1
    print(f"python {sys.version.split()[0]}; {len(refdata.instruments)} instruments, "
          f"{len(refdata.firms)} firms; prefill {len(prefill)} orders; {n} commands "
          f"(seed {args.seed}); generated in {gen_s:.1f} s")
    print("mix: " + ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in sorted(kinds.items())))

    gc.collect()
    gc.freeze()

    digests = set()
    eng, dt, nev, _ = _throughput(refdata, prefill, main_sc, encode=False)
    digests.add(eng.state_digest())
    print(f"apply:          {n / dt * 1e9:12,.0f} commands/s  {nev / dt * 1e9:12,.0f} events/s"
          f"  ({dt / 1e9:.2f} s, {nev / n:.2f} events/command)")
    eng, dt, nev, nbytes = _throughput(refdata, prefill, main_sc, encode=True)
    digests.add(eng.state_digest())
    print(f"apply+encode:   {n / dt * 1e9:12,.0f} commands/s  {nev / dt * 1e9:12,.0f} events/s"
          f"  ({dt / 1e9:.2f} s, {nbytes / n:.0f} bytes/command)")

    eng, lat, traded = _latency(refdata, prefill, main_sc, encode=False)
    digests.add(eng.state_digest())
    print(f"traded: {100 * traded / n:.2f}% of commands; at the end {eng.open_order_count()} "
          f"resting orders over {eng.level_count()} price levels")
    print(f"latency apply:        {_pct(lat)}")
    eng, lat, _ = _latency(refdata, prefill, main_sc, encode=True)
    digests.add(eng.state_digest())
    print(f"latency apply+encode: {_pct(lat)}")
    if len(digests) != 1:
        print("ERROR: the passes ended in different states", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
