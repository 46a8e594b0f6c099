"""TCP replay of recent incremental datagrams (the feed's "historical replay").

A subscriber that missed a few incremental datagrams on both feeds asks this service for them
by MsgSeqNum and receives the original datagram bytes. Framing (spec/feed.md, "Replay"):

Every frame in either direction is a 4-byte little-endian unsigned length ``N`` followed by
``N`` bytes (``N`` at most 65,536); the first byte of a frame is its type.

Client to server, one frame per request (``N`` = 12)::

    'R' (0x52) | u8 channel (1 = incremental) | u16 reserved (0) | u32 begin | u32 end

Server to client, the answer to each request, in request order::

    'D' (0x44) | datagram                  one frame per datagram, begin..end, as sent on the
                                           feed (4-byte LE MsgSeqNum + FAST message)
    'E' (0x45) | u32 begin | u32 count     end of the answer
  or, instead of all of that,
    'J' (0x4A) | u8 code | u32 first_available | u32 last_available | UTF-8 text

All integers are little-endian. Reject codes: 1 malformed request (bad length or type, begin 0,
begin > end), 2 unknown channel, 3 too many messages (end - begin + 1 above the maximum per
request), 4 out of range (part of the range is not held: older than ``first_available`` or not
sent yet, after ``last_available``; 0/0 when nothing is held), 5 busy (too many connections;
the server closes). After a malformed frame the server closes the connection; a connection
idle for ``idle_timeout`` seconds is closed. A client may send several requests on one
connection.

``ReplayBuffer`` keeps the last ``size`` datagrams of a channel in a ring (O(1) add and look-up).
``ReplayServer`` serves it (asyncio). ``request_replay`` is the client.
"""
from __future__ import annotations

import asyncio
import logging
import struct

log = logging.getLogger("bourse.marketdata.replay")

CHANNEL_INCREMENTAL = 1
MAX_FRAME = 65536

REQ = struct.Struct("<BBHII")
END = struct.Struct("<BII")
REJ = struct.Struct("<BBII")
LEN = struct.Struct("<I")

T_REQUEST, T_DATAGRAM, T_END, T_REJECT = 0x52, 0x44, 0x45, 0x4A
BAD_REQUEST, UNKNOWN_CHANNEL, TOO_MANY, OUT_OF_RANGE, BUSY = 1, 2, 3, 4, 5
REJECT_NAMES = {BAD_REQUEST: "malformed request", UNKNOWN_CHANNEL: "unknown channel",
                TOO_MANY: "too many messages", OUT_OF_RANGE: "out of range", BUSY: "busy"}


class ReplayBuffer:
    """The last ``size`` datagrams of one channel by MsgSeqNum (added in sequence order)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring: list[bytes | None] = [None] * size
        self.last = 0           # highest MsgSeqNum held (0: none)
        self.count = 0

    def add(self, seq: int, datagram: bytes) -> None:
        if seq != self.last + 1:
            # A new sequence (publisher restart numbering from 1) or a jump: start over.
            self._ring = [None] * self.size
            self.count = 0
        self._ring[seq % self.size] = datagram
        self.last = seq
        if self.count < self.size:
            self.count += 1

    @property
    def first(self) -> int:
        return self.last - self.count + 1 if self.count else 0

    def get(self, begin: int, end: int) -> list[bytes]:
        if not self.count or begin < self.first or end > self.last or begin > end:
            raise KeyError((begin, end))
        ring, size = self._ring, self.size
        return [ring[s % size] for s in range(begin, end + 1)]


class ReplayRejected(Exception):
    def __init__(self, code: int, first: int, last: int, text: str) -> None:
        super().__init__(f"replay rejected ({REJECT_NAMES.get(code, code)}): {text}")
        self.code, self.first, self.last, self.text = code, first, last, text


class ReplayServer:
    def __init__(self, buffers: dict[int, ReplayBuffer], host: str = "127.0.0.1", port: int = 0,
                 *, max_messages: int = 1000, max_connections: int = 64,
                 idle_timeout: float = 30.0) -> None:
        self.buffers = buffers
        self.host, self.port = host, port
        self.max_messages = max_messages
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.requests = 0
        self.rejects = 0
        self.datagrams = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def answer(self, channel: int, begin: int, end: int) -> list[bytes]:
        """The frames (without length prefixes) that answer one request."""
        self.requests += 1
        buf = self.buffers.get(channel)
        if buf is None:
            return [self._reject(UNKNOWN_CHANNEL, 0, 0, f"unknown channel {channel} (channels: "
                                 f"{', '.join(map(str, sorted(self.buffers)))})")]
        first, last = buf.first, buf.last
        if begin < 1 or begin > end:
            return [self._reject(BAD_REQUEST, first, last,
                                 f"begin {begin} and end {end}: need 1 <= begin <= end")]
        n = end - begin + 1
        if n > self.max_messages:
            return [self._reject(TOO_MANY, first, last, f"{n} messages requested; at most "
                                 f"{self.max_messages} per request")]
        if not buf.count or begin < first or end > last:
            held = f"{first}..{last}" if buf.count else "none"
            return [self._reject(OUT_OF_RANGE, first, last,
                                 f"{begin}..{end} is not available (held: {held})")]
        data = buf.get(begin, end)
        self.datagrams += len(data)
        return [bytes((T_DATAGRAM,)) + d for d in data] + [END.pack(T_END, begin, n)]

    def _reject(self, code: int, first: int, last: int, text: str) -> bytes:
        self.rejects += 1
        return REJ.pack(T_REJECT, code, first, last) + text.encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            if len(self._conns) > self.max_connections:
                _write(writer, [self._reject(BUSY, 0, 0, "too many replay connections")])
                await writer.drain()
                return
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(4), self.idle_timeout)
                    (n,) = LEN.unpack(head)
                    if n > MAX_FRAME:
                        raise ValueError
                    body = await asyncio.wait_for(reader.readexactly(n), self.idle_timeout)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                except ValueError:
                    _write(writer, [self._reject(BAD_REQUEST, 0, 0, "frame too long")])
                    await writer.drain()
                    return
                if len(body) != REQ.size or body[0] != T_REQUEST:
                    _write(writer, [self._reject(BAD_REQUEST, 0, 0,
                                                 f"expected a 12-byte 'R' request, got "
                                                 f"{len(body)} bytes")])
                    await writer.drain()
                    return
                _, channel, _, begin, end = REQ.unpack(body)
                _write(writer, self.answer(channel, begin, end))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()


def _write(writer: asyncio.StreamWriter, frames: list[bytes]) -> None:
    writer.write(b"".join(LEN.pack(len(f)) + f for f in frames))


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = LEN.unpack(await reader.readexactly(4))
    if n > MAX_FRAME or n == 0:
        raise ConnectionError(f"bad replay frame length {n}")
    return await reader.readexactly(n)


async def request_replay(host: str, port: int, begin: int, end: int, *,
                         channel: int = CHANNEL_INCREMENTAL, timeout: float = 5.0) -> list[bytes]:
    """The datagrams ``begin..end`` of ``channel``; raises ``ReplayRejected``, ``OSError`` or
    ``asyncio.TimeoutError``."""
    async def go() -> list[bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(LEN.pack(REQ.size) + REQ.pack(T_REQUEST, channel, 0, begin, end))
            out: list[bytes] = []
            while True:
                try:
                    frame = await _read_frame(reader)
                except asyncio.IncompleteReadError:
                    raise ConnectionError("replay connection closed mid-answer") from None
                t = frame[0]
                if t == T_DATAGRAM:
                    out.append(frame[1:])
                elif t == T_END:
                    _, b, n = END.unpack(frame)
                    if b != begin or n != len(out):
                        raise ConnectionError(f"replay answer for {b} with {n} datagrams, "
                                              f"received {len(out)}")
                    return out
                elif t == T_REJECT:
                    _, code, first, last = REJ.unpack_from(frame)
                    raise ReplayRejected(code, first, last,
                                         frame[REJ.size:].decode(errors="replace"))
                else:
                    raise ConnectionError(f"unexpected replay frame type {t:#x}")
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout)
