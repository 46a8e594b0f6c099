"""One instrument's order book: price levels in price-time priority.

Contract:
- Prices and quantities are integers (price units and shares, see ``engine.refdata``).
- Every resting order sits in exactly one ``Level``; a level holds its orders in a dict
  ``order_id -> Order`` whose insertion order *is* the time priority (first = oldest), so
  appending, removing any order and moving an order to the back are all O(1).
- A level also carries its aggregated state: ``qty`` is the sum of its orders' ``leaves`` and
  ``len(orders)`` the order count. A level exists only while it holds at least one order.
- Levels are addressed by a signed *key*: ``+price`` for bids, ``-price`` for asks, so that on
  both sides the better price has the larger key. ``Book.levels`` maps key -> Level and
  ``bid_keys`` / ``ask_keys`` are ascending lists of the keys of each side: the best level of a
  side is always the *last* element (O(1) to read, pop or append).
- An incoming order with key ``k`` (``+limit`` for a buy, ``-limit`` for a sell) crosses the
  opposite level with key ``j`` iff ``j >= -k``.
- The book never matches by itself: matching (with self-trade prevention, credit and events)
  is ``engine.core``; it reads and updates these structures directly on its hot path and keeps
  the invariants above. Nothing here iterates over a set or depends on hash seeds.
- ``export_levels`` / ``restore`` carry the levels through a snapshot (``engine.snapshot``):
  each side's levels in key order with their orders' ids in time priority; the levels' ``qty``
  and the key lists are rebuilt from the orders.
"""
from __future__ import annotations

from bisect import bisect_left, insort

from engine.refdata import Instrument

BUY = 1
SELL = 2


def side_key(side: int, price: int) -> int:
    """The level key of ``price`` on ``side``: better prices have larger keys on both sides."""
    return price if side == BUY else -price


class Order:
    """A live order. Mutable; owned by the engine, referenced by its book level while resting."""

    __slots__ = (
        "order_id", "session", "firm", "account", "cl_ord_id", "instrument", "side",
        "ord_type", "tif", "price", "qty", "leaves", "key", "level", "book", "risk", "ids",
    )

    def __init__(self, order_id: int, session: str, firm: str, account: str, cl_ord_id: str,
                 instrument: str, side: int, ord_type: int, tif: int, price: int, qty: int,
                 book: "Book | None" = None, risk=None) -> None:
        self.order_id = order_id
        self.session = session
        self.firm = firm
        self.account = account
        self.cl_ord_id = cl_ord_id
        self.instrument = instrument
        self.side = side
        self.ord_type = ord_type
        self.tif = tif
        self.price = price          # limit price (0 for a market order)
        self.qty = qty              # total quantity (FIX OrderQty, includes what is executed)
        self.leaves = qty           # open quantity; 0 once filled or cancelled
        self.key = price if side == BUY else -price
        self.level: Level | None = None   # the level it rests in, None when not resting
        self.book = book
        self.risk = risk            # engine.risk.FirmRisk of its firm
        self.ids: dict | None = None   # the session dict its current cl_ord_id is live in

    @property
    def cum_qty(self) -> int:
        """Executed quantity of a live order (qty = cum + leaves; leaves is 0 once dead)."""
        return self.qty - self.leaves

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"Order(id={self.order_id}, {self.instrument} side={self.side} "
                f"px={self.price} qty={self.qty} leaves={self.leaves})")


class Level:
    """One price level of one side: FIFO of orders plus aggregated quantity."""

    __slots__ = ("key", "side", "price", "qty", "orders")

    def __init__(self, key: int) -> None:
        self.key = key
        self.side = BUY if key > 0 else SELL
        self.price = key if key > 0 else -key
        self.qty = 0                            # sum of the orders' leaves
        self.orders: dict[int, Order] = {}      # order_id -> Order, oldest first

    def state(self) -> tuple[int, int, int, int]:
        """(side, price, qty, order count); (side, price, 0, 0) once the level is gone."""
        return (self.side, self.price, self.qty, len(self.orders))


class Book:
    """The order book of one instrument (see the module docstring for the invariants)."""

    __slots__ = ("instrument", "symbol", "tick", "lot", "band_low", "band_high", "min_price",
                 "halted", "levels", "bid_keys", "ask_keys")

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        # a tick or lot below 1 would make every price / quantity check meaningless (and divide
        # by zero): such reference data is treated as tick / lot 1
        self.tick = instrument.tick if instrument.tick > 0 else 1
        self.lot = instrument.lot if instrument.lot > 0 else 1
        self.band_low = instrument.band_low
        self.band_high = instrument.band_high
        self.min_price = max(instrument.band_low, 1)   # lowest acceptable limit price
        self.halted = False
        self.levels: dict[int, Level] = {}
        self.bid_keys: list[int] = []   # ascending; best bid (highest price) last
        self.ask_keys: list[int] = []   # ascending keys = -price; best ask (lowest price) last

    # -- mutation -------------------------------------------------------------------------
    def add(self, order: Order) -> Level:
        """Append ``order`` (with its ``key`` and ``leaves`` set) at the back of its level."""
        key = order.key
        levels = self.levels
        lvl = levels.get(key)
        if lvl is None:
            lvl = levels[key] = Level(key)
            keys = self.bid_keys if key > 0 else self.ask_keys
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                insort(keys, key)
        lvl.orders[order.order_id] = order
        lvl.qty += order.leaves
        order.level = lvl
        return lvl

    def remove(self, order: Order) -> Level:
        """Take a resting ``order`` off the book (its ``leaves`` are left untouched).

        Returns its former level, whose ``state()`` is the level's new state (qty 0 if gone).
        """
        lvl = order.level
        lo = lvl.orders
        del lo[order.order_id]
        lvl.qty -= order.leaves
        order.level = None
        if not lo:
            self.drop_level(lvl.key)
        return lvl

    def drop_level(self, key: int) -> None:
        """Forget the (empty) level ``key``."""
        del self.levels[key]
        keys = self.bid_keys if key > 0 else self.ask_keys
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def reduce(self, order: Order, qty: int) -> None:
        """Lower a resting order's leaves by ``qty`` in place (keeps time priority)."""
        order.leaves -= qty
        order.level.qty -= qty

    def move_to_back(self, order: Order) -> None:
        """Send a resting order to the back of its level's queue (loses time priority)."""
        lo = order.level.orders
        oid = order.order_id
        del lo[oid]
        lo[oid] = order

    # -- snapshots ------------------------------------------------------------------------
    def export_levels(self) -> tuple[list[tuple[int, list[int]]], list[tuple[int, list[int]]]]:
        """(bids, asks): each side's levels in ascending key order (best last) as
        (price, order ids oldest first)."""
        levels = self.levels
        return ([(levels[k].price, list(levels[k].orders)) for k in self.bid_keys],
                [(levels[k].price, list(levels[k].orders)) for k in self.ask_keys])

    def restore(self, halted: bool, bids, asks, orders: dict[int, Order]) -> int:
        """Rebuild an empty book from ``export_levels`` output; ``orders`` maps order id to its
        (not yet resting) Order. Returns how many orders were placed; ValueError if the levels
        are inconsistent (unordered, empty, an order of another book, side or price)."""
        if self.levels:
            raise ValueError(f"book {self.symbol}: restore needs an empty book")
        self.halted = bool(halted)
        placed = 0
        for side, side_levels, keys in ((BUY, bids, self.bid_keys), (SELL, asks, self.ask_keys)):
            prev = None
            for price, ids in side_levels:
                key = price if side == BUY else -price
                if price <= 0 or not ids or (prev is not None and key <= prev):
                    raise ValueError(f"book {self.symbol}: bad level {price} (side {side})")
                lvl = Level(key)
                lo = lvl.orders
                qty = 0
                for oid in ids:
                    o = orders.get(oid)
                    if o is None or o.level is not None or o.book is not self or o.key != key:
                        raise ValueError(f"book {self.symbol}: order {oid} does not belong at "
                                         f"level {price} (side {side})")
                    lo[oid] = o
                    qty += o.leaves
                    o.level = lvl
                lvl.qty = qty
                self.levels[key] = lvl
                keys.append(key)
                prev = key
                placed += len(ids)
        return placed

    # -- queries --------------------------------------------------------------------------
    def best(self, side: int) -> int:
        """Best price of ``side``, 0 when that side is empty."""
        keys = self.bid_keys if side == BUY else self.ask_keys
        if not keys:
            return 0
        key = keys[-1]
        return key if key > 0 else -key

    def depth(self, side: int) -> list[tuple[int, int, int]]:
        """(price, qty, order count) for every level of ``side``, best first."""
        keys = self.bid_keys if side == BUY else self.ask_keys
        levels = self.levels
        out = []
        for key in reversed(keys):
            lvl = levels[key]
            out.append((lvl.price, lvl.qty, len(lvl.orders)))
        return out

    def level_state(self, key: int) -> tuple[int, int, int, int]:
        """(side, price, qty, count) of the level ``key``; qty and count 0 if it does not exist."""
        lvl = self.levels.get(key)
        if lvl is None:
            return (BUY, key, 0, 0) if key > 0 else (SELL, -key, 0, 0)
        return (lvl.side, lvl.price, lvl.qty, len(lvl.orders))

    def queue(self, side: int, price: int) -> list[Order]:
        """The orders resting at ``price`` on ``side``, in time priority."""
        lvl = self.levels.get(side_key(side, price))
        return [] if lvl is None else list(lvl.orders.values())

    def crossed(self) -> bool:
        """True if the best bid is at or above the best ask (never true between commands)."""
        return bool(self.bid_keys and self.ask_keys and self.bid_keys[-1] >= -self.ask_keys[-1])

    def order_count(self) -> int:
        return sum(len(lvl.orders) for lvl in self.levels.values())

    def __len__(self) -> int:
        """Number of price levels (both sides)."""
        return len(self.levels)
