"""The sequencer: turns submitted commands into one journaled, sequenced batch (no I/O).

Contract:
- ``Sequencer.run(submissions, ts)`` sequences the submissions in the order given (each one's
  commands stay contiguous), stamps every command with the one batch timestamp ``ts`` (passed in;
  the sequencer never reads a clock), applies them to the engine and returns a ``Batch``: the
  encoded journal record, the encoded event list (the very bytes sent to consumers) and the
  per-submission acknowledgements. Nothing of a batch may be released before its record is
  durable: the caller writes ``record`` to the journal first.
- ``replay(engine, payload)`` re-applies one journal record and checks that the engine produces
  byte-identical events; a divergence raises ``ReplayDivergence`` (the journal was written by
  different engine logic or configuration, and starting would silently change history).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import msgspec

from engine.commands import Command, SequencedCommand
from engine.core import Engine
from engine.record import RECORD_DECODER, BatchRecord


class Submission(NamedTuple):
    origin: str
    first_req_id: int
    cmds: Sequence[Command]
    token: object            # the caller's handle for the submitter (e.g. its connection)


class Batch(NamedTuple):
    first_cmd_seq: int
    first_event_seq: int
    event_count: int
    record: bytes                       # journal payload (BatchRecord)
    events: bytes                       # encoded list[Event]
    acks: list[tuple[object, int, int, int]]   # (token, first_req_id, count, first_cmd_seq)


class ReplayDivergence(Exception):
    pass


class Sequencer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._enc = msgspec.msgpack.Encoder()

    def run(self, submissions: Sequence[Submission], ts: int) -> Batch:
        engine = self.engine
        apply = engine.apply
        first_cmd_seq = engine.next_cmd_seq
        first_event_seq = engine.next_event_seq
        seq_cmds: list[SequencedCommand] = []
        events: list = []
        acks = []
        add_cmd = seq_cmds.append
        add_events = events.extend
        for origin, first_req, cmds, token in submissions:
            acks.append((token, first_req, len(cmds), engine.next_cmd_seq))
            req = first_req
            for cmd in cmds:
                sc = SequencedCommand(engine.next_cmd_seq, ts, origin, req, cmd)
                add_events(apply(sc))
                add_cmd(sc)
                req += 1
        events_raw = self._enc.encode(events)
        record = self._enc.encode(BatchRecord(
            first_cmd_seq, first_event_seq, len(events), seq_cmds, msgspec.Raw(events_raw)))
        return Batch(first_cmd_seq, first_event_seq, len(events), record, events_raw, acks)


def replay(engine: Engine, payload: bytes, encoder: msgspec.msgpack.Encoder) -> BatchRecord:
    """Apply one journal record to ``engine``, verifying the events byte for byte."""
    rec = RECORD_DECODER.decode(payload)
    if rec.first_cmd_seq != engine.next_cmd_seq or rec.first_event_seq != engine.next_event_seq:
        raise ReplayDivergence(
            f"journal record starts at command {rec.first_cmd_seq} / event {rec.first_event_seq} "
            f"but the engine expects command {engine.next_cmd_seq} / event {engine.next_event_seq}")
    events: list = []
    for sc in rec.cmds:
        events.extend(engine.apply(sc))
    if encoder.encode(events) != bytes(rec.events):
        raise ReplayDivergence(
            f"replaying commands {rec.first_cmd_seq}..{rec.first_cmd_seq + len(rec.cmds) - 1} "
            "produced different events than the journal recorded: this engine's release or "
            "configuration differs from the one that wrote the journal")
    return rec
