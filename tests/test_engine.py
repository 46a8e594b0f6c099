"""Unit tests of engine.core.Engine: every order-entry rule, event order and contents."""
from __future__ import annotations

import pytest

from engine.commands import (
    CancelOrder, HaltScope, MassCancel, NewOrder, RaiseAlert, ReplaceOrder, SequencedCommand,
    SetCreditLimit, SetHalt,
)
from engine.core import Engine
from engine.events import (
    Alert, BookUpdate, CancelRejected, CreditLimitChanged, MassCancelReport, OrderAccepted,
    OrderCancelled, OrderRejected, OrderReplaced, Trade, TradingStatus,
)
from engine.reasons import CANCEL_TEXT, REJECT_TEXT, CancelReason as C, RejectReason as R
from engine.refdata import Firm, Instrument, MarketRefData, StpMode

BUY, SELL = 1, 2
MKT, LMT = 1, 2
DAY, IOC, FOK = 0, 3, 4

RD = MarketRefData(
    price_decimals=2,
    instruments=(
        Instrument(symbol="AAA", name="A", tick=100, lot=10, ref_price=10000, band_low=5000,
                   band_high=15000),
        Instrument(symbol="BBB", name="B", tick=5, lot=1, ref_price=500, band_low=100,
                   band_high=1000),
    ),
    firms=(
        Firm(id="F1", name="one", credit_limit=10 ** 15),
        Firm(id="FA", name="accounts", credit_limit=10 ** 15, accounts=("A1", "A2")),
        Firm(id="F2", name="two", credit_limit=10 ** 15),
        Firm(id="FR", name="resting", credit_limit=10 ** 15, stp=StpMode.CANCEL_RESTING),
        Firm(id="FI", name="incoming", credit_limit=10 ** 15, stp=StpMode.CANCEL_INCOMING),
        Firm(id="FB", name="both", credit_limit=10 ** 15, stp=StpMode.CANCEL_BOTH),
        Firm(id="FC", name="credit", credit_limit=1_000_000),
    ),
)


class Ex:
    """Drives an Engine and checks the per-command event invariants on every call."""

    def __init__(self, rd: MarketRefData = RD) -> None:
        self.e = Engine(rd)
        self.n = 0

    def apply(self, cmd, origin: str = "gw", req_id: int = 0) -> list:
        e = self.e
        cs, seq0 = e.next_cmd_seq, e.next_event_seq
        evs = e.apply(SequencedCommand(cs, 1000 * cs, origin, req_id, cmd))
        assert evs, "every command yields at least one event"
        for i, ev in enumerate(evs):
            assert (ev.seq, ev.cmd_seq, ev.ts) == (seq0 + i, cs, 1000 * cs)
        assert e.next_cmd_seq == cs + 1 and e.next_event_seq == seq0 + len(evs)
        for sym in ("AAA", "BBB"):
            bids, asks = e.book_levels(sym, BUY), e.book_levels(sym, SELL)
            if bids and asks:
                assert bids[0][0] < asks[0][0], "book crossed"
        return evs

    def clid(self) -> str:
        self.n += 1
        return f"c{self.n}"

    def new(self, side, price, qty, *, firm="F1", session="S1", account="", inst="AAA",
            ot=LMT, tif=DAY, clid=None):
        clid = self.clid() if clid is None else clid
        return self.apply(NewOrder(session, firm, account, clid, inst, side, ot, tif, price, qty))

    def rest(self, side, price, qty, **kw) -> int:
        """Place a non-crossing day order, return its order id."""
        evs = self.new(side, price, qty, **kw)
        assert kinds(evs) == ["OrderAccepted", "BookUpdate"], evs
        return evs[0].order_id

    def cancel(self, *, order_id=0, orig="", firm="F1", session="S1", clid=None):
        clid = self.clid() if clid is None else clid
        return self.apply(CancelOrder(session, firm, clid, orig, order_id))

    def replace(self, price, qty, *, order_id=0, orig="", firm="F1", session="S1", clid=None):
        return self.apply(ReplaceOrder(session, firm, clid or self.clid(), orig, price, qty,
                                       order_id))


def kinds(evs) -> list[str]:
    return [e.__class__.__name__ for e in evs]


def only(evs, cls):
    out = [e for e in evs if isinstance(e, cls)]
    assert len(out) == 1, evs
    return out[0]


# ---------------------------------------------------------------------------- basics

def test_initial_state_and_seq_check():
    e = Engine(RD)
    assert (e.next_cmd_seq, e.next_event_seq, e.last_req) == (1, 1, {})
    with pytest.raises(ValueError):
        e.apply(SequencedCommand(2, 0, "", 0, RaiseAlert("x", "info", "hi")))
    ev = e.apply(SequencedCommand(1, 5, "", 0, RaiseAlert("x", "info", "hi")))
    assert ev == [Alert(1, 1, 5, "x", "info", "hi")]
    with pytest.raises(ValueError):
        e.apply(SequencedCommand(1, 5, "", 0, RaiseAlert("x", "info", "hi")))


def test_last_req_tracks_highest_req_id_per_origin():
    x = Ex()
    x.apply(RaiseAlert("s", "info", "a"), origin="gw1", req_id=5)
    x.apply(RaiseAlert("s", "info", "a"), origin="gw2", req_id=0)
    x.apply(RaiseAlert("s", "info", "a"), origin="gw1", req_id=7)
    x.apply(RaiseAlert("s", "info", "a"), origin="gw3", req_id=1)
    assert x.e.last_req == {"gw1": 7, "gw3": 1}


def test_unknown_command_type_gives_alert():
    x = Ex()
    evs = x.apply("not a command")
    assert kinds(evs) == ["Alert"] and evs[0].source == "engine"


def test_limit_order_rests_with_accept_and_book_update():
    x = Ex()
    evs = x.new(BUY, 10000, 30, account="A1", clid="o1")
    assert evs == [
        OrderAccepted(1, 1, 1000, 1, "S1", "F1", "A1", "o1", "AAA", BUY, LMT, DAY, 10000, 30),
        BookUpdate(2, 1, 1000, "AAA", ((BUY, 10000, 30, 1),)),
    ]
    x.rest(BUY, 10000, 20)
    assert x.e.book_levels("AAA", BUY) == [(10000, 50, 2)]
    oo = x.e.open_orders()
    assert [(o.order_id, o.leaves, o.cum_qty) for o in oo] == [(1, 30, 0), (2, 20, 0)]


# ---------------------------------------------------------------------------- rejects

@pytest.mark.parametrize("kw, reason", [
    (dict(inst="ZZZ"), R.UNKNOWN_INSTRUMENT),
    (dict(firm="NOPE"), R.UNKNOWN_FIRM),
    (dict(account="B9"), R.UNKNOWN_ACCOUNT),
    (dict(side=3), R.INVALID_SIDE),
    (dict(ot=5), R.INVALID_ORDER_TYPE),
    (dict(tif=1), R.INVALID_TIME_IN_FORCE),
    (dict(qty=0), R.QTY_NOT_POSITIVE),
    (dict(qty=-10), R.QTY_NOT_POSITIVE),
    (dict(qty=15), R.QTY_NOT_LOT_MULTIPLE),
    (dict(price=0), R.PRICE_NOT_POSITIVE),
    (dict(price=-100), R.PRICE_NOT_POSITIVE),
    (dict(price=10050), R.PRICE_OFF_TICK),
    (dict(price=4900), R.PRICE_OUTSIDE_BAND),
    (dict(price=15100), R.PRICE_OUTSIDE_BAND),
])
def test_new_order_rejects(kw, reason):
    x = Ex()
    args = dict(side=BUY, price=10000, qty=10, account="A1", firm="FA")
    args.update(kw)
    side, price, qty = args.pop("side"), args.pop("price"), args.pop("qty")
    evs = x.new(side, price, qty, clid="r1", **args)
    assert len(evs) == 1
    ev = evs[0]
    assert isinstance(ev, OrderRejected)
    assert (ev.reason, ev.text) == (reason, REJECT_TEXT[reason])
    assert (ev.session, ev.firm, ev.cl_ord_id, ev.side, ev.price, ev.qty) == \
        ("S1", args["firm"], "r1", side, price, qty)
    assert x.e.open_orders() == []


def test_account_any_when_firm_lists_none():
    x = Ex()
    x.rest(BUY, 10000, 10, firm="F2", account="whatever")
    x.rest(BUY, 10000, 10, firm="FA", account="A2")


def test_duplicate_cl_ord_id_per_session_covers_all_request_kinds():
    x = Ex()
    oid = x.rest(BUY, 10000, 10, clid="a")
    assert only(x.new(BUY, 10000, 10, clid="a"), OrderRejected).reason == R.DUPLICATE_CL_ORD_ID
    x.rest(BUY, 10000, 10, clid="a", session="S2")               # other session: fine
    x.cancel(order_id=999, clid="k")                              # rejected cancel still uses "k"
    assert only(x.new(BUY, 10000, 10, clid="k"), OrderRejected).reason == R.DUPLICATE_CL_ORD_ID
    x.replace(10000, 20, order_id=oid, clid="r")
    assert only(x.new(BUY, 10000, 10, clid="r"), OrderRejected).reason == R.DUPLICATE_CL_ORD_ID
    # a rejected order's id is used too
    x.new(BUY, 1, 10, clid="bad")
    assert only(x.new(BUY, 10000, 10, clid="bad"), OrderRejected).reason == R.DUPLICATE_CL_ORD_ID
    rej = only(x.cancel(order_id=oid, clid="a"), CancelRejected)
    assert (rej.reason, rej.is_replace) == (R.DUPLICATE_CL_ORD_ID, False)
    rej = only(x.replace(10000, 30, order_id=oid, clid="a"), CancelRejected)
    assert (rej.reason, rej.is_replace) == (R.DUPLICATE_CL_ORD_ID, True)


def test_halts_reject_new_orders_in_order_market_instrument_firm():
    x = Ex()
    x.apply(SetHalt(HaltScope.FIRM, "F1", True))
    assert only(x.new(BUY, 10000, 10), OrderRejected).reason == R.FIRM_HALTED
    x.apply(SetHalt(HaltScope.INSTRUMENT, "AAA", True))
    assert only(x.new(BUY, 10000, 10), OrderRejected).reason == R.INSTRUMENT_HALTED
    x.apply(SetHalt(HaltScope.MARKET, "", True))
    assert only(x.new(BUY, 10000, 10), OrderRejected).reason == R.MARKET_HALTED
    x.apply(SetHalt(HaltScope.MARKET, "", False))
    x.apply(SetHalt(HaltScope.INSTRUMENT, "AAA", False))
    assert only(x.new(BUY, 10000, 10), OrderRejected).reason == R.FIRM_HALTED
    x.rest(BUY, 500, 10, inst="BBB", firm="F2")
    x.apply(SetHalt(HaltScope.FIRM, "F1", False))
    x.rest(BUY, 10000, 10)


# ---------------------------------------------------------------------------- matching

def test_price_time_priority_and_trade_contents():
    x = Ex()
    a = x.rest(SELL, 10200, 20, firm="F2")
    b = x.rest(SELL, 10100, 10, firm="F2")
    c = x.rest(SELL, 10100, 20, firm="F2")
    d = x.rest(SELL, 10300, 10, firm="F2")
    evs = x.new(BUY, 10200, 40, clid="agg")
    oid = evs[0].order_id
    assert kinds(evs) == ["OrderAccepted", "Trade", "Trade", "Trade", "BookUpdate"]
    t = [e for e in evs if isinstance(e, Trade)]
    assert [(e.trade_id, e.price, e.qty, e.sell_order_id, e.buy_leaves, e.sell_leaves)
            for e in t] == [(1, 10100, 10, b, 30, 0), (2, 10100, 20, c, 10, 0),
                            (3, 10200, 10, a, 0, 10)]
    assert all(e.aggressor_side == BUY and e.buy_order_id == oid and e.instrument == "AAA"
               for e in t)
    assert evs[-1].levels == ((SELL, 10100, 0, 0), (SELL, 10200, 10, 1))
    assert x.e.book_levels("AAA", SELL) == [(10200, 10, 1), (10300, 10, 1)]
    assert x.e.book_levels("AAA", BUY) == []
    assert d in [o.order_id for o in x.e.open_orders()]


def test_partial_fill_rests_remainder_and_sell_aggressor():
    x = Ex()
    b = x.rest(BUY, 10000, 10, firm="F2")
    evs = x.new(SELL, 9900, 30)
    oid = evs[0].order_id
    assert kinds(evs) == ["OrderAccepted", "Trade", "BookUpdate"]
    t = evs[1]
    assert (t.price, t.qty, t.aggressor_side, t.buy_order_id, t.sell_order_id, t.buy_leaves,
            t.sell_leaves) == (10000, 10, SELL, b, oid, 0, 20)
    assert evs[2].levels == ((BUY, 10000, 0, 0), (SELL, 9900, 20, 1))
    o = x.e.open_orders()[0]
    assert (o.order_id, o.qty, o.cum_qty, o.leaves) == (oid, 30, 10, 20)


def test_ioc_partial_then_cancel_and_no_fill():
    x = Ex()
    x.rest(SELL, 10100, 10, firm="F2")
    evs = x.new(BUY, 10100, 30, tif=IOC)
    assert kinds(evs) == ["OrderAccepted", "Trade", "OrderCancelled", "BookUpdate"]
    c = evs[2]
    assert (c.order_id, c.leaves, c.reason, c.cl_ord_id, c.session) == \
        (evs[0].order_id, 20, C.IOC_REMAINDER, "", "S1")
    evs = x.new(BUY, 10100, 30, tif=IOC)
    assert kinds(evs) == ["OrderAccepted", "OrderCancelled"]
    assert evs[1].reason == C.IOC_REMAINDER and evs[1].leaves == 30
    assert x.e.open_orders() == []
    assert CANCEL_TEXT[C.IOC_REMAINDER]


def test_fok_filled_in_full_or_not_at_all():
    x = Ex()
    x.rest(SELL, 10100, 10, firm="F2")
    x.rest(SELL, 10200, 10, firm="F2")
    before = x.e.state_digest()
    evs = x.new(BUY, 10200, 30, tif=FOK)
    assert kinds(evs) == ["OrderAccepted", "OrderCancelled"]
    assert evs[1].reason == C.FOK_UNFILLED and evs[1].leaves == 30
    evs = x.new(BUY, 10100, 20, tif=FOK)              # price limits the walk
    assert evs[1].reason == C.FOK_UNFILLED
    assert x.e.book_levels("AAA", SELL) == [(10100, 10, 1), (10200, 10, 1)]
    assert x.e.exposure("F1") == (0, 0)
    evs = x.new(BUY, 10200, 20, tif=FOK)
    assert kinds(evs) == ["OrderAccepted", "Trade", "Trade", "BookUpdate"]
    assert x.e.book_levels("AAA", SELL) == []
    assert before != x.e.state_digest()


@pytest.mark.parametrize("firm, expect_fill", [("F1", True), ("FR", True), ("FI", False),
                                               ("FB", False)])
def test_fok_precheck_accounts_for_self_trade_prevention(firm, expect_fill):
    x = Ex()
    x.rest(SELL, 10100, 10, firm=firm)                # own order at the best price
    x.rest(SELL, 10200, 20, firm="F2")
    evs = x.new(BUY, 10200, 20, tif=FOK, firm=firm)
    if expect_fill:
        assert C.FOK_UNFILLED not in [getattr(e, "reason", None) for e in evs]
        filled = sum(e.qty for e in evs if isinstance(e, Trade))
        assert filled == 20
    else:
        assert kinds(evs) == ["OrderAccepted", "OrderCancelled"]
        assert evs[1].reason == C.FOK_UNFILLED
        assert x.e.book_levels("AAA", SELL) == [(10100, 10, 1), (10200, 20, 1)]


def test_fok_precheck_does_not_count_own_orders_under_cancel_resting():
    x = Ex()
    x.rest(SELL, 10100, 10, firm="FR")
    x.rest(SELL, 10100, 10, firm="F2")
    evs = x.new(BUY, 10100, 20, tif=FOK, firm="FR")
    assert kinds(evs) == ["OrderAccepted", "OrderCancelled"]
    assert evs[1].reason == C.FOK_UNFILLED
    assert x.e.book_levels("AAA", SELL) == [(10100, 20, 2)]     # own order not cancelled


def test_fok_with_cancel_both_fills_when_enough_before_own_order():
    x = Ex()
    x.rest(SELL, 10100, 20, firm="F2")
    x.rest(SELL, 10200, 10, firm="FB")
    evs = x.new(BUY, 10200, 20, tif=FOK, firm="FB")
    assert kinds(evs) == ["OrderAccepted", "Trade", "BookUpdate"]
    assert x.e.book_levels("AAA", SELL) == [(10200, 10, 1)]


def test_market_order_day_and_ioc_fill_within_band_then_no_liquidity():
    x = Ex()
    x.rest(SELL, 10100, 10, firm="F2")
    x.rest(SELL, 15000, 10, firm="F2")
    evs = x.new(BUY, 0, 30, ot=MKT, tif=DAY)
    assert kinds(evs) == ["OrderAccepted", "Trade", "Trade", "OrderCancelled", "BookUpdate"]
    assert evs[0].price == 0 and evs[0].ord_type == MKT
    assert [e.price for e in evs if isinstance(e, Trade)] == [10100, 15000]
    assert (evs[3].reason, evs[3].leaves) == (C.NO_LIQUIDITY, 10)
    evs = x.new(SELL, 0, 10, ot=MKT, tif=IOC)
    assert kinds(evs) == ["OrderAccepted", "OrderCancelled"]
    assert evs[1].reason == C.NO_LIQUIDITY
    x.rest(BUY, 5000, 10, firm="F2")
    evs = x.new(SELL, 0, 10, ot=MKT, tif=IOC)
    assert kinds(evs) == ["OrderAccepted", "Trade", "BookUpdate"]
    assert x.e.open_orders() == []


def test_market_fok():
    x = Ex()
    x.rest(BUY, 9000, 10, firm="F2")
    evs = x.new(SELL, 0, 20, ot=MKT, tif=FOK)
    assert kinds(evs) == ["OrderAccepted", "OrderCancelled"] and evs[1].reason == C.FOK_UNFILLED
    evs = x.new(SELL, 0, 10, ot=MKT, tif=FOK)
    assert kinds(evs) == ["OrderAccepted", "Trade", "BookUpdate"]


def test_market_order_price_field_is_ignored():
    x = Ex()
    x.rest(SELL, 10100, 10, firm="F2")
    evs = x.new(BUY, 1, 10, ot=MKT)                      # the price of a market order is unused
    assert kinds(evs) == ["OrderAccepted", "Trade", "BookUpdate"]


# ---------------------------------------------------------------------------- STP

def test_stp_none_trades_with_itself():
    x = Ex()
    r = x.rest(SELL, 10100, 10, firm="F1")
    evs = x.new(BUY, 10100, 10, firm="F1")
    assert kinds(evs) == ["OrderAccepted", "Trade", "BookUpdate"]
    assert evs[1].sell_order_id == r


def test_stp_cancel_resting_skips_own_orders():
    x = Ex()
    own = x.rest(SELL, 10100, 10, firm="FR", session="X")
    other = x.rest(SELL, 10100, 10, firm="F2")
    evs = x.new(BUY, 10100, 20, firm="FR")
    assert kinds(evs) == ["OrderAccepted", "OrderCancelled", "Trade", "BookUpdate"]
    c = evs[1]
    assert (c.order_id, c.reason, c.leaves, c.session, c.cl_ord_id) == \
        (own, C.SELF_TRADE, 10, "X", "")
    assert evs[2].sell_order_id == other
    assert evs[3].levels == ((SELL, 10100, 0, 0), (BUY, 10100, 10, 1))


def test_stp_cancel_incoming_stops_and_cancels_rest_of_incoming():
    x = Ex()
    other = x.rest(SELL, 10100, 10, firm="F2")
    own = x.rest(SELL, 10100, 10, firm="FI")
    x.rest(SELL, 10200, 10, firm="F2")
    evs = x.new(BUY, 10200, 30, firm="FI")
    assert kinds(evs) == ["OrderAccepted", "Trade", "OrderCancelled", "BookUpdate"]
    assert evs[1].sell_order_id == other
    c = evs[2]
    assert (c.order_id, c.reason, c.leaves) == (evs[0].order_id, C.SELF_TRADE, 20)
    assert x.e.book_levels("AAA", SELL) == [(10100, 10, 1), (10200, 10, 1)]
    assert [o.order_id for o in x.e.open_orders() if o.side == SELL][0] == own
    assert x.e.book_levels("AAA", BUY) == []


def test_stp_cancel_both():
    x = Ex()
    own = x.rest(SELL, 10100, 10, firm="FB")
    x.rest(SELL, 10100, 10, firm="F2")
    evs = x.new(BUY, 10100, 20, firm="FB")
    assert kinds(evs) == ["OrderAccepted", "OrderCancelled", "OrderCancelled", "BookUpdate"]
    assert (evs[1].order_id, evs[1].reason) == (own, C.SELF_TRADE)
    assert (evs[2].order_id, evs[2].reason, evs[2].leaves) == \
        (evs[0].order_id, C.SELF_TRADE, 20)
    assert evs[3].levels == ((SELL, 10100, 10, 1),)
    assert x.e.exposure("FB") == (0, 0)


# ---------------------------------------------------------------------------- cancel

def test_cancel_by_order_id_and_by_cl_ord_id():
    x = Ex()
    a = x.rest(BUY, 10000, 10, clid="a")
    x.rest(BUY, 10000, 20, clid="b")
    evs = x.cancel(order_id=a, clid="x1")
    assert evs == [OrderCancelled(evs[0].seq, evs[0].cmd_seq, evs[0].ts, a, "S1", "x1", "AAA",
                                  10, C.REQUESTED),
                   BookUpdate(evs[1].seq, evs[1].cmd_seq, evs[1].ts, "AAA",
                              ((BUY, 10000, 20, 1),))]
    evs = x.cancel(orig="b", clid="x2")
    assert kinds(evs) == ["OrderCancelled", "BookUpdate"]
    assert evs[1].levels == ((BUY, 10000, 0, 0),)
    assert x.e.open_orders() == [] and x.e.exposure("F1") == (0, 0)


def test_cancel_rejects():
    x = Ex()
    a = x.rest(BUY, 10000, 10, clid="a")
    rej = only(x.cancel(order_id=999), CancelRejected)
    assert (rej.reason, rej.order_id, rej.is_replace, rej.text) == \
        (R.UNKNOWN_ORDER, 0, False, REJECT_TEXT[R.UNKNOWN_ORDER])
    assert only(x.cancel(orig="zz"), CancelRejected).reason == R.UNKNOWN_ORDER
    assert only(x.cancel(orig="a", session="S2"), CancelRejected).reason == R.UNKNOWN_ORDER
    assert only(x.cancel(order_id=a, firm="F2"), CancelRejected).reason == R.NOT_OWNER
    assert only(x.cancel(orig="a", firm="F2"), CancelRejected).reason == R.NOT_OWNER
    x.cancel(order_id=a)
    assert only(x.cancel(order_id=a), CancelRejected).reason == R.UNKNOWN_ORDER
    assert only(x.cancel(orig="a"), CancelRejected).reason == R.UNKNOWN_ORDER


def test_cancel_of_filled_order_is_unknown_and_cancel_from_other_session_of_firm():
    x = Ex()
    a = x.rest(BUY, 10000, 10, clid="a")
    x.new(SELL, 10000, 10, firm="F2")
    assert only(x.cancel(orig="a"), CancelRejected).reason == R.UNKNOWN_ORDER
    b = x.rest(BUY, 10000, 10, clid="b")
    assert kinds(x.cancel(order_id=b, session="RISK")) == ["OrderCancelled", "BookUpdate"]
    assert a != b


def test_cancel_allowed_while_halted():
    x = Ex()
    a = x.rest(BUY, 10000, 10)
    x.apply(SetHalt(HaltScope.MARKET, "", True))
    x.apply(SetHalt(HaltScope.INSTRUMENT, "AAA", True))
    assert kinds(x.cancel(order_id=a)) == ["OrderCancelled", "BookUpdate"]


# ---------------------------------------------------------------------------- replace

def test_replace_qty_decrease_keeps_priority():
    x = Ex()
    a = x.rest(BUY, 10000, 30, clid="a")
    b = x.rest(BUY, 10000, 10, clid="b")
    evs = x.replace(10000, 20, orig="a", clid="a2")
    assert kinds(evs) == ["OrderReplaced", "BookUpdate"]
    r = evs[0]
    assert (r.order_id, r.session, r.cl_ord_id, r.orig_cl_ord_id, r.instrument, r.price, r.qty,
            r.leaves, r.priority_kept) == (a, "S1", "a2", "a", "AAA", 10000, 20, 20, True)
    assert evs[1].levels == ((BUY, 10000, 30, 2),)
    evs = x.new(SELL, 10000, 10, firm="F2")
    assert evs[1].buy_order_id == a                       # still first in the queue
    assert b


def test_replace_qty_increase_loses_priority():
    x = Ex()
    a = x.rest(BUY, 10000, 10, clid="a")
    b = x.rest(BUY, 10000, 10, clid="b")
    evs = x.replace(10000, 20, order_id=a)
    assert evs[0].priority_kept is False and evs[1].levels == ((BUY, 10000, 30, 2),)
    evs = x.new(SELL, 10000, 10, firm="F2")
    assert evs[1].buy_order_id == b


def test_replace_price_change_goes_to_back_of_new_level():
    x = Ex()
    a = x.rest(BUY, 10000, 10, clid="a")
    b = x.rest(BUY, 10100, 10, clid="b")
    evs = x.replace(10100, 10, orig="a", clid="a2")
    assert kinds(evs) == ["OrderReplaced", "BookUpdate"]
    assert evs[0].priority_kept is False
    assert evs[1].levels == ((BUY, 10000, 0, 0), (BUY, 10100, 20, 2))
    evs = x.new(SELL, 10100, 10, firm="F2")
    assert evs[1].buy_order_id == b
    # price decrease also loses priority
    c = x.rest(BUY, 10000, 10)
    evs = x.replace(10000, 10, order_id=a)
    assert evs[0].priority_kept is False
    evs = x.new(SELL, 10000, 10, firm="F2")
    assert evs[1].buy_order_id == c


def test_replace_crossing_matches_as_aggressor():
    x = Ex()
    s1 = x.rest(SELL, 10200, 10, firm="F2")
    x.rest(SELL, 10300, 10, firm="F2")
    a = x.rest(BUY, 10000, 30, clid="a")
    evs = x.replace(10200, 30, orig="a", clid="a2")
    assert kinds(evs) == ["OrderReplaced", "Trade", "BookUpdate"]
    t = evs[1]
    assert (t.price, t.qty, t.aggressor_side, t.buy_order_id, t.sell_order_id, t.buy_leaves) == \
        (10200, 10, BUY, a, s1, 20)
    assert evs[2].levels == ((BUY, 10000, 0, 0), (SELL, 10200, 0, 0), (BUY, 10200, 20, 1))
    # fully filled by a crossing replace: gone
    evs = x.replace(10300, 10, orig="a2", clid="a3")    # new total 10 <= cum 10
    assert only(evs, CancelRejected).reason == R.QTY_BELOW_EXECUTED
    evs = x.replace(10300, 20, orig="a2", clid="a4")
    assert kinds(evs) == ["OrderReplaced", "Trade", "BookUpdate"]
    assert evs[0].leaves == 10 and evs[1].buy_leaves == 0
    assert x.e.open_orders() == []
    assert only(x.cancel(orig="a4"), CancelRejected).reason == R.UNKNOWN_ORDER


def test_replace_crossing_with_stp_cancel_incoming():
    x = Ex()
    x.rest(SELL, 10200, 10, firm="FI")
    a = x.rest(BUY, 10000, 10, firm="FI")
    evs = x.replace(10200, 10, order_id=a, firm="FI")
    assert kinds(evs) == ["OrderReplaced", "OrderCancelled", "BookUpdate"]
    assert (evs[1].order_id, evs[1].reason) == (a, C.SELF_TRADE)
    assert evs[2].levels == ((BUY, 10000, 0, 0),)
    assert x.e.book_levels("AAA", BUY) == []


def test_replace_changes_current_cl_ord_id():
    x = Ex()
    a = x.rest(BUY, 10000, 10, clid="a")
    x.replace(10000, 20, orig="a", clid="a2")
    rej = only(x.replace(10000, 30, orig="a"), CancelRejected)
    assert rej.reason == R.UNKNOWN_ORDER
    assert only(x.cancel(orig="a"), CancelRejected).reason == R.UNKNOWN_ORDER
    assert x.e.open_orders()[0].cl_ord_id == "a2"
    evs = x.cancel(orig="a2")
    assert evs[0].order_id == a


@pytest.mark.parametrize("price, qty, reason", [
    (0, 20, R.PRICE_NOT_POSITIVE),
    (10050, 20, R.PRICE_OFF_TICK),
    (15100, 20, R.PRICE_OUTSIDE_BAND),
    (4900, 20, R.PRICE_OUTSIDE_BAND),
    (10000, 0, R.QTY_NOT_POSITIVE),
    (10000, 25, R.QTY_NOT_LOT_MULTIPLE),
    (10000, 10, R.QTY_BELOW_EXECUTED),
    (10000, 30, R.NOTHING_TO_CHANGE),
])
def test_replace_rejects(price, qty, reason):
    x = Ex()
    a = x.rest(BUY, 10000, 30, clid="a")
    x.new(SELL, 10000, 10, firm="F2")                    # a: cum 10, leaves 20
    before = x.e.state_digest()
    evs = x.replace(price, qty, orig="a", clid="r")
    rej = only(evs, CancelRejected)
    assert len(evs) == 1
    assert (rej.reason, rej.text, rej.is_replace, rej.order_id, rej.cl_ord_id,
            rej.orig_cl_ord_id, rej.session) == \
        (reason, REJECT_TEXT[reason], True, a, "r", "a", "S1")
    assert x.e.book_levels("AAA", BUY) == [(10000, 20, 1)]
    assert before != x.e.state_digest()                  # only the used id "r" changed
    assert only(x.new(BUY, 10000, 10, clid="r"), OrderRejected).reason == R.DUPLICATE_CL_ORD_ID


def test_replace_unknown_and_not_owner():
    x = Ex()
    a = x.rest(BUY, 10000, 10, clid="a")
    rej = only(x.replace(10000, 20, order_id=77), CancelRejected)
    assert (rej.reason, rej.order_id, rej.is_replace) == (R.UNKNOWN_ORDER, 0, True)
    rej = only(x.replace(10000, 20, order_id=a, firm="F2"), CancelRejected)
    assert (rej.reason, rej.order_id) == (R.NOT_OWNER, 0)


@pytest.mark.parametrize("scope, target, reason", [
    (HaltScope.MARKET, "", R.MARKET_HALTED),
    (HaltScope.INSTRUMENT, "AAA", R.INSTRUMENT_HALTED),
])
def test_replace_rejected_while_halted(scope, target, reason):
    x = Ex()
    a = x.rest(BUY, 10000, 10)
    x.apply(SetHalt(scope, target, True))
    assert only(x.replace(10100, 10, order_id=a), CancelRejected).reason == reason
    x.apply(SetHalt(scope, target, False))
    assert kinds(x.replace(10100, 10, order_id=a)) == ["OrderReplaced", "BookUpdate"]


# ---------------------------------------------------------------------------- credit

def test_credit_limit_on_new_orders_and_exposure_accounting():
    x = Ex()
    # FC limit 1,000,000: 10000 * 100 = 1,000,000 fits exactly
    x.rest(BUY, 10000, 100, firm="FC")
    assert x.e.exposure("FC") == (1_000_000, 0)
    rej = only(x.new(BUY, 5000, 10, firm="FC"), OrderRejected)
    assert (rej.reason, rej.text) == (R.CREDIT_LIMIT, REJECT_TEXT[R.CREDIT_LIMIT])
    # a fill moves the notional from open to executed
    x.new(SELL, 10000, 40, firm="F2")
    assert x.e.exposure("FC") == (600_000, 400_000)
    assert x.e.exposure("F2") == (0, 400_000)
    x.cancel(order_id=1, firm="FC")
    assert x.e.exposure("FC") == (0, 400_000)
    assert only(x.new(BUY, 10000, 70, firm="FC"), OrderRejected).reason == R.CREDIT_LIMIT
    x.rest(SELL, 10000, 60, firm="FC")                   # sells count too (gross)
    assert x.e.exposure("FC") == (600_000, 400_000)


def test_aggressive_buy_filling_below_limit_frees_the_difference():
    x = Ex()
    x.rest(SELL, 9000, 10, firm="F2")
    evs = x.new(BUY, 10000, 20, firm="FC")
    assert kinds(evs) == ["OrderAccepted", "Trade", "BookUpdate"]
    assert x.e.exposure("FC") == (100_000, 90_000)


def test_market_order_notional_is_band_high():
    x = Ex()
    x.apply(SetCreditLimit("FC", 15000 * 60))
    assert only(x.new(BUY, 0, 70, ot=MKT, firm="FC"), OrderRejected).reason == R.CREDIT_LIMIT
    assert only(x.new(SELL, 0, 70, ot=MKT, firm="FC"), OrderRejected).reason == R.CREDIT_LIMIT
    x.rest(BUY, 9000, 10, firm="F2")
    evs = x.new(SELL, 0, 60, ot=MKT, firm="FC")
    assert kinds(evs) == ["OrderAccepted", "Trade", "OrderCancelled", "BookUpdate"]
    assert x.e.exposure("FC") == (0, 90_000)


def test_replace_checks_the_increase_only():
    x = Ex()
    a = x.rest(BUY, 10000, 60, firm="FC")                # 600,000
    x.rest(BUY, 10000, 30, firm="FC")                    # 900,000
    assert only(x.replace(10000, 80, order_id=a, firm="FC"), CancelRejected).reason == \
        R.CREDIT_LIMIT
    assert kinds(x.replace(10000, 70, order_id=a, firm="FC")) == ["OrderReplaced", "BookUpdate"]
    assert x.e.exposure("FC") == (1_000_000, 0)
    # a decrease is always allowed, even above the limit
    x.apply(SetCreditLimit("FC", 10))
    assert kinds(x.replace(9000, 70, order_id=a, firm="FC")) == ["OrderReplaced", "BookUpdate"]
    assert x.e.exposure("FC") == (930_000, 0)


def test_replace_credit_check_counts_executed_notional():
    x = Ex()
    x.rest(BUY, 10000, 50, firm="FC")
    x.new(SELL, 10000, 50, firm="F2")
    assert x.e.exposure("FC") == (0, 500_000)
    a = x.rest(BUY, 10000, 10, firm="FC")
    assert only(x.replace(10000, 60, order_id=a, firm="FC"), CancelRejected).reason == \
        R.CREDIT_LIMIT
    assert only(x.replace(10000, 50, order_id=a, firm="FC"), OrderReplaced).leaves == 50
    assert x.e.exposure("FC") == (500_000, 500_000)


def test_set_credit_limit_and_unknown_firm_alert():
    x = Ex()
    evs = x.apply(SetCreditLimit("F2", 123))
    assert kinds(evs) == ["CreditLimitChanged"] and evs[0].limit == 123
    assert isinstance(evs[0], CreditLimitChanged) and x.e.credit_limit("F2") == 123
    evs = x.apply(SetCreditLimit("NOPE", 1))
    assert kinds(evs) == ["Alert"] and evs[0].severity == "warning" and "NOPE" in evs[0].text


# ---------------------------------------------------------------------------- mass cancel

def _populate(x: Ex) -> dict:
    ids = {}
    ids["f1s1a"] = x.rest(BUY, 10000, 10, firm="F1", session="S1")
    ids["f2s2a"] = x.rest(BUY, 10000, 10, firm="F2", session="S2")
    ids["f1s3b"] = x.rest(SELL, 600, 1, firm="F1", session="S3", inst="BBB")
    ids["f1s1b"] = x.rest(BUY, 400, 1, firm="F1", session="S1", inst="BBB")
    ids["f2s2b"] = x.rest(SELL, 10100, 10, firm="F2", session="S2")
    return ids


@pytest.mark.parametrize("filters, victims", [
    (dict(firm="F1"), ["f1s1a", "f1s3b", "f1s1b"]),
    (dict(target_session="S2"), ["f2s2a", "f2s2b"]),
    (dict(instrument="BBB"), ["f1s3b", "f1s1b"]),
    (dict(firm="F1", instrument="AAA"), ["f1s1a"]),
    (dict(firm="F1", target_session="S1", instrument="BBB"), ["f1s1b"]),
    (dict(firm="F2", target_session="S1"), []),
])
def test_mass_cancel_scopes(filters, victims):
    x = Ex()
    ids = _populate(x)
    evs = x.apply(MassCancel("OPS", "m1", **filters))
    cancelled = [e for e in evs if isinstance(e, OrderCancelled)]
    assert [e.order_id for e in cancelled] == sorted(ids[v] for v in victims)
    assert all(e.reason == C.MASS_CANCEL and e.cl_ord_id == "m1" for e in cancelled)
    n = len(cancelled)
    rep = evs[n]
    assert isinstance(rep, MassCancelReport)
    assert (rep.session, rep.cl_ord_id, rep.cancelled, rep.reason, rep.text) == \
        ("OPS", "m1", len(victims), 0, "")
    ups = evs[n + 1:]
    assert all(isinstance(e, BookUpdate) for e in ups)
    first_touch = []
    for e in cancelled:
        if e.instrument not in first_touch:
            first_touch.append(e.instrument)
    assert [u.instrument for u in ups] == first_touch
    left = {o.order_id for o in x.e.open_orders()}
    assert left == {ids[k] for k in ids if k not in victims}


def test_mass_cancel_book_update_lists_levels_in_first_touched_order():
    x = Ex()
    x.rest(BUY, 10000, 10, firm="F1")
    x.rest(SELL, 10200, 10, firm="F1")
    x.rest(BUY, 10000, 10, firm="F2")
    x.rest(BUY, 9900, 10, firm="F1")
    evs = x.apply(MassCancel("OPS", "m", firm="F1"))
    assert kinds(evs) == ["OrderCancelled"] * 3 + ["MassCancelReport", "BookUpdate"]
    assert evs[-1].levels == ((BUY, 10000, 10, 1), (SELL, 10200, 0, 0), (BUY, 9900, 0, 0))


@pytest.mark.parametrize("filters, reason", [
    (dict(), R.INVALID_COMMAND),
    (dict(firm="NOPE"), R.UNKNOWN_FIRM),
    (dict(instrument="ZZZ"), R.UNKNOWN_INSTRUMENT),
])
def test_mass_cancel_invalid(filters, reason):
    x = Ex()
    _populate(x)
    evs = x.apply(MassCancel("OPS", "m1", **filters))
    assert kinds(evs) == ["MassCancelReport"]
    assert (evs[0].reason, evs[0].text, evs[0].cancelled) == (reason, REJECT_TEXT[reason], 0)
    assert len(x.e.open_orders()) == 5


# ---------------------------------------------------------------------------- halts

def test_firm_halt_cancels_its_orders_and_release():
    x = Ex()
    ids = _populate(x)
    evs = x.apply(SetHalt(HaltScope.FIRM, "F1", True, "risk breach"))
    assert kinds(evs) == ["OrderCancelled"] * 3 + ["TradingStatus", "BookUpdate", "BookUpdate"]
    assert [e.order_id for e in evs[:3]] == sorted([ids["f1s1a"], ids["f1s3b"], ids["f1s1b"]])
    assert all(e.reason == C.FIRM_HALTED and e.cl_ord_id == "" for e in evs[:3])
    st = evs[3]
    assert (st.scope, st.target, st.halted, st.text, st.cancelled) == \
        (HaltScope.FIRM, "F1", True, "risk breach", 3)
    assert x.e.halted(HaltScope.FIRM, "F1")
    assert x.e.exposure("F1") == (0, 0)
    assert only(x.replace(10000, 20, order_id=ids["f2s2a"], firm="F2"), OrderReplaced)
    evs = x.apply(SetHalt(HaltScope.FIRM, "F1", False))
    assert evs == [TradingStatus(evs[0].seq, evs[0].cmd_seq, evs[0].ts, HaltScope.FIRM, "F1",
                                 False, "", 0)]
    x.rest(BUY, 10000, 10, firm="F1")


def test_firm_halt_rejects_replace():
    x = Ex()
    a = x.rest(BUY, 10000, 10, firm="F2")
    x.apply(SetHalt(HaltScope.FIRM, "F1", True))
    b = x.rest(BUY, 10000, 10, firm="F2")
    assert a != b
    x2 = Ex()
    o = x2.rest(BUY, 10000, 10)
    # halting the firm cancelled it, so a replace on it is now unknown
    x2.apply(SetHalt(HaltScope.FIRM, "F1", True))
    assert only(x2.replace(10000, 20, order_id=o), CancelRejected).reason == R.UNKNOWN_ORDER


def test_market_and_instrument_halt_keep_resting_orders():
    x = Ex()
    x.rest(BUY, 10000, 10)
    evs = x.apply(SetHalt(HaltScope.INSTRUMENT, "AAA", True, "news"))
    assert kinds(evs) == ["TradingStatus"] and evs[0].cancelled == 0
    evs = x.apply(SetHalt(HaltScope.MARKET, "", True))
    assert kinds(evs) == ["TradingStatus"]
    assert len(x.e.open_orders()) == 1
    assert x.e.halted(HaltScope.MARKET) and x.e.halted(HaltScope.INSTRUMENT, "AAA")
    assert only(x.new(BUY, 500, 1, inst="BBB"), OrderRejected).reason == R.MARKET_HALTED


@pytest.mark.parametrize("cmd", [
    SetHalt(HaltScope.FIRM, "NOPE", True),
    SetHalt(HaltScope.INSTRUMENT, "ZZZ", True),
    SetHalt(9, "", True),
])
def test_halt_unknown_target_alert(cmd):
    x = Ex()
    evs = x.apply(cmd)
    assert kinds(evs) == ["Alert"]
    assert (evs[0].source, evs[0].severity) == ("engine", "warning")


def test_raise_alert():
    x = Ex()
    evs = x.apply(RaiseAlert("node2", "critical", "refused: digest mismatch"))
    assert evs[0] == Alert(1, 1, 1000, "node2", "critical", "refused: digest mismatch")


# ---------------------------------------------------------------------------- state

def test_state_digest_tracks_state():
    a, b = Ex(), Ex()
    assert a.e.state_digest() == b.e.state_digest()
    for x in (a, b):
        x.rest(BUY, 10000, 10)
        x.new(SELL, 10000, 5, firm="F2")
    assert a.e.state_digest() == b.e.state_digest()
    b.apply(RaiseAlert("s", "info", "t"))
    assert a.e.state_digest() != b.e.state_digest()
    a.apply(RaiseAlert("s", "info", "t"), origin="o", req_id=3)
    assert a.e.state_digest() != b.e.state_digest()        # last_req differs


def test_book_levels_unknown_symbol_raises_key_error():
    with pytest.raises(KeyError):
        Engine(RD).book_levels("ZZZ", BUY)


def test_order_query_and_counts():
    x = Ex()
    a = x.rest(BUY, 10000, 30, clid="a")
    x.rest(BUY, 9900, 10)
    x.rest(SELL, 10100, 10)
    x.new(SELL, 10000, 10, firm="F2")
    o = x.e.order(a)
    assert (o.order_id, o.cl_ord_id, o.qty, o.cum_qty, o.leaves, o.price, o.side) == \
        (a, "a", 30, 10, 20, 10000, BUY)
    assert x.e.order(999) is None
    assert x.e.open_order_count() == 3 and x.e.level_count() == 3
    assert x.e.best("AAA", BUY) == 10000 and x.e.best("AAA", SELL) == 10100
    assert x.e.best("BBB", BUY) == 0


def test_replace_from_another_session_moves_the_current_id_there():
    x = Ex()
    a = x.rest(BUY, 10000, 10, clid="a", session="S1")
    x.replace(10000, 20, order_id=a, session="S2", clid="b")
    assert only(x.cancel(orig="b", session="S1"), CancelRejected).reason == R.UNKNOWN_ORDER
    assert only(x.cancel(orig="a", session="S1"), CancelRejected).reason == R.UNKNOWN_ORDER
    evs = x.cancel(orig="b", session="S2")
    assert evs[0].order_id == a and evs[0].session == "S2"     # reported to the requester


def test_empty_cl_ord_id_is_never_a_duplicate_and_never_found():
    x = Ex()
    a = x.rest(BUY, 10000, 10, clid="")
    x.rest(BUY, 10000, 10, clid="")
    assert only(x.cancel(orig=""), CancelRejected).reason == R.UNKNOWN_ORDER
    assert kinds(x.cancel(order_id=a, clid="")) == ["OrderCancelled", "BookUpdate"]


def test_tables_split_by_id_still_list_and_cancel_in_order_id_order():
    """Open orders live in tables split by order id (and ClOrdIDs by hash): with more orders
    than shards, mass cancels, firm halts and queries still go in order-id order, and lookups
    by ClOrdID find every order."""
    from engine.core import LIVE_SHARDS, ORDER_SHARDS
    x = Ex()
    n = 64 * ORDER_SHARDS + LIVE_SHARDS + 7          # ids wrap round the tables
    ids = [x.rest(BUY, 5000 + 100 * (i % 40), 10, clid=f"id{i}") for i in range(n)]
    ids += [x.rest(BUY, 5000, 10, firm="F2", session="S2", clid=f"f2-{i}") for i in range(n)]
    assert [o.order_id for o in x.e.open_orders()] == sorted(ids)
    assert x.e.open_order_count() == 2 * n
    # by ClOrdID: every live id resolves, on every shard
    evs = x.cancel(orig="id5")
    assert only(evs, OrderCancelled).order_id == ids[5]
    evs = x.apply(MassCancel("OPS", "m1", firm="F1"))
    cancelled = [e.order_id for e in evs if isinstance(e, OrderCancelled)]
    assert cancelled == [i for i in ids[:n] if i != ids[5]]
    evs = x.apply(SetHalt(HaltScope.FIRM, "F2", True))
    assert [e.order_id for e in evs if isinstance(e, OrderCancelled)] == ids[n:]
    assert x.e.open_order_count() == 0
