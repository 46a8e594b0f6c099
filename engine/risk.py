"""Per-firm pre-trade credit exposure and kill-switch state.

Contract:
- A firm's exposure is gross notional in price units (price * qty, integers):
  ``open`` = sum over its open orders of exposure_price * leaves, plus
  ``executed`` = sum over its executions of execution_price * qty, buys and sells alike.
- An order's exposure price is its limit price; a market order's is the instrument's
  ``band_high`` (for buys and sells alike), so its notional is ``band_high * qty``.
- A new order is accepted only if ``open + executed + notional <= limit``. A replace is checked
  on its increase only (new price * new leaves - old price * old leaves, when positive).
- A fill of ``q`` at ``px`` moves ``exposure_price * q`` out of ``open`` and ``px * q`` into
  ``executed``: for a resting order both are equal; an aggressive buy limit filling below its
  limit frees the difference. A cancel releases ``exposure_price * leaves`` from ``open``.
- ``halted`` is the firm's kill switch (see ``engine.core``).
The engine's hot path updates ``open``/``executed`` inline with exactly these rules; the methods
below are the same rules spelled out for the colder paths and for tests.
"""
from __future__ import annotations

from engine.refdata import Firm


class FirmRisk:
    """Mutable risk state of one firm."""

    __slots__ = ("firm", "id", "limit", "stp", "accounts", "open", "executed", "halted")

    def __init__(self, firm: Firm) -> None:
        self.firm = firm
        self.id = firm.id
        self.limit = firm.credit_limit
        self.stp = int(firm.stp)
        # dict used as an ordered set: membership only, never iterated for output
        self.accounts: dict[str, None] = dict.fromkeys(firm.accounts)
        self.open = 0
        self.executed = 0
        self.halted = False

    @property
    def exposure(self) -> int:
        return self.open + self.executed

    def allows(self, notional: int) -> bool:
        """Whether adding ``notional`` keeps the firm within its credit limit."""
        return notional <= 0 or self.open + self.executed + notional <= self.limit

    def account_ok(self, account: str) -> bool:
        """An empty account list means any account is accepted."""
        return not self.accounts or account in self.accounts

    def reserve(self, notional: int) -> None:
        self.open += notional

    def release(self, notional: int) -> None:
        self.open -= notional

    def fill(self, exposure_price: int, exec_price: int, qty: int) -> None:
        self.open -= exposure_price * qty
        self.executed += exec_price * qty

    def snapshot(self) -> tuple[str, int, int, int, bool]:
        """The mutable state: (id, limit, open, executed, halted)."""
        return (self.id, self.limit, self.open, self.executed, self.halted)

    def restore(self, limit: int, open_: int, executed: int, halted: bool) -> None:
        """Set the mutable state back to what ``snapshot`` returned (restoring a snapshot)."""
        self.limit = limit
        self.open = open_
        self.executed = executed
        self.halted = bool(halted)
