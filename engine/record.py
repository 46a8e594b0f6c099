"""The journal record: one engine batch, as written to disk and replayed.

Contract:
- One record per sequencer batch (group commit). ``cmds`` are the batch's sequenced commands with
  consecutive ``seq`` values starting at ``first_cmd_seq``; ``events`` is the MessagePack array of
  every event those commands produced, consecutive from ``first_event_seq``.
- ``events`` is stored as raw bytes: exactly the bytes that were sent to replication consumers, so
  history is served without re-encoding and a replay can be checked byte for byte against it.
"""
from __future__ import annotations

import msgspec

from engine.commands import SequencedCommand
from engine.events import Event


class BatchRecord(msgspec.Struct, frozen=True, array_like=True):
    first_cmd_seq: int
    first_event_seq: int
    event_count: int
    cmds: list[SequencedCommand]
    events: msgspec.Raw          # encoded list[Event]


class BatchRecordView(msgspec.Struct, frozen=True, array_like=True):
    """Decoding view that leaves the commands and events undecoded (history serving)."""

    first_cmd_seq: int
    first_event_seq: int
    event_count: int
    cmds: msgspec.Raw
    events: msgspec.Raw


EVENTS_DECODER = msgspec.msgpack.Decoder(list[Event])
RECORD_DECODER = msgspec.msgpack.Decoder(BatchRecord)
RECORD_VIEW_DECODER = msgspec.msgpack.Decoder(BatchRecordView)
