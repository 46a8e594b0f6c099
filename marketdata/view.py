"""``bourse feed``: a terminal view of the FAST feed (top of book and depth).

Joins the feed of ``[marketdata]`` as any subscriber would (A/B arbitration, replay, snapshot
recovery: ``marketdata.subscriber``) and prints the chosen instruments. ``--once`` waits until
the subscriber is synchronised (every book recovered), prints one view and exits: status 0, or
1 when it could not synchronise within ``--timeout`` seconds. Without ``--once`` the view is
redrawn (plain ANSI) until Ctrl-C.
"""
from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

from marketdata.channels import ChannelSet
from marketdata.messages import SECURITY_HALTED, SESSION_HALTED
from marketdata.subscriber import Book, FeedSubscriber


def fmt_price(mantissa: int, exponent: int) -> str:
    s = f"{Decimal(mantissa).scaleb(exponent):f}"
    if "." in s:
        whole, frac = s.split(".")
        frac = frac.rstrip("0").ljust(2, "0")
        s = f"{whole}.{frac}"
    return s


def render(sub: FeedSubscriber, symbols: list[str] | None, depth: int) -> str:
    core = sub.core
    exp = core.exp
    lines = []
    state = "synchronised" if core.synced else "recovering"
    sess = " MARKET HALTED" if core.session_status == SESSION_HALTED else ""
    st = core.stats
    lines.append(f"Bourse FAST feed: {state}{sess}  (datagrams {st['datagrams']}, duplicates "
                 f"{st['duplicates']}, replayed {st['replayed']}, snapshot recoveries "
                 f"{st['snapshots_applied']})")
    names = symbols or sorted(core.books)
    for sym in names:
        b: Book | None = core.books.get(sym)
        lines.append("")
        if b is None:
            lines.append(f"{sym:<8} (no data yet)")
            continue
        flag = "" if b.reliable else "  [UNRELIABLE: recovering]"
        if b.index_value is not None:
            lines.append(f"{sym:<8} index {fmt_price(*b.index_value)}  rpt {b.rpt_seq}{flag}")
            continue
        status = "HALTED" if b.status == SECURITY_HALTED else "trading"
        last = (f"last {fmt_price(b.last_trade[0], exp)} x {b.last_trade[1]}"
                if b.last_trade else "no trades")
        name = core.instruments.get(sym, {}).get("SecurityDesc") or ""
        lines.append(f"{sym:<8} {name:<18} {status:<8} {last}  rpt {b.rpt_seq}{flag}")
        bids, offers = b.levels(1, depth), b.levels(2, depth)
        lines.append(f"{'orders':>8} {'qty':>10} {'bid':>12} | {'ask':<12} {'qty':>10} "
                     f"{'orders':>8}")
        for i in range(max(len(bids), len(offers), 1)):
            left = (f"{bids[i][2]:>8} {bids[i][1]:>10} {fmt_price(bids[i][0], exp):>12}"
                    if i < len(bids) else " " * 32)
            right = (f"{fmt_price(offers[i][0], exp):<12} {offers[i][1]:>10} {offers[i][2]:>8}"
                     if i < len(offers) else "")
            if i == 0 and not bids and not offers:
                left, right = f"{'(empty book)':>32}", ""
            lines.append(f"{left} | {right}".rstrip())
    return "\n".join(lines)


def run_feed(cfg, symbols: list[str] | None, depth: int, once: bool, timeout: float,
             interval: float) -> int:
    from bourse.run import run_loop

    md = cfg.marketdata
    known = {i.symbol for i in cfg.market.instruments}
    if symbols:
        unknown = [s for s in symbols if s not in known]
        if unknown and not once:
            print(f"bourse feed: note: not instruments of this market: {', '.join(unknown)} "
                  f"(index codes are fine)", file=sys.stderr)

    async def main() -> int:
        sub = FeedSubscriber(ChannelSet.from_config(md), interface=md.interface,
                             replay=(md.replay_host, md.replay_port),
                             price_exponent=-cfg.market.price_decimals,
                             replay_max=md.replay_max_messages,
                             symbols=None)
        try:
            await sub.start()
        except OSError as exc:
            print(f"bourse feed: cannot join the feed on {md.interface}: {exc}", file=sys.stderr)
            return 1
        try:
            if once:
                ok = await sub.wait_synced(timeout)
                print(render(sub, symbols, depth), flush=True)
                if not ok:
                    print(f"bourse feed: not synchronised after {timeout:g} s (is `bourse "
                          f"marketdata` running?)", file=sys.stderr)
                return 0 if ok else 1
            while True:
                sys.stdout.write("\x1b[H\x1b[2J" + render(sub, symbols, depth) + "\n")
                sys.stdout.flush()
                await asyncio.sleep(interval)
        finally:
            await sub.close()

    try:
        return run_loop(main)
    except KeyboardInterrupt:
        return 0
