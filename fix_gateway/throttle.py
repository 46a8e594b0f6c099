"""Per-session message throttle: a token bucket with a sustained-abuse detector (pure).

Contract: ``allow(now_ns)`` spends one token and returns True, or returns False when the session
is over ``rate`` messages per second (bucket depth: one second's worth). Time is cut into whole
seconds from the first message; ``abusive(now_ns)`` is True once the session has had refusals in
``disconnect_after_s`` consecutive seconds (a second without any refusal starts the count
again), at which point the gateway logs the session out. Time is an argument; nothing reads a
clock.
"""
from __future__ import annotations

_S = 1_000_000_000


class Throttle:
    __slots__ = ("rate", "cap", "tokens", "last_ns", "window", "window_end", "refused_now",
                 "over_seconds", "disconnect_after")

    def __init__(self, rate: int, disconnect_after_s: int) -> None:
        self.rate = rate
        self.cap = rate * _S             # in token-nanoseconds: integer arithmetic, exact
        self.tokens = self.cap
        self.last_ns: int | None = None
        self.window: int | None = None   # index of the current second
        self.window_end = 0              # its end, ns (0: no message yet)
        self.refused_now = False
        self.over_seconds = 0            # consecutive completed seconds with a refusal
        self.disconnect_after = disconnect_after_s

    def _roll(self, now_ns: int) -> None:
        second = now_ns // _S
        if self.window is None:
            self.window = second
        elif second != self.window:
            if self.refused_now and second == self.window + 1:
                self.over_seconds += 1
            else:
                self.over_seconds = 0
            self.window = second
            self.refused_now = False
        self.window_end = (self.window + 1) * _S

    def allow(self, now_ns: int) -> bool:
        last = self.last_ns
        if now_ns == last:          # the same instant as the last message (one read's burst)
            tokens = self.tokens
            if tokens >= _S:
                self.tokens = tokens - _S
                return True
            self.refused_now = True
            return False
        if last is None:
            self._roll(now_ns)
            last = now_ns
        elif now_ns >= self.window_end or now_ns < last:   # another second (or a step back)
            self._roll(now_ns)
        tokens = self.tokens + (now_ns - last) * self.rate
        if tokens > self.cap:
            tokens = self.cap
        self.last_ns = now_ns
        if tokens >= _S:
            self.tokens = tokens - _S
            return True
        self.tokens = tokens
        self.refused_now = True
        return False

    def abusive(self, now_ns: int) -> bool:
        self._roll(now_ns)
        return self.over_seconds + (1 if self.refused_now else 0) >= self.disconnect_after
