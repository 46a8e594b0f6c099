"""``bourse index``: the index server as its own process.

Contract:
- Loads the index definitions of the configuration, listens for vendors on
  ``[index] host:http_port`` (0: ephemeral), follows the engine's replication stream from the
  first event (``--engine-replication HOST:PORT`` or ``[engine] host:replication_port``) and
  publishes on each index's cadence / on change.
- Prints ``READY {"component": "index", "http": "HOST:PORT", "indices": "A,B", ...}`` once the
  HTTP endpoint listens; stops on SIGINT/SIGTERM with status 0. Exit 2: bad usage or no
  ``[[indices]]`` in the configuration; 1: cannot listen.
- An unreachable engine is retried for ever (logged); a refusal (release or configuration
  digest mismatch) is logged as a critical alert and retried every 5 s.
"""
from __future__ import annotations

import asyncio
import logging
import sys

from bourse.config import BourseConfig

log = logging.getLogger("bourse.index")


def run_index(cfg: BourseConfig, engine_replication: str | None = None) -> int:
    from bourse.run import announce, run_loop, setup_logging, wait_for_stop
    from index_server.http import VendorAPI
    from index_server.service import IndexService

    setup_logging()
    if not cfg.indices:
        print(f"bourse index: {cfg.source}: no [[indices]] defined: nothing to compute",
              file=sys.stderr)
        return 2
    host, port = cfg.engine.host, cfg.engine.replication_port
    if engine_replication:
        h, _, p = engine_replication.rpartition(":")
        if not h or not p.isdigit() or not 0 < int(p) < 65536:
            print(f"bourse index: --engine-replication {engine_replication!r}: expected "
                  "HOST:PORT", file=sys.stderr)
            return 2
        host, port = h, int(p)

    async def main() -> int:
        service = IndexService(cfg.market, cfg.indices)
        api = VendorAPI(service)
        try:
            http_host, http_port = await api.start(cfg.index.host, cfg.index.http_port)
        except OSError as exc:
            print(f"bourse index: cannot listen on {cfg.index.host}:{cfg.index.http_port}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 1
        service.start()
        follower = asyncio.ensure_future(service.follow(host, port, config_digest=cfg.digest))
        log.info("index server: %s on http://%s:%d, engine replication %s:%d",
                 ", ".join(service.codes), http_host, http_port, host, port)
        announce("index", http=f"{http_host}:{http_port}", indices=",".join(service.codes),
                 engine_replication=f"{host}:{port}")
        await wait_for_stop()
        log.info("stopping")
        follower.cancel()
        try:
            await follower
        except (asyncio.CancelledError, Exception):
            pass
        await api.close()
        await service.close()
        return 0

    return run_loop(main)
