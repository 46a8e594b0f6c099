"""Engine state snapshots: a restart loads the newest valid snapshot and replays only the
journal records written after it.

Contract
--------
- A snapshot holds the complete mutable state of ``engine.core.Engine`` right after one journal
  record (a batch boundary): every book with its levels and their orders in time priority,
  every open order, the order / trade id counters, ``next_cmd_seq`` / ``next_event_seq``,
  ``last_req`` per node, every session's used and live ClOrdIDs, each firm's credit limit,
  exposure and halt, the market and instrument halts. Reference data (instruments, firms, tick,
  lot, bands, STP modes, accounts) is not in it: it comes from the configuration, whose digest
  the snapshot records. ``EngineState`` below is the schema; ``Engine.export_state`` and
  ``Engine.import_state`` are the two ends.
- Restoring a snapshot and applying the commands that follow it gives byte-identical events and
  the same ``state_digest`` as replaying the whole journal. Nothing in the state depends on a
  hash seed: integers only, no floats; every sequence keeps the engine's own order (levels in
  key order, orders in time priority, sessions and ``last_req`` in dict order), open orders
  are listed by order id, and the used and live ids, kept in tables spread by hash, are written
  sorted. So one state always encodes to the same bytes, in any process.
- A snapshot is taken only at a batch boundary whose records are all durable (with
  ``fsync = "never"``: written), so it never covers anything a crash could take back.

File ``<journal_dir>/snapshot-<next_cmd_seq, 20 digits>.snap`` (integers little-endian)::

    offset  size  field
    0       8     magic, the ASCII bytes b"BOURSES1"
    8       4     H = length of the header (u32, 0 < H <= 64 KiB)
    12      H     header: MessagePack map of SnapshotHeader
    12+H    4     CRC-32 (zlib.crc32) of the H header bytes
    16+H    B     body: MessagePack of EngineState, B = header.body_bytes,
                  SHA-256 = header.body_sha256

The header names what the body belongs to: ``format_version``, ``release``, ``config_digest``,
the journal (``journal_created_ns``, its header's creation time), ``journal_offset`` (the byte
offset just after the last record covered: the replay resumes there), the SHA-256 of that
last record's payload, ``next_cmd_seq``, ``next_event_seq``, ``last_ts`` (the timestamp of
the last command covered) and ``state_digest`` (``Engine.state_digest()`` of the state).

Writing: a periodic snapshot is made by a child process forked at the batch boundary
(``Writer.fork``): its copy-on-write image of the engine is exactly the state at that boundary,
and it exports, digests and encodes it, writes a temporary file ``.snapshot-....snap.tmp``,
fsyncs it, renames it into place and fsyncs the directory, then reports to the engine through a
pipe and exits. The engine loop pauses only for the fork. The snapshot at a clean stop (and
where there is no fork) is exported in the loop and written by ``Writer.write`` / a thread.
A crash at any point leaves either the previous snapshots or the new one complete, never a
partial file under a snapshot name. The engine keeps the newest two snapshots it wrote or
loaded; other snapshot files in the directory are removed when a new snapshot has been written.

Loading (``load``): a snapshot is used only if its magic, header CRC, format version, release,
configuration digest and journal match; ``journal_offset`` lies within the recovered journal on
a record boundary; the record there is the one the snapshot recorded (same SHA-256); the
records up to it run on without a gap to the snapshot's ``next_cmd_seq`` / ``next_event_seq``;
the body has the recorded length and SHA-256 and decodes; the state imports into a fresh
engine; and the imported engine's ``state_digest()`` equals the recorded one. Anything else
raises ``SnapshotInvalid`` with the reason; the server logs it and tries the next older
snapshot, then replays the whole journal (as it also does when the records after a loaded
snapshot do not replay). Loading indexes the covered records for history
(offset and first event seq of each, read from the record's head without replaying it).

Cost. Measured with ``python -m engine.snapshot ORDERS [USED_IDS]`` (resting orders over 10
instruments, each with its ClOrdID; extra used ids come from rejected orders; the collector off
as in the engine's loop) on a 2-core VM:

    resting orders  used ids   resident  fork (loop pause)  export+encode (child)  file    load + check
    10,000          10,000     45 MB     1.3 ms             11 ms                  0.7 MB  28 ms
    100,000         100,000    240 MB    4.5 ms             0.17 s                 7.3 MB  0.34 s
    100,000         1,000,000  520 MB    6.4 ms             0.68 s                 19 MB   0.89 s
    1,000,000       1,000,000  2.1 GB    24 ms              3.8 s                  77 MB   7.0 s

The export is about 1.8 us per resting order plus 0.5 us per used ClOrdID (the digest, which
sorts every used id, is most of it). Used ids are kept all day (a ClOrdID may be used once per
session), so the child's work grows through the day; the loop's pause grows only with the
resident size (page tables). While the child runs, every page the engine writes is copied once.
Every snapshot logs the loop's pause and the child's times.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import struct
import threading
import time
import zlib
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from engine import journal as jr
from engine.history import HistoryIndex

if TYPE_CHECKING:  # pragma: no cover
    from engine.core import Engine
    from engine.refdata import MarketRefData

__all__ = [
    "FORMAT_VERSION", "MAGIC", "BookState", "Capture", "EngineState", "FirmState", "LevelState",
    "Loaded", "OrderState", "SessionState", "SnapshotHeader", "SnapshotInvalid", "capture",
    "decode_state", "encode_state", "list_snapshots", "load", "prune", "read_file",
    "record_head", "snapshot_path", "write_capture", "Writer",
]

log = logging.getLogger("bourse.engine")

MAGIC = b"BOURSES1"
FORMAT_VERSION = 1
MAX_HEADER = 64 << 10
PREFIX = "snapshot-"
SUFFIX = ".snap"

_U32 = struct.Struct("<I")


# --------------------------------------------------------------------------- the state schema

class OrderState(msgspec.Struct, frozen=True, array_like=True):
    """One open order. ``leaves`` > 0; executed = ``qty - leaves``."""

    order_id: int
    session: str
    firm: str
    account: str
    cl_ord_id: str
    instrument: str
    side: int
    ord_type: int
    tif: int
    price: int
    qty: int
    leaves: int


class LevelState(msgspec.Struct, frozen=True, array_like=True):
    """One price level: its orders' ids, oldest (first to match) first."""

    price: int
    order_ids: list[int]


class BookState(msgspec.Struct, frozen=True, array_like=True):
    """One book; each side's levels in ascending key order (bids: low to high price, asks:
    high to low), i.e. the best level last, as the engine keeps them."""

    symbol: str
    halted: bool
    bids: list[LevelState]
    asks: list[LevelState]


class FirmState(msgspec.Struct, frozen=True, array_like=True):
    id: str
    limit: int
    open: int
    executed: int
    halted: bool


class SessionState(msgspec.Struct, frozen=True, array_like=True):
    """One session's ClOrdIDs: every id it used and its live ids (clid, order id), both
    sorted by id."""

    name: str
    used: list[str]
    live: list[tuple[str, int]]


class EngineState(msgspec.Struct, frozen=True, array_like=True):
    """Everything ``Engine`` holds that affects its future output (books and firms in the
    reference data's order, orders by ``order_id``, sessions and ``last_req`` in the order the
    engine met them)."""

    next_cmd_seq: int
    next_event_seq: int
    next_order_id: int
    next_trade_id: int
    market_halted: bool
    last_req: list[tuple[str, int]]
    books: list[BookState]
    firms: list[FirmState]
    orders: list[OrderState]
    sessions: list[SessionState]


class SnapshotHeader(msgspec.Struct, frozen=True):
    format_version: int
    release: str
    config_digest: str
    journal_created_ns: int     # the creation time in the journal's header: which journal
    journal_offset: int         # just after the last record covered: the replay resumes here
    last_record_sha256: str     # SHA-256 of that record's payload ("" when none is covered)
    next_cmd_seq: int
    next_event_seq: int
    last_ts: int                # timestamp of the last command covered (0 when none)
    state_digest: str           # Engine.state_digest() of the state
    body_bytes: int
    body_sha256: str
    written_ns: int = 0         # when it was captured (information only)


class _Version(msgspec.Struct):
    format_version: int


_STATE_ENCODER = msgspec.msgpack.Encoder()
_STATE_DECODER = msgspec.msgpack.Decoder(EngineState)
_HEADER_DECODER = msgspec.msgpack.Decoder(SnapshotHeader)
_VERSION_DECODER = msgspec.msgpack.Decoder(_Version)


def encode_state(state: EngineState) -> bytes:
    return _STATE_ENCODER.encode(state)


def decode_state(body: bytes) -> EngineState:
    return _STATE_DECODER.decode(body)


class SnapshotInvalid(Exception):
    """A snapshot that must not be used; the message is the reason."""


# --------------------------------------------------------------------------- files

def snapshot_path(directory: str, next_cmd_seq: int) -> str:
    return os.path.join(directory, f"{PREFIX}{next_cmd_seq:020d}{SUFFIX}")


def list_snapshots(directory: str) -> list[str]:
    """Paths of the snapshot files in ``directory``, newest (highest command seq) first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(PREFIX) and name.endswith(SUFFIX):
            digits = name[len(PREFIX):-len(SUFFIX)]
            if digits.isdigit():
                found.append((int(digits), os.path.join(directory, name)))
    found.sort(reverse=True)
    return [p for _, p in found]


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:   # some filesystems refuse a directory fsync
        if exc.errno != 22:
            raise
    finally:
        os.close(fd)


def _write_atomic(path: str, parts: list[bytes]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, "." + os.path.basename(path) + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        for part in parts:
            view = memoryview(part)
            done = 0
            while done < len(part):
                done += os.write(fd, view[done:done + (8 << 20)])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(directory)


def read_file(path: str) -> tuple[SnapshotHeader, bytes]:
    """The checked header and the body bytes (length and SHA-256 checked) of a snapshot file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise SnapshotInvalid(f"unreadable: {exc.strerror or exc}") from None
    if data[:8] != MAGIC or len(data) < 12:
        raise SnapshotInvalid("not a snapshot file (bad magic)")
    (hlen,) = _U32.unpack_from(data, 8)
    if not 0 < hlen <= MAX_HEADER or len(data) < 16 + hlen:
        raise SnapshotInvalid(f"bad or truncated header (length {hlen}, file {len(data)} bytes)")
    raw = data[12:12 + hlen]
    if zlib.crc32(raw) != _U32.unpack_from(data, 12 + hlen)[0]:
        raise SnapshotInvalid("header checksum mismatch (corrupt file)")
    try:
        version = _VERSION_DECODER.decode(raw).format_version
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotInvalid(f"undecodable header: {exc}") from None
    if version != FORMAT_VERSION:
        raise SnapshotInvalid(f"format version {version}, this release reads {FORMAT_VERSION}")
    try:
        header = _HEADER_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotInvalid(f"undecodable header: {exc}") from None
    body = data[16 + hlen:]
    if len(body) != header.body_bytes:
        raise SnapshotInvalid(f"body has {len(body)} bytes, the header says {header.body_bytes} "
                              "(truncated or corrupt file)")
    if hashlib.sha256(body).hexdigest() != header.body_sha256:
        raise SnapshotInvalid("body checksum mismatch (corrupt file)")
    return header, body


def prune(directory: str, keep: list[str]) -> None:
    """Remove every snapshot file of ``directory`` not in ``keep``, and leftover temporaries."""
    kept = {os.path.abspath(p) for p in keep}
    for p in list_snapshots(directory):
        if os.path.abspath(p) not in kept:
            try:
                os.unlink(p)
            except OSError as exc:
                log.warning("snapshot %s: cannot remove: %s", p, exc.strerror or exc)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith("." + PREFIX) and name.endswith(SUFFIX + ".tmp"):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


# --------------------------------------------------------------------------- journal heads

_INT_SIZES = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}


def _uint(b: bytes, i: int) -> tuple[int, int]:
    t = b[i]
    if t < 0x80:
        return t, i + 1
    n = _INT_SIZES.get(t)
    if n is None:
        raise ValueError(f"unexpected MessagePack type 0x{t:02x} for an unsigned integer")
    return int.from_bytes(b[i + 1:i + 1 + n], "big"), i + 1 + n


def record_head(payload: bytes) -> tuple[int, int, int, int]:
    """(first_cmd_seq, first_event_seq, event_count, command count) of a journal record
    (``engine.record.BatchRecord``), read from its first bytes without decoding the rest."""
    if not payload or payload[0] != 0x95:
        raise ValueError("not a batch record (expected a 5-element array)")
    first_cmd, i = _uint(payload, 1)
    first_event, i = _uint(payload, i)
    count, i = _uint(payload, i)
    t = payload[i]
    if 0x90 <= t <= 0x9f:
        cmds = t & 0x0f
    elif t == 0xdc:
        cmds = int.from_bytes(payload[i + 1:i + 3], "big")
    elif t == 0xdd:
        cmds = int.from_bytes(payload[i + 1:i + 5], "big")
    else:
        raise ValueError(f"unexpected MessagePack type 0x{t:02x} for the command list")
    return first_cmd, first_event, count, cmds


def _index_journal(journal_path: str, data_offset: int, end: int,
                   history: HistoryIndex) -> tuple[int, int, bytes]:
    """Add every record in [data_offset, end) to ``history`` (no replay) and check that they
    follow each other without a gap and end exactly at ``end``.

    Returns (next command seq, next event seq, payload of the last record or b"")."""
    next_cmd = next_event = 1
    last = b""
    pos = data_offset
    for offset, payload in jr.iter_records(journal_path, end_offset=end):
        try:
            first_cmd, first_event, count, cmds = record_head(payload)
        except (ValueError, IndexError) as exc:
            raise SnapshotInvalid(f"journal record at offset {offset}: {exc}") from None
        if first_cmd != next_cmd or first_event != next_event:
            raise SnapshotInvalid(
                f"journal record at offset {offset} starts at command {first_cmd} / event "
                f"{first_event}, expected {next_cmd} / {next_event}")
        history.add(first_event, offset)
        next_cmd = first_cmd + cmds
        next_event = first_event + count
        last = payload
        pos = offset + 8 + len(payload)
    if pos != end:
        raise SnapshotInvalid(f"offset {end} is not the end of a journal record (the valid "
                              f"records before it end at {pos})")
    return next_cmd, next_event, last


# --------------------------------------------------------------------------- writing

class Capture(NamedTuple):
    """A snapshot taken in the engine loop, to be written by ``write_capture``."""

    path: str
    journal_path: str
    last_record_offset: int      # -1 when no record is covered
    header: SnapshotHeader       # body_sha256 and last_record_sha256 still empty
    body: bytes
    export_ns: int               # loop time spent: export + digest + encode
    orders: int


def capture(engine: "Engine", *, directory: str, journal_path: str, release: str,
            config_digest: str, journal_created_ns: int, journal_offset: int,
            last_record_offset: int, last_ts: int, now_ns: int = 0) -> Capture:
    """Export and encode the engine's state (call at a durable batch boundary, in the loop)."""
    t0 = time.perf_counter_ns()
    state, digest = engine.export_state()
    body = encode_state(state)
    spent = time.perf_counter_ns() - t0
    header = SnapshotHeader(
        FORMAT_VERSION, release, config_digest, journal_created_ns, journal_offset, "",
        state.next_cmd_seq, state.next_event_seq, last_ts, digest, len(body), "", now_ns)
    return Capture(snapshot_path(directory, state.next_cmd_seq), journal_path,
                   last_record_offset, header, body, spent, len(state.orders))


def write_capture(cap: Capture) -> str:
    """Fingerprint the last covered record, checksum the body and write the file atomically
    (may run in a thread). Returns the path written."""
    last_sha = ""
    if cap.last_record_offset >= 0:
        for _, payload in jr.iter_records(cap.journal_path, start_offset=cap.last_record_offset,
                                          end_offset=cap.header.journal_offset):
            last_sha = hashlib.sha256(payload).hexdigest()
            break
        else:
            raise OSError(f"journal record at offset {cap.last_record_offset} is unreadable")
    header = msgspec.structs.replace(cap.header, last_record_sha256=last_sha,
                                     body_sha256=hashlib.sha256(cap.body).hexdigest())
    raw = msgspec.msgpack.encode(header)
    _write_atomic(cap.path, [MAGIC + _U32.pack(len(raw)) + raw + _U32.pack(zlib.crc32(raw)),
                             cap.body])
    return cap.path


class Writer:
    """Writes snapshots one at a time and keeps the newest two.

    ``fork(capture_fn)`` (periodic snapshots, where ``os.fork`` exists): a child process gets a
    copy-on-write image of the engine at this batch boundary, runs ``capture_fn`` (export,
    digest, encode) and writes the file, while the engine loop goes on matching; the loop pays
    only for the fork. ``poll()`` reaps the child (call it until it returns False). ``write``
    does the whole job in the calling thread (the clean stop, where no one waits);
    ``submit`` hands a capture to a thread (where there is no fork).

    ``busy`` is True while a write runs; ``join`` waits for it. Failures are logged (a missing
    snapshot only makes the next start replay more); they never affect the engine.
    ``last_cmd`` is the ``next_cmd_seq`` of the newest snapshot on disk (0: none)."""

    def __init__(self, directory: str, kept: list[str] | None = None,
                 last_cmd: int = 0) -> None:
        self.directory = directory
        self.kept: list[str] = list(kept or [])    # newest last, at most two
        self.last_cmd = last_cmd
        self.written = 0
        self._thread: threading.Thread | None = None
        self._child: tuple[int, int, int, int] | None = None  # pid, result pipe, cmd, fork ns

    @property
    def busy(self) -> bool:
        if self._child is not None:
            return self.poll()
        return self._thread is not None and self._thread.is_alive()

    def submit(self, cap: Capture) -> None:
        self.join()
        self._thread = threading.Thread(target=self.write, args=(cap,), name="snapshot-writer",
                                        daemon=True)
        self._thread.start()

    def fork(self, capture_fn, next_cmd: int) -> bool:
        """Write a snapshot from a forked child; False (nothing started) where fork fails."""
        self.join()
        r, w = os.pipe()
        t0 = time.perf_counter_ns()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(r)
            os.close(w)
            log.warning("snapshot at command %d: cannot fork (%s); writing it in the loop",
                        next_cmd, exc.strerror or exc)
            return False
        if pid == 0:                                   # the child: never returns
            code = 1
            try:
                os.close(r)
                # Hold none of the engine's sockets or files: a connection the engine closes
                # must close now, not when this child exits.
                os.closerange(3, w)
                os.closerange(w + 1, max(w + 1, os.sysconf("SC_OPEN_MAX")))
                cap = capture_fn()
                t1 = time.perf_counter_ns()
                write_capture(cap)
                report = (f"ok {cap.orders} {len(cap.body)} {cap.export_ns} "
                          f"{time.perf_counter_ns() - t1}")
                code = 0
            except BaseException as exc:              # reported to the parent, never raised
                report = f"error {type(exc).__name__}: {exc}"
            try:
                os.write(w, report.encode()[:4000])
            finally:
                os._exit(code)
        os.close(w)
        self._child = (pid, r, next_cmd, time.perf_counter_ns() - t0)
        return True

    def poll(self, block: bool = False) -> bool:
        """Reap a finished child: True while it still runs."""
        if self._child is None:
            return False
        pid, r, next_cmd, fork_ns = self._child
        try:
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:       # reaped elsewhere: it has exited; its report decides
            done, status = pid, 0
        if done == 0:
            return True
        self._child = None
        try:
            report = os.read(r, 4096).decode(errors="replace")
        finally:
            os.close(r)
        if status == 0 and report.startswith("ok "):
            orders, size, export_ns, write_ns = (int(x) for x in report.split()[1:5])
            self._done(snapshot_path(self.directory, next_cmd), next_cmd)
            log.info("snapshot %s: commands up to %d, %d open orders, %d bytes; loop pause "
                     "%d us (fork), export %d us and write %d us in a child process",
                     os.path.basename(snapshot_path(self.directory, next_cmd)), next_cmd - 1,
                     orders, size, fork_ns // 1000, export_ns // 1000, write_ns // 1000)
        else:
            log.warning("snapshot at command %d not written: %s", next_cmd,
                        report.partition(" ")[2] or f"child exit status {status}")
        return False

    def join(self) -> None:
        if self._child is not None:
            self.poll(block=True)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _done(self, path: str, next_cmd: int) -> None:
        self.kept = [p for p in self.kept if os.path.abspath(p) != os.path.abspath(path)]
        self.kept = (self.kept + [path])[-2:]
        prune(self.directory, self.kept)
        self.written += 1
        self.last_cmd = next_cmd

    def write(self, cap: Capture) -> bool:
        t0 = time.perf_counter_ns()
        try:
            path = write_capture(cap)
        except (OSError, jr.JournalError) as exc:
            log.warning("snapshot at command %d not written: %s", cap.header.next_cmd_seq,
                        getattr(exc, "strerror", None) or exc)
            return False
        self._done(path, cap.header.next_cmd_seq)
        log.info("snapshot %s: commands up to %d, %d open orders, %d bytes; loop pause %d us, "
                 "write %d us", os.path.basename(path), cap.header.next_cmd_seq - 1, cap.orders,
                 len(cap.body), cap.export_ns // 1000, (time.perf_counter_ns() - t0) // 1000)
        return True


# --------------------------------------------------------------------------- loading

class Loaded(NamedTuple):
    path: str
    header: SnapshotHeader
    engine: "Engine"
    history: HistoryIndex        # the covered records, indexed
    records: int                 # how many records the snapshot covers


def load(path: str, refdata: "MarketRefData", *, release: str, config_digest: str,
         journal_path: str, journal_header: jr.JournalHeader, data_offset: int,
         end_offset: int) -> Loaded:
    """Check a snapshot against this release, configuration and recovered journal (which ends
    at ``end_offset``) and restore it into a fresh engine; SnapshotInvalid says why not."""
    from engine.core import Engine

    header, body = read_file(path)
    if header.release != release:
        raise SnapshotInvalid(f"written by release {header.release}, this is release {release}")
    if header.config_digest != config_digest:
        raise SnapshotInvalid(f"written with configuration digest {header.config_digest[:16]}, "
                              f"this configuration has {config_digest[:16]}")
    if header.journal_created_ns != journal_header.created_ns:
        raise SnapshotInvalid("belongs to another journal (journal created at "
                              f"{header.journal_created_ns}, this one at "
                              f"{journal_header.created_ns})")
    if header.journal_offset > end_offset:
        raise SnapshotInvalid(f"covers the journal up to byte {header.journal_offset}, beyond "
                              f"its end at {end_offset}")
    if header.journal_offset < data_offset:
        raise SnapshotInvalid(f"journal offset {header.journal_offset} lies in the journal "
                              "header")
    history = HistoryIndex(data_offset)
    next_cmd, next_event, last = _index_journal(journal_path, data_offset,
                                                header.journal_offset, history)
    if (next_cmd, next_event) != (header.next_cmd_seq, header.next_event_seq):
        raise SnapshotInvalid(
            f"the journal up to byte {header.journal_offset} ends before command {next_cmd} / "
            f"event {next_event}, the snapshot before {header.next_cmd_seq} / "
            f"{header.next_event_seq}")
    if (hashlib.sha256(last).hexdigest() if last else "") != header.last_record_sha256:
        raise SnapshotInvalid(f"the journal record ending at byte {header.journal_offset} is not "
                              "the one the snapshot covers (the journal was rewritten)")
    # Millions of long-lived objects are created here and none becomes cyclic garbage: the
    # cyclic collector would only scan them over and over (a load took 3-10x longer with it).
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            state = decode_state(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SnapshotInvalid(f"undecodable state: {exc}") from None
        del body
        if (state.next_cmd_seq, state.next_event_seq) != (header.next_cmd_seq,
                                                           header.next_event_seq):
            raise SnapshotInvalid("the state's sequence numbers differ from the header's")
        engine = Engine(refdata)
        try:
            engine.import_state(state)
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotInvalid(f"inconsistent state: {exc}") from None
        del state
        digest = engine.state_digest()
    finally:
        if collecting:
            gc.enable()
    if digest != header.state_digest:
        raise SnapshotInvalid(f"restored state digest {digest[:16]} differs from the recorded "
                              f"{header.state_digest[:16]}")
    return Loaded(path, header, engine, history, len(history))


# --------------------------------------------------------------------------- measurement

def _measure(n_orders: int, n_used: int) -> None:  # pragma: no cover - an operator's tool
    """Print the loop pause, file size and load time of a snapshot of ``n_orders`` resting
    orders and ``n_used`` used ClOrdIDs (at least one per order; the others are ids of
    rejected orders), with the collector as in the engine's loop (frozen, off)."""
    import gc
    import tempfile

    from engine.commands import NewOrder, SequencedCommand
    from engine.core import Engine
    from engine.refdata import Firm, Instrument, MarketRefData

    rd = MarketRefData(4, tuple(
        Instrument(f"I{i:02d}", f"I{i:02d}", 100, 1, 1_000_000, 800_000, 1_200_000)
        for i in range(10)), tuple(Firm(f"F{i}", f"F{i}", 10 ** 18) for i in range(4)))
    eng = Engine(rd)
    seq = 0
    for i in range(max(n_orders, n_used)):
        seq += 1
        side = 1 + i % 2
        # bids below the reference price, asks above: nothing trades, everything rests
        price = 1_000_000 + (-(1 + i % 200) if side == 1 else 1 + i % 200) * 100
        sym = f"I{i % 10:02d}" if i < n_orders else "NONE"     # unknown: rejected, id used
        eng.apply(SequencedCommand(seq, seq, "gw", seq, NewOrder(
            f"S{i % 8}", f"F{i % 4}", "", f"S{i % 8}-{i:09d}", sym, side, 2, 0, price, 10)))
    gc.collect()
    gc.freeze()
    gc.disable()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter_ns()
        state, digest = eng.export_state()
        t1 = time.perf_counter_ns()
        body = encode_state(state)
        t2 = time.perf_counter_ns()
        cap = Capture(snapshot_path(d, state.next_cmd_seq), "", -1, SnapshotHeader(
            FORMAT_VERSION, "", "", 0, 0, "", state.next_cmd_seq, state.next_event_seq, 0,
            digest, len(body), "", 0), body, t2 - t0, len(state.orders))
        write_capture(cap)
        t3 = time.perf_counter_ns()
        _, raw = read_file(cap.path)     # as load() does it: the collector paused
        fresh = Engine(rd)
        fresh.import_state(decode_state(raw))
        ok = fresh.state_digest() == digest
        t4 = time.perf_counter_ns()
        size = os.path.getsize(cap.path)
    t5 = time.perf_counter_ns()
    eng.state_digest()
    digest_ns = time.perf_counter_ns() - t5
    fork_ns = 0
    if hasattr(os, "fork"):     # what the loop pays for a periodic snapshot: the fork alone
        t6 = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        fork_ns = time.perf_counter_ns() - t6
        os.waitpid(pid, 0)
    ms = 1_000_000
    print(f"{len(state.orders)} resting orders, {sum(len(x.used) for x in state.sessions)} used "
          f"ids: loop pause {(t2 - t0) // ms} ms (export {(t1 - t0) // ms} ms, of which the "
          f"state digest about {digest_ns // ms} ms; encode {(t2 - t1) // ms} ms); file {size} "
          f"bytes; checksum + write + fsync {(t3 - t2) // ms} ms (thread); load and check "
          f"{(t4 - t3) // ms} ms; restored digest {'matches' if ok else 'DIFFERS'}; fork "
          f"(the periodic snapshot's loop pause) {fork_ns / ms:.1f} ms at "
          f"{_rss_mb():,} MB resident")


def _rss_mb() -> int:  # pragma: no cover - Linux only, for _measure
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
    except (OSError, ValueError, IndexError):
        return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    _orders = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    _measure(_orders, int(sys.argv[2]) if len(sys.argv) > 2 else _orders)
