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
     batch before it acknowledges anything).

Prints numbers; asserts nothing. Linux only (CPU affinity); parts that cannot run say so.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="timer wake-up probe length")
    ap.add_argument("--round-trips", type=int, default=10_000)
    ap.add_argument("--syncs", type=int, default=2_000)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
