"""Offering a load at a fixed rate as a continuous flow, for the benchmarks' latency runs.

``pace(n, rate, emit, stop)`` (run it in a thread) calls ``emit(lo, hi)`` for the items whose
due time ``t0 + i / rate`` has come, then sleeps until the next one is due. ``time.sleep``
wakes within about 0.1-0.2 ms here, so items go out one to a few at a time, as independent
orders would, not in bursts of an event loop timer tick's worth. Returns (items emitted,
seconds); stops early when ``stop()`` is true.
"""
from __future__ import annotations

import time
from typing import Callable


def pace(n: int, rate: float, emit: Callable[[int, int], None],
         stop: Callable[[], bool] = lambda: False) -> tuple[int, float]:
    t0 = time.perf_counter_ns()
    step = 1e9 / rate
    sent = 0
    while sent < n and not stop():
        due = min(n, int((time.perf_counter_ns() - t0) / step) + 1)
        if due > sent:
            emit(sent, due)
            sent = due
        wait = (t0 + sent * step - time.perf_counter_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)
    return sent, (time.perf_counter_ns() - t0) / 1e9
