"""Tests for fix_gateway.session: API behaviour, persistence, validator hook, properties.

The protocol cases themselves (FIX session test cases 1a..21) are data files run by
tests/test_fix_conformance.py; this file covers the API and robustness properties.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fix_gateway.codec import encode, format_utc_timestamp, parse
from fix_gateway.errors import Reject
from fix_gateway.session import (
    ACTIVE,
    AWAITING_LOGON,
    DISCONNECTED,
    LOGOUT_RECEIVED,
    Deliver,
    Disconnect,
    Queued,
    Send,
    Session,
    SessionConfig,
    SessionEvent,
)
from fix_gateway.store import FileStore, MemoryStore

T0 = 1_704_189_600_000_000_000
S = 1_000_000_000


class Broker:
    """Builds the counterparty's messages with consecutive MsgSeqNums."""

    def __init__(self, sender="BRK", target="BOURSE", seq=1):
        self.sender, self.target, self.seq = sender, target, seq

    def msg(self, mt, fields=(), now=T0, seq=None, extra=()):
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        return encode(mt, list(fields), sender=self.sender, target=self.target, seq=seq,
                      sending_time=format_utc_timestamp(now), extra_header=list(extra))

    def logon(self, now=T0, hb=30, **kw):
        return self.msg("A", [(98, 0), (108, hb)], now=now, **kw)

    def order(self, clordid, now=T0, **kw):
        return self.msg("D", [(11, clordid), (21, 1), (55, "SBER"), (54, 1), (38, 10),
                              (40, 2), (44, "250.5"), (60, format_utc_timestamp(now))],
                        now=now, **kw)


def sends(actions):
    return [parse(a.data) for a in actions if isinstance(a, Send)]


def kinds(actions):
    return [type(a).__name__ for a in actions]


def logged_on(config=None, store=None, validator=None, broker=None):
    cfg = config or SessionConfig(target_comp_id="BRK")
    s = Session(cfg, store if store is not None else MemoryStore(T0), validator=validator)
    b = broker or Broker()
    s.on_connect(T0)
    out = s.on_bytes(b.logon(), T0)
    assert s.state == ACTIVE, out
    return s, b


# ------------------------------------------------------------------------------- basics

def test_action_types_and_logon_flow():
    s = Session(SessionConfig(target_comp_id="BRK"), MemoryStore())
    assert s.on_bytes(b"8=FIX.4.4\x01", T0) == []  # not connected: ignored
    assert s.on_connect(T0) == [] and s.state == AWAITING_LOGON
    out = s.on_bytes(Broker().logon(hb=20), T0)
    assert kinds(out) == ["Send", "SessionEvent"]
    logon = parse(out[0].data)
    assert logon.msg_type == "A" and logon.get(108) == b"20" and logon.get(34) == b"1"
    assert out[1] == SessionEvent("logged_on", "HeartBtInt 20")
    assert s.is_logged_on and s.heartbeat_interval_s == 20
    assert (s.next_sender_seq, s.next_target_seq) == (2, 2)


def test_send_app_and_queued():
    s, b = logged_on()
    out = s.send_app("8", [(37, "O1"), (11, "C1")], T0)
    assert isinstance(out[0], Send) and out[0].seq == 2 and out[0].msg_type == "8"
    m = parse(out[0].data)
    assert m.get(49) == b"BOURSE" and m.get(56) == b"BRK" and m.get(37) == b"O1"
    with pytest.raises(ValueError):
        s.send_app("0", [], T0)
    s.on_disconnect(T0)
    assert s.state == DISCONNECTED
    assert s.send_app("8", [(37, "O2")], T0) == [Queued(3, "not logged on")]
    assert [x for x, _ in s.store.get_range(1, 0)] == [2, 3]


def test_send_app_data_is_send_app_without_the_action_list():
    a, _ = logged_on()
    b, _ = logged_on()
    for fields in ([(37, "O1"), (11, "C1")], [(37, "O2"), b"58=run\x01"]):
        (sent,) = a.send_app("8", fields, T0)
        assert b.send_app_data("8", fields, T0) == sent.data
    assert [m for _, m in a.store.get_range(1, 0)] == [m for _, m in b.store.get_range(1, 0)]
    with pytest.raises(ValueError):
        b.send_app_data("0", [], T0)
    b.on_disconnect(T0)
    assert b.send_app_data("8", [(37, "O3")], T0) is None          # stored, not sent
    assert [x for x, _ in b.store.get_range(1, 0)] == [2, 3, 4]


def test_next_timer_ns():
    s = Session(SessionConfig(target_comp_id="BRK", logon_timeout_s=5), MemoryStore())
    assert s.next_timer_ns is None
    s.on_connect(T0)
    assert s.next_timer_ns == T0 + 5 * S
    s.on_bytes(Broker().logon(hb=30), T0)
    assert s.next_timer_ns == T0 + 30 * S
    s.on_bytes(Broker(seq=2).msg("0"), T0 + 10 * S)
    assert s.next_timer_ns == T0 + 30 * S
    s.on_timer(T0 + 30 * S)  # heartbeat
    assert s.next_timer_ns == T0 + 46 * S  # TestRequest at last receive + 30 s + 20%


def test_logout_before_logon_disconnects():
    s = Session(SessionConfig(target_comp_id="BRK"), MemoryStore())
    s.on_connect(T0)
    assert s.logout("maintenance", T0) == [Disconnect("maintenance")]
    assert s.logout("again", T0) == []


def test_reset_only_while_disconnected():
    s, b = logged_on()
    with pytest.raises(ValueError):
        s.reset(T0)
    s.on_disconnect(T0)
    assert s.reset(T0) == [SessionEvent("reset", "sequence numbers reset")]
    assert (s.next_sender_seq, s.next_target_seq) == (1, 1)


def test_logout_with_gap_is_answered_at_once():
    s, b = logged_on()
    out = s.on_bytes(b.msg("5", seq=9), T0)
    assert [m.msg_type for m in sends(out)] == ["5"]
    assert s.state == LOGOUT_RECEIVED
    assert s.next_target_seq == 2  # the gap stays open for the next session


def test_next_expected_msg_seq_num_on_logon_triggers_resend():
    store = MemoryStore()
    s, b = logged_on(store=store)
    s.send_app("8", [(37, "O1")], T0)
    s.send_app("8", [(37, "O2")], T0)
    s.on_disconnect(T0)
    s.on_connect(T0)
    out = s.on_bytes(b.msg("A", [(98, 0), (108, 30), (789, 2)]), T0)
    msgs = sends(out)
    assert [(m.msg_type, m.get(34), m.get(43)) for m in msgs] == [
        ("A", b"4", None), ("8", b"2", b"Y"), ("8", b"3", b"Y")]


def test_inbound_queue_is_bounded_and_gap_rerequested():
    cfg = SessionConfig(target_comp_id="BRK", max_queued=3)
    s, b = logged_on(cfg)
    out = []
    for seq in range(5, 12):
        out += s.on_bytes(b.msg("0", seq=seq), T0)
    assert s.queued_inbound == 3
    assert [m.get(7) for m in sends(out)] == [b"2"]
    assert any(e.kind == "warning" and "queue full" in e.text for e in out
               if isinstance(e, SessionEvent))
    # the counterparty fills 2..4; 5..7 come from the queue; 8.. were dropped
    out = s.on_bytes(b.msg("4", [(123, "Y"), (36, 5)], seq=2, extra=[(43, "Y")]), T0)
    assert s.next_target_seq == 8 and s.queued_inbound == 0
    assert sends(out) == []
    # a counterparty that stops resending there is asked again after the timeout
    out = s.on_timer(T0 + 30 * S)
    assert [(m.msg_type, m.get(7)) for m in sends(out) if m.msg_type == "2"] == [("2", b"8")]
    # its resend of 8..11 (5..7 are duplicates now) closes the gap
    pd = [(43, "Y"), (122, format_utc_timestamp(T0))]
    for seq in range(5, 12):
        s.on_bytes(b.msg("0", seq=seq, extra=pd, now=T0 + 30 * S), T0 + 30 * S)
    assert s.next_target_seq == 12 and s.queued_inbound == 0


# --------------------------------------------------------------------------- validator

def test_validator_reject_and_business_reject():
    calls = []

    def validator(msg):
        calls.append(msg.get(11))
        if msg.get(11) == b"BAD":
            return Reject(5, 54, "bad side")
        if msg.get(11) == b"BIZ":
            return Reject(2, text="no such instrument", business=True, ref_id="BIZ")
        return None

    s, b = logged_on(validator=validator)
    out = s.on_bytes(b.order("BAD") + b.order("BIZ") + b.order("OK"), T0)
    rej, biz = sends(out)
    assert (rej.msg_type, rej.get(45), rej.get(371), rej.get(372), rej.get(373),
            rej.get(58)) == ("3", b"2", b"54", b"D", b"5", b"bad side")
    assert (biz.msg_type, biz.get(45), biz.get(372), biz.get(380), biz.get(379),
            biz.get(58)) == ("j", b"3", b"D", b"2", b"BIZ", b"no such instrument")
    delivered = [a.msg.get(11) for a in out if isinstance(a, Deliver)]
    assert delivered == [b"OK"] and calls == [b"BAD", b"BIZ", b"OK"]
    assert s.next_target_seq == 5  # rejected messages consumed their numbers


def test_validator_is_not_called_for_admin_messages():
    s, b = logged_on(validator=lambda m: pytest.fail("called"))
    s.on_bytes(b.msg("0"), T0)


def test_validator_exception_becomes_reject():
    def validator(msg):
        raise KeyError("boom")

    s, b = logged_on(validator=validator)
    out = s.on_bytes(b.order("X"), T0)
    (rej,) = sends(out)
    assert rej.get(373) == b"99"
    assert any(isinstance(a, SessionEvent) and a.kind == "error" for a in out)
    assert s.state == ACTIVE and s.next_target_seq == 3


def test_reject_text_with_soh_is_sanitised():
    s, b = logged_on(validator=lambda m: Reject(99, text="a\x01b", business=True,
                                                ref_id="x\x01y"))
    (rej,) = sends(s.on_bytes(b.order("X"), T0))
    assert rej.get(58) == b"a b" and rej.get(379) == b"x y"


# ------------------------------------------------------------- initiator <-> acceptor

def wire(a: Session, b: Session, actions_a, now):
    """Deliver a's Sends to b and vice versa until quiet; return everything delivered."""
    delivered = {id(a): [], id(b): []}
    pending = [(a, b, actions_a)]
    while pending:
        src, dst, actions = pending.pop(0)
        for act in actions:
            if isinstance(act, Send):
                pending.append((dst, src, dst.on_bytes(act.data, now)))
            elif isinstance(act, Deliver):
                delivered[id(src)].append(act.msg)
            elif isinstance(act, Disconnect):
                pending.append((dst, src, dst.on_disconnect(now)))
    return delivered


def test_initiator_and_acceptor_talk_to_each_other():
    acc = Session(SessionConfig(target_comp_id="BRK", password="pw"), MemoryStore())
    ini = Session(SessionConfig(sender_comp_id="BRK", target_comp_id="BOURSE",
                                role="initiator", heartbeat_s=10, password="pw"), MemoryStore())
    acc.on_connect(T0)
    wire(ini, acc, ini.on_connect(T0), T0)
    assert acc.state == ACTIVE and ini.state == ACTIVE
    assert acc.heartbeat_interval_s == 10 and ini.heartbeat_interval_s == 10
    got = wire(ini, acc, ini.send_app("D", [(11, "C1"), (55, "SBER")], T0), T0)
    assert [m.get(11) for m in got[id(acc)]] == [b"C1"]
    got = wire(acc, ini, acc.send_app("8", [(37, "O1"), (11, "C1")], T0), T0)
    assert [m.get(37) for m in got[id(ini)]] == [b"O1"]
    # heartbeats keep both alive for a long quiet period
    for k in range(1, 40):
        now = T0 + k * 5 * S
        wire(acc, ini, acc.on_timer(now), now)
        wire(ini, acc, ini.on_timer(now), now)
    assert acc.state == ACTIVE and ini.state == ACTIVE
    wire(ini, acc, ini.logout("bye", now), now)
    assert ini.state == DISCONNECTED and acc.state == DISCONNECTED


def test_initiator_reset_on_logon():
    acc = Session(SessionConfig(target_comp_id="BRK"), MemoryStore())
    ini_store = MemoryStore()
    ini_store.set_next_sender_seq(50)
    ini = Session(SessionConfig(sender_comp_id="BRK", target_comp_id="BOURSE",
                                role="initiator", reset_on_logon="always"), ini_store)
    acc.on_connect(T0)
    first = ini.on_connect(T0)
    logon = sends(first)[0]
    assert logon.get(141) == b"Y" and logon.get(34) == b"1"
    wire(ini, acc, first, T0)
    assert acc.state == ACTIVE and ini.state == ACTIVE and ini.next_target_seq == 2


# ------------------------------------------------------------------------ persistence

def test_resend_after_restart_from_file_store(tmp_path):
    d = str(tmp_path / "store")
    s, b = logged_on(store=FileStore(d))
    originals = [parse(s.send_app("8", [(37, f"O{i}"), (11, f"C{i}"), (58, "x=y")], T0)[0].data)
                 for i in range(3)]
    s.on_bytes(b.msg("0"), T0)
    s.store.close()  # crash: no logout
    later = T0 + 60 * S
    s2 = Session(SessionConfig(target_comp_id="BRK"), FileStore(d))
    assert (s2.next_sender_seq, s2.next_target_seq) == (5, 3)
    s2.on_connect(later)
    out = s2.on_bytes(b.logon(now=later), later)
    assert sends(out)[0].get(34) == b"5"
    out = s2.on_bytes(b.msg("2", [(7, 1), (16, 0)], now=later), later)
    msgs = sends(out)
    assert [(m.msg_type, m.get(34)) for m in msgs] == [("4", b"1"), ("8", b"2"), ("8", b"3"),
                                                       ("8", b"4"), ("4", b"5")]
    assert msgs[0].get(36) == b"2" and msgs[-1].get(36) == b"6"
    for orig, again in zip(originals, msgs[1:4]):
        assert again.get(43) == b"Y"
        assert again.get(122) == orig.get(52)
        assert again.get(52) == format_utc_timestamp(later)
        skip = (9, 10, 52, 43, 122)
        assert [f for f in again.fields if f[0] not in skip] == \
               [f for f in orig.fields if f[0] not in skip]
    s2.store.close()


def test_resend_never_loads_more_than_a_chunk():
    class CountingStore(MemoryStore):
        biggest = 0

        def get_range(self, begin, end=0, limit=None):
            items = list(super().get_range(begin, end, limit))
            CountingStore.biggest = max(CountingStore.biggest, len(items))
            assert limit is not None
            return iter(items)

    s, b = logged_on(SessionConfig(target_comp_id="BRK", max_resend_chunk=10),
                     store=CountingStore())
    for i in range(95):
        s.send_app("8", [(37, i)], T0)
    out = s.on_bytes(b.msg("2", [(7, 1), (16, 0)]), T0)
    resent = sends(out)
    calls = 1
    while s.pending_resend:
        assert s.next_timer_ns <= T0
        resent += sends(s.on_timer(T0))
        calls += 1
    assert CountingStore.biggest == 10 and calls == 10
    assert [m.get(34) for m in resent] == [str(i).encode() for i in range(1, 97)]


# ------------------------------------------------------------------- property-based

MAX = 2048  # small max_message_size so "huge" messages stay cheap


def clean_junk():
    # no "8=F" (a message start) and no "10=" (it could complete a truncated message)
    return st.binary(min_size=1, max_size=200).filter(
        lambda b: b"8=F" not in b and b"10=" not in b)


segment = st.one_of(
    st.tuples(st.just("heartbeat")),
    st.tuples(st.just("order"), st.integers(0, 2**32)),
    st.tuples(st.just("test_request")),
    st.tuples(st.just("misordered")),
    st.tuples(st.just("junk"), clean_junk()),
    st.tuples(st.just("truncated"), st.integers(1, 200)),
    st.tuples(st.just("bad_checksum")),
    st.tuples(st.just("huge")),
)


def build_stream(segments, b: Broker):
    """Bytes for the segments, plus what a correct session must do with them."""
    chunks, orders, tests = [], [], []
    rejects = 0
    for i, seg in enumerate(segments):
        kind = seg[0]
        if kind == "heartbeat":
            chunks.append(b.msg("0"))
        elif kind == "order":
            rnd = random.Random(seg[1])
            body = [(11, f"C{i}"), (21, 1), (55, "SBER"), (54, 1), (38, 5), (40, 1),
                    (60, format_utc_timestamp(T0))]
            rnd.shuffle(body)
            chunks.append(b.msg("D", body))
            orders.append(f"C{i}".encode())
        elif kind == "test_request":
            chunks.append(b.msg("1", [(112, f"T{i}")]))
            tests.append(f"T{i}".encode())
        elif kind == "misordered":  # a header field after the body: Reject 14, consumed
            raw = b.msg("0", [(58, "x"), (97, "N")])
            chunks.append(raw)
            rejects += 1
        elif kind == "junk":
            chunks.append(seg[1])
        elif kind == "truncated":
            whole = Broker(seq=10**6).order("T")
            chunks.append(whole[:min(seg[1], len(whole) - 8)])  # cut before the trailer
        elif kind == "bad_checksum":
            raw = Broker(seq=b.seq).msg("0")
            chunks.append(raw[:-4] + b"%03d\x01" % ((int(raw[-4:-1]) + 1) % 256))
        else:  # huge
            chunks.append(Broker(seq=b.seq).msg("D", [(58, "h" * (MAX + 100))]))
    # enough valid trailing traffic to flush anything a broken prefix made the reader wait for
    n_flush = MAX // 50 + 2
    for _ in range(n_flush):
        chunks.append(b.msg("0"))
    return chunks, orders, tests, rejects, n_flush


def run_stream(session, chunks, data_cuts):
    stream = b"".join(chunks)
    out = []
    prev = 0
    for c in sorted(data_cuts) + [len(stream)]:
        out += session.on_bytes(stream[prev:c], T0)
        prev = c
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(segment, max_size=25), st.lists(st.integers(0, 20000), max_size=8))
def test_logged_on_session_survives_garbage(segments, cuts):
    cfg = SessionConfig(target_comp_id="BRK", max_message_size=MAX)
    s, b = logged_on(cfg)
    chunks, orders, tests, rejects, n_flush = build_stream(segments, b)
    out = run_stream(s, chunks, [c for c in cuts if c < sum(map(len, chunks))])
    assert not any(isinstance(a, Disconnect) for a in out)
    assert s.state == ACTIVE
    assert [a.msg.get(11) for a in out if isinstance(a, Deliver)] == orders
    sent = sends(out)
    assert [m.get(112) for m in sent if m.msg_type == "0"] == tests
    assert sum(1 for m in sent if m.msg_type == "3" and m.get(373) == b"14") == rejects
    assert all(m.msg_type in ("0", "3") for m in sent)  # no resend request: nothing was lost
    assert s.next_target_seq == b.seq


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(segment, max_size=15), st.lists(segment, max_size=15), st.integers(0, 2**32))
def test_two_sessions_never_affect_each_other(seg_a, seg_b, seed):
    rnd = random.Random(seed)
    cfg = SessionConfig(target_comp_id="BRK", max_message_size=MAX)

    def fresh():
        s = Session(cfg, MemoryStore(T0))
        s.on_connect(T0)
        return s

    stream_a = b"".join(build_stream(seg_a, Broker(seq=2))[0])
    stream_b = b"".join(build_stream(seg_b, Broker(seq=2))[0])
    logon = Broker().logon()
    # alone
    alone = []
    for stream in (stream_a, stream_b):
        s = fresh()
        alone.append(s.on_bytes(logon, T0) + s.on_bytes(stream, T0) + s.on_timer(T0 + 40 * S))
    # interleaved, in random pieces
    sa, sb = fresh(), fresh()
    got = {id(sa): sa.on_bytes(logon, T0), id(sb): sb.on_bytes(logon, T0)}
    pos = {id(sa): 0, id(sb): 0}
    streams = {id(sa): stream_a, id(sb): stream_b}
    while pos[id(sa)] < len(stream_a) or pos[id(sb)] < len(stream_b):
        s = rnd.choice([sa, sb])
        n = rnd.randint(1, 300)
        p = pos[id(s)]
        got[id(s)] += s.on_bytes(streams[id(s)][p:p + n], T0)
        pos[id(s)] = p + n
    for s in (sa, sb):
        got[id(s)] += s.on_timer(T0 + 40 * S)

    def norm(actions):
        return [(type(a).__name__, a.data if isinstance(a, Send) else
                 a.msg.raw if isinstance(a, Deliver) else getattr(a, "reason", None))
                for a in actions if not isinstance(a, SessionEvent)]

    assert norm(got[id(sa)]) == norm(alone[0])
    assert norm(got[id(sb)]) == norm(alone[1])


admin_or_app = st.sampled_from(["0", "1", "2", "3", "4", "5", "A", "D", "8", "ZZ", "j"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(admin_or_app, st.integers(-2, 12), st.booleans(), st.booleans(),
                          st.integers(-200, 200), st.integers(0, 15)), max_size=30))
def test_random_protocol_input_never_raises(steps):
    """Random MsgTypes, MsgSeqNums, PossDup flags, clock skews and timers: no exception,
    every Send is a valid frame, and nothing happens after a Disconnect."""
    s = Session(SessionConfig(target_comp_id="BRK", max_resend_chunk=3), MemoryStore(T0))
    s.on_connect(T0)
    now = T0
    b = Broker()
    for mt, seq_delta, possdup, reset, skew, wait in steps:
        now += wait * S
        fields = {"1": [(112, "X")], "2": [(7, max(1, seq_delta)), (16, 0)],
                  "4": [(36, max(1, b.seq + seq_delta))] + ([] if reset else [(123, "Y")]),
                  "A": [(98, 0), (108, 5)] + ([(141, "Y")] if reset else []),
                  "3": [(45, 1)], "D": [(11, "C")], "8": [(37, "O")]}.get(mt, [])
        extra = [(43, "Y"), (122, format_utc_timestamp(now - S))] if possdup else []
        seq = max(0, b.seq + seq_delta - 1)
        raw = b.msg(mt, fields, now=now + skew * S // 2, seq=seq, extra=extra)
        if seq_delta >= 1:
            b.seq = seq + 1
        out = s.on_bytes(raw, now) + s.on_timer(now)
        if s.state == DISCONNECTED:
            s.on_connect(now)
        if rnd_send := (seq_delta == 3):
            out += s.send_app("8", [(37, "Z")], now)
        for a in out:
            assert isinstance(a, (Send, Deliver, SessionEvent, Disconnect, Queued))
            if isinstance(a, Send):
                parse(a.data)
        for i, a in enumerate(out):
            if isinstance(a, Disconnect):
                assert not any(isinstance(x, (Send, Deliver)) for x in out[i + 1:]) \
                    or rnd_send


def test_many_sessions_random_soak():
    """Deterministic soak: 20 sessions fed interleaved valid traffic with random garbage."""
    rnd = random.Random(7)
    cfg = SessionConfig(target_comp_id="BRK", max_message_size=MAX)
    sessions = []
    for _ in range(20):
        s, b = logged_on(cfg)
        sessions.append((s, b, []))
    for _ in range(400):
        s, b, seen = rnd.choice(sessions)
        if rnd.random() < 0.2:
            s.on_bytes(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 50)))
                       .replace(b"8=F", b"xxx"), T0)
        else:
            cl = f"C{rnd.getrandbits(32)}"
            out = s.on_bytes(b.order(cl), T0)
            seen += [a.msg.get(11) for a in out if isinstance(a, Deliver)]
            seen.append(cl.encode())
    for s, b, seen in sessions:
        out = []
        for _ in range(MAX // 50 + 2):
            out += s.on_bytes(b.msg("0"), T0)
        assert s.state == ACTIVE and s.next_target_seq == b.seq
