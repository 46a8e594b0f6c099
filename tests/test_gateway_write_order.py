"""The gateway's write order at the end of a loop iteration, without sockets or an engine
process: every message reaches its session's store file before its connection's transport
gets it, inbound sequence numbers and the reported-event watermark are on disk once the
iteration ends, and only the sessions with something to write are touched."""
from __future__ import annotations

import struct
import time
import zlib

import msgspec
from hypothesis import given, settings, strategies as st

from bench.gateway_inprocess import StubLink, StubLoop, StubTransport
from bourse.config import load_config
from engine.commands import NewOrder, SequencedCommand
from engine.core import Engine
from fix_gateway.codec import encode
from fix_gateway.gateway import Gateway, _FixConnection

STAMP = b"20261123-10:00:00.000"


class Transport(StubTransport):
    """Checks, at every write, that each message written is already in the store file."""

    def __init__(self, store_dir) -> None:
        super().__init__()
        self.store_dir = store_dir
        self.checked = 0
        self.write = self.check_and_keep    # instead of the plain append

    def check_and_keep(self, data: bytes) -> None:
        log = (self.store_dir / "messages.log").read_bytes()
        for msg in data.split(b"8=FIX.4.4\x01")[1:]:
            msg = b"8=FIX.4.4\x01" + msg
            if b"\x0135=8\x01" in msg:          # application messages are stored
                assert msg in log, "a message reached the socket before its store"
                self.checked += 1
        self.written.append(data)


def slot_on_disk(path) -> tuple[int, int]:
    """(next_sender_seq, next_target_seq) of the newest valid slot of a seqnums file."""
    raw = path.read_bytes()
    best = None
    for k in range(2):
        body = raw[k * 64:k * 64 + 32]
        (crc,) = struct.unpack_from("<I", raw, k * 64 + 32)
        if any(body) and crc == zlib.crc32(body):
            gen, sender, target, _ = struct.unpack("<QQQQ", body)
            if best is None or gen > best[0]:
                best = (gen, sender, target)
    return best[1], best[2]


def nos(sender: str, seq: int, clid: str, side: int, price: str) -> bytes:
    return encode("D", [(11, clid), (1, "F1-001"), (55, "SBER"), (54, side), (60, STAMP),
                        (38, 10), (40, 2), (44, price)],
                  sender=sender, target="BOURSE", seq=seq, sending_time=_now_stamp())


def _now_stamp() -> bytes:
    t = time.time()
    return (time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t))
            + f".{int(t * 1000) % 1000:03d}").encode()


def test_messages_are_stored_before_they_are_written_and_state_is_on_disk(tmp_path):
    cfg = load_config(None)
    gcfg = msgspec.structs.replace(cfg.gateway(), store_dir=str(tmp_path))
    gw = Gateway(cfg, gcfg)
    gw.open_sessions()
    loop = StubLoop()
    gw._loop = loop
    gw.link = StubLink()
    gw.engine_up.set()
    conns = {}
    for name in ("BROKER1", "BROKER2"):
        conn = _FixConnection(gw)
        conn.transport = Transport(tmp_path / name)
        conn.peer, conn.peer_host = "127.0.0.1:1", "127.0.0.1"
        conn.data_received(encode("A", [(98, 0), (108, 30)], sender=name, target="BOURSE",
                                  seq=1, sending_time=_now_stamp()))
        loop.run()
        conns[name] = conn
    assert all(b"\x0135=A\x01" in b"".join(c.transport.written) for c in conns.values())
    idle = (tmp_path / "BROKER3" / "messages.log").read_bytes()

    # BROKER1 sends three orders in one read and two in the next; BROKER2 stays quiet
    c1 = conns["BROKER1"]
    c1.data_received(b"".join(nos("BROKER1", 2 + i, f"o{i}", 1, "279.00") for i in range(3)))
    loop.run()
    assert slot_on_disk(tmp_path / "BROKER1" / "seqnums")[1] == 2   # held: not acknowledged
    c1.data_received(b"".join(nos("BROKER1", 5 + i, f"p{i}", 2, "281.00") for i in range(2)))
    loop.run()

    engine = Engine(cfg.market)
    last_event = 0
    for first, cmds in gw.link.batches:
        assert all(isinstance(c, NewOrder) for c in cmds)
        events = []
        for k, cmd in enumerate(cmds):
            seq = engine.next_cmd_seq
            events += engine.apply(SequencedCommand(seq, time.time_ns(), gcfg.node_id,
                                                    first + k, cmd))
        gw._on_events(events)
        gw._release_range(first, len(cmds))
        loop.run()
        last_event = events[-1].seq
        # at the end of the iteration: inbound seq and watermark are in the files
        assert slot_on_disk(tmp_path / "BROKER1" / "seqnums")[1] == 2 + sum(
            len(c) for f, c in gw.link.batches if f <= first)
        assert struct.unpack("<Q", (tmp_path / "reported.seq").read_bytes()[:8])[0] \
            == last_event

    assert c1.transport.checked == 5                     # five ExecutionReports, all checked
    assert b"".join(conns["BROKER2"].transport.written).count(b"\x0135=8\x01") == 0
    assert (tmp_path / "BROKER3" / "messages.log").read_bytes() == idle
    sender, _ = slot_on_disk(tmp_path / "BROKER1" / "seqnums")
    assert sender >= 2          # the Logon's seq at least; the log implies the rest on open
    for slot in gw.slots.values():
        slot.fix.store.close()
    gw._watermark_map.close()


def test_inbound_seq_is_persisted_only_below_the_oldest_unacknowledged_message(tmp_path):
    """A message whose command the engine has not acknowledged must be asked for again after
    a restart: the next inbound MsgSeqNum on disk stays at the oldest one still held."""
    from fix_gateway.gateway import _InboundStore
    from fix_gateway.store import FileStore

    store = _InboundStore(FileStore(str(tmp_path / "s"), group_commit=True))
    on_disk = lambda: slot_on_disk(tmp_path / "s" / "seqnums")[1]   # noqa: E731
    for seq in (1, 2, 3):
        store.hold(seq)
        store.set_next_target_seq(seq + 1)
    store.commit()
    store.persist()
    assert on_disk() == 1
    store.release(1)
    store.persist()
    assert on_disk() == 2
    store.release(3)                    # out of order: 2 still holds the line
    store.persist()
    assert on_disk() == 2
    store.release(99)                   # not held (e.g. held before a reset): no effect
    store.persist()
    assert on_disk() == 2
    store.release(2)
    store.persist()
    assert on_disk() == 4
    store.hold(4)
    store.reset(0)                      # a reset forgets the holds; a late release is ignored
    store.release(4)
    store.commit()
    store.persist()
    assert on_disk() == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("save"), st.integers(1, 40)),
                          st.tuples(st.just("set"), st.integers(1, 60)),
                          st.tuples(st.just("reset"), st.just(0))), max_size=30))
def test_the_inbound_store_keeps_the_next_outbound_seq_in_step_with_its_store(tmp_path_factory,
                                                                           ops):
    """The wrapper's next outbound MsgSeqNum (read for every message sent) is always the
    wrapped store's, whatever mix of saves (in order or rewinding), moves and resets."""
    from fix_gateway.gateway import _InboundStore
    from fix_gateway.store import FileStore

    inner = FileStore(str(tmp_path_factory.mktemp("s")), group_commit=True)
    store = _InboundStore(inner)
    try:
        for op, seq in ops:
            if op == "save":
                store.save_sent(seq, b"8=FIX.4.4\x01")
            elif op == "set" and seq > store.next_sender_seq:
                store.set_next_sender_seq(seq)
            elif op == "reset":
                store.reset(0)
            assert store.next_sender_seq == inner.next_sender_seq
    finally:
        store.close()
