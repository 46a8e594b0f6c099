"""Micro-benchmark of the journal writer: append + commit throughput per fsync policy.

Run from the project root: ``python -m bench.journal_bench [--payload 128] [--seconds 0.8]``.
Writes into a temporary directory that is deleted afterwards. Each (policy, batch size)
cell runs for at most ``--seconds``, so the whole run stays well under 30 s.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from engine.journal import JournalHeader, JournalWriter

POLICIES = ("batch", "interval", "never")
BATCHES = (1, 64, 1024)
HEADER = JournalHeader(format_version=1, release="bench", config_digest="bench", created_ns=0)


def run_cell(path: str, policy: str, batch: int, payload: bytes, seconds: float,
             max_records: int) -> tuple[int, float, int]:
    """Return (records, elapsed_s, syncs)."""
    if os.path.exists(path):
        os.unlink(path)
    w = JournalWriter.open(path, HEADER, fsync=policy, fsync_interval_ms=5)
    append, commit = w.append, w.commit
    clock = time.monotonic_ns
    records = syncs = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while records < max_records:
        for _ in range(batch):
            append(payload)
        synced_before = w.synced_offset
        commit(clock())
        syncs += w.synced_offset != synced_before
        records += batch
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - t0
    w.close()
    return records, elapsed, syncs


def framing_cost(payload: bytes, n: int = 200_000) -> float:
    """ns per append() alone (framing + CRC + buffering), no I/O."""
    d = tempfile.mkdtemp(prefix="journal-bench-")
    try:
        w = JournalWriter.open(os.path.join(d, "f"), HEADER, fsync="never")
        append = w.append
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n // 4):
                append(payload)
            best = min(best, (time.perf_counter() - t0) / (n // 4))
            w._buf.clear()  # drop buffered records; nothing is written
            w._end = w._written
        w.close()
        return best * 1e9
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payload", type=int, default=128, help="payload bytes per record")
    ap.add_argument("--seconds", type=float, default=0.8, help="time budget per cell")
    ap.add_argument("--max-records", type=int, default=3_000_000, help="record cap per cell")
    args = ap.parse_args()
    payload = os.urandom(args.payload)

    print(f"append() framing cost: {framing_cost(payload):.0f} ns/record "
          f"({args.payload}-byte payload, no I/O)")
    d = tempfile.mkdtemp(prefix="journal-bench-")
    try:
        path = os.path.join(d, "bench.journal")
        print(f"{'policy':<9} {'batch':>5} {'records/s':>12} {'MB/s':>9} {'commits/s':>10} "
              f"{'syncs/s':>9} {'us/commit':>10}")
        for policy in POLICIES:
            for batch in BATCHES:
                n, el, syncs = run_cell(path, policy, batch, payload, args.seconds,
                                        args.max_records)
                commits = n // batch
                mb = n * (args.payload + 8) / el / 1e6
                print(f"{policy:<9} {batch:>5} {n / el:>12,.0f} {mb:>9.1f} "
                      f"{commits / el:>10,.0f} {syncs / el:>9,.0f} {el / commits * 1e6:>10.1f}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
