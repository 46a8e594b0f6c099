"""The daily sequence-reset schedule (pure): when the last scheduled reset instant was.

Contract: ``last_reset_at(now_ns, "HH:MM")`` is the latest instant at or before ``now_ns`` whose
UTC wall time is HH:MM; a session whose store was created (last reset) before that instant is
due for its daily reset. The gateway logs such a session out if it is logged on and resets its
sequence numbers while it is disconnected.
"""
from __future__ import annotations

_DAY = 86_400 * 1_000_000_000
_MIN = 60 * 1_000_000_000


def last_reset_at(now_ns: int, hhmm: str) -> int:
    hours, minutes = int(hhmm[:2]), int(hhmm[3:5])
    offset = (hours * 60 + minutes) * _MIN
    today = now_ns - now_ns % _DAY + offset
    return today if today <= now_ns else today - _DAY
