"""Client side of the engine link, for gateways, publishers, operators and tests.

Contract:
- ``EngineLink.connect`` performs the handshake and raises ``LinkRefused`` with the engine's
  reason when the engine refuses this node (release or configuration mismatch, duplicate node id,
  bad subscription).
- ``submit(cmds)`` numbers the commands with consecutive request ids continuing after
  ``Welcome.last_req_id`` and returns the first id; the engine's ``Ack``/``Nack`` arrive through
  ``recv()``. Nothing is acknowledged before it is journaled.
- ``recv()`` returns the next message from the engine (``Events`` with decoded events, ``Ack``,
  ``Nack``, ``Heartbeat``, ``Disconnect``), or ``None`` at end of stream.
- ``ReplicationFeed`` wraps a subscription that survives disconnections: after a ``Disconnect``
  or a dropped connection it reconnects and resumes from the last delivered seq + 1, so its
  caller sees every event exactly once, in order.
"""
from __future__ import annotations

import asyncio
import socket
from typing import AsyncIterator, Sequence

import msgspec

from bourse import RELEASE
from engine.commands import Command
from engine.link import (
    FROM_ENGINE_DECODER, HEADER, MAX_FRAME, Disconnect, Events, Hello, Ping, Refused, Submit,
    Welcome,
)


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
        return await _read_message(self.reader)

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
        """Events as the engine released them (one list per message), in sequence order,
        without gaps or duplicates: cheaper than ``events`` for consumers that process a batch
        at once."""
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
                msg = await self._link.recv()
            except (OSError, LinkClosed):
                msg = None
            if msg is None or isinstance(msg, Disconnect):
                if isinstance(msg, Disconnect):
                    self.disconnects.append(msg.reason)
                await self._link.close()
                self._link = None
                continue
            if isinstance(msg, Events) and msg.events:
                events = msg.events
                first = events[0].seq
                if first > self.next_seq:
                    raise LinkClosed(f"gap in replication stream: expected {self.next_seq}, "
                                     f"got {first}")
                if first < self.next_seq:            # already delivered (resumed mid-batch)
                    events = [ev for ev in events if ev.seq >= self.next_seq]
                    if not events:
                        continue
                self.next_seq = events[-1].seq + 1
                yield events

    async def close(self) -> None:
        if self._link is not None:
            await self._link.close()
            self._link = None
