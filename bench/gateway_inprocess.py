"""The FIX gateway's own CPU per order, in one process, without sockets and without the engine.

    python -m bench.gateway_inprocess [--orders N] [--sessions S] [--chunk K] [--repeat R]

The end-to-end benchmark (``bench.fix_gateway``) shares two CPUs between the load client, the
gateway and the engine, and its figures move with whatever else the machine runs. This one
measures only the gateway's code, the part that bounds the end-to-end throughput (the gateway
is the process at 80-90% of a CPU there), so that a change to it can be judged by a number
that repeats:

1. the gateway (``fix_gateway.gateway.Gateway``, real ``FileStore`` per session with group
   commit, ``store_fsync = "never"`` as in the end-to-end run) logs S sessions on through
   ``_FixConnection.data_received`` with a stub transport that only counts the bytes written;
2. inbound, timed: N pre-encoded NewOrderSingle (those of ``bench.fix_gateway``) arrive K at a
   time per session, round robin, as reads from TCP would hand them over; each read is
   followed by the end of a loop iteration (the callbacks the gateway scheduled: the flush of
   commands to the engine link, the store writes). The link is a stub that encodes each
   ``Submit`` as the real client does and keeps the commands;
3. the engine, untimed: a real ``engine.core.Engine`` sequences and applies the submitted
   batches; each batch's events and its acknowledgement are encoded as the engine server
   frames them;
4. outbound, timed: the gateway decodes each batch's two frames, read together (the link
   client's decoder), and handles them as its engine loop does (``_on_events``: replica, reports, store, socket; ``_release_range``:
   inbound sequence numbers), then ends the loop iteration.

The collector runs as in the components (young collections, survivors frozen; its cost is
counted). On a shared machine the CPU times move by 10-30% from run to run; to compare two
versions of the code, count instructions instead, which repeat to within about 0.5%:

    valgrind --tool=callgrind --toggle-collect=functools_reduce \
        python -m bench.gateway_inprocess --orders 8000 --repeat 1 [--chunk 1]

counts only the two timed phases; the total divided by the orders is the gateway's
instructions per order.

Prints CPU time per order (CLOCK_PROCESS_CPUTIME_ID) for each timed phase and the orders/s
one CPU would give at that cost; checks that every order got exactly one ExecutionReport(New).
Asserts nothing about the figures.
"""
from __future__ import annotations

import argparse
import functools
import gc
import logging
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from bench.fix_gateway import bench_config, encode, new_orders, session_ids, utc_stamp
from bourse.config import load_config
from engine.client import FROM_ENGINE_DECODER
from engine.commands import SequencedCommand
from engine.core import Engine
from engine.link import Ack, Events, Submit
from fix_gateway.gateway import Gateway, _FixConnection


#: the collector as the components run it (``bourse.run.tune_gc``): automatic collection off,
#: young objects collected and the survivors frozen every 20 ms, here every this many orders
#: (about 20 ms of gateway work at full load)
GC_ORDERS = 800


class StubLoop:
    """Collects what the gateway schedules; ``run()`` is the end of a loop iteration (also the
    gateway tests' loop)."""

    def __init__(self) -> None:
        self.ready: list = []

    def call_soon(self, cb, *args):
        self.ready.append((cb, args))

    def call_later(self, _delay, cb, *args):
        return _Handle()

    def run(self) -> None:
        while self.ready:
            batch, self.ready = self.ready, []
            for cb, args in batch:
                cb(*args)


class _Handle:
    def cancel(self) -> None:
        pass


class StubTransport:
    """Keeps what the gateway writes; counted after the timed phases (also the base of the
    gateway tests' transports)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.write = self.written.append

    @property
    def news(self) -> int:
        return sum(d.count(b"\x01150=0\x01") for d in self.written)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    abort = close

    def get_extra_info(self, _name, default=None):
        return default


class StubLink:
    """The engine link's submit side: encodes as ``EngineLink.submit`` does, keeps the batches
    (also the gateway tests' link)."""

    def __init__(self) -> None:
        self.next_req = 1
        self.batches: list[tuple[int, list]] = []
        self._enc = msgspec.msgpack.Encoder()
        self.wire = 0

    def submit(self, cmds) -> int:
        first = self.next_req
        self.wire += len(self._enc.encode(Submit(first, list(cmds))))
        self.batches.append((first, list(cmds)))
        self.next_req += len(cmds)
        return first

    def ping(self, token: int = 0) -> None:
        pass


def _engine_frames(market, batches: list, origin: str) -> list[list[bytes]]:
    """The engine's answer to each submitted batch: an Events frame and an Ack, which the
    engine writes together (the gateway reads both at once)."""
    eng = Engine(market)
    enc = msgspec.msgpack.Encoder()
    frames = []
    ts = time.time_ns()
    for first, cmds in batches:
        events = []
        ev_first = eng.next_event_seq
        cmd_first = eng.next_cmd_seq
        for k, cmd in enumerate(cmds):
            seq = eng.next_cmd_seq
            events += eng.apply(SequencedCommand(seq, ts + seq, origin, first + k, cmd))
        frames.append([enc.encode(Events(ev_first, len(events), events)),
                       enc.encode(Ack(first, len(cmds), cmd_first))])
    return frames


def run(orders: int, n_sessions: int, chunk: int) -> dict:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bourse-gwbench-") as tmp:
        sessions = session_ids(n_sessions)
        cfg = load_config(bench_config(Path(tmp), sessions, "never"))
        gcfg = cfg.gateway()
        gw = Gateway(cfg, gcfg)
        gw.open_sessions()
        loop = StubLoop()
        gw._loop = loop
        link = StubLink()
        gw.link = link
        gw.engine_up.set()
        gw.caught_up.set()
        conns, transports = [], []
        for s in sessions:
            conn = _FixConnection(gw)
            t = StubTransport()
            conn.transport, conn.peer, conn.peer_host = t, "127.0.0.1:1", "127.0.0.1"
            conn.data_received(encode(b"A", s.encode(), 1, b"98=0\x01108=30\x01", utc_stamp()))
            loop.run()
            conns.append(conn)
            transports.append(t)
        per = orders // n_sessions
        msgs = [new_orders(s, f"A{k % 8 + 1}", 2, per, "T") for k, s in enumerate(sessions)]
        reads = []
        for i in range(0, per, chunk):
            for conn, m in zip(conns, msgs):
                reads.append((conn, b"".join(m[i:i + chunk])))
        link.batches.clear()
        gc.collect()
        gc.freeze()

        gc_every = max(1, GC_ORDERS // chunk)     # reads, and engine batches (one per read)
        gc.disable()
        t0 = time.process_time_ns()
        # The timed phases run inside functools.reduce (a C function nothing else here calls),
        # so that ``valgrind --tool=callgrind --toggle-collect=functools_reduce`` counts the
        # instructions of these two phases only.

        def step_in(_acc, item):
            k, (conn, data) = item
            conn.data_received(data)
            loop.run()
            if k % gc_every == gc_every - 1:
                gc.collect(0)
                gc.freeze()
        functools.reduce(step_in, enumerate(reads), None)
        t1 = time.process_time_ns()
        inbound = t1 - t0

        frames = _engine_frames(cfg.market, link.batches, gcfg.node_id)
        decode = FROM_ENGINE_DECODER.decode
        gc.collect()
        gc.freeze()
        t0 = time.process_time_ns()
        def step_out(_acc, item):
            k, read = item
            for body in read:
                msg = decode(body)
                if type(msg) is Events:
                    gw._on_events(msg.events)
                else:
                    gw._release_range(msg.first_req_id, msg.count)
            loop.run()
            if k % gc_every == gc_every - 1:
                gc.collect(0)
                gc.freeze()
        functools.reduce(step_out, enumerate(frames), None)
        t1 = time.process_time_ns()
        gc.enable()
        outbound = t1 - t0
        news = sum(t.news for t in transports)
        for slot in gw.slots.values():
            slot.fix.store.close()
        gc.unfreeze()
        return {"orders": per * n_sessions, "news": news, "inbound_ns": inbound,
                "outbound_ns": outbound, "frames": len(frames),
                "commands": sum(len(c) for _, c in link.batches)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=200_000)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=50, help="orders per read per session")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported too")
    args = ap.parse_args(argv)
    print(f"gateway in-process: Python {sys.version.split()[0]}, {args.orders:,} NewOrderSingle "
          f"over {args.sessions} sessions, {args.chunk} per read")
    totals = []
    for k in range(args.repeat):
        r = run(args.orders, args.sessions, args.chunk)
        n = r["orders"]
        if r["news"] != n or r["commands"] != n:
            print(f"  run {k + 1}: {r['news']:,} ExecutionReport(New) and {r['commands']:,} "
                  f"commands for {n:,} orders: the run is not valid")
            continue
        inb, outb = r["inbound_ns"] / n / 1000, r["outbound_ns"] / n / 1000
        totals.append(inb + outb)
        print(f"  run {k + 1}: inbound {inb:.2f} us/order, outbound {outb:.2f} us/order, "
              f"total {inb + outb:.2f} us/order = {1e6 / (inb + outb):,.0f} orders/s per CPU "
              f"({r['frames']:,} engine reads)")
    if totals:
        best = min(totals)
        print(f"  best: {best:.2f} us/order = {1e6 / best:,.0f} orders/s per CPU")


if __name__ == "__main__":
    main()
