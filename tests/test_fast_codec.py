"""FAST codec: round trips (hypothesis) for every field type x operator x presence, the
spec's operator examples byte for byte, message streams with and without the
per-datagram dictionary reset, the exchange's templates, and the error cases.

``ValueGen``, ``expected`` and ``SPEC`` are also used by tests/test_fast_golden.py.
"""

from __future__ import annotations

import functools
import random
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketdata.fast import Decoder, Encoder, FastError, TemplateError, Templates, vm
from marketdata.fast.templates import (
    INTEGER_RANGES, ByteVectorField, DecimalField, GroupField, IntegerField,
    SequenceField, TemplateRef,
)
from marketdata.fast.values import to_pair

SPEC = Path(__file__).resolve().parent.parent / "spec" / "fast-templates.xml"
NS = 'xmlns="http://www.fixprotocol.org/ns/fast/td/1.1"'

#: the implementations under test: the compiled one (when built) and the generated Python
#: reference.  The hypothesis round trips run on the default one; tests/test_fast_vm.py
#: compares the two on the same random streams.
IMPLS = ["c", "python"] if vm.available() else ["python"]


@pytest.fixture(params=IMPLS)
def impl(request) -> str:
    return request.param


def parse(body: str, source: str = "<test>") -> Templates:
    return Templates.parse(f"<templates {NS}>{body}</templates>", source)


# ====================================================================== value generation


class RandomSource:
    """Choices from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, seq):
        return self.rng.choice(list(seq))


class DrawSource:
    """Choices drawn from hypothesis, so failures shrink and edges get explored."""

    def __init__(self, data) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def chance(self, p: float) -> bool:
        return self.data.draw(st.integers(0, 999)) < p * 1000

    def pick(self, seq):
        return self.data.draw(st.sampled_from(list(seq)))


ASCII = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .-_/\\\"'\t~\x7f"
UNICODE = "aZ09 жЖкСбер€√😀\"\\"
UNICODE_2 = "жЖкСбер"
TAIL_LEN = 5


class ValueGen:
    """Random, always-encodable values for a template's fields.

    Tail fields always get ``TAIL_LEN`` characters (a tail can never shorten a value);
    a decimal whose exponent has a constant operator gets that exponent.  With
    ``mfast_safe`` the values also avoid what mFAST cannot decode or print (see
    tests/test_fast_golden.py): deltas beyond int64, NUL characters, ``0E+n`` decimals,
    a decimal mantissa that a copy or increment operator would leave out of the stream.
    """

    def __init__(self, templates: Templates, src, mfast_safe: bool = False) -> None:
        self.templates = templates
        self.src = src
        self.safe = mfast_safe
        self.prev: dict[int, object] = {}

    def message(self, template) -> dict:
        return self.fields(template.fields)

    def fields(self, fields) -> dict:
        out = {}
        for f in fields:
            if isinstance(f, TemplateRef):
                out.update(self.fields(self.templates.by_name[f.template].fields))
            else:
                out[f.name] = self.field(f)
        return out

    def field(self, f):
        s = self.src
        if isinstance(f, SequenceField):
            if f.optional and s.chance(0.2):
                return None
            return [self.fields(f.fields) for _ in range(s.integer(0, 4))]
        if isinstance(f, GroupField):
            if f.optional and s.chance(0.3):
                return None
            return self.fields(f.fields)
        op = f.operator if not isinstance(f, DecimalField) or not f.individual else None
        if op is not None and op.kind == "constant":
            if f.optional:
                return None if s.chance(0.4) else op.value
            return op.value
        if f.optional and s.chance(0.2):
            return None
        # mFAST loses the exponent when a mantissa comes from the dictionary (whose entry
        # is keyed by name: fields of one name share it)
        fresh_mantissa = self.safe and isinstance(f, DecimalField) and f.individual \
            and f.mantissa.kind in ("copy", "increment")
        key = f.name if fresh_mantissa else id(f)
        prev = self.prev.get(key)
        if prev is not None and s.chance(0.3) and not fresh_mantissa:
            v = prev
            if isinstance(f, IntegerField) and s.chance(0.5) and v < INTEGER_RANGES[f.type][1]:
                v = v + 1
        else:
            v = self.fresh(f)
            if fresh_mantissa and prev is not None:
                m, e = to_pair(v)
                if m - to_pair(prev)[0] in (0, 1):
                    v = (m + 2 if m < 0 else m - 2, e)
        self.prev[key] = v
        return v

    def fresh(self, f):
        s = self.src
        if isinstance(f, IntegerField):
            lo, hi = INTEGER_RANGES[f.type]
            if self.safe and f.operator.kind == "delta":
                lo, hi = max(lo, -(1 << 62)), min(hi, 1 << 62)
            if f.operator.value is not None and s.chance(0.2):
                return f.operator.value
            return s.pick([s.integer(lo, hi), s.integer(max(lo, -200), min(hi, 200)), lo, hi])
        if isinstance(f, DecimalField):
            e = s.integer(-12, 12) if s.chance(0.9) else s.integer(-63, 63)
            if f.individual and f.exponent.kind == "constant":
                e = f.exponent.value
            big = (1 << 62) if self.safe else (1 << 63) - 1
            m = s.pick([s.integer(-10 ** 9, 10 ** 9), s.integer(-big, big), 0, 1, -1])
            if self.safe and m == 0 and e > 0:
                e = 0
            if s.chance(0.5):
                return Decimal(m).scaleb(e)
            return (m, e)
        op = f.operator
        tail = op.kind == "tail"
        n = TAIL_LEN if tail else s.integer(0, 8)
        if isinstance(f, ByteVectorField):
            return bytes(s.integer(0, 255) for _ in range(n))
        if f.charset == "unicode":
            # a tail works on UTF-8 bytes: two-byte letters keep the byte length fixed
            return "".join(s.pick(UNICODE_2 if tail else UNICODE) for _ in range(n))
        alphabet = ASCII if self.safe else ASCII + "\x00\x01"
        if op.kind in ("delta", "tail"):
            # the part sent may start anywhere in the value, and an ASCII entity cannot
            # start with NUL (R9): keep NUL to the operators that send whole values
            alphabet = alphabet.replace("\x00", "")
        v = "".join(s.pick(alphabet) for _ in range(n))
        if v.startswith("\x00") and v != "\x00":
            v = "Z" + v[1:]
        return v


def expected(templates: Templates, fields, values: dict) -> dict:
    """What the decoder returns for ``values``: every field, constants filled in,
    decimals as (mantissa, exponent) pairs."""
    out = {}
    for f in fields:
        if isinstance(f, TemplateRef):
            out.update(expected(templates, templates.by_name[f.template].fields, values))
            continue
        v = values.get(f.name)
        if isinstance(f, SequenceField):
            out[f.name] = None if v is None else [expected(templates, f.fields, e) for e in v]
        elif isinstance(f, GroupField):
            out[f.name] = None if v is None else expected(templates, f.fields, v)
        elif isinstance(f, DecimalField):
            if v is None and not f.optional and f.operator is not None \
                    and f.operator.kind in ("constant", "default"):
                v = f.operator.value
            out[f.name] = None if v is None else to_pair(v)
        else:
            if v is None and not f.optional and f.operator.kind in ("constant", "default"):
                v = f.operator.value
            out[f.name] = v
    return out


_CODECS: dict = {}


def codecs(templates: Templates, front_deltas: bool = False):
    """A compiled encoder and pair-mode decoder per template set, reset."""
    key = (id(templates), front_deltas)
    if key not in _CODECS:
        _CODECS[key] = (templates, Encoder(templates, front_deltas=front_deltas),
                        Decoder(templates, decimals="pair"))
    _, enc, dec = _CODECS[key]
    enc.reset()
    dec.reset()
    return enc, dec


def check_stream(templates: Templates, messages, reset_each: bool,
                 front_deltas: bool = False) -> None:
    """Encode then decode ``(template, values)`` messages with one encoder/decoder."""
    enc, dec = codecs(templates, front_deltas)
    for seq, (t, values) in enumerate(messages):
        want = expected(templates, t.fields, values)
        if reset_each:
            enc.reset()
            dec.reset()
            # the datagram path (fresh dictionaries as locals) must agree byte for byte
            dg = enc.encode_datagram(t.name, values, seqnum=seq)
            assert dec.decode_datagram(dg) == (seq, t, want), dg.hex()
        data = enc.encode(t.id, values)
        if reset_each:
            assert dg[4:] == data
        got_t, got, used = dec.decode(data + b"\xff")  # trailing byte must not be read
        assert got_t is t and used == len(data)
        assert got == want, data.hex()


# ====================================================================== type x operator


SCALARS = ["int32", "uInt32", "int64", "uInt64", "decimal", "ascii", "unicode", "byteVector"]
INITIAL = {"int32": "-5", "uInt32": "7", "int64": "-300", "uInt64": "9000", "decimal": "1.25",
           "ascii": "ab", "unicode": "жк", "byteVector": "0a0b"}


def ops_for(t: str):
    ops = ["none", "constant", "default", "copy", "delta"]
    if t in INTEGER_RANGES:
        ops.append("increment")
    if t in ("ascii", "unicode", "byteVector"):
        ops.append("tail")
    return ops


def scalar_xml(name: str, t: str, op: str, optional: bool, init) -> str:
    pres = ' presence="optional"' if optional else ""
    body = "" if op == "none" else (f'<{op} value="{init}"/>' if init is not None else f"<{op}/>")
    if t in ("ascii", "unicode"):
        return f'<string name="{name}" charset="{t}"{pres}>{body}</string>'
    return f'<{t} name="{name}"{pres}>{body}</{t}>'


def variants(op: str):
    """(suffix, optional, has_initial_value) combinations the spec allows for ``op``."""
    for optional in (False, True):
        for init in (False, True):
            if op == "none" and init or op == "constant" and not init:
                continue
            if op == "default" and not optional and not init:
                continue
            yield f"{'o' if optional else 'm'}{'i' if init else 'n'}", optional, init


@functools.lru_cache(maxsize=None)
def combo_templates(t: str, op: str) -> Templates:
    def fields(prefix):
        return "".join(scalar_xml(prefix + sfx, t, op, opt, INITIAL[t] if init else None)
                       for sfx, opt, init in variants(op))
    return parse(f'<template name="C" id="1">{fields("top_")}'
                 f'<sequence name="S">{fields("")}</sequence>{fields("end_")}</template>')


TYPE_OPS = [(t, op) for t in SCALARS for op in ops_for(t)]


@pytest.mark.parametrize("t, op", TYPE_OPS, ids=[f"{t}-{op}" for t, op in TYPE_OPS])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_type_x_operator_x_presence(t, op, data):
    templates = combo_templates(t, op)
    tpl = templates[1]
    gen = ValueGen(templates, DrawSource(data))
    messages = [(tpl, gen.message(tpl)) for _ in range(data.draw(st.integers(1, 4)))]
    check_stream(templates, messages, reset_each=False)
    check_stream(templates, messages, reset_each=True, front_deltas=True)


DEC_OPS = ["none", "constant", "default", "copy", "increment", "delta"]
DEC_PAIRS = [(a, b) for a in DEC_OPS for b in DEC_OPS]


@functools.lru_cache(maxsize=None)
def individual_templates(eop: str, mop: str) -> Templates | None:
    def part(tag, op, init):
        if op == "none":
            return ""
        body = f'<{op} value="{init}"/>' if init is not None else f"<{op}/>"
        return f"<{tag}>{body}</{tag}>"

    fields = []
    for opt in (False, True):
        for ei in (None, "-2"):
            for mi in (None, "5"):
                if eop == "constant" and ei is None or mop == "constant" and mi is None:
                    continue
                if eop == "default" and not opt and ei is None or mop == "default" and mi is None:
                    continue
                pres = ' presence="optional"' if opt else ""
                name = f"{'o' if opt else 'm'}{'e' if ei else '_'}{'m' if mi else '_'}"
                fields.append(f'<decimal name="{name}"{pres}>{part("exponent", eop, ei)}'
                              f'{part("mantissa", mop, mi)}</decimal>')
    if not fields:
        return None
    # a trailing copy field checks the presence-map bits after the decimal stay aligned
    tail = '<uInt32 name="after"><copy/></uInt32>'
    xml = "".join(fields) + tail
    return parse(f'<template name="D" id="2">{xml}<sequence name="S">{xml}</sequence>'
                 f'</template>')


@pytest.mark.parametrize("eop, mop", DEC_PAIRS, ids=[f"exp_{a}-mant_{b}" for a, b in DEC_PAIRS])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_decimal_individual_operators(eop, mop, data):
    templates = individual_templates(eop, mop)
    if templates is None:
        return  # no variant is valid (e.g. a constant without its value)
    tpl = templates[2]
    gen = ValueGen(templates, DrawSource(data))
    messages = []
    for _ in range(data.draw(st.integers(1, 3))):
        values = gen.message(tpl)
        _fit_individual(tpl.fields, values)
        messages.append((tpl, values))
    check_stream(templates, messages, reset_each=False)
    check_stream(templates, messages, reset_each=True)


def _fit_individual(fields, values):
    """Give constant-mantissa decimals their constant mantissa (their value set is tiny)."""
    for f in fields:
        if isinstance(f, SequenceField):
            for e in values[f.name] or []:
                _fit_individual(f.fields, e)
        elif isinstance(f, DecimalField) and f.individual and values.get(f.name) is not None:
            m, e = to_pair(values[f.name])
            if f.mantissa.kind == "constant":
                m = f.mantissa.value
            if f.exponent.kind == "constant":
                e = f.exponent.value
            values[f.name] = (m, e)


# ====================================================================== exchange templates


@pytest.fixture(scope="module")
def spec_templates() -> Templates:
    return Templates.load(SPEC)


def test_exchange_templates_load(spec_templates):
    names = {t.name: t.id for t in spec_templates}
    assert names == {
        "MessageHeader": 100, "Logon": 1000, "Logout": 1001, "Heartbeat": 6,
        "SequenceReset": 7, "MarketDataIncrementalRefresh": 15,
        "MarketDataSnapshotFullRefresh": 14, "SecurityDefinition": 3, "SecurityStatus": 9,
        "TradingSessionStatus": 11,
    }
    # the templates exercise every operator
    kinds = set()

    def walk(fields):
        for f in fields:
            if isinstance(f, (SequenceField, GroupField)):
                walk(f.fields)
            elif isinstance(f, DecimalField) and f.individual:
                kinds.update({f.exponent.kind, f.mantissa.kind, "individual"})
            elif not isinstance(f, TemplateRef):
                kinds.add(f.operator.kind)
    for t in spec_templates:
        walk(t.fields)
    assert {"none", "constant", "default", "copy", "increment", "delta", "tail",
            "individual"} <= kinds


@settings(max_examples=120, deadline=None)
@given(rng=st.randoms(use_true_random=False), reset_each=st.booleans())
def test_exchange_template_streams(spec_templates, rng, reset_each):
    gen = ValueGen(spec_templates, RandomSource(rng))
    tpls = list(spec_templates)
    messages = []
    for _ in range(12):
        t = rng.choice(tpls)
        messages.append((t, gen.message(t)))
    check_stream(spec_templates, messages, reset_each=reset_each, front_deltas=not reset_each)


def test_incremental_refresh_datagram(spec_templates, impl):
    enc, dec = Encoder(spec_templates, impl=impl), Decoder(spec_templates, impl=impl)
    entry = {"MDUpdateAction": 0, "MDEntryType": "0", "SecurityID": 2871, "Symbol": "SBER",
             "TradingSessionID": "TQBR", "RptSeq": 41, "MDEntryPx": Decimal("250.15"),
             "MDEntrySize": 100, "MDEntryTime": 101530123, "NumberOfOrders": None,
             "MDPriceLevel": None, "MDEntryID": "7000001", "TradeID": None,
             "AggressorSide": None}
    second = dict(entry, MDUpdateAction=1, MDEntryType="1", RptSeq=42,
                  MDEntryPx=Decimal("250.20"), MDEntrySize=70, MDEntryID="7000002")
    values = {"MsgSeqNum": 77, "SendingTime": 20231123153012345, "MDEntries": [entry, second]}
    dg = enc.encode_datagram("MarketDataIncrementalRefresh", values)
    assert dg[:4] == (77).to_bytes(4, "little")
    again = enc.encode_datagram("MarketDataIncrementalRefresh", values)
    assert again == dg  # fresh dictionaries each datagram: identical bytes
    seq, t, got = dec.decode_datagram(dg)
    assert (seq, t.name) == (77, "MarketDataIncrementalRefresh")
    assert got["MDEntries"][1]["MDEntryPx"] == Decimal("250.20")
    assert str(got["MDEntries"][1]["MDEntryPx"]) == "250.20"  # exponent kept exactly
    assert got["MDEntries"][1]["Symbol"] == "SBER"
    assert got["MessageType"] == "X" and got["SenderCompID"] == "MOEX"
    # the second entry repeats the symbol, session, time: they are not on the wire twice
    assert dg.count(b"SBE") == 1 and dg.count(b"TQB") == 1
    # a second datagram decodes the same on the same decoder (reset per datagram)
    assert dec.decode_datagram(again)[2] == got
    with pytest.raises(FastError):
        dec.decode_datagram(dg + b"\x80")       # bytes after the message
    with pytest.raises(FastError):
        dec.decode_datagram(dg[:3])


def test_decimal_modes(spec_templates, impl):
    enc = Encoder(spec_templates, impl=impl)
    values = {"MsgSeqNum": 1, "SendingTime": 2, "Symbol": "SBER", "HighLimitPx": (27500, -2),
              "LowLimitPx": Decimal("-0.005")}
    data = enc.encode("SecurityStatus", values)
    _, got, _ = Decoder(spec_templates, impl=impl).decode(data)
    assert got["HighLimitPx"] == Decimal("275.00") and str(got["HighLimitPx"]) == "275.00"
    assert got["LowLimitPx"].as_tuple() == Decimal("-0.005").as_tuple()
    _, got, _ = Decoder(spec_templates, decimals="pair", impl=impl).decode(data)
    assert got["HighLimitPx"] == (27500, -2) and got["LowLimitPx"] == (-5, -3)


# ====================================================================== spec examples


def one_field(xml: str) -> Templates:
    return parse(f'<template name="T" id="1">{xml}</template>')


def encode_seq(templates, values_list, front_deltas=False, impl="auto"):
    """Bytes of each message after the presence map and template id; and the pmap bits."""
    enc = Encoder(templates, front_deltas=front_deltas, impl=impl)
    out = []
    for v in values_list:
        data = enc.encode(1, v)
        assert data[0] & 0x80, "one-byte pmap expected"
        bits = [(data[0] >> (6 - k)) & 1 for k in range(7)]
        body = data[1:]
        if bits[0]:
            body = body[1:]  # template id
        out.append((bits[1:], body.hex(" ")))
    return out


def test_spec_constant_operator(impl):
    t = one_field('<uInt32 name="Flag"><constant value="0"/></uInt32>')
    assert encode_seq(t, [{"Flag": 0}], impl=impl) == [([0] * 6, "")]
    with pytest.raises(FastError):
        Encoder(t, impl=impl).encode(1, {"Flag": 99})
    t = one_field('<uInt32 name="Flag" presence="optional"><constant value="0"/></uInt32>')
    assert [b[0] for b, _ in encode_seq(t, [{"Flag": 0}, {"Flag": None}], impl=impl)] == [1, 0]


def test_spec_default_operator(impl):
    t = one_field('<uInt32 name="Flag"><default value="0"/></uInt32>')
    assert encode_seq(t, [{"Flag": 0}, {"Flag": 1}], impl=impl) == [([0] * 6, ""),
                                                                    ([1] + [0] * 5, "81")]
    t = one_field('<uInt32 name="Flag" presence="optional"><default/></uInt32>')
    assert encode_seq(t, [{"Flag": None}], impl=impl) == [([0] * 6, "")]


def test_spec_copy_operator(impl):
    t = one_field('<string name="Flag"><copy/></string>')
    got = encode_seq(t, [{"Flag": "CME"}, {"Flag": "CME"}, {"Flag": "ISE"}], impl=impl)
    assert [(b[0], h) for b, h in got] == [(1, "43 4d c5"), (0, ""), (1, "49 53 c5")]
    t = one_field('<string name="Flag" presence="optional"><copy/></string>')
    got = encode_seq(t, [{"Flag": None}, {"Flag": None}, {"Flag": "CME"}], impl=impl)
    assert [(b[0], h) for b, h in got] == [(0, ""), (0, ""), (1, "43 4d c5")]


def test_spec_copy_optional_null_after_value(impl):
    t = one_field('<string name="Flag" presence="optional"><copy/></string>')
    got = encode_seq(t, [{"Flag": "CME"}, {"Flag": None}, {"Flag": None}], impl=impl)
    assert [(b[0], h) for b, h in got] == [(1, "43 4d c5"), (1, "80"), (0, "")]


def test_spec_increment_operator(impl):
    t = one_field('<uInt32 name="Flag"><increment value="1"/></uInt32>')
    got = encode_seq(t, [{"Flag": v} for v in (1, 2, 4, 5)], impl=impl)
    assert [(b[0], h) for b, h in got] == [(0, ""), (0, ""), (1, "84"), (0, "")]


def test_increment_wraps_at_the_maximum(impl):
    t = one_field('<uInt32 name="N"><increment/></uInt32>')
    enc, dec = Encoder(t, impl=impl), Decoder(t, impl=impl)
    for v in (4294967295, 0):
        _, got, _ = dec.decode(enc.encode(1, {"N": v}))
        assert got["N"] == v
    assert encode_seq(t, [{"N": 4294967295}, {"N": 0}], impl=impl)[1] == ([0] * 6, "")


def test_spec_delta_integer(impl):
    t = one_field('<int32 name="Price"><delta/></int32>')
    got = encode_seq(t, [{"Price": v} for v in (942755, 942750, 942745, 942745)], impl=impl)
    assert [h for _, h in got] == ["39 45 a3", "fb", "fb", "80"]


def test_spec_delta_decimal(impl):
    t = one_field('<decimal name="Price"><delta/></decimal>')
    got = encode_seq(t, [{"Price": Decimal(v)} for v in ("9427.55", "9427.51", "9427.46")],
                     impl=impl)
    assert [h for _, h in got] == ["fe 39 45 a3", "80 fc", "80 fb"]


def test_spec_delta_decimal_with_initial_value(impl):
    t = one_field('<decimal name="Price"><delta value="12000"/></decimal>')
    assert t[1].fields[0].operator.value == (12, 3)  # normalized initial value
    got = encode_seq(t, [{"Price": (1210, 1)}, {"Price": (1215, 1)}, {"Price": (1220, 1)}],
                     impl=impl)
    assert [h for _, h in got] == ["fe 09 ae", "80 85", "80 85"]


def test_spec_delta_string(impl):
    t = one_field('<string name="Security"><delta/></string>')
    values = [{"Security": v} for v in ("GEH6", "GEM6", "ESM6", "RSESM6")]
    got = encode_seq(t, values, front_deltas=True, impl=impl)
    assert [h for _, h in got] == ["80 47 45 48 b6", "82 4d b6", "fd 45 d3", "ff 52 d3"]
    # by default only back deltas (see Encoder): ESM6 replaces GEM6 whole
    got = encode_seq(t, values, impl=impl)
    assert [h for _, h in got] == ["80 47 45 48 b6", "82 4d b6", "84 45 53 4d b6",
                                   "84 52 53 45 53 4d b6"]
    dec = Decoder(t, impl=impl)
    enc = Encoder(t, front_deltas=True, impl=impl)
    for v in ("GEH6", "GEM6", "ESM6", "RSESM6", "", "X"):
        assert dec.decode(enc.encode(1, {"Security": v}))[1]["Security"] == v


def test_spec_individual_decimal_operators(impl):
    # Appendix 3.2.6 ex.3.  The mantissa is a *mandatory* int64 (spec 10.5.1), so it is
    # non-nullable: 942755 is "39 45 a3" (the appendix prints a4, contradicting 10.5.1;
    # mFAST agrees with 10.5.1, see test_fast_golden.py).
    t = one_field('<decimal name="Value" presence="optional"><exponent><copy/></exponent>'
                  '<mantissa><copy/></mantissa></decimal>')
    got = encode_seq(t, [{"Value": Decimal("9427.55")}, {"Value": Decimal("9427.60")},
                         {"Value": None}], impl=impl)
    assert got == [([1, 1, 0, 0, 0, 0], "fe 39 45 a3"), ([0, 1, 0, 0, 0, 0], "39 45 a8"),
                   ([1, 0, 0, 0, 0, 0], "80")]


def test_spec_individual_exponent_copy_mantissa_delta(impl):
    # Appendix 3.1.5 ex.7: the exponent uses a pmap bit, the mantissa does not
    t = one_field('<decimal name="Value" presence="optional"><exponent><copy/></exponent>'
                  '<mantissa><delta/></mantissa></decimal>')
    assert encode_seq(t, [{"Value": Decimal("9427.55")}], impl=impl) == [
        ([1] + [0] * 5, "fe 39 45 a3")]


def test_spec_optional_decimal_single_copy(impl):
    # Appendix 3.1.5 ex.6
    t = one_field('<decimal name="Value" presence="optional"><copy/></decimal>')
    assert encode_seq(t, [{"Value": Decimal("9427.55")}], impl=impl) == [
        ([1] + [0] * 5, "fe 39 45 a3")]


def test_hello_world_from_the_fast_tutorial(impl):
    t = parse('<template dictionary="1" id="1" name="HelloWorld"><string id="58" name="Text">'
              '<default value=""/></string></template>')
    data = bytes.fromhex("E0 81 48 65 6C 6C 6F 57 6F 72 6C E4")
    tpl, got, used = Decoder(t, impl=impl).decode(data)
    assert (tpl.name, got, used) == ("HelloWorld", {"Text": "HelloWorld"}, len(data))
    assert Encoder(t, impl=impl).encode("HelloWorld", {"Text": "HelloWorld"}) == data


def test_optional_individual_decimal_keeps_later_bits_aligned(impl):
    # the mantissa's bit exists only when the exponent is present
    t = one_field('<decimal name="D" presence="optional"><exponent><copy/></exponent>'
                  '<mantissa><copy/></mantissa></decimal><uInt32 name="X"><copy/></uInt32>')
    enc, dec = Encoder(t, impl=impl), Decoder(t, decimals="pair", impl=impl)
    msgs = [{"D": (5, -1), "X": 1}, {"D": None, "X": 2}, {"D": None, "X": 2},
            {"D": (6, -1), "X": 2}, {"D": (6, -1), "X": 3}]
    for v in msgs:
        data = enc.encode(1, v)
        assert dec.decode(data)[1] == v
    enc.reset()
    # no mantissa bit
    assert encode_seq(t, msgs[:2], impl=impl)[1] == ([1, 1, 0, 0, 0, 0], "80 82")


def test_static_template_ref_and_dictionaries(impl):
    t = parse('<template name="Hdr" id="9"><uInt32 name="Seq"><increment/></uInt32></template>'
              '<template name="A" id="1" dictionary="template"><templateRef name="Hdr"/>'
              '<uInt32 name="X"><copy/></uInt32></template>'
              '<template name="B" id="2" dictionary="template"><uInt32 name="X"><copy/></uInt32>'
              '<uInt32 name="Y"><copy dictionary="global" key="shared"/></uInt32>'
              '<uInt32 name="Z"><copy key="shared"/></uInt32></template>')
    enc, dec = Encoder(t, impl=impl), Decoder(t, impl=impl)
    msgs = [("A", {"Seq": 1, "X": 5}), ("B", {"X": 6, "Y": 7, "Z": 7}), ("A", {"Seq": 2, "X": 5}),
            ("B", {"X": 6, "Y": 7, "Z": 8})]
    sizes = []
    for name, v in msgs:
        data = enc.encode(name, v)
        sizes.append(len(data))
        assert dec.decode(data)[1] == v
    # template-scoped X keeps 5 for A and 6 for B; Seq increments: the 3rd message is
    # just pmap + template id
    assert sizes[2] == 2


def test_type_dictionary_is_shared_by_application_type(impl):
    t = parse('<template name="A" id="1"><typeRef name="Quote"/>'
              '<uInt32 name="X"><copy dictionary="type"/></uInt32></template>'
              '<template name="B" id="2"><typeRef name="Quote"/>'
              '<uInt32 name="X"><copy dictionary="type"/></uInt32></template>'
              '<template name="C" id="3"><typeRef name="Trade"/>'
              '<uInt32 name="X"><copy dictionary="type"/></uInt32></template>')
    enc = Encoder(t, impl=impl)
    assert len(enc.encode("A", {"X": 4})) == 3
    assert len(enc.encode("B", {"X": 4})) == 2     # same type: X known, only pmap + tid
    assert len(enc.encode("C", {"X": 4})) == 3     # other type: sent again


def test_sequence_length_operator_and_optional_sequence(impl):
    t = one_field('<sequence name="S" presence="optional"><length name="N"><copy/></length>'
                  '<uInt32 name="A"/></sequence><uInt32 name="after"/>')
    enc, dec = Encoder(t, impl=impl), Decoder(t, impl=impl)
    for v in ({"S": [{"A": 1}], "after": 9}, {"S": [{"A": 2}], "after": 9},
              {"S": None, "after": 9}, {"S": [], "after": 9}):
        assert dec.decode(enc.encode(1, v))[1] == v


def test_group_presence(impl):
    t = one_field('<group name="G" presence="optional"><uInt32 name="A"><copy/></uInt32>'
                  '<group name="H"><string name="S"/></group></group><uInt32 name="B"/>')
    enc, dec = Encoder(t, impl=impl), Decoder(t, impl=impl)
    for v in ({"G": None, "B": 1}, {"G": {"A": 5, "H": {"S": "x"}}, "B": 2},
              {"G": {"A": 5, "H": {"S": ""}}, "B": 3}):
        assert dec.decode(enc.encode(1, v))[1] == v


def test_encoder_reset_and_stream_of_messages(impl):
    t = one_field('<uInt32 name="X"><copy/></uInt32>')
    enc, dec = Encoder(t, impl=impl), Decoder(t, impl=impl)
    a, b = enc.encode(1, {"X": 3}), enc.encode(1, {"X": 3})
    assert len(a) == 3 and len(b) == 1  # tid and X copied
    stream = a + b
    _, v1, n1 = dec.decode(stream)
    _, v2, n2 = dec.decode(stream, n1)
    assert v1 == v2 == {"X": 3} and n1 + n2 == len(stream)
    dec.reset()
    with pytest.raises(FastError) as ei:   # no template id and no previous one
        dec.decode(b)
    assert ei.value.code == "D5"
    enc.reset()
    assert enc.encode(1, {"X": 3}) == a


# ====================================================================== errors


def test_truncated_data_raises_fast_error(spec_templates, impl):
    gen = ValueGen(spec_templates, RandomSource(random.Random(7)))
    enc, dec = Encoder(spec_templates, impl=impl), Decoder(spec_templates, impl=impl)
    for t in spec_templates:
        for _ in range(3):
            enc.reset()
            values = gen.message(t)
            data = enc.encode(t.id, values)
            dg = enc.encode_datagram(t.id, values, seqnum=9)
            for n in range(len(data)):
                dec.reset()
                with pytest.raises(FastError):
                    dec.decode(data[:n])
                with pytest.raises(FastError):
                    dec.decode_datagram(dg[:4 + n])


@pytest.fixture(scope="module", params=IMPLS)
def spec_decoders(spec_templates, request):
    return (Decoder(spec_templates, impl=request.param),
            Decoder(spec_templates, strict=False, impl=request.param))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_garbage_raises_only_fast_error(spec_decoders, data):
    strict, lenient = spec_decoders
    for dec, blob in ((strict, b"\xc0\x8f" + data),   # MarketDataIncrementalRefresh header
                      (lenient, data)):
        dec.reset()
        try:
            dec.decode(blob)
        except FastError:
            pass
        try:
            dec.decode_datagram(b"\x01\x00\x00\x00" + blob)
        except FastError:
            pass


@pytest.mark.parametrize("data, code", [
    ("c0 85", "D9"),                        # unknown template id
    ("c0 00 81", "R6"),                     # overlong template id
    ("40 80 81", "R7"),                     # overlong presence map
    ("e0 81", "R8"),                        # a bit the template does not use
])
def test_stream_level_errors(data, code, impl):
    t = one_field('<uInt32 name="X"/>')
    with pytest.raises(FastError) as ei:
        Decoder(t, impl=impl).decode(bytes.fromhex(data))
    assert ei.value.code == code


@pytest.mark.parametrize("xml, data, code", [
    ('<uInt32 name="X"><copy/></uInt32>', "c0 81", "D5"),
    ('<string name="X"><delta/></string>', "c0 81 82 c1", "D7"),
    ('<string name="X"><delta/></string>', "c0 81 fd c1", "D7"),
    ('<string name="X" charset="unicode"/>', "c0 81 81 ff", "R2"),
    ('<decimal name="X"/>', "c0 81 c0 81", "R1"),
    ('<int32 name="X"><delta value="2147483647"/></int32>', "c0 81 81", "R4"),
    ('<uInt32 name="X"/>', "c0 81 10 00 00 00 80", "D2"),
    ('<sequence name="S"><uInt32 name="A"/></sequence>', "c0 81 8a 81", "D2"),
    ('<string name="X"><tail/></string>', "c0 81", "D6"),
])
def test_dynamic_errors(xml, data, code, impl):
    with pytest.raises(FastError) as ei:
        Decoder(one_field(xml), impl=impl).decode(bytes.fromhex(data))
    assert ei.value.code == code


def test_lenient_decoder_accepts_reportable_errors(impl):
    t = one_field('<uInt32 name="X"/>')
    assert Decoder(t, strict=False, impl=impl).decode(bytes.fromhex("c0 81 00 85"))[1] == {"X": 5}


@pytest.mark.parametrize("values, fragment", [
    ({}, "missing mandatory field 'X'"),
    ({"X": "5"}, "X"),
    ({"X": 1 << 32}, "outside"),
    ({"X": -1}, "outside"),
    ({"X": 5.0}, "X"),
])
def test_encode_errors_integer(values, fragment, impl):
    t = one_field('<uInt32 name="X"/>')
    with pytest.raises(FastError) as ei:
        Encoder(t, impl=impl).encode(1, values)
    assert fragment in str(ei.value) or "invalid value" in str(ei.value)


@pytest.mark.parametrize("xml, value", [
    ('<decimal name="X"/>', 1.5),
    ('<decimal name="X"/>', Decimal("NaN")),
    ('<decimal name="X"/>', (1, 64)),
    ('<decimal name="X"/>', (1 << 63, 0)),
    ('<decimal name="X"><exponent><constant value="-2"/></exponent></decimal>', (1, -3)),
    ('<string name="X"/>', "Привет"),
    ('<string name="X"/>', b"bytes"),
    ('<string name="X"><constant value="A"/></string>', "B"),
    ('<byteVector name="X"/>', "text"),
    ('<string name="X"><tail/></string>', "short"),
    ('<sequence name="X"><uInt32 name="A"/></sequence>', [{"B": 1}]),
])
def test_encode_errors(xml, value, impl):
    t = one_field(xml)
    enc = Encoder(t, impl=impl)
    if "tail" in xml:
        enc.encode(1, {"X": "longer value"})
    with pytest.raises(FastError) as ei:
        enc.encode(1, {"X": value})
    assert "T:" in str(ei.value)


def test_encode_unknown_template(impl):
    t = one_field('<uInt32 name="X"/>')
    with pytest.raises(FastError):
        Encoder(t, impl=impl).encode("Nope", {})


def test_constant_exponent_rescales_exact_values(impl):
    t = one_field('<decimal name="X"><exponent><constant value="-2"/></exponent>'
                  '<mantissa><delta/></mantissa></decimal>')
    enc, dec = Encoder(t, impl=impl), Decoder(t, decimals="pair", impl=impl)
    assert dec.decode(enc.encode(1, {"X": Decimal("1.5")}))[1]["X"] == (150, -2)


@pytest.mark.parametrize("body, fragment", [
    ('<template name="T" id="1"><uInt32 name="X"><constant/></uInt32></template>', "S4"),
    ('<template name="T" id="1"><uInt32 name="X"><default/></uInt32></template>', "S5"),
    ('<template name="T" id="1"><string name="X"><increment/></string></template>', "S2"),
    ('<template name="T" id="1"><uInt32 name="X"><tail/></uInt32></template>', "S2"),
    ('<template name="T" id="1"><decimal name="X"><increment/></decimal></template>', "S2"),
    ('<template name="T" id="1"><uInt32 name="X"><copy value="-1"/></uInt32></template>', "S3"),
    ('<template name="T" id="1"><int32 name="X"><copy value="x"/></int32></template>', "S3"),
    ('<template name="T" id="1"><decimal name="X"><copy value="1e99"/></decimal></template>',
     "S3"),
    ('<template name="T" id="1"><byteVector name="X"><copy value="abc"/></byteVector>'
     '</template>', "S3"),
    ('<template name="T" id="1"><string name="X"><copy value="é"/></string></template>', "S3"),
    ('<template name="T" id="1"><uInt32 name="X"><copy/><delta/></uInt32></template>',
     "more than one"),
    ('<template name="T" id="1"><uInt32 name="X" presence="sometimes"/></template>',
     "presence"),
    ('<template name="T" id="1"><uInt33 name="X"/></template>', "unknown instruction"),
    ('<template name="T" id="1"><uInt32 name="X"/><string name="X"/></template>',
     "duplicate field name"),
    ('<template name="T" id="1"><templateRef/></template>', "dynamic templateRef"),
    ('<template name="T" id="1"><templateRef name="Nope"/></template>', "unknown template"),
    ('<template name="T" id="1"><templateRef name="U"/></template>'
     '<template name="U" id="2"><templateRef name="T"/></template>', "cyclic"),
    ('<template name="T" id="1"><uInt32 name="A"/><templateRef name="U"/></template>'
     '<template name="U" id="2"><string name="A"/></template>', "after inlining"),
    ('<template name="T"><uInt32 name="X"/></template>', "id"),
    ('<template name="T" id="1"/><template name="U" id="1"/>', "duplicate template id"),
    ('<template name="T" id="1"/><template name="T" id="2"/>', "duplicate template name"),
    ('<template name="T" id="1"><uInt32/></template>', "without a name"),
    ('<template name="T" id="1"><string name="X" charset="ebcdic"/></template>', "charset"),
    ('<template name="T" id="1"><decimal name="X"><copy/><exponent><copy/></exponent>'
     '</decimal></template>', "both"),
])
def test_invalid_templates(body, fragment):
    with pytest.raises(TemplateError) as ei:
        parse(body, source="bad.xml")
    msg = str(ei.value)
    assert fragment in msg and "bad.xml" in msg


def test_template_error_names_file_template_and_field(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text(f'<templates {NS}><template name="Quotes" id="5">'
                    '<uInt32 name="Bid"><increment value="-3"/></uInt32></template></templates>')
    with pytest.raises(TemplateError) as ei:
        Templates.load(path)
    err = ei.value
    assert (err.file, err.template, err.field) == (str(path), "Quotes", "Bid")
    assert str(path) in str(err) and "'Quotes'" in str(err) and "'Bid'" in str(err)


def test_template_file_errors(tmp_path):
    with pytest.raises(TemplateError) as ei:
        Templates.load(tmp_path / "missing.xml")
    assert "missing.xml" in str(ei.value)
    bad = tmp_path / "bad.xml"
    bad.write_text("<templates><template")
    with pytest.raises(TemplateError) as ei:
        Templates.load(bad)
    assert "not well-formed" in str(ei.value) and "bad.xml" in str(ei.value)
    other = tmp_path / "other.xml"
    other.write_text('<templates xmlns="urn:something-else"/>')
    with pytest.raises(TemplateError):
        Templates.load(other)


def test_parse_text_with_xml_declaration(impl):
    text = (f'<?xml version="1.0" encoding="UTF-8"?>\n<templates {NS}>'
            '<template name="Привет" id="1"><string name="S" charset="unicode">'
            '<constant value="Ж"/></string></template></templates>')
    t = Templates.parse(text)
    data = Encoder(t, impl=impl).encode("Привет", {})
    assert Decoder(t, impl=impl).decode(data)[1] == {"S": "Ж"}


def test_foreign_elements_and_attributes_are_ignored():
    t = Templates.parse(
        f'<templates {NS} xmlns:x="urn:x"><template name="T" id="1" x:note="n">'
        '<x:doc>about</x:doc><uInt32 name="A" x:tag="1"><copy/></uInt32></template></templates>')
    assert [f.name for f in t[1].fields] == ["A"]
