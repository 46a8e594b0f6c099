"""The index calculator: pure, exact and deterministic.

Contract:
- ``IndexCalculator(definitions, market)`` computes every configured index from the engine's
  replication stream. Feed it every event in sequence order with ``on_event(ev)``; it returns
  the codes of the indices whose state changed (possibly with repeats). It reads no clock and
  does no I/O: time is the events' ``ts``. Two calculators fed the same events hold identical
  states (``value(code)`` equal field for field), which is how a restarted server that replays
  the stream from seq 1 reproduces every value.
- Formula (MOEX): ``I = sum(P_i * N_i * FF_i * W_i) / D``. ``P_i`` is the constituent's last
  trade price (its reference price until it trades), ``N_i`` the shares issued, ``FF_i`` the
  free-float coefficient, ``W_i`` the weight-cap coefficient and ``D`` the divisor. The
  numerator is the index capitalisation.
- Exact arithmetic: ``N_i * FF_i * W_i`` is held as an integer scaled by ``10**16`` (FF has at
  most 6 decimals, W exactly 10), prices are integer price units, so the capitalisation is an
  exact integer; the divisor is an exact fraction (two integers). No float and no rounded
  intermediate is ever used for a value: the published value is the exact quotient rounded
  half-even to 2 decimals, as are the capitalisation and change %; the divisor is shown rounded
  half-even to 10 decimals.
- Weight caps are set when a basket comes into force (at start, with reference prices, and at
  each rebalance, with the last prices): starting from the configured ``weight_cap`` (1 by
  default), every constituent whose weight exceeds ``weight_cap_pct`` is capped and the excess
  is redistributed over the others in proportion to their capitalisation, repeating until no
  weight exceeds the cap (``cap_multipliers``); the resulting coefficient is rounded down to 10
  decimals. Between rebalances the coefficients are fixed and weights drift with prices.
- Divisor: the configured ``divisor``; or ``base_capitalisation / base_value``; or the
  capitalisation at reference prices / ``base_value``. At a rebalance
  ``D_new = D_old * MC_new / MC_old`` with both capitalisations at the same (last) prices, so the
  exact value is unchanged: the index is continuous across a rebalance.
- Per index state: value, open/high/low (of the day, from the first constituent trade), previous
  close, change and change %, capitalisation, divisor, time (ts of the event that made the
  state), ``seq`` (+1 per state: constituent trade, rebalance, day change) and ``event_seq``.
  A trading day is a UTC calendar day of the events' ``ts``; at the first event of a new day the
  previous close becomes the last value and open/high/low are reset. The first previous close is
  the value at reference prices.
- A rebalance or a day change due at time t is applied when the first event with ``ts >= t``
  arrives, before that event; its state carries t as time.
"""
from __future__ import annotations

import datetime
from fractions import Fraction
from typing import Iterable, Sequence

from engine.events import Trade
from engine.refdata import MarketRefData
from index_server.definitions import (
    FREE_FLOAT_DECIMALS, WEIGHT_CAP_DECIMALS, Basket, IndexDefinition, IndexValue,
)

__all__ = ["IndexCalculator", "cap_multipliers", "round_half_even", "fmt_scaled",
           "FACTOR_DECIMALS", "DAY_NS"]

#: Decimal places of the integer factor N * FF * W.
FACTOR_DECIMALS = FREE_FLOAT_DECIMALS + WEIGHT_CAP_DECIMALS
_FF_SCALE = 10 ** FREE_FLOAT_DECIMALS
_WC_SCALE = 10 ** WEIGHT_CAP_DECIMALS
DAY_NS = 86_400 * 1_000_000_000
_NEVER = 1 << 126
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def round_half_even(num: int, den: int) -> int:
    """``num / den`` (``den > 0``) rounded to the nearest integer, ties to even."""
    q, r = divmod(num, den)
    r2 = r + r
    if r2 > den or (r2 == den and q & 1):
        q += 1
    return q


def fmt_scaled(q: int, places: int) -> str:
    """Integer ``q`` scaled by ``10**places`` as a decimal string (``fmt_scaled(-5, 2)``: ``-0.05``)."""
    sign = "-" if q < 0 else ""
    digits = str(-q if q < 0 else q).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}" if places else sign + digits


def cap_multipliers(caps: Sequence[Fraction], cap: Fraction) -> list[Fraction]:
    """Multipliers ``m_i <= 1`` so that no weight of ``caps[i] * m_i`` exceeds ``cap``.

    ``caps`` are the constituents' (positive) capitalisations before capping and ``cap`` the
    largest weight (a fraction of 1, with ``len(caps) * cap >= 1``). Constituents over the cap
    are capped at exactly ``cap`` of the new total; the others keep their capitalisation and so
    share the excess in proportion. Repeats until no uncapped weight exceeds the cap.
    """
    n = len(caps)
    capped: set[int] = set()
    while len(capped) < n:
        free = sum(c for i, c in enumerate(caps) if i not in capped)
        remaining = 1 - len(capped) * cap
        over = {i for i, c in enumerate(caps) if i not in capped and c * remaining > cap * free}
        if not over:
            break
        capped |= over
    if not capped:
        return [Fraction(1)] * n
    if len(capped) == n:               # n * cap == 1: equal weights
        low = min(caps)
        return [low / c for c in caps]
    free = sum(c for i, c in enumerate(caps) if i not in capped)
    target = cap * free / (1 - len(capped) * cap)   # capitalisation of each capped constituent
    return [target / c if i in capped else Fraction(1) for i, c in enumerate(caps)]


class _Slot:
    """A constituent in force: its integer factor N * FF * W scaled by 10**FACTOR_DECIMALS."""

    __slots__ = ("symbol", "shares", "ff_units", "wc_units", "factor")

    def __init__(self, symbol: str, shares: int, ff_units: int, wc_units: int) -> None:
        self.symbol = symbol
        self.shares = shares
        self.ff_units = ff_units
        self.wc_units = wc_units
        self.factor = shares * ff_units * wc_units


class _Index:
    __slots__ = ("d", "code", "slots", "cap_pct", "mc", "dnum", "dden", "mul", "den", "value",
                 "open", "high", "low", "prev_close", "seq", "event_seq", "time", "pending")

    def __init__(self, d: IndexDefinition) -> None:
        self.d = d
        self.code = d.code
        self.slots: list[_Slot] = []
        self.cap_pct = d.basket.weight_cap_pct
        self.mc = 0
        self.dnum = self.dden = 1
        self.mul = self.den = 1
        self.value = 0
        self.open: int | None = None
        self.high: int | None = None
        self.low: int | None = None
        self.prev_close = 0
        self.seq = 0
        self.event_seq = 0
        self.time = 0
        self.pending: list[Basket] = list(d.rebalances)

    @property
    def next_rebalance(self) -> int:
        return self.pending[0].effective_ns if self.pending else _NEVER


class IndexCalculator:
    def __init__(self, definitions: Iterable[IndexDefinition], market: MarketRefData) -> None:
        self.price_decimals = market.price_decimals
        self._prices: dict[str, int] = {i.symbol: i.ref_price for i in market.instruments}
        self._unit = 10 ** (FACTOR_DECIMALS + market.price_decimals)
        self._indices: dict[str, _Index] = {}
        self._by_symbol: dict[str, list[tuple[_Index, _Slot]]] = {}
        self.day: int | None = None      # UTC day number of the last event (None: no event yet)
        self._due = 0                    # earliest time at which advance() has work
        for d in definitions:
            if d.code in self._indices:
                raise ValueError(f"duplicate index code {d.code!r}")
            idx = _Index(d)
            self._indices[d.code] = idx
            self._install(idx, d.basket)
            if d.divisor is not None:
                divisor = Fraction(d.divisor)
            elif d.base_capitalisation is not None:
                divisor = Fraction(d.base_capitalisation) / Fraction(d.base_value)
            else:
                divisor = Fraction(idx.mc, self._unit) / Fraction(d.base_value)
            self._set_divisor(idx, divisor)
            idx.value = idx.prev_close = self._exact_value(idx)
        self._reindex()

    # ------------------------------------------------------------------ feeding

    @property
    def codes(self) -> list[str]:
        return list(self._indices)

    def on_event(self, ev) -> list[str]:
        """Apply one replication event; the codes of the indices whose state changed."""
        if ev.ts >= self._due:
            changed = self.advance(ev.ts, ev.seq)
            if type(ev) is Trade:
                changed += self.on_trade(ev.instrument, ev.price, ev.ts, ev.seq)
            return changed
        if type(ev) is Trade:
            return self.on_trade(ev.instrument, ev.price, ev.ts, ev.seq)
        return []

    def on_trade(self, symbol: str, price: int, ts: int, event_seq: int) -> list[str]:
        """A trade at ``price`` (price units). Call ``advance(ts)`` first (``on_event`` does)."""
        old = self._prices.get(symbol)
        if old is None:
            return []
        self._prices[symbol] = price
        entries = self._by_symbol.get(symbol)
        if not entries:
            return []
        delta = price - old
        out = []
        for idx, slot in entries:
            idx.mc += delta * slot.factor
            q = self._exact_value(idx)
            idx.value = q
            if idx.open is None:
                idx.open = idx.high = idx.low = q
            elif q > idx.high:
                idx.high = q
            elif q < idx.low:
                idx.low = q
            idx.seq += 1
            idx.time = ts
            idx.event_seq = event_seq
            out.append(idx.code)
        return out

    def advance(self, ts: int, event_seq: int = 0) -> list[str]:
        """Apply the day changes and rebalances due at or before ``ts``, in time order."""
        changed: list[str] = []
        if self.day is None:
            self.day = ts // DAY_NS
        while True:
            next_day = (self.day + 1) * DAY_NS
            next_rb = min((i.next_rebalance for i in self._indices.values()), default=_NEVER)
            if min(next_day, next_rb) > ts:
                break
            if next_day <= next_rb:
                self.day = min(ts, next_rb) // DAY_NS
                start = self.day * DAY_NS
                for idx in self._indices.values():
                    idx.prev_close = idx.value
                    idx.open = idx.high = idx.low = None
                    self._stamp(idx, start, event_seq)
                    changed.append(idx.code)
            else:
                for idx in self._indices.values():
                    if idx.next_rebalance == next_rb:
                        self._rebalance(idx, idx.pending.pop(0), event_seq)
                        changed.append(idx.code)
        self._due = min((self.day + 1) * DAY_NS,
                        min((i.next_rebalance for i in self._indices.values()), default=_NEVER))
        return changed

    # ------------------------------------------------------------------ reading

    def value(self, code: str) -> IndexValue:
        """The current state of index ``code`` (KeyError if unknown)."""
        idx = self._indices[code]
        d = idx.d
        q = idx.value
        prev = idx.prev_close
        change = q - prev
        pct = round_half_even(change * 10_000, prev) if prev > 0 else 0
        t = idx.time
        return IndexValue(
            code=d.code, name=d.name, currency=d.currency, seq=idx.seq, event_seq=idx.event_seq,
            time=t, time_utc=_utc(t), value=fmt_scaled(q, 2),
            open=None if idx.open is None else fmt_scaled(idx.open, 2),
            high=None if idx.high is None else fmt_scaled(idx.high, 2),
            low=None if idx.low is None else fmt_scaled(idx.low, 2),
            prev_close=fmt_scaled(prev, 2), change=fmt_scaled(change, 2),
            change_pct=fmt_scaled(pct, 2),
            capitalisation=fmt_scaled(round_half_even(idx.mc * 100, self._unit), 2),
            divisor=fmt_scaled(round_half_even(idx.dnum * 10**10, idx.dden), 10))

    def values(self) -> list[IndexValue]:
        return [self.value(c) for c in self._indices]

    def exact(self, code: str) -> tuple[Fraction, Fraction]:
        """(exact value, exact divisor) of index ``code``, for checks and tests."""
        idx = self._indices[code]
        divisor = Fraction(idx.dnum, idx.dden)
        return Fraction(idx.mc, self._unit) / divisor, divisor

    def composition(self, code: str) -> list[dict]:
        """The constituents in force: coefficients, last price, capitalisation and weight."""
        idx = self._indices[code]
        total = idx.mc
        out = []
        for s in idx.slots:
            mc = self._prices[s.symbol] * s.factor
            out.append({
                "symbol": s.symbol,
                "shares": s.shares,
                "free_float": fmt_scaled(s.ff_units, FREE_FLOAT_DECIMALS),
                "weight_cap": fmt_scaled(s.wc_units, WEIGHT_CAP_DECIMALS),
                "price": fmt_scaled(self._prices[s.symbol], self.price_decimals),
                "capitalisation": fmt_scaled(round_half_even(mc * 100, self._unit), 2),
                "weight_pct": fmt_scaled(round_half_even(mc * 1_000_000, total), 4),
            })
        return out

    def weight_cap_pct(self, code: str) -> str:
        return str(self._indices[code].cap_pct)

    # ------------------------------------------------------------------ internals

    def _exact_value(self, idx: _Index) -> int:
        return round_half_even(idx.mc * idx.mul, idx.den)

    def _set_divisor(self, idx: _Index, divisor: Fraction) -> None:
        idx.dnum, idx.dden = divisor.numerator, divisor.denominator
        idx.mul = idx.dden * 100                 # value in hundredths of a point
        idx.den = idx.dnum * self._unit

    def _install(self, idx: _Index, basket: Basket) -> None:
        """Put ``basket`` in force, with weight caps computed at the current prices."""
        cap = Fraction(basket.weight_cap_pct) / 100
        prices = self._prices
        caps = [Fraction(prices[c.symbol] * c.shares) * Fraction(c.free_float) *
                Fraction(c.weight_cap) for c in basket.constituents]
        mults = cap_multipliers(caps, cap)
        slots = []
        for c, m in zip(basket.constituents, mults):
            w = Fraction(c.weight_cap) * m * _WC_SCALE
            wc_units = max(1, w.numerator // w.denominator)           # rounded down
            ff_units = int(c.free_float * _FF_SCALE)                  # exact: <= 6 decimals
            slots.append(_Slot(c.symbol, c.shares, ff_units, wc_units))
        idx.slots = slots
        idx.cap_pct = basket.weight_cap_pct
        idx.mc = sum(prices[s.symbol] * s.factor for s in slots)

    def _rebalance(self, idx: _Index, basket: Basket, event_seq: int) -> None:
        old_mc = idx.mc
        self._install(idx, basket)
        divisor = Fraction(idx.dnum, idx.dden) * Fraction(idx.mc, old_mc)
        self._set_divisor(idx, divisor)
        q = self._exact_value(idx)
        assert q == idx.value, "a rebalance must keep the value"
        self._reindex()
        self._stamp(idx, basket.effective_ns, event_seq)

    def _stamp(self, idx: _Index, t: int, event_seq: int) -> None:
        idx.seq += 1
        idx.time = t
        idx.event_seq = event_seq

    def _reindex(self) -> None:
        by_symbol: dict[str, list[tuple[_Index, _Slot]]] = {}
        for idx in self._indices.values():
            for s in idx.slots:
                by_symbol.setdefault(s.symbol, []).append((idx, s))
        self._by_symbol = by_symbol


_utc_second = [-1, ""]     # the last second formatted and its text (one per second)


def _utc(ns: int) -> str:
    """RFC 3339 UTC time with nanoseconds: ``2025-06-20T07:00:00.123456789Z`` ("" for 0)."""
    if ns == 0:
        return ""
    secs, frac = divmod(ns, 1_000_000_000)
    last = _utc_second
    if secs != last[0]:
        last[1] = f"{_EPOCH + datetime.timedelta(seconds=secs):%Y-%m-%dT%H:%M:%S}"
        last[0] = secs
    return f"{last[1]}.{frac:09d}Z"
