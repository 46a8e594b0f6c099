"""The on-disk journal: an append-only file of framed, checksummed byte records.

This module is pure storage. It does not know what the payloads mean (the engine server
stores msgpack-encoded batches of sequenced commands with their events); it guarantees that
a payload read back is byte-identical to the one appended, and that a torn or corrupted tail
is detected and never handed out.

File format (all integers unsigned little-endian; offsets are byte offsets from file start)
------------------------------------------------------------------------------------------

File header, at offset 0::

    offset  size  field
    0       8     magic, the ASCII bytes b"BOURSEJ1"
    8       4     H = length of the header payload in bytes (u32, 0 < H <= 1 MiB)
    12      H     header payload: MessagePack of JournalHeader as a map
                  {"format_version": int, "release": str, "config_digest": str,
                   "created_ns": int}
    12+H    4     CRC-32 (zlib.crc32, IEEE polynomial) of the H header payload bytes

The first record starts at ``data_offset = 16 + H``.

Record, repeated until end of file::

    offset  size  field
    +0      4     N = payload length in bytes (u32, 0 <= N <= MAX_RECORD_PAYLOAD = 64 MiB)
    +4      4     CRC-32 (zlib.crc32) of the 4 length bytes followed by the N payload bytes,
                  i.e. zlib.crc32(payload, zlib.crc32(length_bytes))
    +8      N     payload

The next record starts at ``+8+N``. There is no file trailer and no padding. Because the
length is covered by the CRC, a zero-filled region (length 0, CRC 0) is never a valid record
(the CRC of four zero bytes is 0x2144DF1C).

A record is valid iff its 8-byte frame is complete, N is within the limit, all N payload
bytes are present and the CRC matches. The valid journal is the longest prefix of valid
records; everything from the first invalid record on is a torn tail (a crash mid-write,
preallocated zeros, garbage) that ``recover`` truncates and readers never return.

Usage (the server's startup)::

    if os.path.exists(p) and os.path.getsize(p) > 0:
        res = recover(p)                                   # truncates a torn tail
        for off, payload in iter_records(p, end_offset=res.end_offset):
            ...                                            # replay
        w = JournalWriter.open(p, header, fsync="batch", end_offset=res.end_offset)
    else:
        w = JournalWriter.open(p, header, fsync="batch")   # creates file + header
    off = w.append(payload); durable = w.commit(now_ns)

Concurrency: one writer per file, enforced with an exclusive ``flock`` held by the writer
(``recover`` takes the same lock). Readers (``iter_records``, ``JournalReader``) take no lock
and may run in the same process as the writer; they bound themselves by the file size or by
an ``end_offset`` the caller got from ``JournalWriter.offset``. Objects are not thread-safe,
except ``JournalWriter.sync_written``, which a sync thread may call while the owner appends.
"""
from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Union

import msgspec

try:  # POSIX only; on platforms without flock the single-writer rule is not enforced.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "MAX_RECORD_PAYLOAD",
    "RECORD_OVERHEAD",
    "FSYNC_POLICIES",
    "JournalHeader",
    "JournalError",
    "JournalCorrupt",
    "JournalIOError",
    "RecoveryResult",
    "ReadResult",
    "JournalWriter",
    "JournalReader",
    "recover",
    "iter_records",
    "read_header",
]

MAGIC = b"BOURSEJ1"
FORMAT_VERSION = 1
MAX_HEADER_PAYLOAD = 1 << 20
MAX_RECORD_PAYLOAD = 64 << 20
RECORD_OVERHEAD = 8
FSYNC_POLICIES = ("batch", "interval", "never")

_U32 = struct.Struct("<I")
_II = struct.Struct("<II")
_pack_u32 = _U32.pack
_pack_ii = _II.pack
_unpack_ii = _II.unpack_from
_crc32 = zlib.crc32
_READ_CHUNK = 1 << 20
# CRC-32 of the 4 length bytes for small payload lengths (saves one crc32 call per append).
_LEN_CRC_SMALL = 4096
_LEN_CRC = [_crc32(_pack_u32(_n)) for _n in range(_LEN_CRC_SMALL)]
_ZERO_CHUNK = 1 << 20
_ZEROS = bytes(_ZERO_CHUNK)
_ZERO_STEP = 256 << 10


class JournalError(Exception):
    """A journal cannot be used (I/O failure, locked, misuse, unsupported version)."""


class JournalCorrupt(JournalError):
    """The journal's header or committed data fails validation."""


class JournalIOError(JournalError, OSError):
    """A write or fdatasync of the journal failed; the writer is now failed (fail-stop).

    Also an OSError, so callers that treat any I/O failure as fatal catch it as such.
    """


class JournalHeader(msgspec.Struct, frozen=True):
    format_version: int
    release: str
    config_digest: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    header: JournalHeader
    records_valid: int
    end_offset: int          # end of the last valid record == new file size
    truncated_bytes: int     # bytes removed from the tail (0 if the file was clean)
    data_offset: int = 0     # offset of the first record (just after the file header)
    tail_error: str | None = None  # why the tail was cut (None if nothing was cut)
    zero_tail: bool = False  # the cut tail was all zeros: preallocated space, no torn write


class ReadResult(NamedTuple):
    records: list[tuple[int, bytes]]   # (offset, payload), in file order
    next_offset: int                   # offset to pass to the next read_from


_HeaderArg = Union[JournalHeader, Callable[[], JournalHeader]]

_header_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(JournalHeader)


# --------------------------------------------------------------------------- helpers

def _fdatasync(fd: int) -> None:
    # Looked up at call time (tests monkeypatch os.fdatasync / os.fsync).
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)


def _fsync_dir(path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        dfd = os.open(d, flags)
    except OSError as e:  # pragma: no cover - platform specific
        raise JournalError(f"{path}: cannot open directory {d} for fsync: {e}") from e
    try:
        os.fsync(dfd)
    except OSError as e:  # pragma: no cover - some filesystems refuse directory fsync
        if e.errno not in (22,):  # EINVAL: directory fsync unsupported
            raise JournalError(f"{path}: fsync of directory {d} failed: {e}") from e
    finally:
        os.close(dfd)


def _lock(fd: int, path: str) -> None:
    if fcntl is None:  # pragma: no cover
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        raise JournalError(f"{path}: journal is locked by another writer") from e
    except OSError as e:  # pragma: no cover
        raise JournalError(f"{path}: cannot lock journal: {e}") from e


def _pread_full(fd: int, n: int, off: int) -> bytes:
    data = os.pread(fd, n, off)
    if len(data) >= n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = os.pread(fd, n - got, off + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _encode_header(header: JournalHeader) -> bytes:
    payload = _header_encoder.encode(header)
    if len(payload) > MAX_HEADER_PAYLOAD:
        raise JournalError(f"journal header too large ({len(payload)} bytes)")
    return MAGIC + _pack_u32(len(payload)) + payload + _pack_u32(_crc32(payload))


def _read_header_fd(fd: int, path: str) -> tuple[JournalHeader, int]:
    """Validate the file header; return (header, data_offset)."""
    try:
        pre = _pread_full(fd, 12, 0)
        if not pre:
            raise JournalCorrupt(f"{path}: file is empty (no journal header at offset 0)")
        if pre[:8] != MAGIC[: len(pre)]:
            raise JournalCorrupt(
                f"{path}: bad magic at offset 0: {pre[:8]!r} (expected {MAGIC!r})")
        if len(pre) < 12:
            raise JournalCorrupt(
                f"{path}: truncated journal header at offset {len(pre)} "
                f"(file has {len(pre)} bytes)")
        (hlen,) = _U32.unpack_from(pre, 8)
        if hlen == 0 or hlen > MAX_HEADER_PAYLOAD:
            raise JournalCorrupt(
                f"{path}: bad header length {hlen} at offset 8 (limit {MAX_HEADER_PAYLOAD})")
        body = _pread_full(fd, hlen + 4, 12)
    except OSError as e:
        raise JournalError(f"{path}: cannot read journal header: {e}") from e
    if len(body) < hlen + 4:
        raise JournalCorrupt(
            f"{path}: truncated journal header at offset {12 + len(body)} "
            f"(need {hlen + 4} bytes from offset 12)")
    payload = body[:hlen]
    (crc,) = _U32.unpack_from(body, hlen)
    if _crc32(payload) != crc:
        raise JournalCorrupt(
            f"{path}: header CRC mismatch at offset {12 + hlen} "
            f"(stored {crc:#010x}, computed {_crc32(payload):#010x})")
    try:
        header = _header_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise JournalCorrupt(f"{path}: undecodable header payload at offset 12: {e}") from e
    if header.format_version != FORMAT_VERSION:
        raise JournalError(
            f"{path}: unsupported journal format_version {header.format_version} "
            f"(this build reads {FORMAT_VERSION})")
    return header, 16 + hlen


def _open_ro(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        raise JournalError(f"{path}: journal file does not exist") from e
    except OSError as e:
        raise JournalError(f"{path}: cannot open journal: {e}") from e


def read_header(path: str | os.PathLike[str]) -> tuple[JournalHeader, int]:
    """Validate and return ``(header, data_offset)`` of the journal at ``path``."""
    p = os.fspath(path)
    fd = _open_ro(p)
    try:
        return _read_header_fd(fd, p)
    finally:
        os.close(fd)


class _Scan:
    """Iterate the valid records of ``fd`` from ``start``; stop at the first invalid one.

    After iteration finished (not broken off), ``stop_offset`` is where the valid prefix
    ends and ``error`` says why the next bytes are not a valid record (None at a clean end).
    Reads in chunks of ``chunk`` bytes (more if one record needs it), bounded by ``end``
    (None = until end of file).
    """

    __slots__ = ("fd", "start", "end", "chunk", "stop_offset", "error")

    def __init__(self, fd: int, start: int, end: int | None, chunk: int = _READ_CHUNK):
        self.fd = fd
        self.start = start
        self.end = end
        self.chunk = chunk
        self.stop_offset = start
        self.error: str | None = None

    def _read(self, off: int, n: int) -> bytes:
        if self.end is not None:
            n = min(n, self.end - off)
            if n <= 0:
                return b""
        return _pread_full(self.fd, n, off)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        chunk = self.chunk
        limit = MAX_RECORD_PAYLOAD
        buf = b""
        i = 0
        base = self.start  # file offset of buf[0]
        while True:
            if len(buf) - i < 8:
                buf = buf[i:] + self._read(base + len(buf), chunk)
                base += i
                i = 0
                if len(buf) < 8:
                    self.stop_offset = base
                    if buf:
                        self.error = (f"torn record frame at offset {base} "
                                      f"({len(buf)} of 8 bytes)")
                    return
            n, crc = _unpack_ii(buf, i)
            if n > limit:
                self.stop_offset = base + i
                self.error = (f"record length {n} at offset {base + i} exceeds limit "
                              f"{limit}")
                return
            j = i + 8 + n
            if j > len(buf):
                want = j - len(buf)
                buf = buf[i:] + self._read(base + len(buf), max(chunk, want))
                base += i
                i = 0
                j = 8 + n
                if j > len(buf):
                    self.stop_offset = base
                    self.error = (f"torn record at offset {base}: payload has "
                                  f"{len(buf) - 8} of {n} bytes")
                    return
            payload = buf[i + 8:j]
            if _crc32(payload, _crc32(buf[i:i + 4])) != crc:
                self.stop_offset = base + i
                self.error = f"record CRC mismatch at offset {base + i} (length {n})"
                return
            yield base + i, payload
            i = j


# --------------------------------------------------------------------------- recovery

def recover(
    path: str | os.PathLike[str],
    *,
    on_record: Callable[[int, bytes], None] | None = None,
    max_truncate_bytes: int | None = None,
) -> RecoveryResult:
    """Validate an existing journal and truncate any torn tail; fsync; report.

    Raises JournalCorrupt for a bad/absent header (the file is left untouched), and
    JournalError if the file is missing, locked by a writer, or on I/O errors.
    ``on_record(offset, payload)`` is called for every valid record during the scan (every
    record it sees is kept), so a caller can replay in the same pass.
    If ``max_truncate_bytes`` is set and the invalid tail is longer than that, nothing is
    truncated and JournalCorrupt is raised instead (guards against cutting off a large
    region because of mid-file damage).
    """
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        raise JournalError(f"{p}: journal file does not exist") from e
    except OSError as e:
        raise JournalError(f"{p}: cannot open journal: {e}") from e
    try:
        _lock(fd, p)
        header, data_offset = _read_header_fd(fd, p)
        try:
            size = os.fstat(fd).st_size
            scan = _Scan(fd, data_offset, size, chunk=4 * _READ_CHUNK)
            count = 0
            if on_record is None:
                for _ in scan:
                    count += 1
            else:
                for off, payload in scan:
                    count += 1
                    on_record(off, payload)
            end = scan.stop_offset
            cut = size - end
            zeros = bool(cut) and is_zero_range(fd, end, size)
            if cut and not zeros and max_truncate_bytes is not None and cut > max_truncate_bytes:
                raise JournalCorrupt(
                    f"{p}: {scan.error or 'invalid data'}; refusing to truncate {cut} bytes "
                    f"(limit {max_truncate_bytes})")
            if cut:
                os.ftruncate(fd, end)
            os.fsync(fd)
        except OSError as e:
            raise JournalError(f"{p}: I/O error during recovery: {e}") from e
        return RecoveryResult(header, count, end, cut, data_offset,
                              scan.error if cut else None, zeros)
    finally:
        os.close(fd)


def is_zero_range(fd: int, start: int, end: int) -> bool:
    """True iff bytes [start, end) of ``fd`` are all zero (a preallocated, unused tail)."""
    off = start
    while off < end:
        data = os.pread(fd, min(_READ_CHUNK, end - off), off)
        if not data:
            return False
        if data.count(0) != len(data):
            return False
        off += len(data)
    return True


def iter_records(
    path: str | os.PathLike[str],
    start_offset: int | None = None,
    end_offset: int | None = None,
    *,
    chunk_size: int = 4 * _READ_CHUNK,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, payload)`` of valid records, reading in ``chunk_size`` chunks.

    Starts at ``start_offset`` (a record boundary; default: the first record) and stops at
    ``end_offset`` (default: end of file) or at the first invalid record, silently and
    without modifying the file (use ``recover`` to repair). The header is validated first.
    """
    p = os.fspath(path)
    fd = _open_ro(p)
    try:
        _, data_offset = _read_header_fd(fd, p)
        start = data_offset if start_offset is None else start_offset
        if start < data_offset:
            raise JournalError(
                f"{p}: start_offset {start} is inside the file header "
                f"(records start at {data_offset})")
        try:
            yield from _Scan(fd, start, end_offset, chunk=max(chunk_size, 4096))
        except OSError as e:
            raise JournalError(f"{p}: read error: {e}") from e
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- writer

class JournalWriter:
    """Append-only group-commit writer. Create with ``JournalWriter.open``.

    ``append`` frames a record into an in-memory batch; ``commit`` writes the batch with one
    ``os.write`` and syncs per policy:

    - "batch": fdatasync on every commit that wrote data. commit returns True.
    - "interval": fdatasync only if at least ``fsync_interval_ms`` passed since the last
      sync (the first sync is due immediately). commit returns True iff everything written
      is now synced. Call ``sync_if_due(now_ns)`` from a timer (``sync_deadline_ns`` says
      when) so unsynced data never waits longer than the interval.
    - "never": never syncs (durability = the OS page cache, survives a process crash but not
      a machine crash). commit returns True (durable by this policy's definition).

    ``offset`` is the end of written data; ``synced_offset`` the end of fdatasync'ed data.
    Times are ``time.monotonic_ns()``-style integers passed by the caller (read here only
    when the caller passes None). A failed write or fdatasync raises JournalIOError (an
    OSError) and fails the writer: every further ``commit``/``sync`` raises JournalError
    (after a failed fsync the page cache can no longer be trusted); a partially written
    batch is cut off so the file stays a valid prefix.
    """

    __slots__ = ("_fd", "_path", "_header", "_data_offset", "_policy", "_interval_ns",
                 "_buf", "_end", "_written", "_synced", "_last_sync_ns", "_failed",
                 "_prealloc", "_zero_end", "_fill_lock")

    def __init__(self, fd: int, path: str, header: JournalHeader, data_offset: int,
                 end: int, policy: str, interval_ns: int):
        self._fd: int | None = fd
        self._path = path
        self._header = header
        self._data_offset = data_offset
        self._policy = policy
        self._interval_ns = interval_ns
        self._buf: list[bytes] = []   # frame, payload, frame, payload, ...
        self._end = end          # end offset including buffered (uncommitted) records
        self._written = end      # end of data handed to the OS
        self._synced = end       # end of data known fdatasync'ed
        self._last_sync_ns: int | None = None
        self._failed: str | None = None
        self._prealloc = 0           # bytes of zeros kept ahead of the data (0 = off)
        self._zero_end = end         # zeros are written up to here
        self._fill_lock = threading.Lock()

    # ---- construction

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        header: _HeaderArg,
        fsync: str = "batch",
        fsync_interval_ms: int = 5,
        *,
        end_offset: int | None = None,
    ) -> "JournalWriter":
        """Open ``path`` for appending, creating it (with header) if absent or empty.

        ``header`` (a JournalHeader, or a zero-argument callable returning one) is only
        used when creating; for an existing file the stored header is validated and
        exposed as ``.header`` (comparing it with expectations is the caller's business).
        An existing file must already have been through ``recover``; pass its
        ``end_offset`` to have that checked against the file size (mismatch -> JournalError).
        """
        p = os.fspath(path)
        if fsync not in FSYNC_POLICIES:
            raise JournalError(f"{p}: unknown fsync policy {fsync!r} (use one of "
                               f"{', '.join(FSYNC_POLICIES)})")
        if fsync_interval_ms < 0:
            raise JournalError(f"{p}: fsync_interval_ms must be >= 0")
        interval_ns = int(fsync_interval_ms) * 1_000_000
        try:
            st = os.stat(p)
            exists = st.st_size > 0
        except FileNotFoundError:
            exists = False
        except OSError as e:
            raise JournalError(f"{p}: cannot stat journal: {e}") from e
        if not exists:
            if end_offset is not None:
                raise JournalError(f"{p}: end_offset given but the journal is absent/empty")
            fd, hdr, data_offset = cls._create(p, header)
            return cls(fd, p, hdr, data_offset, data_offset, fsync, interval_ns)
        try:
            fd = os.open(p, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise JournalError(f"{p}: cannot open journal: {e}") from e
        try:
            _lock(fd, p)
            hdr, data_offset = _read_header_fd(fd, p)
            size = os.fstat(fd).st_size
            if end_offset is not None and end_offset != size:
                raise JournalError(
                    f"{p}: file size {size} != recovered end_offset {end_offset}; "
                    f"run recover() before opening for append")
            os.lseek(fd, size, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, p, hdr, data_offset, size, fsync, interval_ns)

    @staticmethod
    def _create(p: str, header: _HeaderArg) -> tuple[int, JournalHeader, int]:
        hdr = header if isinstance(header, JournalHeader) else header()
        if not isinstance(hdr, JournalHeader):
            raise JournalError(f"{p}: header factory returned {type(hdr).__name__}, "
                               f"expected JournalHeader")
        blob = _encode_header(hdr)
        # Write the header into a side file, fsync it, then rename into place and fsync
        # the directory: a crash never leaves a journal with a partial header.
        tmp = os.path.join(os.path.dirname(p), "." + os.path.basename(p) + ".creating")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise JournalError(f"{p}: cannot create journal: {e}") from e
        try:
            _lock(fd, tmp)
            os.ftruncate(fd, 0)
            n = os.write(fd, blob)
            if n != len(blob):
                raise JournalError(f"{p}: short write of journal header")
            os.fsync(fd)
            os.replace(tmp, p)
            _fsync_dir(p)
        except OSError as e:
            os.close(fd)
            raise JournalError(f"{p}: cannot create journal: {e}") from e
        except BaseException:
            os.close(fd)
            raise
        return fd, hdr, len(blob)

    # ---- properties

    @property
    def path(self) -> str:
        return self._path

    @property
    def header(self) -> JournalHeader:
        return self._header

    @property
    def policy(self) -> str:
        return self._policy

    @property
    def data_offset(self) -> int:
        """Offset of the first record."""
        return self._data_offset

    @property
    def offset(self) -> int:
        """End of the data written by ``commit`` (readers may read up to here)."""
        return self._written

    @property
    def synced_offset(self) -> int:
        """End of the data known to be on stable storage (fdatasync'ed)."""
        return self._synced

    @property
    def pending_bytes(self) -> int:
        """Bytes appended but not yet committed."""
        return self._end - self._written

    @property
    def sync_deadline_ns(self) -> int | None:
        """("interval") when unsynced written data becomes due for sync; None if none."""
        if self._synced >= self._written or self._policy != "interval":
            return None
        if self._last_sync_ns is None:
            return 0
        return self._last_sync_ns + self._interval_ns

    @property
    def closed(self) -> bool:
        return self._fd is None

    # ---- hot path

    def append(self, payload: bytes) -> int:
        """Buffer one record; return its file offset. Not written until ``commit``.

        ``payload`` is referenced, not copied, until ``commit``: do not mutate a
        bytearray/memoryview payload in between.
        """
        n = len(payload)
        if n < _LEN_CRC_SMALL:
            frame = _pack_ii(n, _crc32(payload, _LEN_CRC[n]))
        elif n <= MAX_RECORD_PAYLOAD:
            frame = _pack_ii(n, _crc32(payload, _crc32(_pack_u32(n))))
        else:
            raise JournalError(f"{self._path}: record payload of {n} bytes exceeds limit "
                               f"{MAX_RECORD_PAYLOAD}")
        buf = self._buf
        buf.append(frame)
        buf.append(payload)
        off = self._end
        self._end = off + 8 + n
        return off

    def commit(self, now_ns: int | None = None, *, defer_sync: bool = False) -> bool:
        """Write all buffered records with one write, then sync per policy.

        Returns True iff all committed data is durable by the policy (see class doc).
        With ``defer_sync`` and policy "batch" the sync is left to the caller's sync thread
        (``sync_written``, see engine.syncer) and commit returns False if data is unsynced.
        """
        if self._failed is not None:
            raise JournalError(f"{self._path}: writer failed earlier: {self._failed}")
        fd = self._fd
        if fd is None:
            raise JournalError(f"{self._path}: writer is closed")
        if self._buf:
            self._write(fd)
        policy = self._policy
        if policy == "batch":
            if defer_sync:
                return self._synced >= self._written
            if self._synced < self._written:
                self._sync(fd, now_ns)
            return True
        if policy == "never":
            return True
        if self._synced >= self._written:
            return True
        if now_ns is None:
            now_ns = time.monotonic_ns()
        last = self._last_sync_ns
        if last is None or now_ns - last >= self._interval_ns:
            self._sync(fd, now_ns)
            return True
        return False

    def _write(self, fd: int) -> None:
        if self._end > self._zero_end:
            # The write reaches past the zeroed space, where the sync thread may be writing
            # zeros: take the lock so the two never overlap.
            with self._fill_lock:
                self._write_locked(fd)
        else:
            self._write_locked(fd)

    def _write_locked(self, fd: int) -> None:
        buf = self._buf
        data = b"".join(buf)
        total = len(data)
        try:
            n = os.write(fd, data)
            if n < total:
                mv = memoryview(data)
                try:
                    while n < total:
                        w = os.write(fd, mv[n:])
                        if w <= 0:
                            raise OSError(f"write returned {w}")
                        n += w
                finally:
                    mv.release()
        except OSError as e:
            # Cut any partial record off so the file stays a valid prefix, then fail.
            self._failed = f"write error: {e}"
            try:
                os.ftruncate(fd, self._written)
                os.lseek(fd, self._written, os.SEEK_SET)
            except OSError:
                pass
            buf.clear()
            self._end = self._written
            raise JournalIOError(f"{self._path}: write failed at offset {self._written}: "
                                 f"{e}") from e
        self._written += total
        buf.clear()

    def _sync(self, fd: int, now_ns: int | None) -> None:
        self._top_up(fd, self._written)
        try:
            _fdatasync(fd)
        except OSError as e:
            self._failed = f"fdatasync error: {e}"
            raise JournalIOError(f"{self._path}: fdatasync failed: {e}") from e
        self._synced = self._written
        self._last_sync_ns = time.monotonic_ns() if now_ns is None else now_ns

    def preallocate(self, nbytes: int) -> None:
        """Keep about ``nbytes`` of written zeros ahead of the data (0 turns it off).

        Overwriting blocks that already exist on disk needs no metadata update, so each
        fdatasync is one device flush instead of two (about half the time on ext4). The
        first chunk is written here; ``sync_written`` extends it in the sync thread. Readers
        and ``recover`` treat the zeros as the end of the journal (a zero frame is never a
        valid record); ``close`` cuts them off.
        """
        self._prealloc = max(0, int(nbytes))
        if self._prealloc and self._fd is not None:
            self._extend_zeros(self._fd)
            self._sync(self._fd, None)

    def _extend_zeros(self, fd: int, most: int | None = None) -> None:
        """Write zeros from the zeroed end towards ``written + prealloc`` (at most ``most``
        bytes: the sync thread tops up in small steps, so no one sync carries much)."""
        with self._fill_lock:
            start = max(self._zero_end, self._written)
            target = self._written + self._prealloc
            if most is not None:
                target = min(target, start + most)
            while start < target:
                start += os.pwrite(fd, _ZEROS[:min(_ZERO_CHUNK, target - start)], start)
            self._zero_end = start

    def _top_up(self, fd: int, written: int) -> None:
        """Keep the preallocated zeros ahead of the data, one small step at a time."""
        if self._prealloc and self._zero_end - written < self._prealloc - _ZERO_STEP:
            try:
                self._extend_zeros(fd, _ZERO_STEP)
            except OSError as e:
                self._failed = f"preallocation error: {e}"
                raise JournalIOError(f"{self._path}: writing preallocated zeros failed: "
                                     f"{e}") from e

    def sync_written(self) -> int:
        """fdatasync everything written so far; return the end of the durable data.

        The one method meant to be called from another thread (the engine's sync thread)
        while the owning thread keeps appending and committing: it reads the written end
        before the fdatasync, so every byte below the returned offset is on stable storage.
        """
        if self._failed is not None:
            raise JournalError(f"{self._path}: writer failed earlier: {self._failed}")
        fd = self._fd
        if fd is None:
            raise JournalError(f"{self._path}: writer is closed")
        target = self._written
        self._top_up(fd, target)
        if target > self._synced:
            try:
                _fdatasync(fd)
            except OSError as e:
                self._failed = f"fdatasync error: {e}"
                raise JournalIOError(f"{self._path}: fdatasync failed: {e}") from e
            with self._fill_lock:       # several sync threads: _synced only grows
                if target > self._synced:
                    self._synced = target
        return target

    # ---- timers / lifecycle

    def sync_if_due(self, now_ns: int | None = None) -> bool:
        """("interval") fdatasync if unsynced data exists and the interval elapsed.

        Does not commit buffered records. Returns True iff it synced. No-op for "never";
        for "batch" syncs any unsynced data (normally none).
        """
        fd = self._fd
        if fd is None or self._failed is not None or self._synced >= self._written:
            return False
        if self._policy == "never":
            return False
        if now_ns is None:
            now_ns = time.monotonic_ns()
        last = self._last_sync_ns
        if self._policy == "interval" and last is not None and \
                now_ns - last < self._interval_ns:
            return False
        self._sync(fd, now_ns)
        return True

    def sync(self, now_ns: int | None = None) -> None:
        """Force fdatasync of everything written (any policy)."""
        if self._failed is not None:
            raise JournalError(f"{self._path}: writer failed earlier: {self._failed}")
        if self._fd is None:
            raise JournalError(f"{self._path}: writer is closed")
        self._sync(self._fd, now_ns)

    def close(self) -> None:
        """Commit buffered records, sync (unless policy "never"), release the file."""
        fd = self._fd
        if fd is None:
            return
        try:
            if self._failed is None:
                if self._buf:
                    self._write(fd)
                if self._zero_end > self._written:
                    os.ftruncate(fd, self._written)
                if self._policy != "never" and self._synced < self._written:
                    self._sync(fd, None)
        finally:
            self._fd = None
            os.close(fd)

    def __enter__(self) -> "JournalWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"JournalWriter({self._path!r}, policy={self._policy!r}, "
                f"offset={self._written}, synced={self._synced})")


# --------------------------------------------------------------------------- reader

class JournalReader:
    """Random-access reader for serving history while a writer appends (pread based)."""

    __slots__ = ("_fd", "_path", "_header", "_data_offset")

    def __init__(self, path: str | os.PathLike[str]):
        p = os.fspath(path)
        fd = _open_ro(p)
        try:
            self._header, self._data_offset = _read_header_fd(fd, p)
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self._path = p

    @property
    def header(self) -> JournalHeader:
        return self._header

    @property
    def data_offset(self) -> int:
        return self._data_offset

    def read_from(
        self,
        offset: int,
        max_bytes: int = 1 << 20,
        end_offset: int | None = None,
        max_records: int | None = None,
    ) -> ReadResult:
        """Read whole valid records starting at record boundary ``offset``.

        Returns records whose framed size (8 + payload) totals at most ``max_bytes`` —
        except that the first record is always returned whole even if larger, so a reader
        always progresses — and at most ``max_records``. Nothing at or beyond
        ``end_offset`` (pass the writer's ``offset``) is returned. Without ``end_offset`` the
        read stops silently at an incomplete/invalid tail (it may still be being written);
        with ``end_offset`` any invalid record before it raises JournalCorrupt.
        ``next_offset`` is the offset after the last returned record (== ``offset`` if none).
        """
        fd = self._fd
        if fd is None:
            raise JournalError(f"{self._path}: reader is closed")
        if offset < self._data_offset:
            raise JournalError(f"{self._path}: offset {offset} is inside the file header "
                               f"(records start at {self._data_offset})")
        if end_offset is not None and offset >= end_offset:
            return ReadResult([], offset)
        chunk = min(max(max_bytes, 8), 8 * _READ_CHUNK)
        if end_offset is not None:
            chunk = min(chunk, end_offset - offset)
        scan = _Scan(fd, offset, end_offset, chunk=max(chunk, 8))
        records: list[tuple[int, bytes]] = []
        total = 0
        nxt = offset
        try:
            for off, payload in scan:
                size = 8 + len(payload)
                if records and total + size > max_bytes:
                    return ReadResult(records, nxt)
                records.append((off, payload))
                total += size
                nxt = off + size
                if total >= max_bytes or (max_records is not None
                                          and len(records) >= max_records):
                    return ReadResult(records, nxt)
        except OSError as e:
            raise JournalError(f"{self._path}: read error at offset {nxt}: {e}") from e
        if end_offset is not None and scan.stop_offset < end_offset:
            raise JournalCorrupt(
                f"{self._path}: {scan.error or 'missing data'} before committed end "
                f"{end_offset}")
        return ReadResult(records, nxt)

    def close(self) -> None:
        fd = self._fd
        if fd is not None:
            self._fd = None
            os.close(fd)

    def __enter__(self) -> "JournalReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
