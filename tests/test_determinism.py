"""Engine-level determinism: the same command list gives byte-identical encoded events.

- two fresh Engine instances in one process;
- commands round-tripped through msgpack (as the journal stores them) give the same bytes;
- subprocesses with different PYTHONHASHSEED values give the same bytes and state digest.
"""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import msgspec

from engine.commands import (
    CancelOrder, MassCancel, NewOrder, RaiseAlert, ReplaceOrder, SequencedCommand,
    SetCreditLimit, SetHalt,
)
from engine.core import Engine
from engine.refdata import Firm, Instrument, MarketRefData, StpMode

RD = MarketRefData(
    price_decimals=4,
    instruments=tuple(
        Instrument(symbol=sym, name=sym, tick=100, lot=lot, ref_price=ref,
                   band_low=ref - 20 * 100, band_high=ref + 20 * 100)
        for sym, lot, ref in (("SBER", 10, 2500000), ("GAZP", 10, 1600000), ("LKOH", 1, 6800000))
    ),
    firms=(
        Firm(id="MC1", name="a", credit_limit=10 ** 15, accounts=("T1", "T2")),
        Firm(id="MC2", name="b", credit_limit=10 ** 15),
        Firm(id="MC3", name="c", credit_limit=10 ** 15, stp=StpMode.CANCEL_RESTING),
        Firm(id="MC4", name="d", credit_limit=10 ** 15, stp=StpMode.CANCEL_INCOMING),
        Firm(id="MC5", name="e", credit_limit=10 ** 15, stp=StpMode.CANCEL_BOTH),
        Firm(id="MC6", name="f", credit_limit=3 * 10 ** 8),
    ),
)


def commands(n: int = 4000, seed: int = 7) -> list[SequencedCommand]:
    """A mixed, partly invalid command list exercising every command type.

    A shadow engine tells the generator which orders are live, so that most cancels and
    replaces hit something; the list is then replayed by fresh engines.
    """
    rnd = random.Random(seed)
    shadow = Engine(RD)
    insts = RD.instruments
    firms = [f.id for f in RD.firms] + ["NOPE"]
    sessions = ["S1", "S2", "S3"]
    out = []
    clid = 0
    for i in range(1, n + 1):
        clid += 1
        r = rnd.randrange(100)
        sess = rnd.choice(sessions)
        firm = rnd.choice(firms) if rnd.randrange(20) else "NOPE"
        inst = rnd.choice(insts)
        live = shadow.open_orders()
        if r >= 45 and r < 93 and live and rnd.randrange(10):
            o = rnd.choice(live)
            sess, firm = o.session, o.firm if rnd.randrange(20) else "MC2"
            inst = next(x for x in insts if x.symbol == o.instrument)
            orig, oid = (o.cl_ord_id, 0) if rnd.randrange(2) else ("", o.order_id)
        else:
            orig, oid = f"c{rnd.randint(1, clid)}", 0
        if r < 45:
            ot = 1 if rnd.randrange(15) == 0 else 2
            tif = rnd.choice((0, 0, 0, 0, 3, 4))
            price = 0 if ot == 1 else inst.ref_price + rnd.randint(-20, 20) * inst.tick
            if rnd.randrange(40) == 0:
                price += 1
            qty = inst.lot * rnd.randint(0 if rnd.randrange(50) == 0 else 1, 30)
            account = rnd.choice(("T1", "T2", "T2", "XX")) if firm == "MC1" else ""
            cmd = NewOrder(sess, firm, account, f"c{clid}", inst.symbol, rnd.choice((1, 2)), ot,
                           tif, price, qty)
        elif r < 55:
            cmd = CancelOrder(sess, firm, f"c{clid}", orig, oid)
        elif r < 93:
            price = inst.ref_price + rnd.randint(-20, 20) * inst.tick
            qty = inst.lot * rnd.randint(1, 30)
            cmd = ReplaceOrder(sess, firm, f"c{clid}", orig, price, qty, oid)
        elif r < 95:
            cmd = MassCancel(sess, f"c{clid}", rnd.choice(("", firm)), rnd.choice(("", sess)),
                             rnd.choice(("", inst.symbol)))
        elif r < 97:
            scope = rnd.choice((1, 2, 3))
            target = {1: "", 2: firm, 3: inst.symbol}[scope]
            cmd = SetHalt(scope, target, rnd.randrange(4) == 0, "ops")
        elif r < 99:
            cmd = SetCreditLimit(rnd.choice(("MC6", "MC6", "NOPE")),
                                 rnd.choice((10 ** 8, 3 * 10 ** 8, 10 ** 9)))
        else:
            cmd = RaiseAlert("node", "info", f"alert {i}")
        sc = SequencedCommand(i, 1_700_000_000_000_000_000 + i * 1000, f"gw{i % 3}", i // 3, cmd)
        shadow.apply(sc)
        out.append(sc)
    return out


def run(cmds: list[SequencedCommand]) -> tuple[bytes, str]:
    """All encoded events, concatenated, and the final state digest."""
    engine = Engine(RD)
    enc = msgspec.msgpack.Encoder().encode
    chunks = [enc(engine.apply(sc)) for sc in cmds]
    return b"".join(chunks), engine.state_digest()


def stream_digest() -> str:
    data, state = run(commands())
    return hashlib.sha256(data).hexdigest() + " " + state


def test_two_engines_same_bytes():
    cmds = commands()
    a, da = run(cmds)
    b, db = run(cmds)
    assert a == b and da == db
    assert len(a) > 100_000


def test_workload_really_trades_and_rejects():
    from engine.events import OrderRejected, Trade, BookUpdate
    engine = Engine(RD)
    kinds: dict = {}
    for sc in commands():
        for e in engine.apply(sc):
            kinds[type(e)] = kinds.get(type(e), 0) + 1
    assert kinds.get(Trade, 0) > 100 and kinds.get(OrderRejected, 0) > 50
    assert kinds.get(BookUpdate, 0) > 500


def test_journal_round_trip_gives_same_bytes():
    cmds = commands()
    journal = [msgspec.msgpack.encode(sc) for sc in cmds]
    dec = msgspec.msgpack.Decoder(SequencedCommand)
    assert run([dec.decode(b) for b in journal]) == run(cmds)


def test_digest_differs_for_different_input():
    cmds = commands()
    assert run(cmds[:-1])[1] != run(cmds)[1]


def test_same_bytes_across_hash_seeds():
    here = Path(__file__).resolve().parent
    root = here.parent
    code = "import test_determinism as t; print(t.stream_digest())"
    results = set()
    for seed in ("0", "12345", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed,
                   PYTHONPATH=os.pathsep.join([str(here), str(root)]))
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(root),
                             capture_output=True, text=True, timeout=120, check=True)
        results.add(out.stdout.strip())
    results.add(stream_digest())
    assert len(results) == 1, results


def test_bench_workload_is_deterministic_and_replayable():
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.workload import default_refdata, generate, generate_parts, sequence
    from engine.events import Trade

    rd = default_refdata()
    cmds = generate(rd, 3000, seed=3)
    assert cmds == generate(rd, 3000, seed=3)
    assert cmds != generate(rd, 3000, seed=4)
    prefill, main = generate_parts(rd, 3000, seed=3)
    assert prefill + main == cmds and len(main) == 3000
    engine = Engine(rd)
    traded = rejected = 0
    for sc in sequence(cmds):
        events = engine.apply(sc)
        traded += any(isinstance(e, Trade) for e in events)
        rejected += any(type(e).__name__ in ("OrderRejected", "CancelRejected") for e in events)
    assert 0.02 < traded / len(cmds) < 0.12
    assert rejected / len(cmds) < 0.02
    assert 700 <= engine.open_order_count() <= 1300
