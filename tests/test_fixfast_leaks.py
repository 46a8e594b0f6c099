"""Reference counting of the compiled hot path: 100 000 rounds through every entry point of
``fix_gateway._fixfast`` (valid and garbled frames, messages made by hand, the fallbacks to the
reference and their errors, the validator tables, the session and store helpers) must leave
the traced memory where it was."""
from __future__ import annotations

import gc
import tracemalloc

import pytest

from fix_gateway import codec, session as session_mod
from fix_gateway.dictionary import load_dictionary
from fix_gateway.gateway import DICTIONARY
from fix_gateway.validator import Validator

fast = pytest.importorskip("fix_gateway._fixfast")
fast.set_fallbacks(codec.py_format_utc_timestamp, codec.py_parse_utc_timestamp, codec.py_encode,
                   codec.Garbled)
fast.set_header_tags(session_mod.HEADER_TAGS, session_mod._HOP_TAGS)

TS = b"20240102-10:00:00.123"
ROUNDS = 100_000


def _frame(body: bytes) -> bytes:
    head = b"8=FIX.4.4\x019=%d\x01%s" % (len(body), body)
    return head + b"10=%03d\x01" % (sum(head) % 256)


ORDER = _frame(b"35=D\x0149=BRK\x0156=BOURSE\x0134=2\x0152=" + TS + b"\x0111=C1\x011=A1\x01"
               b"55=SBER\x0154=1\x0160=" + TS + b"\x0138=10\x0140=2\x0144=280.5\x0159=0\x01")
BAD_ORDER = _frame(b"35=D\x0149=BRK\x0156=BOURSE\x0134=3\x0152=" + TS + b"\x0111=C2\x01"
                   b"55=SBER\x0154=7\x0138=x\x0140=2\x0159=0\x0199=\x01")
STREAMS = [
    ORDER + BAD_ORDER,
    b"junk" + ORDER + b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01" + ORDER[:40],
    _frame(b"35=D\x0195=3\x0196=a\x01b\x0155=X\x01") + _frame(b"35=D\x0195=9\x0196=a\x01"),
    _frame(b"35=D\x0199999999999=big\x0155=X\x0155=Y\x01"),
    _frame(b"35=D\x01" + b"7" * 5000 + b"=x\x01") + ORDER,
    ORDER.replace(b"10=", b"10=9")[:-2] + b"\x01" + ORDER[:-3] + b"999",
]
FIELDS = [(37, "1"), (11, "C1"), (17, "9"), (150, "0"), (54, 1), (44, b"280.5"), (14, True),
          (38, 10)]


#: a table whose enum (more than eight values: a set) and call checks make objects per check
TABLE = fast.MsgTable([(8, 0, fast.K_ANY, None), (9, 0, fast.K_ANY, None),
                       (35, 0, fast.K_ENUM, frozenset(b"M%02d" % k for k in range(12))),
                       (100, 1, fast.K_MULTIENUM, frozenset(b"V%02d" % k for k in range(12))),
                       (101, 1, fast.K_CALL, lambda b: b.isdigit()), (10, 2, fast.K_ANY, None)],
                      (100,), [(101, (b"77",), 102)])
TABLE_MSGS = [fast.split(_frame(b"35=M03\x01100=V01 V11\x01101=%s\x01" % v), 1 << 16)[0][0]
              for v in (b"77", b"12", b"x")]


def one_round(i: int, validator: Validator) -> None:
    TABLE.check(TABLE_MSGS[i % 3])
    frames, pos, garbled, need = fast.split(STREAMS[i % len(STREAMS)], 4096 + i % 3)
    for m in frames:
        m.get(55)
        m.get(9999, b"d")
        m.get("55")
        _ = m.msg_type, m.fields, m.raw, 35 in m, m.get_all(55), hash(m), m == m
        if i % 97 == 0:
            repr(m)
        validator.validate(m)
        fast.check_header(m)
    hand = fast.FixMessage([(8, b"FIX.4.4"), (9, b"1"), (35, b"0"), (52, TS), (10, b"000")])
    hand.get(52)
    fast.check_header(hand)
    fast.FixMessage([("x", 1)], raw=b"r").get("x")
    fast.encode("8", FIELDS, sender=b"BOURSE", target="BRK", seq=i, sending_time=TS,
                extra_header=((43, "Y"),))
    if i % 11 == 0:
        fast.encode("8", [(58, "caf\u00e9")], sender="B", target="T", seq=1, sending_time=TS)
        with pytest.raises(ValueError):
            fast.encode("8", [(58, "a\x01b")], sender="B", target="T", seq=1, sending_time=TS)
        with pytest.raises(TypeError):
            fast.encode("8", [], sender="B")
        with pytest.raises(ValueError):
            fast.parse_utc_timestamp(b"20241301-10:00:00")
        fast.format_utc_timestamp(-5)
    fast.format_utc_timestamp(1_704_189_600_123_456_789 + i * 1_000_000)
    fast.parse_utc_timestamp(TS)
    fast.store_record(i + 1, ORDER, 1 << 24)
    fast.store_record(i + 1, "text", 1 << 24)


def test_no_leak_over_100k_rounds():
    validator = Validator(load_dictionary(DICTIONARY))
    for i in range(3000):                      # fill every cache first
        one_round(i, validator)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(ROUNDS):
            one_round(i, validator)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes more after {ROUNDS} rounds"
