"""Interoperability: a real QuickFIX initiator (C++ engine) against the gateway.

The QuickFIX sessions load the exchange's published dialect dictionary (spec/FIX44-bourse.xml)
with validation on, so every message the gateway sends is checked by an independent FIX engine
(an invalid one would be answered with a session Reject and never reach the application).
Engine and gateway are real processes on loopback.
"""
from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from engine.events import OrderAccepted
from tests.fixclient import (
    QuickFixClient, Relay, Stack, engine_events, new_order, utc_now, write_fix_config,
)

pytestmark = pytest.mark.integration
pytest.importorskip("quickfix")

SESSIONS = (("BROKER1", "FIRM1"), ("BROKER3", "FIRM2"),
            {"comp_id": "DROPCOPY1", "firm": "FIRM1", "drop_copy": True})


@pytest.fixture
def clients():
    started: list[QuickFixClient] = []

    def make(*args, **kw) -> QuickFixClient:
        c = QuickFixClient(*args, **kw)
        started.append(c)
        return c

    yield make
    QuickFixClient.stop_all(started)


@pytest.fixture
def start_stack(procs, tmp_path):
    """Engine and gateway processes; their logs are printed (shown if the test fails)."""
    made: list[Stack] = []

    def make(sessions) -> Stack:
        st = Stack(procs, write_fix_config(tmp_path, sessions))
        made.append(st)
        return st.start()

    yield make
    for st in made:
        print(st.log()[-20000:])


def D(v: str) -> Decimal:
    return Decimal(v)


def check_er(m, *, exec_type: str, status: str, cum: int, leaves: int, avg: str,
             last_qty: int | None = None, last_px: str | None = None) -> None:
    assert m.msg_type == "8", m
    assert (m[150], m[39]) == (exec_type, status), m
    assert int(m[14]) == cum and int(m[151]) == leaves, m
    assert D(m[6]) == D(avg), m
    if last_qty is None:
        assert 32 not in m or int(m[32]) == 0, m
    else:
        assert int(m[32]) == last_qty and D(m[31]) == D(last_px), m


def no_session_rejects(*cs: QuickFixClient) -> None:
    for c in cs:
        assert c.rejects_sent() == [], f"QuickFIX rejected messages of the exchange: " \
                                       f"{c.rejects_sent()}"
        bad = [m for m in c.app.app_in + c.app.admin_in if m.msg_type in ("3", "j")]
        assert bad == [], f"{c.sender} received rejects: {bad}"


def test_quickfix_trading_session(tmp_path, start_stack, clients):
    """Log on, list securities, trade across firms, cancel, replace, rejects, status, MD."""
    port = start_stack(SESSIONS).fix[1]
    b1 = clients(tmp_path, "BROKER1", port).start(wait_logon=None)
    b3 = clients(tmp_path, "BROKER3", port).start(wait_logon=None)
    dc = clients(tmp_path, "DROPCOPY1", port).start(wait_logon=None)
    for c in (b1, b3, dc):
        c.wait_logon()

    # --- SecurityListRequest -> SecurityList
    b1.send("x", [(320, "SL-1"), (559, "4")])
    sl = b1.expect(lambda m: m.msg_type == "y", what="SecurityList")
    assert sl[320] == "SL-1" and sl[560] == "0" and sl[146] == "2"
    assert sl.get_all(55) == ["SBER", "GAZP"]
    sber = dict(sl.fields[sl.fields.index((55, "SBER")):sl.fields.index((55, "GAZP"))])
    assert sber[48] == "RU0009029540" and sber[561] == "10"
    assert D(sber[969]) == D("0.01") and D(sber[140]) == D("280")
    assert D(sber[1148]) == D("224") and D(sber[1149]) == D("336")
    b1.send("x", [(320, "SL-2"), (559, "0"), (55, "NOPE")])
    sl2 = b1.expect(lambda m: m.msg_type == "y", what="SecurityList")
    assert sl2[320] == "SL-2" and sl2[560] == "2" and 55 not in sl2

    # --- two resting sells of FIRM2, one buy of FIRM1 sweeping both: New, PartialFill x2
    b3.send("D", new_order("S-1", 2, 30, "280.10", account="B1"))
    check_er(b3.expect_er("S-1", "0"), exec_type="0", status="0", cum=0, leaves=30, avg="0")
    b3.send("D", new_order("S-2", 2, 50, "280.20", account="B1"))
    check_er(b3.expect_er("S-2", "0"), exec_type="0", status="0", cum=0, leaves=50, avg="0")
    b1.send("D", new_order("B-1", 1, 100, "280.20", account="A1"))
    new_b1 = b1.expect_er("B-1", "0")
    check_er(new_b1, exec_type="0", status="0", cum=0, leaves=100, avg="0")
    assert new_b1[1] == "A1" and new_b1[55] == "SBER" and new_b1[54] == "1"
    assert D(new_b1[44]) == D("280.2") and new_b1[38] == "100"
    f1 = b1.expect_er("B-1", "F")
    check_er(f1, exec_type="F", status="1", cum=30, leaves=70, avg="280.1",
             last_qty=30, last_px="280.10")
    f2 = b1.expect_er("B-1", "F")
    check_er(f2, exec_type="F", status="1", cum=80, leaves=20, avg="280.1625",
             last_qty=50, last_px="280.20")
    s1 = b3.expect_er("S-1", "F")
    check_er(s1, exec_type="F", status="2", cum=30, leaves=0, avg="280.1",
             last_qty=30, last_px="280.10")
    s2 = b3.expect_er("S-2", "F")
    check_er(s2, exec_type="F", status="2", cum=50, leaves=0, avg="280.2",
             last_qty=50, last_px="280.20")
    assert f1[880] == s1[880] and f2[880] == s2[880] and f1[880] != f2[880]
    assert new_b1[37] == f1[37] == f2[37]

    # --- an aggressive sell fills the rest at the resting buy's price: Fill
    b3.send("D", new_order("S-3", 2, 20, "280.00", account="B1"))
    check_er(b3.expect_er("S-3", "0"), exec_type="0", status="0", cum=0, leaves=20, avg="0")
    s3 = b3.expect_er("S-3", "F")
    check_er(s3, exec_type="F", status="2", cum=20, leaves=0, avg="280.2",
             last_qty=20, last_px="280.20")
    f3 = b1.expect_er("B-1", "F")
    check_er(f3, exec_type="F", status="2", cum=100, leaves=0, avg="280.17",
             last_qty=20, last_px="280.20")

    # --- cancel -> Canceled
    b1.send("D", new_order("C-1", 1, 50, "279.00", account="A2"))
    c_new = b1.expect_er("C-1", "0")
    b1.send("F", [(41, "C-1"), (11, "C-2"), (55, "SBER"), (54, "1"), (60, utc_now())])
    cx = b1.expect_er("C-2", "4")
    check_er(cx, exec_type="4", status="4", cum=0, leaves=0, avg="0")
    assert cx[41] == "C-1" and cx[37] == c_new[37]

    # --- replace -> Replaced (same OrderID, new ClOrdID, price and quantity)
    b1.send("D", new_order("R-1", 1, 50, "279.00", account="A1"))
    r_new = b1.expect_er("R-1", "0")
    b1.send("G", [(41, "R-1"), (11, "R-2"), (55, "SBER"), (54, "1"), (60, utc_now()),
                  (38, "60"), (40, "2"), (44, "279.10")])
    rp = b1.expect_er("R-2", "5")
    check_er(rp, exec_type="5", status="0", cum=0, leaves=60, avg="0")
    assert rp[41] == "R-1" and rp[37] == r_new[37] and rp[38] == "60"
    assert D(rp[44]) == D("279.1")

    # --- rejects, each with its reason (engine: tick, lot, account; gateway: price collar)
    for cl, qty, px, acct, reason, word in (("E-1", 10, "280.005", "A1", "18", "tick"),
                                            ("E-2", 15, "280.00", "A1", "13", "lot"),
                                            ("E-3", 10, "280.00", "B1", "15", "account"),
                                            ("E-4", 10, "320.00", "A1", "99", "collar")):
        b1.send("D", new_order(cl, 1, qty, px, account=acct))
        rj = b1.expect_er(cl, "8")
        assert rj[39] == "8" and rj[103] == reason and word in rj[58], rj
        assert int(rj[151]) == 0 and int(rj[14]) == 0

    # --- OrderCancelReject for an unknown order
    b1.send("F", [(41, "NO-SUCH"), (11, "C-3"), (55, "SBER"), (54, "1"), (60, utc_now())])
    cr = b1.expect(lambda m: m.msg_type == "9", what="OrderCancelReject")
    assert cr[11] == "C-3" and cr[41] == "NO-SUCH" and cr[434] == "1" and cr[102] == "1", cr
    assert cr[39] == "8" and cr[37] == "NONE"

    # --- OrderStatusRequest: an open order, a filled order, an unknown order
    b1.send("H", [(11, "R-2"), (790, "ST-1"), (55, "SBER"), (54, "1")])
    st = b1.expect(lambda m: m.msg_type == "8" and m.get(790) == "ST-1", what="status R-2")
    check_er(st, exec_type="I", status="0", cum=0, leaves=60, avg="0")
    assert st[11] == "R-2" and st[37] == r_new[37]
    b1.send("H", [(11, "B-1"), (790, "ST-2"), (55, "SBER"), (54, "1")])
    st = b1.expect(lambda m: m.msg_type == "8" and m.get(790) == "ST-2", what="status B-1")
    check_er(st, exec_type="I", status="2", cum=100, leaves=0, avg="280.17")
    b1.send("H", [(11, "NO-SUCH"), (790, "ST-3"), (55, "SBER"), (54, "1")])
    st = b1.expect(lambda m: m.msg_type == "8" and m.get(790) == "ST-3", what="status unknown")
    assert (st[150], st[39], st[103]) == ("I", "8", "5")

    # --- MarketDataRequest snapshot -> W: bid, offer and last trade
    b3.send("D", new_order("S-4", 2, 40, "281.00", account="B1"))
    b3.expect_er("S-4", "0")
    b1.send("V", [(262, "MD-1"), (263, "0"), (264, "0"),
                  (267, [[(269, "0")], [(269, "1")], [(269, "2")]]), (146, [[(55, "SBER")]])])
    w = b1.expect(lambda m: m.msg_type == "W", what="MarketDataSnapshotFullRefresh")
    assert w[262] == "MD-1" and w[55] == "SBER" and w[268] == "3"
    entries, cur = [], None
    for t, v in w.fields:
        if t == 269:
            cur = {}
            entries.append(cur)
        if cur is not None and t in (269, 270, 271, 290):
            cur[t] = v
    assert [(e[269], D(e[270]), int(e[271])) for e in entries] == [
        ("0", D("279.1"), 60), ("1", D("281"), 40), ("2", D("280.2"), 20)]
    b1.send("V", [(262, "MD-2"), (263, "0"), (264, "1"), (267, [[(269, "0")]]),
                  (146, [[(55, "NOPE")]])])
    y = b1.expect(lambda m: m.msg_type == "Y", what="MarketDataRequestReject")
    assert y[262] == "MD-2" and y[281] == "0"

    # --- ExecIDs: unique per session and across the exchange; drop copy has every one of
    #     FIRM1's, with the original ExecID, CopyMsgIndicator and the entering session
    ers = {c.sender: [m for m in c.app.app_in if m.msg_type == "8" and m.get(150) != "I"]
           for c in (b1, b3)}
    all_ids = [m[17] for ms in ers.values() for m in ms]
    assert len(all_ids) == len(set(all_ids)), all_ids
    # (the gateway's own rejects at the door, ExecIDs G..., are copied too)
    assert any(m[17].startswith("G") for m in ers["BROKER1"])
    copies = []
    for _ in range(len(ers["BROKER1"])):
        copies.append(dc.expect(lambda m: m.msg_type == "8", what="drop copy"))
    assert sorted(m[17] for m in copies) == sorted(m[17] for m in ers["BROKER1"])
    assert all(m[797] == "Y" and "BROKER1" in m.get_all(448) for m in copies)

    no_session_rejects(b1, b3, dc)

    # --- the drop copy is read-only: an order there is refused as not authorized
    dc.send("D", new_order("DC-1", 1, 10, "279.00", account="A1"))
    j = dc.expect(lambda m: m.msg_type == "j", what="BusinessMessageReject")
    assert j[380] == "6" and j[372] == "D" and j[379] == "DC-1" and "read-only" in j[58]
    assert dc.rejects_sent() == []      # QuickFIX found the reject well formed


def test_quickfix_cut_reconnect_and_resend(tmp_path, start_stack, clients):
    """Cut BROKER1's TCP connection; while it is away BROKER3 fills its orders and BROKER1's
    QuickFIX queues an order. On reconnection both sides recover by ResendRequest: every
    missed report arrives (PossDup), the queued order is executed once, nothing repeats."""
    stack = start_stack(SESSIONS[:2])
    relay = Relay(stack.fix).start()
    try:
        b1 = clients(tmp_path, "BROKER1", relay.port).start(wait_logon=None)
        b3 = clients(tmp_path, "BROKER3", stack.fix[1]).start()
        b1.wait_logon()
        prices = ["279.00", "278.90", "278.80", "278.70"]
        for i, px in enumerate(prices, 1):
            b1.send("D", new_order(f"P-{i}", 1, 20 if i == 3 else 10, px, account="A1"))
            b1.expect_er(f"P-{i}", "0")
        before = {m[17] for m in b1.app.app_in if m.msg_type == "8"}

        relay.hold(True)
        assert relay.cut() == 1
        b1.wait_logout()
        # While BROKER1 is away: its orders are filled by BROKER3 ...
        b3.send("D", new_order("X-1", 2, 30, "278.80", account="B1"))
        b3.send("D", new_order("X-2", 2, 20, "278.70", account="B1"))
        for cl, fills in (("X-1", 3), ("X-2", 2)):
            for _ in range(fills):
                b3.expect_er(cl, "F")
        # ... and BROKER1's QuickFIX stores an order it cannot send now (sent by resend).
        b1.send("D", new_order("Q-1", 1, 10, "279.50", account="A2"))
        relay.hold(False)
        b1.wait_logon(15)

        expected = [("P-1", "2", 10, "279"), ("P-2", "2", 10, "278.9"),
                    ("P-3", "1", 10, "278.8"), ("P-3", "2", 10, "278.8"), ("P-4", "2", 10, "278.7")]
        fills = [b1.expect_er(cl, "F", timeout=15) for cl, *_ in expected]
        for m, (cl, status, qty, px) in zip(fills, expected):
            assert m[39] == status and int(m[32]) == qty and D(m[31]) == D(px), m
            assert m.poss_dup, f"report made while away should come by resend: {m}"
        assert int(fills[3][14]) == 20 and D(fills[3][6]) == D("278.8")
        q_new = b1.expect_er("Q-1", "0", timeout=15)

        # After the recovery the session simply continues.
        b1.send("D", new_order("N-1", 1, 10, "279.20", account="A1"))
        n_new = b1.expect_er("N-1", "0")
        assert not n_new.poss_dup
        b1.send("H", [(11, "P-3"), (790, "ST-P3"), (55, "SBER"), (54, "1")])
        st = b1.expect(lambda m: m.get(790) == "ST-P3", what="status P-3")
        assert (st[39], st[14], st[151]) == ("2", "20", "0")
        b1.drain(quiet_s=0.3)

        # QuickFIX asked for the missed range, and resent its stored order with PossDup.
        admin_out = list(b1.app.admin_out)
        assert any(m.msg_type == "2" for m in admin_out), admin_out
        q_sent = [m for m in b1.app.app_out if m.msg_type == "D" and m.get(11) == "Q-1"]
        assert len(q_sent) == 2 and q_sent[1].poss_dup and q_sent[0].seq == q_sent[1].seq
        assert relay.connections >= 2

        # Nothing missing, nothing duplicated: each ExecID once; every inbound MsgSeqNum
        # accounted for (a message, or a gap fill); only PossDup messages arrive twice.
        ers = [m for m in b1.app.app_in if m.msg_type == "8" and m.get(150) != "I"]
        ids = [m[17] for m in ers]
        assert len(ids) == len(set(ids)), ids
        assert before <= set(ids)
        inbound = b1.app.admin_in + b1.app.app_in
        covered: set[int] = set()
        for m in inbound:
            if m.msg_type == "4" and m.get(123) == "Y":
                covered.update(range(m.seq, int(m[36])))
            else:
                assert m.seq not in covered or m.poss_dup, m
                covered.add(m.seq)
        top = max(covered)
        assert covered == set(range(1, top + 1)), sorted(set(range(1, top + 1)) - covered)
        assert b1.next_target_seq == top + 1
        assert n_new.seq > q_new.seq > 4

        # The engine accepted Q-1 exactly once (its resend was not a second order).
        events = asyncio.run(engine_events(stack.replication, stack.digest, "interop-check"))
        clids = [e.cl_ord_id for e in events
                 if isinstance(e, OrderAccepted) and e.session == "BROKER1"]
        assert sorted(clids) == ["N-1", "P-1", "P-2", "P-3", "P-4", "Q-1"]
        no_session_rejects(b1, b3)
    finally:
        relay.close()
