"""CPU per wake-up of an asyncio (uvloop) reader: a stream-reader loop against a protocol callback.

    python -m bench.link_read_cost [--reads N] [--gap-ms G]

A forked writer sends one 100-byte message every G ms over a socket pair; this process reads
them on uvloop, once with an ``asyncio.StreamReader`` loop (``await reader.read()``, as the
engine link client used to) and once with a protocol whose ``data_received`` takes the bytes
(as ``engine.client`` does now), and prints its own CPU time per read, from the scheduler's
run time of every thread (``/proc/self/task/*/schedstat``). At low rates every read is a
wake-up, so this is the price of one wake-up on each path. Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time


def _cpu_ns() -> int:
    total = 0
    for t in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{t}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def _writer(sock: socket.socket, n: int, gap: float) -> None:
    msg = b"x" * 100
    due = time.perf_counter()
    for _ in range(n):
        due += gap
        while time.perf_counter() < due:
            time.sleep(0.00005)
        sock.send(msg)
    sock.close()


class _Counter(asyncio.Protocol):
    def __init__(self, want: int, done: asyncio.Future) -> None:
        self.want, self.done, self.got = want, done, 0

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.want and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _streams(sock: socket.socket, want: int) -> None:
    reader, _writer_ = await asyncio.open_connection(sock=sock)
    got = 0
    while got < want:
        data = await reader.read(1 << 16)
        if not data:
            break
        got += len(data)


async def _protocol(sock: socket.socket, want: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    await loop.create_connection(lambda: _Counter(want, done), sock=sock)
    await done


def measure(mode: str, n: int, gap: float) -> float:
    import uvloop
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close()
        try:
            _writer(b, n, gap)
        finally:
            os._exit(0)
    b.close()

    async def main() -> float:
        c0 = _cpu_ns()
        await (_streams(a, 100 * n) if mode == "streams" else _protocol(a, 100 * n))
        return (_cpu_ns() - c0) / n / 1000

    try:
        return uvloop.run(main())
    finally:
        os.waitpid(pid, 0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reads", type=int, default=20_000)
    ap.add_argument("--gap-ms", type=float, default=0.2)
    args = ap.parse_args(argv)
    print(f"one 100-byte read every {args.gap_ms:g} ms, {args.reads:,} reads, uvloop")
    for mode in ("streams", "protocol", "streams", "protocol"):
        us = measure(mode, args.reads, args.gap_ms / 1000)
        name = "asyncio.StreamReader loop" if mode == "streams" else "protocol callback"
        print(f"  {name:26}: {us:.1f} us CPU per read")


if __name__ == "__main__":
    main()
