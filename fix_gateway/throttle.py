"""Per-session message throttle: a token bucket with a sustained-abuse detector (pure).

Contract: ``allow(now_ns)`` spends one token and returns True, or returns False when the session
is over ``rate`` messages per second (bucket depth: one second's worth). ``abusive(now_ns)`` is
True once the session has been refused continuously for ``disconnect_after_s`` seconds, at
which point the gateway logs the session out. Time is an argument; nothing reads a clock.
"""
from __future__ import annotations

_S = 1_000_000_000


class Throttle:
    __slots__ = ("rate", "tokens", "last_ns", "over_since", "disconnect_ns")

    def __init__(self, rate: int, disconnect_after_s: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.last_ns = None
        self.over_since: int | None = None
        self.disconnect_ns = disconnect_after_s * _S

    def allow(self, now_ns: int) -> bool:
        if self.last_ns is not None:
            self.tokens = min(self.rate, self.tokens + (now_ns - self.last_ns) * self.rate / _S)
        self.last_ns = now_ns
        if self.tokens >= 1:
            self.tokens -= 1
            self.over_since = None
            return True
        if self.over_since is None:
            self.over_since = now_ns
        return False

    def abusive(self, now_ns: int) -> bool:
        return self.over_since is not None and now_ns - self.over_since >= self.disconnect_ns
