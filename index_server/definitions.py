"""Typed index definitions (built from ``[[indices]]``) and the published ``IndexValue``.

Contract:
- ``build_indices(sections, market, process)`` turns the raw ``[[indices]]`` tables decoded by
  ``bourse.config`` into frozen ``IndexDefinition`` structs, or raises ``IndexDefinitionError``
  with the offending key path (``indices[1].constituents[3].free_float``) and the problem;
  ``bourse.config`` turns it into ``ConfigError`` naming the file. It never raises anything else
  for a file that ``msgspec`` decoded.
- Checks: index code syntax and uniqueness (also against instrument symbols: an index is
  published under its code as a symbol); non-blank name; ``base_value`` > 0; ``divisor`` and
  ``base_capitalisation`` > 0 and not both; ``weight_cap_pct`` in (0, 100] with at most 4
  decimals and high enough for the basket (n * cap >= 100 %, else no weights can satisfy it);
  each constituent's symbol is a known instrument, appears once per basket, and every
  constituent of an index trades in the same currency; ``free_float`` in (0, 1] with at most 6
  decimals; ``weight_cap`` in (0, 1] with at most 10 decimals; rebalances in strictly increasing
  effective time, each with a complete new basket.
- Decimals are read exactly (quoted strings or TOML integers; a TOML float is refused) into
  ``decimal.Decimal``; times are integer nanoseconds since the Unix epoch (UTC).
- Publication settings left out of an index (``cadence_ms``, ``on_change``,
  ``on_change_max_per_s``) are taken from the ``[index]`` process section.
- ``IndexValue`` is the one output record of the calculator, the vendor API and the publish
  hook (see spec/index-vendor-api.md): every number is a decimal string, never a float.

This module imports nothing from ``bourse.config`` at run time (``bourse.config`` imports it).
"""
from __future__ import annotations

import datetime
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Sequence

import msgspec

if TYPE_CHECKING:  # pragma: no cover
    from engine.refdata import MarketRefData

__all__ = [
    "Basket",
    "Constituent",
    "IndexDefinition",
    "IndexDefinitionError",
    "IndexValue",
    "build_indices",
    "FREE_FLOAT_DECIMALS",
    "WEIGHT_CAP_DECIMALS",
]

#: Most decimal places of a free-float coefficient (MOEX publishes them to 2; 6 leaves room).
FREE_FLOAT_DECIMALS = 6
#: Decimal places of a weight-cap coefficient (computed ones are rounded down to this).
WEIGHT_CAP_DECIMALS = 10
#: Decimal places of ``weight_cap_pct``.
CAP_PCT_DECIMALS = 4

_CODE_RE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,19}")
_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class IndexDefinitionError(Exception):
    """A problem with one key of ``[[indices]]``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


class Constituent(msgspec.Struct, frozen=True):
    symbol: str
    shares: int                 # number of shares issued
    free_float: Decimal         # (0, 1]
    weight_cap: Decimal         # starting weight coefficient, (0, 1]; 1 = set only by the cap


class Basket(msgspec.Struct, frozen=True):
    """A constituent list and its cap, in force from ``effective_ns`` (0: from the start)."""

    effective_ns: int
    weight_cap_pct: Decimal
    constituents: tuple[Constituent, ...]


class IndexDefinition(msgspec.Struct, frozen=True):
    code: str
    name: str
    currency: str
    base_value: Decimal
    divisor: Decimal | None             # given divisor, or
    base_capitalisation: Decimal | None  # divisor = base_capitalisation / base_value, else
                                         # divisor = capitalisation at reference prices / base_value
    cadence_ms: int
    on_change: bool
    on_change_max_per_s: int
    basket: Basket
    rebalances: tuple[Basket, ...] = ()


class IndexValue(msgspec.Struct, frozen=True, kw_only=True):
    """One index state as published (vendor API, SSE, FAST MDEntryType '3' via the hook).

    ``value``, ``open``, ``high``, ``low``, ``prev_close``, ``change`` are index points and
    ``change_pct`` percent, all decimal strings with 2 decimals; ``capitalisation`` is in the
    index currency with 2 decimals; ``divisor`` has 10 decimals. ``open``/``high``/``low`` are
    null until the first constituent trade of the day. ``seq`` counts the calculated states of
    this index (+1 per constituent trade, rebalance or day change); ``event_seq`` is the engine
    replication sequence number of the event that produced the state; ``time`` is that event's
    timestamp in nanoseconds since the Unix epoch (0: no event yet).
    """

    code: str
    name: str
    currency: str
    seq: int
    event_seq: int
    time: int
    time_utc: str
    value: str
    open: str | None
    high: str | None
    low: str | None
    prev_close: str
    change: str
    change_pct: str
    capitalisation: str
    divisor: str


# --------------------------------------------------------------------------------------------


def build_indices(sections: Sequence[Any], market: "MarketRefData",
                  process: Any) -> tuple[IndexDefinition, ...]:
    """Validate the raw ``[[indices]]`` tables (``bourse.config.IndexSection``)."""
    instruments = {i.symbol: i for i in market.instruments}
    out: list[IndexDefinition] = []
    seen: dict[str, int] = {}
    for i, s in enumerate(sections):
        where = f"indices[{i}]"
        if not _CODE_RE.fullmatch(s.code):
            _fail(f"{where}.code", "expected an index code: 1 to 20 upper-case letters, digits, "
                  f"'.', '_' or '-', starting with a letter or digit, got {s.code!r}")
        if s.code in seen:
            _fail(f"{where}.code", f"duplicate index code {s.code!r} (already indices[{seen[s.code]}])")
        if s.code in instruments:
            _fail(f"{where}.code", f"index code {s.code!r} is also an instrument symbol; index "
                  "values are published under their code, so it must differ")
        seen[s.code] = i
        if not s.name.strip():
            _fail(f"{where}.name", "must not be empty")
        base_value = _positive(s.base_value, f"{where}.base_value")
        divisor = None if s.divisor is None else _positive(s.divisor, f"{where}.divisor")
        base_cap = (None if s.base_capitalisation is None
                    else _positive(s.base_capitalisation, f"{where}.base_capitalisation"))
        if divisor is not None and base_cap is not None:
            _fail(f"{where}.base_capitalisation",
                  "give either divisor or base_capitalisation, not both")
        basket = _basket(s.constituents, s.weight_cap_pct, 0, instruments, where)
        currency = instruments[basket.constituents[0].symbol].currency
        _same_currency(basket, instruments, currency, where)
        rebalances = []
        last_ns = None
        for j, r in enumerate(s.rebalances):
            at = f"{where}.rebalances[{j}]"
            ns = _epoch_ns(r.effective)
            if last_ns is not None and ns <= last_ns:
                _fail(f"{at}.effective", "rebalances must be in strictly increasing effective time")
            last_ns = ns
            cap = s.weight_cap_pct if r.weight_cap_pct is None else r.weight_cap_pct
            b = _basket(r.constituents, cap, ns, instruments, at,
                        inherited=None if r.weight_cap_pct is not None
                        else f"{where}.weight_cap_pct")
            _same_currency(b, instruments, currency, at)
            rebalances.append(b)
        out.append(IndexDefinition(
            code=s.code, name=s.name, currency=currency, base_value=base_value, divisor=divisor,
            base_capitalisation=base_cap,
            cadence_ms=process.cadence_ms if s.cadence_ms is None else s.cadence_ms,
            on_change=process.on_change if s.on_change is None else s.on_change,
            on_change_max_per_s=(process.on_change_max_per_s if s.on_change_max_per_s is None
                                 else s.on_change_max_per_s),
            basket=basket, rebalances=tuple(rebalances)))
    return tuple(out)


def _basket(constituents, cap_pct_text, effective_ns: int, instruments: dict, where: str,
            inherited: str | None = None) -> Basket:
    cap_where = f"{where}.weight_cap_pct"
    note = f" (inherited from {inherited}; set weight_cap_pct here)" if inherited else ""
    cap_pct = _decimal(cap_pct_text, inherited or cap_where)
    if not 0 < cap_pct <= 100 or _places(cap_pct) > CAP_PCT_DECIMALS:
        _fail(inherited or cap_where, f"expected a percentage above 0 and at most 100 with at "
              f"most {CAP_PCT_DECIMALS} decimals, got {_show(cap_pct_text)}")
    n = len(constituents)
    if n * cap_pct < 100:
        _fail(cap_where, f"a cap of {cap_pct} % cannot hold with {n} constituent"
              f"{'s' if n != 1 else ''}: n x cap must be at least 100 % (cap >= "
              f"{(Decimal(100) / n).quantize(Decimal('0.0001'), rounding='ROUND_UP')} %){note}")
    out = []
    seen: dict[str, int] = {}
    for k, c in enumerate(constituents):
        at = f"{where}.constituents[{k}]"
        if c.symbol not in instruments:
            _fail(f"{at}.symbol", f"unknown symbol {c.symbol!r}: not in [[instruments]]")
        if c.symbol in seen:
            _fail(f"{at}.symbol", f"duplicate constituent {c.symbol!r} (already "
                  f"{where}.constituents[{seen[c.symbol]}])")
        seen[c.symbol] = k
        ff = _coefficient(c.free_float, f"{at}.free_float", FREE_FLOAT_DECIMALS)
        wc = _coefficient(c.weight_cap, f"{at}.weight_cap", WEIGHT_CAP_DECIMALS)
        out.append(Constituent(c.symbol, c.shares, ff, wc))
    return Basket(effective_ns, cap_pct, tuple(out))


def _same_currency(basket: Basket, instruments: dict, currency: str, where: str) -> None:
    for k, c in enumerate(basket.constituents):
        if instruments[c.symbol].currency != currency:
            _fail(f"{where}.constituents[{k}].symbol",
                  f"{c.symbol!r} trades in {instruments[c.symbol].currency}, the index in "
                  f"{currency}: all constituents must share one currency")


def _coefficient(value: Any, key: str, places: int) -> Decimal:
    d = _decimal(value, key)
    if not 0 < d <= 1:
        _fail(key, f"must be a coefficient above 0 and at most 1, got {_show(value)}")
    if _places(d) > places:
        _fail(key, f"at most {places} decimals, got {_show(value)}")
    return d


def _positive(value: Any, key: str) -> Decimal:
    d = _decimal(value, key)
    if d <= 0:
        _fail(key, f"must be > 0, got {_show(value)}")
    return d


def _decimal(value: Any, key: str) -> Decimal:
    if isinstance(value, float):
        name = key.rsplit(".", 1)[-1]
        _fail(key, f"a TOML float ({value!r}) is not accepted for a decimal value because binary "
              f"floats are inexact; quote it as a string: {name} = \"{value!r}\"")
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if not isinstance(value, str) or not _DECIMAL_RE.fullmatch(value):
        _fail(key, "expected a decimal number written as a string of digits with an optional "
              f"'.' and fraction, such as \"0.52\", got {value!r}")
    return Decimal(value)


def _places(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def _epoch_ns(t: datetime.datetime) -> int:
    delta = t - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _fail(key: str, problem: str):
    raise IndexDefinitionError(key, problem)
