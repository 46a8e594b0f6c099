"""Reject and cancel reasons: stable integer codes carried on the wire, with their texts.

The codes are part of the replication-stream contract (documented in spec/engine-protocol.md);
never renumber one, only add.
"""
from __future__ import annotations

import enum


class RejectReason(enum.IntEnum):
    UNKNOWN_INSTRUMENT = 1
    PRICE_OFF_TICK = 2
    PRICE_OUTSIDE_BAND = 3
    QTY_NOT_LOT_MULTIPLE = 4
    QTY_NOT_POSITIVE = 5
    PRICE_NOT_POSITIVE = 6
    UNKNOWN_ORDER = 7
    DUPLICATE_CL_ORD_ID = 8
    INSTRUMENT_HALTED = 9
    FIRM_HALTED = 10
    MARKET_HALTED = 11
    CREDIT_LIMIT = 12
    UNKNOWN_FIRM = 13
    UNKNOWN_ACCOUNT = 14
    INVALID_ORDER_TYPE = 15
    INVALID_TIME_IN_FORCE = 16
    INVALID_SIDE = 17
    QTY_BELOW_EXECUTED = 18
    NOT_OWNER = 19
    NOTHING_TO_CHANGE = 20
    INVALID_COMMAND = 21


REJECT_TEXT: dict[int, str] = {
    RejectReason.UNKNOWN_INSTRUMENT: "unknown instrument",
    RejectReason.PRICE_OFF_TICK: "price is not a multiple of the tick size",
    RejectReason.PRICE_OUTSIDE_BAND: "price outside the price band",
    RejectReason.QTY_NOT_LOT_MULTIPLE: "quantity is not a multiple of the lot size",
    RejectReason.QTY_NOT_POSITIVE: "quantity must be positive",
    RejectReason.PRICE_NOT_POSITIVE: "price must be positive",
    RejectReason.UNKNOWN_ORDER: "unknown order",
    RejectReason.DUPLICATE_CL_ORD_ID: "duplicate client order id in this session",
    RejectReason.INSTRUMENT_HALTED: "instrument is halted",
    RejectReason.FIRM_HALTED: "firm is halted by the kill switch",
    RejectReason.MARKET_HALTED: "market is halted",
    RejectReason.CREDIT_LIMIT: "order would exceed the firm's credit limit",
    RejectReason.UNKNOWN_FIRM: "unknown firm",
    RejectReason.UNKNOWN_ACCOUNT: "unknown account for this firm",
    RejectReason.INVALID_ORDER_TYPE: "invalid order type",
    RejectReason.INVALID_TIME_IN_FORCE: "invalid time in force for this order type",
    RejectReason.INVALID_SIDE: "invalid side",
    RejectReason.QTY_BELOW_EXECUTED: "new quantity is not above the executed quantity",
    RejectReason.NOT_OWNER: "order belongs to another firm",
    RejectReason.NOTHING_TO_CHANGE: "replace changes neither price nor quantity",
    RejectReason.INVALID_COMMAND: "invalid command",
}


class CancelReason(enum.IntEnum):
    """Why an order left the book without being filled."""

    REQUESTED = 1          # OrderCancelRequest
    IOC_REMAINDER = 2      # unfilled rest of an IOC or market order
    FOK_UNFILLED = 3       # fill-or-kill could not be filled in full
    SELF_TRADE = 4         # self-trade prevention
    MASS_CANCEL = 5        # mass cancel request (firm, session or instrument)
    FIRM_HALTED = 6        # kill switch on the firm
    OPERATOR = 7           # operator action
    NO_LIQUIDITY = 8       # market order with nothing (more) to match in the band


CANCEL_TEXT: dict[int, str] = {
    CancelReason.REQUESTED: "cancelled on request",
    CancelReason.IOC_REMAINDER: "unfilled quantity of an immediate order cancelled",
    CancelReason.FOK_UNFILLED: "fill-or-kill order could not be filled in full",
    CancelReason.SELF_TRADE: "cancelled by self-trade prevention",
    CancelReason.MASS_CANCEL: "cancelled by mass cancel",
    CancelReason.FIRM_HALTED: "cancelled: firm halted by the kill switch",
    CancelReason.OPERATOR: "cancelled by the operator",
    CancelReason.NO_LIQUIDITY: "market order: no more liquidity within the price band",
}
