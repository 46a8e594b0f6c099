"""FAST messages of the feed: building, fragmenting and encoding datagrams (spec/feed.md).

Contract:
- ``templates()`` loads ``spec/fast-templates.xml`` once per process.
- ``MessageBuilder(max_datagram)`` turns message values into datagrams (4-byte little-endian
  MsgSeqNum + one FAST message, dictionaries reset per datagram: ``Encoder.encode_datagram``),
  each at most ``max_datagram`` bytes. A message whose ``MDEntries`` do not fit is split into
  several datagrams with consecutive MsgSeqNums: every fragment repeats the message header
  fields and carries a share of the entries in order; ``LastFragment`` is 1 on the last
  fragment and 0 on the others; snapshots also carry ``RouteFirst`` 1 on the first fragment
  and 0 on the others. A single-datagram message has LastFragment 1 (and RouteFirst 1).
- Methods return ``list[bytes]``; the i-th datagram has MsgSeqNum ``first_seq + i``.
- ``SendingTime`` is UTC ``YYYYMMDDHHMMSSsss`` (as the Moscow Exchange feeds carry it);
  ``MDEntryTime`` is ``HHMMSSsss``.
- Decimal values are exact ``(mantissa, exponent)`` pairs; ``to_pair`` converts a Decimal or an
  int without rounding.
"""
from __future__ import annotations

import datetime
import functools
from decimal import Decimal
from pathlib import Path

from marketdata.fast import Decoder, Encoder, Templates

TEMPLATES_PATH = Path(__file__).resolve().parent.parent / "spec" / "fast-templates.xml"

# Template ids (spec/fast-templates.xml).
SECURITY_DEFINITION = 3
HEARTBEAT = 6
SEQUENCE_RESET = 7
SECURITY_STATUS = 9
TRADING_SESSION_STATUS = 11
SNAPSHOT = 14
INCREMENTAL = 15

# MDEntryType values.
BID, OFFER, TRADE, INDEX_VALUE, EMPTY_BOOK = "0", "1", "2", "3", "J"
# SecurityTradingStatus (326) values used: 17 ready to trade, 2 trading halt.
SECURITY_TRADING, SECURITY_HALTED = 17, 2
# TradSesStatus (340) values used: 2 open, 1 halted.
SESSION_OPEN, SESSION_HALTED = 2, 1
TRADING_SESSION_ID = "TQBR"

_SAFETY = 8     # bytes kept free when splitting: MsgSeqNum may grow by a byte between fragments


@functools.lru_cache(maxsize=None)
def templates(path: str | None = None) -> Templates:
    return Templates.load(path or TEMPLATES_PATH)


def decoder() -> Decoder:
    """A decoder for the feed's datagrams (decimals as exact pairs)."""
    return Decoder(templates(), decimals="pair")


def to_pair(value) -> tuple[int, int]:
    """An exact (mantissa, exponent) pair from a pair, a Decimal or an int (never a float)."""
    if isinstance(value, tuple):
        m, e = value
        return int(m), int(e)
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"decimal value expected, got {value!r}")
    if isinstance(value, int):
        return value, 0
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite decimal: {value}")
        sign, digits, exp = value.as_tuple()
        m = int("".join(map(str, digits)) or "0")
        return (-m if sign else m), exp
    raise TypeError(f"decimal value expected, got {value!r}")


def entry_time(ts_ns: int) -> int:
    """MDEntryTime HHMMSSsss (UTC) of a nanosecond timestamp."""
    ms = ts_ns // 1_000_000
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return ((h % 24) * 10000 + m * 100 + s) * 1000 + ms


class _SendingClock:
    """YYYYMMDDHHMMSSsss (UTC) of nanosecond timestamps, the date part cached per day."""

    def __init__(self) -> None:
        self._day = -1
        self._date = 0

    def __call__(self, ts_ns: int) -> int:
        ms = ts_ns // 1_000_000
        day, ms_of_day = divmod(ms, 86_400_000)
        if day != self._day:
            d = datetime.date(1970, 1, 1) + datetime.timedelta(days=day)
            self._day, self._date = day, (d.year * 10000 + d.month * 100 + d.day) * 1_000_000_000
        s, msec = divmod(ms_of_day, 1000)
        m, s = divmod(s, 60)
        h, m = divmod(m, 60)
        return self._date + (h * 10000 + m * 100 + s) * 1000 + msec


sending_time = _SendingClock()


class MessageBuilder:
    def __init__(self, max_datagram: int = 1400) -> None:
        self.max_datagram = max_datagram
        self.encoder = Encoder(templates())

    # -- single-datagram messages -----------------------------------------------------------

    def heartbeat(self, seq: int, now_ns: int) -> bytes:
        return self.encoder.encode_datagram(
            HEARTBEAT, {"MsgSeqNum": seq, "SendingTime": sending_time(now_ns)}, seq)

    def sequence_reset(self, seq: int, new_seq: int, now_ns: int) -> bytes:
        return self.encoder.encode_datagram(
            SEQUENCE_RESET, {"MsgSeqNum": seq, "SendingTime": sending_time(now_ns),
                             "NewSeqNo": new_seq}, seq)

    def security_status(self, seq: int, now_ns: int, symbol: str, status: int,
                        high=None, low=None) -> bytes:
        return self.encoder.encode_datagram(SECURITY_STATUS, {
            "MsgSeqNum": seq, "SendingTime": sending_time(now_ns), "Symbol": symbol,
            "TradingSessionID": TRADING_SESSION_ID, "SecurityTradingStatus": status,
            "HighLimitPx": high, "LowLimitPx": low}, seq)

    def trading_session_status(self, seq: int, now_ns: int, status: int, text: str = "") -> bytes:
        return self.encoder.encode_datagram(TRADING_SESSION_STATUS, {
            "MsgSeqNum": seq, "SendingTime": sending_time(now_ns), "TradSesStatus": status,
            "TradingSessionID": TRADING_SESSION_ID, "Text": text or None}, seq)

    def security_definition(self, seq: int, now_ns: int, total: int, inst, exp: int,
                            status: int) -> bytes:
        segment = {"MarketSegmentID": "MRKT", "TradingSessionID": TRADING_SESSION_ID,
                   "PriceLimits": {"HighLimitPx": (inst.band_high, exp),
                                   "LowLimitPx": (inst.band_low, exp),
                                   "TickRules": {"MinPriceIncrement": (inst.tick, exp)}}}
        values = {"MsgSeqNum": seq, "SendingTime": sending_time(now_ns), "TotNumReports": total,
                  "Symbol": inst.symbol, "SecurityDesc": inst.name, "Currency": inst.currency,
                  "RoundLot": inst.lot, "SecurityTradingStatus": status,
                  "SecurityAltIDs": ([{"SecurityAltID": inst.isin, "SecurityAltIDSource": "4"}]
                                     if inst.isin else None),
                  "MarketSegments": [segment]}
        return self.encoder.encode_datagram(SECURITY_DEFINITION, values, seq)

    # -- fragmented messages ----------------------------------------------------------------

    def incremental(self, first_seq: int, now_ns: int, entries: list[dict]) -> list[bytes]:
        st = sending_time(now_ns)

        def enc(seq: int, chunk: list, first: bool, last: bool) -> bytes:
            return self.encoder.encode_datagram(INCREMENTAL, {
                "MsgSeqNum": seq, "SendingTime": st, "LastFragment": 1 if last else 0,
                "MDEntries": chunk}, seq)

        return self._fragments(enc, first_seq, entries)

    def snapshot(self, first_seq: int, now_ns: int, header: dict, entries: list[dict]
                 ) -> list[bytes]:
        """``header``: LastMsgSeqNumProcessed, RptSeq, TotNumReports, Symbol, TradSesStatus,
        MDSecurityTradingStatus."""
        st = sending_time(now_ns)

        def enc(seq: int, chunk: list, first: bool, last: bool) -> bytes:
            values = dict(header)
            values.update({"MsgSeqNum": seq, "SendingTime": st,
                           "LastFragment": 1 if last else 0, "RouteFirst": 1 if first else 0,
                           "TradingSessionID": TRADING_SESSION_ID, "MDEntries": chunk})
            return self.encoder.encode_datagram(SNAPSHOT, values, seq)

        return self._fragments(enc, first_seq, entries)

    def _fragments(self, enc, first_seq: int, entries: list[dict]) -> list[bytes]:
        data = enc(first_seq, entries, True, True)
        if len(data) <= self.max_datagram:
            return [data]
        limit = self.max_datagram - _SAFETY
        chunks: list[list[dict]] = []
        todo = [entries]
        while todo:
            chunk = todo.pop()
            size = len(enc(first_seq + len(chunks), chunk, False, False))
            if size <= limit:
                chunks.append(chunk)
                continue
            if len(chunk) == 1:
                raise ValueError(f"one market-data entry does not fit a datagram of "
                                 f"{self.max_datagram} bytes: {chunk[0]}")
            # Estimated entries per fragment, then refine by splitting again where needed.
            per = max(1, min(len(chunk) - 1, len(chunk) * limit * 9 // (size * 10)))
            parts = [chunk[i:i + per] for i in range(0, len(chunk), per)]
            todo.extend(reversed(parts))
        last = len(chunks) - 1
        out = [enc(first_seq + i, c, i == 0, i == last) for i, c in enumerate(chunks)]
        for d in out:
            if len(d) > self.max_datagram:       # pragma: no cover - guarded by _SAFETY
                raise ValueError(f"fragment of {len(d)} bytes exceeds {self.max_datagram}")
        return out
