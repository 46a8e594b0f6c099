"""Turning replica reports into FIX 4.4 application messages (pure).

Contract:
- ``execution_report(r)`` gives the fields of an ExecutionReport (35=8) with OrderID, ClOrdID,
  OrigClOrdID, ExecID (unique: the engine event seq, with B/S for the two sides of a trade),
  ExecType, OrdStatus, Account, Symbol, Side, OrdType, TimeInForce, Price, OrderQty, LastQty,
  LastPx, CumQty, LeavesQty, AvgPx, TrdMatchID, OrdRejReason, Text and TransactTime.
- ``execution_report_wire(r)`` gives the same message body as a list whose items ``encode``
  takes (usually one run of encoded fields, made by the compiled codec): byte for byte what
  ``encode`` makes of ``execution_report(r)``, which stays the reference and the fallback.
- ``cancel_reject(r)`` gives OrderCancelReject (35=9), ``mass_cancel_report(r)`` gives
  OrderMassCancelReport (35=r).
- Engine reject reasons map to FIX OrdRejReason (103) and CxlRejReason (102) by the tables
  below, which spec/rules-of-engagement.md publishes.
"""
from __future__ import annotations

from engine.commands import OrdType
from engine.reasons import RejectReason as RR
from fix_gateway import codec
from fix_gateway.codec import format_utc_timestamp
from fix_gateway.prices import PriceFormat
from fix_gateway.replica import CancelRejectReport, ExecReport, MassCancelDone

#: engine RejectReason -> OrdRejReason (103)
ORD_REJ_REASON = {
    RR.UNKNOWN_INSTRUMENT: "1",      # unknown symbol
    RR.MARKET_HALTED: "2",           # exchange closed
    RR.INSTRUMENT_HALTED: "2",
    RR.CREDIT_LIMIT: "3",            # order exceeds limit
    RR.UNKNOWN_ORDER: "5",
    RR.DUPLICATE_CL_ORD_ID: "6",     # duplicate order
    RR.INVALID_ORDER_TYPE: "11",     # unsupported order characteristic
    RR.INVALID_TIME_IN_FORCE: "11",
    RR.INVALID_SIDE: "11",
    RR.QTY_NOT_POSITIVE: "13",       # incorrect quantity
    RR.QTY_NOT_LOT_MULTIPLE: "13",
    RR.UNKNOWN_ACCOUNT: "15",        # unknown account(s)
    RR.PRICE_OUTSIDE_BAND: "16",     # price exceeds current price band
    RR.PRICE_OFF_TICK: "18",         # invalid price increment
    RR.FIRM_HALTED: "0",             # broker / exchange option
}
OTHER = "99"
_MARKET = int(OrdType.MARKET)

#: the compiled ExecutionReport encoder (None with the pure-Python codec)
_exec_report = getattr(codec._fast, "exec_report", None) if codec._fast is not None else None

#: engine RejectReason -> CxlRejReason (102)
CXL_REJ_REASON = {
    RR.UNKNOWN_ORDER: "1",           # unknown order
    RR.DUPLICATE_CL_ORD_ID: "6",     # duplicate ClOrdID
    RR.MARKET_HALTED: "2",           # broker / exchange option
    RR.INSTRUMENT_HALTED: "2",
    RR.FIRM_HALTED: "2",
    RR.NOT_OWNER: "2",
    RR.PRICE_OUTSIDE_BAND: "8",      # price exceeds current price band
    RR.PRICE_OFF_TICK: "18",         # invalid price increment
}

#: engine RejectReason -> MassCancelRejectReason (532)
MASS_CANCEL_REJECT_REASON = {
    RR.UNKNOWN_INSTRUMENT: "1",      # invalid or unknown security
}


class ReportWriter:
    """Formats reports with the market's price scale."""

    def __init__(self, price_decimals: int) -> None:
        self.px = PriceFormat(price_decimals)

    def execution_report(self, r: ExecReport, exec_type: str | None = None) -> list:
        px = self.px
        f = [(37, str(r.order_id) if r.order_id else "NONE"), (11, r.cl_ord_id or "NONE")]
        add = f.append
        if r.orig_cl_ord_id:
            add((41, r.orig_cl_ord_id))
        add((17, r.exec_id))
        add((150, exec_type or r.exec_type))
        add((39, r.ord_status))
        if r.account:
            add((1, r.account))
        add((55, r.instrument))
        add((54, str(r.side)))
        ord_type = r.ord_type
        if ord_type:
            add((40, str(ord_type)))
            add((59, str(r.tif)))
        if r.price and ord_type != _MARKET:
            add((44, px.format(r.price)))
        add((38, str(r.qty)))
        if r.last_qty:
            add((32, str(r.last_qty)))
            add((31, px.format(r.last_px)))
        cum_qty = r.cum_qty
        add((151, str(r.leaves)))
        add((14, str(cum_qty)))
        add((6, px.format_ratio(r.filled_notional, cum_qty) if cum_qty else "0"))
        if r.trade_id:
            add((880, str(r.trade_id)))
        if r.exec_type == "8":
            add((103, ORD_REJ_REASON.get(r.reject_reason, OTHER)))
        if r.text:
            add((58, r.text))
        add((60, format_utc_timestamp(r.ts)))
        return f

    def execution_report_wire(self, r: ExecReport, tag: int = 0, value: int = 0) -> list:
        """``execution_report(r)`` for ``encode``, followed by the field (``tag``, ``value``)
        if ``tag`` is given: one run of encoded fields where the compiled codec can make it
        (the common reports: about a tenth of the cost of the field list), else that list."""
        if _exec_report is not None:
            run = (_exec_report(r, self.px.decimals, tag, value) if tag
                   else _exec_report(r, self.px.decimals))
            if run is not None:
                return [run]
        f = self.execution_report(r)
        if tag:
            f.append((tag, value))
        return f

    @staticmethod
    def cancel_reject(r: CancelRejectReport) -> list:
        f = [(37, str(r.order_id) if r.order_id else "NONE"), (11, r.cl_ord_id),
             (41, r.orig_cl_ord_id or "NONE"), (39, r.ord_status),
             (434, "2" if r.is_replace else "1"),
             (102, "0" if r.too_late else CXL_REJ_REASON.get(r.reason, OTHER))]
        if r.text:
            f.append((58, r.text))
        f.append((60, format_utc_timestamp(r.ts)))
        return f

    @staticmethod
    def mass_cancel_report(r: MassCancelDone) -> list:
        request_type = "1" if r.instrument else "7"
        response = "0" if r.reason else request_type
        f = [(11, r.cl_ord_id), (37, r.report_id), (530, request_type), (531, response)]
        if r.reason:
            f += [(532, MASS_CANCEL_REJECT_REASON.get(r.reason, OTHER)),
                  (58, r.text or "mass cancel rejected")]
        else:
            f.append((533, str(r.cancelled)))
        if r.instrument:
            f.append((55, r.instrument))
        f.append((60, format_utc_timestamp(r.ts)))
        return f
