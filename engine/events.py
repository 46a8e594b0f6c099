"""Engine outputs: the sequenced events of the replication stream.

Contract:
- Every event carries ``seq`` (the replication sequence number: global, 1-based, gap-free, one
  per event), ``cmd_seq`` (the command that caused it) and ``ts`` (that command's sequencer
  timestamp). Events of one command have consecutive ``seq`` values and are released together.
- Encoding: MessagePack arrays with an integer tag first (see spec/engine-protocol.md). The same
  journal yields byte-identical encoded events in any process.
- Quantities are shares and prices are price units (see engine.refdata).
- A consumer that applies every event in order can rebuild the engine's public state exactly:
  open orders (OrderAccepted, Trade, OrderCancelled, OrderReplaced), the aggregated books
  (BookUpdate gives the new state of every level a command changed) and the trading status.
"""
from __future__ import annotations

from typing import Union

import msgspec

# gc=False: events hold only str, int and tuples of int, never a cycle.
_EV = dict(frozen=True, array_like=True, tag_field="t", forbid_unknown_fields=True, gc=False)


class OrderAccepted(msgspec.Struct, tag=1, **_EV):
    seq: int
    cmd_seq: int
    ts: int
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


class OrderRejected(msgspec.Struct, tag=2, **_EV):
    seq: int
    cmd_seq: int
    ts: int
    session: str
    firm: str
    cl_ord_id: str
    instrument: str
    side: int
    price: int
    qty: int
    reason: int         # engine.reasons.RejectReason
    text: str


class Trade(msgspec.Struct, tag=3, **_EV):
    seq: int
    cmd_seq: int
    ts: int
    trade_id: int
    instrument: str
    price: int
    qty: int
    aggressor_side: int
    buy_order_id: int
    sell_order_id: int
    buy_leaves: int     # resting quantity left on the buy order after this fill
    sell_leaves: int


class OrderCancelled(msgspec.Struct, tag=4, **_EV):
    seq: int
    cmd_seq: int
    ts: int
    order_id: int
    session: str        # the order's session; for a requested cancel, the requesting session
    cl_ord_id: str      # the cancel request's id ("" when unsolicited)
    instrument: str
    leaves: int         # quantity taken off the book
    reason: int         # engine.reasons.CancelReason


class OrderReplaced(msgspec.Struct, tag=5, **_EV):
    seq: int
    cmd_seq: int
    ts: int
    order_id: int
    session: str
    cl_ord_id: str       # the order's new client id
    orig_cl_ord_id: str
    instrument: str
    price: int
    qty: int             # new total quantity
    leaves: int
    priority_kept: bool


class CancelRejected(msgspec.Struct, tag=6, **_EV):
    seq: int
    cmd_seq: int
    ts: int
    session: str
    cl_ord_id: str
    orig_cl_ord_id: str
    order_id: int        # 0 when the order is unknown
    is_replace: bool
    reason: int
    text: str


class MassCancelReport(msgspec.Struct, tag=7, **_EV):
    seq: int
    cmd_seq: int
    ts: int
    session: str
    cl_ord_id: str
    firm: str
    target_session: str
    instrument: str
    cancelled: int
    reason: int          # 0 accepted, else RejectReason
    text: str


class BookUpdate(msgspec.Struct, tag=8, **_EV):
    """New state of each price level one command changed, in the order first touched.

    Each level is (side, price, total quantity, number of orders); quantity 0 means deleted.
    """

    seq: int
    cmd_seq: int
    ts: int
    instrument: str
    levels: tuple[tuple[int, int, int, int], ...]


class TradingStatus(msgspec.Struct, tag=9, **_EV):
    seq: int
    cmd_seq: int
    ts: int
    scope: int           # engine.commands.HaltScope
    target: str
    halted: bool
    text: str
    cancelled: int       # orders cancelled by this change (firm halt)


class CreditLimitChanged(msgspec.Struct, tag=10, **_EV):
    seq: int
    cmd_seq: int
    ts: int
    firm: str
    limit: int


class Alert(msgspec.Struct, tag=11, **_EV):
    seq: int
    cmd_seq: int
    ts: int
    source: str
    severity: str
    text: str


Event = Union[
    OrderAccepted, OrderRejected, Trade, OrderCancelled, OrderReplaced, CancelRejected,
    MassCancelReport, BookUpdate, TradingStatus, CreditLimitChanged, Alert,
]
