"""The client side of the engine link reads frames as they arrive (engine.client.EngineLink)."""
from __future__ import annotations

import asyncio

import msgspec
import pytest

from engine.client import QUEUE_HIGH, EngineLink, LinkClosed, _LinkProtocol
from engine.link import HEADER, MAX_FRAME, Ack, Heartbeat, Welcome, frame

ENC = msgspec.msgpack.Encoder()


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, _name, default=None):
        return default


def _proto() -> _LinkProtocol:
    p = _LinkProtocol()
    p.connection_made(_Transport())
    return p


def _link(chunks: list[bytes], eof: bool = True) -> EngineLink:
    p = _proto()
    for c in chunks:
        p.data_received(c)
    if eof:
        p.connection_lost(None)
    return EngineLink(p, Welcome("engine", "r", 1, 1, 0))


def test_every_arrived_frame_in_one_read_and_split_frames_joined():
    async def main():
        data = b"".join(frame(ENC, m) for m in (Ack(1, 2, 3), Heartbeat(7, 1), Ack(3, 1, 5)))
        p = _proto()
        link = EngineLink(p, Welcome("engine", "r", 1, 1, 0))
        p.data_received(data[:-3])           # two whole frames and most of the third
        assert await link.recv_many() == [Ack(1, 2, 3), Heartbeat(7, 1)]
        p.data_received(data[-3:])           # the rest of the third
        p.connection_lost(None)
        assert await link.recv_many() == [Ack(3, 1, 5)]
        assert await link.recv_many() == []           # end of stream
    asyncio.run(main())


def test_recv_returns_one_message_at_a_time_then_none():
    async def main():
        link = _link([frame(ENC, Ack(1, 1, 1)) + frame(ENC, Ack(2, 1, 2))])
        assert await link.recv() == Ack(1, 1, 1)
        assert await link.recv() == Ack(2, 1, 2)
        assert await link.recv() is None
    asyncio.run(main())


@pytest.mark.parametrize("data,reason", [
    (HEADER.pack(MAX_FRAME + 1), "exceeds"),
    (HEADER.pack(3) + b"\xc1\xc1\xc1", "undecodable"),
])
def test_bad_frames_close_the_link_with_a_reason(data, reason):
    async def main():
        link = _link([data])
        with pytest.raises(LinkClosed, match=reason):
            await link.recv_many()
    asyncio.run(main())


def test_a_handler_gets_each_read_as_it_arrives_and_what_had_queued_first():
    async def main():
        p = _proto()
        link = EngineLink(p, Welcome("engine", "r", 1, 1, 0))
        p.data_received(frame(ENC, Ack(1, 1, 1)))          # before the handler: queued
        got = []
        link.set_handler(got.append)
        assert got == [[Ack(1, 1, 1)]]
        data = frame(ENC, Ack(2, 1, 2)) + frame(ENC, Heartbeat(9, 0))
        p.data_received(data[:5])
        assert len(got) == 1                                # no whole frame yet
        p.data_received(data[5:])
        assert got[1] == [Ack(2, 1, 2), Heartbeat(9, 0)]
        p.connection_lost(None)
        await link.wait_closed()
    asyncio.run(main())


def test_a_bad_frame_or_a_failing_handler_ends_the_link_and_says_why():
    async def main():
        p = _proto()
        link = EngineLink(p, Welcome("engine", "r", 1, 1, 0))
        link.set_handler(lambda msgs: None)
        p.data_received(HEADER.pack(3) + b"\xc1\xc1\xc1")
        assert p.transport.closed
        p.connection_lost(None)
        with pytest.raises(LinkClosed, match="undecodable"):
            await link.wait_closed()

        p = _proto()
        link = EngineLink(p, Welcome("engine", "r", 1, 1, 0))

        def broken(msgs):
            raise RuntimeError("consumer defect")
        link.set_handler(broken)
        p.data_received(frame(ENC, Ack(1, 1, 1)))
        assert p.transport.closed
        p.connection_lost(None)
        with pytest.raises(RuntimeError, match="consumer defect"):
            await link.wait_closed()
    asyncio.run(main())


def test_reading_pauses_while_too_much_waits_for_the_consumer():
    async def main():
        p = _proto()
        link = EngineLink(p, Welcome("engine", "r", 1, 1, 0))
        one = frame(ENC, Heartbeat(1, 0))
        p.data_received(one * (QUEUE_HIGH + 1))
        assert p.transport.paused
        assert len(await link.recv_many()) == QUEUE_HIGH + 1
        assert not p.transport.paused
    asyncio.run(main())
