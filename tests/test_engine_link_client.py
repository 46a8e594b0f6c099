"""The client side of the engine link reads frames as they arrive (engine.client.EngineLink)."""
from __future__ import annotations

import asyncio

import msgspec
import pytest

from engine.client import EngineLink, LinkClosed
from engine.link import HEADER, MAX_FRAME, Ack, Heartbeat, Welcome, frame

ENC = msgspec.msgpack.Encoder()


class _Writer:
    def write(self, data: bytes) -> None:
        pass


def _link(chunks: list[bytes]) -> EngineLink:
    reader = asyncio.StreamReader()
    for c in chunks:
        reader.feed_data(c)
    reader.feed_eof()
    return EngineLink(reader, _Writer(), Welcome("engine", "r", 1, 1, 0))


def test_every_arrived_frame_in_one_read_and_split_frames_joined():
    async def main():
        data = b"".join(frame(ENC, m) for m in (Ack(1, 2, 3), Heartbeat(7, 1), Ack(3, 1, 5)))
        reader = asyncio.StreamReader()
        link = EngineLink(reader, _Writer(), Welcome("engine", "r", 1, 1, 0))
        reader.feed_data(data[:-3])          # two whole frames and most of the third
        assert await link.recv_many() == [Ack(1, 2, 3), Heartbeat(7, 1)]
        reader.feed_data(data[-3:])          # the rest of the third
        reader.feed_eof()
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
