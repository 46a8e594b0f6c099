"""The gateway's pure parts: prices, replica, reports, door checks, information requests."""
from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import example, given, settings, strategies as st

from bourse.config import load_config
from engine.commands import CancelOrder, MassCancel, NewOrder, ReplaceOrder, SequencedCommand
from engine.core import Engine
from fix_gateway.codec import FixMessage
from fix_gateway.info import InfoService
from fix_gateway.orders import Forward, OrderEntry, Reply
from fix_gateway.prices import PriceFormat
from fix_gateway.replica import CancelRejectReport, Replica, ReplicaGap
from fix_gateway.reports import ReportWriter
from fix_gateway.throttle import Throttle

CFG = load_config(None)
MARKET = CFG.market
BROKER1 = CFG.gateway().sessions[0]      # FIRM1, STP cancel resting
BROKER3 = CFG.gateway().sessions[2]      # FIRM2


def fix(msg_type: str, *fields) -> FixMessage:
    return FixMessage([(8, b"FIX.4.4"), (35, msg_type.encode())]
                      + [(t, str(v).encode()) for t, v in fields] + [(10, b"000")])


# ---------------------------------------------------------------------------------- prices

@given(st.integers(min_value=0, max_value=10**14))
def test_price_format_round_trips(units):
    px = PriceFormat(4)
    text = px.format(units)
    assert px.parse(text.encode()) == units
    assert Decimal(text) == Decimal(units) / 10**4


@pytest.mark.parametrize("text", [b"1.00001", b"-1", b"1e3", b"abc", b"1.2.3", b"", b" 1"])
def test_price_parse_refuses_inexact_or_malformed(text):
    assert PriceFormat(4).parse(text) is None


def test_avg_px_rounds_half_up():
    px = PriceFormat(2)
    assert px.format_ratio(1000 + 1001, 2, extra=0) == "10.01"     # 10.005 -> 10.01
    assert px.format_ratio(3000, 3) == "10"


# ---------------------------------------------------------------------------------- replica

class Market:
    """An engine and a replica fed with its events, as the gateway is."""

    def __init__(self):
        self.engine = Engine(MARKET)
        self.replica = Replica(MARKET)
        self.seq = 0

    def run(self, cmd):
        self.seq += 1
        reports = []
        for ev in self.engine.apply(SequencedCommand(self.seq, 1_000 + self.seq, "gw", self.seq, cmd)):
            reports += self.replica.apply(ev)
        return reports


def new(session, firm, account, clid, side, qty, price, tif=0, ord_type=2):
    return NewOrder(session, firm, account, clid, "SBER", side, ord_type, tif, price, qty)


def test_replica_reports_fills_with_cum_leaves_and_avg():
    m = Market()
    m.run(new("BROKER1", "FIRM1", "F1-001", "s1", 2, 30, 2801000))
    m.run(new("BROKER1", "FIRM1", "F1-001", "s2", 2, 30, 2802000))
    reports = m.run(new("BROKER3", "FIRM2", "F2-001", "b1", 1, 50, 2802000))
    mine = [r for r in reports if r.session == "BROKER3"]
    assert [r.exec_type for r in mine] == ["0", "F", "F"]
    assert [(r.ord_status, r.cum_qty, r.leaves, r.last_qty, r.last_px) for r in mine[1:]] == [
        ("1", 30, 20, 30, 2801000), ("2", 50, 0, 20, 2802000)]
    writer = ReportWriter(4)
    fields = dict(writer.execution_report(mine[-1]))
    assert fields[6] == "280.14"                       # (30*280.10 + 20*280.20) / 50
    theirs = [r for r in reports if r.session == "BROKER1"]
    assert [(r.cl_ord_id, r.ord_status) for r in theirs] == [("s1", "2"), ("s2", "1")]
    ids = [r.exec_id for r in reports]
    assert len(ids) == len(set(ids))


def test_replica_tables_split_by_id_keep_order_id_order_and_find_every_order():
    """The replica's per-order maps are split into small dicts (no long copy as they grow):
    with more orders than shards, open orders still come in order-id order and every order is
    found by id and by ClOrdID, open or done."""
    from fix_gateway.replica import OWNER_SHARDS, SHARDS
    m = Market()
    n = 64 * max(SHARDS, OWNER_SHARDS) + 5           # ids wrap round the tables
    for i in range(n):
        m.run(new("BROKER1", "FIRM1", "F1-001", f"o{i}", 1, 10, 2700000 - 100 * (i % 50)))
    m.run(CancelOrder("BROKER1", "FIRM1", "x1", "o7", 0))
    opened = m.replica.open_orders(session="BROKER1")
    assert [o.order_id for o in opened] == sorted(o.order_id for o in opened)
    assert len(opened) == n - 1 and [o.order_id for o in opened] == \
        [o.order_id for o in m.replica.open_orders(firm="FIRM1")]
    for i in range(n):
        o = m.replica.find("BROKER1", f"o{i}" if i != 7 else "x1")
        assert o is not None and m.replica.find("BROKER1", order_id=o.order_id) is o
    assert m.replica.order_count() == n


def test_replica_clordid_generations_find_every_order_and_the_latest_for_a_reused_id(
        monkeypatch):
    """Across many ClOrdID generations, every id (an order's, its replace's, its cancel's)
    finds its order, an unknown id finds nothing, and an id indexed again finds the latest."""
    import fix_gateway.replica as replica
    monkeypatch.setattr(replica, "CLID_GENERATION", 8)
    m = Market()
    want = {}
    for i in range(60):
        m.run(new("BROKER1", "FIRM1", "F1-001", f"o{i}", 1, 10, 2700000 - 100 * (i % 50)))
        want[f"o{i}"] = i + 1
    for i in range(0, 60, 7):
        m.run(ReplaceOrder("BROKER1", "FIRM1", f"r{i}", f"o{i}", 2700100 - 100 * (i % 50), 20))
        want[f"r{i}"] = i + 1
    for i in range(3, 60, 11):
        current = f"r{i}" if i % 7 == 0 else f"o{i}"
        m.run(CancelOrder("BROKER1", "FIRM1", f"x{i}", current))
        want[f"x{i}"] = i + 1
    (rej,) = m.run(new("BROKER1", "FIRM1", "F1-001", "o3", 1, 10, 2700000))
    assert rej.exec_type == "8"                     # the engine refuses a ClOrdID used today
    assert len(m.replica.by_clid["BROKER1"]) >= 9      # 75 ids, 8 per generation
    for clid, oid in want.items():
        o = m.replica.find("BROKER1", clid)
        assert o is not None and o.order_id == oid, clid
    assert m.replica.find("BROKER1", "nope") is None
    assert m.replica.find("BROKER2", "o1") is None
    m.replica._set_clid("BROKER1", "o5", 999)       # an id indexed again: the latest wins
    assert m.replica._clid("BROKER1", "o5") == 999


_SESSIONS = [("BROKER1", "FIRM1", "F1-001"), ("BROKER2", "FIRM1", "F1-002"),
             ("BROKER3", "FIRM2", "F2-001")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["new", "new", "cancel", "replace"]),
                          st.integers(0, 2), st.integers(0, 11), st.sampled_from([1, 2]),
                          st.integers(-3, 3), st.integers(1, 4)), max_size=40))
@example([("new", 0, 0, 1, 0, 1), ("replace", 1, 0, 1, 1, 1)])   # moved to a new session
def test_replica_open_orders_of_a_firm_and_a_session_are_the_engines(steps):
    """Whatever mix of orders, fills, cancels and replaces (including a replace or a cancel
    by another session of the firm, which moves the order to it), the replica's open orders
    of each firm and each session are the engine's."""
    m = Market()
    for n, (kind, who, ref, side, tick, lots) in enumerate(steps):
        session, firm, account = _SESSIONS[who]
        if kind == "new":
            m.run(new(session, firm, account, f"c{n}", side, 10 * lots, 2800000 + 100 * tick))
        elif kind == "cancel":
            m.run(CancelOrder(session, firm, f"c{n}", "", ref + 1))
        else:
            m.run(ReplaceOrder(session, firm, f"c{n}", "", 2800000 + 100 * tick, 10 * lots,
                               ref + 1))
    live = m.engine.open_orders()
    for firm in ("FIRM1", "FIRM2", "FIRM3"):
        assert [o.order_id for o in m.replica.open_orders(firm=firm)] == \
            [o.order_id for o in live if o.firm == firm]
    for session, _, _ in _SESSIONS:
        assert [o.order_id for o in m.replica.open_orders(session=session)] == \
            [o.order_id for o in live if o.session == session]
        assert [o.order_id for o in m.replica.open_orders(session=session,
                                                          instrument="SBER")] == \
            [o.order_id for o in live if o.session == session]


def test_replica_cancel_replace_and_reject_reports():
    m = Market()
    m.run(new("BROKER1", "FIRM1", "F1-001", "a", 1, 10, 2790000))
    (rep,) = m.run(ReplaceOrder("BROKER1", "FIRM1", "a2", "a", 2791000, 20))
    assert (rep.exec_type, rep.cl_ord_id, rep.orig_cl_ord_id, rep.price, rep.qty) == (
        "5", "a2", "a", 2791000, 20)
    (cxl,) = m.run(CancelOrder("BROKER1", "FIRM1", "a3", "a2"))
    assert (cxl.exec_type, cxl.ord_status, cxl.cl_ord_id, cxl.orig_cl_ord_id) == ("4", "4", "a3", "a2")
    (rej,) = m.run(CancelOrder("BROKER1", "FIRM1", "a4", "nope"))
    assert isinstance(rej, CancelRejectReport) and rej.ord_status == "8"
    fields = dict(ReportWriter.cancel_reject(rej))
    assert fields[102] == "1" and fields[434] == "1"
    (bad,) = m.run(new("BROKER1", "FIRM1", "F1-001", "b", 1, 7, 2790000))
    assert bad.exec_type == "8"
    assert dict(ReportWriter(4).execution_report(bad))[103] == "13"     # incorrect quantity


def test_replica_ioc_remainder_is_expired_and_book_mirrors_engine():
    m = Market()
    m.run(new("BROKER3", "FIRM2", "F2-001", "s", 2, 10, 2800000))
    reports = m.run(new("BROKER1", "FIRM1", "F1-001", "i", 1, 30, 2800000, tif=3))
    mine = [r.exec_type for r in reports if r.session == "BROKER1"]
    assert mine == ["0", "F", "C"]
    for side in (1, 2):
        assert m.replica.depth("SBER", side) == [tuple(lv) for lv in m.engine.book_levels("SBER", side)]


def test_replica_refuses_a_gap():
    m = Market()
    (accepted,) = m.engine.apply(SequencedCommand(
        1, 1, "gw", 1, new("BROKER1", "FIRM1", "F1-001", "x", 1, 10, 2790000)))[:1]
    with pytest.raises(ReplicaGap):
        Replica(MARKET).apply(msgspec.structs.replace(accepted, seq=5))


# ---------------------------------------------------------------------------------- door checks

def d(*extra, clid="c1", qty=10, price="280.00", ord_type=2):
    fields = [(11, clid), (1, "F1-001"), (55, "SBER"), (54, 1), (60, "20261123-10:00:00"),
              (38, qty), (40, ord_type)]
    if price is not None:
        fields.append((44, price))
    return fix("D", *fields, *extra)


def test_order_entry_forwards_a_valid_order():
    out = OrderEntry(BROKER1, MARKET).handle(d(), 0)
    assert out == Forward(NewOrder("BROKER1", "FIRM1", "F1-001", "c1", "SBER", 1, 2, 0, 2800000, 10))


@pytest.mark.parametrize("msg,words", [
    (d(qty=2_000_000), "maximum"),
    (d(price="400.00"), "collar"),
    (d(price="280.00001"), "exact price"),
    (d(price=None), "needs Price"),
    (d(qty=900_000, price="300.00"), "notional"),
])
def test_order_entry_rejects_at_the_door(msg, words):
    small = msgspec.structs.replace(BROKER1, max_notional=100_000_000 * 10**4)   # 100M RUB
    out = OrderEntry(small, MARKET).handle(msg, 0)
    assert isinstance(out, Reply) and out.msg_type == "8"
    fields = dict(out.fields)
    assert fields[150] == "8" and fields[39] == "8" and words in fields[58]


@settings(max_examples=400)
@given(st.sampled_from(["SBER", "GAZP", "NOPE"]), st.sampled_from([1, 2]),
       st.sampled_from(["any", "low edge", "high edge", "below", "above"]),
       st.integers(0, 6_000_000), st.integers(0, 3_000_000), st.integers(0, 3_000),
       st.integers(1, 10**14), st.integers(0, 3_000_000), st.booleans())
def test_order_checks_pass_exactly_where_the_reference_finds_no_problem(
        symbol, ord_type, where, price, qty, bps, max_notional, max_qty, notional_edge):
    """The precomputed collar and limits accept an order exactly when the reference check
    (``_limit_problem``) finds nothing wrong, and otherwise give the reference's text."""
    cfg = msgspec.structs.replace(BROKER1, price_collar_bps=bps, max_order_qty=max_qty)
    ref = OrderEntry(cfg, MARKET).ref.get(symbol)
    if ref is not None and where != "any":          # the collar's edges, exactly
        band = ref * bps // 10_000
        price = ref + {"low edge": -band, "high edge": band, "below": -band - 1,
                       "above": band + 1}[where]
    if notional_edge and qty:                       # the notional limit, exactly
        max_notional = max(1, (price if ord_type == 2 or ref is None else ref) * qty)
    entry = OrderEntry(msgspec.structs.replace(cfg, max_notional=max_notional), MARKET)
    for q in (qty, max_qty, max_qty + 1):
        for n in (0, -1):
            e = entry
            if n:
                e = OrderEntry(msgspec.structs.replace(cfg, max_notional=max(1, max_notional - 1)),
                               MARKET)
            assert e._limits(symbol, ord_type, price, q) == \
                e._limit_problem(symbol, ord_type, price, q)


_NOS_VALUES = {
    11: st.sampled_from([b"c1", b"", b"cl\xc3\xa9", b"x" * 30]),
    1: st.sampled_from([b"F1-001", b"", b"\xff"]),
    55: st.sampled_from([b"SBER", b"GAZP", b"NOPE", b"", b"\xd0\x90"]),
    54: st.sampled_from([b"1", b"2", b"01", b"+1", b"x", b""]),
    38: st.sampled_from([b"10", b"0", b"100.0", b"1e2", b"-10", b"1000000", b"9" * 16, b" 10"]),
    40: st.sampled_from([b"2", b"1", b"3", b"02", b"x"]),
    59: st.sampled_from([b"0", b"3", b"", b"x", b"00"]),
    44: st.sampled_from([b"280.00", b"280", b"280.", b".5", b"279.5000", b"280.00001", b"1.2.3",
                         b"", b".", b"-1", b"1e3", b"9" * 15 + b".5", b"9" * 16, b"2800"]),
}


@settings(max_examples=300)
@given(st.data(), st.sampled_from([0, 2, 4, 6]))
def test_compiled_new_order_reading_matches_the_reference(data, decimals):
    """The compiled reading of a NewOrderSingle gives the same Forward or Reply as the Python
    reference, whatever the values (it declines, and the reference answers, off its path)."""
    import fix_gateway.orders as orders
    if orders._new_order is None:
        pytest.skip("the compiled codec is not in use")
    fields = []
    for tag, values in _NOS_VALUES.items():          # mostly present, mostly the first value
        if data.draw(st.integers(0, 15)):
            usual = data.draw(st.integers(0, 5)) > 0
            fields.append((tag, values.elements[0] if usual else data.draw(values)))
    msg = codec_split(fields)
    market = msgspec.structs.replace(MARKET, price_decimals=decimals)
    compiled = OrderEntry(BROKER1, market)
    reference = OrderEntry(BROKER1, market)
    fast = orders._new_order
    try:
        want = _outcome(lambda: (setattr(orders, "_new_order", None), reference._new(msg, 5))[1])
    finally:
        orders._new_order = fast
    assert _outcome(lambda: compiled._new(msg, 5)) == want


def codec_split(fields) -> FixMessage:
    """A NewOrderSingle as the gateway receives it: framed, then split by the codec."""
    from fix_gateway.codec import encode, split
    raw = encode("D", fields, sender="BROKER1", target="BOURSE", seq=2,
                 sending_time=b"20261123-10:00:00.000")
    frames, _, garbled = split(raw)[:3]
    assert not garbled
    return frames[0]


def _outcome(call):
    try:
        return call()
    except Exception as exc:        # noqa: BLE001 - compared between the two paths
        return type(exc)


def test_compiled_new_order_reading_takes_the_common_order():
    import fix_gateway.orders as orders
    if orders._new_order is None:
        pytest.skip("the compiled codec is not in use")
    msg = codec_split([(11, b"c1"), (1, b"F1-001"), (55, b"SBER"), (54, b"2"), (38, b"10"),
                       (40, b"2"), (44, b"280.5"), (59, b"3")])
    assert orders._new_order(msg, 4, 2) == ("SBER", 2, 3, 2805000, 10, "F1-001", "c1", 2)
    assert orders._new_order(d(), 4, 2) == ("SBER", 2, 0, 2800000, 10, "F1-001", "c1", 1)


def test_mass_cancel_scope_and_drop_copy_read_only():
    entry = OrderEntry(BROKER1, MARKET)
    firm = entry.handle(fix("q", (11, "m1"), (530, 7), (60, "20261123-10:00:00")), 0)
    assert firm == Forward(MassCancel("BROKER1", "m1", firm="FIRM1", target_session=""))
    mine = entry.handle(fix("q", (11, "m2"), (530, 1), (55, "GAZP"), (20001, "S"),
                            (60, "20261123-10:00:00")), 0)
    assert mine.cmd.target_session == "BROKER1" and mine.cmd.instrument == "GAZP"
    dc = [s for s in CFG.gateway().sessions if s.drop_copy][0]
    out = OrderEntry(dc, MARKET).handle(d(), 0)
    assert isinstance(out, Reply) and out.msg_type == "j"
    f = dict(out.fields)
    assert f[380] == "6" and f[372] == "D" and "read-only" in f[58] and 45 in f


def test_throttle_refuses_excess_and_detects_abuse():
    S = 10**9
    t = Throttle(rate=10, disconnect_after_s=2)
    base = 1_000 * S
    assert all(t.allow(base) for _ in range(10))
    assert not t.allow(base)
    assert t.allow(base + S // 10)                     # 0.1 s later: one token back
    assert not t.abusive(base + S // 5)                # refusals in one second only
    for k in range(30):                                # 3x the rate through the next second
        t.allow(base + S + k * S // 30)
    assert t.abusive(base + S + S - 1)                 # refusals in 2 consecutive seconds
    quiet = Throttle(rate=10, disconnect_after_s=2)
    for k in range(30):
        quiet.allow(base + k * S // 30)
    quiet.allow(base + 3 * S)                          # a second with no refusal between
    assert not quiet.abusive(base + 3 * S)



class _BucketModel:
    """The throttle's contract spelled out plainly: a bucket of ``rate`` tokens refilled at
    ``rate`` per second (exact, in token-nanoseconds), seconds counted from the first message."""

    def __init__(self, rate: int, after: int) -> None:
        self.rate, self.after = rate, after
        self.tokens, self.last, self.second = rate * 10**9, None, None
        self.refused, self.over = False, 0

    def _roll(self, now: int) -> None:
        sec = now // 10**9
        if self.second is not None and sec != self.second:
            self.over = self.over + 1 if self.refused and sec == self.second + 1 else 0
            self.refused = False
        self.second = sec

    def allow(self, now: int) -> bool:
        self._roll(now)
        if self.last is not None:
            self.tokens = min(self.rate * 10**9, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 10**9:
            self.tokens -= 10**9
            return True
        self.refused = True
        return False

    def abusive(self, now: int) -> bool:
        self._roll(now)
        return self.over + self.refused >= self.after


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 50), st.integers(1, 3),
       st.lists(st.tuples(st.integers(-10**8, 6 * 10**8), st.booleans()), max_size=120))
def test_throttle_matches_the_plain_token_bucket(rate, after, steps):
    t, model = Throttle(rate, after), _BucketModel(rate, after)
    now = 1_700_000_000 * 10**9
    for step, ask_abuse in steps:
        now += step                    # mostly forward; a step back is a clock correction
        if ask_abuse:
            assert t.abusive(now) == model.abusive(now)
        else:
            assert t.allow(now) == model.allow(now)


# ---------------------------------------------------------------------------------- info

def test_info_answers_status_snapshot_and_security_list():
    m = Market()
    m.run(new("BROKER1", "FIRM1", "F1-001", "b", 1, 10, 2790000))
    m.run(new("BROKER3", "FIRM2", "F2-001", "s", 2, 20, 2810000))
    info = InfoService(m.replica, ReportWriter(4))
    ((t, status),) = info.handle("BROKER1", fix("H", (11, "b"), (55, "SBER"), (54, 1)), 5)
    fs = dict(status)
    assert t == "8" and fs[150] == "I" and fs[39] == "0" and fs[151] == "10"
    ((t, unknown),) = info.handle("BROKER1", fix("H", (11, "zz"), (55, "SBER"), (54, 1)), 5)
    assert dict(unknown)[39] == "8" and dict(unknown)[103] == "5"
    # another session's order is not visible
    ((_, other),) = info.handle("BROKER1", fix("H", (11, "s"), (55, "SBER"), (54, 2)), 5)
    assert dict(other)[39] == "8"
    ((t, snap),) = info.handle("BROKER1", fix("V", (262, "r"), (263, 0), (264, 0), (267, 2),
                                              (269, 0), (269, 1), (146, 1), (55, "SBER")), 5)
    assert t == "W" and (268, "2") in snap and (270, "279") in snap and (270, "281") in snap
    ((t, first),) = info.handle("BROKER1", fix("V", (262, "sub"), (263, 1), (264, 1),
                                               (267, 1), (269, 0), (146, 1), (55, "SBER")), 5)
    assert t == "W" and (270, "279") in first
    ((t, rej),) = info.handle("BROKER1", fix("V", (262, "sub"), (263, 1), (264, 1), (267, 1),
                                             (269, 0), (146, 1), (55, "SBER")), 5)
    assert t == "Y" and dict(rej)[281] == "1"
    m.run(new("BROKER1", "FIRM1", "F1-001", "b2", 1, 10, 2795000))
    info.touch("SBER")
    assert info.due(50_000_000) == []                       # conflated: within 100 ms
    ((sess, t, upd),) = info.due(200_000_000)
    assert sess == "BROKER1" and t == "W" and (270, "279.5") in upd
    assert info.due(400_000_000) == []                      # nothing changed since
    assert info.handle("BROKER1", fix("V", (262, "sub"), (263, 2), (264, 1), (267, 1),
                                      (269, 0), (146, 1), (55, "SBER")), 5) == []
    ((t, sl),) = info.handle("BROKER1", fix("x", (320, "q"), (559, 4)), 5)
    assert t == "y" and dict(sl)[146] == str(len(MARKET.instruments))
    orders = info.handle("BROKER1", fix("AF", (584, "ms"), (585, 7)), 5)
    assert len(orders) == 2 and 912 not in dict(orders[0][1]) and dict(orders[1][1])[912] == "Y"


def test_daily_reset_instant():
    from fix_gateway.schedule import last_reset_at
    day = 86_400 * 10**9
    base = 20_000 * day                                  # a UTC midnight
    three = 3 * 3600 * 10**9
    assert last_reset_at(base + three, "03:00") == base + three
    assert last_reset_at(base + three - 1, "03:00") == base - day + three
    assert last_reset_at(base + day - 1, "03:00") == base + three


def test_firm_sees_its_orders_from_any_session():
    m = Market()
    m.run(new("BROKER1", "FIRM1", "F1-001", "b", 1, 10, 2790000))
    m.run(new("BROKER3", "FIRM2", "F2-001", "s", 2, 20, 2810000))
    info = InfoService(m.replica, ReportWriter(4))
    ((_, by_id),) = info.handle("BROKER2", fix("H", (37, 1), (11, "x"), (55, "SBER"), (54, 1)),
                                5, "FIRM1")
    assert dict(by_id)[39] == "0" and dict(by_id)[11] == "b"
    ((_, foreign),) = info.handle("BROKER2", fix("H", (37, 2), (11, "x"), (55, "SBER"), (54, 2)),
                                  5, "FIRM1")
    assert dict(foreign)[39] == "8"
    orders = info.handle("BROKER2", fix("AF", (584, "ms"), (585, 7)), 5, "FIRM1")
    assert [dict(f)[11] for _, f in orders] == ["b"]
