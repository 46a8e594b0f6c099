"""The gateway's replica of the engine's state, built only from the replication stream.

Contract:
- ``Replica.apply(event)`` must be called with every engine event in sequence order (seq 1, 2,
  ...); it raises ``ReplicaGap`` on a gap or duplicate, which means the feed is broken.
  ``apply_many(events, on_report)`` is the same for a run of events, each report handed to
  ``on_report(report, event_seq)`` as it is made (the gateway's per-event path, in one call).
- From the events alone it keeps every order (open or done: status, cumulative and leaves
  quantity, average price numerator, current and previous client ids), the aggregated books and
  the halts, so the gateway answers order-status, mass-status, market-data and security-list
  requests without asking the engine.
- For each event it returns ``Report`` values: what to tell which session (an execution report,
  a cancel reject, a mass cancel report). Turning them into FIX messages is ``fix_gateway.reports``'
  job. Pure: no I/O, no clock.
- No latency spikes as the day's orders pile up: the maps with an entry per order are split
  into 64 dicts by key (``SHARDS``). A dict grows by copying itself, and one copy of a
  100,000-entry dict stops the gateway for about 3 ms (a million entries: about 35 ms); split,
  each copy is 64 times smaller and they happen at different moments. A session's ClOrdIDs go
  into generations instead: the newest dict takes every insertion until it holds
  ``CLID_GENERATION`` ids, then a new one starts (a lookup reads the newest first, so a reused
  id finds its latest order). An insertion then touches one small, recently used dict rather
  than one of 64 picked by the id's hash, which costs a cache miss per order.
"""
from __future__ import annotations

from typing import Optional

import msgspec

from engine.commands import HaltScope, OrdType, Side, TimeInForce
from engine.events import (
    BookUpdate, CancelRejected, MassCancelReport, OrderAccepted, OrderCancelled, OrderRejected,
    OrderReplaced, Trade, TradingStatus,
)
from engine.reasons import CANCEL_TEXT, CancelReason, RejectReason
from engine.refdata import MarketRefData

# FIX 4.4 OrdStatus (39) / ExecType (150) values
NEW, PARTIAL, FILLED, CANCELED, REPLACED, REJECTED, EXPIRED, TRADE, STATUS = (
    "0", "1", "2", "4", "5", "8", "C", "F", "I")

#: Cancels that end an order because it could not (fully) execute immediately: reported as
#: Expired; every other cancel is reported as Canceled.
_EXPIRING = {CancelReason.IOC_REMAINDER, CancelReason.FOK_UNFILLED, CancelReason.NO_LIQUIDITY}


class ReplicaGap(Exception):
    pass


#: Tables keyed by order id put runs of 64 consecutive ids in one dict and spread the runs over
#: the dicts (``table[oid >> 6 & mask]``): the newest orders, which get most of the traffic,
#: stay together in a few tables, as in one dict, while each dict holds a 64th of the whole.
SHARDS = 64              # the map of every order, by order id
_MASK = SHARDS - 1
OWNER_SHARDS = 64        # the per-session maps of open orders
_OMASK = OWNER_SHARDS - 1
CLID_GENERATION = 16_384  # ClOrdIDs per dict of a session's ClOrdID index


def _owner_shards(table: dict, owner: str) -> list[dict]:
    shards = table.get(owner)
    if shards is None:
        shards = table[owner] = [{} for _ in range(OWNER_SHARDS)]
    return shards


def _order_id(o: "OrderView") -> int:
    return o.order_id


class OrderView(msgspec.Struct, gc=False):
    """One order as the replica knows it (mutable; built in C by msgspec from positional
    fields, which the per-order path needs; ``gc=False``: it holds only scalars, so it can
    never be part of a reference cycle)."""

    order_id: int
    session: str
    firm: str
    account: str
    cl_ord_id: str
    orig_cl_ord_id: str
    instrument: str
    side: int
    ord_type: int
    tif: int
    price: int
    qty: int
    cum_qty: int
    leaves: int
    filled_notional: int        # sum of price * qty over fills, price units
    status: str
    accepted_ts: int

    @classmethod
    def accepted(cls, ev: OrderAccepted) -> "OrderView":
        return cls(ev.order_id, ev.session, ev.firm, ev.account, ev.cl_ord_id, "",
                   ev.instrument, ev.side, ev.ord_type, ev.tif, ev.price, ev.qty, 0, ev.qty, 0,
                   NEW, ev.ts)

    @property
    def is_open(self) -> bool:
        return self.leaves > 0 and self.status in (NEW, PARTIAL)


class ExecReport(msgspec.Struct, frozen=True, gc=False):
    """An execution report for the order's session (and the firm's drop copies); one per
    order at least, holding only scalars (``gc=False``: never part of a cycle)."""

    exec_id: str
    exec_type: str
    ord_status: str
    session: str
    firm: str
    account: str
    order_id: int            # 0 for a rejected order
    cl_ord_id: str
    orig_cl_ord_id: str
    instrument: str
    side: int
    ord_type: int
    tif: int
    price: int
    qty: int
    cum_qty: int
    leaves: int
    filled_notional: int
    last_px: int = 0
    last_qty: int = 0
    trade_id: int = 0
    reject_reason: int = 0   # engine RejectReason for rejects
    text: str = ""
    ts: int = 0


class CancelRejectReport(msgspec.Struct, frozen=True):
    session: str
    firm: str
    cl_ord_id: str
    orig_cl_ord_id: str
    order_id: int
    ord_status: str
    is_replace: bool
    reason: int
    text: str
    ts: int
    too_late: bool = False   # the order exists but is already filled, cancelled or expired


class MassCancelDone(msgspec.Struct, frozen=True):
    session: str
    cl_ord_id: str
    instrument: str
    target_session: str
    firm: str
    cancelled: int
    reason: int
    text: str
    report_id: str
    ts: int


Report = ExecReport | CancelRejectReport | MassCancelDone


def _report(o: OrderView, exec_id: str, exec_type: str, ts: int, *, cl_ord_id: str = "",
            orig: str = "", last_px: int = 0, last_qty: int = 0, trade_id: int = 0,
            text: str = "") -> ExecReport:
    return ExecReport(exec_id, exec_type, o.status, o.session, o.firm, o.account, o.order_id,
                      cl_ord_id or o.cl_ord_id, orig, o.instrument, o.side, o.ord_type, o.tif,
                      o.price, o.qty, o.cum_qty, o.leaves, o.filled_notional, last_px, last_qty,
                      trade_id, 0, text, ts)


class Replica:
    def __init__(self, refdata: MarketRefData) -> None:
        self.refdata = refdata
        self.instruments = {i.symbol: i for i in refdata.instruments}
        self.next_seq = 1
        # order id -> order, in SHARDS dicts by order id (orders[oid >> 6 & _MASK][oid])
        self.orders: list[dict[int, OrderView]] = [{} for _ in range(SHARDS)]
        # session -> client order id -> order id, in generations of CLID_GENERATION ids,
        # oldest first (nested: no key tuple to make and collect per order)
        self.by_clid: dict[str, list[dict[str, int]]] = {}
        # session -> open orders, in OWNER_SHARDS dicts by order id; a firm's open orders are
        # those of its sessions (a session enters orders for its one firm; an order moves to
        # another session of the firm when that one replaces it)
        self.open_by_session: dict[str, list[dict[int, OrderView]]] = {}
        self.firm_sessions: dict[str, list[str]] = {}      # firm -> sessions, first seen first
        # books[symbol][side] = {price: (qty, orders)}
        self.books: dict[str, dict[int, dict[int, tuple[int, int]]]] = {
            s: {Side.BUY: {}, Side.SELL: {}} for s in self.instruments}
        self.last_trade: dict[str, tuple[int, int, int]] = {}     # symbol -> (px, qty, ts)
        #: instruments whose book or last trade changed: the consumer (the gateway's market
        #: data subscriptions) takes and clears them; the set is kept, never replaced
        self.changed: set[str] = set()
        self.market_halted = False
        self.halted_instruments: set[str] = set()
        self.halted_firms: set[str] = set()
        self._dispatch = {
            OrderAccepted: self._accepted, OrderRejected: self._rejected, Trade: self._trade,
            OrderCancelled: self._cancelled, OrderReplaced: self._replaced,
            CancelRejected: self._cancel_rejected, MassCancelReport: self._mass_cancel,
            BookUpdate: self._book, TradingStatus: self._status,
        }

    # ------------------------------------------------------------------ feed

    def apply(self, ev) -> list:
        """One event; its reports."""
        reports: list = []
        self.apply_many((ev,), lambda report, _seq: reports.append(report))
        return reports

    def apply_many(self, events, on_report) -> None:
        """``apply`` each event in order, calling ``on_report(report, seq)`` for each report
        as soon as its event is applied. On a gap (or an exception from ``on_report``) the
        events before it stay applied, none after it."""
        dispatch = self._dispatch
        nxt = self.next_seq
        try:
            for ev in events:
                seq = ev.seq
                if seq != nxt:
                    raise ReplicaGap(f"replica expected event {nxt}, got {seq}")
                nxt = seq + 1
                handler = dispatch.get(type(ev))
                if handler is not None:
                    reports = handler(ev)
                    for report in reports:
                        on_report(report, seq)
        finally:
            self.next_seq = nxt

    def _accepted(self, ev: OrderAccepted) -> list:
        oid = ev.order_id
        session = ev.session
        firm = ev.firm
        account = ev.account
        clid = ev.cl_ord_id
        instrument = ev.instrument
        side = ev.side
        ord_type = ev.ord_type
        tif = ev.tif
        price = ev.price
        qty = ev.qty
        ts = ev.ts
        # OrderView.accepted(ev), spelled out
        o = OrderView(oid, session, firm, account, clid, "", instrument, side, ord_type, tif,
                      price, qty, 0, qty, 0, NEW, ts)
        self.orders[oid >> 6 & _MASK][oid] = o
        shard = oid >> 6 & _OMASK
        gens = self.by_clid.get(session)
        if gens is None:
            gens = self.by_clid[session] = [{}]
        newest = gens[-1]                   # _set_clid(session, clid, oid), spelled out
        newest[clid] = oid
        if len(newest) >= CLID_GENERATION:
            gens.append({})
        by_session = self.open_by_session.get(session)
        if by_session is None:
            by_session = self._session_orders(session, firm)
        by_session[shard][oid] = o
        # _report(o, seq, NEW, ts) of the order just built, spelled out
        return [ExecReport(str(ev.seq), NEW, NEW, session, firm, account, oid, clid, "",
                           instrument, side, ord_type, tif, price, qty, 0, qty, 0, 0, 0, 0, 0,
                           "", ts)]

    def _rejected(self, ev: OrderRejected) -> list:
        return [ExecReport(f"{ev.seq}", REJECTED, REJECTED, ev.session, ev.firm, "", 0,
                           ev.cl_ord_id, "", ev.instrument, ev.side, 0, 0, ev.price, ev.qty, 0,
                           0, 0, 0, 0, 0, ev.reason, ev.text, ev.ts)]

    def _trade(self, ev: Trade) -> list:
        self.last_trade[ev.instrument] = (ev.price, ev.qty, ev.ts)
        self.changed.add(ev.instrument)
        out = []
        for oid, leaves, suffix in ((ev.buy_order_id, ev.buy_leaves, "B"),
                                    (ev.sell_order_id, ev.sell_leaves, "S")):
            o = self.orders[oid >> 6 & _MASK].get(oid)
            if o is None:
                continue
            o.cum_qty += ev.qty
            o.filled_notional += ev.price * ev.qty
            o.leaves = leaves
            o.status = FILLED if leaves == 0 else PARTIAL
            if leaves == 0:
                self._close(o)
            out.append(_report(o, f"{ev.seq}{suffix}", TRADE, ev.ts, last_px=ev.price,
                               last_qty=ev.qty, trade_id=ev.trade_id))
        return out

    def _cancelled(self, ev: OrderCancelled) -> list:
        o = self.get(ev.order_id)
        if o is None:
            return []
        o.leaves = 0
        o.status = EXPIRED if ev.reason in _EXPIRING else CANCELED
        self._close(o)
        if ev.reason == CancelReason.REQUESTED and ev.cl_ord_id:
            o.session = ev.session              # the requesting session gets the report
            o.orig_cl_ord_id, o.cl_ord_id = o.cl_ord_id, ev.cl_ord_id
            self._set_clid(o.session, ev.cl_ord_id, o.order_id)
            return [_report(o, f"{ev.seq}", o.status, ev.ts, orig=o.orig_cl_ord_id)]
        return [_report(o, f"{ev.seq}", o.status, ev.ts, text=CANCEL_TEXT.get(ev.reason, ""))]

    def _replaced(self, ev: OrderReplaced) -> list:
        o = self.get(ev.order_id)
        if o is None:
            return []
        if ev.session != o.session:
            oid = o.order_id
            shards = self.open_by_session.get(o.session)
            if shards is not None:
                shards[oid >> 6 & _OMASK].pop(oid, None)
            self._session_orders(ev.session, o.firm)[oid >> 6 & _OMASK][oid] = o
            o.session = ev.session
        o.orig_cl_ord_id = ev.orig_cl_ord_id
        o.cl_ord_id = ev.cl_ord_id
        o.price = ev.price
        o.qty = ev.qty
        o.leaves = ev.leaves
        self._set_clid(ev.session, ev.cl_ord_id, o.order_id)
        return [_report(o, f"{ev.seq}", REPLACED, ev.ts, orig=ev.orig_cl_ord_id)]

    def _cancel_rejected(self, ev: CancelRejected) -> list:
        o = self.get(ev.order_id) if ev.order_id else None
        if o is None and ev.reason == RejectReason.UNKNOWN_ORDER and ev.orig_cl_ord_id:
            # the engine knows only live orders: a done order of this session is "too late"
            oid = self._clid(ev.session, ev.orig_cl_ord_id)
            o = self.get(oid) if oid else None
        status = o.status if o is not None else REJECTED
        firm = o.firm if o is not None else ""
        too_late = o is not None and not o.is_open
        return [CancelRejectReport(ev.session, firm, ev.cl_ord_id, ev.orig_cl_ord_id,
                                   o.order_id if o else 0, status, ev.is_replace, ev.reason,
                                   ev.text, ev.ts, too_late)]

    def _mass_cancel(self, ev: MassCancelReport) -> list:
        return [MassCancelDone(ev.session, ev.cl_ord_id, ev.instrument, ev.target_session,
                               ev.firm, ev.cancelled, ev.reason, ev.text, f"{ev.seq}", ev.ts)]

    def _book(self, ev: BookUpdate) -> list:
        symbol = ev.instrument
        book = self.books.get(symbol)
        if book is None:
            return []
        self.changed.add(symbol)
        for side, price, qty, count in ev.levels:
            levels = book[side]
            if qty:
                levels[price] = (qty, count)
            else:
                levels.pop(price, None)
        return []

    def _status(self, ev: TradingStatus) -> list:
        if ev.scope == HaltScope.MARKET:
            self.market_halted = ev.halted
        elif ev.scope == HaltScope.INSTRUMENT:
            (self.halted_instruments.add if ev.halted else self.halted_instruments.discard)(
                ev.target)
        elif ev.scope == HaltScope.FIRM:
            (self.halted_firms.add if ev.halted else self.halted_firms.discard)(ev.target)
        return []

    def _close(self, o: OrderView) -> None:
        oid = o.order_id
        shards = self.open_by_session.get(o.session)
        if shards is not None:
            shards[oid >> 6 & _OMASK].pop(oid, None)

    def _session_orders(self, session: str, firm: str) -> list[dict]:
        """The open-order shards of ``session``, which holds orders of ``firm``."""
        sessions = self.firm_sessions.setdefault(firm, [])
        if session not in sessions:
            sessions.append(session)
        return _owner_shards(self.open_by_session, session)

    def _set_clid(self, session: str, cl_ord_id: str, oid: int) -> None:
        gens = self.by_clid.get(session)
        if gens is None:
            gens = self.by_clid[session] = [{}]
        newest = gens[-1]
        newest[cl_ord_id] = oid
        if len(newest) >= CLID_GENERATION:
            gens.append({})

    def _clid(self, session: str, cl_ord_id: str) -> Optional[int]:
        for gen in reversed(self.by_clid.get(session, ())):
            oid = gen.get(cl_ord_id)
            if oid is not None:
                return oid
        return None

    # ------------------------------------------------------------------ queries

    def get(self, order_id: int) -> Optional[OrderView]:
        """The order with this id (open or done), None if unknown."""
        return self.orders[order_id >> 6 & _MASK].get(order_id)

    def order_count(self) -> int:
        return sum(map(len, self.orders))

    def find(self, session: str, cl_ord_id: str = "", order_id: int = 0) -> Optional[OrderView]:
        if order_id:
            return self.get(order_id)
        oid = self._clid(session, cl_ord_id)
        return self.get(oid) if oid else None

    def open_orders(self, session: str = "", instrument: str = "", firm: str = ""
                    ) -> list[OrderView]:
        """Open orders of a session, or of a whole firm, in order-id order."""
        if firm:
            by_session = self.open_by_session
            out = [o for s in self.firm_sessions.get(firm, ()) for shard in by_session[s]
                   for o in shard.values()
                   if o.firm == firm and (not instrument or o.instrument == instrument)]
        else:
            shards = self.open_by_session.get(session)
            if shards is None:
                return []
            out = [o for shard in shards for o in shard.values()
                   if not instrument or o.instrument == instrument]
        out.sort(key=_order_id)
        return out

    def depth(self, symbol: str, side: int, levels: int = 0) -> list[tuple[int, int, int]]:
        """Best-first (price, qty, orders) of one side; ``levels`` 0 means the whole side."""
        book = self.books[symbol][side]
        prices = sorted(book, reverse=(side == Side.BUY))
        if levels:
            prices = prices[:levels]
        return [(p, *book[p]) for p in prices]

    def trading_status(self, symbol: str) -> str:
        """SecurityTradingStatus (326): 17 ready to trade, 2 trading halt."""
        return "2" if self.market_halted or symbol in self.halted_instruments else "17"


__all__ = ["Replica", "ReplicaGap", "OrderView", "ExecReport", "CancelRejectReport",
           "MassCancelDone", "Report", "NEW", "PARTIAL", "FILLED", "CANCELED", "REPLACED",
           "REJECTED", "EXPIRED", "TRADE", "STATUS", "OrdType", "TimeInForce"]
