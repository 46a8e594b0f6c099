"""Information requests answered from the gateway's replica, never from the engine (pure).

Contract: ``InfoService.handle(session, firm, msg, now_ns)`` answers
- OrderStatusRequest (H) with one ExecutionReport (ExecType I) for the order named by OrderID
  or ClOrdID in this session, or, for an unknown order, ExecType I / OrdStatus 8 with
  OrdRejReason 5 (unknown order);
- OrderMassStatusRequest (AF) with one ExecutionReport (ExecType I) per open order of the
  session (optionally of one Symbol), each with MassStatusReqID, TotNumReports and
  LastRptRequested on the last; none open: a single report with OrdStatus 8 and Text;
- MarketDataRequest (V) with a MarketDataSnapshotFullRefresh (W) per instrument: bids and offers
  (MarketDepth levels, 0 = full book) and the last trade, as the replica has them now.
  Only snapshots (SubscriptionRequestType 0) are served here; streaming market data is the FAST
  feed's job, so 1 and 2 get MarketDataRequestReject (Y) with a text saying so;
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


class InfoService:
    def __init__(self, replica: Replica, writer: ReportWriter) -> None:
        self.replica = replica
        self.writer = writer
        self.px: PriceFormat = writer.px
        self._n = 0
        self._handlers = {"H": self._order_status, "AF": self._mass_status,
                          "V": self._market_data, "x": self._security_list}

    def handles(self, msg_type: str) -> bool:
        return msg_type in self._handlers

    def handle(self, session: str, msg: FixMessage, now: int) -> list[tuple[str, list]]:
        return self._handlers[msg.msg_type](session, msg, now)

    def _id(self, prefix: str, now: int) -> str:
        self._n += 1
        return f"{prefix}{now:x}-{self._n}"

    # ------------------------------------------------------------------ orders

    def _order_status(self, session: str, m: FixMessage, now: int) -> list:
        oid = m.get(37)
        o = self.replica.find(session, _s(m.get(11)),
                              int(oid) if oid and oid.isdigit() and len(oid) < 19 else 0)
        if o is not None and o.session != session:
            o = None                           # another session's order: not visible here
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
        orders = self.replica.open_orders(session, symbol)
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
        if _s(m.get(263)) != "0":
            return [("Y", [(262, req), (281, "4"),
                           (58, "only snapshots (263=0) are served over FIX; subscribe to the "
                                "FAST multicast feed for streaming market data")])]
        depth = int(m.get(264) or b"0")
        types = {v for t, v in m.fields if t == 269}
        symbols = [v.decode() for t, v in m.fields if t == 55]
        out = []
        for sym in symbols:
            if sym not in self.replica.books:
                return [("Y", [(262, req), (281, "0"), (58, f"unknown symbol {sym}")])]
        for sym in symbols:
            entries = []
            for side, etype in ((Side.BUY, b"0"), (Side.SELL, b"1")):
                if etype in types:
                    for pos, (px, qty, n) in enumerate(self.replica.depth(sym, side, depth), 1):
                        entries.append([(269, etype.decode()), (270, self.px.format(px)),
                                        (271, str(qty)), (346, str(n)), (290, str(pos))])
            last = self.replica.last_trade.get(sym)
            if b"2" in types and last:
                entries.append([(269, "2"), (270, self.px.format(last[0])), (271, str(last[1]))])
            f = [(262, req), (55, sym), (268, str(len(entries)))]
            for e in entries:
                f += e
            out.append(("W", f))
        return out

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
