"""The core trade engine: a pure, deterministic state machine over sequenced commands.

Contract (``Engine.apply``):
- Input is a ``SequencedCommand`` whose ``seq`` must equal ``next_cmd_seq`` (anything else is a
  sequencer bug and raises ``ValueError``). Otherwise ``apply`` never raises for client input:
  bad input becomes reject events (an unknown command type becomes an Alert). Every command
  yields at least one event; the events of one command carry consecutive ``seq`` values starting
  at ``next_event_seq``, ``cmd_seq=sc.seq`` and ``ts=sc.ts`` (the engine never reads a clock).
  ``last_req[origin]`` keeps the highest non-zero ``req_id`` applied per origin.
- Determinism: integers only, no floats, no wall clock, no iteration over sets, nothing that
  depends on hash seeds. The same command list gives byte-identical encoded events.
- Ids: order ids (given on acceptance) and trade ids are integers from 1, in sequence. A
  ``cl_ord_id`` may be used once per session: every non-empty id of a new order, cancel or
  replace request is recorded when the command is processed (whatever its outcome) and a later
  reuse is rejected with DUPLICATE_CL_ORD_ID. The empty id is "no id": never recorded or found.
- Texts: reject texts are ``REJECT_TEXT[reason]``; cancels carry the CancelReason code only
  (``CANCEL_TEXT`` maps it). ``OrderCancelled.cl_ord_id`` is the cancel request's id (REQUESTED)
  or the mass cancel's id (MASS_CANCEL), "" when unsolicited.

Order entry (NewOrder), checks in this order, first failure wins (OrderRejected):
  duplicate cl_ord_id, unknown instrument, unknown firm, unknown account (only when the firm
  lists accounts), side, ord_type, tif, qty <= 0, qty not a lot multiple, limit price <= 0, off
  tick, outside [band_low, band_high], market halted, instrument halted, firm halted, credit.
  Accepted: OrderAccepted (price 0 for a market order), then one Trade per fill (at the resting
  order's price; both orders' leaves after the fill) -- with any self-trade cancels of resting
  orders where they happen --, then OrderCancelled for an unfilled remainder: IOC_REMAINDER for
  an IOC, NO_LIQUIDITY for a market order of any tif (it matches up to band_high for a buy,
  down to band_low for a sell), SELF_TRADE after a self-trade stop; a day limit remainder rests.
  FOK: the full quantity must be available at acceptable prices before the book is touched
  (own-firm orders are skipped under CANCEL_RESTING, end the walk under CANCEL_INCOMING /
  CANCEL_BOTH), else OrderAccepted + OrderCancelled(FOK_UNFILLED) and the book is untouched.
Matching: price-time priority; the incoming order takes the best opposite level, oldest first.
  Self-trade prevention uses the incoming firm's ``stp``: CANCEL_RESTING cancels the resting
  order (SELF_TRADE) and goes on, CANCEL_INCOMING stops and cancels the incoming remainder,
  CANCEL_BOTH does both, NONE trades.
Cancel: by ``order_id`` (takes precedence) or by the order's *current* cl_ord_id in the
  request's session; the order must belong to the request's firm. Checks: duplicate id,
  unknown order, not owner. Allowed while halted. Events: OrderCancelled (its ``session`` is
  the requesting session, which may be another session of the firm), BookUpdate.
Replace: same lookup; checks: duplicate id, unknown order, not owner, market / instrument /
  firm halted, price <= 0, off tick, outside band, qty <= 0, lot, new leaves (qty - executed)
  <= 0, nothing to change, credit on the increase. A price change or a quantity increase loses
  time priority (back of the new level); a pure decrease keeps it. A crossing price matches as
  an aggressor. Events: OrderReplaced (the new id becomes the order's current id, and the order
  moves to the requesting session, which may be another session of the firm), Trades /
  self-trade cancels, BookUpdate. Failures: CancelRejected(is_replace=True).
CancelRejected.order_id is the order's id once it is found and owned by the firm, else 0.
MassCancel: all non-empty filters (firm, target_session, instrument) must match; none set ->
  MassCancelReport(INVALID_COMMAND); unknown firm / instrument filter -> report with
  UNKNOWN_FIRM / UNKNOWN_INSTRUMENT. Otherwise OrderCancelled(MASS_CANCEL) per order in order_id
  order, MassCancelReport(cancelled=n, reason 0, text ""), BookUpdates.
SetHalt: market / instrument halts reject new orders and replaces; a firm halt also cancels
  all the firm's open orders (FIRM_HALTED) in order_id order. Events: the cancels,
  TradingStatus(cancelled=n), BookUpdates. Unknown target or scope -> Alert (source "engine",
  severity "warning"). SetCreditLimit -> CreditLimitChanged (unknown firm -> Alert).
BookUpdate: at most one per command per instrument, after the command's other events, listing
  each changed level once (side, price, qty, count; qty 0 = gone) in the order the levels were
  first touched; instruments in first-touched order; none when no level changed.
Credit: see ``engine.risk``.
"""
from __future__ import annotations

import hashlib
from bisect import bisect_left as _bisect_left, insort as _insort

import msgspec

from engine.book import Book, Level, Order
from engine.commands import (
    CancelOrder, HaltScope, MassCancel, NewOrder, RaiseAlert, ReplaceOrder, SequencedCommand,
    SetCreditLimit, SetHalt,
)
from engine.events import (
    Alert, BookUpdate, CancelRejected, CreditLimitChanged, Event, MassCancelReport,
    OrderAccepted, OrderCancelled, OrderRejected, OrderReplaced, TradingStatus, Trade,
)
from engine.idset import SHARD_MASK as _SHARD_MASK, UsedIds
from engine.reasons import REJECT_TEXT, CancelReason, RejectReason
from engine.refdata import MarketRefData, StpMode
from engine.risk import FirmRisk
from engine.snapshot import (
    BookState, EngineState, FirmState, LevelState, OrderState, SessionState,
)

__all__ = ["Engine", "OpenOrder"]

# Plain ints on the hot path (IntEnum members are slower to compare and hash).
BUY, SELL = 1, 2
MARKET, LIMIT = 1, 2
DAY, IOC, FOK = 0, 3, 4
STP_NONE = int(StpMode.NONE)
STP_RESTING = int(StpMode.CANCEL_RESTING)
STP_INCOMING = int(StpMode.CANCEL_INCOMING)
STP_BOTH = int(StpMode.CANCEL_BOTH)

R = RejectReason
C = CancelReason
R_DUP = int(R.DUPLICATE_CL_ORD_ID)
C_REQUESTED = int(C.REQUESTED)
C_IOC = int(C.IOC_REMAINDER)
C_FOK = int(C.FOK_UNFILLED)
C_STP = int(C.SELF_TRADE)
C_MASS = int(C.MASS_CANCEL)
C_FIRM = int(C.FIRM_HALTED)
C_NOLIQ = int(C.NO_LIQUIDITY)
_RTEXT = {int(k): v for k, v in REJECT_TEXT.items()}


class OpenOrder(msgspec.Struct, frozen=True, array_like=True):
    """Snapshot of one open (resting) order, as returned by ``Engine.open_orders``."""

    order_id: int
    session: str
    firm: str
    account: str
    cl_ord_id: str
    instrument: str
    side: int
    ord_type: int
    tif: int
    price: int
    qty: int
    cum_qty: int
    leaves: int


def _level_tuple(levels: dict, key: int) -> tuple[int, int, int, int]:
    lvl = levels.get(key)
    if lvl is None:
        return (BUY, key, 0, 0) if key > 0 else (SELL, -key, 0, 0)
    return (lvl.side, lvl.price, lvl.qty, len(lvl.orders))


assert _SHARD_MASK == 1023, "the hot path below inlines UsedIds' shard mask"


#: The tables with an entry per open order are split into small dicts by key, as the used ids
#: are (engine.idset): a dict grows by copying itself, and one copy of a 100,000-entry dict
#: stops matching for about 3 ms (a million: about 35 ms). Open orders go by order id in runs
#: of 64 consecutive ids per dict (``_orders[oid >> 6 & _OMASK]``), so the newest orders, which
#: get most of the traffic, stay together in a few tables; live ClOrdIDs go by hash. Nothing in
#: matching iterates them; where the engine lists open orders it sorts them by order id, so
#: the output does not depend on the split (or on the hash seed that spreads ClOrdIDs).
ORDER_SHARDS = 64                   # open orders: _orders[oid >> 6 & _OMASK][oid]
_OMASK = ORDER_SHARDS - 1
LIVE_SHARDS = 64                    # a session's live ClOrdIDs: live[hash(clid) & _LMASK]
_LMASK = LIVE_SHARDS - 1


def _order_id(o: Order) -> int:
    return o.order_id


class _Session:
    """cl_ord_id tables of one session: every id ever used, and the current ids of live orders."""

    __slots__ = ("used", "shards", "live")

    def __init__(self) -> None:
        self.used = UsedIds()               # every id ever used (membership only)
        self.shards = self.used.shards      # the hot path's direct handle on its tables
        # current cl_ord_id -> open order, in LIVE_SHARDS dicts; an order's ``ids`` is the
        # dict that holds its current id
        self.live: list[dict[str, Order]] = [{} for _ in range(LIVE_SHARDS)]

    def live_order(self, clid: str) -> "Order | None":
        return self.live[hash(clid) & _LMASK].get(clid)

    def live_ids(self) -> list[tuple[str, "Order"]]:
        """Every (current id, open order), sorted by id."""
        return sorted(item for shard in self.live for item in shard.items())


class Engine:
    """The deterministic matching state machine (see the module docstring).

    Public state: ``next_cmd_seq``, ``next_event_seq``, ``last_req``. Queries (read only, for
    tests, snapshots and monitoring): ``book_levels``, ``best``, ``open_orders``, ``order``,
    ``open_order_count``, ``level_count``, ``exposure``, ``credit_limit``, ``halted``,
    ``state_digest``. Snapshots (engine.snapshot): ``export_state``, ``import_state``.
    """

    def __init__(self, refdata: MarketRefData) -> None:
        self.refdata = refdata
        self.next_cmd_seq = 1
        self.next_event_seq = 1
        self.last_req: dict[str, int] = {}
        self._books: dict[str, Book] = {i.symbol: Book(i) for i in refdata.instruments}
        self._firms: dict[str, FirmRisk] = {f.id: FirmRisk(f) for f in refdata.firms}
        # open orders by order id, in ORDER_SHARDS dicts: _orders[oid >> 6 & _OMASK][oid]
        self._orders: list[dict[int, Order]] = [{} for _ in range(ORDER_SHARDS)]
        self._sessions: dict[str, _Session] = {}     # session -> its cl_ord_id tables
        self._next_oid = 1
        self._next_tid = 1
        self._market_halted = False
        self._dispatch = {
            NewOrder: self._new_order,
            CancelOrder: self._cancel,
            ReplaceOrder: self._replace,
            MassCancel: self._mass_cancel,
            SetHalt: self._set_halt,
            SetCreditLimit: self._set_credit_limit,
            RaiseAlert: self._raise_alert,
        }

    # ------------------------------------------------------------------ entry point
    def apply(self, sc: SequencedCommand) -> list[Event]:
        cs = sc.seq
        if cs != self.next_cmd_seq:
            raise ValueError(f"command seq {cs} applied, {self.next_cmd_seq} expected")
        cmd = sc.cmd
        try:
            handler = self._dispatch[cmd.__class__]
        except KeyError:
            handler = self._unsupported
        events = handler(cmd, cs, sc.ts, self.next_event_seq)
        self.next_cmd_seq = cs + 1
        self.next_event_seq += len(events)
        req = sc.req_id
        if req:
            last = self.last_req
            origin = sc.origin
            if req > last.get(origin, 0):
                last[origin] = req
        return events

    def _unsupported(self, cmd, cs: int, ts: int, seq: int) -> list[Event]:
        return self._alert(cs, ts, seq, f"unsupported command {cmd.__class__.__name__}")

    # ------------------------------------------------------------------ NewOrder
    def _new_order(self, cmd: NewOrder, cs: int, ts: int, seq: int) -> list[Event]:
        session = cmd.session
        clid = cmd.cl_ord_id
        try:
            sess = self._sessions[session]
        except KeyError:
            sess = self._sessions[session] = _Session()
        if clid:
            h = hash(clid)                  # for the used-id and the live-id tables
            shard = sess.shards[h & 1023]   # UsedIds.add_new inlined (1023: SHARD_MASK)
            if clid in shard:
                return self._order_reject(cmd, cs, ts, seq, R_DUP)
            shard.add(clid)
        sym = cmd.instrument
        book = self._books.get(sym)
        if book is None:
            return self._order_reject(cmd, cs, ts, seq, R.UNKNOWN_INSTRUMENT)
        firm = cmd.firm
        fr = self._firms.get(firm)
        if fr is None:
            return self._order_reject(cmd, cs, ts, seq, R.UNKNOWN_FIRM)
        account = cmd.account
        if fr.accounts and account not in fr.accounts:
            return self._order_reject(cmd, cs, ts, seq, R.UNKNOWN_ACCOUNT)
        side = cmd.side
        if side != BUY and side != SELL:
            return self._order_reject(cmd, cs, ts, seq, R.INVALID_SIDE)
        ot = cmd.ord_type
        if ot != LIMIT and ot != MARKET:
            return self._order_reject(cmd, cs, ts, seq, R.INVALID_ORDER_TYPE)
        tif = cmd.tif
        if tif != DAY and tif != IOC and tif != FOK:
            return self._order_reject(cmd, cs, ts, seq, R.INVALID_TIME_IN_FORCE)
        qty = cmd.qty
        if qty <= 0:
            return self._order_reject(cmd, cs, ts, seq, R.QTY_NOT_POSITIVE)
        if qty % book.lot:
            return self._order_reject(cmd, cs, ts, seq, R.QTY_NOT_LOT_MULTIPLE)
        if ot == LIMIT:
            price = cmd.price
            if price <= 0:
                return self._order_reject(cmd, cs, ts, seq, R.PRICE_NOT_POSITIVE)
            if price % book.tick:
                return self._order_reject(cmd, cs, ts, seq, R.PRICE_OFF_TICK)
            if price < book.band_low or price > book.band_high:
                return self._order_reject(cmd, cs, ts, seq, R.PRICE_OUTSIDE_BAND)
            xp = lim = price
        else:
            price = 0
            xp = book.band_high
            lim = xp if side == BUY else book.band_low
        if self._market_halted:
            return self._order_reject(cmd, cs, ts, seq, R.MARKET_HALTED)
        if book.halted:
            return self._order_reject(cmd, cs, ts, seq, R.INSTRUMENT_HALTED)
        if fr.halted:
            return self._order_reject(cmd, cs, ts, seq, R.FIRM_HALTED)
        notional = xp * qty
        if fr.open + fr.executed + notional > fr.limit:
            return self._order_reject(cmd, cs, ts, seq, R.CREDIT_LIMIT)

        # accepted
        oid = self._next_oid
        self._next_oid = oid + 1
        o = Order(oid, session, firm, account, clid, sym, side, ot, tif, price, qty, book, fr)
        fr.open += notional
        ev = [OrderAccepted(seq, cs, ts, oid, session, firm, account, clid, sym, side, ot, tif,
                            price, qty)]
        seq += 1
        if side == BUY:
            opp = book.ask_keys
            thr = -lim
        else:
            opp = book.bid_keys
            thr = lim
        if tif == FOK and not self._fok_fillable(book, opp, thr, qty, fr):
            fr.open -= notional
            o.leaves = 0
            ev.append(OrderCancelled(seq, cs, ts, oid, session, "", sym, qty, C_FOK))
            return ev
        touched = None
        stop = False
        if opp and opp[-1] >= thr:
            touched = {}
            seq, stop = self._match(o, book, opp, thr, xp, fr, cs, ts, seq, ev, touched)
        leaves = o.leaves
        if leaves:
            if stop or ot == MARKET or tif != DAY:
                if stop:
                    reason = C_STP
                elif ot == MARKET:
                    reason = C_NOLIQ
                elif tif == IOC:
                    reason = C_IOC
                else:
                    reason = C_FOK
                fr.open -= xp * leaves
                o.leaves = 0
                ev.append(OrderCancelled(seq, cs, ts, oid, session, "", sym, leaves, reason))
                seq += 1
            else:
                # rest at the back of its level
                key = o.key
                levels = book.levels
                lvl = levels.get(key)
                if lvl is None:
                    lvl = levels[key] = Level(key)
                    keys = book.bid_keys if key > 0 else book.ask_keys
                    if not keys or key > keys[-1]:
                        keys.append(key)
                    else:
                        _insort(keys, key)
                lvl.orders[oid] = o
                lvl.qty += leaves
                o.level = lvl
                self._orders[oid >> 6 & _OMASK][oid] = o
                if clid:
                    live = sess.live[h & _LMASK]
                    live[clid] = o
                    o.ids = live
                if touched is None:
                    ev.append(BookUpdate(seq, cs, ts, sym,
                                         ((side, price, lvl.qty, len(lvl.orders)),)))
                    return ev
                touched[key] = None
        if touched:
            ev.append(self._book_update(book, touched, cs, ts, seq))
        return ev

    def _order_reject(self, cmd: NewOrder, cs: int, ts: int, seq: int, reason: int) -> list:
        reason = int(reason)
        return [OrderRejected(seq, cs, ts, cmd.session, cmd.firm, cmd.cl_ord_id, cmd.instrument,
                              cmd.side, cmd.price, cmd.qty, reason, _RTEXT[reason])]

    # ------------------------------------------------------------------ matching
    def _fok_fillable(self, book: Book, opp: list, thr: int, qty: int, fr: FirmRisk) -> bool:
        """Whether ``qty`` can be filled now against ``opp`` down to key ``thr`` (read only)."""
        levels = book.levels
        stp = fr.stp
        avail = 0
        for i in range(len(opp) - 1, -1, -1):
            key = opp[i]
            if key < thr:
                break
            lvl = levels[key]
            if stp == STP_NONE:
                avail += lvl.qty
            else:
                for r in lvl.orders.values():
                    if r.risk is fr:
                        if stp == STP_RESTING:
                            continue
                        return avail >= qty
                    avail += r.leaves
                    if avail >= qty:
                        return True
            if avail >= qty:
                return True
        return avail >= qty

    def _match(self, o: Order, book: Book, opp: list, thr: int, xp: int, fr: FirmRisk,
               cs: int, ts: int, seq: int, ev: list, touched: dict) -> tuple[int, bool]:
        """Match ``o`` (not in the book) against ``opp`` levels with key >= ``thr``.

        ``xp`` is o's exposure price. Appends Trade / self-trade OrderCancelled events, records
        touched level keys, updates o.leaves. Returns (next event seq, stopped by STP).
        """
        levels = book.levels
        orders = self._orders
        sym = book.symbol
        stp = fr.stp
        side = o.side
        oid = o.order_id
        leaves = o.leaves
        tid = self._next_tid
        stop = False
        while leaves and opp:
            key = opp[-1]
            if key < thr:
                break
            lvl = levels[key]
            lo = lvl.orders
            px = lvl.price
            while lo:
                r = next(iter(lo.values()))
                rid = r.order_id
                rl = r.leaves
                rr = r.risk
                if stp and rr is fr:
                    if stp == STP_INCOMING:
                        stop = True
                        break
                    touched[key] = None
                    del lo[rid]
                    del orders[rid >> 6 & _OMASK][rid]
                    lvl.qty -= rl
                    fr.open -= px * rl
                    r.leaves = 0
                    r.level = None
                    if r.ids is not None:
                        del r.ids[r.cl_ord_id]
                        r.ids = None
                    ev.append(OrderCancelled(seq, cs, ts, rid, r.session, "", sym, rl, C_STP))
                    seq += 1
                    if stp == STP_BOTH:
                        stop = True
                        break
                    continue
                touched[key] = None
                q = leaves if leaves < rl else rl
                leaves -= q
                rl -= q
                r.leaves = rl
                lvl.qty -= q
                n = px * q
                rr.open -= n
                rr.executed += n
                fr.open -= xp * q
                fr.executed += n
                if side == BUY:
                    ev.append(Trade(seq, cs, ts, tid, sym, px, q, BUY, oid, rid, leaves, rl))
                else:
                    ev.append(Trade(seq, cs, ts, tid, sym, px, q, SELL, rid, oid, rl, leaves))
                seq += 1
                tid += 1
                if not rl:
                    del lo[rid]
                    del orders[rid >> 6 & _OMASK][rid]
                    r.level = None
                    if r.ids is not None:
                        del r.ids[r.cl_ord_id]
                        r.ids = None
                if not leaves:
                    break
            if not lo:
                del levels[key]
                opp.pop()
            if stop:
                break
        o.leaves = leaves
        self._next_tid = tid
        return seq, stop

    def _book_update(self, book: Book, touched: dict, cs: int, ts: int, seq: int) -> BookUpdate:
        levels = book.levels
        return BookUpdate(seq, cs, ts, book.symbol,
                          tuple([_level_tuple(levels, key) for key in touched]))

    # ------------------------------------------------------------------ CancelOrder
    def _cancel_reject(self, cmd, cs: int, ts: int, seq: int, reason: int, order_id: int,
                       is_replace: bool) -> list:
        reason = int(reason)
        return [CancelRejected(seq, cs, ts, cmd.session, cmd.cl_ord_id, cmd.orig_cl_ord_id,
                               order_id, is_replace, reason, _RTEXT[reason])]

    def _cancel(self, cmd: CancelOrder, cs: int, ts: int, seq: int) -> list[Event]:
        clid = cmd.cl_ord_id
        try:
            sess = self._sessions[cmd.session]
        except KeyError:
            sess = self._sessions[cmd.session] = _Session()
        if clid:
            shard = sess.shards[hash(clid) & 1023]
            if clid in shard:
                return self._cancel_reject(cmd, cs, ts, seq, R_DUP, 0, False)
            shard.add(clid)
        oid = cmd.order_id
        if oid:
            o = self._orders[oid >> 6 & _OMASK].get(oid)
        else:
            o = sess.live[hash(cmd.orig_cl_ord_id) & _LMASK].get(cmd.orig_cl_ord_id)
        if o is None:
            return self._cancel_reject(cmd, cs, ts, seq, R.UNKNOWN_ORDER, 0, False)
        if o.firm != cmd.firm:
            return self._cancel_reject(cmd, cs, ts, seq, R.NOT_OWNER, 0, False)
        oid = o.order_id
        leaves = o.leaves
        lvl = o.level
        lo = lvl.orders
        del lo[oid]
        lvl.qty -= leaves
        o.level = None
        book = o.book
        if not lo:
            key = lvl.key
            del book.levels[key]
            keys = book.bid_keys if key > 0 else book.ask_keys
            if keys[-1] == key:
                keys.pop()
            else:
                del keys[_bisect_left(keys, key)]
        del self._orders[oid >> 6 & _OMASK][oid]
        o.risk.open -= o.price * leaves
        o.leaves = 0
        if o.ids is not None:
            del o.ids[o.cl_ord_id]
            o.ids = None
        sym = o.instrument
        # The report goes to the requesting session (another session of the firm may cancel).
        return [OrderCancelled(seq, cs, ts, oid, cmd.session, clid, sym, leaves, C_REQUESTED),
                BookUpdate(seq + 1, cs, ts, sym, ((lvl.side, lvl.price, lvl.qty, len(lo)),))]

    # ------------------------------------------------------------------ ReplaceOrder
    def _replace(self, cmd: ReplaceOrder, cs: int, ts: int, seq: int) -> list[Event]:
        clid = cmd.cl_ord_id
        try:
            sess = self._sessions[cmd.session]
        except KeyError:
            sess = self._sessions[cmd.session] = _Session()
        if clid:
            h = hash(clid)                  # for the used-id and the live-id tables
            shard = sess.shards[h & 1023]
            if clid in shard:
                return self._cancel_reject(cmd, cs, ts, seq, R_DUP, 0, True)
            shard.add(clid)
        oid = cmd.order_id
        if oid:
            o = self._orders[oid >> 6 & _OMASK].get(oid)
        else:
            o = sess.live[hash(cmd.orig_cl_ord_id) & _LMASK].get(cmd.orig_cl_ord_id)
        if o is None:
            return self._cancel_reject(cmd, cs, ts, seq, R.UNKNOWN_ORDER, 0, True)
        if o.firm != cmd.firm:
            return self._cancel_reject(cmd, cs, ts, seq, R.NOT_OWNER, 0, True)
        oid = o.order_id
        book = o.book
        fr = o.risk
        price = cmd.price
        qty = cmd.qty
        old_qty = o.qty
        old_leaves = o.leaves
        old_price = o.price
        leaves = qty - old_qty + old_leaves
        # one test for the common case; _replace_reason finds the first failure in order
        if (self._market_halted or book.halted or fr.halted or price % book.tick
                or price < book.min_price or price > book.band_high or qty % book.lot
                or leaves <= 0 or (price == old_price and qty == old_qty)):
            return self._cancel_reject(cmd, cs, ts, seq, self._replace_reason(cmd, o), oid,
                                       True)
        delta = price * leaves - old_price * old_leaves
        if delta > 0 and fr.open + fr.executed + delta > fr.limit:
            return self._cancel_reject(cmd, cs, ts, seq, R.CREDIT_LIMIT, oid, True)

        # accepted: the new id becomes the order's current id, the old one stays used
        fr.open += delta
        old_clid = o.cl_ord_id
        if o.ids is not None:
            del o.ids[old_clid]
        if clid:
            live = sess.live[h & _LMASK]
            live[clid] = o
            o.ids = live
        else:
            o.ids = None
        o.cl_ord_id = clid
        o.session = cmd.session         # a replace from another session of the firm moves it
        o.qty = qty
        sym = o.instrument
        side = o.side
        lvl = o.level
        lo = lvl.orders
        if price == old_price:
            o.leaves = leaves
            lvl.qty += leaves - old_leaves
            if leaves > old_leaves:
                del lo[oid]
                lo[oid] = o
                kept = False
            else:
                kept = True
            return [OrderReplaced(seq, cs, ts, oid, o.session, clid, old_clid, sym, price, qty,
                                  leaves, kept),
                    BookUpdate(seq + 1, cs, ts, sym, ((side, price, lvl.qty, len(lo)),))]

        # price change: leave the old level, then match and/or rest at the back of the new one
        levels = book.levels
        old_key = lvl.key
        del lo[oid]
        lvl.qty -= old_leaves
        if side == BUY:
            keys = book.bid_keys
            opp = book.ask_keys
            key = price
        else:
            keys = book.ask_keys
            opp = book.bid_keys
            key = -price
        if lo:
            spare = None
            old_state = (side, old_price, lvl.qty, len(lo))
        else:
            # the old level is gone: its object is reused below if a new level is needed
            del levels[old_key]
            if keys[-1] == old_key:
                keys.pop()
            else:
                del keys[_bisect_left(keys, old_key)]
            spare = lvl
            old_state = (side, old_price, 0, 0)
        o.price = price
        o.leaves = leaves
        o.key = key
        if opp and opp[-1] >= -key:
            return self._replace_cross(o, book, opp, key, old_key, fr, old_clid, cs, ts, seq)
        nl = levels.get(key)
        if nl is None:
            if spare is None:
                nl = levels[key] = Level(key)
            else:
                nl = levels[key] = spare
                spare.key = key
                spare.price = price
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                _insort(keys, key)
        nlo = nl.orders
        nlo[oid] = o
        nl.qty += leaves
        o.level = nl
        return [OrderReplaced(seq, cs, ts, oid, o.session, clid, old_clid, sym, price, qty,
                              leaves, False),
                BookUpdate(seq + 1, cs, ts, sym, (old_state, (side, price, nl.qty, len(nlo))))]

    def _replace_cross(self, o: Order, book: Book, opp: list, key: int, old_key: int,
                       fr: FirmRisk, old_clid: str, cs: int, ts: int, seq: int) -> list[Event]:
        """A replaced order (already off its old level) whose new price crosses: match it."""
        oid = o.order_id
        clid = o.cl_ord_id
        sym = o.instrument
        price = o.price
        ev = [OrderReplaced(seq, cs, ts, oid, o.session, clid, old_clid, sym, price, o.qty,
                            o.leaves, False)]
        o.level = None
        touched = {old_key: None}
        seq, stop = self._match(o, book, opp, -key, price, fr, cs, ts, seq + 1, ev, touched)
        leaves = o.leaves
        if leaves and not stop:
            book.add(o)
            touched[key] = None
        else:
            if leaves:
                fr.open -= price * leaves
                o.leaves = 0
                ev.append(OrderCancelled(seq, cs, ts, oid, o.session, "", sym, leaves, C_STP))
                seq += 1
            del self._orders[oid >> 6 & _OMASK][oid]
            if o.ids is not None:
                del o.ids[clid]
                o.ids = None
        ev.append(self._book_update(book, touched, cs, ts, seq))
        return ev

    def _replace_reason(self, cmd: ReplaceOrder, o: Order) -> int:
        """The first failing check of a replace of ``o`` (in the documented order), else 0."""
        book = o.book
        price = cmd.price
        qty = cmd.qty
        if self._market_halted:
            return R.MARKET_HALTED
        if book.halted:
            return R.INSTRUMENT_HALTED
        if o.risk.halted:
            return R.FIRM_HALTED
        if price <= 0:
            return R.PRICE_NOT_POSITIVE
        if price % book.tick:
            return R.PRICE_OFF_TICK
        if price < book.band_low or price > book.band_high:
            return R.PRICE_OUTSIDE_BAND
        if qty <= 0:
            return R.QTY_NOT_POSITIVE
        if qty % book.lot:
            return R.QTY_NOT_LOT_MULTIPLE
        if qty - o.qty + o.leaves <= 0:
            return R.QTY_BELOW_EXECUTED
        if price == o.price and qty == o.qty:
            return R.NOTHING_TO_CHANGE
        raise AssertionError("replace check")  # pragma: no cover - fast check out of sync

    # ------------------------------------------------------------------ cold paths
    def _cancel_open(self, o: Order, reason: int, clid: str, cs: int, ts: int, seq: int,
                     touched_books: dict) -> OrderCancelled:
        """Take a resting order off its book (bookkeeping for mass cancel and halts)."""
        book = o.book
        touched = touched_books.get(book.symbol)
        if touched is None:
            touched = touched_books[book.symbol] = {}
        touched[o.key] = None
        leaves = o.leaves
        book.remove(o)
        oid = o.order_id
        del self._orders[oid >> 6 & _OMASK][oid]
        o.risk.open -= o.price * leaves
        o.leaves = 0
        if o.ids is not None:
            del o.ids[o.cl_ord_id]
            o.ids = None
        return OrderCancelled(seq, cs, ts, o.order_id, o.session, clid, o.instrument, leaves,
                              reason)

    def _book_updates(self, touched_books: dict, cs: int, ts: int, seq: int, ev: list) -> int:
        books = self._books
        for sym, touched in touched_books.items():
            ev.append(self._book_update(books[sym], touched, cs, ts, seq))
            seq += 1
        return seq

    def _mass_cancel(self, cmd: MassCancel, cs: int, ts: int, seq: int) -> list[Event]:
        firm = cmd.firm
        tsess = cmd.target_session
        sym = cmd.instrument
        reason = 0
        if not (firm or tsess or sym):
            reason = R.INVALID_COMMAND
        elif firm and firm not in self._firms:
            reason = R.UNKNOWN_FIRM
        elif sym and sym not in self._books:
            reason = R.UNKNOWN_INSTRUMENT
        ev: list = []
        n = 0
        touched_books: dict = {}
        if not reason:
            victims = [o for shard in self._orders for o in shard.values()
                       if (not firm or o.firm == firm) and (not tsess or o.session == tsess)
                       and (not sym or o.instrument == sym)]
            victims.sort(key=_order_id)
            clid = cmd.cl_ord_id
            for o in victims:
                ev.append(self._cancel_open(o, C_MASS, clid, cs, ts, seq, touched_books))
                seq += 1
            n = len(victims)
        reason = int(reason)
        ev.append(MassCancelReport(seq, cs, ts, cmd.session, cmd.cl_ord_id, firm, tsess, sym, n,
                                   reason, _RTEXT[reason] if reason else ""))
        self._book_updates(touched_books, cs, ts, seq + 1, ev)
        return ev

    def _alert(self, cs: int, ts: int, seq: int, text: str) -> list[Event]:
        return [Alert(seq, cs, ts, "engine", "warning", text)]

    def _set_halt(self, cmd: SetHalt, cs: int, ts: int, seq: int) -> list[Event]:
        scope = cmd.scope
        target = cmd.target
        halted = bool(cmd.halted)
        ev: list = []
        touched_books: dict = {}
        n = 0
        if scope == HaltScope.MARKET:
            self._market_halted = halted
        elif scope == HaltScope.INSTRUMENT:
            book = self._books.get(target)
            if book is None:
                return self._alert(cs, ts, seq, f"SetHalt: unknown instrument {target!r}")
            book.halted = halted
        elif scope == HaltScope.FIRM:
            fr = self._firms.get(target)
            if fr is None:
                return self._alert(cs, ts, seq, f"SetHalt: unknown firm {target!r}")
            fr.halted = halted
            if halted:
                victims = [o for shard in self._orders for o in shard.values()
                           if o.firm == target]
                victims.sort(key=_order_id)
                for o in victims:
                    ev.append(self._cancel_open(o, C_FIRM, "", cs, ts, seq, touched_books))
                    seq += 1
                n = len(victims)
        else:
            return self._alert(cs, ts, seq, f"SetHalt: invalid scope {scope!r}")
        ev.append(TradingStatus(seq, cs, ts, int(scope), target, halted, cmd.text, n))
        self._book_updates(touched_books, cs, ts, seq + 1, ev)
        return ev

    def _set_credit_limit(self, cmd: SetCreditLimit, cs: int, ts: int, seq: int) -> list[Event]:
        fr = self._firms.get(cmd.firm)
        if fr is None:
            return self._alert(cs, ts, seq, f"SetCreditLimit: unknown firm {cmd.firm!r}")
        fr.limit = cmd.limit
        return [CreditLimitChanged(seq, cs, ts, cmd.firm, cmd.limit)]

    def _raise_alert(self, cmd: RaiseAlert, cs: int, ts: int, seq: int) -> list[Event]:
        return [Alert(seq, cs, ts, cmd.source, cmd.severity, cmd.text)]

    # ------------------------------------------------------------------ queries
    def book_levels(self, symbol: str, side: int) -> list[tuple[int, int, int]]:
        """(price, qty, order count) per level of ``side``, best first. KeyError if unknown."""
        return self._books[symbol].depth(side)

    def best(self, symbol: str, side: int) -> int:
        """Best price of a side, 0 if empty."""
        return self._books[symbol].best(side)

    def open_orders(self) -> list[OpenOrder]:
        """Every open order, by order_id."""
        return [OpenOrder(o.order_id, o.session, o.firm, o.account, o.cl_ord_id, o.instrument,
                          o.side, o.ord_type, o.tif, o.price, o.qty, o.qty - o.leaves, o.leaves)
                for o in self._open_by_id()]

    def _open_by_id(self) -> list[Order]:
        """Every open order, by order id."""
        out = [o for shard in self._orders for o in shard.values()]
        out.sort(key=_order_id)
        return out

    def order(self, order_id: int) -> OpenOrder | None:
        """Snapshot of one open order, None if it is not open (unknown, filled or cancelled)."""
        o = self._orders[order_id >> 6 & _OMASK].get(order_id)
        if o is None:
            return None
        return OpenOrder(o.order_id, o.session, o.firm, o.account, o.cl_ord_id, o.instrument,
                         o.side, o.ord_type, o.tif, o.price, o.qty, o.qty - o.leaves, o.leaves)

    def open_order_count(self) -> int:
        return sum(map(len, self._orders))

    def level_count(self) -> int:
        """Number of price levels over all books and both sides."""
        return sum(len(b.levels) for b in self._books.values())

    def exposure(self, firm: str) -> tuple[int, int]:
        """(open, executed) gross notional of a firm, price units. KeyError if unknown."""
        fr = self._firms[firm]
        return (fr.open, fr.executed)

    def credit_limit(self, firm: str) -> int:
        return self._firms[firm].limit

    def halted(self, scope: int, target: str = "") -> bool:
        """Current halt flag of the market, a firm or an instrument."""
        if scope == HaltScope.MARKET:
            return self._market_halted
        if scope == HaltScope.FIRM:
            return self._firms[target].halted
        return self._books[target].halted

    def state_digest(self) -> str:
        """SHA-256 over a canonical msgpack encoding of the whole engine state."""
        return self._state_digest(None)

    def _state_digest(self, used: dict[str, list[str]] | None) -> str:
        """``state_digest``; ``used`` may give each session's used ids already sorted.

        Tuples encode as the same msgpack arrays as lists: the digest is that of the state
        written as nested lists, built here without intermediate objects."""
        books = []
        for sym, book in self._books.items():
            levels = book.levels
            books.append((sym, book.halted,
                          [(lv.price, lv.qty, list(lv.orders))
                           for lv in map(levels.__getitem__, reversed(book.bid_keys))],
                          [(lv.price, lv.qty, list(lv.orders))
                           for lv in map(levels.__getitem__, reversed(book.ask_keys))]))
        orders = [(o.order_id, o.session, o.firm, o.account, o.cl_ord_id, o.instrument, o.side,
                   o.ord_type, o.tif, o.price, o.qty, o.qty - o.leaves, o.leaves)
                  for o in self._open_by_id()]
        firms = [fr.snapshot() for fr in self._firms.values()]
        ids = []
        for name in sorted(self._sessions):
            sess = self._sessions[name]
            ids.append((name, used[name] if used is not None else sess.used.sorted_ids(),
                        [(c, o.order_id) for c, o in sess.live_ids()]))
        state = (self.next_cmd_seq, self.next_event_seq, self._next_oid, self._next_tid,
                 self._market_halted, books, orders, firms,
                 sorted(self.last_req.items()), ids)
        return hashlib.sha256(msgspec.msgpack.encode(state)).hexdigest()

    # ------------------------------------------------------------------ snapshots
    def export_state(self) -> tuple[EngineState, str]:
        """The whole mutable state (``engine.snapshot.EngineState``) and its ``state_digest``.

        Read only. Sequences keep the engine's own order (see engine.snapshot); the used-id
        sets are sorted once, for the state and the digest alike."""
        used = {name: sess.used.sorted_ids() for name, sess in self._sessions.items()}
        books = []
        for sym, book in self._books.items():
            bids, asks = book.export_levels()
            books.append(BookState(sym, book.halted, [LevelState(p, ids) for p, ids in bids],
                                   [LevelState(p, ids) for p, ids in asks]))
        orders = [OrderState(o.order_id, o.session, o.firm, o.account, o.cl_ord_id,
                             o.instrument, o.side, o.ord_type, o.tif, o.price, o.qty, o.leaves)
                  for o in self._open_by_id()]
        firms = [FirmState(*fr.snapshot()) for fr in self._firms.values()]
        sessions = [SessionState(name, used[name],
                                 [(c, o.order_id) for c, o in sess.live_ids()])
                    for name, sess in self._sessions.items()]
        state = EngineState(self.next_cmd_seq, self.next_event_seq, self._next_oid,
                            self._next_tid, self._market_halted, list(self.last_req.items()),
                            books, firms, orders, sessions)
        return state, self._state_digest(used)

    def import_state(self, st: EngineState) -> None:
        """Load ``export_state`` output into this fresh engine (same reference data).

        Checks what it cannot rebuild safely and raises ValueError (a KeyError for an unknown
        name) on any inconsistency; the caller then compares ``state_digest()`` with the
        digest recorded next to the state, and discards this engine on any failure."""
        if self.next_cmd_seq != 1 or any(self._orders) or self._sessions or self.last_req:
            raise ValueError("import_state needs a fresh engine")
        books = self._books
        firms = self._firms
        if [b.symbol for b in st.books] != list(books):
            raise ValueError("the state's instruments differ from the reference data")
        if [f.id for f in st.firms] != list(firms):
            raise ValueError("the state's firms differ from the reference data")
        if st.next_cmd_seq < 1 or st.next_event_seq < 1 or st.next_order_id < 1 \
                or st.next_trade_id < 1:
            raise ValueError("sequence numbers and ids start at 1")
        orders: dict[int, Order] = {}
        prev = 0
        for s in st.orders:
            oid = s.order_id
            if not prev < oid < st.next_order_id:
                raise ValueError(f"order {oid}: out of order or beyond the next order id")
            prev = oid
            if not 0 < s.leaves <= s.qty or s.side not in (BUY, SELL):
                raise ValueError(f"order {oid}: bad side or quantities")
            o = Order(oid, s.session, s.firm, s.account, s.cl_ord_id, s.instrument, s.side,
                      s.ord_type, s.tif, s.price, s.qty, books[s.instrument], firms[s.firm])
            o.leaves = s.leaves
            orders[oid] = o
        placed = 0
        for bs, book in zip(st.books, books.values()):
            placed += book.restore(bs.halted, [(lv.price, lv.order_ids) for lv in bs.bids],
                                   [(lv.price, lv.order_ids) for lv in bs.asks], orders)
        if placed != len(orders):
            raise ValueError(f"{len(orders)} open orders, {placed} of them on a book")
        for fs, fr in zip(st.firms, firms.values()):
            fr.restore(fs.limit, fs.open, fs.executed, fs.halted)
        sessions = self._sessions
        live_ids = 0
        for ss in st.sessions:
            if ss.name in sessions:
                raise ValueError(f"session {ss.name!r} twice")
            sess = sessions[ss.name] = _Session()
            sess.used.update(ss.used)
            for clid, oid in ss.live:
                o = orders.get(oid)
                if (o is None or not clid or o.cl_ord_id != clid or o.session != ss.name
                        or o.ids is not None or clid not in sess.used):
                    raise ValueError(f"session {ss.name!r}: live id {clid!r} does not match "
                                     f"order {oid}")
                live = sess.live[hash(clid) & _LMASK]
                if clid in live:
                    raise ValueError(f"session {ss.name!r}: live id {clid!r} twice")
                live[clid] = o
                o.ids = live
                live_ids += 1
        if live_ids != sum(1 for o in orders.values() if o.cl_ord_id):
            raise ValueError("an open order's ClOrdID is not live in its session")
        for oid, o in orders.items():
            self._orders[oid >> 6 & _OMASK][oid] = o
        self._next_oid = st.next_order_id
        self._next_tid = st.next_trade_id
        self._market_halted = bool(st.market_halted)
        self.last_req = dict(st.last_req)
        self.next_cmd_seq = st.next_cmd_seq
        self.next_event_seq = st.next_event_seq
