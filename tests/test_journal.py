"""Tests for engine.journal: format, torn-tail recovery, fsync policies, readers, crashes."""
from __future__ import annotations

import os
import random
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.journal import (
    MAGIC,
    MAX_RECORD_PAYLOAD,
    JournalCorrupt,
    JournalError,
    JournalHeader,
    JournalIOError,
    JournalReader,
    JournalWriter,
    ReadResult,
    iter_records,
    read_header,
    recover,
)

ROOT = Path(__file__).resolve().parents[1]
HDR = JournalHeader(format_version=1, release="0.1.0", config_digest="sha256:abc", created_ns=42)


def payloads(n: int, seed: int = 1, max_len: int = 200) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randrange(0, max_len)) for _ in range(n)]


def write_journal(path: Path, items: list[bytes], batch: int = 7, fsync: str = "never") -> list[int]:
    offsets = []
    with JournalWriter.open(path, HDR, fsync=fsync) as w:
        for i, p in enumerate(items):
            offsets.append(w.append(p))
            if i % batch == batch - 1:
                w.commit()
        w.commit()
        assert w.offset == os.path.getsize(path)
    return offsets


def all_records(path: Path) -> list[bytes]:
    return [p for _, p in iter_records(path)]


def frame(payload: bytes) -> bytes:
    lb = struct.pack("<I", len(payload))
    return lb + struct.pack("<I", zlib.crc32(payload, zlib.crc32(lb))) + payload


# --------------------------------------------------------------------------- format / round trip

def test_format_is_exactly_as_documented(tmp_path: Path) -> None:
    p = tmp_path / "j"
    write_journal(p, [b"hello", b""])
    raw = p.read_bytes()
    assert raw[:8] == MAGIC == b"BOURSEJ1"
    (hlen,) = struct.unpack_from("<I", raw, 8)
    hpay = raw[12:12 + hlen]
    assert struct.unpack_from("<I", raw, 12 + hlen)[0] == zlib.crc32(hpay)
    import msgspec
    assert msgspec.msgpack.decode(hpay, type=JournalHeader) == HDR
    data = raw[16 + hlen:]
    assert data == frame(b"hello") + frame(b"")
    assert read_header(p) == (HDR, 16 + hlen)


def test_round_trip_many_records(tmp_path: Path) -> None:
    p = tmp_path / "j"
    items = payloads(5000)
    offsets = write_journal(p, items)
    got = list(iter_records(p))
    assert [o for o, _ in got] == offsets
    assert [x for _, x in got] == items
    # small chunks exercise the refill paths of the scanner
    assert list(iter_records(p, chunk_size=1)) == got
    r = recover(p)
    assert (r.records_valid, r.truncated_bytes, r.end_offset) == (5000, 0, p.stat().st_size)
    assert r.header == HDR and r.tail_error is None
    # start_offset / end_offset
    assert list(iter_records(p, start_offset=offsets[4000])) == got[4000:]
    assert list(iter_records(p, offsets[10], offsets[20])) == got[10:20]


def test_large_and_empty_payloads(tmp_path: Path) -> None:
    p = tmp_path / "j"
    big = random.Random(3).randbytes(9 << 20)  # larger than the scan chunk
    items = [b"", big, b"", b"x", big[:5000], b""]
    write_journal(p, items, batch=2)
    assert all_records(p) == items
    assert recover(p).records_valid == len(items)
    with JournalReader(p) as rd:
        res = rd.read_from(rd.data_offset, max_bytes=10)
        assert [x for _, x in res.records] == [b""]
        res = rd.read_from(res.next_offset, max_bytes=10)
        assert [x for _, x in res.records] == [big]  # first record always whole


def test_oversized_payload_rejected(tmp_path: Path) -> None:
    p = tmp_path / "j"
    with JournalWriter.open(p, HDR, fsync="never") as w:
        with pytest.raises(JournalError, match="exceeds limit"):
            w.append(bytes(MAX_RECORD_PAYLOAD + 1))
        w.append(b"ok")
    assert all_records(p) == [b"ok"]


def test_header_factory_only_called_on_create(tmp_path: Path) -> None:
    p = tmp_path / "j"
    calls = []

    def factory() -> JournalHeader:
        calls.append(1)
        return HDR

    JournalWriter.open(p, factory).close()
    other = JournalHeader(1, "9.9", "other", 7)
    with JournalWriter.open(p, lambda: calls.append(2) or other) as w:
        assert w.header == HDR
    assert calls == [1]
    # an empty file is (re)created with a header
    q = tmp_path / "empty"
    q.write_bytes(b"")
    with JournalWriter.open(q, other) as w:
        assert w.header == other
    assert read_header(q)[0] == other
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".creating")]


# --------------------------------------------------------------------------- torn tails

def _expect_prefix(p: Path, items: list[bytes], offsets: list[int], cut: int) -> None:
    complete = [i for i, o in enumerate(offsets) if o + 8 + len(items[i]) <= cut]
    k = len(complete)
    boundary = offsets[k] if k < len(offsets) else cut
    r = recover(p)
    assert r.records_valid == k, cut
    assert r.end_offset == boundary
    assert r.truncated_bytes == cut - boundary
    assert (r.tail_error is None) == (cut == boundary)
    assert p.stat().st_size == boundary
    assert all_records(p) == items[:k]


def test_torn_tail_every_cut_point_of_last_two_records(tmp_path: Path) -> None:
    src = tmp_path / "src"
    items = payloads(6, seed=5, max_len=40) + [b"A" * 33, b"B" * 21]
    offsets = write_journal(src, items)
    raw = src.read_bytes()
    p = tmp_path / "j"
    for cut in range(offsets[-2], len(raw) + 1):
        p.write_bytes(raw[:cut])
        _expect_prefix(p, items, offsets, cut)


def test_bit_flip_in_last_record_truncates_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    items = payloads(5, seed=9, max_len=50) + [b"last record payload"]
    offsets = write_journal(src, items)
    raw = src.read_bytes()
    p = tmp_path / "j"
    for pos in range(offsets[-1], len(raw)):
        for bit in (0x01, 0x80):
            bad = bytearray(raw)
            bad[pos] ^= bit
            p.write_bytes(bad)
            r = recover(p)
            assert r.records_valid == 5, pos
            assert r.end_offset == offsets[-1]
            assert r.truncated_bytes == len(raw) - offsets[-1]
            assert all_records(p) == items[:5]


@pytest.mark.parametrize("tail", [
    bytes(4096),                                 # preallocated zeros
    bytes(3),                                    # zeros shorter than a frame
    random.Random(11).randbytes(1000),           # garbage
    struct.pack("<II", 0xFFFFFFFF, 0) + b"xx",   # absurd length
    struct.pack("<II", 5, 0) + b"abcde",         # complete frame, wrong CRC
])
def test_tail_garbage_truncated_then_append_works(tmp_path: Path, tail: bytes) -> None:
    p = tmp_path / "j"
    items = payloads(50, seed=2)
    offsets = write_journal(p, items)
    end = p.stat().st_size
    with open(p, "ab") as f:
        f.write(tail)
    assert all_records(p) == items  # readers never see garbage, file untouched
    assert p.stat().st_size == end + len(tail)
    r = recover(p)
    assert (r.records_valid, r.end_offset, r.truncated_bytes) == (50, end, len(tail))
    assert r.tail_error
    with JournalWriter.open(p, HDR, fsync="batch", end_offset=r.end_offset) as w:
        assert w.offset == end
        new_off = w.append(b"after recovery")
        assert new_off == end
        w.append(b"")
        assert w.commit()
    assert all_records(p) == items + [b"after recovery", b""]
    assert recover(p).truncated_bytes == 0


def test_zero_filled_record_region_is_invalid(tmp_path: Path) -> None:
    # A record whose bytes were never written (zeros) after a valid header.
    p = tmp_path / "j"
    write_journal(p, [])
    with open(p, "ab") as f:
        f.write(bytes(8))
    r = recover(p)
    assert r.records_valid == 0 and r.truncated_bytes == 8 and "CRC" in r.tail_error


def test_max_truncate_bytes_guard(tmp_path: Path) -> None:
    p = tmp_path / "j"
    write_journal(p, [b"a", b"b"])
    size = p.stat().st_size
    with open(p, "ab") as f:
        f.write(b"\xff" * 100)
    with pytest.raises(JournalCorrupt, match="refusing to truncate") as ei:
        recover(p, max_truncate_bytes=10)
    assert str(p) in str(ei.value)
    assert p.stat().st_size == size + 100
    assert recover(p, max_truncate_bytes=100).truncated_bytes == 100


def test_recover_on_record_callback(tmp_path: Path) -> None:
    p = tmp_path / "j"
    items = payloads(30)
    offsets = write_journal(p, items)
    seen: list[tuple[int, bytes]] = []
    r = recover(p, on_record=lambda o, b: seen.append((o, b)))
    assert seen == list(zip(offsets, items)) and r.records_valid == 30


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.binary(max_size=64), min_size=1, max_size=12), data=st.data())
def test_hypothesis_any_cut_keeps_exact_prefix(tmp_path: Path, items: list[bytes],
                                               data: st.DataObject) -> None:
    p = tmp_path / "h"
    if p.exists():
        p.unlink()
    offsets = write_journal(p, items, batch=3)
    raw = p.read_bytes()
    cut = data.draw(st.integers(min_value=offsets[0], max_value=len(raw)))
    p.write_bytes(raw[:cut])
    _expect_prefix(p, items, offsets, cut)


# --------------------------------------------------------------------------- header errors

def _corrupt(p: Path, pos: int, value: bytes) -> None:
    raw = bytearray(p.read_bytes())
    raw[pos:pos + len(value)] = value
    p.write_bytes(bytes(raw))


@pytest.mark.parametrize("mutate,match", [
    (lambda p: _corrupt(p, 0, b"X"), "bad magic at offset 0"),
    (lambda p: _corrupt(p, 14, b"\x00"), "header CRC mismatch at offset"),
    (lambda p: _corrupt(p, 8, b"\xff\xff\xff\x7f"), "bad header length"),
    (lambda p: p.write_bytes(p.read_bytes()[:20]), "truncated journal header"),
    (lambda p: p.write_bytes(b"BOURS"), "truncated journal header"),
    (lambda p: p.write_bytes(b""), "empty"),
])
def test_corrupt_header_raises_with_file_name(tmp_path: Path, mutate, match: str) -> None:
    p = tmp_path / "journal.bin"
    write_journal(p, [b"a", b"b"])
    mutate(p)
    before = p.read_bytes()
    for fn in (recover, read_header, JournalReader, lambda q: list(iter_records(q))):
        with pytest.raises(JournalCorrupt, match=match) as ei:
            fn(p)
        assert str(p) in str(ei.value)
    if before:
        with pytest.raises(JournalCorrupt, match=match):
            JournalWriter.open(p, HDR)
    assert p.read_bytes() == before  # never modified


def test_unsupported_version_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "j"
    JournalWriter.open(p, JournalHeader(2, "x", "y", 0)).close()
    with pytest.raises(JournalError, match="unsupported journal format_version 2") as ei:
        recover(p)
    assert not isinstance(ei.value, JournalCorrupt)
    with pytest.raises(JournalError, match="does not exist"):
        recover(tmp_path / "nope")
    with pytest.raises(JournalError, match="does not exist"):
        JournalReader(tmp_path / "nope")


# --------------------------------------------------------------------------- writer behaviour

def test_single_writer_lock_and_end_offset_check(tmp_path: Path) -> None:
    p = tmp_path / "j"
    w = JournalWriter.open(p, HDR, fsync="never")
    with pytest.raises(JournalError, match="locked"):
        JournalWriter.open(p, HDR)
    with pytest.raises(JournalError, match="locked"):
        recover(p)
    w.append(b"x")
    w.close()
    assert w.closed
    with pytest.raises(JournalError, match="closed"):
        w.commit()
    size = p.stat().st_size
    with pytest.raises(JournalError, match="run recover"):
        JournalWriter.open(p, HDR, end_offset=size - 1)
    with JournalWriter.open(p, HDR, end_offset=size) as w2:
        assert w2.offset == size
    with pytest.raises(JournalError, match="unknown fsync policy"):
        JournalWriter.open(p, HDR, fsync="sometimes")


def test_append_returns_offsets_and_commit_is_one_write(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "j"
    w = JournalWriter.open(p, HDR, fsync="never")
    writes: list[int] = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, b: writes.append(len(b)) or real_write(fd, b))
    start = w.offset
    offs = [w.append(b"x" * i) for i in range(100)]
    assert offs[0] == start and offs[1] == start + 8 and offs[2] == start + 17
    assert w.offset == start and w.pending_bytes == sum(8 + i for i in range(100))
    w.commit()
    assert writes == [w.offset - start] and w.pending_bytes == 0
    w.commit()  # nothing buffered: no syscall
    assert len(writes) == 1
    w.close()


def test_write_failure_poisons_writer_and_keeps_valid_prefix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "j"
    w = JournalWriter.open(p, HDR, fsync="never")
    w.append(b"good")
    w.commit()
    good_end = w.offset
    real_write = os.write

    def half_then_fail(fd: int, b) -> int:  # partial write followed by ENOSPC
        if len(b) > 10:
            return real_write(fd, bytes(b)[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    w.append(b"y" * 50)
    with pytest.raises(JournalIOError, match="write failed") as ei:
        w.commit()
    assert str(p) in str(ei.value)
    assert isinstance(ei.value, OSError) and isinstance(ei.value, JournalError)
    monkeypatch.setattr(os, "write", real_write)
    with pytest.raises(JournalError, match="failed earlier"):
        w.commit()
    w.close()
    assert p.stat().st_size == good_end
    assert all_records(p) == [b"good"]


def test_fdatasync_failure_poisons_writer(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    w = JournalWriter.open(tmp_path / "j", HDR, fsync="batch")

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio, raising=False)
    monkeypatch.setattr(os, "fsync", eio)
    w.append(b"x")
    with pytest.raises(OSError, match="fdatasync failed"):
        w.commit()
    monkeypatch.undo()
    assert w.synced_offset < w.offset
    w.append(b"y")
    with pytest.raises(JournalError, match="failed earlier"):
        w.commit()
    with pytest.raises(JournalError, match="failed earlier"):
        w.sync()
    w.close()


class SyncCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.file = 0
        self.dirs = 0
        real_fsync = os.fsync
        real_fdatasync = getattr(os, "fdatasync", None)

        def fsync(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                self.dirs += 1
            else:
                self.file += 1
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.file += 1
            (real_fdatasync or real_fsync)(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync, raising=False)


def test_creation_fsyncs_file_and_directory(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    c = SyncCounter(monkeypatch)
    JournalWriter.open(tmp_path / "j", HDR, fsync="never").close()
    assert c.file >= 1 and c.dirs >= 1


def test_fsync_policy_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = JournalWriter.open(tmp_path / "j", HDR, fsync="batch")
    c = SyncCounter(monkeypatch)
    for i in range(5):
        w.append(b"r%d" % i)
        w.append(b"s")
        assert w.commit() is True
        assert c.file == i + 1 and w.synced_offset == w.offset
    assert w.commit() is True and c.file == 5  # nothing new: no sync
    w.close()
    assert c.file == 5


def test_fsync_policy_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = JournalWriter.open(tmp_path / "j", HDR, fsync="interval", fsync_interval_ms=5)
    c = SyncCounter(monkeypatch)
    ms = 1_000_000
    assert w.sync_deadline_ns is None
    w.append(b"a")
    assert w.commit(now_ns=100 * ms) is True and c.file == 1  # first sync due at once
    w.append(b"b")
    assert w.commit(now_ns=101 * ms) is False and c.file == 1
    assert w.synced_offset < w.offset
    assert w.sync_deadline_ns == 105 * ms
    assert w.sync_if_due(now_ns=104 * ms) is False and c.file == 1
    assert w.sync_if_due(now_ns=105 * ms) is True and c.file == 2
    assert w.synced_offset == w.offset and w.sync_deadline_ns is None
    assert w.sync_if_due(now_ns=200 * ms) is False and c.file == 2  # nothing unsynced
    assert w.commit(now_ns=106 * ms) is True and c.file == 2        # nothing unsynced
    for t in range(106, 110):
        w.append(b"c")
        assert w.commit(now_ns=t * ms) is False
    assert c.file == 2
    w.append(b"d")
    assert w.commit(now_ns=110 * ms) is True and c.file == 3
    w.append(b"e")
    w.commit(now_ns=111 * ms)
    w.close()  # close syncs outstanding data
    assert c.file == 4


def test_fsync_policy_never(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = SyncCounter(monkeypatch)
    w = JournalWriter.open(tmp_path / "j", HDR, fsync="never")
    created = c.file
    for i in range(20):
        w.append(b"x")
        assert w.commit(now_ns=i * 10**9) is True
        assert w.sync_if_due(now_ns=i * 10**9) is False
    w.close()
    assert c.file == created
    assert w.synced_offset < w.offset


# --------------------------------------------------------------------------- reader

def test_reader_follows_writer_and_respects_end_offset(tmp_path: Path) -> None:
    p = tmp_path / "j"
    w = JournalWriter.open(p, HDR, fsync="never")
    rd = JournalReader(p)
    assert rd.header == HDR
    items = payloads(2000, seed=4)
    got: list[bytes] = []
    pos = rd.data_offset
    rnd = random.Random(8)
    i = 0
    while i < len(items) or pos < w.offset:
        for _ in range(rnd.randrange(0, 30)):
            if i < len(items):
                w.append(items[i])
                i += 1
        # buffered but uncommitted records are invisible
        assert rd.read_from(w.offset, 1 << 20, end_offset=w.offset).records == []
        w.commit()
        res = rd.read_from(pos, max_bytes=rnd.randrange(1, 3000), end_offset=w.offset)
        assert isinstance(res, ReadResult)
        if res.records:
            assert res.records[0][0] == pos
        for off, payload in res.records:
            assert off + 8 + len(payload) <= w.offset
            got.append(payload)
        pos = res.next_offset
    assert got == items
    w.close()
    rd.close()


def test_reader_bounds(tmp_path: Path) -> None:
    p = tmp_path / "j"
    items = [bytes([i]) * 10 for i in range(10)]  # 18 bytes framed each
    offsets = write_journal(p, items)
    end = p.stat().st_size
    with JournalReader(p) as rd:
        res = rd.read_from(offsets[0], max_bytes=18 * 3 + 17)
        assert [o for o, _ in res.records] == offsets[:3] and res.next_offset == offsets[3]
        res = rd.read_from(offsets[0], max_bytes=1 << 20, max_records=4)
        assert len(res.records) == 4 and res.next_offset == offsets[4]
        res = rd.read_from(offsets[2], max_bytes=1 << 20, end_offset=offsets[5])
        assert [x for _, x in res.records] == items[2:5] and res.next_offset == offsets[5]
        assert rd.read_from(end, 100, end_offset=end) == ([], end)
        assert rd.read_from(end, 100) == ([], end)
        # end_offset not on a record boundary: committed data is inconsistent
        with pytest.raises(JournalCorrupt, match="before committed end") as ei:
            rd.read_from(offsets[0], 1 << 20, end_offset=offsets[3] + 5)
        assert str(p) in str(ei.value)
        with pytest.raises(JournalError, match="inside the file header"):
            rd.read_from(0, 100)
    # a partially written record at the tail is never returned
    with open(p, "ab") as f:
        f.write(frame(b"partial record")[:-3])
    with JournalReader(p) as rd:
        res = rd.read_from(offsets[8], 1 << 20)
        assert [x for _, x in res.records] == items[8:] and res.next_offset == end
        assert rd.read_from(end, 1 << 20) == ([], end)
        with pytest.raises(JournalCorrupt):
            rd.read_from(end, 1 << 20, end_offset=end + 10)
    # corruption inside the committed range is an error, not silently skipped
    _corrupt(p, offsets[5] + 9, b"\x00")
    with JournalReader(p) as rd:
        with pytest.raises(JournalCorrupt, match="CRC mismatch at offset %d" % offsets[5]):
            rd.read_from(offsets[0], 1 << 20, end_offset=end)
        res = rd.read_from(offsets[0], 1 << 20)  # unbounded: stops before bad record
        assert [x for _, x in res.records] == items[:5]


# --------------------------------------------------------------------------- crash test

CHILD = r"""
import random, sys
from engine.journal import JournalHeader, JournalWriter
path, policy = sys.argv[1], sys.argv[2]
w = JournalWriter.open(path, JournalHeader(1, "t", "d", 0), fsync=policy)
rnd = random.Random(7)
i = 0
while True:
    for _ in range(rnd.randrange(1, 40)):
        w.append(i.to_bytes(8, "little") * rnd.randrange(1, 200))
        i += 1
    w.commit()
    sys.stdout.write("%d\n" % i)
    sys.stdout.flush()
"""


@pytest.mark.parametrize("policy", ["batch", "never"])
def test_sigkill_mid_run_loses_no_committed_record(tmp_path: Path, policy: str) -> None:
    p = tmp_path / "crash.j"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(p), policy],
                            stdout=subprocess.PIPE, cwd=str(ROOT), env=env)
    reported = 0
    deadline = time.monotonic() + 15
    try:
        assert proc.stdout is not None
        target = random.Random().randrange(2000, 6000)
        while reported < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            reported = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert reported > 0
    r = recover(p)
    assert r.records_valid >= reported
    for k, (_, payload) in enumerate(iter_records(p)):
        assert len(payload) % 8 == 0 and payload == k.to_bytes(8, "little") * (len(payload) // 8)
    assert k + 1 == r.records_valid
    # the recovered journal accepts new appends
    with JournalWriter.open(p, HDR, end_offset=r.end_offset) as w:
        w.append(b"resumed")
        w.commit()
    assert all_records(p)[-1] == b"resumed"
