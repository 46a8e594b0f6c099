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


_last_time = [-1, 0]       # the last millisecond converted and its MDEntryTime


def _time_of(ts_ns: int) -> int:
    """MDEntryTime as HHMMSSsss (UTC), as the Moscow Exchange feeds carry it (converted once
    per millisecond: the events of one engine batch share a timestamp)."""
    ms = ts_ns // 1_000_000
    last = _last_time
    if ms == last[0]:
        return last[1]
    last[1] = t = _hhmmss_ms(ms)
    last[0] = ms
    return t


def _hhmmss_ms(ms: int) -> int:
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
        out: list[dict] = []
        when = _time_of(ev.ts)
        levels = ev.levels
        if len(levels) == 1 and self.incremental:     # the common event: one level
            side, price, qty, orders = levels[0]
            sides[side].set(price, qty, orders)
            self._touched(inst, side, [price], when, out)
            return out
        touched: dict[int, list[int]] = {}
        for side, price, qty, orders in levels:
            sides[side].set(price, qty, orders)
            touched.setdefault(side, []).append(price)
        for side in (1, 2):
            prices = touched.get(side)
            if prices is None:
                continue
            if not self.incremental:
                self._diff(inst, side, when, out)
            else:
                self._touched(inst, side, prices, when, out)
        return out

    def _touched(self, inst: _Instrument, side: int, prices: list[int], when: int,
                 out: list) -> None:
        """The entries ``_diff`` gives, found from the touched levels alone. Before the
        event the published top is the book's first ``depth`` levels; the untouched levels
        keep their order, so besides the touched levels only the top's edge can change:
        untouched levels move up into the top when touched ones leave it, or are pushed out
        when touched ones enter it. Deletes (in book order) come first, then new and changed
        levels in position order, as in ``_diff``."""
        s = inst.sides[side]
        published, levels, depth, keys, sign = s.published, s.levels, self.depth, s.keys, s.sign
        if len(prices) == 1:                # the quick answers for one level
            price = prices[0]
            was = published.get(price)
            now = levels.get(price)
            if was is not None and now is not None:     # still in the top, same position
                if was != now:
                    published[price] = now
                    inst.rpt_seq += 1
                    out.append({"MDUpdateAction": CHANGE,
                                "MDEntryType": BID if side == 1 else OFFER,
                                "Symbol": inst.symbol, "RptSeq": inst.rpt_seq,
                                "MDEntryPx": (price, self.exp), "MDEntrySize": now[0],
                                "NumberOfOrders": now[1],
                                "MDPriceLevel": bisect_left(keys, sign * price) + 1,
                                "MDEntryTime": when})
                return
            if was is None and (now is None or bisect_left(keys, sign * price) >= depth):
                return                      # below the top before and after
        else:
            prices = list(dict.fromkeys(prices))
        gone: list[int] = []                        # prices leaving the top
        shown: list[tuple[int, int, object]] = []   # (position, price, published before)
        had = 0                                     # touched levels published before
        kept = 0                                    # touched levels in the top after
        for price in prices:
            was = published.get(price)
            now = levels.get(price)
            if was is not None:
                had += 1
            if now is not None:
                pos = bisect_left(keys, sign * price)
                if pos < depth:
                    kept += 1
                    if was != now:
                        shown.append((pos, price, was))
                    continue
            if was is not None:
                gone.append(price)
        size = min(depth, len(keys))
        before = len(published) - had               # untouched levels in the top before
        after = size - kept                         # ... and after
        if before != after:
            touched = set(prices)
            if after > before:                      # the last untouched ones of the top now
                i = size - 1
                for _ in range(after - before):
                    while keys[i] * sign in touched:
                        i -= 1
                    shown.append((i, keys[i] * sign, None))
                    i -= 1
            else:                                   # the first untouched ones past the top
                i = depth
                for _ in range(before - after):
                    while keys[i] * sign in touched:
                        i += 1
                    gone.append(keys[i] * sign)
                    i += 1
        etype = BID if side == 1 else OFFER
        exp, sym = self.exp, inst.symbol
        if gone:
            if len(gone) > 1:
                gone.sort(key=sign.__mul__)
            for price in gone:
                del published[price]
                inst.rpt_seq += 1
                out.append({"MDUpdateAction": DELETE, "MDEntryType": etype, "Symbol": sym,
                            "RptSeq": inst.rpt_seq, "MDEntryPx": (price, exp),
                            "MDEntryTime": when})
        if shown:
            if len(shown) > 1:
                shown.sort()
            for pos, price, was in shown:
                qty, n = published[price] = levels[price]
                inst.rpt_seq += 1
                out.append({"MDUpdateAction": NEW if was is None else CHANGE,
                            "MDEntryType": etype, "Symbol": sym, "RptSeq": inst.rpt_seq,
                            "MDEntryPx": (price, exp), "MDEntrySize": qty,
                            "NumberOfOrders": n, "MDPriceLevel": pos + 1,
                            "MDEntryTime": when})

    def _diff(self, inst: _Instrument, side: int, when: int, out: list) -> None:
        s = inst.sides[side]
        top = s.top(self.depth)
        new = {p: (q, n) for p, q, n in top}
        old = s.published
        etype = BID if side == 1 else OFFER
        exp = self.exp
        sym = inst.symbol
        gone = [price for price in old if price not in new]
        if len(gone) > 1:               # in book order (``published`` may be in any order)
            gone.sort(key=s.sign.__mul__)
        for price in gone:
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
