"""Operator tools: the kill switch, credit limits and a replication-stream printer.

``bourse ctl`` connects to the engine's order-entry port as an ``operator`` node (the only kind
of node whose halt and limit commands the engine accepts), submits one command, waits for its
acknowledgement and prints the engine's answer (the resulting events). Exit status 0 when the
engine applied it, 1 when it was refused or the engine is unreachable.
"""
from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal, InvalidOperation

import msgspec

from bourse.config import BourseConfig
from engine.client import EngineLink, LinkRefused, ReplicationFeed
from engine.commands import HaltScope, SetCreditLimit, SetHalt
from engine.events import Alert
from engine.link import Ack, Events, Nack


def _command(cfg: BourseConfig, args):
    if args.action in ("halt", "resume"):
        halted = args.action == "halt"
        if args.market:
            return SetHalt(HaltScope.MARKET, "", halted, args.text)
        if args.firm:
            return SetHalt(HaltScope.FIRM, args.firm, halted, args.text)
        return SetHalt(HaltScope.INSTRUMENT, args.instrument, halted, args.text)
    try:
        amount = Decimal(args.amount)
    except InvalidOperation:
        raise ValueError(f"credit limit {args.amount!r} is not a decimal amount") from None
    units = amount * (10 ** cfg.market.price_decimals)
    if units != units.to_integral_value() or units < 0:
        raise ValueError(f"credit limit {args.amount!r} is not a non-negative amount with at most "
                         f"{cfg.market.price_decimals} decimals")
    return SetCreditLimit(args.firm, int(units))


def run_ctl(cfg: BourseConfig, args) -> int:
    try:
        cmd = _command(cfg, args)
    except ValueError as exc:
        print(f"bourse ctl: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        e = cfg.engine
        try:
            link = await EngineLink.connect(
                e.host, e.order_entry_port, component="operator",
                node_id=f"operator-{os.getpid()}", config_digest=cfg.digest,
                subscribe_from=0)
        except LinkRefused as exc:
            print(f"bourse ctl: refused by the engine: {exc}", file=sys.stderr)
            return 1
        except (OSError, asyncio.TimeoutError) as exc:
            print(f"bourse ctl: cannot reach the engine at {e.host}:{e.order_entry_port}: {exc}",
                  file=sys.stderr)
            return 1
        try:
            # Subscribe from the current head on a second connection to show the outcome.
            feed = await EngineLink.connect(
                e.host, e.replication_port, component="operator",
                node_id=f"operator-{os.getpid()}-feed", config_digest=cfg.digest,
                subscribe_from=link.welcome.next_event_seq)
            link.submit([cmd])
            while True:
                msg = await asyncio.wait_for(link.recv(), 10)
                if isinstance(msg, Nack):
                    print(f"bourse ctl: refused: {msg.reason}", file=sys.stderr)
                    return 1
                if isinstance(msg, Ack):
                    target = msg.first_cmd_seq
                    break
                if msg is None:
                    print("bourse ctl: engine closed the connection", file=sys.stderr)
                    return 1
            while True:
                msg = await asyncio.wait_for(feed.recv(), 10)
                if msg is None:
                    return 0
                if isinstance(msg, Events):
                    mine = [ev for ev in msg.events if ev.cmd_seq == target]
                    for ev in mine:
                        print(msgspec.json.encode(_tagged(ev)).decode())
                    if mine:
                        await feed.close()
                        return 0
        finally:
            await link.close()

    return asyncio.run(main())


def _tagged(ev) -> dict:
    d = msgspec.structs.asdict(ev)
    return {"type": type(ev).__name__, **d}


def run_events(cfg: BourseConfig, from_seq: int, follow: bool) -> int:
    async def main() -> int:
        e = cfg.engine
        feed = ReplicationFeed(e.host, e.replication_port, component="operator",
                               node_id=f"events-{os.getpid()}", config_digest=cfg.digest,
                               from_seq=from_seq, max_retries=0 if not follow else 50)
        try:
            link = await EngineLink.connect(e.host, e.replication_port, component="operator",
                                            node_id=f"events-{os.getpid()}-probe",
                                            config_digest=cfg.digest, subscribe_from=from_seq)
        except LinkRefused as exc:
            print(f"bourse events: refused by the engine: {exc}", file=sys.stderr)
            return 1
        except (OSError, asyncio.TimeoutError) as exc:
            print(f"bourse events: cannot reach the engine: {exc}", file=sys.stderr)
            return 1
        head = link.welcome.next_event_seq
        await link.close()
        if head <= from_seq and not follow:
            return 0
        async for ev in feed.events():
            line = msgspec.json.encode(_tagged(ev)).decode()
            if isinstance(ev, Alert):
                line = "ALERT " + line
            print(line, flush=True)
            if not follow and ev.seq >= head - 1:
                break
        await feed.close()
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 130
