"""Offline journal verification: replay a journal in a fresh engine and fingerprint its output.

Contract: ``verify_journal`` never modifies the file. It replays every valid record into a new
``Engine`` built from the given reference data, checks each record's events byte for byte, and
returns counts plus a SHA-256 over the replayed event bytes and the final engine state digest.
Two replays of one journal, in any processes, print identical results; a torn tail is reported,
not replayed.
"""
from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

import msgspec

from engine import journal as jr
from engine.core import Engine
from engine.refdata import MarketRefData
from engine.sequencer import replay


class VerifyResult(NamedTuple):
    records: int
    commands: int
    events: int
    events_sha256: str
    state_digest: str
    valid_bytes: int
    tail_bytes: int           # bytes after the last valid record (a torn tail)
    zero_bytes: int = 0       # ... unless they are all zeros: a live journal's preallocation


def verify_journal(path: str | os.PathLike, refdata: MarketRefData) -> VerifyResult:
    header, _ = jr.read_header(path)
    if header.config_digest != refdata.digest():
        raise jr.JournalError(
            f"{path}: written with configuration digest {header.config_digest[:16]}, "
            f"the given configuration has {refdata.digest()[:16]}")
    engine = Engine(refdata)
    enc = msgspec.msgpack.Encoder()
    h = hashlib.sha256()
    records = commands = 0
    end = 0
    for offset, payload in jr.iter_records(path):
        rec = replay(engine, payload, enc)
        h.update(rec.events)
        records += 1
        commands += len(rec.cmds)
        end = offset + 8 + len(payload)
    size = os.path.getsize(path)
    if records == 0:
        end = jr.read_header(path)[1]
    tail = size - end
    zeros = 0
    if tail:
        fd = os.open(path, os.O_RDONLY)
        try:
            if jr.is_zero_range(fd, end, size):
                tail, zeros = 0, tail
        finally:
            os.close(fd)
    return VerifyResult(records, commands, engine.next_event_seq - 1, h.hexdigest(),
                        engine.state_digest(), end, tail, zeros)
