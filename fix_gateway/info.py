"""Information requests answered from the gateway's replica, never from the engine (pure).

Contract: ``InfoService.handle(session, firm, msg, now_ns)`` answers
- OrderStatusRequest (H) with one ExecutionReport (ExecType I) for the order named by OrderID
  (any order of the session's firm) or ClOrdID (this session's), or, for an unknown order,
  ExecType I / OrdStatus 8 with OrdRejReason 5 (unknown order);
- OrderMassStatusRequest (AF) with one ExecutionReport (ExecType I) per open order of the
  firm, whichever session or gateway entered it (optionally of one Symbol), each with
  MassStatusReqID, TotNumReports and LastRptRequested on the last; none open: a single report
  with OrdStatus 8 and Text. Every gateway's replica gives the same answer;
- MarketDataRequest (V) with a MarketDataSnapshotFullRefresh (W) per instrument: bids and offers
  (MarketDepth levels, 0 = up to 20) and the last trade, as the replica has them now.
  SubscriptionRequestType 1 also subscribes: ``due(now)`` then yields a new W per instrument
  whose book or last trade changed (``touch``), conflated to one per 100 ms; 2 unsubscribes.
  Limits and reject reasons as spec/rules-of-engagement.md section 12 publishes them;
- SecurityListRequest (x) with a SecurityList (y) of the exchange's instruments (type 0: one
  symbol, type 4: all): symbol, ISIN, currency, lot, tick, reference price, price band.
It returns a list of ``(msg_type, fields)`` to send.
"""
from __future__ import annotations

from engine.commands import Side
from fix_gateway.codec import FixMessage, format_utc_timestamp
from fix_gateway.prices import PriceFormat
from fix_gateway.replica import STATUS, ExecReport, OrderView, Replica
from fix_gateway.reports import ReportWriter


def _s(v: bytes | None) -> str:
    return v.decode("utf-8", "replace") if v is not None else ""


def _status_report(o: OrderView, exec_id: str, now: int) -> ExecReport:
    return ExecReport(exec_id, STATUS, o.status, o.session, o.firm, o.account, o.order_id,
                      o.cl_ord_id, o.orig_cl_ord_id, o.instrument, o.side, o.ord_type, o.tif,
                      o.price, o.qty, o.cum_qty, o.leaves, o.filled_notional, ts=now)


MAX_DEPTH = 20
MAX_SYMBOLS = 50
MAX_SUBSCRIPTIONS = 20
CONFLATION_NS = 100_000_000


class _Subscription:
    __slots__ = ("req", "symbols", "depth", "types", "sent_at")

    def __init__(self, req: str, symbols: tuple, depth: int, types: frozenset, now: int) -> None:
        self.req = req
        self.symbols = symbols
        self.depth = depth
        self.types = types
        self.sent_at: dict[str, int] = {s: now for s in symbols}


class InfoService:
    def __init__(self, replica: Replica, writer: ReportWriter, id_prefix: str = "S") -> None:
        """``id_prefix`` makes the ExecIDs and report ids this service makes unique among
        gateways and restarts (the gateway passes its node id and start time)."""
        self.replica = replica
        self.id_prefix = id_prefix
        self.writer = writer
        self.px: PriceFormat = writer.px
        self._n = 0
        self._firm = ""
        self.subscriptions: dict[str, dict[str, _Subscription]] = {}
        #: instruments changed since the last update went out: the replica's own set, which
        #: it fills as it applies book and trade events
        self._dirty: set[str] = replica.changed
        self._handlers = {"H": self._order_status, "AF": self._mass_status,
                          "V": self._market_data, "x": self._security_list}

    def handles(self, msg_type: str) -> bool:
        return msg_type in self._handlers

    def handle(self, session: str, msg: FixMessage, now: int, firm: str = ""
               ) -> list[tuple[str, list]]:
        self._firm = firm
        return self._handlers[msg.msg_type](session, msg, now)

    def _id(self, prefix: str, now: int) -> str:
        self._n += 1
        return f"{prefix}-{self.id_prefix}-{self._n}"

    # ------------------------------------------------------------------ orders

    def _order_status(self, session: str, m: FixMessage, now: int) -> list:
        oid = m.get(37)
        o = self.replica.find(session, _s(m.get(11)),
                              int(oid) if oid and oid.isdigit() and len(oid) < 19 else 0)
        if o is not None and o.session != session and o.firm != self._firm:
            o = None                           # another firm's order: never visible
        extra = [(790, _s(m.get(790)))] if m.get(790) else []
        if o is None:
            f = [(37, _s(oid) or "NONE"), (11, _s(m.get(11))), *extra,
                 (17, self._id("S", now)), (150, STATUS), (39, "8"), (103, "5"),
                 (55, _s(m.get(55))), (54, _s(m.get(54))), (151, "0"), (14, "0"), (6, "0"),
                 (58, "unknown order"), (60, format_utc_timestamp(now))]
            return [("8", f)]
        f = self.writer.execution_report(_status_report(o, self._id("S", now), now))
        return [("8", f[:2] + extra + f[2:])]

    def _mass_status(self, session: str, m: FixMessage, now: int) -> list:
        req = _s(m.get(584))
        symbol = _s(m.get(55)) if _s(m.get(585)) == "1" else ""
        orders = (self.replica.open_orders(instrument=symbol, firm=self._firm) if self._firm
                  else self.replica.open_orders(session, symbol))
        if not orders:
            f = [(37, "NONE"), (584, req), (911, "0"), (912, "Y"), (17, self._id("S", now)),
                 (150, STATUS), (39, "8"), (55, symbol or "NONE"), (54, "1"), (151, "0"),
                 (14, "0"), (6, "0"), (58, "no open orders"), (60, format_utc_timestamp(now))]
            return [("8", f)]
        out = []
        for k, o in enumerate(orders, 1):
            f = self.writer.execution_report(_status_report(o, self._id("S", now), now))
            head = [(584, req), (911, str(len(orders)))]
            if k == len(orders):
                head.append((912, "Y"))
            out.append(("8", f[:3 if f[2][0] == 41 else 2] + head
                        + f[3 if f[2][0] == 41 else 2:]))
        return out

    # ------------------------------------------------------------------ market data

    def _market_data(self, session: str, m: FixMessage, now: int) -> list:
        req = _s(m.get(262))
        kind = _s(m.get(263))
        subs = self.subscriptions.setdefault(session, {})
        if kind == "2":
            if subs.pop(req, None) is None:
                return [("Y", [(262, req), (58, "unknown MDReqID")])]
            return []
        depth = int(m.get(264) or b"0")
        types = frozenset(v for t, v in m.fields if t == 269)
        symbols = tuple(v.decode() for t, v in m.fields if t == 55)
        for sym in symbols:
            if sym not in self.replica.books:
                return [("Y", [(262, req), (281, "0"), (58, f"unknown symbol {sym}")])]
        if depth < 0 or depth > MAX_DEPTH:
            return [("Y", [(262, req), (281, "5"),
                           (58, f"MarketDepth must be 0 to {MAX_DEPTH}")])]
        if len(symbols) > MAX_SYMBOLS:
            return [("Y", [(262, req), (281, "2"),
                           (58, f"at most {MAX_SYMBOLS} instruments per request")])]
        if kind == "1":
            if req in subs:
                return [("Y", [(262, req), (281, "1"), (58, "MDReqID already active")])]
            if len(subs) >= MAX_SUBSCRIPTIONS:
                return [("Y", [(262, req), (281, "2"),
                               (58, f"at most {MAX_SUBSCRIPTIONS} active subscriptions")])]
            subs[req] = _Subscription(req, symbols, depth or MAX_DEPTH, types, now)
        return [self._snapshot(req, sym, depth or MAX_DEPTH, types) for sym in symbols]

    def _snapshot(self, req: str, sym: str, depth: int, types: frozenset) -> tuple[str, list]:
        entries = []
        for side, etype in ((Side.BUY, b"0"), (Side.SELL, b"1")):
            if etype in types:
                for pos, (px, qty, n) in enumerate(self.replica.depth(sym, side, depth), 1):
                    entries.append([(269, etype.decode()), (270, self.px.format(px)),
                                    (271, str(qty)), (346, str(n)), (290, str(pos))])
        last = self.replica.last_trade.get(sym)
        if b"2" in types and last:
            stamp = format_utc_timestamp(last[2]).decode()
            entries.append([(269, "2"), (270, self.px.format(last[0])), (271, str(last[1])),
                            (272, stamp[:8]), (273, stamp[9:])])
        f = [(262, req), (55, sym), (268, str(len(entries)))]
        for e in entries:
            f += e
        return ("W", f)

    # ------------------------------------------------------------------ subscriptions

    def touch(self, symbol: str) -> None:
        """The book or the last trade of ``symbol`` changed (the replica notes it by itself
        as it applies events; this is for a change it cannot see)."""
        self._dirty.add(symbol)

    def due(self, now: int) -> list[tuple[str, str, list]]:
        """Conflated updates: (session, msg_type, fields) for every subscription whose
        instrument changed, at most one per instrument every ``CONFLATION_NS``."""
        if not self._dirty:
            return []
        out = []
        waiting = set()
        for session, subs in self.subscriptions.items():
            for sub in subs.values():
                for sym in sub.symbols:
                    if sym not in self._dirty:
                        continue
                    if now - sub.sent_at.get(sym, 0) < CONFLATION_NS:
                        waiting.add(sym)
                        continue
                    sub.sent_at[sym] = now
                    out.append((session, *self._snapshot(sub.req, sym, sub.depth, sub.types)))
        self._dirty.intersection_update(waiting)
        return out

    def end_session(self, session: str) -> None:
        self.subscriptions.pop(session, None)

    def _security_list(self, session: str, m: FixMessage, now: int) -> list:
        req = _s(m.get(320))
        kind = _s(m.get(559))
        instruments = self.replica.refdata.instruments
        if kind == "0":
            sym = _s(m.get(55))
            instruments = tuple(i for i in instruments if i.symbol == sym)
        result = "0" if instruments else "2"
        f = [(320, req), (322, self._id("L", now)), (560, result),
             (393, str(len(instruments))), (893, "Y")]
        if instruments:
            f.append((146, str(len(instruments))))
            for i in instruments:
                f += [(55, i.symbol)]
                if i.isin:
                    f += [(48, i.isin), (22, "4")]
                f += [(107, i.name), (15, i.currency), (561, str(i.lot)),
                      (969, self.px.format(i.tick)), (140, self.px.format(i.ref_price)),
                      (1148, self.px.format(i.band_low)), (1149, self.px.format(i.band_high))]
        return [("y", f)]
