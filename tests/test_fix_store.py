"""Tests for fix_gateway.store: the store contract, persistence, torn tails, SIGKILL."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fix_gateway.store import (
    LOG_MAGIC,
    LOG_NAME,
    SEQ_NAME,
    FileStore,
    MemoryStore,
    StoreCorrupt,
    StoreLocked,
)

ROOT = Path(__file__).resolve().parents[1]


def data(seq: int) -> bytes:
    return b"8=FIX.4.4\x019=5\x0135=8\x0134=%d\x0110=000\x01" % seq


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    if request.param == "memory":
        s = MemoryStore(created_ns=5)
    else:
        s = FileStore(str(tmp_path / "s"), now_ns=5)
    yield s
    s.close()


# ------------------------------------------------------------------------------ contract

def test_fresh_store(store):
    assert store.next_sender_seq == 1 and store.next_target_seq == 1
    assert store.created_ns == 5
    assert list(store.get_range(1, 0)) == []
    assert store.last_saved_seq() == 0


def test_save_and_range(store):
    for seq in (1, 2, 4, 7):
        store.save_sent(seq, data(seq))
    assert store.next_sender_seq == 8
    assert [s for s, _ in store.get_range(1, 0)] == [1, 2, 4, 7]
    assert [s for s, _ in store.get_range(2, 4)] == [2, 4]
    assert [s for s, _ in store.get_range(3, 6)] == [4]
    assert [s for s, _ in store.get_range(5, 0, limit=1)] == [7]
    assert [s for s, _ in store.get_range(1, 0, limit=2)] == [1, 2]
    assert list(store.get_range(8, 0)) == []
    assert dict(store.get_range(1, 0))[4] == data(4)


def test_seq_numbers(store):
    store.set_next_sender_seq(10)
    store.set_next_target_seq(20)
    assert (store.next_sender_seq, store.next_target_seq) == (10, 20)
    store.save_sent(10, data(10))
    assert store.next_sender_seq == 11
    with pytest.raises(ValueError):
        store.set_next_target_seq(0)


def test_rewind_forgets_higher_entries(store):
    for seq in range(1, 6):
        store.save_sent(seq, data(seq))
    store.save_sent(3, b"again")
    assert [s for s, _ in store.get_range(1, 0)] == [1, 2, 3]
    assert dict(store.get_range(3, 3))[3] == b"again"


def test_reset(store):
    store.save_sent(1, data(1))
    store.set_next_target_seq(9)
    store.reset(77)
    assert (store.next_sender_seq, store.next_target_seq, store.created_ns) == (1, 1, 77)
    assert list(store.get_range(1, 0)) == []
    store.save_sent(1, data(1))
    assert [s for s, _ in store.get_range(1, 0)] == [1]


def test_get_range_is_lazy(store):
    for seq in range(1, 101):
        store.save_sent(seq, data(seq))
    it = store.get_range(1, 0)
    assert next(it)[0] == 1
    store.save_sent(101, data(101))  # the iterator reads record by record from the index
    assert len(list(it)) == 100


# ---------------------------------------------------------------------------- FileStore

def test_reopen_keeps_everything(tmp_path):
    d = str(tmp_path / "s")
    with FileStore(d, now_ns=3) as s:
        for seq in range(1, 51):
            s.save_sent(seq, data(seq))
        s.set_next_sender_seq(60)
        s.set_next_target_seq(33)
    with FileStore(d, now_ns=999) as s:
        assert (s.next_sender_seq, s.next_target_seq, s.created_ns) == (60, 33, 3)
        assert [x for x, _ in s.get_range(1, 0)] == list(range(1, 51))
        assert all(v == data(k) for k, v in s.get_range(1, 0))


def test_sender_seq_recovered_from_log(tmp_path):
    d = str(tmp_path / "s")
    with FileStore(d) as s:
        s.set_next_sender_seq(5)
        s.save_sent(5, data(5))
        s.save_sent(6, data(6))  # only the log knows about these
    with FileStore(d) as s:
        assert s.next_sender_seq == 7


def test_torn_tail_is_cut(tmp_path):
    d = str(tmp_path / "s")
    with FileStore(d) as s:
        for seq in range(1, 4):
            s.save_sent(seq, data(seq))
    log = os.path.join(d, LOG_NAME)
    good_size = os.path.getsize(log)
    for tail in (b"\x05", struct.pack("<II", 100, 0) + b"partial", b"\0" * 64):
        with open(log, "ab") as f:
            f.write(tail)
        with FileStore(d) as s:
            assert [x for x, _ in s.get_range(1, 0)] == [1, 2, 3]
            assert s.next_sender_seq == 4
        assert os.path.getsize(log) == good_size
    with FileStore(d) as s:
        s.save_sent(4, data(4))
    with FileStore(d) as s:
        assert [x for x, _ in s.get_range(1, 0)] == [1, 2, 3, 4]


def test_corrupt_record_ends_the_valid_prefix(tmp_path):
    d = str(tmp_path / "s")
    with FileStore(d) as s:
        for seq in range(1, 6):
            s.save_sent(seq, data(seq))
    log = os.path.join(d, LOG_NAME)
    raw = bytearray(Path(log).read_bytes())
    rec = 8 + 8 + len(data(1))
    raw[len(LOG_MAGIC) + 2 * rec + 20] ^= 0xFF  # inside record 3
    Path(log).write_bytes(bytes(raw))
    with FileStore(d) as s:
        assert [x for x, _ in s.get_range(1, 0)] == [1, 2]


def test_read_detects_corruption_after_open(tmp_path):
    d = str(tmp_path / "s")
    with FileStore(d) as s:
        s.save_sent(1, data(1))
        log = os.path.join(d, LOG_NAME)
        with open(log, "r+b") as f:
            f.seek(len(LOG_MAGIC) + 20)
            f.write(b"\x00")
        with pytest.raises(StoreCorrupt):
            list(s.get_range(1, 0))


def test_torn_seqnum_slot_falls_back_to_the_other(tmp_path):
    d = str(tmp_path / "s")
    with FileStore(d) as s:
        s.set_next_target_seq(7)   # generation 2 -> slot 0
        s.set_next_target_seq(8)   # generation 3 -> slot 1
    path = os.path.join(d, SEQ_NAME)
    raw = bytearray(Path(path).read_bytes())
    raw[64 + 10] ^= 0xFF           # tear the newest slot
    Path(path).write_bytes(bytes(raw))
    with FileStore(d) as s:
        assert s.next_target_seq == 7


def test_not_a_store(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / LOG_NAME).write_bytes(b"something else entirely")
    with pytest.raises(StoreCorrupt):
        FileStore(str(d))
    (d / LOG_NAME).unlink()
    (d / SEQ_NAME).write_bytes(b"\x01" * 128)
    with pytest.raises(StoreCorrupt):
        FileStore(str(d))


def test_single_writer_lock(tmp_path):
    d = str(tmp_path / "s")
    with FileStore(d):
        with pytest.raises(StoreLocked):
            FileStore(d)
    FileStore(d).close()


def test_reset_archives_the_log(tmp_path):
    d = str(tmp_path / "s")
    with FileStore(d, now_ns=10) as s:
        s.save_sent(1, data(1))
        s.reset(20)
        assert os.listdir(os.path.join(d, "archive")) == ["messages-10-20.log"]
        s.save_sent(1, b"new")
    with FileStore(d) as s:
        assert dict(s.get_range(1, 0)) == {1: b"new"}
        assert s.created_ns == 20
    with FileStore(d, archive=False) as s:
        s.reset(30)
        assert len(os.listdir(os.path.join(d, "archive"))) == 1


def test_fsync_always_and_bad_policy(tmp_path):
    with FileStore(str(tmp_path / "a"), fsync="always") as s:
        s.save_sent(1, data(1))
        s.set_next_target_seq(2)
        s.reset(1)
        s.sync()
    with pytest.raises(ValueError):
        FileStore(str(tmp_path / "b"), fsync="sometimes")


def test_record_format_is_as_documented(tmp_path):
    d = str(tmp_path / "s")
    with FileStore(d) as s:
        s.save_sent(3, b"abc")
    raw = Path(d, LOG_NAME).read_bytes()
    assert raw[:8] == LOG_MAGIC
    n, crc = struct.unpack_from("<II", raw, 8)
    payload = raw[16:16 + n]
    assert payload == struct.pack("<Q", 3) + b"abc"
    assert crc == zlib.crc32(payload, zlib.crc32(raw[8:12]))


WRITER = textwrap.dedent("""
    import sys
    from fix_gateway.store import FileStore
    s = FileStore(sys.argv[1])
    seq = s.next_sender_seq
    while True:
        s.save_sent(seq, (b"msg-%d-" % seq) * (1 + seq % 7))
        s.set_next_target_seq(seq + 1)
        if seq % 100 == 0:
            print(seq, flush=True)
        seq += 1
""")


def test_survives_sigkill(tmp_path):
    d = str(tmp_path / "s")
    for _round in range(2):
        p = subprocess.Popen([sys.executable, "-c", WRITER, d], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
        acked = 0
        deadline = time.monotonic() + 10
        while acked < 300 * (_round + 1) and time.monotonic() < deadline:
            acked = int(p.stdout.readline())
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        with FileStore(d) as s:
            seqs = [x for x, _ in s.get_range(1, 0)]
            assert seqs == list(range(1, len(seqs) + 1))
            assert len(seqs) >= acked
            assert all(v == (b"msg-%d-" % k) * (1 + k % 7) for k, v in s.get_range(1, 0))
            assert s.next_sender_seq == len(seqs) + 1
            assert s.next_target_seq in (len(seqs), len(seqs) + 1)


# ------------------------------------------------------------------ model-based property

ops = st.lists(st.one_of(
    st.tuples(st.just("save"), st.integers(1, 40), st.binary(max_size=30)),
    st.tuples(st.just("sender"), st.integers(1, 60)),
    st.tuples(st.just("target"), st.integers(1, 60)),
    st.tuples(st.just("reset"), st.integers(0, 10**9)),
    st.tuples(st.just("reopen"),),
), max_size=40)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_file_store_behaves_like_memory_store(tmp_path_factory, program):
    d = str(tmp_path_factory.mktemp("model"))
    model = MemoryStore(created_ns=0)
    real = FileStore(d, now_ns=0)
    try:
        for op in program:
            if op[0] == "save":
                model.save_sent(op[1], op[2])
                real.save_sent(op[1], op[2])
            elif op[0] == "sender":
                model.set_next_sender_seq(op[1])
                real.set_next_sender_seq(op[1])
            elif op[0] == "target":
                model.set_next_target_seq(op[1])
                real.set_next_target_seq(op[1])
            elif op[0] == "reset":
                model.reset(op[1])
                real.reset(op[1])
            else:
                real.close()
                real = FileStore(d)
                # a reopen may only raise the sender seq (to just above the last saved seq)
                model.set_next_sender_seq(max(model.next_sender_seq, model.last_saved_seq() + 1))
            assert list(real.get_range(1, 0)) == list(model.get_range(1, 0))
            assert real.next_target_seq == model.next_target_seq
            assert real.created_ns == model.created_ns
            assert real.next_sender_seq == model.next_sender_seq
    finally:
        real.close()
