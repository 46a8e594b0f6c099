"""The validator's compiled fast path (fix_gateway._fixfast.MsgTable) against the Python one.

For random valid and invalid messages of every message type of the exchange's dictionary and of
QuickFIX's full FIX 4.4 dictionary: the compiled check accepts exactly the messages the Python
fast path accepts, and ``validate`` answers the same ``Reject`` (reason, tag, text) for a
compiled ``FixMessage``, for the reference ``PyFixMessage`` and through the full check alone.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fix_gateway import codec
from fix_gateway.dictionary import FORMAT_CHECKS, MULTI_VALUE_TYPES, FieldRef, GroupDef, \
    load_dictionary
from fix_gateway.validator import Validator, _C_KINDS, _c_check

fast = pytest.importorskip("fix_gateway._fixfast")
fast.set_fallbacks(codec.py_format_utc_timestamp, codec.py_parse_utc_timestamp, codec.py_encode,
                   codec.Garbled)
pytestmark = pytest.mark.skipif(codec._fast is None,
                                reason="the compiled hot path is not in use (no tables built)")

SPEC = Path(__file__).resolve().parent.parent / "spec" / "FIX44-bourse.xml"
FULL = Path(sys.prefix) / "share" / "quickfix" / "FIX44.xml"
TS = b"20240501-10:00:00.123"
SLOW = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=150)

VALIDATORS = {"bourse": Validator(load_dictionary(str(SPEC)))}
if FULL.exists():
    VALIDATORS["fix44"] = Validator(load_dictionary(str(FULL)))

#: a well-formed value per FIX type
GOOD = {
    "INT": b"-12", "LENGTH": b"3", "SEQNUM": b"7", "NUMINGROUP": b"1", "TAGNUM": b"55",
    "DAYOFMONTH": b"9", "FLOAT": b"1.5", "QTY": b"100", "PRICE": b"280.15",
    "PRICEOFFSET": b"-0.5", "AMT": b".25", "PERCENTAGE": b"3.", "CHAR": b"X", "BOOLEAN": b"Y",
    "STRING": b"abc", "EXCHANGE": b"MISX", "LANGUAGE": b"en", "DATA": b"d\x01ta",
    "XMLDATA": b"<x/>", "XID": b"id", "XIDREF": b"id", "CURRENCY": b"USD", "COUNTRY": b"RU",
    "MULTIPLEVALUESTRING": b"A B", "MULTIPLESTRINGVALUE": b"A", "MULTIPLECHARVALUE": b"A",
    "UTCTIMESTAMP": TS, "UTCTIMEONLY": b"10:00:00", "UTCDATEONLY": b"20240501",
    "UTCDATE": b"20240501", "LOCALMKTDATE": b"20240501", "DATE": b"20240501",
    "TIME": TS, "LOCALMKTTIME": b"10:00:00", "MONTHYEAR": b"202405w2",
    "TZTIMEONLY": b"10:00:00Z", "TZTIMESTAMP": TS + b"+03:00",
}
JUNK = [b"", b"x", b"-", b"1.", b".", b"-.5", b"1e3", b"A B", b"A  B", b" A", b"A ", b"YN",
        b"20241301-10:00:00", b"20240132-10:00:00", b"20240501-24:00:00", b"20240501-10:00:61",
        b"20240501-10:00:60.1234", b"99", b"\xff", b"\x7f", b"!", b"~", b"0", b"N"]


def value_for(v: Validator, tag: int, draw) -> bytes:
    f = v.dictionary.fields.get(tag)
    choice = draw(st.integers(0, 9))
    if f is None or choice == 0:
        return draw(st.sampled_from(JUNK))
    if f.values and choice > 3:
        enums = [e.encode("latin-1") for e, _ in f.values]
        if f.type in MULTI_VALUE_TYPES and choice == 9:
            return b" ".join(draw(st.lists(st.sampled_from(enums), min_size=1, max_size=3)))
        return draw(st.sampled_from(enums))
    return GOOD.get(f.type, b"v")


def members_of(v: Validator, mt: str):
    d = v.dictionary
    return d.header[3:], d.messages[mt].members


@st.composite
def messages(draw) -> tuple[Validator, list[tuple[int, bytes]]]:
    v = VALIDATORS[draw(st.sampled_from(sorted(VALIDATORS)))]
    mt = draw(st.sampled_from(sorted(v.dictionary.messages) + ["ZZ", "8"]))
    header = [(49, b"BRK"), (56, b"BOURSE"), (34, b"5"), (52, TS)]
    if mt in v.dictionary.messages:
        hdr, body_members = members_of(v, mt)
        body: list[tuple[int, bytes]] = []
        for m in body_members:
            if not (m.required or draw(st.integers(0, 3)) == 0):
                continue
            if isinstance(m, GroupDef):
                n = draw(st.integers(0, 2))
                body.append((m.number, b"%d" % (n + draw(st.sampled_from([0, 0, 0, 1])))))
                for _ in range(n):
                    for k, gm in enumerate(m.members):
                        if k == 0 or gm.required or draw(st.booleans()):
                            if isinstance(gm, FieldRef):
                                body.append((gm.number, value_for(v, gm.number, draw)))
            else:
                body.append((m.number, value_for(v, m.number, draw)))
        if draw(st.integers(0, 4)) == 0:
            header.append((draw(st.sampled_from([m.number for m in hdr])), b"Y"))
    else:
        body = [(55, b"X")]
    fields = header + body
    # damage: repeat, drop, move, unknown tag, empty value
    for _ in range(draw(st.integers(0, 2))):
        if not fields:
            break
        op = draw(st.integers(0, 5))
        i = draw(st.integers(0, len(fields) - 1))
        if op == 0:
            fields.insert(draw(st.integers(0, len(fields))), fields[i])
        elif op == 1:
            del fields[i]
        elif op == 2:
            fields.append(fields.pop(i))
        elif op == 3:
            fields.insert(i, (draw(st.sampled_from([5000, 9999, 20002, 1])), b"1"))
        elif op == 4:
            fields[i] = (fields[i][0], b"")
        else:
            fields[i] = (fields[i][0], draw(st.sampled_from(JUNK)))
    return v, [(35, mt.encode())] + fields


def both(fields: list[tuple[int, bytes]]):
    """The message as the compiled parser and as the reference parser give it."""
    body = b"".join(b"%d=%s\x01" % (t, val) for t, val in fields)
    raw = b"8=FIX.4.4\x019=%d\x01%s" % (len(body), body)
    raw += b"10=%03d\x01" % (sum(raw) % 256)
    c_frames, _, c_garbled, _ = fast.split(raw, 1 << 20)
    p_frames, _, p_garbled, _ = codec.py_split(raw, 1 << 20)
    assert c_garbled == p_garbled
    return (c_frames[0], p_frames[0]) if c_frames else (None, None)


@SLOW
@given(messages())
def test_compiled_fast_path_matches_python(case):
    v, fields = case
    c_msg, p_msg = both(fields)
    if c_msg is None:                  # e.g. a data field made the frame garbled
        return
    answer = v.validate(c_msg)
    assert answer == v.validate(p_msg) == v.validate_full(p_msg) == v.validate_full(c_msg)
    spec = v._msgs.get(p_msg.msg_type)
    if spec is not None:
        assert spec.ctable.check(c_msg) == Validator._fast_ok(spec, p_msg)
        if spec.ctable.check(c_msg):
            assert answer is None


def test_every_message_type_valid_and_each_required_field_missing():
    for name, v in VALIDATORS.items():
        for mt, m in v.dictionary.messages.items():
            if any(isinstance(x, GroupDef) for x in m.members):
                continue
            body = [(x.number, GOOD.get(v.dictionary.fields[x.number].type, b"v")
                     if not v.dictionary.fields[x.number].values
                     else v.dictionary.fields[x.number].values[0][0].encode())
                    for x in m.members if x.required]
            base = [(35, mt.encode()), (49, b"A"), (56, b"B"), (34, b"1"), (52, TS)]
            variants = [base + body] + [base + body[:i] + body[i + 1:] for i in range(len(body))]
            for fields in variants:
                c_msg, p_msg = both(fields)
                assert v.validate(c_msg) == v.validate_full(p_msg), (name, mt, fields)
                spec = v._msgs[mt]
                assert spec.ctable.check(c_msg) == Validator._fast_ok(spec, p_msg)


def test_hand_made_messages_take_the_python_fast_path():
    v = VALIDATORS["bourse"]
    fields = [(8, b"FIX.4.4"), (9, b"1"), (35, b"0"), (49, b"A"), (56, b"B"), (34, b"1"),
              (52, TS), (10, b"000")]
    for cls in (fast.FixMessage, codec.PyFixMessage):
        assert v.validate(cls(fields)) is None
        assert v.validate(cls(fields[:-1])) == v.validate_full(codec.PyFixMessage(fields[:-1]))
    # values that are not bytes: the compiled check declines, the full check decides
    odd = fast.FixMessage(fields[:3] + [(49, "A")] + fields[4:])
    assert v._msgs["0"].ctable.check(odd) is False


# ---------------------------------------------------------------- value checks, kind by kind

def one_field_table(kind: int, payload) -> fast.MsgTable:
    entries = [(8, 0, fast.K_ANY, None), (9, 0, fast.K_ANY, None), (35, 0, fast.K_ANY, None),
               (100, 1, kind, payload), (10, 2, fast.K_ANY, None)]
    return fast.MsgTable(entries, (), ())


def check_one(table: fast.MsgTable, value: bytes) -> bool:
    return table.check(fast.FixMessage([(8, b"F"), (9, b"1"), (35, b"D"), (100, value),
                                        (10, b"000")]))


TYPES = sorted(FORMAT_CHECKS)
value_bytes = st.one_of(st.binary(min_size=1, max_size=30),
                        st.sampled_from([x for x in JUNK if x] + list(GOOD.values())),
                        st.text("0123456789-.:+ZwAB ", min_size=1, max_size=28).map(str.encode))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TYPES), value_bytes)
def test_each_type_check_matches_its_predicate(ftype, value):
    from fix_gateway.dictionary import FieldDef
    kind, payload = _c_check(FieldDef(100, "F", ftype))
    assert check_one(one_field_table(kind, payload), value) == bool(
        FORMAT_CHECKS[ftype] is None or FORMAT_CHECKS[ftype](value))


def test_each_type_check_on_edge_values():
    from fix_gateway.dictionary import FieldDef
    edges = [bytes([c]) for c in range(256)] + [x for x in JUNK if x] + list(GOOD.values())
    edges += [b"-" + bytes([c]) for c in range(256)] + [TS[:n] for n in range(1, len(TS))]
    edges += [b"20240501-10:00:00.123456", b"20240501-10:00:00.123456789", b"00000101-00:00:00",
              b"99991231-23:59:60.999", b"2024050110:00:00", b"20240501-10:00:00.12"]
    for ftype in TYPES:
        kind, payload = _c_check(FieldDef(100, "F", ftype))
        table = one_field_table(kind, payload)
        pred = FORMAT_CHECKS[ftype]
        for value in edges:
            assert check_one(table, value) == bool(pred is None or pred(value)), (ftype, value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"A", b"B", b"CD", b"1", b"x y"]), min_size=1, max_size=12,
                unique=True), st.sampled_from(sorted(MULTI_VALUE_TYPES) + ["CHAR", "STRING"]),
       value_bytes)
def test_enum_checks_match_the_python_predicate(enums, ftype, value):
    from fix_gateway.dictionary import FieldDef
    enums = [e for e in enums if ftype in MULTI_VALUE_TYPES or b" " not in e]
    if not enums:
        return
    f = FieldDef(100, "F", ftype, tuple((e.decode(), "") for e in enums))
    kind, payload = _c_check(f)
    assert check_one(one_field_table(kind, payload), value) == bool(
        Validator._fast_check(f)(value))
    for e in enums:
        assert check_one(one_field_table(kind, payload), e) == bool(Validator._fast_check(f)(e))


def test_kinds_cover_the_native_types():
    assert set(_C_KINDS) <= set(FORMAT_CHECKS)


def test_table_construction_errors():
    for bad in ([(1, 0, 99, None)], [(1, 0, fast.K_ENUM, None)], [(1, 0, fast.K_ENUM, (1,))],
                [(1, 0, fast.K_CALL, 5)], [(-1, 0, 0, None)], [(1, 0, 0, None)] * 2, [5]):
        with pytest.raises((TypeError, ValueError)):
            fast.MsgTable(bad, (), ())
    with pytest.raises((TypeError, ValueError)):
        fast.MsgTable([], (1,), [(1, (2,), 3)])
    t = fast.MsgTable([], (), ())
    assert t.check("not a message") is False


def test_table_construction_with_lists_changed_meanwhile():
    """A tag given as an object with __index__ may change the caller's lists while the table
    is built: the table reads a copy, never beyond what it allocated."""
    class Grow:
        def __init__(self, target):
            self.target = target

        def __index__(self):
            self.target.extend([self] * 100)
            return 55

    required = []
    required.append(Grow(required))
    t = fast.MsgTable([(55, 0, fast.K_ANY, None)], required, [])
    assert t.check("not a message") is False
    rules = []
    rules.append((Grow(rules), (b"1",), 55))
    fast.MsgTable([(55, 0, fast.K_ANY, None)], (), rules)
    entries = []
    entries.append((Grow(entries), 0, fast.K_ANY, None))
    fast.MsgTable(entries, (), ())
