"""The session's and the store's compiled helpers against their Python references, and whole
sessions run with the compiled hot path against sessions run on the pure-Python one.

``_fixfast.check_header`` must answer what ``session._check_header_py`` answers, and
``_fixfast.in_sequence`` may only pass what the session's Python test passes;
``_fixfast.store_record`` must build the bytes ``store._record_py`` builds; and a session fed
any sequence of valid, damaged and out-of-sequence messages must produce the same actions
(bytes sent, messages delivered, events) with either implementation.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fix_gateway import codec, session as session_mod, store as store_mod
from fix_gateway.dictionary import load_dictionary
from fix_gateway.gateway import DICTIONARY
from fix_gateway.session import Deliver, Send, Session, SessionConfig
from fix_gateway.store import MAX_PAYLOAD, FileStore, MemoryStore
from fix_gateway.validator import Validator

fast = pytest.importorskip("fix_gateway._fixfast")
fast.set_fallbacks(codec.py_format_utc_timestamp, codec.py_parse_utc_timestamp, codec.py_encode,
                   codec.Garbled)
fast.set_header_tags(session_mod.HEADER_TAGS, session_mod._HOP_TAGS)

T0 = 1_704_189_600_000_000_000
TS = codec.py_format_utc_timestamp(T0)
SLOW = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=200)
VALIDATOR = Validator(load_dictionary(DICTIONARY))

header_tags = st.sampled_from([49, 56, 34, 52, 43, 97, 122, 115, 128, 50, 57, 142, 369, 627,
                               628, 629, 630])
body_tags = st.sampled_from([11, 55, 54, 38, 40, 44, 58, 9, 8, 35, 10, 20002])
values = st.sampled_from([b"Y", b"N", b"", b"x", b"1", TS, TS[:-4], b"20240102-25:00:00",
                          b"20240229-10:00:00.123456", b"99991231-23:59:59", b"yes"])


@st.composite
def header_messages(draw) -> list[tuple[int, bytes]]:
    fields = draw(st.lists(st.tuples(st.one_of(header_tags, body_tags), values), max_size=10))
    return [(35, b"D")] + fields


def both(fields):
    body = b"".join(b"%d=%s\x01" % (t, v) for t, v in fields)
    raw = b"8=FIX.4.4\x019=%d\x01%s" % (len(body), body)
    raw += b"10=%03d\x01" % (sum(raw) % 256)
    c, _, _, _ = fast.split(raw, 1 << 20)
    p, _, _, _ = codec.py_split(raw, 1 << 20)
    return (c[0], p[0]) if c else (None, None)


@SLOW
@given(header_messages())
def test_check_header_matches_the_reference(fields):
    c_msg, p_msg = both(fields)
    if c_msg is None:
        return
    got = fast.check_header(c_msg)
    assert got is not NotImplemented
    assert got == session_mod._check_header_py(p_msg) == session_mod._check_header_py(c_msg)
    assert fast.check_header(p_msg) is NotImplemented


def test_check_header_declines_hand_made_values():
    m = fast.FixMessage([(8, b"FIX.4.4"), (9, b"1"), (35, b"D"), (52, TS.decode()),
                         (10, b"000")])
    assert fast.check_header(m) is NotImplemented
    m = fast.FixMessage([(8, b"FIX.4.4"), (9, b"1"), (35, b"D"), (52, TS), (43, "Y"),
                         (10, b"000")])
    assert fast.check_header(m) is NotImplemented
    m = fast.FixMessage([(8, b"FIX.4.4"), (9, b"1"), (35, b"D"), (49, b""), (10, b"000")])
    assert fast.check_header(m) == session_mod._check_header_py(m) == (4, 49)


# -------------------------------------------------------------------------------- store

@given(st.one_of(st.integers(-3, 2 ** 64 + 3), st.sampled_from([True, 1.0, "1"])),
       st.one_of(st.binary(max_size=300), st.sampled_from(["text", bytearray(b"ba"), None])),
       st.sampled_from([0, 8, 20, 300, MAX_PAYLOAD]))
def test_store_record_matches_the_reference(seq, data, max_payload):
    got = fast.store_record(seq, data, max_payload)
    if got is NotImplemented:
        assert not (type(seq) is int and 1 <= seq < 2 ** 64 and type(data) is bytes)
        return
    assert got == store_mod._record_py(seq, data, max_payload)


def test_file_store_bytes_identical(tmp_path, monkeypatch):
    msgs = [codec.py_encode("8", [(58, "x" * k)], sender="A", target="B", seq=k + 1,
                            sending_time=TS) for k in range(50)]
    for name, rec in (("c", fast.store_record), ("py", store_mod._record_py)):
        monkeypatch.setattr(store_mod, "_record", rec)
        s = FileStore(str(tmp_path / name), group_commit=name == "c")
        for k, m in enumerate(msgs):
            s.save_sent(k + 1, m)
        s.save_sent(20, msgs[0])                 # a rewind
        s.close()
    a = (tmp_path / "c" / "messages.log").read_bytes()
    assert a == (tmp_path / "py" / "messages.log").read_bytes()
    s = FileStore(str(tmp_path / "c"))
    assert [d for _, d in s.get_range(1, 0)] == msgs[:19] + [msgs[0]]
    s.close()


# ------------------------------------------------------------------------ whole sessions

class Peer:
    def __init__(self):
        self.seq = 1

    def msg(self, draw, mt: str, fields: list, seq: int | None = None) -> bytes:
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        extra = []
        if draw(st.integers(0, 9)) == 0:
            extra.append((43, draw(st.sampled_from(["Y", "N", "x"]))))
            if draw(st.booleans()):
                extra.append((122, draw(st.sampled_from([TS, b"bad", b"20240102-10:00:00"]))))
        sender = "EVE" if draw(st.integers(0, 39)) == 0 else "BRK"
        sending = TS
        if draw(st.integers(0, 39)) == 0:
            sending = draw(st.sampled_from([b"bad", b"20200101-00:00:00"]))
        return codec.py_encode(mt, fields, sender=sender, target="BOURSE", seq=seq,
                               sending_time=sending, extra_header=extra)


ORDER = [(11, "C1"), (1, "A1"), (55, "SBER"), (54, 1), (60, TS), (38, 10), (40, 2),
         (44, "280.5"), (59, 0)]


@st.composite
def conversations(draw) -> list[bytes]:
    p = Peer()
    out = [p.msg(draw, "A", [(98, 0), (108, 30)])]
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["order"] * 6 + ["bad_order", "hb", "test", "gap", "low",
                                                     "resend", "junk", "reset", "logout"]))
        if kind == "order":
            out.append(p.msg(draw, "D", ORDER))
        elif kind == "bad_order":
            fields = list(ORDER)
            i = draw(st.integers(0, len(fields) - 1))
            fields[i] = (fields[i][0], draw(st.sampled_from(["", "x", "-1", "9.999"])))
            out.append(p.msg(draw, "D", fields if draw(st.booleans()) else fields[:i]))
        elif kind == "hb":
            out.append(p.msg(draw, "0", []))
        elif kind == "test":
            out.append(p.msg(draw, "1", [(112, "T")]))
        elif kind == "gap":
            p.seq += draw(st.integers(1, 3))
            out.append(p.msg(draw, "D", ORDER))
        elif kind == "low":
            out.append(p.msg(draw, "D", ORDER, seq=max(1, p.seq - 2)))
        elif kind == "resend":
            out.append(p.msg(draw, "2", [(7, 1), (16, 0)]))
        elif kind == "junk":
            out.append(draw(st.binary(max_size=40)))
        elif kind == "reset":
            out.append(p.msg(draw, "4", [(123, "Y"), (36, p.seq + 2)]))
            p.seq += 2
        else:
            out.append(p.msg(draw, "5", []))
    return out


def run(chunks: list[bytes], compiled: bool, monkeypatch) -> list:
    if compiled:
        monkeypatch.setattr(codec, "_split", fast.split)
        monkeypatch.setattr(session_mod, "_check_header", fast.check_header)
        monkeypatch.setattr(session_mod, "_in_sequence", fast.in_sequence)
    else:
        monkeypatch.setattr(codec, "_split", codec.py_split)
        monkeypatch.setattr(session_mod, "_check_header", lambda m: NotImplemented)
        monkeypatch.setattr(session_mod, "_in_sequence", None)
    s = Session(SessionConfig(target_comp_id="BRK"), MemoryStore(T0), VALIDATOR)
    log = []
    log += s.on_connect(T0)
    for i, c in enumerate(chunks):
        log += s.on_bytes(c, T0 + i)
        log += s.send_app("8", [(37, i), (58, "report")], T0 + i)
        log += s.on_timer(T0 + i * 10 ** 9)
    out = []
    for a in log:
        if type(a) is Deliver:
            out.append(("deliver", a.msg.fields, a.msg.raw))
        elif type(a) is Send:
            out.append(("send", a.data, a.seq, a.msg_type, a.poss_dup))
        else:
            out.append(a)
    return out


@SLOW
@given(conversations(), st.data())
def test_sessions_behave_the_same(messages, data):
    stream = b"".join(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    with pytest.MonkeyPatch.context() as mp:
        compiled = run(chunks, True, mp)
    with pytest.MonkeyPatch.context() as mp:
        reference = run(chunks, False, mp)
    assert compiled == reference


@SLOW
@given(st.sampled_from([b"FIX.4.4", b"FIX.4.2"]), st.sampled_from([b"BRK", b"EVE"]),
       st.sampled_from([b"BOURSE", b"X"]), st.sampled_from([b"7", b"07", b"6", b"0", b"x", b"",
                                                           b"9" * 19]),
       st.sampled_from([b"D", b"4", b"A", b"0", b"AF"]),
       st.sampled_from([None, TS, b"bad", b"20200101-00:00:00", TS[:-4]]),
       st.integers(-3 * 10**9, 3 * 10**9))
def test_in_sequence_passes_only_what_the_python_test_passes(begin, sender, target, seq, mt,
                                                              sending, skew):
    fields = [(8, begin), (9, b"1"), (35, mt), (49, sender), (56, target), (34, seq)]
    if sending is not None:
        fields.append((52, sending))
    msg = fast.FixMessage(fields + [(10, b"000")])
    now, tol, expected = T0 + skew, 2 * 10**9, 7
    got = fast.in_sequence(msg, b"FIX.4.4", b"BRK", b"BOURSE", expected, now, tol)
    raw = msg.get(34)
    ok = (msg.get(8) == b"FIX.4.4" and raw is not None and raw.isdigit() and len(raw) <= 18
          and msg.msg_type not in ("4", "A") and msg.get(49) == b"BRK"
          and msg.get(56) == b"BOURSE" and int(raw) == expected)
    if ok:
        sent = session_mod._ts(msg.get(52))
        ok = sent is None or abs(sent - now) <= tol
    if got:
        assert ok
    # and it is not merely cautious: the plain in-sequence message passes
    if (begin, sender, target, seq, mt) == (b"FIX.4.4", b"BRK", b"BOURSE", b"7", b"D") \
            and sending in (None, TS) and abs(skew) <= tol:
        assert got
