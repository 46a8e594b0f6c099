"""Value conversions and operator arithmetic shared by the encoder and the decoder.

Contract:

* Decimals travel as exact ``(mantissa, exponent)`` pairs of ints; ``to_pair`` accepts
  a ``decimal.Decimal`` (its exact coefficient and exponent: ``Decimal("1.50")`` is
  ``(150, -2)``), an ``int`` (exponent 0) or a pair, and never a float.
  ``to_decimal`` builds the ``Decimal`` back exactly.  Both conversions are memoised in
  bounded caches keyed by the exact value (prices repeat: book levels, ticks).
* ``delta_of``/``apply_delta`` implement the string and byte-vector delta (spec 6.3.7.3-5,
  subtraction length with the excess-1 encoding for front removal); ``tail_of``/
  ``apply_tail`` the tail operator (6.3.8).  They work on ``str`` and ``bytes`` alike.
* Errors are ``FastError`` with the spec's code where one applies.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

from .errors import FastError
from .primitives import INT64_MAX, INT64_MIN

__all__ = [
    "DECIMAL_CONTEXT", "to_pair", "to_decimal", "normalize", "check_pair",
    "delta_of", "delta_back", "apply_delta", "tail_of", "apply_tail",
]

#: exact for any int64 mantissa and any exponent a decoder can produce (a lenient decoder
#: lets exponents outside [-63, 63] through; they must not turn into NaN or Infinity)
DECIMAL_CONTEXT = decimal.Context(prec=64, Emin=decimal.MIN_EMIN, Emax=decimal.MAX_EMAX,
                                  traps=[decimal.Inexact, decimal.Overflow,
                                         decimal.InvalidOperation])


_PAIR_CACHE: dict = {}
_DECIMAL_CACHE: dict = {}
_CACHE_LIMIT = 1 << 16


def to_pair(x) -> tuple[int, int]:
    """``(mantissa, exponent)`` of a Decimal, int or pair (not validated for range)."""
    cls = x.__class__
    if cls is tuple:
        return x
    if cls is int:
        return x, 0
    if cls is Decimal:
        # str() of a Decimal spells out its coefficient and exponent exactly, so it is
        # a safe memo key (Decimal("1.5") and Decimal("1.50") differ here)
        s = str(x)
        pair = _PAIR_CACHE.get(s)
        if pair is None:
            pair = _decimal_pair(x)
            if len(_PAIR_CACHE) >= _CACHE_LIMIT:
                _PAIR_CACHE.clear()
            _PAIR_CACHE[s] = pair
        return pair
    if isinstance(x, Decimal):
        return _decimal_pair(x)
    if isinstance(x, int) and not isinstance(x, bool):
        return int(x), 0
    if isinstance(x, (list,)) and len(x) == 2:
        return tuple(x)
    raise FastError(f"expected Decimal, int or (mantissa, exponent), got {type(x).__name__}")


def _decimal_pair(x: Decimal) -> tuple[int, int]:
    s = str(x)
    if "E" not in s and s[-1].isdigit():
        p = s.find(".")
        if p < 0:
            return int(s), 0
        return int(s[:p] + s[p + 1:]), p + 1 - len(s)
    if not x.is_finite():
        raise FastError(f"decimal value {x} is not finite")
    sign, digits, exp = x.as_tuple()
    m = int("".join(map(str, digits)))
    return (-m if sign else m), exp


def check_pair(m, e, name: str) -> None:
    """Raise unless ``(m, e)`` is a representable scaled number (ERR R1)."""
    if m.__class__ is not int or e.__class__ is not int:
        raise FastError(f"{name}: decimal mantissa and exponent must be ints, got {(m, e)!r}")
    if not -63 <= e <= 63:
        raise FastError(f"{name}: decimal exponent {e} outside [-63, 63]", "R1")
    if not INT64_MIN <= m <= INT64_MAX:
        raise FastError(f"{name}: decimal mantissa {m} does not fit an int64", "R1")


def to_decimal(m: int, e: int) -> Decimal:
    """The Decimal ``m * 10**e``, exactly; memoised (Decimals are immutable)."""
    d = _DECIMAL_CACHE.get((m, e))
    if d is None:
        d = Decimal(m).scaleb(e, DECIMAL_CONTEXT)
        if len(_DECIMAL_CACHE) >= _CACHE_LIMIT:
            _DECIMAL_CACHE.clear()
        _DECIMAL_CACHE[(m, e)] = d
    return d


def normalize(m: int, e: int) -> tuple[int, int]:
    """The spec 6.3.2 normal form: no trailing zeros in the mantissa, zero is (0, 0)."""
    if m == 0:
        return 0, 0
    while m % 10 == 0:
        m //= 10
        e += 1
    return m, e


def rescale(m: int, e: int, target: int, name: str) -> int:
    """The mantissa of ``m * 10**e`` at exponent ``target`` (ERR D3 if inexact)."""
    if e == target:
        return m
    if e > target:
        return m * 10 ** (e - target)
    q, r = divmod(m, 10 ** (target - e))
    if r:
        raise FastError(f"{name}: {m}E{e} cannot be encoded with the constant exponent "
                        f"{target}", "D3")
    return q


def delta_back(base, value):
    """``(wire_subtraction_length, diff)`` that keeps the common prefix and replaces the
    rest at the back (never a front removal)."""
    if not base:
        return 0, value
    n = min(len(base), len(value))
    if value[:n] == base[:n]:
        p = n
    else:
        p = 0
        while base[p] == value[p]:
            p += 1
    return len(base) - p, value[p:]


def delta_of(base, value):
    """The cheapest ``(wire_subtraction_length, diff)`` turning ``base`` into ``value``."""
    n = min(len(base), len(value))
    p = 0
    while p < n and base[p] == value[p]:
        p += 1
    s = 0
    while s < n and base[-1 - s] == value[-1 - s]:
        s += 1
    back = len(value) - p  # keep a prefix of p, replace the tail
    front = len(value) - s  # keep a suffix of s, replace the head
    if front < back:
        removed = len(base) - s
        return ~removed, value[:len(value) - s]
    return len(base) - p, value[p:]


def apply_delta(base, sub: int, diff):
    """Combine a delta with its base (ERR D7 when the length is out of range)."""
    if sub >= 0:
        if sub > len(base):
            raise FastError(f"subtraction length {sub} exceeds base length {len(base)}", "D7")
        return base[:len(base) - sub] + diff
    cut = ~sub
    if cut > len(base):
        raise FastError(f"subtraction length {sub} exceeds base length {len(base)}", "D7")
    return diff + base[cut:]


def tail_of(base, value, name: str):
    """The tail that turns ``base`` into ``value``; FastError if none exists."""
    if len(value) > len(base):
        return value
    if len(value) < len(base):
        raise FastError(f"{name}: tail operator cannot shorten {base!r} to {value!r}", "D3")
    p = 0
    n = len(value)
    while p < n and base[p] == value[p]:
        p += 1
    return value[p:]


def apply_tail(base, tail):
    if len(tail) >= len(base):
        return tail
    return base[:len(base) - len(tail)] + tail
