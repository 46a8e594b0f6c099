"""Engine state snapshots (engine.snapshot): restoring one and replaying the tail is the same as
replaying everything; a bad snapshot is ignored, never trusted.

- property: for random command sequences, a snapshot taken at a random point, encoded, decoded
  and imported into a fresh engine, then fed the remaining commands, gives byte-identical events
  and the same state digest as the engine that never stopped;
- the encoding does not depend on the hash seed;
- the engine server restores the newest valid snapshot, replays only the records after it,
  serves history from event 1, writes snapshots periodically (each fsync mode) and at a clean
  stop, keeps two; a corrupt or mismatched snapshot is ignored with a warning naming the reason;
- ``bourse journal verify`` checks snapshots against the full replay.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
import subprocess
import sys
import zlib

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bourse.config import load_config
from engine import snapshot as snap
from engine.commands import (
    CancelOrder, MassCancel, NewOrder, RaiseAlert, ReplaceOrder, SequencedCommand,
    SetCreditLimit, SetHalt,
)
from engine.core import Engine
from engine.refdata import Firm, Instrument, MarketRefData, StpMode
from engine.sequencer import Submission
from engine.server import EngineServer
from engine.verify import verify_journal
from tests.procs import ROOT, write_config

RD = MarketRefData(
    price_decimals=2,
    instruments=(
        Instrument(symbol="AAA", name="A", tick=100, lot=10, ref_price=10000, band_low=9500,
                   band_high=10500),
        Instrument(symbol="BBB", name="B", tick=5, lot=1, ref_price=500, band_low=480,
                   band_high=520),
    ),
    firms=(
        Firm(id="F1", name="one", credit_limit=10 ** 12),
        Firm(id="FR", name="r", credit_limit=10 ** 12, stp=StpMode.CANCEL_RESTING),
        Firm(id="FI", name="i", credit_limit=10 ** 12, stp=StpMode.CANCEL_INCOMING),
        Firm(id="FB", name="b", credit_limit=10 ** 12, stp=StpMode.CANCEL_BOTH),
        Firm(id="FC", name="c", credit_limit=400_000, accounts=("X", "Y")),
    ),
)
FIRMS = [f.id for f in RD.firms]
SESSIONS = ["S1", "S2", "S3"]
ENC = msgspec.msgpack.Encoder()


# ------------------------------------------------------------------------ command generation

def build(ops: list[tuple[int, int]]) -> list[SequencedCommand]:
    """Commands from (kind, parameter) pairs; a shadow engine points most cancels and replaces
    at live orders (by their id or their current ClOrdID, sometimes from another session)."""
    shadow = Engine(RD)
    out = []
    for i, (kind, param) in enumerate(ops, 1):
        rnd = random.Random(param)
        inst = rnd.choice(RD.instruments)
        sess = rnd.choice(SESSIONS)
        firm = rnd.choice(FIRMS)
        clid = f"c{rnd.randrange(i + 3)}"          # repeats now and then: duplicates
        live = shadow.open_orders()
        target = rnd.choice(live) if live and rnd.randrange(8) else None
        price = inst.ref_price + rnd.randint(-3, 3) * inst.tick   # few levels: queues form
        if kind < 45:
            ot = 1 if rnd.randrange(12) == 0 else 2
            cmd = NewOrder(sess, firm, rnd.choice(("", "X", "Z")) if firm == "FC" else "", clid,
                           inst.symbol, rnd.choice((1, 2)), ot, rnd.choice((0, 0, 0, 3, 4)),
                           0 if ot == 1 else price, inst.lot * rnd.randint(1, 12))
        elif kind < 80 and target is not None:
            inst = next(x for x in RD.instruments if x.symbol == target.instrument)
            by_id = rnd.randrange(2)
            tsess = target.session if rnd.randrange(4) else rnd.choice(SESSIONS)
            orig, oid = ("", target.order_id) if by_id else (target.cl_ord_id, 0)
            if kind < 58:
                cmd = CancelOrder(tsess, target.firm, clid if rnd.randrange(5) else "", orig, oid)
            else:
                qty = target.qty + inst.lot * rnd.randint(-3, 3)
                new_price = target.price if rnd.randrange(3) == 0 else \
                    inst.ref_price + rnd.randint(-3, 3) * inst.tick
                cmd = ReplaceOrder(tsess, target.firm, clid if rnd.randrange(5) else "", orig,
                                   new_price, qty, oid)
        elif kind < 84:
            cmd = MassCancel(sess, clid, rnd.choice(("", firm)), rnd.choice(("", sess)),
                             rnd.choice(("", inst.symbol)))
        elif kind < 90:
            scope = rnd.choice((1, 2, 3))
            cmd = SetHalt(scope, {1: "", 2: firm, 3: inst.symbol}[scope], rnd.randrange(3) == 0,
                          "ops")
        elif kind < 94:
            cmd = SetCreditLimit(rnd.choice(("FC", "NOPE")), rnd.choice((10 ** 5, 10 ** 7)))
        elif kind < 96:
            cmd = RaiseAlert("node", "info", f"alert {i}")
        else:
            cmd = NewOrder(sess, firm, "", clid, inst.symbol, 1, 2, 0, price + 1, inst.lot)
        sc = SequencedCommand(i, 1_700_000_000_000_000_000 + i * 1000, f"gw{param % 3}",
                              i if param % 4 else 0, cmd)
        shadow.apply(sc)
        out.append(sc)
    return out


def roundtrip(engine: Engine) -> tuple[Engine, bytes]:
    """A fresh engine restored from ``engine``'s snapshot body; and that body."""
    state, digest = engine.export_state()
    assert digest == engine.state_digest()
    body = snap.encode_state(state)
    fresh = Engine(RD)
    fresh.import_state(snap.decode_state(body))
    assert fresh.state_digest() == digest
    return fresh, body


ops_strategy = st.lists(st.tuples(st.integers(0, 99), st.integers(0, 2 ** 20)), min_size=20,
                        max_size=200)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy, data=st.data())
def test_snapshot_then_tail_equals_full_replay(ops, data):
    cmds = build(ops)
    cut = data.draw(st.integers(0, len(cmds)), label="cut")
    full = Engine(RD)
    for i, sc in enumerate(cmds[:cut]):
        if i % 7 == 3:
            roundtrip(full)         # every state on the way survives a snapshot too
        full.apply(sc)
    restored, body = roundtrip(full)
    # exporting the restored engine gives the very same bytes (nothing lost or reordered)
    assert snap.encode_state(restored.export_state()[0]) == body
    for sc in cmds[cut:]:
        assert ENC.encode(restored.apply(sc)) == ENC.encode(full.apply(sc)), sc
    assert restored.state_digest() == full.state_digest()
    assert restored.open_orders() == full.open_orders()


def test_restored_engine_keeps_time_priority_ids_and_credit():
    e = Engine(RD)
    cmds = [
        NewOrder("S1", "F1", "", "a", "AAA", 1, 2, 0, 10000, 10),
        NewOrder("S2", "F1", "", "b", "AAA", 1, 2, 0, 10000, 20),
        NewOrder("S1", "FC", "X", "c", "AAA", 1, 2, 0, 10000, 30),
        ReplaceOrder("S1", "F1", "a2", "a", 10000, 40, 0),      # loses priority: to the back
        SetHalt(2, "FR", True, "x"),
        SetCreditLimit("FC", 700_000),
    ]
    for i, c in enumerate(cmds, 1):
        e.apply(SequencedCommand(i, i, "gw", i, c))
    r, _ = roundtrip(e)
    assert [o.order_id for o in r._books["AAA"].queue(1, 10000)] == [2, 3, 1]
    assert r.exposure("FC") == e.exposure("FC") and r.credit_limit("FC") == 700_000
    assert r.halted(2, "FR") and r.last_req == {"gw": 6}
    # the old id stays used, the new one is live; the queue trades in the same order
    after = [CancelOrder("S1", "F1", "a", "a2", 0),              # duplicate id: rejected
             CancelOrder("S1", "F1", "z", "a", 0),               # "a" is no longer live
             NewOrder("S3", "F1", "", "s", "AAA", 2, 2, 0, 10000, 100),
             CancelOrder("S1", "F1", "y", "a2", 0)]
    for i, c in enumerate(after, 7):
        sc = SequencedCommand(i, i, "gw", i, c)
        assert ENC.encode(r.apply(sc)) == ENC.encode(e.apply(sc))
    assert r.state_digest() == e.state_digest() and r.open_orders() == e.open_orders()


def test_import_refuses_inconsistent_state():
    e = Engine(RD)
    for i in range(1, 6):
        e.apply(SequencedCommand(i, i, "gw", i, NewOrder("S1", "F1", "", f"c{i}", "AAA", 1, 2,
                                                         0, 10000 - i * 100, 10)))
    state, _ = e.export_state()
    bad = [
        msgspec.structs.replace(state, orders=state.orders[1:]),           # an order missing
        msgspec.structs.replace(state, next_order_id=3),                    # ids beyond counter
        msgspec.structs.replace(state, firms=state.firms[:-1]),             # other firms
        msgspec.structs.replace(state, sessions=[msgspec.structs.replace(
            state.sessions[0], used=[])]),                                  # live id not used
        msgspec.structs.replace(state, books=[msgspec.structs.replace(
            state.books[0], bids=list(reversed(state.books[0].bids)))] + state.books[1:]),
    ]
    for st_ in bad:
        with pytest.raises((ValueError, KeyError)):
            Engine(RD).import_state(st_)
    used = Engine(RD)
    used.apply(SequencedCommand(1, 1, "gw", 1, RaiseAlert("x", "info", "y")))
    with pytest.raises(ValueError):
        used.import_state(state)


def test_encoding_does_not_depend_on_the_hash_seed():
    code = ("import hashlib; from tests.test_determinism import commands, RD; "
            "from engine.core import Engine; from engine.snapshot import encode_state\n"
            "e = Engine(RD)\n"
            "for sc in commands(1500, 3): e.apply(sc)\n"
            "s, d = e.export_state(); print(hashlib.sha256(encode_state(s)).hexdigest(), d)")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed},
                           check=True).stdout
            for seed in ("1", "4242")}
    assert len(outs) == 1


def test_record_head_reads_every_integer_width():
    from engine.record import BatchRecord
    for first_cmd, first_ev, count, n in ((1, 1, 0, 0), (127, 128, 255, 15), (256, 65536, 3, 16),
                                          (2 ** 32, 2 ** 40, 70000, 65536)):
        payload = ENC.encode(BatchRecord(first_cmd, first_ev, count, [], msgspec.Raw(b"\x90")))
        if n:   # a command list of n elements (the head only counts them)
            payload = ENC.encode([first_cmd, first_ev, count, [0] * n, []])
        assert snap.record_head(payload) == (first_cmd, first_ev, count, n)
    with pytest.raises(ValueError):
        snap.record_head(ENC.encode({"a": 1}))


# ------------------------------------------------------------------------ the engine server

def order(i: int, session: str = "S1") -> NewOrder:
    rnd = random.Random(i)
    side = rnd.choice((1, 2))
    price = (2790000 - rnd.randrange(0, 20) * 100) if side == 1 else \
        (2790000 + rnd.randrange(0, 20) * 100)            # some of them cross: trades
    return NewOrder(session, "FIRM1" if i % 3 else "FIRM2", "A1" if i % 3 else "B1",
                    f"{session}-{i}", "SBER", side, 2, 0, price, 10)


class Harness:
    """An in-process engine server on loopback, driven through ``submit``."""

    def __init__(self, tmp_path, every: int = 1_000_000, fsync: str = "never",
                 extra: str = "") -> None:
        self.cfg = load_config(write_config(
            tmp_path, fsync=fsync,
            extra_engine=f"snapshot_every_commands = {every}\n{extra}"))
        self.dir = tmp_path / "journal"
        self.journal = self.dir / "engine.journal"
        self.n = 0

    def run(self, batches: int, per_batch: int = 10, *, stop: str = "clean") -> EngineServer:
        """Start, run ``batches`` batches, then stop cleanly or "crash" (no stop snapshot)."""
        async def main() -> EngineServer:
            s = EngineServer(self.cfg)
            s.recover()
            await s.start()
            for _ in range(batches):
                req = s._sequenced_req.get("gw1", 0) + 1
                cmds = [order(self.n + k) for k in range(per_batch)]
                self.n += per_batch
                s._sequenced_req["gw1"] = req + per_batch - 1
                s.submit(Submission("gw1", req, cmds, None))
                while s._pending or s.released_next_event < s.engine.next_event_seq:
                    await asyncio.sleep(0.001)
            if s._snap_writer is not None:
                s._snap_writer.join()
            self.digest = s.engine.state_digest()
            if stop == "clean":
                await s.close()
            else:                   # the process dies: nothing more is written
                for srv in s._servers:
                    srv.close()
                s._heartbeat_task.cancel()
                if s._syncer is not None:
                    s._syncer.close()
                if s._sync_handle is not None:
                    s._sync_handle.cancel()
                s.journal.close()
                s.reader.close()
            return s
        return asyncio.run(main())

    def snapshots(self) -> list[str]:
        return snap.list_snapshots(str(self.dir))

    def full_replay_digest(self) -> str:
        return verify_journal(self.journal, self.cfg.market).state_digest


@pytest.mark.parametrize("fsync,threads", [("never", 0), ("batch", 0), ("batch", 1),
                                           ("interval", 0)])
def test_periodic_snapshots_and_tail_replay(tmp_path, fsync, threads, caplog):
    h = Harness(tmp_path, every=25, fsync=fsync, extra=f"sync_threads = {threads}")
    with caplog.at_level(logging.INFO, "bourse.engine"):
        h.run(12, stop="crash")                      # 120 commands, no snapshot at the end
    # periodic snapshots come from a forked child: the loop pays only for the fork
    assert "(fork), export" in caplog.text and "in a child process" in caplog.text
    caplog.clear()
    names = [os.path.basename(p) for p in h.snapshots()]
    assert 1 <= len(names) <= 2, names              # periodic ones, the newest two kept
    newest = snap.read_file(h.snapshots()[0])[0]
    assert newest.next_cmd_seq <= 121
    expected = h.full_replay_digest()
    with caplog.at_level(logging.INFO, "bourse.engine"):
        s = h.run(0)
    assert os.path.basename(s.snapshot_loaded) == names[0]
    covered = (newest.next_cmd_seq - 1) // 10            # records (batches) it covers
    assert s.replayed_records == 12 - covered
    assert h.digest == expected
    assert f"replayed {12 - covered} of 12 records" in caplog.text


def test_restart_replays_only_the_tail_and_serves_history_from_1(tmp_path, procs):
    """A real engine process: periodic snapshot, SIGKILL, restart: only the records after the
    snapshot are replayed and history from event 1 is byte-identical; a clean stop writes a
    snapshot covering everything."""
    from engine.client import EngineLink
    from engine.link import Ack, Events

    cfg = write_config(tmp_path, fsync="never", extra_engine="snapshot_every_commands = 50")
    digest = load_config(cfg).digest
    journal_dir = tmp_path / "journal"

    def start():
        p = procs(["engine", "--config", str(cfg)])
        p.wait_ready()
        return p

    async def collect(p) -> list[bytes]:
        host, port = p.endpoint("replication")
        link = await EngineLink.connect(host, port, component="test", node_id="r",
                                        config_digest=digest, subscribe_from=1)
        head = link.welcome.next_event_seq
        out: list = []
        while len(out) < head - 1:
            msg = await asyncio.wait_for(link.recv(), 10)
            if isinstance(msg, Events):
                out.extend(msg.events)
        await link.close()
        return [ENC.encode(e) for e in out]

    async def load(p, batches: int, first: int) -> list[bytes]:
        host, port = p.endpoint("order_entry")
        gw = await EngineLink.connect(host, port, component="gateway", node_id="gw1",
                                      config_digest=digest)
        for b in range(batches):
            gw.submit([order(first + b * 20 + k) for k in range(20)])
            got = 0
            while got < 20:
                msg = await asyncio.wait_for(gw.recv(), 10)
                if isinstance(msg, Ack):
                    got += msg.count
            if b == batches - 2:     # let the writer finish the snapshot of the batch before
                for _ in range(200):
                    if snap.list_snapshots(str(journal_dir)):
                        break
                    await asyncio.sleep(0.01)
        await gw.close()
        return await collect(p)

    p1 = start()
    # 4 batches of 20: a snapshot after the third (due at command 51), none after the fourth
    before = asyncio.run(load(p1, 4, 0))
    assert snap.list_snapshots(str(journal_dir))
    p1.kill()
    p2 = start()
    after = asyncio.run(collect(p2))
    assert after == before
    p2.stop()
    log2 = p2.stderr()
    m = re.search(r"restored snapshot \S+ \(commands up to (\d+), (\d+) records indexed without "
                  r"replay\), replayed (\d+) of (\d+) records", log2)
    assert m, log2
    upto, indexed, replayed, total = map(int, m.groups())
    assert 0 < upto < 80 and 0 < replayed < total == 4 and indexed + replayed == total
    # the clean stop wrote a snapshot of everything: the next start replays nothing
    p3 = start()
    assert asyncio.run(collect(p3)) == before
    p3.stop()
    assert "replayed 0 of 4 records" in p3.stderr()
    assert len(snap.list_snapshots(str(journal_dir))) == 2


def rewrite(path: str, **changes) -> None:
    """Re-write a snapshot's header with ``changes`` (a valid header checksum)."""
    header, body = snap.read_file(path)
    raw = msgspec.msgpack.encode(msgspec.structs.replace(header, **changes))
    with open(path, "wb") as fh:
        fh.write(snap.MAGIC + len(raw).to_bytes(4, "little") + raw
                 + zlib.crc32(raw).to_bytes(4, "little") + body)


def flip(path: str, where: int) -> None:
    data = bytearray(open(path, "rb").read())
    data[where] ^= 0x55
    open(path, "wb").write(bytes(data))


BAD_SNAPSHOTS = {
    "body checksum mismatch": lambda p, j: flip(p, os.path.getsize(p) - 3),
    "header checksum mismatch": lambda p, j: flip(p, 20),
    "bad magic": lambda p, j: flip(p, 0),
    "truncated": lambda p, j: os.truncate(p, os.path.getsize(p) - 10),
    "release 0.0.0-other": lambda p, j: rewrite(p, release="0.0.0-other"),
    "configuration digest 0000": lambda p, j: rewrite(p, config_digest="0" * 64),
    "another journal": lambda p, j: rewrite(p, journal_created_ns=1),
    "format version 99": lambda p, j: rewrite(p, format_version=99),
    "beyond its end": lambda p, j: os.truncate(j, os.path.getsize(j) - 5),
    "not the end of a journal record": lambda p, j: rewrite(
        p, journal_offset=snap.read_file(p)[0].journal_offset - 1),
    "journal was rewritten": lambda p, j: rewrite(p, last_record_sha256="ab" * 32),
    "differs from the recorded": lambda p, j: rewrite(p, state_digest="cd" * 32),
}


@pytest.mark.parametrize("reason", sorted(BAD_SNAPSHOTS))
def test_bad_snapshot_is_ignored_and_the_journal_replayed(tmp_path, reason, caplog):
    h = Harness(tmp_path)
    h.run(6)                                     # clean stop: one snapshot, at the end
    (path,) = h.snapshots()
    BAD_SNAPSHOTS[reason](path, str(h.journal))
    expected = h.full_replay_digest()
    with caplog.at_level(logging.INFO, "bourse.engine"):
        s = h.run(2, stop="crash")
    assert s.snapshot_loaded is None
    records = 6 - (reason == "beyond its end")       # cutting bytes loses the last record
    assert s.replayed_records == records
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                   and " ignored: " in r.getMessage())
    assert path in warning and reason in warning, warning
    assert f"replayed {records} records" in caplog.text
    # and the engine went on from the right state
    assert s.engine.state_digest() == h.full_replay_digest()
    assert h.digest != expected


def test_falls_back_to_the_older_snapshot(tmp_path, caplog):
    h = Harness(tmp_path, every=25)
    h.run(8)                                  # periodic + stop snapshots: two kept
    newer, older = h.snapshots()
    flip(newer, os.path.getsize(newer) - 1)
    with caplog.at_level(logging.INFO, "bourse.engine"):
        s = h.run(0)
    assert s.snapshot_loaded == older
    assert "body checksum mismatch" in caplog.text
    assert s.engine.state_digest() == h.full_replay_digest()
    # the broken one was replaced when the stop snapshot was written; only two are kept
    assert newer in h.snapshots() and len(h.snapshots()) == 2
    assert snap.read_file(newer)[0].next_cmd_seq == 81


def test_snapshots_off_writes_and_reads_none(tmp_path, caplog):
    h = Harness(tmp_path)
    h.run(3)
    (path,) = h.snapshots()
    off = Harness(tmp_path, every=0)
    with caplog.at_level(logging.INFO, "bourse.engine"):
        s = off.run(2)
    assert s.snapshot_loaded is None and s.replayed_records == 3
    assert h.snapshots() == [path] and snap.read_file(path)[0].next_cmd_seq == 31


def test_snapshot_without_journal_is_ignored(tmp_path, caplog):
    h = Harness(tmp_path)
    h.run(2)
    os.unlink(h.journal)
    with caplog.at_level(logging.INFO, "bourse.engine"):
        s = h.run(1)
    assert s.snapshot_loaded is None and s.engine.next_cmd_seq == 11
    assert "no journal" in caplog.text
    (path,) = h.snapshots()                  # the stale one is gone, the new one is there
    assert snap.read_file(path)[0].next_cmd_seq == 11


def test_atomic_write_leaves_no_temporary(tmp_path):
    h = Harness(tmp_path)
    h.run(2)
    assert sorted(os.listdir(h.dir)) == ["engine.journal", os.path.basename(h.snapshots()[0])]
    header, body = snap.read_file(h.snapshots()[0])
    assert header.body_sha256 == hashlib.sha256(body).hexdigest()
    assert header.journal_offset == os.path.getsize(h.journal)
    assert (header.next_cmd_seq, header.last_ts > 0) == (21, True)


def test_journal_verify_reports_snapshots(tmp_path, capsys):
    from bourse.cli import main

    h = Harness(tmp_path, every=25)
    h.run(8)
    cfg = str(tmp_path / "bourse.toml")
    assert main(["journal", "verify", str(h.journal), "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "snapshots 2\n" in out
    assert out.count("matches full replay") == 2, out
    newer, older = h.snapshots()
    rewrite(older, state_digest="ef" * 32)
    flip(newer, os.path.getsize(newer) - 1)
    assert main(["journal", "verify", str(h.journal), "--config", cfg]) == 1
    out = capsys.readouterr().out
    assert f"snapshot {os.path.basename(older)}: commands up to " in out
    assert "DIFFERS from full replay" in out
    assert "not usable: body checksum mismatch" in out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_writer_reports_a_failed_capture_and_keeps_going(tmp_path, caplog):
    """The child's failure is logged in the engine with its reason; nothing is written or
    kept, and the next snapshot can start."""
    w = snap.Writer(str(tmp_path))

    def broken():
        raise RuntimeError("export failed on purpose")

    with caplog.at_level(logging.INFO, "bourse.engine"):
        assert w.fork(broken, 101)
        w.join()
    assert "snapshot at command 101 not written: RuntimeError: export failed on purpose" \
        in caplog.text
    assert not w.busy and w.written == 0 and w.kept == [] and w.last_cmd == 0
    assert snap.list_snapshots(str(tmp_path)) == []
