"""Market-by-price books for the feed, built from engine events (pure, deterministic).

Contract:
- ``FeedBooks.on_event(ev)`` takes every engine event in order and returns the market-data
  entries it causes, as dicts keyed by the FAST template's field names (MDUpdateAction,
  MDEntryType, Symbol, RptSeq, MDEntryPx as an exact ``(mantissa, exponent)`` pair,
  MDEntrySize, NumberOfOrders, MDPriceLevel, TradeID, AggressorSide, MDEntryTime).
- Books are published to ``depth`` levels per side. A level is identified by its price:
  ``MDUpdateAction`` 0 = new level, 1 = changed quantity or order count, 2 = level deleted
  (also when it leaves the top ``depth`` because better levels arrived), with the level's
  1-based position after the change in ``MDPriceLevel``. Deletes come before news, so a
  consumer applying entries in order never holds more than ``depth`` levels.
- Trades are entries of type ``2`` (price, size, TradeID, AggressorSide 1 buy / 2 sell).
- ``RptSeq`` counts entries per instrument, gap-free from 1: a consumer detects a lost entry of
  an instrument by a jump, and a snapshot's RptSeq tells which entries it already contains.
- ``snapshot(symbol)`` gives the top ``depth`` levels of both sides with the instrument's
  current RptSeq, i.e. the state after the entry with that RptSeq.
"""
from __future__ import annotations

from bisect import bisect_left, insort

from engine.events import BookUpdate, Trade
from engine.refdata import MarketRefData

BID, OFFER, TRADE = "0", "1", "2"
NEW, CHANGE, DELETE = 0, 1, 2


def _time_of(ts_ns: int) -> int:
    """MDEntryTime as HHMMSSsss (UTC), as the Moscow Exchange feeds carry it."""
    ms = ts_ns // 1_000_000
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return ((h % 24) * 10000 + m * 100 + s) * 1000 + ms


class _Side:
    __slots__ = ("levels", "keys", "sign", "published")

    def __init__(self, sign: int) -> None:
        self.levels: dict[int, tuple[int, int]] = {}   # price -> (qty, orders)
        self.keys: list[int] = []                     # sign * price, ascending = best first
        self.sign = sign
        self.published: dict[int, tuple[int, int]] = {}

    def set(self, price: int, qty: int, orders: int) -> None:
        key = self.sign * price
        if qty:
            if price not in self.levels:
                insort(self.keys, key)
            self.levels[price] = (qty, orders)
        elif price in self.levels:
            del self.levels[price]
            del self.keys[bisect_left(self.keys, key)]

    def top(self, depth: int) -> list[tuple[int, int, int]]:
        sign, levels = self.sign, self.levels
        return [(k * sign, *levels[k * sign]) for k in self.keys[:depth]]


class _Instrument:
    __slots__ = ("symbol", "sides", "rpt_seq", "last_trade")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.sides = {1: _Side(-1), 2: _Side(1)}     # bids best = highest price
        self.rpt_seq = 0
        self.last_trade: tuple[int, int] | None = None


class FeedBooks:
    def __init__(self, refdata: MarketRefData, depth: int = 20, *,
                 incremental: bool = True) -> None:
        self.exp = -refdata.price_decimals
        self.depth = depth
        #: False: recompute and compare the whole published top on every book event (the
        #: reference the tests compare the incremental path with)
        self.incremental = incremental
        self.instruments = {i.symbol: _Instrument(i.symbol) for i in refdata.instruments}

    def on_event(self, ev) -> list[dict]:
        t = type(ev)
        if t is BookUpdate:
            return self._book(ev)
        if t is Trade:
            return self._trade(ev)
        return []

    def _trade(self, ev: Trade) -> list[dict]:
        inst = self.instruments.get(ev.instrument)
        if inst is None:
            return []
        inst.rpt_seq += 1
        inst.last_trade = (ev.price, ev.qty)
        return [{"MDUpdateAction": NEW, "MDEntryType": TRADE, "Symbol": inst.symbol,
                 "RptSeq": inst.rpt_seq, "MDEntryPx": (ev.price, self.exp),
                 "MDEntrySize": ev.qty, "MDEntryTime": _time_of(ev.ts),
                 "TradeID": ev.trade_id, "AggressorSide": ev.aggressor_side}]

    def _book(self, ev: BookUpdate) -> list[dict]:
        inst = self.instruments.get(ev.instrument)
        if inst is None:
            return []
        sides = inst.sides
        touched: dict[int, list[int]] = {}
        for side, price, qty, orders in ev.levels:
            sides[side].set(price, qty, orders)
            touched.setdefault(side, []).append(price)
        out: list[dict] = []
        when = _time_of(ev.ts)
        for side in (1, 2):
            prices = touched.get(side)
            if prices is not None and (not self.incremental
                                       or not self._changes_only(inst, side, prices, when, out)):
                self._diff(inst, side, when, out)
        return out

    def _changes_only(self, inst: _Instrument, side: int, prices: list[int], when: int,
                      out: list) -> bool:
        """The cheap path, giving exactly what ``_diff`` would: when no touched level enters
        or leaves the published top, the entries are the touched published levels whose
        quantity or order count changed, in book order. Returns False (nothing done) when
        the set of published levels changes; ``_diff`` then recomputes the top."""
        s = inst.sides[side]
        published, levels, depth = s.published, s.levels, self.depth
        changed = None
        for price in prices:
            now = levels.get(price)
            if price in published:
                if now is None:
                    return False                    # a published level is gone
                if published[price] != now:
                    (changed := changed or []).append(price)
            elif now is not None and bisect_left(s.keys, s.sign * price) < depth:
                return False                        # a new level enters the top
        if changed:
            if len(changed) > 1:
                changed = sorted(set(changed), key=s.sign.__mul__)
            etype = BID if side == 1 else OFFER
            exp, sym, keys = self.exp, inst.symbol, s.keys
            for price in changed:
                qty, n = levels[price]
                published[price] = (qty, n)
                inst.rpt_seq += 1
                out.append({"MDUpdateAction": CHANGE, "MDEntryType": etype, "Symbol": sym,
                            "RptSeq": inst.rpt_seq, "MDEntryPx": (price, exp),
                            "MDEntrySize": qty, "NumberOfOrders": n,
                            "MDPriceLevel": bisect_left(keys, s.sign * price) + 1,
                            "MDEntryTime": when})
        return True

    def _diff(self, inst: _Instrument, side: int, when: int, out: list) -> None:
        s = inst.sides[side]
        top = s.top(self.depth)
        new = {p: (q, n) for p, q, n in top}
        old = s.published
        etype = BID if side == 1 else OFFER
        exp = self.exp
        sym = inst.symbol
        for price in old:
            if price not in new:
                inst.rpt_seq += 1
                out.append({"MDUpdateAction": DELETE, "MDEntryType": etype, "Symbol": sym,
                            "RptSeq": inst.rpt_seq, "MDEntryPx": (price, exp),
                            "MDEntryTime": when})
        for pos, (price, qty, n) in enumerate(top, 1):
            prev = old.get(price)
            if prev == (qty, n):
                continue
            inst.rpt_seq += 1
            out.append({"MDUpdateAction": NEW if prev is None else CHANGE, "MDEntryType": etype,
                        "Symbol": sym, "RptSeq": inst.rpt_seq, "MDEntryPx": (price, exp),
                        "MDEntrySize": qty, "NumberOfOrders": n, "MDPriceLevel": pos,
                        "MDEntryTime": when})
        s.published = new

    def snapshot(self, symbol: str) -> tuple[int, list[dict]]:
        """(RptSeq, entries) of the published book of ``symbol`` and its last trade."""
        inst = self.instruments[symbol]
        entries = []
        for side, etype in ((1, BID), (2, OFFER)):
            for pos, (price, qty, n) in enumerate(inst.sides[side].top(self.depth), 1):
                entries.append({"MDEntryType": etype, "MDEntryPx": (price, self.exp),
                                "MDEntrySize": qty, "NumberOfOrders": n, "MDPriceLevel": pos})
        if inst.last_trade is not None:
            entries.append({"MDEntryType": TRADE, "MDEntryPx": (inst.last_trade[0], self.exp),
                            "MDEntrySize": inst.last_trade[1]})
        return inst.rpt_seq, entries
