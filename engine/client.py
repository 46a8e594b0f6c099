"""Client side of the engine link, for gateways, publishers, operators and tests.

Contract:
- ``EngineLink.connect`` performs the handshake and raises ``LinkRefused`` with the engine's
  reason when the engine refuses this node (release or configuration mismatch, duplicate node id,
  bad subscription).
- ``submit(cmds)`` numbers the commands with consecutive request ids continuing after
  ``Welcome.last_req_id`` and returns the first id; the engine's ``Ack``/``Nack`` arrive through
  ``recv()``. Nothing is acknowledged before it is journaled.
- ``recv()`` returns the next message from the engine (``Events`` with decoded events, ``Ack``,
  ``Nack``, ``Heartbeat``, ``Disconnect``), or ``None`` at end of stream; ``recv_many()`` returns
  every message that has arrived (at least one), or ``[]`` at end of stream: one read of the
  socket's buffer for a burst of frames, so a busy consumer pays one wake-up per read, not two
  per frame. A frame over the limit or an undecodable one raises ``LinkClosed``.
- ``ReplicationFeed`` wraps a subscription that survives disconnections: after a ``Disconnect``
  or a dropped connection it reconnects and resumes from the last delivered seq + 1, so its
  caller sees every event exactly once, in order.
"""
from __future__ import annotations

import asyncio
import collections
import socket
from typing import AsyncIterator, Sequence

import msgspec

from bourse import RELEASE
from engine.commands import Command
from engine.link import (
    FROM_ENGINE_DECODER, HEADER, MAX_FRAME, Disconnect, Events, FrameBuffer, FrameError, Hello,
    Ping, Refused, Submit, Welcome,
)

#: Bytes asked of the socket's buffer per read (what has arrived, up to this).
READ_CHUNK = 1 << 18


class LinkRefused(Exception):
    """The engine refused the handshake; ``str(exc)`` is the engine's reason."""


class LinkClosed(Exception):
    pass


class EngineLink:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 welcome: Welcome) -> None:
        self.reader = reader
        self.writer = writer
        self.welcome = welcome
        self.next_req = welcome.last_req_id + 1
        self._enc = msgspec.msgpack.Encoder()
        self._frames = FrameBuffer()
        self._ready: collections.deque = collections.deque()

    @classmethod
    async def connect(cls, host: str, port: int, *, component: str, node_id: str,
                      config_digest: str, subscribe_from: int = 0, release: str = RELEASE,
                      timeout: float = 10.0) -> "EngineLink":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_FRAME), timeout)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        enc = msgspec.msgpack.Encoder()
        body = enc.encode(Hello(component, node_id, release, config_digest, subscribe_from))
        writer.write(HEADER.pack(len(body)) + body)
        try:
            msg = await asyncio.wait_for(_read_message(reader), timeout)
        except BaseException:
            writer.close()
            raise
        if isinstance(msg, Refused):
            writer.close()
            raise LinkRefused(msg.reason)
        if not isinstance(msg, Welcome):
            writer.close()
            raise LinkClosed(f"expected welcome, got {msg!r}")
        return cls(reader, writer, msg)

    def submit(self, cmds: Sequence[Command]) -> int:
        first = self.next_req
        body = self._enc.encode(Submit(first, list(cmds)))
        self.writer.write(HEADER.pack(len(body)) + body)
        self.next_req += len(cmds)
        return first

    def ping(self, token: int = 0) -> None:
        body = self._enc.encode(Ping(token))
        self.writer.write(HEADER.pack(len(body)) + body)

    async def drain(self) -> None:
        await self.writer.drain()

    async def recv(self):
        if not self._ready:
            self._ready.extend(await self.recv_many())
            if not self._ready:
                return None
        return self._ready.popleft()

    async def recv_many(self) -> list:
        if self._ready:
            out = list(self._ready)
            self._ready.clear()
            return out
        frames = self._frames
        decode = FROM_ENGINE_DECODER.decode
        while True:
            data = await self.reader.read(READ_CHUNK)
            if not data:
                return []
            try:
                out = [decode(body) for body in frames.feed(data)]
            except FrameError as exc:
                raise LinkClosed(str(exc)) from None
            except msgspec.DecodeError as exc:
                raise LinkClosed(f"undecodable message from the engine: {exc}") from None
            if out:
                return out

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def _read_message(reader: asyncio.StreamReader):
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError:
        return None
    (n,) = HEADER.unpack(head)
    if n > MAX_FRAME:
        raise LinkClosed(f"frame of {n} bytes exceeds the limit")
    try:
        body = await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        return None
    return FROM_ENGINE_DECODER.decode(body)


class ReplicationFeed:
    """An event subscription that resumes by itself after a disconnection."""

    def __init__(self, host: str, port: int, *, component: str, node_id: str,
                 config_digest: str, from_seq: int = 1, retry_delay: float = 0.2,
                 max_retries: int = 50) -> None:
        self.host, self.port = host, port
        self.component, self.node_id, self.digest = component, node_id, config_digest
        self.next_seq = from_seq
        self.retry_delay = retry_delay
        self.max_retries = max_retries
        self.disconnects: list[str] = []
        self._link: EngineLink | None = None

    async def events(self) -> AsyncIterator:
        """Every event, one at a time, in sequence order."""
        async for batch in self.batches():
            for ev in batch:
                yield ev

    async def batches(self) -> AsyncIterator[list]:
        """Events as they arrived (one list per read of the link, which may hold several of
        the engine's releases), in sequence order, without gaps or duplicates: cheaper than
        ``events`` for consumers that process a batch at once."""
        retries = 0
        while True:
            if self._link is None:
                try:
                    self._link = await EngineLink.connect(
                        self.host, self.port, component=self.component, node_id=self.node_id,
                        config_digest=self.digest, subscribe_from=self.next_seq)
                    retries = 0
                except (OSError, asyncio.TimeoutError, LinkClosed):
                    retries += 1
                    if retries > self.max_retries:
                        raise
                    await asyncio.sleep(self.retry_delay)
                    continue
            try:
                msgs = await self._link.recv_many()
            except (OSError, LinkClosed):
                msgs = []
            if not msgs:
                msgs = [None]
            events = None
            for msg in msgs:
                if msg is None or isinstance(msg, Disconnect):
                    if isinstance(msg, Disconnect):
                        self.disconnects.append(msg.reason)
                    await self._link.close()
                    self._link = None
                    break
                if isinstance(msg, Events) and msg.events:
                    got = msg.events
                    first = got[0].seq
                    if first > self.next_seq:
                        raise LinkClosed(f"gap in replication stream: expected {self.next_seq}, "
                                         f"got {first}")
                    if first < self.next_seq:            # already delivered (resumed mid-batch)
                        got = [ev for ev in got if ev.seq >= self.next_seq]
                        if not got:
                            continue
                    self.next_seq = got[-1].seq + 1
                    if events is None:
                        events = got
                    else:
                        events.extend(got)
            if events:
                yield events

    async def close(self) -> None:
        if self._link is not None:
            await self._link.close()
            self._link = None
