"""The engine link: the TCP protocol between the engine and every other component.

Contract (spec/engine-protocol.md documents it for implementers in other languages):
- Framing: each message is a 4-byte little-endian unsigned length followed by that many bytes of
  MessagePack: an array whose first element is the message tag (a short string). Frames larger
  than ``MAX_FRAME`` are a protocol error and the connection is closed with a reason.
- The engine listens on two ports: order entry (gateways and operators submit commands) and
  replication (read-only consumers). Both start with ``Hello``; the engine answers ``Welcome`` or
  ``Refused`` (then closes). A node whose release or configuration digest differs from the
  engine's is refused, with the reason on both sides, and the engine raises an alert.
- ``Hello.subscribe_from`` N >= 1 asks for every event with seq >= N: history from the journal,
  then live events, with no gap and no duplicate. 0 means no event stream (order entry only).
- Order entry: ``Submit(first_req_id, cmds)`` carries commands numbered first_req_id,
  first_req_id+1, ...; request ids of one node are consecutive over the node's lifetime and start
  after ``Welcome.last_req_id`` (the highest request id of this node the engine has already
  sequenced, so a reconnecting node resends exactly what was not). Once a batch is durable the
  engine sends its ``Events`` (to subscribed connections) and then ``Ack`` to the submitter: an ack
  means the command is journaled and its events are released. A refused submission gets ``Nack``
  with a reason and is not sequenced.
- A consumer whose unsent backlog exceeds the configured bound is sent ``Disconnect`` with the
  reason and its last delivered seq, and is closed; it resumes by reconnecting from that seq + 1.
  The engine never waits for a consumer.
"""
from __future__ import annotations

import struct
from typing import Union

import msgspec

from engine.commands import Command
from engine.events import Event

MAX_FRAME = 64 * 1024 * 1024
HEADER = struct.Struct("<I")

_MSG = dict(frozen=True, array_like=True, tag_field="m")


class Hello(msgspec.Struct, tag="hello", **_MSG):
    component: str          # "gateway", "marketdata", "index", "operator", ...
    node_id: str            # unique per node; the origin of its commands
    release: str
    config_digest: str
    subscribe_from: int = 0


class Submit(msgspec.Struct, tag="submit", **_MSG):
    first_req_id: int
    cmds: list[Command]


class Ping(msgspec.Struct, tag="ping", **_MSG):
    token: int = 0


class Welcome(msgspec.Struct, tag="welcome", **_MSG):
    engine_node: str
    release: str
    next_cmd_seq: int
    next_event_seq: int
    last_req_id: int


class Refused(msgspec.Struct, tag="refused", **_MSG):
    reason: str


class EventsOut(msgspec.Struct, tag="events", **_MSG):
    first_seq: int
    count: int
    events: msgspec.Raw     # encoded list[Event], shared by every consumer and the journal


class Events(msgspec.Struct, tag="events", **_MSG):
    first_seq: int
    count: int
    events: list[Event]


class Ack(msgspec.Struct, tag="ack", **_MSG):
    first_req_id: int
    count: int
    first_cmd_seq: int


class Nack(msgspec.Struct, tag="nack", **_MSG):
    first_req_id: int
    count: int
    reason: str


class Heartbeat(msgspec.Struct, tag="hb", **_MSG):
    next_event_seq: int
    token: int = 0


class Disconnect(msgspec.Struct, tag="bye", **_MSG):
    reason: str
    last_seq: int           # last event seq delivered on this connection (0 if none)


ToEngine = Union[Hello, Submit, Ping]
FromEngine = Union[Welcome, Refused, Events, Ack, Nack, Heartbeat, Disconnect]

TO_ENGINE_DECODER = msgspec.msgpack.Decoder(ToEngine)
FROM_ENGINE_DECODER = msgspec.msgpack.Decoder(FromEngine)


class FrameError(Exception):
    """A framing violation; the connection must be closed with this text."""


def frame(encoder: msgspec.msgpack.Encoder, msg: msgspec.Struct) -> bytes:
    body = encoder.encode(msg)
    return HEADER.pack(len(body)) + body


class FrameBuffer:
    """Accumulates stream bytes and yields whole frame bodies (no I/O, no decoding)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (n,) = HEADER.unpack_from(buf, pos)
            if n > MAX_FRAME:
                raise FrameError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
            if end - pos - 4 < n:
                break
            out.append(bytes(buf[pos + 4:pos + 4 + n]))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out
