"""The latency floor of this machine, before any exchange code runs.

    python -m bench.machine_noise [--seconds S]

Every latency the other benchmarks report stacks several process wake-ups (load client ->
gateway -> engine -> disk -> engine -> gateway -> load client). This prints what the operating
system and the (virtual) machine alone cost for those steps, so the exchange's own share can be
told apart:

  1. timer wake-up: a process asks to sleep 0.5 ms and measures how late it wakes (p50 .. max);
     the long tail is time the machine did not run a ready process (hypervisor, other tenants,
     interrupts), and the same stalls hit every process of the stack;
  2. TCP round trip on loopback between two processes, echoing 200 bytes, with both processes
     on one CPU and with each on its own CPU: a wake-up across CPUs has to interrupt a CPU that
     may be idle, which on a virtual machine can cost far more than a context switch;
  3. fdatasync of a 4 KiB overwrite in a preallocated file (the engine's journal does one per
     batch before it acknowledges anything);
  4. the stack's shape with no exchange code in it: a load client (a paced sender process and
     a receiving process) -> a relay process (the gateway's place) -> a journal process (the
     engine's place: pwrite of what it read, then fdatasync, then echo) -> relay -> client, at
     a fixed rate (default 10,000 messages/s of 200 bytes), with and without the fdatasync.
     The relays are uvloop protocols that forward bytes, nothing else: what this prints is a
     floor under any latency the FIX benchmark can report on this machine.

Prints numbers; asserts nothing. Linux only (CPU affinity); parts that cannot run say so.
"""
from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import socket
import sys
import tempfile
import time

from bench.pacing import pace
from bench.stats import percentiles

POINTS = (50, 90, 99, 99.9, 100)


def show(label: str, samples_ns: list[int]) -> None:
    p = percentiles(samples_ns, POINTS)
    print(f"  {label.ljust(24)}: " + "  ".join(
        (f"p{k:g}={v / 1000:,.0f}" if k != 100 else f"max={v / 1000:,.0f}") for k, v in p.items())
        + f" us  ({len(samples_ns):,} samples)")


def timer_wakeups(seconds: float, sleep_s: float = 0.0005) -> list[int]:
    late = []
    want = int(sleep_s * 1e9)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter_ns()
        time.sleep(sleep_s)
        late.append(time.perf_counter_ns() - t - want)
    return late


def _echo_child(listener: socket.socket, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(4096)
        if not data:
            break
        conn.sendall(data)
    os._exit(0)


def round_trips(count: int, my_cpu: int | None, echo_cpu: int | None,
                gap_s: float = 0.0002) -> list[int]:
    """``count`` echo round trips, one every ``gap_s`` (a paced flow, not a tight loop)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    pid = os.fork()
    if pid == 0:
        try:
            _echo_child(listener, echo_cpu)
        finally:
            os._exit(1)
    port = listener.getsockname()[1]
    listener.close()
    old = os.sched_getaffinity(0)
    if my_cpu is not None:
        os.sched_setaffinity(0, {my_cpu})
    out: list[int] = []
    payload = b"x" * 200
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            time.sleep(gap_s)
            t = time.perf_counter_ns()
            s.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(s.recv(4096))
            out.append(time.perf_counter_ns() - t)
    finally:
        s.close()
        os.waitpid(pid, 0)
        os.sched_setaffinity(0, old)
    return out


def fdatasyncs(count: int) -> list[int]:
    out = []
    with tempfile.NamedTemporaryFile(dir=os.getcwd(), prefix=".bench-sync-") as f:
        fd = f.fileno()
        os.write(fd, b"\0" * (1 << 20))
        os.fsync(fd)
        block = b"j" * 4096
        for i in range(count):
            os.pwrite(fd, block, (i * 4096) % (1 << 20))
            t = time.perf_counter_ns()
            os.fdatasync(fd)
            out.append(time.perf_counter_ns() - t)
    return out


# ----------------------------------------------------------------- 4. the stack's shape, empty

_MSG = 200


def _nodelay(t) -> None:
    t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _serve_once(listener: socket.socket, journal_port: int, fd: int, sync: bool) -> None:
    """(forked child) Serve one connection on ``listener`` until its peer closes: as the
    journal (``journal_port`` 0) or as a relay to the journal at ``journal_port``."""
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    done = loop.create_future()
    peer: list = [None]                     # the client's transport, once connected

    class Back(asyncio.Protocol):           # journal -> relay: forward to the client
        def data_received(self, d: bytes) -> None:
            peer[0].write(d)

    up = None
    if journal_port:
        up, _ = loop.run_until_complete(loop.create_connection(Back, "127.0.0.1", journal_port))
        _nodelay(up)

    class Front(asyncio.Protocol):
        off = 0

        def connection_made(self, t) -> None:
            peer[0] = t
            _nodelay(t)

        def data_received(self, d: bytes) -> None:
            if up is not None:              # the gateway's place: forward
                up.write(d)
                return
            os.pwrite(fd, d, self.off)      # the engine's place: journal, sync, answer
            self.off = (self.off + len(d)) % (8 << 20)
            if sync:
                os.fdatasync(fd)
            peer[0].write(d)

        def connection_lost(self, exc) -> None:
            if up is not None:
                up.close()
            if not done.done():
                done.set_result(None)

    loop.run_until_complete(loop.create_server(Front, sock=listener))
    loop.run_until_complete(done)
    os._exit(0)


def empty_stack(rate: float, seconds: float, sync: bool) -> list[int]:
    """Latencies (ns) of ``rate`` x ``seconds`` messages through client -> relay -> journal
    (fdatasync if ``sync``) -> relay -> client."""
    n = int(rate * seconds)
    pids = []
    with tempfile.NamedTemporaryFile(dir=os.getcwd(), prefix=".bench-journal-") as f:
        fd = f.fileno()
        os.write(fd, b"\0" * (8 << 20))
        os.fsync(fd)
        jl = socket.socket()
        jl.bind(("127.0.0.1", 0))
        jl.listen(1)
        pid = os.fork()
        if pid == 0:
            _serve_once(jl, 0, fd, sync)
        pids.append(pid)
        rl = socket.socket()
        rl.bind(("127.0.0.1", 0))
        rl.listen(1)
        jport = jl.getsockname()[1]
        pid = os.fork()
        if pid == 0:
            _serve_once(rl, jport, fd, sync)
        pids.append(pid)
        jl.close()
        s = socket.create_connection(rl.getsockname())
        rl.close()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stamps_mem = mmap.mmap(-1, 8 * n)
        stamps = memoryview(stamps_mem).cast("q")
        msgs = [b"%010d" % i + b"x" * (_MSG - 10) for i in range(n)]
        pid = os.fork()
        if pid == 0:                        # the paced sender
            def emit(lo: int, hi: int) -> None:
                t = time.perf_counter_ns()
                for i in range(lo, hi):
                    stamps[i] = t
                s.sendall(b"".join(msgs[lo:hi]))
            try:
                pace(n, rate, emit)
            finally:
                os._exit(0)
        pids.append(pid)
        out: list[int] = []
        buf = b""
        s.settimeout(30)
        try:
            while len(out) < n:
                data = s.recv(1 << 16)
                now = time.perf_counter_ns()
                if not data:
                    break
                buf += data
                k = len(buf) // _MSG
                for j in range(k):
                    out.append(now - stamps[int(buf[j * _MSG:j * _MSG + 10])])
                buf = buf[k * _MSG:]
        finally:
            s.close()
            for p in pids:
                os.waitpid(p, 0)
            stamps.release()
            stamps_mem.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="timer wake-up probe length")
    ap.add_argument("--round-trips", type=int, default=10_000)
    ap.add_argument("--syncs", type=int, default=2_000)
    ap.add_argument("--rate", type=float, default=10_000, help="empty-stack messages per second")
    ap.add_argument("--stack-seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print(f"machine noise: Python {sys.version.split()[0]}, CPUs {cpus}, load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"1. sleep 0.5 ms, lateness of the wake-up over {args.seconds:g} s:")
    late = timer_wakeups(args.seconds)
    show("late by", late)
    print(f"   wake-ups late by more than 1 ms: {sum(1 for x in late if x > 1_000_000)}, "
          f"more than 5 ms: {sum(1 for x in late if x > 5_000_000)}")
    print("2. TCP echo round trip on loopback, 200 bytes, one every 0.2 ms:")
    if len(cpus) >= 2:
        show(f"both on CPU {cpus[0]}", round_trips(args.round_trips, cpus[0], cpus[0]))
        show(f"CPU {cpus[0]} <-> CPU {cpus[1]}",
             round_trips(args.round_trips, cpus[0], cpus[1]))
    show("placed by the scheduler", round_trips(args.round_trips, None, None))
    print(f"3. fdatasync after a 4 KiB overwrite (file in {os.getcwd()}):")
    show("fdatasync", fdatasyncs(args.syncs))
    print(f"4. the stack's shape with no exchange code: client -> relay -> journal -> relay -> "
          f"client, {args.rate:,.0f} messages/s for {args.stack_seconds:g} s:")
    show("journal fdatasync per read", empty_stack(args.rate, args.stack_seconds, True))
    show("no fdatasync", empty_stack(args.rate, args.stack_seconds, False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
