"""Property tests: random command sequences against a naive reference model.

The model keeps every order in one flat list and finds matches by sorting the crossing orders
by (price, time) each time: slow but obviously right. After every command we check that
- the engine's events (all but BookUpdate) equal the model's prediction exactly (so fills
  follow price-time priority, self-trade prevention, FOK, market, credit, halts, replace rules);
- the BookUpdate levels are exactly the levels whose state changed, each listed once;
- the book is never crossed;
- per order, qty = cum + leaves + cancelled (derived from the events alone);
- the aggregated levels equal the sums over the open orders;
- a replica fed only with BookUpdate events reproduces ``book_levels`` exactly.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from engine.commands import (
    CancelOrder, MassCancel, NewOrder, ReplaceOrder, SequencedCommand, SetCreditLimit, SetHalt,
)
from engine.core import Engine
from engine.events import (
    Alert, BookUpdate, CancelRejected, CreditLimitChanged, MassCancelReport, OrderAccepted,
    OrderCancelled, OrderRejected, OrderReplaced, Trade, TradingStatus,
)
from engine.reasons import CancelReason as C, RejectReason as R
from engine.refdata import Firm, Instrument, MarketRefData, StpMode

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
        Firm(id="F2", name="two", credit_limit=10 ** 12),
        Firm(id="FR", name="r", credit_limit=10 ** 12, stp=StpMode.CANCEL_RESTING),
        Firm(id="FI", name="i", credit_limit=10 ** 12, stp=StpMode.CANCEL_INCOMING),
        Firm(id="FB", name="b", credit_limit=10 ** 12, stp=StpMode.CANCEL_BOTH),
        Firm(id="FC", name="c", credit_limit=1_500_000, accounts=("X", "Y")),
    ),
)
FIRMS = [f.id for f in RD.firms]
SESSIONS = ["S1", "S2"]


# ------------------------------------------------------------------------ reference model

class MOrder:
    def __init__(self, oid, session, firm, clid, sym, side, price, qty, time):
        self.oid, self.session, self.firm, self.clid = oid, session, firm, clid
        self.clid_session = session
        self.sym, self.side, self.price, self.qty = sym, side, price, qty
        self.leaves, self.time = qty, time
        self.resting = False


class Model:
    def __init__(self, rd: MarketRefData) -> None:
        self.inst = {i.symbol: i for i in rd.instruments}
        self.firm = {f.id: dict(limit=f.credit_limit, stp=int(f.stp), accounts=f.accounts,
                                open=0, exec=0, halted=False) for f in rd.firms}
        self.market_halted = False
        self.inst_halted = {s: False for s in self.inst}
        self.orders: list[MOrder] = []
        self.used: list[tuple[str, str]] = []
        self.clock = 0
        self.next_oid = 1
        self.next_tid = 1

    # helpers
    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def resting(self):
        return [o for o in self.orders if o.resting]

    def levels(self) -> dict:
        out: dict = {}
        for o in self.resting():
            k = (o.sym, o.side, o.price)
            q, n = out.get(k, (0, 0))
            out[k] = (q + o.leaves, n + 1)
        return out

    def use(self, session, clid) -> bool:
        """Record the id; False if it was already used."""
        if not clid:
            return True
        if (session, clid) in self.used:
            return False
        self.used.append((session, clid))
        return True

    def find(self, session, clid, order_id):
        if order_id:
            return next((o for o in self.resting() if o.oid == order_id), None)
        if not clid:
            return None
        return next((o for o in self.resting()
                     if o.clid == clid and o.clid_session == session), None)

    def kill(self, o, reason, clid, out, exposure_price=None):
        f = self.firm[o.firm]
        f["open"] -= (o.price if exposure_price is None else exposure_price) * o.leaves
        out.append(("cxl", o.oid, o.leaves, reason, clid))
        o.leaves = 0
        o.resting = False

    def match(self, o, lim, xp, out) -> bool:
        f = self.firm[o.firm]
        if o.side == 1:
            cands = sorted((r for r in self.resting() if r.sym == o.sym and r.side == 2
                            and r.price <= lim), key=lambda r: (r.price, r.time))
        else:
            cands = sorted((r for r in self.resting() if r.sym == o.sym and r.side == 1
                            and r.price >= lim), key=lambda r: (-r.price, r.time))
        for r in cands:
            if not o.leaves:
                break
            if f["stp"] and r.firm == o.firm:
                if f["stp"] == StpMode.CANCEL_INCOMING:
                    return True
                self.kill(r, C.SELF_TRADE, "", out)
                if f["stp"] == StpMode.CANCEL_BOTH:
                    return True
                continue
            q = min(o.leaves, r.leaves)
            o.leaves -= q
            r.leaves -= q
            px = r.price
            rf = self.firm[r.firm]
            rf["open"] -= px * q
            rf["exec"] += px * q
            f["open"] -= xp * q
            f["exec"] += px * q
            if o.side == 1:
                out.append(("trade", self.next_tid, px, q, 1, o.oid, r.oid, o.leaves, r.leaves))
            else:
                out.append(("trade", self.next_tid, px, q, 2, r.oid, o.oid, r.leaves, o.leaves))
            self.next_tid += 1
            if not r.leaves:
                r.resting = False
        return False

    def fok_ok(self, o, lim) -> bool:
        f = self.firm[o.firm]
        if o.side == 1:
            cands = sorted((r for r in self.resting() if r.sym == o.sym and r.side == 2
                            and r.price <= lim), key=lambda r: (r.price, r.time))
        else:
            cands = sorted((r for r in self.resting() if r.sym == o.sym and r.side == 1
                            and r.price >= lim), key=lambda r: (-r.price, r.time))
        avail = 0
        for r in cands:
            if f["stp"] and r.firm == o.firm:
                if f["stp"] == StpMode.CANCEL_RESTING:
                    continue
                break
            avail += r.leaves
        return avail >= o.qty

    # commands
    def new(self, c: NewOrder) -> list:
        def rej(reason):
            return [("rej", int(reason))]
        if not self.use(c.session, c.cl_ord_id):
            return rej(R.DUPLICATE_CL_ORD_ID)
        inst = self.inst.get(c.instrument)
        if inst is None:
            return rej(R.UNKNOWN_INSTRUMENT)
        f = self.firm.get(c.firm)
        if f is None:
            return rej(R.UNKNOWN_FIRM)
        if f["accounts"] and c.account not in f["accounts"]:
            return rej(R.UNKNOWN_ACCOUNT)
        if c.side not in (1, 2):
            return rej(R.INVALID_SIDE)
        if c.ord_type not in (1, 2):
            return rej(R.INVALID_ORDER_TYPE)
        if c.tif not in (0, 3, 4):
            return rej(R.INVALID_TIME_IN_FORCE)
        if c.qty <= 0:
            return rej(R.QTY_NOT_POSITIVE)
        if c.qty % inst.lot:
            return rej(R.QTY_NOT_LOT_MULTIPLE)
        market = c.ord_type == 1
        if not market:
            if c.price <= 0:
                return rej(R.PRICE_NOT_POSITIVE)
            if c.price % inst.tick:
                return rej(R.PRICE_OFF_TICK)
            if not inst.band_low <= c.price <= inst.band_high:
                return rej(R.PRICE_OUTSIDE_BAND)
        if self.market_halted:
            return rej(R.MARKET_HALTED)
        if self.inst_halted[c.instrument]:
            return rej(R.INSTRUMENT_HALTED)
        if f["halted"]:
            return rej(R.FIRM_HALTED)
        price = 0 if market else c.price
        xp = inst.band_high if market else price
        lim = (inst.band_high if c.side == 1 else inst.band_low) if market else price
        if f["open"] + f["exec"] + xp * c.qty > f["limit"]:
            return rej(R.CREDIT_LIMIT)
        o = MOrder(self.next_oid, c.session, c.firm, c.cl_ord_id, c.instrument, c.side, price,
                   c.qty, 0)
        self.next_oid += 1
        self.orders.append(o)
        f["open"] += xp * c.qty
        out = [("acc", o.oid)]
        if c.tif == 4 and not self.fok_ok(o, lim):
            self.kill(o, C.FOK_UNFILLED, "", out, xp)
            return out
        stop = self.match(o, lim, xp, out)
        if o.leaves:
            if stop:
                self.kill(o, C.SELF_TRADE, "", out, xp)
            elif market:
                self.kill(o, C.NO_LIQUIDITY, "", out, xp)
            elif c.tif == 3:
                self.kill(o, C.IOC_REMAINDER, "", out, xp)
            else:
                o.resting = True
                o.time = self.tick()
        return out

    def cancel(self, c: CancelOrder) -> list:
        if not self.use(c.session, c.cl_ord_id):
            return [("crej", int(R.DUPLICATE_CL_ORD_ID), False, 0)]
        o = self.find(c.session, c.orig_cl_ord_id, c.order_id)
        if o is None:
            return [("crej", int(R.UNKNOWN_ORDER), False, 0)]
        if o.firm != c.firm:
            return [("crej", int(R.NOT_OWNER), False, 0)]
        out: list = []
        self.kill(o, C.REQUESTED, c.cl_ord_id, out)
        return out

    def replace(self, c: ReplaceOrder) -> list:
        if not self.use(c.session, c.cl_ord_id):
            return [("crej", int(R.DUPLICATE_CL_ORD_ID), True, 0)]
        o = self.find(c.session, c.orig_cl_ord_id, c.order_id)
        if o is None:
            return [("crej", int(R.UNKNOWN_ORDER), True, 0)]
        if o.firm != c.firm:
            return [("crej", int(R.NOT_OWNER), True, 0)]
        inst = self.inst[o.sym]
        f = self.firm[o.firm]
        cum = o.qty - o.leaves
        leaves = c.qty - cum
        checks = [
            (self.market_halted, R.MARKET_HALTED),
            (self.inst_halted[o.sym], R.INSTRUMENT_HALTED),
            (f["halted"], R.FIRM_HALTED),
            (c.price <= 0, R.PRICE_NOT_POSITIVE),
            (c.price % inst.tick != 0, R.PRICE_OFF_TICK),
            (not inst.band_low <= c.price <= inst.band_high, R.PRICE_OUTSIDE_BAND),
            (c.qty <= 0, R.QTY_NOT_POSITIVE),
            (c.qty % inst.lot != 0, R.QTY_NOT_LOT_MULTIPLE),
            (leaves <= 0, R.QTY_BELOW_EXECUTED),
            (c.price == o.price and c.qty == o.qty, R.NOTHING_TO_CHANGE),
        ]
        for bad, reason in checks:
            if bad:
                return [("crej", int(reason), True, o.oid)]
        delta = c.price * leaves - o.price * o.leaves
        if delta > 0 and f["open"] + f["exec"] + delta > f["limit"]:
            return [("crej", int(R.CREDIT_LIMIT), True, o.oid)]
        f["open"] += delta
        kept = c.price == o.price and leaves <= o.leaves
        old_clid = o.clid
        o.clid, o.clid_session = c.cl_ord_id, c.session
        o.session = c.session          # a replace moves the order to the requesting session
        moved = c.price != o.price
        o.price, o.qty, o.leaves = c.price, c.qty, leaves
        if not kept:
            o.time = self.tick()
        out = [("rpl", o.oid, c.cl_ord_id, old_clid, c.price, c.qty, leaves, kept)]
        if moved:
            o.resting = False
            stop = self.match(o, o.price, o.price, out)
            if o.leaves:
                if stop:
                    self.kill(o, C.SELF_TRADE, "", out)
                else:
                    o.resting = True
        return out

    def mass_cancel(self, c: MassCancel) -> list:
        if not (c.firm or c.target_session or c.instrument):
            return [("mcr", 0, int(R.INVALID_COMMAND))]
        if c.firm and c.firm not in self.firm:
            return [("mcr", 0, int(R.UNKNOWN_FIRM))]
        if c.instrument and c.instrument not in self.inst:
            return [("mcr", 0, int(R.UNKNOWN_INSTRUMENT))]
        out: list = []
        victims = sorted((o for o in self.resting()
                          if (not c.firm or o.firm == c.firm)
                          and (not c.target_session or o.session == c.target_session)
                          and (not c.instrument or o.sym == c.instrument)),
                         key=lambda o: o.oid)
        for o in victims:
            self.kill(o, C.MASS_CANCEL, c.cl_ord_id, out)
        out.append(("mcr", len(victims), 0))
        return out

    def halt(self, c: SetHalt) -> list:
        out: list = []
        n = 0
        if c.scope == 1:
            self.market_halted = c.halted
        elif c.scope == 3:
            if c.target not in self.inst:
                return [("alert",)]
            self.inst_halted[c.target] = c.halted
        elif c.scope == 2:
            if c.target not in self.firm:
                return [("alert",)]
            self.firm[c.target]["halted"] = c.halted
            if c.halted:
                victims = sorted((o for o in self.resting() if o.firm == c.target),
                                 key=lambda o: o.oid)
                for o in victims:
                    self.kill(o, C.FIRM_HALTED, "", out)
                n = len(victims)
        else:
            return [("alert",)]
        out.append(("ts", c.scope, c.target, c.halted, n))
        return out

    def credit(self, c: SetCreditLimit) -> list:
        if c.firm not in self.firm:
            return [("alert",)]
        self.firm[c.firm]["limit"] = c.limit
        return [("clc", c.firm, c.limit)]

    def apply(self, cmd) -> list:
        handler = {NewOrder: self.new, CancelOrder: self.cancel, ReplaceOrder: self.replace,
                   MassCancel: self.mass_cancel, SetHalt: self.halt,
                   SetCreditLimit: self.credit}[type(cmd)]
        return handler(cmd)


def norm(e):
    c = type(e)
    if c is OrderAccepted:
        return ("acc", e.order_id)
    if c is OrderRejected:
        return ("rej", e.reason)
    if c is Trade:
        return ("trade", e.trade_id, e.price, e.qty, e.aggressor_side, e.buy_order_id,
                e.sell_order_id, e.buy_leaves, e.sell_leaves)
    if c is OrderCancelled:
        return ("cxl", e.order_id, e.leaves, e.reason, e.cl_ord_id)
    if c is OrderReplaced:
        return ("rpl", e.order_id, e.cl_ord_id, e.orig_cl_ord_id, e.price, e.qty, e.leaves,
                e.priority_kept)
    if c is CancelRejected:
        return ("crej", e.reason, e.is_replace, e.order_id)
    if c is MassCancelReport:
        return ("mcr", e.cancelled, e.reason)
    if c is TradingStatus:
        return ("ts", e.scope, e.target, e.halted, e.cancelled)
    if c is Alert:
        return ("alert",)
    if c is CreditLimitChanged:
        return ("clc", e.firm, e.limit)
    raise AssertionError(e)


# ------------------------------------------------------------------------ strategies

LOT = {"AAA": 10, "BBB": 1}
TICK = {"AAA": 100, "BBB": 5}
REF = {"AAA": 10000, "BBB": 500}
BAD_PRICE = {"AAA": [0, -100, 10050, 9400, 10600], "BBB": [0, 503, 475, 525]}


@st.composite
def prices(draw, sym: str):
    if draw(st.integers(0, 24)) == 0:
        return draw(st.sampled_from(BAD_PRICE[sym]))
    return REF[sym] + draw(st.integers(-4, 4)) * TICK[sym]


@st.composite
def qtys(draw, sym: str):
    lot = LOT[sym]
    if draw(st.integers(0, 24)) == 0:
        return draw(st.sampled_from([0, -lot, lot * 3 // 2]))
    return draw(st.integers(1, 6)) * lot


clids = st.sampled_from([f"k{n}" for n in range(400)])
GOOD_FIRMS = ["F1", "F2", "FR", "FI", "FB", "FC"]


@st.composite
def new_orders(draw):
    sym = draw(st.sampled_from(["AAA", "AAA", "BBB"]))
    firm = draw(st.sampled_from(GOOD_FIRMS))
    account = "X" if firm == "FC" else ""
    side = draw(st.sampled_from([1, 2]))
    ot = draw(st.sampled_from([2] * 8 + [1]))
    tif = draw(st.sampled_from([0, 0, 0, 0, 3, 4]))
    bad = draw(st.integers(0, 39))          # one broken field now and then
    if bad == 0:
        firm = "NOPE"
    elif bad == 1:
        account = "Z" if firm == "FC" else account
    elif bad == 2:
        side = 9
    elif bad == 3:
        ot = 7
    elif bad == 4:
        tif = 5
    elif bad == 5:
        sym = "ZZZ"
    price = 0 if ot == 1 else draw(prices(sym if sym != "ZZZ" else "AAA"))
    return NewOrder(draw(st.sampled_from(SESSIONS)), firm, account, draw(clids), sym, side, ot,
                    tif, price, draw(qtys(sym if sym != "ZZZ" else "AAA")))


@st.composite
def cancels(draw):
    by_id = draw(st.booleans())
    return CancelOrder(draw(st.sampled_from(SESSIONS)), draw(st.sampled_from(FIRMS)),
                       draw(clids), "" if by_id else draw(clids),
                       draw(st.integers(1, 30)) if by_id else 0)


@st.composite
def replaces(draw):
    by_id = draw(st.booleans())
    sym = draw(st.sampled_from(["AAA", "AAA", "BBB"]))   # the price grid to draw from
    return ReplaceOrder(draw(st.sampled_from(SESSIONS)), draw(st.sampled_from(FIRMS)),
                        draw(clids), "" if by_id else draw(clids), draw(prices(sym)),
                        draw(qtys(sym)), draw(st.integers(1, 30)) if by_id else 0)


mass_cancels = st.builds(
    MassCancel, st.just("OPS"), clids,
    st.sampled_from(["", "", "F1", "FR", "NOPE"]), st.sampled_from(["", "", "S1", "S2"]),
    st.sampled_from(["", "", "AAA", "BBB", "ZZZ"]))
halts = st.builds(SetHalt, st.sampled_from([1, 2, 2, 3, 3, 4]),
                  st.sampled_from(["", "AAA", "BBB", "F1", "FR", "FC", "NOPE"]), st.booleans())
credits = st.builds(SetCreditLimit, st.sampled_from(["FC", "F1", "NOPE"]),
                    st.sampled_from([0, 500_000, 1_500_000, 10 ** 12]))

commands = st.one_of(
    new_orders(), new_orders(), new_orders(), new_orders(), new_orders(), new_orders(),
    new_orders(), new_orders(), new_orders(), new_orders(), new_orders(), new_orders(),
    cancels(), cancels(), replaces(), replaces(), replaces(), replaces(), replaces(),
    mass_cancels, halts, credits,
)


# ------------------------------------------------------------------------ the property

def _levels_of(engine: Engine) -> dict:
    out = {}
    for sym in ("AAA", "BBB"):
        for side in (1, 2):
            for price, qty, n in engine.book_levels(sym, side):
                out[(sym, side, price)] = (qty, n)
    return out


class Checker:
    """Feeds one command at a time to a fresh Engine and the Model and checks everything."""

    def __init__(self) -> None:
        self.engine = Engine(RD)
        self.model = Model(RD)
        self.replica: dict = {}
        self.tracked: dict = {}   # order_id -> [qty, cum, leaves, cancelled]
        self.n = 0

    def step(self, cmd) -> list:
        engine, model, replica, tracked = self.engine, self.model, self.replica, self.tracked
        self.n += 1
        i = self.n
        before = model.levels()
        expected = model.apply(cmd)
        after = model.levels()
        events = engine.apply(SequencedCommand(i, i, "t", i, cmd))
        # 1. the events equal the model's prediction
        got = [norm(e) for e in events if not isinstance(e, BookUpdate)]
        assert got == expected, (cmd, got, expected)
        # 2. BookUpdates: exactly the changed levels, each once, after the other events
        updates = [e for e in events if isinstance(e, BookUpdate)]
        assert events[len(events) - len(updates):] == updates
        assert len({u.instrument for u in updates}) == len(updates)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        listed = []
        for u in updates:
            for side, price, qty, n in u.levels:
                listed.append((u.instrument, side, price))
                assert (qty, n) == after.get((u.instrument, side, price), (0, 0))
        assert len(listed) == len(set(listed)), updates
        assert set(listed) == changed, (cmd, updates, changed)
        # replica built from BookUpdates only
        for u in updates:
            for side, price, qty, n in u.levels:
                if qty:
                    replica[(u.instrument, side, price)] = (qty, n)
                else:
                    replica.pop((u.instrument, side, price), None)
        levels = _levels_of(engine)
        assert replica == levels
        # 3. never crossed
        for sym in ("AAA", "BBB"):
            bids, asks = engine.book_levels(sym, 1), engine.book_levels(sym, 2)
            if bids and asks:
                assert bids[0][0] < asks[0][0]
        # 4. conservation per order, from the events
        for e in events:
            if isinstance(e, OrderAccepted):
                tracked[e.order_id] = [e.qty, 0, e.qty, 0]
            elif isinstance(e, Trade):
                for oid, leaves in ((e.buy_order_id, e.buy_leaves),
                                    (e.sell_order_id, e.sell_leaves)):
                    t = tracked[oid]
                    t[1] += e.qty
                    t[2] -= e.qty
                    assert t[2] == leaves
            elif isinstance(e, OrderReplaced):
                t = tracked[e.order_id]
                t[0] = e.qty
                t[2] = e.leaves
            elif isinstance(e, OrderCancelled):
                t = tracked[e.order_id]
                assert e.leaves == t[2] > 0
                t[3] += t[2]
                t[2] = 0
        for qty, cum, leaves, cancelled in tracked.values():
            assert qty == cum + leaves + cancelled and leaves >= 0
        # 5. open orders agree with the event-derived view and the levels
        open_orders = engine.open_orders()
        assert {o.order_id: o.leaves for o in open_orders} == \
            {oid: t[2] for oid, t in tracked.items() if t[2]}
        assert all(o.qty == o.cum_qty + o.leaves for o in open_orders)
        summed: dict = {}
        for o in open_orders:
            k = (o.instrument, o.side, o.price)
            q, n = summed.get(k, (0, 0))
            summed[k] = (q + o.leaves, n + 1)
        assert summed == levels == after
        # 6. credit exposure agrees with the model
        for firm in FIRMS:
            m = model.firm[firm]
            assert engine.exposure(firm) == (m["open"], m["exec"])
        return events




def run_and_check(cmds) -> Engine:
    checker = Checker()
    for cmd in cmds:
        checker.step(cmd)
    return checker.engine


@st.composite
def targeted(draw, open_orders):
    """A cancel or replace aimed at one of the open orders (sometimes with a wrong owner)."""
    o = draw(st.sampled_from(open_orders))
    by_id = draw(st.booleans())
    session = o.session if draw(st.integers(0, 9)) else "S2" if o.session == "S1" else "S1"
    firm = o.firm if draw(st.integers(0, 19)) else "F2" if o.firm != "F2" else "F1"
    orig = "" if by_id else o.cl_ord_id
    oid = o.order_id if by_id else 0
    if draw(st.integers(0, 4)) == 0:
        return CancelOrder(session, firm, draw(clids), orig, oid)
    tick, lot = TICK[o.instrument], LOT[o.instrument]
    price = o.price + draw(st.integers(-3, 3)) * tick
    qty = o.qty + draw(st.integers(-2, 2)) * lot
    if draw(st.integers(0, 14)) == 0:
        price = draw(prices(o.instrument))
    if draw(st.integers(0, 14)) == 0:
        qty = draw(qtys(o.instrument))
    return ReplaceOrder(session, firm, draw(clids), orig, price, qty, oid)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, min_size=1, max_size=50))
def test_engine_matches_reference_model(cmds):
    run_and_check(cmds)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_engine_matches_reference_model_state_aware(data):
    """Cancels and replaces mostly aimed at live orders, so that they succeed."""
    checker = Checker()
    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        open_orders = checker.engine.open_orders()
        if open_orders and data.draw(st.integers(0, 2), label="kind") == 0:
            cmd = data.draw(targeted(open_orders), label="targeted")
        else:
            cmd = data.draw(commands, label="command")
        checker.step(cmd)


# a denser book: valid limit orders around one price on one instrument, and replaces of live
# orders that often move through the spread
@st.composite
def dense_new(draw):
    side = draw(st.sampled_from([1, 2]))
    tif = draw(st.sampled_from([0, 0, 0, 0, 0, 3, 4]))
    ot = draw(st.sampled_from([2] * 9 + [1]))
    firm = draw(st.sampled_from(["F1", "F2", "FR", "FI", "FB"]))
    price = 0 if ot == 1 else draw(st.integers(97, 103)) * 100
    return NewOrder("S1", firm, "", draw(clids), "AAA", side, ot, tif, price,
                    draw(st.integers(1, 5)) * 10)


@st.composite
def dense_replace(draw, open_orders):
    o = draw(st.sampled_from(open_orders))
    by_id = draw(st.booleans())
    return ReplaceOrder(o.session, o.firm, draw(clids), "" if by_id else o.cl_ord_id,
                        draw(st.integers(97, 103)) * 100, o.cum_qty + draw(st.integers(1, 6)) * 10,
                        o.order_id if by_id else 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_dense_book_matches_reference_model(data):
    checker = Checker()
    for _ in range(data.draw(st.integers(1, 80), label="steps")):
        open_orders = checker.engine.open_orders()
        if open_orders and data.draw(st.integers(0, 2), label="kind"):
            cmd = data.draw(dense_replace(open_orders), label="replace")
        else:
            cmd = data.draw(dense_new(), label="new")
        checker.step(cmd)
