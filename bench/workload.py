"""Deterministic benchmark workload for the core trade engine.

Contract:
- ``default_refdata()`` builds, in code, a market of 10 instruments (price_decimals 4, tick 100,
  lots 1 or 10, prices around 250.0000 ... 6000.0000, wide +-20% bands) and 4 firms with two
  sessions and two accounts each and very large credit limits (one firm uses CANCEL_RESTING
  self-trade prevention). It does not depend on the configuration loader.
- ``generate(refdata, n, seed)`` returns the prefill (resting orders, ~100 per instrument, so
  about 1,000 resting orders over about 750 price levels) followed by ``n`` commands of an
  exchange-core-like mix: ~9% new day limit orders (a few of them marketable), ~3% IOC,
  ~6% cancels, ~82% replaces (moves of 1-3 ticks and size changes; a small share are priced
  through the opposite best and trade), so that roughly 6% of the commands trade.
  ``generate_parts`` returns the two parts separately.
- The generator keeps itself consistent by applying every command to a private shadow
  ``Engine`` (cancels and replaces target live orders, by cl_ord_id or order_id); the returned
  list replays identically in any fresh engine. Same (refdata, n, seed) -> same list: all
  randomness comes from ``random.Random(seed)``, no floats reach the commands.
"""
from __future__ import annotations

import random

from engine.commands import (
    CancelOrder, Command, NewOrder, ReplaceOrder, SequencedCommand,
)
from engine.core import Engine
from engine.events import OrderAccepted, OrderCancelled, Trade
from engine.refdata import Firm, Instrument, MarketRefData, StpMode

SYMBOLS = ("SBER", "GAZP", "LKOH", "GMKN", "NVTK", "ROSN", "YDEX", "MGNT", "VTBR", "TATN")
REF_PRICES = (2500000, 1600000, 68000000, 14000000, 11000000, 5500000, 40000000, 60000000,
              900000, 6500000)
LOTS = (10, 10, 1, 1, 1, 10, 1, 1, 10, 1)

PREFILL_PER_INSTRUMENT = 100
DEPTH_TICKS = 90          # passive orders are placed 1..DEPTH_TICKS ticks away from the centre

P_NEW = 9
P_IOC = 3
P_CANCEL = 6              # the rest (82) are replaces
P_NEW_AGGRESSIVE = 15     # % of new limit orders priced through the opposite best
P_REPLACE_CROSS = 2       # % of replaces moved through the opposite best
P_BY_ORDER_ID = 30        # % of cancels/replaces that address the order by order_id


def default_refdata() -> MarketRefData:
    instruments = []
    for sym, ref, lot in zip(SYMBOLS, REF_PRICES, LOTS):
        band = (ref // 5) // 100 * 100
        instruments.append(Instrument(symbol=sym, name=f"{sym} ordinary share", tick=100, lot=lot,
                                      ref_price=ref, band_low=ref - band, band_high=ref + band,
                                      isin=f"RU000{sym}0000"))
    firms = (
        Firm(id="MC0001", name="Alfa Broker", credit_limit=10 ** 18,
             accounts=("A1-TRD", "A1-CLI")),
        Firm(id="MC0002", name="Beta Capital", credit_limit=10 ** 18,
             accounts=("B2-TRD", "B2-CLI")),
        Firm(id="MC0003", name="Gamma Invest", credit_limit=10 ** 18,
             stp=StpMode.CANCEL_RESTING, accounts=("G3-TRD", "G3-CLI")),
        Firm(id="MC0004", name="Delta Markets", credit_limit=10 ** 18,
             accounts=("D4-TRD", "D4-CLI")),
    )
    return MarketRefData(price_decimals=4, instruments=tuple(instruments), firms=firms)


class _Generator:
    def __init__(self, refdata: MarketRefData, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.refdata = refdata
        self.shadow = Engine(refdata)
        self.instruments = list(refdata.instruments)
        self.by_symbol = {i.symbol: i for i in refdata.instruments}
        # (session, firm, account) triples
        self.traders = []
        for f in refdata.firms:
            accounts = f.accounts or ("",)
            for s in range(2):
                self.traders.append((f"{f.id}-S{s + 1}", f.id, accounts[s % len(accounts)]))
        self.clid = 0
        self.live: list[int] = []        # live order ids, random access
        self.pos: dict[int, int] = {}    # order id -> index in live
        self.out: list[Command] = []
        self.target = PREFILL_PER_INSTRUMENT * len(self.instruments)

    # -- bookkeeping from the shadow engine's events ---------------------------------------
    def _apply(self, cmd: Command) -> list:
        eng = self.shadow
        events = eng.apply(SequencedCommand(eng.next_cmd_seq, 0, "", 0, cmd))
        self.out.append(cmd)
        for e in events:
            cls = e.__class__
            if cls is OrderAccepted:
                if eng.order(e.order_id) is not None:      # it rests
                    self._add(e.order_id)
            elif cls is Trade:
                if e.buy_leaves == 0:
                    self._drop(e.buy_order_id)
                if e.sell_leaves == 0:
                    self._drop(e.sell_order_id)
            elif cls is OrderCancelled:
                self._drop(e.order_id)
        return events

    def _add(self, oid: int) -> None:
        self.pos[oid] = len(self.live)
        self.live.append(oid)

    def _drop(self, oid: int) -> None:
        i = self.pos.pop(oid, None)
        if i is None:
            return
        last = self.live.pop()
        if last != oid:
            self.live[i] = last
            self.pos[last] = i

    def _next_clid(self) -> str:
        self.clid += 1
        return str(self.clid)

    # -- prices ----------------------------------------------------------------------------
    def _passive_price(self, inst: Instrument, side: int) -> int:
        eng = self.shadow
        k = self.rnd.randint(1, DEPTH_TICKS)
        if side == 1:
            price = inst.ref_price - k * inst.tick
            best_ask = eng.best(inst.symbol, 2)
            if best_ask and price >= best_ask:
                price = best_ask - inst.tick
        else:
            price = inst.ref_price + k * inst.tick
            best_bid = eng.best(inst.symbol, 1)
            if best_bid and price <= best_bid:
                price = best_bid + inst.tick
        return min(max(price, inst.band_low), inst.band_high)

    def _aggressive_price(self, inst: Instrument, side: int) -> int:
        best_opp = self.shadow.best(inst.symbol, 2 if side == 1 else 1)
        if not best_opp:
            return self._passive_price(inst, side)
        k = self.rnd.randint(0, 2) * inst.tick
        price = best_opp + k if side == 1 else best_opp - k
        return min(max(price, inst.band_low), inst.band_high)

    # -- commands --------------------------------------------------------------------------
    def new_order(self, tif: int = 0, aggressive: bool = False) -> None:
        rnd = self.rnd
        inst = self.instruments[rnd.randrange(len(self.instruments))]
        session, firm, account = self.traders[rnd.randrange(len(self.traders))]
        side = rnd.randint(1, 2)
        price = (self._aggressive_price(inst, side) if aggressive
                 else self._passive_price(inst, side))
        qty = inst.lot * rnd.randint(1, 20 if tif == 0 else 6)
        self._apply(NewOrder(session, firm, account, self._next_clid(), inst.symbol, side, 2,
                             tif, price, qty))

    def _pick(self):
        if not self.live:
            return None
        return self.shadow.order(self.live[self.rnd.randrange(len(self.live))])

    def cancel(self) -> None:
        o = self._pick()
        if o is None:
            return self.new_order()
        if self.rnd.randrange(100) < P_BY_ORDER_ID:
            cmd = CancelOrder(o.session, o.firm, self._next_clid(), "", o.order_id)
        else:
            cmd = CancelOrder(o.session, o.firm, self._next_clid(), o.cl_ord_id)
        self._apply(cmd)

    def replace(self) -> None:
        o = self._pick()
        if o is None:
            return self.new_order()
        rnd = self.rnd
        inst = self.by_symbol[o.instrument]
        tick = inst.tick
        price = o.price
        qty = o.qty
        what = rnd.randrange(100)
        if what < P_REPLACE_CROSS:
            price = self._aggressive_price(inst, o.side)
        else:
            if what < 70:       # move the price by a few ticks, staying passive
                step = rnd.choice((-3, -2, -1, 1, 2, 3)) * tick
                price = price + step
                opp = self.shadow.best(inst.symbol, 2 if o.side == 1 else 1)
                if o.side == 1:
                    price = max(price, inst.ref_price - DEPTH_TICKS * tick)
                    if opp and price >= opp:
                        price = opp - tick
                else:
                    price = min(price, inst.ref_price + DEPTH_TICKS * tick)
                    if opp and price <= opp:
                        price = opp + tick
                price = min(max(price, inst.band_low), inst.band_high)
            if what >= 40 or price == o.price:   # change the size
                cum = o.cum_qty
                leaves = o.leaves + rnd.choice((-2, -1, 1, 2)) * inst.lot
                if leaves <= 0:
                    leaves = inst.lot * rnd.randint(1, 5)
                qty = cum + leaves
        if rnd.randrange(100) < P_BY_ORDER_ID:
            cmd = ReplaceOrder(o.session, o.firm, self._next_clid(), "", price, qty, o.order_id)
        else:
            cmd = ReplaceOrder(o.session, o.firm, self._next_clid(), o.cl_ord_id, price, qty)
        self._apply(cmd)

    def prefill(self) -> None:
        for inst in self.instruments:
            for i in range(PREFILL_PER_INSTRUMENT):
                session, firm, account = self.traders[i % len(self.traders)]
                side = 1 + (i & 1)
                price = self._passive_price(inst, side)
                qty = inst.lot * self.rnd.randint(1, 20)
                self._apply(NewOrder(session, firm, account, self._next_clid(), inst.symbol,
                                     side, 2, 0, price, qty))

    def step(self) -> None:
        rnd = self.rnd
        r = rnd.randrange(100)
        if r < P_NEW + P_CANCEL:
            # new vs cancel share (9:6 at the target population) leans towards the target
            live = len(self.live)
            lean = (self.target - live) * 40000 // self.target
            p_new = (P_NEW * 1000 + lean) // (P_NEW + P_CANCEL)
            if rnd.randrange(1000) < p_new:
                self.new_order(aggressive=rnd.randrange(100) < P_NEW_AGGRESSIVE)
            else:
                self.cancel()
        elif r < P_NEW + P_CANCEL + P_IOC:
            self.new_order(tif=3, aggressive=True)
        else:
            self.replace()


def generate_parts(refdata: MarketRefData, n: int, seed: int = 1
                   ) -> tuple[list[Command], list[Command]]:
    """(prefill, main): the warm-up resting orders and ``n`` mixed commands."""
    g = _Generator(refdata, seed)
    g.prefill()
    prefill = g.out
    g.out = []
    for _ in range(n):
        g.step()
    return prefill, g.out


def generate(refdata: MarketRefData, n: int, seed: int = 1) -> list[Command]:
    """The prefill followed by ``n`` mixed commands (see the module docstring)."""
    prefill, main = generate_parts(refdata, n, seed)
    return prefill + main


def sequence(cmds: list[Command], first_seq: int = 1, origin: str = "bench",
             ts0: int = 1_700_000_000_000_000_000) -> list[SequencedCommand]:
    """Wrap commands as the sequencer would (ts from a fake counter, req_id = seq)."""
    return [SequencedCommand(first_seq + i, ts0 + (first_seq + i) * 1000, origin,
                             first_seq + i, c) for i, c in enumerate(cmds)]
