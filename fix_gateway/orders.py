"""Inbound order messages: FIX 4.4 to engine commands, with the gateway's checks at the door.

Contract (pure; ``now_ns`` is an argument):
- ``OrderEntry.handle(msg, now_ns)`` takes a validated application message of a trading session
  (NewOrderSingle D, OrderCancelRequest F, OrderCancelReplaceRequest G,
  OrderMassCancelRequest q) and returns either ``Forward(cmd)`` (a command for the engine) or
  ``Reply(msg_type, fields)`` (an immediate answer: an ExecutionReport reject, an
  OrderCancelReject or a mass cancel reject), never both, never nothing.
- Checks made here, before the engine sees anything: drop-copy sessions are read-only (an order
  message there gets a BusinessMessageReject with BusinessRejectReason 6); prices
  must be exact decimals at the market's scale; a limit order needs a price; per-session
  maximum order quantity, maximum notional (limit price, or the reference price for a market
  order, times quantity) and the price collar around the reference price. Everything else
  (tick, lot, band, halts, credit, duplicates) is the engine's to decide.
- Commands carry ``session`` = the broker's CompID and ``firm`` = the session's firm, so that
  client order ids are unique per session and orders are owned by the firm.
"""
from __future__ import annotations

from typing import NamedTuple

import msgspec

from bourse.config import GatewaySession
from engine.commands import (
    CancelOrder, Command, MassCancel, NewOrder, OrdType, ReplaceOrder, TimeInForce,
)
from engine.refdata import MarketRefData
from fix_gateway import codec
from fix_gateway.codec import FixMessage, format_utc_timestamp
from fix_gateway.prices import PriceFormat


#: User-defined tag of the exchange's dialect: F = the firm's orders (default), S = this session's.
MASS_CANCEL_SCOPE = 20001
_LIMIT = int(OrdType.LIMIT)       # a plain int compares faster than the enum member
#: the compiled reading of a plain NewOrderSingle (None with the pure-Python codec); the
#: Python code of ``OrderEntry._new`` below is the reference and handles everything else
_new_order = getattr(codec._fast, "new_order", None) if codec._fast is not None else None


class Forward(msgspec.Struct, frozen=True, gc=False):
    """A command for the engine (one per order: built in C, untracked by the collector)."""

    cmd: Command


class Reply(NamedTuple):
    msg_type: str
    fields: list


def _s(v: bytes | None) -> str:
    return v.decode("utf-8", "replace") if v is not None else ""


class OrderEntry:
    def __init__(self, session: GatewaySession, refdata: MarketRefData, *, id_prefix: str = "G",
                 instrument_of=None) -> None:
        """``instrument_of(session, orig_cl_ord_id, order_id)`` looks an order's instrument up
        (the gateway passes its replica's); ``id_prefix`` makes this gateway's own ExecIDs
        unique among gateways and restarts."""
        self.cfg = session
        self.id_prefix = id_prefix
        self.instrument_of = instrument_of
        self.px = PriceFormat(refdata.price_decimals)
        self.ref = {i.symbol: i.ref_price for i in refdata.instruments}
        # _limits' bounds, worked out once: (reference, lowest, highest price in the collar).
        # |price - ref| * 10_000 > ref * bps holds exactly when |price - ref| exceeds
        # ref * bps // 10_000 (an integer exceeds a number iff it exceeds its floor).
        self._bounds = {sym: (ref, ref - ref * session.price_collar_bps // 10_000,
                              ref + ref * session.price_collar_bps // 10_000)
                        for sym, ref in self.ref.items()}
        self._max_qty = session.max_order_qty
        self._max_notional = session.max_notional
        self._rejects = 0
        self._handlers = {"D": self._new, "F": self._cancel, "G": self._replace,
                          "q": self._mass_cancel}

    def handle(self, msg: FixMessage, now_ns: int) -> Forward | Reply:
        handler = self._handlers[msg.msg_type]
        if self.cfg.drop_copy:
            return self._not_authorized(msg, "drop-copy sessions are read-only")
        return handler(msg, now_ns)

    def _not_authorized(self, m: FixMessage, text: str) -> Reply:
        """BusinessMessageReject, BusinessRejectReason 6 (not authorized)."""
        f: list = [(45, _s(m.get(34))), (372, m.msg_type)]
        if m.get(11) is not None:
            f.append((379, _s(m.get(11))))
        return Reply("j", f + [(380, "6"), (58, text)])

    def unavailable(self, msg: FixMessage, now_ns: int) -> Reply:
        return self._refuse(msg, now_ns, "exchange unavailable: the gateway has no link to the "
                                         "trading engine; nothing was sent")

    def throttled(self, msg: FixMessage, now_ns: int) -> Reply:
        return self._refuse(msg, now_ns, f"throttle: more than {self.cfg.throttle_per_s} "
                                         "messages per second")

    # ------------------------------------------------------------------ messages

    def _new(self, m: FixMessage, now: int) -> Forward | Reply:
        if _new_order is not None:          # the common case, read by the compiled codec
            parsed = _new_order(m, self.px.decimals, _LIMIT)
            if parsed is not None:
                symbol, ord_type, tif, price, qty, account, cl_ord_id, side = parsed
                if not self._limits(symbol, ord_type, price, qty):
                    cfg = self.cfg
                    return Forward(NewOrder(cfg.comp_id, cfg.firm, account, cl_ord_id, symbol,
                                            side, ord_type, tif, price, qty))
        get = m.get
        raw = get(55)
        symbol = raw.decode("utf-8", "replace") if raw is not None else ""
        ord_type = int(get(40))
        raw = get(38)
        # _whole(raw), its common case first
        qty = int(raw) if raw is not None and raw.isdigit() and len(raw) <= 15 else _whole(raw)
        if qty is None:
            return self._order_reject(m, now, QTY_TEXT, "13")
        tif = int(get(59) or b"0")
        price = 0
        if ord_type == _LIMIT:
            raw = get(44)
            if raw is None:
                return self._order_reject(m, now, "a limit order needs Price (44)", "99")
            price = self.px.parse(raw)
            if price is None:
                return self._order_reject(
                    m, now, f"Price (44) {_s(raw)!r} is not an exact price with at most "
                            f"{self.px.decimals} decimals", "18")
        problem = self._limits(symbol, ord_type, price, qty)
        if problem:
            return self._order_reject(m, now, problem, "99")
        cfg = self.cfg
        account, cl_ord_id = get(1), get(11)
        return Forward(NewOrder(
            cfg.comp_id, cfg.firm,
            account.decode("utf-8", "replace") if account is not None else "",
            cl_ord_id.decode("utf-8", "replace") if cl_ord_id is not None else "",
            symbol, int(get(54)), ord_type, tif, price, qty))

    def _cancel(self, m: FixMessage, now: int) -> Forward | Reply:
        return Forward(CancelOrder(self.cfg.comp_id, self.cfg.firm, _s(m.get(11)),
                                   _s(m.get(41)), _order_id(m.get(37))))

    def _replace(self, m: FixMessage, now: int) -> Forward | Reply:
        raw = m.get(44)
        qty = _whole(m.get(38))
        if qty is None:
            return self._cancel_reject(m, now, QTY_TEXT, is_replace=True)
        symbol = _s(m.get(55))
        if self.instrument_of is not None:
            current = self.instrument_of(self.cfg.comp_id, _s(m.get(41)), _order_id(m.get(37)))
            if current is not None and current != symbol:
                return self._cancel_reject(
                    m, now, f"Symbol (55) {symbol} is not the order's instrument {current}",
                    is_replace=True)
        price = self.px.parse(raw) if raw is not None else None
        if price is None:
            return self._cancel_reject(m, now, "OrderCancelReplaceRequest needs an exact Price (44)",
                                       is_replace=True)
        problem = self._limits(symbol, OrdType.LIMIT, price, qty)
        if problem:
            return self._cancel_reject(m, now, problem, is_replace=True)
        return Forward(ReplaceOrder(self.cfg.comp_id, self.cfg.firm, _s(m.get(11)),
                                    _s(m.get(41)), price, qty, _order_id(m.get(37))))

    def _mass_cancel(self, m: FixMessage, now: int) -> Forward | Reply:
        kind = _s(m.get(530))
        symbol = _s(m.get(55))
        if kind == "1" and not symbol:
            return self._mass_reject(m, now, "MassCancelRequestType 1 needs Symbol (55)", "1")
        if kind not in ("1", "7"):
            return self._mass_reject(m, now, f"MassCancelRequestType {kind!r} is not supported",
                                     "99")
        scope = _s(m.get(MASS_CANCEL_SCOPE)) or "F"
        return Forward(MassCancel(self.cfg.comp_id, _s(m.get(11)), firm=self.cfg.firm,
                                  target_session=self.cfg.comp_id if scope == "S" else "",
                                  instrument=symbol if kind == "1" else ""))

    # ------------------------------------------------------------------ checks

    def _limits(self, symbol: str, ord_type: int, price: int, qty: int) -> str:
        """The session's order checks: "" if the order passes, else what is wrong (the text
        comes from ``_limit_problem``, which is the reference: tests compare the two)."""
        if qty <= self._max_qty:
            bounds = self._bounds.get(symbol)
            if bounds is None:
                return ""                   # the engine rejects the unknown symbol
            if ord_type == _LIMIT:
                if price * qty <= self._max_notional and bounds[1] <= price <= bounds[2]:
                    return ""
            elif bounds[0] * qty <= self._max_notional:
                return ""
        return self._limit_problem(symbol, ord_type, price, qty)

    def _limit_problem(self, symbol: str, ord_type: int, price: int, qty: int) -> str:
        cfg = self.cfg
        if qty > cfg.max_order_qty:
            return f"order quantity {qty} exceeds the session maximum {cfg.max_order_qty}"
        ref = self.ref.get(symbol)
        if ref is None:
            return ""                       # the engine rejects the unknown symbol
        limit = ord_type == _LIMIT
        notional = (price if limit else ref) * qty
        if notional > cfg.max_notional:
            return (f"order notional {self.px.format(notional)} exceeds the session maximum "
                    f"{self.px.format(cfg.max_notional)}")
        if limit and abs(price - ref) * 10_000 > ref * cfg.price_collar_bps:
            return (f"price {self.px.format(price)} is outside the {cfg.price_collar_bps / 100:g}% "
                    f"collar around the reference price {self.px.format(ref)}")
        return ""

    # ------------------------------------------------------------------ immediate answers

    def _exec_id(self, now: int) -> str:
        self._rejects += 1
        return f"{self.id_prefix}-{self.cfg.comp_id}-{self._rejects}"

    def _refuse(self, m: FixMessage, now: int, text: str) -> Reply:
        t = m.msg_type
        if t == "D":
            return self._order_reject(m, now, text, "99")
        if t in ("F", "G"):
            return self._cancel_reject(m, now, text, is_replace=(t == "G"))
        return self._mass_reject(m, now, text, "99")

    def _order_reject(self, m: FixMessage, now: int, text: str, reason: str) -> Reply:
        f = [(37, "NONE"), (11, _s(m.get(11))), (17, self._exec_id(now)), (150, "8"), (39, "8")]
        if m.get(1) is not None:
            f.append((1, _s(m.get(1))))
        f += [(55, _s(m.get(55))), (54, _s(m.get(54))), (38, _s(m.get(38))),
              (151, "0"), (14, "0"), (6, "0"), (103, reason), (58, text),
              (60, format_utc_timestamp(now))]
        return Reply("8", f)

    def _cancel_reject(self, m: FixMessage, now: int, text: str, is_replace: bool) -> Reply:
        return Reply("9", [(37, _s(m.get(37)) or "NONE"), (11, _s(m.get(11))),
                           (41, _s(m.get(41)) or "NONE"), (39, "8"),
                           (434, "2" if is_replace else "1"), (102, "99"), (58, text),
                           (60, format_utc_timestamp(now))])

    def _mass_reject(self, m: FixMessage, now: int, text: str, reason: str) -> Reply:
        return Reply("r", [(11, _s(m.get(11))), (37, self._exec_id(now)),
                           (530, _s(m.get(530)) or "7"), (531, "0"), (532, reason), (58, text),
                           (60, format_utc_timestamp(now))])


QTY_TEXT = "OrderQty (38) must be a whole positive number of shares"


def _whole(v: bytes | None) -> int | None:
    """A quantity as a whole number (``100`` or ``100.0``), else None."""
    if v is None:
        return None
    whole, _, frac = v.partition(b".")
    if not whole.isdigit() or len(whole) > 15 or (frac and frac.strip(b"0")):
        return None
    return int(whole)


def _order_id(v: bytes | None) -> int:
    return int(v) if v is not None and v.isdigit() and len(v) < 19 else 0


__all__ = ["OrderEntry", "Forward", "Reply", "TimeInForce"]
