"""Latency statistics for benchmarks (nearest-rank percentiles over integer nanoseconds)."""
from __future__ import annotations


def percentiles(samples: list[int], points=(50, 90, 99, 99.9, 100)) -> dict[float, int]:
    if not samples:
        return {p: 0 for p in points}
    s = sorted(samples)
    n = len(s)
    out = {}
    for p in points:
        k = min(n - 1, max(0, -(-int(p * n) // 100) - 1)) if p < 100 else n - 1
        out[p] = s[k]
    return out
