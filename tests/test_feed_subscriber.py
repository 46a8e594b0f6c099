"""The pure subscriber core: arbitration, gaps, replay, snapshot recovery, fragments."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from engine.commands import MassCancel
from marketdata.channels import INCREMENTAL, SNAPSHOT
from marketdata.messages import MessageBuilder, decoder
from marketdata.subscriber import ReplayRequest, SubscriberCore
from tests.feed_sim import LossyNet, Market, T0, assert_books_equal, workload

DEC = decoder()


def core(**kw) -> SubscriberCore:
    return SubscriberCore(price_exponent=-4, **kw)


def test_clean_stream_rebuilds_books_from_the_first_datagram():
    m = Market(depth=10)
    sub = core()
    net = LossyNet(sub, m).attach()
    m.run(workload(1500, seed=1))
    assert net.settle()
    assert_books_equal(sub, m)
    assert sub.stats["gaps"] == 0 and sub.stats["holes"] == 0
    assert sub.stats["book_recoveries"] == 0          # every book was complete from RptSeq 1


def test_arbitration_first_copy_wins_and_fills_single_feed_losses():
    m = Market()
    sub = core()
    # A loses 30% and B loses 30%, independently, B copies arrive right after A's: the union
    # covers almost everything, so gaps are rare and duplicates common.
    net = LossyNet(sub, m, seed=3, drop_a=0.3, drop_b=0.3, dup=0.1).attach()
    m.run(workload(1500, seed=2))
    assert net.settle()
    assert_books_equal(sub, m)
    assert sub.stats["duplicates"] > 500
    # each lost-on-both datagram (about 9%) is a gap filled by replay, never a book recovery
    assert sub.stats["replay_requests"] > 0 and sub.stats["holes"] == 0
    assert sub.stats["book_recoveries"] == 0


def test_disjoint_losses_on_a_and_b_need_no_recovery_at_all():
    m = Market()
    sub = core()
    net = LossyNet(sub, m).attach()
    lost = [0]

    def send(ch, seq, data):   # A loses odd seqs, B loses even seqs
        for feed in (0, 1):
            if seq % 2 != feed:
                sub.on_datagram(ch, data, net.now)
            else:
                lost[0] += 1
        net.now += 0.0005
        net.service()

    net.detach()
    m.listeners.append(send)
    m.run(workload(600, seed=4))
    assert lost[0] > 600
    assert sub.stats["gaps"] == 0 and sub.stats["replay_requests"] == 0
    m.listeners.remove(send)
    net.attach()
    assert net.settle()
    assert_books_equal(sub, m)


def test_small_gap_is_filled_from_replay_without_touching_books():
    m = Market()
    sub = core()
    m.run(workload(200, seed=5))       # before the subscriber: it joins late
    net = LossyNet(sub, m).attach()
    assert net.settle()
    first = m.pub.last_incremental + 20
    net.blackout = set(range(first, first + 6))
    m.run(workload(400, seed=6)[-400:])
    assert net.settle()
    assert_books_equal(sub, m)
    assert sub.stats["replay_requests"] >= 1 and sub.stats["replayed"] >= 6
    assert sub.stats["holes"] == 0


def test_replay_request_names_exactly_the_missing_range():
    m = Market()
    sub = core(gap_wait=0.0)
    for ch, seq, d in m.out:
        sub.on_datagram(ch, d, 0.0)
    m.run(workload(100, seed=7))
    incs = [(s, d) for ch, s, d in m.out if ch == INCREMENTAL and s > 1]
    for s, d in incs:
        if s not in (10, 11, 12):
            sub.on_datagram(INCREMENTAL, d, 1.0)
    sub.on_timer(1.0)
    assert sub.take_actions() == [ReplayRequest(10, 12)]
    sub.on_timer(1.1)
    assert sub.take_actions() == []           # one outstanding request at a time
    sub.on_replay(10, 12, m.replay.get(10, 12), 1.2)
    assert sub.expected == incs[-1][0] + 1 and not sub.pending


def test_rejected_replay_falls_back_to_snapshots():
    m = Market()
    sub = core()
    net = LossyNet(sub, m, replay_ok=False).attach()
    m.run(workload(300, seed=8))
    first = m.pub.last_incremental + 5
    net.blackout = set(range(first, first + 3))
    m.run(workload(300, seed=9)[-300:])
    assert net.settle()
    assert_books_equal(sub, m)
    assert sub.stats["replay_failures"] >= 1 and sub.stats["holes"] >= 1
    assert sub.stats["snapshots_applied"] >= 1


def test_large_gap_skips_replay_and_recovers_from_snapshots():
    m = Market()
    sub = core(replay_max=50)
    net = LossyNet(sub, m).attach()
    m.run(workload(300, seed=10))
    first = m.pub.last_incremental + 5
    net.blackout = set(range(first, first + 200))
    m.run(workload(800, seed=11)[-800:])
    assert net.settle()
    assert_books_equal(sub, m)
    assert sub.stats["replay_requests"] == 0 and sub.stats["holes"] == 1
    assert sub.stats["snapshots_applied"] >= 1


def test_late_join_buffers_incrementals_until_each_snapshot():
    m = Market()
    m.run(workload(1000, seed=12), snapshot_every=250)
    sub = core()
    net = LossyNet(sub, m, seed=1).attach()
    # keep trading while the subscriber waits for its first snapshot cycle
    m.run(workload(1000, seed=13)[-600:], snapshot_every=150)
    assert net.settle()
    assert_books_equal(sub, m)
    assert sub.stats["snapshots_applied"] >= len(m.ref.instruments) - 1


def test_unreliable_book_is_flagged_until_its_snapshot():
    m = Market()
    m.run(workload(300, seed=14))
    sub = core()
    net = LossyNet(sub, m).attach()
    m.run(workload(300, seed=15)[-50:])
    assert sub.books and all(not b.reliable for b in sub.books.values())
    assert sub.wants_snapshot and not sub.synced
    m.pub.snapshot_cycle()
    net.deliver()
    assert all(b.reliable for b in sub.books.values()) and sub.synced
    assert_books_equal(sub, m)


def test_rpt_seq_jump_marks_only_that_book_and_snapshot_repairs_it():
    m = Market()
    sub = core()
    net = LossyNet(sub, m).attach()
    m.run(workload(400, seed=16))
    assert net.settle()
    net.detach()
    held: list = []
    m.listeners.append(lambda ch, seq, d: held.append((ch, seq, d)))
    m.run(workload(800, seed=17)[-400:])
    # Remove the first SBER entry from the incremental stream (MsgSeqNums stay gap-free):
    # only SBER sees a RptSeq jump.
    dec, builder = decoder(), MessageBuilder()
    removed = False
    for ch, seq, d in held:
        if ch == INCREMENTAL and not removed:
            _, t, v = dec.decode_datagram(d)
            entries = v.get("MDEntries") or []
            keep = [e for e in entries if e["Symbol"] != "SBER"]
            if len(keep) != len(entries):
                removed = True
                d = builder.incremental(seq, T0, keep)[0] if keep else \
                    builder.heartbeat(seq, T0)
        sub.on_datagram(ch, d, net.now)
    assert removed and sub.stats["rpt_gaps"] == 1 and sub.stats["holes"] == 0
    assert not sub.books["SBER"].reliable
    assert all(bk.reliable for s, bk in sub.books.items() if s != "SBER")
    m.listeners.clear()
    net.attach()
    assert net.settle()
    assert_books_equal(sub, m)


def test_fragmented_messages_and_snapshots_reassemble():
    m = Market(depth=50, max_datagram=256)
    m.run(workload(1500, seed=17))
    sub = core()
    net = LossyNet(sub, m, seed=2, drop_a=0.05, drop_b=0.05, reorder=0.05).attach()
    m.run(workload(1500, seed=18)[-300:])
    # A firm-wide mass cancel changes dozens of levels in one command: one message, fragmented.
    n = len(m.out)
    m.apply(MassCancel("ops", "mc-1", "MC0001", "", ""))
    frag = [DEC.decode_datagram(d)[2]["LastFragment"] for ch, s, d in m.out[n:]
            if ch == INCREMENTAL]
    assert len(frag) > 3 and frag[-1] == 1 and set(frag[:-1]) == {0}
    m.run(workload(1500, seed=18)[-100:])
    assert net.settle()
    assert_books_equal(sub, m)
    assert all(len(d) <= 256 for _, _, d in m.out)


def test_changes_are_reported_at_message_boundaries():
    m = Market(depth=50, max_datagram=256)
    m.run(workload(300, seed=19))
    m.apply(MassCancel("ops", "mc-1", "MC0002", "", ""))
    sub = core()
    for ch, s, d in m.out:
        sub.on_datagram(ch, d, 0.0)
        v = DEC.decode_datagram(d)[2]
        if ch == INCREMENTAL and v.get("LastFragment") == 0:
            assert not sub.changes_ready
        sub.take_changes() if sub.changes_ready else None


def test_publisher_restart_is_a_new_session_recovered_by_snapshot():
    m = Market()
    sub = core()
    net = LossyNet(sub, m).attach()
    m.run(workload(500, seed=20))
    assert net.settle()
    net.detach()
    m.run(workload(500, seed=21)[-100:])    # the subscriber misses these ...
    net.attach()
    m.restart_publisher()                   # ... and the new publisher never sends them
    m.run(workload(500, seed=22)[-100:])
    assert net.settle()
    assert_books_equal(sub, m)
    assert sub.stats["sessions"] == 2


def test_lost_sequence_reset_is_detected_by_the_stall_rule():
    m = Market()
    sub = core(stall_timeout=0.5)
    net = LossyNet(sub, m).attach()
    m.run(workload(500, seed=23))
    assert net.settle()
    net.detach()
    m.restart_publisher()                   # the SequenceResets are lost
    net.attach()
    m.run(workload(500, seed=24)[-150:])
    net.advance(1.0)                        # old MsgSeqNums only, for longer than 0.5 s
    assert net.settle()
    assert_books_equal(sub, m)
    assert sub.stats["sessions"] == 2


def test_snapshot_with_an_old_last_msg_seq_num_is_not_used():
    m = Market()
    m.run(workload(300, seed=25))
    m.pub.snapshot_cycle()
    old_snaps = [d for ch, s, d in m.out if ch == SNAPSHOT]
    m.run(workload(300, seed=26)[-60:-30])  # nobody hears these
    sub = core()
    net = LossyNet(sub, m).attach()
    m.run(workload(300, seed=26)[-30:])
    for d in old_snaps:                     # taken before the subscriber's first datagram
        sub.on_datagram(SNAPSHOT, d, net.now)
    assert sub.stats["snapshots_applied"] == 0
    assert net.settle()
    assert_books_equal(sub, m)


def test_symbol_filter_keeps_only_chosen_books():
    m = Market()
    m.run(workload(300, seed=27))
    sub = core(symbols={"SBER", "GAZP"})
    net = LossyNet(sub, m).attach()
    m.run(workload(300, seed=28)[-100:])
    assert net.settle()
    assert set(sub.books) == {"SBER", "GAZP"}
    assert_books_equal(sub, m, symbols={"SBER", "GAZP"})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), drop_a=st.sampled_from([0.0, 0.05, 0.2]),
       drop_b=st.sampled_from([0.0, 0.05, 0.2, 1.0]), dup=st.sampled_from([0.0, 0.1]),
       reorder=st.sampled_from([0.0, 0.1]), late=st.booleans(),
       max_datagram=st.sampled_from([256, 1400]), replay_max=st.sampled_from([5, 1000]))
def test_any_loss_pattern_converges_to_the_engine_books(seed, drop_a, drop_b, dup, reorder,
                                                         late, max_datagram, replay_max):
    m = Market(depth=10, max_datagram=max_datagram)
    cmds = workload(400, seed=seed)
    sub = core(replay_max=replay_max)
    net = LossyNet(sub, m, seed=seed, drop_a=drop_a, drop_b=drop_b, dup=dup, reorder=reorder)
    half = len(cmds) // 2
    if not late:
        net.attach()
    m.run(cmds[:half], snapshot_every=200)
    if late:
        net.attach()
    m.run(cmds[half:], snapshot_every=200)
    assert net.settle(rounds=100), sub.stats
    assert_books_equal(sub, m)


def test_undecodable_datagram_counts_as_lost():
    m = Market()
    sub = core()
    net = LossyNet(sub, m).attach()
    m.run(workload(300, seed=29))
    assert net.settle()
    seq = m.pub.next_seq[INCREMENTAL]
    garbage = seq.to_bytes(4, "little") + b"\xff\xff\xff"
    m.pub.next_seq[INCREMENTAL] += 1
    m.replay.add(seq, garbage)
    sub.on_datagram(INCREMENTAL, garbage, net.now)
    assert sub.stats["decode_errors"] == 1 and sub.expected == seq + 1
    assert all(not b.reliable for b in sub.books.values())
    m.run(workload(300, seed=30)[-50:])
    assert net.settle()
    assert_books_equal(sub, m)
