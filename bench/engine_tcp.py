"""End-to-end engine benchmark over the TCP order-entry link, journal on.

    python -m bench.engine_tcp [--commands N] [--fsync batch|interval|never] [--window W]
                               [--batch B] [--rate R [--paced]]

Starts the engine as a real process (fresh journal in a temporary directory, fsync policy as
given, default: fsync every batch), connects one gateway-like client on the order-entry port and
sends the exchange-core-like workload of ``bench.workload``. The client keeps up to ``window``
commands in flight, in submissions of ``batch`` commands, and measures for each command the time
from its submission being written to its acknowledgement (journaled, events released). With
``--rate`` the client offers a fixed rate instead of as fast as possible, which shows latency
below saturation (``--paced``: command by command, as a continuous flow from many sessions
would arrive, rather than in submissions of ``batch``). Prints commands/s and latency percentiles; asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.pacing import pace
from bench.stats import percentiles
from bench.workload import generate
from bourse.config import load_config
from engine.client import EngineLink
from engine.link import Ack, Nack

ROOT = Path(__file__).resolve().parent.parent


def bench_config(tmp: Path, fsync: str) -> Path:
    text = (ROOT / "bourse" / "default.toml").read_text()
    text = re.sub(r"(?m)^order_entry_port\s*=.*$", "order_entry_port = 0", text)
    text = re.sub(r"(?m)^replication_port\s*=.*$", "replication_port = 0", text)
    text = re.sub(r"(?m)^journal_dir\s*=.*$", f'journal_dir = "{tmp / "journal"}"', text)
    text = re.sub(r'(?m)^fsync\s*=.*$', f'fsync = "{fsync}"', text)
    # Credit limits high enough that the benchmark measures matching, not risk rejects.
    text = re.sub(r'(?m)^credit_limit\s*=.*$', 'credit_limit = "100000000000000"', text)
    path = tmp / "bench.toml"
    path.write_text(text)
    return path


def start_engine(cfg_path: Path) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "bourse", "engine", "--config", str(cfg_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            import json
            info = json.loads(line[6:])
            return proc, int(info["order_entry"].rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("engine did not start")


async def _paced(link, cmds: list, rate: float, sent_at: list, batch: int) -> None:
    """Offer ``cmds`` at ``rate`` as a continuous flow: a pacing thread (bench.pacing) hands
    the commands now due to the loop, which submits them, so a submission holds the 2-4
    commands of one wake-up rather than a timer tick's worth.
    ``sent_at`` gets, per command, its submission time (ns); ``batch`` must be 1."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    n = len(cmds)

    def submit(lo: int, hi: int) -> None:
        now = time.perf_counter_ns()
        for k in range(lo, hi):
            sent_at[k] = now
        link.submit(cmds[lo:hi])
        if hi == n and not finished.done():
            finished.set_result(None)

    assert batch == 1
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.00005)      # the pacing thread gets the GIL when due
    try:
        th = threading.Thread(target=pace, daemon=True, args=(
            n, rate, lambda lo, hi: loop.call_soon_threadsafe(submit, lo, hi)))
        th.start()
        await finished
    finally:
        sys.setswitchinterval(old)


async def drive(port: int, digest: str, cmds: list, window: int, batch: int,
                rate: float | None, paced: bool = False) -> dict:
    link = await EngineLink.connect("127.0.0.1", port, component="gateway", node_id="bench-gw",
                                    config_digest=digest)
    n = len(cmds)
    sent_at = [0] * ((n + batch - 1) // batch)     # per submission, ns
    lat: list[int] = []
    acked = 0
    nacks = 0
    done = asyncio.get_running_loop().create_future()
    first_req = link.next_req

    async def reader():
        nonlocal acked, nacks
        while acked < n:
            msg = await link.recv()
            if msg is None:
                break
            if isinstance(msg, Ack):
                now = time.perf_counter_ns()
                base = msg.first_req_id - first_req     # an ack may span submissions
                lat.extend([now - sent_at[j // batch] for j in range(base, base + msg.count)])
                acked += msg.count
            elif isinstance(msg, Nack):
                nacks += msg.count
                acked += msg.count
        done.set_result(None)

    task = asyncio.ensure_future(reader())
    if rate and paced:
        await _paced(link, cmds, rate, sent_at, batch)
        await done
        elapsed = (time.perf_counter_ns() - sent_at[0]) / 1e9
        task.cancel()
        await link.close()
        return {"commands": n, "seconds": elapsed, "rate": n / elapsed, "lat": lat,
                "nacks": nacks}
    t0 = time.perf_counter_ns()
    i = 0
    sub = 0
    interval_ns = int(batch / rate * 1e9) if rate else 0
    while i < n:
        if rate:
            target = t0 + sub * interval_ns
            now = time.perf_counter_ns()
            if now < target:
                await asyncio.sleep((target - now) / 1e9)
        elif i - acked >= window:
            await asyncio.sleep(0)
            continue
        chunk = cmds[i:i + batch]
        sent_at[sub] = time.perf_counter_ns()
        link.submit(chunk)
        i += len(chunk)
        sub += 1
        if link.write_buffer_size() > 1 << 20:
            await link.drain()
        else:
            await asyncio.sleep(0)
    await done
    elapsed = (time.perf_counter_ns() - t0) / 1e9
    task.cancel()
    await link.close()
    return {"commands": n, "seconds": elapsed, "rate": n / elapsed, "lat": lat, "nacks": nacks}


def report(title: str, r: dict) -> None:
    p = percentiles(r["lat"], (50, 90, 99, 99.9, 100))
    print(f"{title}: {r['commands']:,} commands in {r['seconds']:.2f} s = "
          f"{r['rate']:,.0f} commands/s (nacks {r['nacks']})")
    print("  ack latency us: " + "  ".join(f"p{k:g}={v / 1000:,.0f}" if k != 100 else
                                           f"max={v / 1000:,.0f}" for k, v in p.items()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commands", type=int, default=300_000)
    ap.add_argument("--fsync", default="batch", choices=("batch", "interval", "never"))
    ap.add_argument("--window", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rate", type=float, default=None,
                    help="also run at this fixed offered rate (commands/s)")
    ap.add_argument("--paced", action="store_true",
                    help="fixed-rate run: offer commands as a continuous flow (a pacing "
                         "thread, 2-4 commands per submission) instead of --batch at once")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bourse-bench-"))
    try:
        cfg_path = bench_config(tmp, args.fsync)
        cfg = load_config(cfg_path)
        cmds = generate(cfg.market, args.commands, seed=1)
        proc, port = start_engine(cfg_path)
        try:
            try:
                import uvloop
                run = uvloop.run
            except ImportError:
                run = asyncio.run
            print(f"engine over TCP, fsync={args.fsync}, window {args.window}, "
                  f"submissions of {args.batch}")
            r = run(drive(port, cfg.digest, cmds, args.window, args.batch, None))
            report("max throughput", r)
            if args.rate:
                more = generate(cfg.market, args.commands, seed=2)
                # fresh sessions: reuse of the first run's client ids would be rejected
                r2 = run(drive(port, cfg.digest, _resession(more), args.window,
                               1 if args.paced else args.batch, args.rate, args.paced))
                report(f"fixed rate {args.rate:,.0f}/s"
                       + (", paced command by command" if args.paced else
                          f", submissions of {args.batch}"), r2)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _resession(cmds: list) -> list:
    import msgspec
    out = []
    for c in cmds:
        if hasattr(c, "session"):
            c = msgspec.structs.replace(c, session=c.session + "-r2")
        out.append(c)
    return out


if __name__ == "__main__":
    main()
