"""Exact conversion between FIX decimal text and the engine's integer price units.

Contract: ``PriceFormat(decimals)`` parses a FIX Price/Qty-style decimal (``b"280.15"``) into an
integer number of ``10**-decimals`` units, refusing (``None``) anything that is not exactly
representable; ``format`` writes units back as the shortest exact decimal text. No floats.
Both remember recent answers (bounded memos: prices repeat, and a dict hit is far cheaper than
the conversion); the memos never change an answer.
"""
from __future__ import annotations

_MEMO_MAX = 4096


class PriceFormat:
    __slots__ = ("decimals", "scale", "_parsed", "_formatted")

    def __init__(self, decimals: int) -> None:
        self.decimals = decimals
        self.scale = 10 ** decimals
        self._parsed: dict[bytes, int | None] = {}
        self._formatted: dict[int, str] = {}

    def parse(self, text: bytes) -> int | None:
        """Units for ``text``, or None if it is not a non-negative exact decimal at this scale."""
        memo = self._parsed
        try:
            return memo[text]
        except KeyError:
            pass
        except TypeError:                   # unhashable (bytearray): no memo
            return self._parse(text)
        units = self._parse(text)
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[text] = units
        return units

    def _parse(self, text: bytes) -> int | None:
        whole, dot, frac = text.partition(b".")
        if not whole and not frac:
            return None
        if not whole:
            whole = b"0"
        if not whole.isdigit() or (dot and frac and not frac.isdigit()):
            return None
        frac = frac.rstrip(b"0")
        if len(frac) > self.decimals or len(whole) > 15:
            return None
        units = int(whole) * self.scale
        if frac:
            units += int(frac) * 10 ** (self.decimals - len(frac))
        return units

    def format(self, units: int) -> str:
        memo = self._formatted
        text = memo.get(units)
        if text is None:
            text = self._format(units)
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[units] = text
        return text

    def _format(self, units: int) -> str:
        q, r = divmod(units, self.scale)
        if not r:
            return str(q)
        return f"{q}.{r:0{self.decimals}d}".rstrip("0")

    def format_ratio(self, num: int, den: int, extra: int = 4) -> str:
        """``num / den`` units as decimal text with ``decimals + extra`` places, rounded half up
        (used for AvgPx, which need not be on the tick)."""
        if den == 0:
            return "0"
        places = self.decimals + extra
        scaled = (num * 10 ** extra * 2 + den) // (2 * den)
        q, r = divmod(scaled, 10 ** places)
        if not r:
            return str(q)
        return f"{q}.{r:0{places}d}".rstrip("0")
