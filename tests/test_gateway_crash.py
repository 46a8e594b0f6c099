"""Crash test: SIGKILL the FIX gateway under load, restart it on the same store directory.

A broker session streams orders (many in flight) through a raw asyncio FIX client; the gateway
process is killed with SIGKILL mid-stream and restarted on the same store directory (new
ephemeral port). The broker reconnects with the sequence numbers it had, both sides recover by
ResendRequest, the stream goes on, and then:

- nothing acknowledged is lost: every order that got an ExecutionReport New before the kill is
  on the engine's replication stream, and the restarted gateway knows it (OrderStatusRequest);
- nothing is executed twice: each ClOrdID is accepted at most once on the engine's stream;
- the broker got every report exactly once: the ExecIDs it processed equal, one for one, the
  reports the engine's events call for (accepts, rejects, both sides of each trade); a message
  received twice is a PossDup resend identical to the first (the last 100 messages before
  the kill are asked for again to check this);
- every order sent was answered: the gateway asks again for orders it had taken in but the
  engine had not acknowledged at the crash; one the engine had already taken is refused as a
  duplicate ClOrdID (OrdRejReason 6), never executed twice;
- sequence numbers continued (no reset) and every inbound MsgSeqNum is accounted for.
"""
from __future__ import annotations

import asyncio
import collections
import time

import pytest

from engine.events import OrderAccepted, OrderRejected, Trade
from tests.fixclient import RawFixSession, Stack, engine_events, new_order, write_fix_config

pytestmark = pytest.mark.integration

SESSION = "BROKER1"
WINDOW = 300                  # orders in flight
KILL_AFTER_ACKS = 2500        # kill once this many orders have been acknowledged
TOTAL = 5000                  # orders sent in all (before and after the kill)


def order_fields(i: int) -> list:
    """Buys at 279.00 .. 279.49 rest; every 5th order is a sell at 279.00 that trades."""
    if i % 5 == 4:
        return new_order(f"L-{i}", 2, 10, "279.00", account="A2")
    return new_order(f"L-{i}", 1, 10, f"279.{i * 7 % 50:02d}", account="A1")


def test_gateway_sigkill_under_load(tmp_path, procs):
    cfg = write_fix_config(tmp_path, [(SESSION, "FIRM1")])
    stack = Stack(procs, cfg).start()
    try:
        asyncio.run(asyncio.wait_for(scenario(stack), 75))
    except BaseException:
        print(stack.log()[-20000:])
        raise


async def scenario(stack: Stack) -> None:
    answered: dict[str, list] = {}           # ClOrdID -> its ExecutionReports New / Rejected
    acked_before_kill: set[str] = set()

    def on_app(m) -> None:
        if m.msg_type == "8" and m.get(150) in ("0", "8"):
            answered.setdefault(m[11], []).append(m)

    s = RawFixSession(SESSION, heartbeat_s=30, on_app=on_app)
    first_logon = await s.connect(*stack.fix)
    assert first_logon.seq == 1

    sent = 0
    deadline = time.monotonic() + 40
    killed_at_seq = 0
    while sent < TOTAL:
        assert time.monotonic() < deadline, f"load did not finish: {sent} sent, " \
                                            f"{len(answered)} answered"
        if not s.connected:
            # The gateway is dead: restart it on the same store, reconnect, recover.
            acked_before_kill = {c for c, ms in answered.items() if ms[0][150] == "0"}
            await asyncio.to_thread(stack.start_gateway)
            logon = await s.connect(*stack.fix)
            assert logon.seq > killed_at_seq, "the gateway reset its sequence numbers"
            continue
        if sent - len(answered) < WINDOW:
            for i in range(sent, min(sent + 50, TOTAL)):
                s.send_app("D", order_fields(i))
            sent = min(sent + 50, TOTAL)
            await s.drain()
        else:
            await asyncio.sleep(0.001)
        if not killed_at_seq and len(answered) >= KILL_AFTER_ACKS:
            killed_at_seq = s.next_in - 1
            stack.kill_gateway()                # SIGKILL with orders in flight
            await asyncio.wait_for(s.disconnected.wait(), 10)
    assert killed_at_seq, "the gateway was never killed"
    assert acked_before_kill and len(acked_before_kill) >= KILL_AFTER_ACKS - 1

    # Wait for the stream to settle: every order answered, or no progress for 3 s.
    last, quiet_since = -1, time.monotonic()
    while len(answered) < TOTAL and time.monotonic() - quiet_since < 3:
        if len(answered) != last:
            last, quiet_since = len(answered), time.monotonic()
        await asyncio.sleep(0.05)

    events = await engine_events(stack.replication, stack.digest, "crash-check")
    owner: dict[int, str] = {}
    accepted = collections.Counter()
    expected_exec_ids: set[str] = set()
    for ev in events:
        if isinstance(ev, OrderAccepted):
            owner[ev.order_id] = ev.session
            if ev.session == SESSION:
                accepted[ev.cl_ord_id] += 1
                expected_exec_ids.add(str(ev.seq))
        elif isinstance(ev, OrderRejected) and ev.session == SESSION:
            expected_exec_ids.add(str(ev.seq))
        elif isinstance(ev, Trade):
            if owner.get(ev.buy_order_id) == SESSION:
                expected_exec_ids.add(f"{ev.seq}B")
            if owner.get(ev.sell_order_id) == SESSION:
                expected_exec_ids.add(f"{ev.seq}S")

    # Nothing executed twice; nothing acknowledged lost.
    twice = {c: n for c, n in accepted.items() if n > 1}
    assert not twice, f"orders accepted more than once: {twice}"
    lost = acked_before_kill - set(accepted)
    assert not lost, f"acknowledged orders missing on the engine: {sorted(lost)[:10]}"
    assert sum(1 for ev in events if isinstance(ev, Trade)) > 100

    # Every report exactly once: ExecIDs processed == reports the engine's events call for.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and not expected_exec_ids <= {
            m.get(17) for m in s.delivered if m.msg_type == "8"}:
        await asyncio.sleep(0.05)               # the last reports may still be on their way
    reports = [m for m in s.delivered if m.msg_type == "8"]
    ids = [m[17] for m in reports]
    dup_ids = [i for i, n in collections.Counter(ids).items() if n > 1]
    assert not dup_ids, f"ExecIDs received twice as new messages: {dup_ids[:10]}"
    missing = expected_exec_ids - set(ids)
    assert not missing, f"{len(missing)} reports never arrived, e.g. {sorted(missing)[:10]}"
    assert set(ids) == expected_exec_ids, sorted(set(ids) - expected_exec_ids)[:10]
    # Messages stored before the crash are resent by the restarted gateway exactly as they
    # were first sent (PossDup): ask again for the last 100 before the kill.
    s.request_resend(killed_at_seq - 99, killed_at_seq)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and not any(d.seq == killed_at_seq for d in s.duplicates):
        await asyncio.sleep(0.05)
    assert {d.seq for d in s.duplicates} >= {m.seq for m in s.delivered
                                             if killed_at_seq - 99 <= m.seq <= killed_at_seq}
    for d in s.duplicates:                      # PossDup resends of messages already seen
        assert d.poss_dup and d.body() == s.by_seq[d.seq].body(), d

    # Sequence numbers continued, nothing skipped, no protocol errors.
    assert s.errors == []
    top = s.next_in - 1
    assert s.covered == set(range(1, top + 1))
    assert top > killed_at_seq

    # Every order the broker sent was answered: accepted once (one New), or rejected. An order
    # the broker resent after the crash that the engine had already taken is refused as a
    # duplicate ClOrdID (OrdRejReason 6), never executed twice.
    unanswered = [f"L-{i}" for i in range(TOTAL) if f"L-{i}" not in answered]
    assert not unanswered, f"{len(unanswered)} orders never answered, e.g. {unanswered[:10]}"
    news = {c: [m for m in ms if m[150] == "0"] for c, ms in answered.items()}
    assert {c for c, ms in news.items() if ms} == set(accepted)
    assert all(len(ms) <= 1 for ms in news.values())
    resent = {dict(f)[11] for seq, (mt, f, _) in s.out_store.items() if mt == "D"
              and any(b <= seq <= e for b, e in s.resend_requests_served)}
    dup_rejects = [m for ms in answered.values() for m in ms if m[150] == "8"]
    for m in dup_rejects:
        assert m[11] in accepted and m[11] in resent and m[103] == "6", m
    sample = sorted(acked_before_kill)[:: max(1, len(acked_before_kill) // 25)]
    for k, cl in enumerate(sample):
        s.send_app("H", [(11, cl), (790, f"ST-{k}"), (55, "SBER"), (54, "1")])
    status: dict[str, str] = {}
    t0 = time.monotonic()
    while len(status) < len(sample) and time.monotonic() - t0 < 10:
        for m in s.delivered[-200:]:
            if m.get(790, "").startswith("ST-"):
                status[m[11]] = m[39]
        await asyncio.sleep(0.05)
    assert set(status) == set(sample)
    assert all(v in ("0", "1", "2") for v in status.values()), status
    print(f"crash test: {TOTAL} orders, {len(acked_before_kill)} acknowledged before the kill "
          f"(inbound seq {killed_at_seq}), {sum(accepted.values())} accepted, "
          f"{len(expected_exec_ids)} reports, resend requests sent {s.resend_requests_sent}, "
          f"served {s.resend_requests_served}, {len(s.duplicates)} PossDup duplicates, "
          f"{len(dup_rejects)} resent orders refused as duplicates")
    await s.logout()
