"""Offline journal verification: replay a journal in a fresh engine and fingerprint its output.

Contract: ``verify_journal`` never modifies the file. It replays every valid record into a new
``Engine`` built from the given reference data, checks each record's events byte for byte, and
returns counts plus a SHA-256 over the replayed event bytes and the final engine state digest.
Two replays of one journal, in any processes, print identical results; a torn tail is reported,
not replayed.

Snapshots (engine.snapshot) in the journal's directory are checked too: the replay's state
digest where a snapshot ends is compared with the digest the snapshot recorded, and the snapshot
is restored as the engine would restore it. Each gets one ``SnapshotCheck``, newest first.
"""
from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

import msgspec

from bourse import RELEASE
from engine import journal as jr
from engine import snapshot as snap
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
    snapshots: tuple["SnapshotCheck", ...] = ()


class SnapshotCheck(NamedTuple):
    name: str                 # file name
    next_cmd_seq: int         # first command it does not cover (0: unreadable)
    matches: bool | None      # True: same state as the full replay; False: differs; None: unusable
    detail: str               # why not, when it does not match


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
    checks: dict[str, SnapshotCheck] = {}
    waiting: dict[int, list[str]] = {}   # journal offset -> snapshots ending there
    headers: dict[str, snap.SnapshotHeader] = {}
    replayed: dict[str, str] = {}        # snapshot path -> replay digest at its offset
    found = snap.list_snapshots(os.path.dirname(os.path.abspath(path)))
    for sp in found:
        try:
            sh, _ = snap.read_file(sp)
        except snap.SnapshotInvalid as exc:
            checks[sp] = SnapshotCheck(os.path.basename(sp), 0, None, str(exc))
            continue
        if sh.journal_created_ns != header.created_ns:
            checks[sp] = SnapshotCheck(os.path.basename(sp), sh.next_cmd_seq, None,
                                       "belongs to another journal")
            continue
        headers[sp] = sh
        waiting.setdefault(sh.journal_offset, []).append(sp)
    for offset, payload in jr.iter_records(path):
        rec = replay(engine, payload, enc)
        h.update(rec.events)
        records += 1
        commands += len(rec.cmds)
        end = offset + 8 + len(payload)
        if end in waiting:
            digest = engine.state_digest()
            for sp in waiting.pop(end):
                replayed[sp] = digest
    size = os.path.getsize(path)
    data_offset = jr.read_header(path)[1]
    if records == 0:
        end = data_offset
    for sp in found:
        if sp in checks:
            continue
        name = os.path.basename(sp)
        sh = headers[sp]
        if sp not in replayed:
            checks[sp] = SnapshotCheck(name, sh.next_cmd_seq, None,
                                       f"journal offset {sh.journal_offset} is not the end of a "
                                       "valid record")
        elif replayed[sp] != sh.state_digest:
            checks[sp] = SnapshotCheck(name, sh.next_cmd_seq, False,
                                       f"recorded state digest {sh.state_digest[:16]}, the full "
                                       f"replay has {replayed[sp][:16]} there")
        else:
            try:
                snap.load(sp, refdata, release=RELEASE, config_digest=refdata.digest(),
                          journal_path=os.fspath(path), journal_header=header,
                          data_offset=data_offset, end_offset=end)
            except snap.SnapshotInvalid as exc:
                checks[sp] = SnapshotCheck(name, sh.next_cmd_seq, None, str(exc))
            else:
                checks[sp] = SnapshotCheck(name, sh.next_cmd_seq, True, "")
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
                        engine.state_digest(), end, tail, zeros,
                        tuple(checks[sp] for sp in found))
