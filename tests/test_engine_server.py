"""Integration tests: the engine as a real process on loopback sockets."""
from __future__ import annotations

import asyncio
import os
import random
import socket
import time

import msgspec
import pytest

from bourse import RELEASE
from bourse.config import load_config
from engine.client import EngineLink, LinkRefused, ReplicationFeed
from engine.commands import NewOrder, SetHalt, HaltScope
from engine.events import Alert, OrderAccepted, OrderCancelled, OrderRejected, TradingStatus
from engine.link import HEADER, Ack, Disconnect, Events, Hello, Nack
from tests.procs import run_bourse, write_config

pytestmark = pytest.mark.integration


def order(i: int, session: str = "S1", side: int | None = None, price: int | None = None,
          firm: str = "FIRM1", account: str = "A1") -> NewOrder:
    rnd = random.Random(i)
    side = side or rnd.choice((1, 2))
    if price is None:
        # buys below 280.00, sells above: orders rest without trading most of the time
        price = (2790000 - rnd.randrange(0, 50) * 100) if side == 1 else \
                (2810000 + rnd.randrange(0, 50) * 100)
    return NewOrder(session, firm, account, f"{session}-{i}", "SBER", side, 2, 0, price, 10)


def start_engine(procs, cfg_path):
    p = procs(["engine", "--config", str(cfg_path)])
    p.wait_ready()
    return p


async def connect(p, role="order_entry", node="gw1", digest=None, sub=0, release=RELEASE,
                  component="gateway"):
    host, port = p.endpoint(role)
    return await EngineLink.connect(host, port, component=component, node_id=node,
                                    config_digest=digest, subscribe_from=sub, release=release)


async def collect(p, digest, from_seq=1, until=None, timeout=20.0):
    """Every event from ``from_seq`` up to the engine's head at connection time (or ``until``)."""
    link = await connect(p, "replication", node=f"c{random.random()}", digest=digest, sub=from_seq)
    head = until or link.welcome.next_event_seq
    out = []
    deadline = time.monotonic() + timeout
    try:
        while (out[-1].seq if out else from_seq - 1) < head - 1:
            msg = await asyncio.wait_for(link.recv(), max(0.1, deadline - time.monotonic()))
            assert msg is not None, "stream ended early"
            if isinstance(msg, Events):
                out.extend(msg.events)
    finally:
        await link.close()
    return out


def digest_of(cfg_path) -> str:
    return load_config(cfg_path).digest


def test_submit_ack_and_events_in_order(tmp_path, procs):
    cfg = write_config(tmp_path)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)

    async def main():
        gw = await connect(p, digest=digest, sub=1)
        assert gw.welcome.last_req_id == 0
        first = gw.submit([order(i) for i in range(100)])
        assert first == 1
        events, acks = [], []
        while sum(a.count for a in acks) < 100:
            msg = await asyncio.wait_for(gw.recv(), 10)
            if isinstance(msg, Events):
                events.extend(msg.events)
            elif isinstance(msg, Ack):
                # an ack comes after the events of the commands it acknowledges
                assert events and events[-1].cmd_seq >= msg.first_cmd_seq + msg.count - 1
                acks.append(msg)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        accepted = [e for e in events if isinstance(e, OrderAccepted)]
        assert len(accepted) == 100
        await gw.close()

    asyncio.run(main())


def test_sigkill_loses_nothing_acknowledged(tmp_path, procs):
    """SIGKILL mid-stream; after a restart every acknowledged command is in the journal."""
    cfg = write_config(tmp_path)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)
    acked: dict[int, int] = {}           # req_id -> cmd_seq

    async def flood():
        gw = await connect(p, digest=digest)
        n = 0
        try:
            while n < 200_000:
                if gw.next_req - 1 - len(acked) < 2000:     # keep up to 2000 in flight
                    gw.submit([order(n + k) for k in range(50)])
                    n += 50
                    await gw.drain()
                msg = await asyncio.wait_for(gw.recv(), 10)
                if isinstance(msg, Ack):
                    for k in range(msg.count):
                        acked[msg.first_req_id + k] = msg.first_cmd_seq + k
                    if len(acked) >= 5000 and not killed:
                        p.kill()
                        killed.append(True)
                elif msg is None:
                    return
        except (ConnectionError, OSError):
            return

    killed: list = []
    asyncio.run(flood())
    assert killed and len(acked) >= 5000
    p2 = start_engine(procs, cfg)

    async def verify():
        gw = await connect(p2, digest=digest)
        # the engine knows every acknowledged request of this node
        assert gw.welcome.last_req_id >= max(acked)
        assert gw.welcome.next_cmd_seq - 1 >= max(acked.values())
        events = await collect(p2, digest)
        by_cmd = {}
        for e in events:
            by_cmd.setdefault(e.cmd_seq, []).append(e)
        for req, cmd_seq in acked.items():
            evs = by_cmd[cmd_seq]
            assert isinstance(evs[0], (OrderAccepted, OrderRejected))
            assert evs[0].cl_ord_id == f"S1-{req - 1}"
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        # the node continues exactly where the engine says, without duplicates
        nxt = gw.welcome.last_req_id
        gw.submit([order(nxt + 7_000_000)])
        msg = None
        while not isinstance(msg, (Ack, Nack)):
            msg = await asyncio.wait_for(gw.recv(), 10)
        assert isinstance(msg, Ack)
        await gw.close()

    asyncio.run(verify())


def test_consumer_resumes_from_any_sequence(tmp_path, procs):
    cfg = write_config(tmp_path)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)

    async def main():
        gw = await connect(p, digest=digest)
        for b in range(20):
            gw.submit([order(b * 37 + k, side=1 + (k % 2), price=2800000) for k in range(37)])
        acks = 0
        while acks < 20 * 37:
            msg = await asyncio.wait_for(gw.recv(), 10)
            if isinstance(msg, Ack):
                acks += msg.count
        full = await collect(p, digest)
        assert [e.seq for e in full] == list(range(1, len(full) + 1))
        enc = msgspec.msgpack.Encoder()
        rnd = random.Random(7)
        for start in [1, 2, len(full)] + [rnd.randrange(1, len(full) + 1) for _ in range(8)]:
            part = await collect(p, digest, from_seq=start, until=len(full) + 1)
            assert [enc.encode(e) for e in part] == [enc.encode(e) for e in full[start - 1:]]
        await gw.close()

    asyncio.run(main())


def test_live_consumer_sees_no_gap_while_joining_under_load(tmp_path, procs):
    cfg = write_config(tmp_path)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)

    async def main():
        gw = await connect(p, digest=digest)
        total = 0

        async def produce():
            nonlocal total
            for b in range(200):
                gw.submit([order(b * 20 + k) for k in range(20)])
                total += 20
                await gw.drain()
                await asyncio.sleep(0.001)

        async def drain_acks():
            got = 0
            while got < 4000:
                msg = await asyncio.wait_for(gw.recv(), 10)
                if isinstance(msg, Ack):
                    got += msg.count

        prod = asyncio.ensure_future(produce())
        acks = asyncio.ensure_future(drain_acks())
        await asyncio.sleep(0.05)
        feed = ReplicationFeed(*p.endpoint("replication"), component="test", node_id="late",
                               config_digest=digest, from_seq=1)
        seen = []
        await prod
        await acks

        async def read():
            async for ev in feed.events():
                seen.append(ev.seq)
                if ev.seq == head - 1:
                    return

        probe = await connect(p, "replication", node="probe", digest=digest, sub=1)
        head = probe.welcome.next_event_seq
        await probe.close()
        await asyncio.wait_for(read(), 20)
        await feed.close()
        assert seen == list(range(1, head))
        await gw.close()

    asyncio.run(main())


def test_slow_consumer_is_disconnected_without_stalling_the_engine(tmp_path, procs):
    cfg = write_config(tmp_path, consumer_buffer_bytes=256 * 1024)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)
    host, rport = p.endpoint("replication")
    # A consumer that subscribes and then never reads, with a tiny receive buffer.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, rport))
    enc = msgspec.msgpack.Encoder()
    body = enc.encode(Hello("test", "slow", RELEASE, digest, 1))
    slow.sendall(HEADER.pack(len(body)) + body)

    async def main():
        gw = await connect(p, digest=digest)
        acked = 0
        t0 = time.monotonic()
        n = 0
        while acked < 30_000:
            if n - acked < 3000:
                gw.submit([order(n + k) for k in range(100)])
                n += 100
            msg = await asyncio.wait_for(gw.recv(), 10)   # the engine keeps acknowledging
            if isinstance(msg, Ack):
                acked += msg.count
        await gw.close()
        return time.monotonic() - t0

    asyncio.run(main())
    # The slow consumer was told why and where to resume, then closed.
    slow.settimeout(10)
    from engine.link import FROM_ENGINE_DECODER, FrameBuffer
    fb = FrameBuffer()
    msgs = []
    while True:
        data = slow.recv(1 << 20)
        if not data:
            break
        msgs.extend(FROM_ENGINE_DECODER.decode(b) for b in fb.feed(data))
    slow.close()
    bye = [m for m in msgs if isinstance(m, Disconnect)]
    assert bye and "slow consumer" in bye[0].reason
    delivered = [e.seq for m in msgs if isinstance(m, Events) for e in m.events]
    assert delivered == list(range(1, bye[0].last_seq + 1))

    async def resume():
        rest = await collect(p, digest, from_seq=bye[0].last_seq + 1)
        assert rest[0].seq == bye[0].last_seq + 1

    asyncio.run(resume())


@pytest.mark.parametrize("what", ["release", "config"])
def test_mismatched_node_is_refused_and_alerted(tmp_path, procs, what):
    cfg = write_config(tmp_path)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)

    async def main():
        kw = dict(digest=digest)
        if what == "release":
            kw["release"] = "0.0.1-old"
        else:
            kw["digest"] = "0" * 64
        with pytest.raises(LinkRefused) as info:
            await connect(p, node="stale-node", **kw)
        assert ("release" if what == "release" else "configuration") in str(info.value)
        assert "stale-node" in str(info.value)
        await asyncio.sleep(0.2)
        events = await collect(p, digest)
        alerts = [e for e in events if isinstance(e, Alert)]
        assert alerts and "stale-node" in alerts[-1].text and alerts[-1].severity == "critical"

    asyncio.run(main())
    p.stop()
    assert "ALERT" in p.stderr()


def test_operator_kill_switch_and_rights(tmp_path, procs):
    cfg = write_config(tmp_path)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)

    async def main():
        gw = await connect(p, digest=digest)
        gw.submit([order(i, side=1) for i in range(5)])
        # a gateway may not use the kill switch
        gw.submit([SetHalt(HaltScope.FIRM, "FIRM1", True, "")])
        seen_nack = False
        while not seen_nack:
            msg = await asyncio.wait_for(gw.recv(), 10)
            seen_nack = isinstance(msg, Nack)
        assert "operator" in msg.reason
        await gw.close()

    asyncio.run(main())
    host, port = p.endpoint("order_entry")
    rhost, rport = p.endpoint("replication")
    res = run_bourse(["ctl", "--config", str(_with_ports(tmp_path, cfg, port, rport)),
                      "halt", "--firm", "FIRM1", "--text", "runaway algo"])
    assert res.returncode == 0, res.stderr
    assert "TradingStatus" in res.stdout

    async def after():
        events = await collect(p, digest)
        status = [e for e in events if isinstance(e, TradingStatus)]
        assert status and status[-1].halted and status[-1].cancelled == 5
        assert sum(isinstance(e, OrderCancelled) for e in events) == 5
        gw = await connect(p, node="gw2", digest=digest, sub=len(events) + 1)
        gw.submit([order(99)])
        while True:
            msg = await asyncio.wait_for(gw.recv(), 10)
            if isinstance(msg, Events):
                assert isinstance(msg.events[0], OrderRejected)
                assert "halted" in msg.events[0].text
                break
        await gw.close()

    asyncio.run(after())


def _with_ports(tmp_path, cfg, port, rport):
    text = cfg.read_text().replace("order_entry_port = 0", f"order_entry_port = {port}") \
        .replace("replication_port = 0", f"replication_port = {rport}")
    out = tmp_path / "ctl.toml"
    out.write_text(text)
    return out


def test_two_gateways_see_one_total_order(tmp_path, procs):
    cfg = write_config(tmp_path)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)

    async def main():
        a = await connect(p, node="gwA", digest=digest, sub=1)
        b = await connect(p, node="gwB", digest=digest, sub=1)
        for i in range(50):
            a.submit([order(i, session="SA", price=2800000)])
            b.submit([order(i + 1000, session="SB", price=2800000)])

        async def run(link):
            evs, acks = [], 0
            while acks < 50 or not evs or evs[-1].seq < 100:
                msg = await asyncio.wait_for(link.recv(), 10)
                if isinstance(msg, Events):
                    evs.extend(msg.events)
                elif isinstance(msg, Ack):
                    acks += msg.count
            return evs

        ea, eb = await asyncio.gather(run(a), run(b))
        enc = msgspec.msgpack.Encoder()
        n = min(len(ea), len(eb))
        assert n >= 100
        assert [enc.encode(e) for e in ea[:n]] == [enc.encode(e) for e in eb[:n]]
        await a.close()
        await b.close()

    asyncio.run(main())


def test_duplicate_node_and_bad_request_ids_refused(tmp_path, procs):
    cfg = write_config(tmp_path)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)

    async def main():
        a = await connect(p, node="gw", digest=digest)
        with pytest.raises(LinkRefused, match="already connected"):
            await connect(p, node="gw", digest=digest)
        a.next_req = 5          # skip request ids: refused, nothing sequenced
        a.submit([order(1)])
        msg = await asyncio.wait_for(a.recv(), 10)
        assert isinstance(msg, Nack) and "continue at 1" in msg.reason
        await a.close()

    asyncio.run(main())


def test_restart_after_torn_tail_and_journal_verify(tmp_path, procs):
    cfg = write_config(tmp_path)
    digest = digest_of(cfg)
    p = start_engine(procs, cfg)

    async def load():
        gw = await connect(p, digest=digest)
        for b in range(10):
            gw.submit([order(b * 10 + k, side=1 + k % 2, price=2800000) for k in range(10)])
        got = 0
        while got < 100:
            msg = await asyncio.wait_for(gw.recv(), 10)
            if isinstance(msg, Ack):
                got += msg.count
        await gw.close()
        return await collect(p, digest)

    before = asyncio.run(load())
    p.kill()
    journal = tmp_path / "journal" / "engine.journal"
    with open(journal, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage-from-a-torn-write")
    # two independent replays of the journal give byte-identical event streams
    v1 = run_bourse(["journal", "verify", str(journal), "--config", str(cfg)],
                    env={"PYTHONHASHSEED": "1"})
    v2 = run_bourse(["journal", "verify", str(journal), "--config", str(cfg)],
                    env={"PYTHONHASHSEED": "999"})
    assert v1.returncode == 0, v1.stderr
    assert v1.stdout == v2.stdout and "events sha256" in v1.stdout
    p2 = start_engine(procs, cfg)
    after = asyncio.run(collect(p2, digest))
    enc = msgspec.msgpack.Encoder()
    assert [enc.encode(e) for e in after] == [enc.encode(e) for e in before]
    p2.stop()
    assert "torn tail" in p2.stderr()


def test_bad_configuration_starts_nothing(tmp_path):
    cfg = write_config(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('tick_size = "0.01"', 'tick_size = "abc"', 1))
    res = run_bourse(["engine", "--config", str(bad)])
    assert res.returncode == 2
    assert "tick_size" in res.stderr and "bad.toml" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "journal").exists()
