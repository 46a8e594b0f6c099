"""Engine inputs: the commands of the sequenced log.

Contract:
- A command is a frozen msgspec struct, encoded as a MessagePack array (field order is the wire
  order) with an integer tag first. The schema is documented in spec/engine-protocol.md.
- Gateways submit commands; the sequencer wraps each one in a ``SequencedCommand`` that carries
  the global sequence number and the timestamp (nanoseconds since the epoch, taken once per batch
  by the sequencer, never by the engine) and the (origin, req_id) pair the submitter used. Only
  ``SequencedCommand`` values reach ``engine.core.Engine.apply`` and the journal.
- Enumerations use the FIX 4.4 values so that gateways map them without tables:
  Side 1=buy 2=sell; OrdType 1=market 2=limit; TimeInForce 0=day 3=IOC 4=FOK.
- ``cl_ord_id`` values are unique per ``session`` (the submitter's session, e.g. a FIX session);
  orders are otherwise referred to by the engine's ``order_id``.
"""
from __future__ import annotations

import enum
from typing import Union

import msgspec


class Side(enum.IntEnum):
    BUY = 1
    SELL = 2


class OrdType(enum.IntEnum):
    MARKET = 1
    LIMIT = 2


class TimeInForce(enum.IntEnum):
    DAY = 0
    IOC = 3
    FOK = 4


class HaltScope(enum.IntEnum):
    MARKET = 1
    FIRM = 2
    INSTRUMENT = 3


# gc=False: commands hold only str and int, never a cycle; untracked they cost the
# cycle collector nothing on the hot path.
_CMD = dict(frozen=True, array_like=True, tag_field="t", forbid_unknown_fields=True, gc=False)


class NewOrder(msgspec.Struct, tag=1, **_CMD):
    session: str
    firm: str
    account: str
    cl_ord_id: str
    instrument: str
    side: int
    ord_type: int
    tif: int
    price: int      # price units; 0 for a market order
    qty: int        # shares


class CancelOrder(msgspec.Struct, tag=2, **_CMD):
    session: str
    firm: str
    cl_ord_id: str          # id of this cancel request
    orig_cl_ord_id: str     # the order's current client id in ``session`` ("" if order_id given)
    order_id: int = 0       # engine order id; 0 = look up by orig_cl_ord_id


class ReplaceOrder(msgspec.Struct, tag=3, **_CMD):
    session: str
    firm: str
    cl_ord_id: str          # the order's new client id
    orig_cl_ord_id: str
    price: int              # new limit price
    qty: int                # new total quantity (FIX OrderQty: includes what is executed)
    order_id: int = 0


class MassCancel(msgspec.Struct, tag=4, **_CMD):
    """Cancel every open order matching all non-empty filters (firm, target session, instrument).

    ``session``/``cl_ord_id`` identify the request; at least one filter must be set.
    """

    session: str
    cl_ord_id: str
    firm: str = ""
    target_session: str = ""
    instrument: str = ""


class SetHalt(msgspec.Struct, tag=5, **_CMD):
    """Kill switch: halt or release the whole market, one firm or one instrument.

    Halting a firm cancels its open orders and rejects its new ones until released. Halting an
    instrument or the market rejects new orders and replaces; cancels remain possible.
    """

    scope: int              # HaltScope
    target: str             # firm id or symbol; "" for the market
    halted: bool
    text: str = ""


class SetCreditLimit(msgspec.Struct, tag=6, **_CMD):
    firm: str
    limit: int              # price units


class RaiseAlert(msgspec.Struct, tag=7, **_CMD):
    """An alert raised outside the engine (e.g. a refused node), sequenced so every consumer sees it."""

    source: str
    severity: str           # "info" | "warning" | "critical"
    text: str


Command = Union[NewOrder, CancelOrder, ReplaceOrder, MassCancel, SetHalt, SetCreditLimit, RaiseAlert]

#: Commands only an operator connection may submit.
OPERATOR_COMMANDS = (SetHalt, SetCreditLimit, RaiseAlert)


class SequencedCommand(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    seq: int            # global command sequence number, 1-based, gap-free
    ts: int             # sequencer timestamp, ns since the epoch, non-decreasing
    origin: str         # submitting component's node id ("" for the engine itself)
    req_id: int         # submitter's request id (strictly increasing per origin), 0 if none
    cmd: Command
