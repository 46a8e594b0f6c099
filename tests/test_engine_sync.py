"""The journal's sync thread and preallocated zeros, and the server releasing only durable
batches (engine.syncer, JournalWriter.preallocate/sync_written, EngineServer._durable)."""
from __future__ import annotations

import asyncio
import os
import random
import threading

import pytest

from bourse.config import load_config
from engine.client import EngineLink
from engine.commands import NewOrder
from engine.journal import (
    JournalHeader, JournalIOError, JournalWriter, iter_records, recover,
)
from engine.link import Ack, Disconnect, Events
from engine.server import EngineServer
from engine.syncer import BackgroundSync
from tests.procs import write_config

HDR = JournalHeader(format_version=1, release="0.1.0", config_digest="sha256:abc", created_ns=42)


def _payloads(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randrange(0, 3000)) for _ in range(n)]


def test_preallocated_zeros_are_the_end_of_the_journal(tmp_path):
    p = tmp_path / "j"
    items = _payloads(200, 1)
    w = JournalWriter.open(p, HDR, fsync="batch")
    w.preallocate(64 << 10)
    for x in items:
        w.append(x)
        w.commit(defer_sync=True)
    assert w.sync_written() == w.offset
    assert os.path.getsize(p) > w.offset               # zeros ahead of the data
    assert [x for _, x in iter_records(p)] == items    # readers stop at the zeros
    end = w.offset
    # a crash leaves the zeros: recovery cuts them, and says they were not a torn write
    w._fd, fd = None, w._fd
    os.close(fd)
    r = recover(p)
    assert (r.records_valid, r.end_offset, r.zero_tail) == (200, end, True)
    assert r.truncated_bytes > 0 and os.path.getsize(p) == end


def test_close_cuts_the_zeros(tmp_path):
    p = tmp_path / "j"
    with JournalWriter.open(p, HDR, fsync="batch") as w:
        w.preallocate(1 << 20)
        w.append(b"one")
        w.commit()
    assert os.path.getsize(p) == w.offset
    assert recover(p).truncated_bytes == 0


def test_torn_write_after_zeros_is_still_reported_as_torn(tmp_path):
    p = tmp_path / "j"
    w = JournalWriter.open(p, HDR, fsync="batch")
    w.preallocate(64 << 10)
    w.append(b"x" * 100)
    w.commit()
    end = w.offset
    with open(p, "r+b") as f:        # half a frame of a record that never completed
        f.seek(end)
        f.write(b"\x10\x00\x00")
    w._fd, fd = None, w._fd
    os.close(fd)
    r = recover(p)
    assert r.end_offset == end and not r.zero_tail and r.tail_error


def test_sync_thread_with_concurrent_appends_and_zero_top_ups(tmp_path):
    """Writes racing the sync thread's zero top-ups (a small preallocation, so the data
    often runs past the zeros) never lose or damage a record; durable offsets only grow."""
    p = tmp_path / "j"
    items = _payloads(3000, 2)
    w = JournalWriter.open(p, HDR, fsync="batch")
    w.preallocate(300 << 10)
    reported: list[int] = []

    def on_durable(offset, exc):
        assert exc is None
        reported.append(offset)

    sync = BackgroundSync(w, on_durable)
    for i, x in enumerate(items):
        w.append(x)
        w.commit(defer_sync=True)
        sync.request()
    sync.close()
    assert reported == sorted(reported) and reported[-1] == w.offset == w.synced_offset
    w.close()
    assert [x for _, x in iter_records(p)] == items
    assert recover(p).truncated_bytes == 0


def test_inline_sync_tops_up_the_zeros(tmp_path):
    p = tmp_path / "j"
    items = _payloads(2000, 3)
    w = JournalWriter.open(p, HDR, fsync="batch")
    w.preallocate(300 << 10)
    for x in items:
        w.append(x)
        assert w.commit()
        assert w.synced_offset == w.offset
    assert os.path.getsize(p) > w.offset > 2 * (300 << 10)   # the zeros moved along
    w._fd, fd = None, w._fd
    os.close(fd)
    r = recover(p)
    assert r.zero_tail and r.records_valid == len(items)
    assert [x for _, x in iter_records(p)] == items


def test_failed_fdatasync_is_reported_once_and_stops(tmp_path, monkeypatch):
    p = tmp_path / "j"
    w = JournalWriter.open(p, HDR, fsync="batch")
    got = []
    ev = threading.Event()

    def on_durable(offset, exc):
        got.append((offset, exc))
        ev.set()

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    sync = BackgroundSync(w, on_durable)
    w.append(b"lost")
    w.commit(defer_sync=True)
    sync.request()
    assert ev.wait(5)
    sync.close()
    assert len(got) == 1 and got[0][0] is None and isinstance(got[0][1], JournalIOError)
    with pytest.raises(Exception, match="failed earlier"):
        w.commit()


# --------------------------------------------------------------------------- server


def _order(i: int) -> NewOrder:
    price = 2790000 - (i % 50) * 100
    return NewOrder("S1", "FIRM1", "A1", f"S1-{i}", "SBER", 1, 2, 0, price, 10)


async def _serve(tmp_path, sync_threads=1):
    cfg = load_config(write_config(tmp_path, extra_engine=f"sync_threads = {sync_threads}\n"))
    server = EngineServer(cfg)
    server.recover()
    await server.start()
    link = await EngineLink.connect("127.0.0.1", server.order_entry_port, component="gateway",
                                    node_id="gw1", config_digest=cfg.digest)
    feed = await EngineLink.connect("127.0.0.1", server.replication_port, component="md",
                                    node_id="md1", config_digest=cfg.digest, subscribe_from=1)
    return server, link, feed


@pytest.mark.parametrize("threads", [1, 2])
def test_server_releases_only_durable_batches_in_order(tmp_path, monkeypatch, threads):
    # Checked on the loop thread at each release: the offset released so far against the
    # journal's durable end at that moment. (A sync thread's own return value is no bound
    # when there are several: a slower one can return less than one that finished first.)
    released_at: list[tuple[int, int]] = []
    orig = EngineServer._release

    def spy(self, batch):
        released_at.append((self.journal.synced_offset, self.released_offset))
        return orig(self, batch)
    monkeypatch.setattr(EngineServer, "_release", spy)

    async def main():
        server, link, feed = await _serve(tmp_path, threads)
        try:
            acked = 0
            for k in range(20):
                link.submit([_order(k * 50 + j) for j in range(50)])
                await asyncio.sleep(0)
            events = []
            while acked < 1000:
                msg = await asyncio.wait_for(link.recv(), 10)
                assert isinstance(msg, Ack), msg
                acked += msg.count
            while not events or events[-1].seq < server.released_next_event - 1:
                msg = await asyncio.wait_for(feed.recv(), 10)
                if isinstance(msg, Events):
                    events.extend(msg.events)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            # nothing was ever released beyond what the sync thread had made durable
            assert released_at and all(rel <= synced for synced, rel in released_at)
            assert server.released_offset == server.journal.synced_offset
        finally:
            await link.close()
            await feed.close()
            await server.close()
    asyncio.run(main())


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_server_fail_stops_when_a_sync_fails(tmp_path, monkeypatch, threads):
    async def main():
        server, link, feed = await _serve(tmp_path, threads)
        try:
            link.submit([_order(1)])
            msg = await asyncio.wait_for(link.recv(), 10)
            assert isinstance(msg, Ack)
            released = server.released_next_event

            def broken(fd):
                raise OSError(5, "Input/output error")
            monkeypatch.setattr(os, "fdatasync", broken)
            link.submit([_order(2)])
            msg = await asyncio.wait_for(link.recv(), 10)
            assert isinstance(msg, Disconnect) and "journal" in msg.reason
            assert server.failed is not None
            assert server.released_next_event == released       # the order was never released
        finally:
            await link.close()
            await feed.close()
            await server.close()
    asyncio.run(main())


def test_used_ids_set():
    from engine.idset import UsedIds
    u = UsedIds()
    ids = [f"C{i}" for i in range(20000)] + ["", "é", "x" * 300]
    assert all(u.add_new(x) for x in ids)
    assert not any(u.add_new(x) for x in ids)
    assert len(u) == len(ids) and sorted(u) == sorted(ids)
    assert "C5" in u and "C20000" not in u
