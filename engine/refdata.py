"""Reference data the engine trades on: instruments and firms, in integer units.

Contract:
- Every price in the engine is an integer number of *price units*; one price unit is
  ``10 ** -price_decimals`` of the currency (``MarketRefData.price_decimals``, the same for the
  whole market so that notionals of different instruments add up exactly).
- Every quantity is an integer number of shares; ``lot`` is the lot size in shares.
- Notional (credit exposure) is ``price * qty`` in price units.
- These structs are produced by ``bourse.config`` from the TOML file and are immutable. Their
  canonical encoding is what the configuration digest is computed over, so two nodes that loaded
  the same instruments and firms agree on the digest byte for byte.
"""
from __future__ import annotations

import enum
import hashlib

import msgspec


class StpMode(enum.IntEnum):
    """Self-trade prevention applied when both sides of a potential match belong to one firm."""

    NONE = 0
    CANCEL_RESTING = 1
    CANCEL_INCOMING = 2
    CANCEL_BOTH = 3


class Instrument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    symbol: str
    name: str
    tick: int          # price units
    lot: int           # shares
    ref_price: int     # price units
    band_low: int      # lowest accepted limit price, price units, a multiple of tick
    band_high: int     # highest accepted limit price, price units, a multiple of tick
    isin: str = ""
    currency: str = "RUB"


class Firm(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    name: str
    credit_limit: int            # price units (price * qty); open + executed gross notional
    stp: StpMode = StpMode.NONE
    accounts: tuple[str, ...] = ()


class MarketRefData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    price_decimals: int
    instruments: tuple[Instrument, ...]
    firms: tuple[Firm, ...]

    def digest(self) -> str:
        """SHA-256 of the canonical encoding: the configuration digest exchanged at handshake."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()
