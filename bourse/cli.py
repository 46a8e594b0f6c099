"""The ``bourse`` command line.

    bourse up [--config FILE]            the whole local exchange (every component, as processes)
    bourse engine [--config FILE]        the core trade engine alone
    bourse gateway [--config FILE] [--node ID]   one FIX 4.4 gateway
    bourse index [--config FILE] [--engine-replication HOST:PORT]   the index server
    bourse marketdata [--config FILE] [--engine-replication HOST:PORT]   FAST feed + replay
    bourse feed [--config FILE] [SYMBOL ...] [--once]   live top of book and depth from the feed
    bourse check-config [FILE]           validate a configuration and print its digest
    bourse ctl halt|resume ...           operator kill switch (market, firm or instrument)
    bourse ctl credit-limit FIRM AMOUNT  change a firm's credit limit
    bourse events [--from N]             print the replication stream (alerts stand out)
    bourse journal verify PATH           replay a journal offline and fingerprint its output;
                                         check the snapshots next to it against the replay

Every failure is a one-line message on stderr and a non-zero exit status, never a traceback:
2 for bad usage or configuration, 1 for a component that cannot start or a refused operation.
"""
from __future__ import annotations

import argparse
import sys

from bourse.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bourse", description="Bourse exchange access layer")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("--config", "-c", default=None,
                        help="TOML configuration file (default: the embedded default)")
        return sp

    with_config(sub.add_parser("up", help="run the whole local exchange"))
    with_config(sub.add_parser("engine", help="run the core trade engine"))
    gw = with_config(sub.add_parser("gateway", help="run a FIX 4.4 gateway"))
    gw.add_argument("--node", default=None, help="gateway node id (needed when several)")
    gw.add_argument("--engine", default=None, metavar="HOST:PORT",
                    help="engine order-entry address (default: from [engine])")
    ix = with_config(sub.add_parser("index", help="run the index server"))
    ix.add_argument("--engine-replication", default=None, metavar="HOST:PORT",
                    help="engine replication address (default: from [engine])")
    md = with_config(sub.add_parser("marketdata", help="run the FAST market-data publisher"))
    md.add_argument("--engine-replication", default=None, metavar="HOST:PORT",
                    help="engine replication address (default: from [engine])")
    fd = with_config(sub.add_parser("feed", help="show top of book and depth from the feed"))
    fd.add_argument("symbols", nargs="*", help="instruments or index codes (default: all)")
    fd.add_argument("--depth", type=int, default=5, help="levels per side to show")
    fd.add_argument("--once", action="store_true", help="print one synchronised view and exit")
    fd.add_argument("--timeout", type=float, default=15.0, help="--once: seconds to synchronise")
    fd.add_argument("--interval", type=float, default=0.5, help="redraw interval, seconds")
    cc = sub.add_parser("check-config", help="validate a configuration file")
    cc.add_argument("file", nargs="?", default=None)

    ctl = with_config(sub.add_parser("ctl", help="operator controls"))
    ctl_sub = ctl.add_subparsers(dest="action", required=True)
    for name in ("halt", "resume"):
        a = ctl_sub.add_parser(name, help=f"{name} trading (kill switch)")
        g = a.add_mutually_exclusive_group(required=True)
        g.add_argument("--market", action="store_true", help="the whole market")
        g.add_argument("--firm", help="one firm (halting cancels its open orders)")
        g.add_argument("--instrument", help="one instrument")
        a.add_argument("--text", default="", help="reason shown to participants")
    cl = ctl_sub.add_parser("credit-limit", help="set a firm's credit limit")
    cl.add_argument("firm")
    cl.add_argument("amount", help="decimal amount in currency, e.g. 500000000")

    jn = sub.add_parser("journal", help="journal tools")
    jn_sub = jn.add_subparsers(dest="action", required=True)
    jv = with_config(jn_sub.add_parser("verify", help="replay a journal and fingerprint it"))
    jv.add_argument("path")

    ev = with_config(sub.add_parser("events", help="print the replication stream"))
    ev.add_argument("--from", dest="from_seq", type=int, default=1)
    ev.add_argument("--follow", action="store_true", help="keep printing live events")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(getattr(args, "config", None) if args.command != "check-config"
                          else args.file)
    except ConfigError as exc:
        print(f"bourse: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "check-config":
            print(f"{cfg.source}: OK, {len(cfg.market.instruments)} instruments, "
                  f"{len(cfg.market.firms)} firms, digest {cfg.digest}")
            return 0
        if args.command == "engine":
            from bourse.run import run_engine
            return run_engine(cfg)
        if args.command == "gateway":
            from bourse.run import run_gateway
            return run_gateway(cfg, args.node, args.engine)
        if args.command == "index":
            from index_server.main import run_index
            return run_index(cfg, args.engine_replication)
        if args.command == "marketdata":
            from marketdata.publisher import run_marketdata
            return run_marketdata(cfg, args.engine_replication)
        if args.command == "feed":
            from marketdata.view import run_feed
            return run_feed(cfg, args.symbols or None, args.depth, args.once, args.timeout,
                            args.interval)
        if args.command == "up":
            from bourse.launcher import run_up
            return run_up(args.config)
        if args.command == "ctl":
            from bourse.ctl import run_ctl
            return run_ctl(cfg, args)
        if args.command == "journal":
            return _journal_verify(cfg, args.path)
        if args.command == "events":
            from bourse.ctl import run_events
            return run_events(cfg, args.from_seq, args.follow)
    except KeyboardInterrupt:
        return 130
    return 2


def _journal_verify(cfg, path: str) -> int:
    from engine.journal import JournalError
    from engine.sequencer import ReplayDivergence
    from engine.verify import verify_journal

    try:
        r = verify_journal(path, cfg.market)
    except (JournalError, ReplayDivergence, OSError) as exc:
        print(f"bourse journal verify: {exc}", file=sys.stderr)
        return 1
    print(f"records {r.records}\ncommands {r.commands}\nevents {r.events}\n"
          f"events sha256 {r.events_sha256}\nstate digest {r.state_digest}\n"
          f"valid bytes {r.valid_bytes}\ntorn tail bytes {r.tail_bytes}"
          + (f"\npreallocated zero bytes {r.zero_bytes}" if r.zero_bytes else "")
          + f"\nsnapshots {len(r.snapshots)}")
    for c in r.snapshots:
        covers = f"commands up to {c.next_cmd_seq - 1}, " if c.next_cmd_seq else ""
        state = {True: "matches full replay", False: f"DIFFERS from full replay: {c.detail}",
                 None: f"not usable: {c.detail}"}[c.matches]
        print(f"snapshot {c.name}: {covers}{state}")
    # a snapshot that disagrees with the journal is a defect; an unusable one is only ignored
    return 1 if any(c.matches is False for c in r.snapshots) else 0


if __name__ == "__main__":
    sys.exit(main())
