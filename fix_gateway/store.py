"""Message store of one FIX session: sequence numbers and every sent application message.

Contract (``MessageStore``; ``FileStore`` persists, ``MemoryStore`` is for tests)
---------------------------------------------------------------------------------
* ``next_sender_seq`` / ``next_target_seq``: the next outbound MsgSeqNum and the next
  expected inbound one. ``set_next_sender_seq`` / ``set_next_target_seq`` persist them.
* ``save_sent(seq, data)`` persists one sent message (its exact bytes) under ``seq`` and
  makes ``next_sender_seq`` at least ``seq + 1`` (the session calls it with ``seq`` equal
  to ``next_sender_seq``, so that one call both stores the message and advances the seq).
  Seqs are saved in increasing order; saving a seq not above the last saved one is a
  rewind: the index forgets every entry at or above it.
* ``get_range(begin, end, limit)`` yields ``(seq, bytes)`` for the saved seqs in
  ``[begin, end]`` (``end`` 0 means no upper bound), ascending, at most ``limit`` of them,
  reading one record at a time: memory stays bounded whatever the range.
* ``reset(now_ns)`` archives (or drops) the messages and sets both seqs to 1; it is called on
  Logon with ResetSeqNumFlag=Y, or by the caller's daily schedule. ``created_ns`` is the time
  of the last reset (the session "creation time").
* Everything written is durable against SIGKILL of the process as soon as the call returns
  (the data is in the OS page cache); with ``fsync="always"`` it also survives power loss
  (``os.fsync`` after every write); ``fsync="never"`` leaves flushing to the OS.

On-disk format (directory per session; integers unsigned little-endian)
------------------------------------------------------------------------
``messages.log``: 8-byte magic ``b"BFIXLOG1"``, then records::

    +0   4   N = payload length (u32, 8 <= N <= 16 MiB)
    +4   4   CRC-32 (zlib.crc32) of the 4 length bytes followed by the N payload bytes
    +8   N   payload: seq (u64) + the message bytes exactly as sent

Records are built by the compiled ``fix_gateway._fixfast.store_record`` when it is available
(``_record_py`` is the reference; the tests check both write the same bytes).
The valid log is the longest prefix of valid records; a torn or corrupt tail (crash
mid-write) is cut off on open. The seq -> offset index lives in memory and is rebuilt by
scanning the log on open (one sequential read).

``seqnums``: two 64-byte slots at offsets 0 and 64, written alternately in place::

    +0   8   generation (u64, the slot with the higher valid generation wins)
    +8   8   next_sender_seq     +16  8   next_target_seq     +24  8   created_ns
    +32  4   CRC-32 of bytes 0..31; the rest of the slot is zero

The slots are written in place through a shared memory mapping of the file (no system call
per write; the bytes are in the OS page cache at once, as after a ``pwrite``); with
``fsync="always"`` the mapping is synced (``msync``) after every write. A torn slot write
leaves the other slot intact. On open, ``next_sender_seq`` is the maximum
of the slot's value and (last logged seq + 1), so a message logged just before a crash is
never reused. ``reset`` first moves the log to ``archive/messages-<created>-<now>.log`` (or
deletes it when ``archive=False``), then writes the new seqnums slot.

One process per directory: ``FileStore`` holds an exclusive ``flock`` on ``seqnums``.
"""
from __future__ import annotations

import bisect
import mmap
import os
import struct
import zlib
from abc import ABC, abstractmethod
from array import array
from typing import Iterator, Optional

from fix_gateway import codec as _codec

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["MessageStore", "MemoryStore", "FileStore", "StoreError", "StoreCorrupt",
           "StoreLocked", "FSYNC_POLICIES"]

FSYNC_POLICIES = ("always", "never")
LOG_MAGIC = b"BFIXLOG1"
LOG_NAME = "messages.log"
SEQ_NAME = "seqnums"
ARCHIVE_DIR = "archive"
MAX_PAYLOAD = 16 * 1024 * 1024
_REC = struct.Struct("<II")
_SEQ = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_SLOT = struct.Struct("<QQQQ")
_SLOT_SIZE = 64
_SCAN_CHUNK = 1 << 20


class StoreError(Exception):
    """Base class of store errors."""


class StoreCorrupt(StoreError):
    """A file is not a store file, or a record read back fails its CRC."""


class StoreLocked(StoreError):
    """Another process holds the store."""


class MessageStore(ABC):
    """Interface of a session's message store (see the module docstring)."""

    @property
    @abstractmethod
    def next_sender_seq(self) -> int: ...

    @property
    @abstractmethod
    def next_target_seq(self) -> int: ...

    @property
    @abstractmethod
    def created_ns(self) -> int: ...

    @abstractmethod
    def set_next_sender_seq(self, seq: int) -> None: ...

    @abstractmethod
    def set_next_target_seq(self, seq: int) -> None: ...

    @abstractmethod
    def save_sent(self, seq: int, data: bytes) -> None: ...

    @abstractmethod
    def get_range(self, begin: int, end: int = 0,
                  limit: Optional[int] = None) -> Iterator[tuple[int, bytes]]: ...

    @abstractmethod
    def reset(self, now_ns: int) -> None: ...

    def last_saved_seq(self) -> int:
        """Highest saved seq, 0 if none."""
        return 0

    def sync(self) -> None:
        """Force everything written so far to stable storage."""

    def close(self) -> None:
        """Release files and locks; the object is unusable afterwards."""

    def flush(self) -> None:
        """Write what ``save_sent`` buffered (group commit); a no-op for unbuffered stores."""


def _record_py(seq: int, data: bytes, max_payload: int) -> Optional[bytes]:
    """The log record of one message (the reference of the compiled ``store_record``): length,
    CRC-32, seq and the message bytes; None when the payload would exceed ``max_payload``."""
    payload = _SEQ.pack(seq) + bytes(data)
    if len(payload) > max_payload:
        return None
    head = _U32.pack(len(payload))
    return head + _U32.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


_record = _codec._fast.store_record if _codec._fast is not None else _record_py


def _check_seq(seq: int) -> None:
    if type(seq) is not int or seq < 1:
        raise ValueError(f"sequence numbers start at 1, got {seq!r}")


class MemoryStore(MessageStore):
    """Volatile store with the same behaviour as FileStore (tests, simulations)."""

    def __init__(self, created_ns: int = 0) -> None:
        self._sender = 1
        self._target = 1
        self._created = created_ns
        self._seqs: list[int] = []
        self._data: list[bytes] = []

    @property
    def next_sender_seq(self) -> int:
        return self._sender

    @property
    def next_target_seq(self) -> int:
        return self._target

    @property
    def created_ns(self) -> int:
        return self._created

    def set_next_sender_seq(self, seq: int) -> None:
        _check_seq(seq)
        self._sender = seq

    def set_next_target_seq(self, seq: int) -> None:
        _check_seq(seq)
        self._target = seq

    def save_sent(self, seq: int, data: bytes) -> None:
        _check_seq(seq)
        if self._seqs and seq <= self._seqs[-1]:
            i = bisect.bisect_left(self._seqs, seq)
            del self._seqs[i:], self._data[i:]
        self._seqs.append(seq)
        self._data.append(bytes(data))
        if seq + 1 > self._sender:
            self._sender = seq + 1

    def get_range(self, begin: int, end: int = 0,
                  limit: Optional[int] = None) -> Iterator[tuple[int, bytes]]:
        self.flush()
        i = bisect.bisect_left(self._seqs, begin)
        n = 0
        while i < len(self._seqs) and (limit is None or n < limit):
            seq = self._seqs[i]
            if end and seq > end:
                return
            yield seq, self._data[i]
            i += 1
            n += 1

    def last_saved_seq(self) -> int:
        return self._seqs[-1] if self._seqs else 0

    def reset(self, now_ns: int) -> None:
        self._seqs, self._data = [], []
        self._sender = self._target = 1
        self._created = now_ns


class FileStore(MessageStore):
    """Persistent store in ``directory`` (created if missing). See the module docstring."""

    def __init__(self, directory: str, *, fsync: str = "never", archive: bool = True,
                 now_ns: int = 0, group_commit: bool = False) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.directory = str(directory)
        self.fsync = fsync
        #: With group commit, ``save_sent`` only buffers: the caller must ``flush()`` before
        #: it hands the message to the network (one write for everything since the last one).
        self.group_commit = group_commit
        self._pending: list[bytes] = []
        self._pending_at = 0
        self.archive = archive
        os.makedirs(self.directory, exist_ok=True)
        self._seq_path = os.path.join(self.directory, SEQ_NAME)
        self._log_path = os.path.join(self.directory, LOG_NAME)
        self._seq_fd = os.open(self._seq_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._seq_map: mmap.mmap | None = None
        self._log_fd = -1
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self._seq_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreLocked(f"{self.directory} is in use by another process")
            self._gen, sender, target, created = self._read_slots(now_ns)
            self._open_log()
        except BaseException:
            self._close_fds()
            raise
        self._sender = max(sender, self.last_saved_seq() + 1)
        self._target = target
        self._created = created

    # ------------------------------------------------------------------ seqnums file
    def _read_slots(self, now_ns: int) -> tuple[int, int, int, int]:
        raw = os.pread(self._seq_fd, 2 * _SLOT_SIZE, 0)
        best = None
        for k in range(2):
            slot = raw[k * _SLOT_SIZE:k * _SLOT_SIZE + 36]
            if len(slot) < 36:
                continue
            (crc,) = struct.unpack_from("<I", slot, 32)
            if crc != zlib.crc32(slot[:32]) or not any(slot[:32]):
                continue
            values = _SLOT.unpack_from(slot)
            if best is None or values[0] > best[0]:
                best = values
        if best is None and any(raw):
            raise StoreCorrupt(f"{self._seq_path}: no valid sequence-number slot")
        if len(raw) < 2 * _SLOT_SIZE:   # new (or cut short): zeros are no valid slot
            os.ftruncate(self._seq_fd, 2 * _SLOT_SIZE)
        self._seq_map = mmap.mmap(self._seq_fd, 2 * _SLOT_SIZE)
        if best is None:
            self._gen = 0
            self._write_slot(1, 1, now_ns)
            return self._gen, 1, 1, now_ns
        return best  # type: ignore[return-value]

    def _write_slot(self, sender: int, target: int, created: int) -> None:
        self._gen += 1
        body = _SLOT.pack(self._gen, sender, target, created)
        at = (self._gen % 2) * _SLOT_SIZE
        m = self._seq_map
        m[at:at + 32] = body                # bytes 36..63 of a slot stay zero
        _U32.pack_into(m, at + 32, zlib.crc32(body))
        if self.fsync == "always":
            m.flush()

    # ---------------------------------------------------------------------- log file
    def _open_log(self) -> None:
        fd = os.open(self._log_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._log_fd = fd
        size = os.fstat(fd).st_size
        if size < len(LOG_MAGIC):
            head = os.pread(fd, len(LOG_MAGIC), 0)
            if head and not LOG_MAGIC.startswith(head):
                raise StoreCorrupt(f"{self._log_path}: not a FIX message log")
            os.ftruncate(fd, 0)
            os.pwrite(fd, LOG_MAGIC, 0)
            if self.fsync == "always":
                os.fsync(fd)
            size = len(LOG_MAGIC)
        elif os.pread(fd, len(LOG_MAGIC), 0) != LOG_MAGIC:
            raise StoreCorrupt(f"{self._log_path}: not a FIX message log")
        self._seqs = array("Q")
        self._offs = array("Q")
        self._lens = array("I")
        end = self._scan(fd, size)
        if end < size:
            os.ftruncate(fd, end)  # torn or corrupt tail
            if self.fsync == "always":
                os.fsync(fd)
        self._end = end

    def _scan(self, fd: int, size: int) -> int:
        """Index every valid record; return the end offset of the valid prefix."""
        off = len(LOG_MAGIC)
        buf = b""
        buf_off = off
        while True:
            rel = off - buf_off
            if len(buf) - rel < 8:
                buf = buf[rel:] + os.pread(fd, _SCAN_CHUNK, buf_off + len(buf))
                buf_off = off
                rel = 0
                if len(buf) < 8:
                    return off
            n, crc = _REC.unpack_from(buf, rel)
            if n < 8 or n > MAX_PAYLOAD or off + 8 + n > size:
                return off
            if len(buf) - rel < 8 + n:
                buf = buf[rel:] + os.pread(fd, max(_SCAN_CHUNK, 8 + n), buf_off + len(buf))
                buf_off = off
                rel = 0
                if len(buf) < 8 + n:
                    return off
            payload = buf[rel + 8:rel + 8 + n]
            if zlib.crc32(payload, zlib.crc32(buf[rel:rel + 4])) != crc:
                return off
            (seq,) = _SEQ.unpack_from(payload)
            if seq < 1:
                return off
            self._index_add(seq, off, n)
            off += 8 + n

    def _index_add(self, seq: int, off: int, n: int) -> None:
        if self._seqs and seq <= self._seqs[-1]:
            i = bisect.bisect_left(self._seqs, seq)
            del self._seqs[i:], self._offs[i:], self._lens[i:]
        self._seqs.append(seq)
        self._offs.append(off)
        self._lens.append(n)

    def _read_record(self, i: int) -> tuple[int, bytes]:
        off, n = self._offs[i], self._lens[i]
        rec = os.pread(self._log_fd, 8 + n, off)
        if len(rec) != 8 + n:
            raise StoreCorrupt(f"{self._log_path}: short read at offset {off}")
        length, crc = _REC.unpack_from(rec)
        if length != n or zlib.crc32(rec[8:], zlib.crc32(rec[:4])) != crc:
            raise StoreCorrupt(f"{self._log_path}: bad record at offset {off}")
        return _SEQ.unpack_from(rec, 8)[0], rec[16:]

    # ------------------------------------------------------------------------ API
    @property
    def next_sender_seq(self) -> int:
        return self._sender

    @property
    def next_target_seq(self) -> int:
        return self._target

    @property
    def created_ns(self) -> int:
        return self._created

    def set_next_sender_seq(self, seq: int) -> None:
        _check_seq(seq)
        self._sender = seq
        self._write_slot(self._sender, self._target, self._created)

    def set_next_target_seq(self, seq: int) -> None:
        _check_seq(seq)
        self._target = seq
        self._write_slot(self._sender, self._target, self._created)

    def save_sent(self, seq: int, data: bytes) -> None:
        seqs = self._seqs
        if (type(seq) is not int or seq < 1 or not self.group_commit
                or (seqs and seq <= seqs[-1])):
            self._save_sent(seq, data)
            return
        rec = _record(seq, data, MAX_PAYLOAD)
        if type(rec) is not bytes:
            self._save_sent(seq, data)
            return
        # _save_sent's common case: a buffered record after the last one
        end = self._end
        pending = self._pending
        if not pending:
            self._pending_at = end
        pending.append(rec)
        seqs.append(seq)
        self._offs.append(end)
        self._lens.append(len(rec) - 8)
        self._end = end + len(rec)
        if seq >= self._sender:
            self._sender = seq + 1

    def _save_sent(self, seq: int, data: bytes) -> None:
        if type(seq) is not int or seq < 1:
            _check_seq(seq)
        rec = _record(seq, data, MAX_PAYLOAD)
        if rec is NotImplemented:
            rec = _record_py(seq, data, MAX_PAYLOAD)
        if rec is None:
            raise ValueError(f"message of {len(data)} bytes is too large to store")
        n = len(rec) - 8
        end = self._end
        if self.group_commit:
            if not self._pending:
                self._pending_at = end
            self._pending.append(rec)
        else:
            self._write_log(rec, end)
        seqs = self._seqs
        rewind = bool(seqs) and seq <= seqs[-1]
        if rewind:
            self._index_add(seq, end, n)
        else:                                   # _index_add's common case
            seqs.append(seq)
            self._offs.append(end)
            self._lens.append(n)
        self._end = end + len(rec)
        if seq + 1 > self._sender:
            self._sender = seq + 1
        if rewind:  # the log alone no longer implies next_sender_seq: persist it
            self.flush()
            self._write_slot(self._sender, self._target, self._created)

    def _write_log(self, data: bytes, at: int) -> None:
        written = os.pwrite(self._log_fd, data, at)
        if written != len(data):  # pragma: no cover - disk full mid-record
            os.ftruncate(self._log_fd, at)
            raise OSError(f"short write to {self._log_path}")
        if self.fsync == "always":
            os.fsync(self._log_fd)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._write_log(data, self._pending_at)

    def get_range(self, begin: int, end: int = 0,
                  limit: Optional[int] = None) -> Iterator[tuple[int, bytes]]:
        self.flush()
        i = bisect.bisect_left(self._seqs, begin)
        n = 0
        while i < len(self._seqs) and (limit is None or n < limit):
            if end and self._seqs[i] > end:
                return
            yield self._read_record(i)
            i += 1
            n += 1

    def last_saved_seq(self) -> int:
        return self._seqs[-1] if self._seqs else 0

    def reset(self, now_ns: int) -> None:
        self.flush()
        os.close(self._log_fd)
        self._log_fd = -1
        if self.archive and self._seqs:
            adir = os.path.join(self.directory, ARCHIVE_DIR)
            os.makedirs(adir, exist_ok=True)
            name = f"messages-{self._created}-{now_ns}.log"
            os.replace(self._log_path, os.path.join(adir, name))
        else:
            os.unlink(self._log_path)
        self._fsync_dir()
        self._open_log()
        self._sender = self._target = 1
        self._created = now_ns
        self._write_slot(1, 1, now_ns)

    def _fsync_dir(self) -> None:
        if self.fsync == "always":
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def sync(self) -> None:
        self.flush()
        os.fsync(self._log_fd)
        self._seq_map.flush()

    def _close_fds(self) -> None:
        if getattr(self, "_seq_map", None) is not None:
            self._seq_map.close()
            self._seq_map = None
        for name in ("_log_fd", "_seq_fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def close(self) -> None:
        try:
            if self._log_fd >= 0:
                self.flush()
        finally:
            self._close_fds()

    def __enter__(self) -> "FileStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
