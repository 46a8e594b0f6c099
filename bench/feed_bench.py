"""FAST feed publisher benchmark: throughput and latency from engine events to datagrams.

    python -m bench.feed_bench [--commands N] [--rate R] [--live-commands M] [--depth D]
                               [--burst N] [--fsync batch|interval|never]

Three measurements, printed, nothing asserted:

1. core: the publisher core alone (``FeedPublisher`` + the service's socket sink: FAST
   encoding, A and B ``sendto`` to multicast groups with TTL 0, replay buffer) over the
   pre-computed events of the ``bench.workload`` mix (engine run in-process beforehand).
2. replication -> socket: the engine runs as a process and journals N commands first; then a
   ``PublisherService`` (this process, uvloop) reads the whole replication stream from seq 1
   and publishes all of it (catch-up disabled): events, commands, book updates (MD entries)
   and datagrams per second from the replication socket to the multicast socket.
3. live latency: a load client (its own process) offers R commands/s to the engine while the
   publisher is live, as a continuous flow (a pacing thread submits the 2-4 commands due at
   each ~0.15 ms wake-up; ``--burst N`` submits N at once instead, as one gateway flushing a
   backlog would). Per published command: (a) from the moment the replication frame holding
   it reaches the publisher (read and decoded) to its last datagram sent, and (b) from the
   engine's sequencer timestamp (``ts``, wall clock, same host) to its last datagram sent;
   (b) includes batching, matching, the journal write and fsync and the TCP hop. The default R
   is chosen so that the feed carries more than 20,000 book updates/s.

On a 2-core machine the engine, the publisher and the load client share the cores, which
shows in the tails. ``--core-only`` runs part 1 alone; its timed loop runs inside
``functools.reduce``, so that

    valgrind --tool=callgrind --toggle-collect=functools_reduce \
        python -m bench.feed_bench --core-only --commands 20000

counts the publisher core's instructions only (divide by the commands printed): a figure that
repeats from run to run, unlike the CPU times on a shared machine.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.engine_tcp import bench_config, drive
from bench.stats import percentiles
from bench.workload import generate
from bourse.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def md_config(path: Path, depth: int) -> None:
    """Append a [marketdata] section: private groups, TTL 0, replay on an ephemeral port."""
    a = os.getpid() % 200 + 20
    port = 40000 + (os.getpid() * 8) % 20000
    feeds = {f"{name}_{x}": f"239.255.{a}.{i * 2 + j + 1}:{port + i * 2 + j}"
             for i, name in enumerate(("incremental", "snapshot", "instruments"))
             for j, x in enumerate("ab")}
    text = path.read_text()
    text = re.sub(r"(?ms)^\[marketdata\].*?(?=^\[|\Z)", "", text)
    text += "\n[marketdata]\n" + "".join(f'{k} = "{v}"\n' for k, v in feeds.items())
    text += f"ttl = 0\nreplay_port = 0\ndepth = {depth}\nreplay_buffer = 1000000\n"
    path.write_text(text)


def fmt_lat(name: str, samples: list[int]) -> str:
    p = percentiles(samples, (50, 99, 99.9, 100))
    return (f"  {name}: " + "  ".join(
        (f"p{k:g}={v / 1000:,.0f}" if k != 100 else f"max={v / 1000:,.0f}")
        for k, v in p.items()) + f" us  ({len(samples):,} commands)")


def bench_core(cfg, n: int) -> float:
    from engine.commands import SequencedCommand
    from engine.core import Engine
    from marketdata.publisher import PublisherService

    cmds = generate(cfg.market, n, seed=3)
    eng = Engine(cfg.market)
    batches = [eng.apply(SequencedCommand(i, i * 1000, "b", 0, c)) for i, c in enumerate(cmds, 1)]
    svc = PublisherService(cfg)
    pub = svc.publisher
    on_events = pub.on_events
    t0 = time.perf_counter()
    functools.reduce(lambda _, evs: on_events(evs), batches, None)   # (see the docstring)
    dt = time.perf_counter() - t0
    svc.close_sockets()
    d = sum(pub.datagrams.values())
    print(f"1. publisher core (encode + 2 x sendto + replay buffer), depth {svc.md.depth}:")
    print(f"  {len(batches):,} commands in {dt:.2f} s = {len(batches) / dt:,.0f} commands/s, "
          f"{pub.entries / dt:,.0f} book updates/s ({pub.entries / len(batches):.2f} per "
          f"command), {d / dt:,.0f} datagrams/s ({d * 2 / dt:,.0f} sends/s), "
          f"{dt / len(batches) * 1e6:.1f} us per command")
    return pub.entries / len(batches)


def driver_main(argv) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--drive", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--commands", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--burst", type=int, default=0)
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    cmds = generate(cfg.market, a.commands, seed=a.seed)
    port = int(a.drive.rsplit(":", 1)[1])
    import uvloop
    paced = bool(a.rate) and not a.burst
    r = uvloop.run(drive(port, cfg.digest, cmds, 20_000, 1 if paced else (a.burst or 100),
                         a.rate, paced))
    print(json.dumps({"commands": r["commands"], "seconds": r["seconds"], "rate": r["rate"],
                      "nacks": r["nacks"]}), flush=True)


def run_driver(cfg_path: Path, port: int, n: int, seed: int, rate: float | None,
               burst: int = 0) -> subprocess.Popen:
    args = [sys.executable, "-m", "bench.feed_bench", "--drive", f"127.0.0.1:{port}",
            "--config", str(cfg_path), "--commands", str(n), "--seed", str(seed)]
    if rate:
        args += ["--rate", str(rate), "--burst", str(burst)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


async def bench_replication(cfg, repl_port: int, history_head: int) -> None:
    from marketdata.publisher import PublisherService

    svc = PublisherService(cfg, replication=("127.0.0.1", repl_port), node_id="bench-md",
                           catch_up=False)
    pub = svc.publisher
    t0 = time.perf_counter()
    await svc.start()
    while svc.last_seq < history_head - 1:
        await asyncio.sleep(0.01)
    pub.flush()
    dt = time.perf_counter() - t0
    d = sum(pub.datagrams.values())
    print(f"2. replication stream -> multicast socket (history of {history_head - 1:,} events "
          f"read from seq 1):")
    print(f"  {svc.last_seq / dt:,.0f} events/s, {pub.commands / dt:,.0f} commands/s, "
          f"{pub.entries / dt:,.0f} book updates/s, {d / dt:,.0f} datagrams/s "
          f"({dt:.2f} s)")
    await svc.close()


async def bench_live(cfg, cfg_path: Path, repl_port: int, oe_port: int, live_n: int,
                     rate: float, burst: int = 0) -> None:
    from bourse.run import tune_gc
    from marketdata.publisher import PublisherService

    svc = PublisherService(cfg, replication=("127.0.0.1", repl_port), node_id="bench-md-live")
    pub = svc.publisher
    await svc.start()
    await asyncio.wait_for(svc.caught_up.wait(), 30)
    tune_gc()                       # the collector as in the market-data process
    pub.arrival_latency, pub.commit_latency = [], []
    entries0, cmds0, d0 = pub.entries, pub.commands, sum(pub.datagrams.values())
    loop = asyncio.get_running_loop()
    cpu0 = time.process_time()
    proc = await loop.run_in_executor(None, run_driver, cfg_path, oe_port, live_n, 2, rate,
                                      burst)
    out = await loop.run_in_executor(None, proc.communicate)
    drv = json.loads(out[0].strip().splitlines()[-1])
    last = -1                       # wait until the publisher has handled everything
    while last != svc.last_seq:
        last = svc.last_seq
        await asyncio.sleep(0.2)
    dt = drv["seconds"]
    cpu = time.process_time() - cpu0
    entries = pub.entries - entries0
    how = f"in submissions of {burst}" if burst else "as a continuous flow"
    print(f"3. live, offered {rate:,.0f} commands/s {how} to a fresh engine (load client: "
          f"{drv['rate']:,.0f} commands/s achieved, {drv['nacks']} nacks, {dt:.1f} s):")
    print(f"  feed: {entries / dt:,.0f} book updates/s, {(pub.commands - cmds0) / dt:,.0f} "
          f"commands/s, {(sum(pub.datagrams.values()) - d0) / dt:,.0f} datagrams/s, "
          f"send errors {svc.send_errors}; publisher CPU {cpu / dt:.0%} of one core")
    print(fmt_lat("replication frame at publisher -> datagram sent", pub.arrival_latency))
    print(fmt_lat("engine sequencer ts -> datagram sent     ", pub.commit_latency))
    await svc.close()


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--drive" in argv:
        return driver_main(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commands", type=int, default=100_000, help="core and history commands")
    ap.add_argument("--live-commands", type=int, default=150_000)
    ap.add_argument("--rate", type=float, default=None,
                    help="offered commands/s in part 3 (default: enough for 24,000 book "
                         "updates/s)")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--burst", type=int, default=0,
                    help="live run: the load client submits N commands at once (default 0: "
                         "a continuous flow, 2-4 commands per submission)")
    ap.add_argument("--fsync", default="batch", choices=("batch", "interval", "never"))
    ap.add_argument("--core-only", action="store_true", help="part 1 alone")
    args = ap.parse_args(argv)
    import uvloop

    tmp = Path(tempfile.mkdtemp(prefix="bourse-feed-bench-"))
    try:
        cfg_path = bench_config(tmp, args.fsync)
        md_config(cfg_path, args.depth)
        cfg = load_config(cfg_path)
        per_cmd = bench_core(cfg, args.commands)
        if args.core_only:
            return
        rate = args.rate or round(24_000 / per_cmd, -2)

        proc, oe_port, repl_port = start_engine(cfg_path)
        try:
            drv = run_driver(cfg_path, oe_port, args.commands, 1, None)
            res = json.loads(drv.communicate()[0].strip().splitlines()[-1])
            head = _next_event_seq(repl_port, cfg.digest)
            print(f"   (engine history: {res['commands']:,} commands journaled at "
                  f"{res['rate']:,.0f}/s, {head - 1:,} events, fsync={args.fsync})")
            uvloop.run(bench_replication(cfg, repl_port, head))
        finally:
            stop(proc)

        shutil.rmtree(tmp / "journal", ignore_errors=True)     # a fresh engine for part 3
        proc, oe_port, repl_port = start_engine(cfg_path)
        try:
            uvloop.run(bench_live(cfg, cfg_path, repl_port, oe_port, args.live_commands, rate,
                                  args.burst))
        finally:
            stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_engine(cfg_path: Path) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([sys.executable, "-m", "bourse", "engine", "--config", str(cfg_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            info = json.loads(line[6:])
            return (proc, int(info["order_entry"].rsplit(":", 1)[1]),
                    int(info["replication"].rsplit(":", 1)[1]))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("engine did not start")


def _next_event_seq(port: int, digest: str) -> int:
    from engine.client import EngineLink

    async def go() -> int:
        link = await EngineLink.connect("127.0.0.1", port, component="bench", node_id="bench-probe",
                                        config_digest=digest, subscribe_from=1)
        n = link.welcome.next_event_seq
        await link.close()
        return n
    return asyncio.run(go())


if __name__ == "__main__":
    main()
