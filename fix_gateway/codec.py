"""FIX tag=value codec: framing, parsing, encoding and UTCTimestamp helpers (pure, no I/O).

Hand-written on purpose: the session layer needs exact control over how garbled input is
classified (FIX 4.4 Volume 2 says a garbled message is *ignored*, without consuming a sequence
number, and the stream must resynchronise on the next message), and this is the gateway's hot
path, which no library makes fast enough. The hot part is compiled: ``fix_gateway._fixfast``
(hand-written C) provides ``FixMessage``, the framer/parser behind ``split``, ``encode`` and
the timestamp helpers, and is selected when importable (unless the environment variable
``FIX_GATEWAY_PURE_PYTHON`` is set). The pure-Python implementations below (``PyFixMessage``,
``py_split``, ``py_encode``, ``py_format_utc_timestamp``, ``py_parse_utc_timestamp``) are the
reference: the tests check that both give identical results, and the compiled code hands every
input it does not handle itself (unusual value types, huge numbers, errors) to them.
``IMPLEMENTATION`` says which one is in use ("c" or "python").

Contract
--------
* ``FixMessage`` is an immutable parsed message: ``fields`` holds every field in wire order,
  header (8, 9, 35, ...) and trailer (10) included, as ``(int tag, bytes value)``; ``raw`` is the
  exact bytes received; ``get(tag)`` returns the first occurrence (O(1): the compiled message
  indexes its tags while parsing, the reference builds a dict on first use); ``msg_type`` is
  tag 35 decoded.
* ``split(buffer, max_size)`` extracts whole messages from a byte stream framed as
  ``8=<BeginString>|9=<len>|35=...|10=nnn|`` and returns ``(frames, remaining, garbled)``.
  A candidate frame is *garbled* (reported as a ``Garbled`` value, never raised) when it does
  not start with ``8=FIX``, BodyLength is not the second field or not numeric, MsgType is not
  the third field, the CheckSum field is not exactly where BodyLength says (bad length or
  missing 10), the CheckSum is not three digits or does not match, a field is not
  ``<digits>=<value>``, tag 8, 9 or 10 appears inside the body (e.g. CheckSum not the last
  field), or the frame would exceed ``max_size``. After a garbled candidate the
  reader resynchronises on the next ``8=FIX`` *after the candidate's first byte*, so valid
  messages swallowed by a wrong BodyLength are recovered. ``remaining`` never exceeds
  ``max_size`` bytes: the buffer is bounded.
  Length-prefixed data fields (RawData 95/96, XmlData 212/213, ...) may contain SOH.
* ``FrameReader`` is the stateful wrapper: ``feed(data) -> (frames, garbled)``.
* ``encode(...)`` builds a complete message (header 8, 9, 35, 49, 56, 34, 52, extra header
  fields, body, trailer 10) with correct BodyLength and CheckSum.
* ``format_utc_timestamp(ns)`` / ``parse_utc_timestamp(b)`` convert between integer
  nanoseconds since the Unix epoch and ``YYYYMMDD-HH:MM:SS.sss``; they never read the clock.

Values are bytes; text is ASCII/UTF-8 by convention (the codec does not decode values).
"""
from __future__ import annotations

import os as _os
import time as _time
from zlib import adler32 as _adler32
from typing import Iterable, NamedTuple, Sequence, Union

__all__ = [
    "SOH",
    "MAX_MESSAGE_SIZE",
    "DATA_LENGTH_TAGS",
    "FixMessage",
    "Garbled",
    "FrameReader",
    "split",
    "parse",
    "encode",
    "checksum",
    "format_utc_timestamp",
    "parse_utc_timestamp",
    "IMPLEMENTATION",
    "PyFixMessage",
    "py_split",
    "py_encode",
    "py_format_utc_timestamp",
    "py_parse_utc_timestamp",
]

SOH = b"\x01"
MAX_MESSAGE_SIZE = 64 * 1024
_MAX_BEGIN_STRING = 16
_MAX_LENGTH_DIGITS = 9
_GARBLED_SAMPLE = 512

#: length tag -> data tag whose value is exactly that many bytes (may contain SOH).
DATA_LENGTH_TAGS: dict[int, int] = {
    90: 91, 93: 89, 95: 96, 212: 213, 348: 349, 350: 351, 352: 353, 354: 355, 356: 357,
    358: 359, 360: 361, 362: 363, 364: 365, 445: 446, 618: 619, 621: 622,
}
_DATA_TAGS = frozenset(DATA_LENGTH_TAGS.values())

Value = Union[bytes, str, int]


class PyFixMessage:
    """A parsed FIX message. ``fields`` in wire order (header and trailer included).

    The reference implementation; ``FixMessage`` is the compiled one when available."""

    __slots__ = ("fields", "raw", "_index")

    def __init__(self, fields: Sequence[tuple[int, bytes]], raw: bytes = b"") -> None:
        self.fields: tuple[tuple[int, bytes], ...] = (
            fields if type(fields) is tuple else tuple(fields))
        self.raw: bytes = raw
        self._index: dict[int, bytes] | None = None

    def get(self, tag: int, default: bytes | None = None) -> bytes | None:
        """Value of the first occurrence of ``tag``, else ``default``."""
        index = self._index
        if index is None:
            # reversed: earlier occurrences overwrite later ones, so the first one wins
            index = self._index = dict(reversed(self.fields))
        return index.get(tag, default)

    def get_all(self, tag: int) -> list[bytes]:
        """Every value of ``tag`` in wire order (repeating groups)."""
        return [v for t, v in self.fields if t == tag]

    def __contains__(self, tag: object) -> bool:
        return self.get(tag) is not None  # type: ignore[arg-type]

    @property
    def msg_type(self) -> str:
        v = self.get(35)
        return v.decode("ascii", "replace") if v is not None else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PyFixMessage) and self.fields == other.fields

    def __hash__(self) -> int:
        return hash(self.fields)

    def __repr__(self) -> str:
        text = "|".join(f"{t}={v.decode('latin-1')}" for t, v in self.fields)
        return f"FixMessage({text!r})"


class Garbled(NamedTuple):
    """A rejected piece of the stream: why, a sample (first 512 bytes) and its full size."""

    reason: str
    data: bytes
    size: int


def _garbled(reason: str, chunk: bytes) -> Garbled:
    return Garbled(reason, bytes(chunk[:_GARBLED_SAMPLE]), len(chunk))


class _Bad(Exception):
    """Internal: a candidate frame is garbled (never escapes this module)."""


def _parse_body_slow(body: bytes) -> list[tuple[int, bytes]]:
    """Field scanner aware of length-prefixed data fields (their values may contain SOH)."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(body)
    data_len: dict[int, int] = {}
    while i < n:
        eq = body.find(b"=", i)
        if eq <= i:
            raise _Bad("malformed field")
        t = body[i:eq]
        if not t.isdigit():
            raise _Bad("malformed field")
        try:
            tag = int(t)
        except ValueError:        # more digits than int() converts
            raise _Bad("malformed field") from None
        if tag in _FRAMING_TAGS:
            raise _Bad("BeginString, BodyLength or CheckSum inside the body")
        if tag in _DATA_TAGS and tag in data_len:
            end = eq + 1 + data_len.pop(tag)
            if end >= n or body[end] != 1:
                raise _Bad("data field length mismatch")
        else:
            end = body.find(SOH, eq + 1)
            if end < 0:
                raise _Bad("malformed field")
        value = body[eq + 1:end]
        if tag in DATA_LENGTH_TAGS:
            if not value.isdigit():
                raise _Bad("bad data field length")
            digits = value.lstrip(b"0")
            # a length beyond 18 digits exceeds any frame: the data field cannot match it
            data_len[DATA_LENGTH_TAGS[tag]] = int(digits or b"0") if len(digits) <= 18 else 1 << 62
        out.append((tag, value))
        i = end + 1
    return out


#: b"<tag>" -> tag for every ordinary tag below 10000 (not the data length tags, which need
#: the slow path); a dict hit both validates the digits and converts, much faster than int().
#: The framing tags 8, 9, 10 are left out too: inside a body they make the message garbled.
_FRAMING_TAGS = frozenset({8, 9, 10})
_TAG_BYTES: dict[bytes, int] = {b"%d" % t: t for t in range(1, 10000)
                                if t not in DATA_LENGTH_TAGS and t not in _FRAMING_TAGS}


#: Memo of short validated fields, b"54=1" -> (54, b"1"): most fields of a FIX stream repeat
#: (MsgType, CompIDs, Side, OrdType, statuses...), and one dict hit replaces the partition,
#: the tag conversion and the tuple. Bounded: cleared when full. A pure cache, so sharing it
#: between sessions cannot change any result.
_PAIRS: dict[bytes, tuple[int, bytes]] = {}
_PAIR_MAX_LEN = 12
_PAIRS_MAX = 16384


def _parse_body(body: bytes) -> list[tuple[int, bytes]]:
    """Fields of ``body`` (which ends with SOH). Raises _Bad."""
    out: list[tuple[int, bytes]] = []
    append = out.append
    tags = _TAG_BYTES
    pairs = _PAIRS
    get = pairs.get
    try:
        for part in body.split(SOH)[:-1]:
            pair = get(part)
            if pair is None:
                t, sep, v = part.partition(b"=")
                if not sep:
                    raise KeyError
                pair = (tags[t], v)
                if len(part) <= _PAIR_MAX_LEN:
                    if len(pairs) >= _PAIRS_MAX:
                        pairs.clear()
                    pairs[part] = pair
            append(pair)
    except KeyError:
        return _parse_body_slow(body)
    return out


def _frame_at(buf: bytes, pos: int, n: int, max_size: int):
    """Try to cut one frame at ``pos`` (where b"8=FIX" starts).

    Returns (None, need) when more data is needed (``need``: the buffer length at which
    trying again can make progress, 0 if unknown), (FixMessage, end) when valid, or
    (reason, None) when the candidate is garbled.
    """
    soh1 = buf.find(SOH, pos + 2, pos + 3 + _MAX_BEGIN_STRING)
    if soh1 < 0:
        if n - pos > 2 + _MAX_BEGIN_STRING:
            return ("BeginString too long", None)
        return (None, 0)
    p = soh1 + 1
    if n < p + 2:
        return (None, 0)
    if buf[p:p + 2] != b"9=":
        return ("BodyLength is not the second field", None)
    soh2 = buf.find(SOH, p + 2, p + 3 + _MAX_LENGTH_DIGITS)
    if soh2 < 0:
        if n - p > 2 + _MAX_LENGTH_DIGITS:
            return ("BodyLength not numeric", None)
        return (None, 0)
    length_b = buf[p + 2:soh2]
    if not length_b.isdigit():
        return ("BodyLength not numeric", None)
    body_start = soh2 + 1
    body_end = body_start + int(length_b)
    end = body_end + 7  # b"10=nnn\x01"
    if end - pos > max_size:
        return ("message exceeds maximum size", None)
    if n < end:
        if n > body_end and not _trailer_prefix(buf[body_end - 1:n]):
            return ("BodyLength incorrect or CheckSum not last", None)
        return (None, body_end + 1 if n <= body_end else n + 1)
    if buf[body_end:body_end + 3] != b"10=" or buf[end - 1] != 1 or buf[body_end - 1] != 1:
        return ("BodyLength incorrect or CheckSum not last", None)
    cks = buf[body_end + 3:end - 1]
    if not cks.isdigit():
        return ("CheckSum not numeric", None)
    if checksum(buf, pos, body_end) != int(cks):
        return ("CheckSum incorrect", None)
    if buf[body_start:body_start + 3] != b"35=":
        return ("MsgType is not the third field", None)
    try:
        body = _parse_body(buf[body_start:body_end])
    except _Bad as e:
        return (str(e), None)
    return (PyFixMessage(((8, buf[pos + 2:soh1]), (9, length_b), *body, (10, cks)),
                         buf[pos:end]), end)


def _trailer_prefix(b: bytes) -> bool:
    """Could ``b`` (SOH ending the body, then a partial trailer) start b"\x0110=nnn\x01"?"""
    for i, c in enumerate(b):
        if i < 4:
            if c != b"\x0110="[i]:
                return False
        elif i < 7:
            if not 48 <= c <= 57:
                return False
        elif c != 1:
            return False
    return True


_BEGIN = b"8=FIX"


def _partial_begin(buf: bytes, n: int) -> int:
    """Length of the longest proper prefix of b'8=FIX' that ``buf`` ends with."""
    for k in (4, 3, 2, 1):
        if n >= k and buf.endswith(_BEGIN[:k]):
            return k
    return 0


def py_split(buf: bytes, max_size: int) -> tuple[list[PyFixMessage], int, list[Garbled], int]:
    """Frames, the offset of the unconsumed tail, garbled pieces, and the buffer length at
    which the tail can make progress (0 if unknown). The reference of ``_split``."""
    frames: list[FixMessage] = []
    garbled: list[Garbled] = []
    n = len(buf)
    pos = 0
    need = 0
    while pos < n:
        if not buf.startswith(_BEGIN, pos):
            idx = buf.find(_BEGIN, pos)
            if idx < 0:
                keep = n - _partial_begin(buf, n)
                if keep > pos:
                    garbled.append(_garbled("data outside a message", buf[pos:keep]))
                pos = keep
                break
            garbled.append(_garbled("data outside a message", buf[pos:idx]))
            pos = idx
        value, end = _frame_at(buf, pos, n, max_size)
        if value is None:
            need = end
            break
        if end is not None:
            frames.append(value)
            pos = end
            continue
        # garbled candidate: resynchronise on the next 8=FIX after its first byte
        idx = buf.find(_BEGIN, pos + 1)
        if idx < 0:
            idx = n - _partial_begin(buf, n)
            if idx <= pos:
                idx = pos + 1
        garbled.append(_garbled(value, buf[pos:idx]))
        pos = idx
    return frames, pos, garbled, need


def split(buffer: bytes, max_size: int = MAX_MESSAGE_SIZE
          ) -> tuple[list[FixMessage], bytes, list[Garbled]]:
    """Cut ``buffer`` into whole messages.

    Returns ``(frames, remaining, garbled)``: the valid messages in stream order, the
    unconsumed tail (an incomplete frame, at most ``max_size`` bytes) and the garbled pieces.
    """
    buf = bytes(buffer)
    frames, pos, garbled, _need = _split(buf, max_size)
    return frames, buf[pos:], garbled


class FrameReader:
    """Stateful stream framer: feed bytes, get whole messages and garbled pieces.

    A partial frame is kept in a bytearray and not re-scanned until enough bytes have
    arrived to make progress, so a counterparty trickling a message byte by byte costs
    linear, not quadratic, work.
    """

    __slots__ = ("_buf", "_need", "max_size")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._need = 0
        self.max_size = max_size

    def feed(self, data: bytes) -> tuple[list[FixMessage], list[Garbled]]:
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return [], []
            buf = bytes(self._buf)
        else:
            buf = bytes(data)
        frames, pos, garbled, need = _split(buf, self.max_size)
        self._buf = bytearray(buf[pos:]) if pos < len(buf) else bytearray()
        self._need = need - pos if need else 0
        return frames, garbled

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message (never above ``max_size``)."""
        return len(self._buf)

    def clear(self) -> None:
        self._buf = bytearray()
        self._need = 0


def parse(raw: bytes) -> FixMessage:
    """Parse one complete frame; raises ValueError if it is not exactly one valid message."""
    frames, remaining, garbled = split(raw, max(len(raw), 1) + 16)
    if len(frames) != 1 or remaining or garbled:
        reason = garbled[0].reason if garbled else "not exactly one complete message"
        raise ValueError(f"invalid FIX message: {reason}")
    return frames[0]


# ---------------------------------------------------------------------------------- encoding


def _text(v: Value) -> str:
    """A field value as text: str and int as is, bytes via surrogateescape (exact bytes)."""
    t = type(v)
    if t is str:
        return v  # type: ignore[return-value]
    if t is bool:
        return "Y" if v else "N"
    if t is int:
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "surrogateescape")
    return str(v)


def _field(tag: int, v: Value) -> str:
    return f"{tag}={_text(v)}\x01"


def _body_text(fields: Iterable[tuple[int, Value] | bytes]) -> list[str]:
    # str and int values (the common case) are formatted inline; everything else via _field;
    # a bytes item is a run of fields already encoded (each "tag=value" and SOH), kept as is
    out = []
    for item in fields:
        if type(item) is bytes:
            if not item.endswith(b"\x01"):
                raise ValueError("an encoded run of fields must end with SOH")
            out.append(item.decode("utf-8", "surrogateescape"))
            continue
        t, v = item
        out.append(f"{t}={v}\x01" if type(v) is str or type(v) is int else _field(t, v))
    return out


def checksum(data: bytes, start: int = 0, end: int | None = None) -> int:
    """FIX CheckSum of ``data[start:end]``: the sum of the bytes modulo 256.

    Computed with zlib.adler32 over 256-byte slices: for a slice that short, the low half of
    Adler-32 is exactly 1 + the byte sum (no modular reduction happens), and adler32 runs in C.
    """
    if end is None:
        end = len(data)
    a32 = _adler32
    total = 0
    for i in range(start, end, 256):
        j = i + 256
        total += (a32(data[i:j if j < end else end]) & 0xFFFF) - 1
    return total & 255


def py_encode(msg_type: str | bytes, fields: Iterable[tuple[int, Value]], *,
              begin_string: str | bytes = "FIX.4.4", sender: str | bytes, target: str | bytes,
              seq: int, sending_time: bytes | str,
              extra_header: Iterable[tuple[int, Value]] = ()) -> bytes:
    """Build a complete message: 8, 9, 35, 49, 56, 34, 52, extra header, body, 10.

    Values may be bytes, str (UTF-8), int or bool (Y/N); a value containing SOH raises
    ValueError (a programming error: the codec never emits a corrupt frame). An item of
    ``fields`` may also be ``bytes``: fields already encoded (``reports.execution_report_wire``),
    inserted verbatim; it must end with SOH.
    """
    parts = [f"35={_text(msg_type)}\x0149={_text(sender)}\x0156={_text(target)}"
             f"\x0134={seq}\x0152={_text(sending_time)}\x01"]
    if extra_header:
        parts += _body_text(extra_header)
    parts += _body_text(fields)
    text = "".join(parts)
    runs = [i for i in fields if type(i) is bytes]
    expected = len(parts) - len(runs) + 4 + sum(r.count(b"\x01") for r in runs)
    if text.count("\x01") != expected:
        raise ValueError("a field value contains SOH")
    body = text.encode("utf-8", "surrogateescape")
    msg = b"8=%s\x019=%d\x01%s" % (_text(begin_string).encode(), len(body), body)
    return msg + _CHECKSUM[checksum(msg)]


_CHECKSUM = [b"10=%03d\x01" % i for i in range(256)]


# ------------------------------------------------------------------------- UTC timestamps

_ts_cache_sec = -1
_ts_cache_prefix = b""


def py_format_utc_timestamp(ns: int) -> bytes:
    """``YYYYMMDD-HH:MM:SS.sss`` (UTC, millisecond precision, truncated) for ``ns``."""
    global _ts_cache_sec, _ts_cache_prefix
    sec, rem = divmod(ns, 1_000_000_000)
    if sec != _ts_cache_sec:
        t = _time.gmtime(sec)
        prefix = b"%04d%02d%02d-%02d:%02d:%02d" % (t.tm_year, t.tm_mon, t.tm_mday,
                                                   t.tm_hour, t.tm_min, t.tm_sec)
        _ts_cache_sec, _ts_cache_prefix = sec, prefix
    else:
        prefix = _ts_cache_prefix
    return b"%s.%03d" % (prefix, rem // 1_000_000)


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_MDAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


_date_cache: dict[bytes, int] = {}


def _date_seconds(date: bytes) -> int:
    """Epoch seconds at 00:00 UTC of ``YYYYMMDD``; raises ValueError. Memoised (bounded)."""
    secs = _date_cache.get(date)
    if secs is not None:
        return secs
    if not date.isdigit():
        raise ValueError("bad date")
    y, mo, d = int(date[0:4]), int(date[4:6]), int(date[6:8])
    if not (1 <= mo <= 12 and 1 <= d <= _MDAYS[mo - 1]):
        raise ValueError("bad date")
    if mo == 2 and d == 29 and not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
        raise ValueError("bad date")
    secs = _days_from_civil(y, mo, d) * 86400
    if len(_date_cache) >= 4096:
        _date_cache.clear()
    _date_cache[date] = secs
    return secs


def py_parse_utc_timestamp(value: bytes | str) -> int:
    """Nanoseconds since the epoch for ``YYYYMMDD-HH:MM:SS[.sss|.ssssss|.sssssssss]``.

    Raises ValueError on any other format or an out-of-range component.
    """
    b = value.encode() if isinstance(value, str) else bytes(value)
    n = len(b)
    if n not in (17, 21, 24, 27) or b[8] != 45 or b[11] != 58 or b[14] != 58 \
            or (n > 17 and b[17] != 46):
        raise ValueError(f"not a UTCTimestamp: {b!r}")
    hh, mi, ss, frac = b[9:11], b[12:14], b[15:17], b[18:]
    if not (hh.isdigit() and mi.isdigit() and ss.isdigit() and (n == 17 or frac.isdigit())):
        raise ValueError(f"not a UTCTimestamp: {b!r}")
    h, m, s = int(hh), int(mi), int(ss)
    if h > 23 or m > 59 or s > 60:
        raise ValueError(f"UTCTimestamp out of range: {b!r}")
    try:
        day = _date_seconds(b[0:8])
    except ValueError:
        raise ValueError(f"UTCTimestamp out of range: {b!r}") from None
    nanos = int(frac) * 10 ** (27 - n) if n > 17 else 0
    return (day + h * 3600 + m * 60 + s) * 1_000_000_000 + nanos


# ------------------------------------------------------------------ implementation in use

try:
    if _os.environ.get("FIX_GATEWAY_PURE_PYTHON"):
        raise ImportError("pure Python requested")
    from fix_gateway import _fixfast as _fast
except ImportError:
    _fast = None

if _fast is not None:
    _fast.set_fallbacks(py_format_utc_timestamp, py_parse_utc_timestamp, py_encode, Garbled)
    IMPLEMENTATION = "c"
    FixMessage = _fast.FixMessage
    _split = _fast.split
    encode = _fast.encode
    format_utc_timestamp = _fast.format_utc_timestamp
    parse_utc_timestamp = _fast.parse_utc_timestamp
else:
    IMPLEMENTATION = "python"
    FixMessage = PyFixMessage                   # type: ignore[misc]
    _split = py_split
    encode = py_encode
    format_utc_timestamp = py_format_utc_timestamp
    parse_utc_timestamp = py_parse_utc_timestamp
