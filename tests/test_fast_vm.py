"""The compiled FAST codec (marketdata/fast/_fastvm.c, compiled by vm.py) against the
generated-Python reference implementation.

Differential tests (hypothesis): random values for every field type x operator x
presence, individual decimal operators and message streams of the exchange's templates,
on the persistent and the per-datagram path -- the C encoder's bytes must equal the
reference encoder's, the C decoder's values the reference decoder's (pairs and
Decimals), and both must round trip.  Error paths: truncation at every byte, mutated and
random bytes (same values or the same error code, strict and lenient), out-of-range and
ill-typed values.  Also the API (implementation selection, bytes-like input, mappings),
robustness (malformed programs, nesting, re-entrancy) and reference counting.
"""

from __future__ import annotations

import copy
import functools
import gc
import random
import sys
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketdata.fast import Decoder, Encoder, FastError, Templates, vm
from marketdata.fast import primitives as P
from tests.test_fast_codec import (
    DEC_PAIRS, SPEC, TYPE_OPS, DrawSource, RandomSource, ValueGen, _fit_individual,
    combo_templates, expected, individual_templates, one_field, parse,
)

pytestmark = pytest.mark.skipif(not vm.available(), reason="marketdata.fast._fastvm not built")


@functools.lru_cache(maxsize=None)
def spec() -> Templates:
    return Templates.load(SPEC)


@functools.lru_cache(maxsize=None)
def codecs(templates: Templates, front_deltas: bool = False, strict: bool = True):
    """{(impl, what): codec} for one template set."""
    out = {}
    for impl in ("c", "python"):
        out[impl, "enc"] = Encoder(templates, front_deltas=front_deltas, impl=impl)
        out[impl, "pair"] = Decoder(templates, strict=strict, decimals="pair", impl=impl)
        out[impl, "dec"] = Decoder(templates, strict=strict, impl=impl)
    assert out["c", "enc"].impl == "c" and out["python", "enc"].impl == "python"
    return out


def outcome(fn, *args):
    """("ok", result) or ("err", FastError code); anything else propagates."""
    try:
        return "ok", fn(*args)
    except FastError as exc:
        return "err", exc.code


def reset(cs) -> None:
    for codec in cs.values():
        codec.reset()


def compare_stream(templates: Templates, messages, front_deltas: bool = False) -> None:
    """Encode ``(template, values)`` messages with both implementations, persistent and
    per-datagram; equal bytes (or error codes), equal decoded values, and a round trip."""
    cs = codecs(templates, front_deltas)
    reset(cs)
    for seq, (t, values) in enumerate(messages):
        for path in ("encode", "encode_datagram"):
            args = (t.id, values) if path == "encode" else (t.name, values, seq)
            got = outcome(getattr(cs["c", "enc"], path), *args)
            assert got == outcome(getattr(cs["python", "enc"], path), *args), (path, values)
            if got[0] == "err":
                reset(cs)   # the state after a failed message is unspecified
                continue
            data = got[1]
            for what in ("pair", "dec"):
                if path == "encode":
                    # a trailing byte must not be read
                    dc = cs["c", what].decode(data + b"\xff")
                    assert dc == cs["python", what].decode(data + b"\xff"), data.hex()
                    assert dc[0] is t and dc[2] == len(data)
                    values_out = dc[1]
                else:
                    dc = cs["c", what].decode_datagram(data)
                    assert dc == cs["python", what].decode_datagram(data), data.hex()
                    assert dc[:2] == (seq, t)
                    values_out = dc[2]
                if what == "pair":
                    assert values_out == expected(templates, t.fields, values), data.hex()


# ====================================================================== differential


@pytest.mark.parametrize("t, op", TYPE_OPS, ids=[f"{t}-{op}" for t, op in TYPE_OPS])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_differential_type_x_operator_x_presence(t, op, data):
    templates = combo_templates(t, op)
    tpl = templates[1]
    gen = ValueGen(templates, DrawSource(data))
    messages = [(tpl, gen.message(tpl)) for _ in range(data.draw(st.integers(1, 5)))]
    compare_stream(templates, messages, front_deltas=data.draw(st.booleans()))


@pytest.mark.parametrize("eop, mop", DEC_PAIRS, ids=[f"exp_{a}-mant_{b}" for a, b in DEC_PAIRS])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_differential_decimal_individual_operators(eop, mop, data):
    templates = individual_templates(eop, mop)
    if templates is None:
        return
    tpl = templates[2]
    gen = ValueGen(templates, DrawSource(data))
    messages = []
    for _ in range(data.draw(st.integers(1, 4))):
        values = gen.message(tpl)
        _fit_individual(tpl.fields, values)
        messages.append((tpl, values))
    compare_stream(templates, messages)


@settings(max_examples=60, deadline=None)
@given(rng=st.randoms(use_true_random=False), front=st.booleans())
def test_differential_exchange_template_streams(rng, front):
    gen = ValueGen(spec(), RandomSource(rng))
    tpls = list(spec())
    compare_stream(spec(), [(t, gen.message(t)) for t in (rng.choice(tpls) for _ in range(10))],
                   front_deltas=front)


def test_benchmark_messages_are_identical():
    from bench.fast_codec_bench import incremental, security_definition, snapshot
    cs = codecs(spec())
    for pairs in (False, True):
        for name, values in (("MarketDataIncrementalRefresh", incremental(10, pairs)),
                             ("MarketDataSnapshotFullRefresh", snapshot(pairs)),
                             ("SecurityDefinition", security_definition(pairs))):
            data = cs["c", "enc"].encode_datagram(name, values, 5)
            assert data == cs["python", "enc"].encode_datagram(name, values, 5)
            for what in ("pair", "dec"):
                assert cs["c", what].decode_datagram(data) == \
                    cs["python", what].decode_datagram(data)


# ====================================================================== boundaries

INT_EDGES = {
    "uInt32": [0, 1, 126, 127, 128, 16383, 16384, 2**31, 2**32 - 2, 2**32 - 1, 2**32, -1],
    "int32": [0, -1, 63, 64, -64, -65, 8191, -8193, 2**31 - 1, -2**31, 2**31, -2**31 - 1],
    "uInt64": [0, 127, 2**32, 2**63, 2**64 - 2, 2**64 - 1, 2**64, -1, 2**70],
    "int64": [0, -1, 2**62, -2**62, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**100],
}


@pytest.mark.parametrize("itype", sorted(INT_EDGES))
@pytest.mark.parametrize("op", ["none", "default", "copy", "increment", "delta"])
@pytest.mark.parametrize("optional", [False, True])
def test_integer_boundaries(itype, op, optional):
    pres = ' presence="optional"' if optional else ""
    init = ' value="0"' if op == "default" else ""
    body = "" if op == "none" else f"<{op}{init}/>"
    t = one_field(f'<{itype} name="X"{pres}>{body}</{itype}><uInt32 name="Y"/>')
    edges = INT_EDGES[itype]
    # up and down the edges (out-of-range ones must fail alike): copies, increments and
    # deltas between the extremes of the type
    msgs = [(t[1], {"X": a, "Y": 1}) for a in edges] + \
        [(t[1], {"X": b, "Y": 2}) for b in reversed(edges)]
    if optional:
        msgs.insert(3, (t[1], {"X": None, "Y": 3}))
    compare_stream(t, msgs)


def test_uint64_delta_extremes_round_trip():
    t = one_field('<uInt64 name="X"><delta/></uInt64><int64 name="Y"><delta/></int64>')
    cs = codecs(t)
    reset(cs)
    msgs = [{"X": 0, "Y": -2**63}, {"X": 2**64 - 1, "Y": 2**63 - 1}, {"X": 0, "Y": -2**63}]
    for v in msgs:
        data = cs["c", "enc"].encode(1, v)
        assert data == cs["python", "enc"].encode(1, v)
        assert cs["c", "pair"].decode(data)[1] == v == cs["python", "pair"].decode(data)[1]


@pytest.mark.parametrize("value", [
    Decimal("1.50"), Decimal("1.5"), Decimal("-0"), Decimal("0E-5"), Decimal("0E+5"),
    Decimal("1E+3"), Decimal("1.5E+3"), Decimal("-1E-63"), Decimal("9223372036854775807"),
    Decimal("-9223372036854775808"), Decimal("0.0000001"), (5, -2), [5, -2], 7, -7,
    (2**63 - 1, 63), (-2**63, -63), Decimal("1E+63"),
])
@pytest.mark.parametrize("op", ["none", "copy", "delta", "default"])
def test_decimal_values_encode_identically(value, op):
    body = "" if op == "none" else ("<default/>" if op == "default" else f"<{op}/>")
    t = one_field(f'<decimal name="X" presence="optional">{body}</decimal>')
    compare_stream(t, [(t[1], {"X": value}), (t[1], {"X": value}), (t[1], {"X": None})])


class _MyDecimal(Decimal):
    pass


@pytest.mark.parametrize("value, code", [
    ((1, 64), "R1"), ((1, -64), "R1"), ((2**63, 0), "R1"), ((-2**63 - 1, 0), "R1"),
    (Decimal("1E+64"), "R1"), (Decimal("1E-64"), "R1"), (Decimal("1" * 20), "R1"),
    (Decimal("NaN"), None), (Decimal("-Infinity"), None), (1.5, None), ("1.5", None),
    ((1, 2, 3), None), ((True, 0), None), ((1.0, 0), None), (True, None), ([1, 2, 3], None),
    (_MyDecimal("12.5"), "ok"), (2**63, "R1"),
])
def test_decimal_value_errors(value, code):
    t = one_field('<decimal name="X"/>')
    cs = codecs(t)
    for impl in ("c", "python"):
        cs[impl, "enc"].reset()
        got = outcome(cs[impl, "enc"].encode, 1, {"X": value})
        if code == "ok":
            assert got[0] == "ok"
        else:
            assert got == ("err", code), impl


@pytest.mark.parametrize("xml, values, code", [
    ('<uInt32 name="X"/>', {"X": 2**32}, "D2"),
    ('<uInt32 name="X"/>', {"X": -1}, "D2"),
    ('<int32 name="X"><delta/></int32>', {"X": 2**31}, "D2"),
    ('<uInt64 name="X" presence="optional"/>', {"X": 2**64}, "D2"),
    ('<int64 name="X"><copy/></int64>', {"X": 2**63}, "D2"),
    ('<uInt32 name="X"><constant value="3"/></uInt32>', {"X": 2**80}, None),
    ('<uInt32 name="X"><constant value="3"/></uInt32>', {"X": 4}, None),
    ('<uInt32 name="X"/>', {}, None),
    ('<string name="X"><tail/></string>', {"X": "a"}, "ok"),
    ('<string name="X"/>', {"X": "\x00ab"}, "R9"),
    ('<string name="X"/>', {"X": "ж"}, None),
    ('<string name="X" charset="unicode"/>', {"X": "\udcff"}, None),
    ('<decimal name="X"><exponent><constant value="-2"/></exponent></decimal>',
     {"X": (1, -3)}, "D3"),
    ('<decimal name="X"><exponent><constant value="-2"/></exponent></decimal>',
     {"X": (2**62, 63)}, "D2"),
    ('<decimal name="X"><exponent><constant value="-2"/></exponent>'
     '<mantissa><constant value="5"/></mantissa></decimal>', {"X": (2**62, 63)}, None),
    ('<sequence name="S"><uInt32 name="A"/></sequence>', {"S": [{"A": 1}, {"B": 2}]}, None),
    ('<sequence name="S"><uInt32 name="A"/></sequence>', {"S": 5}, None),
    ('<sequence name="S"><uInt32 name="A"/></sequence>', {"S": [5]}, None),
    ('<group name="G"><uInt32 name="A"/></group>', {"G": None}, None),
])
def test_encode_errors_have_the_reference_codes(xml, values, code):
    t = one_field(xml)
    cs = codecs(t)
    got = {}
    for impl in ("c", "python"):
        cs[impl, "enc"].reset()
        got[impl] = outcome(cs[impl, "enc"].encode, 1, values)
        if code == "ok":
            assert got[impl][0] == "ok"
        else:
            assert got[impl] == ("err", code), impl
    if code != "ok":
        with pytest.raises(FastError) as ei:
            cs["c", "enc"].encode_datagram("T", values, 1)
        assert "T: " in str(ei.value)


def test_string_delta_and_tail_edges():
    t = one_field('<string name="A"><delta/></string><string name="B"><tail value="ab"/>'
                  '</string><byteVector name="C"><delta/></byteVector>'
                  '<string name="D" charset="unicode" presence="optional"><delta/></string>')
    vals = [("", "ab", b"", ""), ("abc", "ab", b"\x00\x01", "жж"), ("xbc", "zz", b"\x01", "ж"),
            ("xb", "zy", b"\x00\x01\x02", None), ("cxb", "ab", b"\x02", "aж")]
    for front in (False, True):
        compare_stream(t, [(t[1], dict(zip("ABCD", v))) for v in vals], front_deltas=front)


# ====================================================================== decoding errors


def _truncations(templates, n, seed):
    gen = ValueGen(templates, RandomSource(random.Random(seed)))
    enc = codecs(templates)["python", "enc"]
    for t in templates:
        for _ in range(n):
            enc.reset()
            values = gen.message(t)
            _fit_individual(t.fields, values)
            try:
                yield enc.encode(t.id, values), enc.encode_datagram(t.id, values, 9)
            except FastError:
                continue


@pytest.mark.parametrize("which", ["spec", "matrix"])
def test_truncated_at_every_byte(which):
    if which == "spec":
        sets = [spec()]
    else:
        sets = [combo_templates(t, op) for t, op in TYPE_OPS[::3]]
    for templates in sets:
        cs = codecs(templates)
        for data, dg in _truncations(templates, 2, 3):
            for n in range(len(data)):
                for what in ("pair", "dec"):
                    reset(cs)
                    got = outcome(cs["c", what].decode, data[:n])
                    assert got[0] == "err"
                    assert got == outcome(cs["python", what].decode, data[:n])
                    got = outcome(cs["c", what].decode_datagram, dg[:4 + n])
                    assert got[0] == "err"
                    assert got == outcome(cs["python", what].decode_datagram, dg[:4 + n])


def _same_decoding(templates, blob, strict):
    cs = codecs(templates, strict=strict)
    for what in ("pair", "dec"):
        for path, arg in (("decode", blob[4:]), ("decode_datagram", blob)):
            cs["c", what].reset()
            cs["python", what].reset()
            got = outcome(getattr(cs["c", what], path), arg)
            assert got == outcome(getattr(cs["python", what], path), arg), (path, arg.hex())


@settings(max_examples=150, deadline=None)
@given(blob=st.binary(max_size=80), strict=st.booleans(),
       which=st.sampled_from(["spec", "int64-delta", "decimal-delta", "ascii-tail",
                              "unicode-delta", "byteVector-copy", "ascii-delta"]))
def test_garbage_decodes_like_the_reference(blob, strict, which):
    templates = spec() if which == "spec" else combo_templates(*which.split("-"))
    head = b"\x01\x00\x00\x00" + (b"\xc0\x8f" if which == "spec" else b"\xe0\x81")
    _same_decoding(templates, head + blob, strict)
    _same_decoding(templates, b"\x01\x00\x00\x00" + blob, strict)


@settings(max_examples=150, deadline=None)
@given(rng=st.randoms(use_true_random=False), strict=st.booleans())
def test_mutated_messages_decode_like_the_reference(rng, strict):
    templates = spec()
    gen = ValueGen(templates, RandomSource(rng))
    t = rng.choice(list(templates))
    try:
        dg = bytearray(codecs(templates)["python", "enc"].encode_datagram(t.id, gen.message(t), 1))
    except FastError:
        return
    for _ in range(rng.randint(1, 3)):
        dg[rng.randrange(4, len(dg))] = rng.randrange(256)
    _same_decoding(templates, bytes(dg), strict)


@pytest.mark.parametrize("xml, data, code", [
    ('<uInt32 name="X"/>', "c0 81 00 85", "R6"),
    ('<int32 name="X"/>', "c0 81 7f ff", "R6"),
    ('<int32 name="X"/>', "c0 81 00 3f ff", "R6"),
    ('<uInt32 name="X"/>', "c0 81 10 00 00 00 80", "D2"),
    ('<uInt64 name="X"/>', "c0 81 02 00 00 00 00 00 00 00 00 80", "D2"),
    ('<uInt64 name="X"/>', "c0 81 01 00 00 00 00 00 00 00 00 00 80", "D2"),
    ('<int64 name="X"><delta/></int64>', "c0 81 00 7f 7f 7f 7f 7f 7f 7f 7f ff", "ok"),
    ('<int64 name="X"><delta/></int64>', "c0 81 01 00 00 00 00 00 00 00 00 80", "R4"),
    ('<uInt64 name="X"><delta/></uInt64>', "c0 81 ff", "R4"),
    ('<uInt32 name="X"><increment/></uInt32>', "c0 81", "D5"),
    ('<decimal name="X"><delta/></decimal>', "c0 81 c0 81", "R1"),
    ('<decimal name="X"><delta/></decimal>', "c0 81 80 01 00 00 00 00 00 00 00 00 80", "R1"),
    ('<string name="X"/>', "c0 81 00 41 c1", "R9"),
    ('<string name="X" presence="optional"/>', "c0 81 00 00 c1", "R9"),
    ('<string name="X" charset="unicode"/>', "c0 81 82 c3 28", "R2"),
    ('<byteVector name="X"/>', "c0 81 85 01 02", None),
    ('<sequence name="S"><length name="N"/><uInt32 name="A"><copy/></uInt32></sequence>',
     "c0 81 8f", "D2"),
    ('<uInt32 name="X"/>', "e0 81 81", "R8"),
    ('<group name="G"><uInt32 name="A"><copy/></uInt32></group>', "c0 81 20 81", "R8"),
    ('<group name="G"><uInt32 name="A"><copy/></uInt32></group>', "c0 81 00 80 81", "R7"),
])
def test_decode_errors_have_the_reference_codes(xml, data, code):
    t = one_field(xml)
    raw = bytes.fromhex(data)
    for strict in (True, False):
        cs = codecs(t, strict=strict)
        got = outcome(cs["c", "pair"].decode, raw)
        assert got == outcome(cs["python", "pair"].decode, raw)
        if strict:
            assert got[0] == "ok" if code == "ok" else got == ("err", code)
    if code not in ("ok", "R8"):   # the messages name the template and field
        with pytest.raises(FastError) as ei:
            codecs(t)["c", "pair"].decode(raw)
        assert "T: " in str(ei.value)


def test_lenient_decimals_stay_exact():
    # a lenient decoder lets the exponent leave [-63, 63]: exact values, never NaN
    t = one_field('<decimal name="X"><delta/></decimal><decimal name="Y"/>')
    out = bytearray(b"\xc0\x81")
    for v in (-129, 1, -64, 1):   # X: exponent delta -129, mantissa delta 1; Y: 1E-64
        P.write_int(out, v)
    data = bytes(out)
    for impl in ("c", "python"):
        dec = Decoder(t, strict=False, impl=impl)
        got = dec.decode(data)[1]
        assert got == {"X": Decimal("1E-129"), "Y": Decimal("1E-64")}
        assert Decoder(t, strict=False, decimals="pair", impl=impl).decode(data)[1] == \
            {"X": (1, -129), "Y": (1, -64)}


# ====================================================================== API


def test_implementation_selection():
    t = spec()
    assert Encoder(t).impl == Decoder(t).impl == "c"
    assert Encoder(t, impl="python").impl == Decoder(t, impl="python").impl == "python"
    with pytest.raises(ValueError):
        Encoder(t, impl="rust")
    with pytest.raises(ValueError):
        Decoder(t, impl="fortran")
    # the class methods dispatch to the compiled codec too
    enc = Encoder(t)
    values = {"MsgSeqNum": 5, "SendingTime": 1}
    assert Encoder.encode_datagram(enc, "Heartbeat", values) == enc.encode_datagram(
        "Heartbeat", values)
    assert Decoder.decode_datagram(Decoder(t), enc.encode_datagram("Heartbeat", values))[0] == 5


def test_datagram_sequence_numbers():
    for impl in ("c", "python"):
        enc = Encoder(spec(), impl=impl)
        v = {"MsgSeqNum": 7, "SendingTime": 1}
        assert enc.encode_datagram(6, v)[:4] == (7).to_bytes(4, "little")
        assert enc.encode_datagram(6, v, seqnum=2**32 - 1)[:4] == b"\xff" * 4
        assert enc.encode_datagram(6, v, None)[:4] == (7).to_bytes(4, "little")
        for bad in (2**32, -1, 1.0, "1"):
            with pytest.raises(FastError):
                enc.encode_datagram(6, v, bad)
        with pytest.raises(FastError):
            enc.encode_datagram(6, {"SendingTime": 1})   # no seqnum, no MsgSeqNum
        with pytest.raises(FastError) as ei:
            enc.encode_datagram("Nope", v, 1)
        assert ei.value.code == "D9"
        with pytest.raises(FastError):
            enc.encode([], v)


class _Frozen(Mapping):
    def __init__(self, d):
        self._d = d

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)


def test_inputs_other_than_dicts_lists_and_bytes():
    from bench.fast_codec_bench import incremental
    values = incremental(3, pairs=True)
    cs = codecs(spec())
    want = cs["python", "enc"].encode_datagram(15, values, 1)
    # a Mapping, tuples for sequences, entries in another key order, keys not interned
    other = _Frozen(dict(values, MDEntries=tuple(_Frozen(e) for e in values["MDEntries"])))
    assert cs["c", "enc"].encode_datagram(15, other, 1) == want
    shuffled = dict(reversed(list(values.items())))
    shuffled["MDEntries"] = [{"".join(list(k)): v for k, v in reversed(list(e.items()))}
                             for e in values["MDEntries"]]
    assert cs["c", "enc"].encode_datagram(15, shuffled, 1) == want
    # bytes-like data and offsets
    for data in (want, bytearray(want), memoryview(want)):
        assert cs["c", "pair"].decode_datagram(data) == cs["python", "pair"].decode_datagram(want)
    body = cs["python", "enc"].encode(15, values)
    cs["c", "pair"].reset()
    assert cs["c", "pair"].decode(b"xyz" + body, 3)[2] == len(body)
    cs["c", "pair"].reset()
    assert cs["c", "pair"].decode(b"xyz" + body, offset=3)[2] == len(body)
    with pytest.raises(FastError):
        cs["c", "pair"].decode(body, len(body))
    # byte vectors from bytearray and memoryview, bools as ints, int and str subclasses
    t = one_field('<byteVector name="B"/><uInt32 name="N"/><string name="S"/>')
    enc_c, enc_p = Encoder(t), Encoder(t, impl="python")

    class MyStr(str):
        pass

    class MyInt(int):
        pass

    for v in ({"B": bytearray(b"ab"), "N": True, "S": MyStr("x")},
              {"B": memoryview(b"ab"), "N": MyInt(5), "S": "x"}):
        assert enc_c.encode(1, v) == enc_p.encode(1, v)
    # a dict subclass is read as the reference reads it: V[name] for mandatory fields
    # (its __missing__ applies), V.get(name) for optional ones (it does not)
    t = one_field('<uInt32 name="M"/><uInt32 name="O" presence="optional"/>')
    v = defaultdict(lambda: 7)
    assert Encoder(t).encode(1, v) == Encoder(t, impl="python").encode(1, v)
    assert Decoder(t).decode(Encoder(t).encode(1, v))[1] == {"M": 7, "O": None}


def test_decimal_objects_are_converted_by_value_and_form():
    t = one_field('<decimal name="X"/>')
    enc = Encoder(t)
    a, b = Decimal("1.5"), Decimal("1.50")
    assert enc.encode_datagram(1, {"X": a}, 1) != enc.encode_datagram(1, {"X": b}, 1)
    ref = Encoder(t, impl="python").encode_datagram(1, {"X": a}, 1)
    for _ in range(3):   # memoised by identity: the same object gives the same bytes
        assert enc.encode_datagram(1, {"X": a}, 1) == ref
    many = [Decimal(k).scaleb(-3) for k in range(5000)]   # more than the memo holds
    dec = Decoder(t)
    for d in many + many[::-1]:
        got = dec.decode_datagram(enc.encode_datagram(1, {"X": d}, 1))[2]["X"]
        assert got.as_tuple() == d.as_tuple()


def test_error_messages_name_template_and_field():
    t = parse('<template name="Quote" id="1"><sequence name="S"><uInt32 name="Px"/>'
              '</sequence></template>')
    with pytest.raises(FastError) as ei:
        Encoder(t).encode(1, {"S": [{"Px": -1}]})
    assert ei.value.code == "D2" and "Quote: Px:" in str(ei.value)
    with pytest.raises(FastError) as ei:
        Decoder(t).decode(bytes.fromhex("c0 81 81 10 00 00 00 80"))
    assert ei.value.code == "D2" and "Quote: Px:" in str(ei.value)
    with pytest.raises(FastError) as ei:
        Decoder(t).decode(bytes.fromhex("c0 81 81 10 00"))
    assert "Quote: Px: truncated" in str(ei.value)


def test_reentrant_use_is_refused_not_corrupting():
    enc = Encoder(spec())
    dec = Decoder(spec())

    class Sneaky(dict):
        def __getitem__(self, key):
            enc.encode_datagram("Heartbeat", {"MsgSeqNum": 1, "SendingTime": 2})
            return dict.__getitem__(self, key)

    with pytest.raises(RuntimeError):
        enc.encode_datagram("Heartbeat", Sneaky(MsgSeqNum=1, SendingTime=2), 1)
    data = enc.encode_datagram("Heartbeat", {"MsgSeqNum": 1, "SendingTime": 2})
    assert dec.decode_datagram(data)[2]["MsgSeqNum"] == 1


def test_malformed_programs_are_rejected():
    from marketdata.fast import _fastvm
    good = vm.compile_program(one_field('<uInt32 name="X"><copy/></uInt32>'))
    assert _fastvm.VM(good, FastError, Decimal)

    def edit(path, value):
        prog = copy.deepcopy(good)

        def rebuild(node, p):
            if not p:
                return value
            items = list(node)
            items[p[0]] = rebuild(items[p[0]], p[1:])
            return type(node)(items)
        return rebuild(prog, path)

    instr = (1, 0, 4, 1, 0)   # program, templates[0], segment, instructions[0]
    for path, value in [
        ((0,), 99),                               # version
        ((2,), b""),                              # no slots
        ((2,), b"\x00\x02"),                      # slot of the wrong kind
        (instr + (4,), 5),                        # bit outside the segment
        (instr + (4,), -1),                       # copy without a bit
        (instr + (5,), 7),                        # slot out of range
        (instr + (5,), -1),                       # copy without a slot
        (instr + (0,), 42),                       # unknown kind
        (instr + (1,), 6),                        # tail on an integer
        (instr + (6,), None),                     # no key
        (instr + (8,), "x"),                      # initial value of the wrong type
        (instr + (8,), 2**40),                    # initial value out of range
        (instr, (0,) * 3),                        # short instruction
        ((1, 0, 3), 0),                           # template bit count
    ]:
        with pytest.raises(ValueError):
            _fastvm.VM(edit(path, value), FastError, Decimal)


def test_deep_nesting_falls_back_to_the_reference():
    depth = 80
    xml = "".join(f'<group name="G{k}"><uInt32 name="A{k}"/>' for k in range(depth)) + \
        "</group>" * depth
    t = parse(f'<template name="T" id="1">{xml}</template>')
    with pytest.raises(ValueError):
        Encoder(t, impl="c")
    enc, dec = Encoder(t), Decoder(t)
    assert enc.impl == dec.impl == "python"
    values = {}
    node = values
    for k in range(depth):
        node[f"G{k}"] = {f"A{k}": k}
        node = node[f"G{k}"]
    assert dec.decode(enc.encode(1, values))[1] == values


def test_no_reference_leaks():
    """Encode and decode (good and failing) in a loop: allocations stay flat."""
    from bench.fast_codec_bench import incremental, security_definition, snapshot
    t = spec()
    enc, penc = Encoder(t), Encoder(t)
    decs = [Decoder(t), Decoder(t, decimals="pair"), Decoder(t, strict=False)]
    msgs = [(15, incremental(3, False)), (15, incremental(2, True)), (14, snapshot(False)),
            (3, security_definition(False))]
    bad = [(15, dict(incremental(1, False), MsgSeqNum=-1)), (3, {"MsgSeqNum": 1}),
           (14, dict(snapshot(True), MDEntries=[{"MDEntryType": "ж"}]))]
    datas = [enc.encode_datagram(i, v, 1) for i, v in msgs]
    bodies = [penc.encode(i, v) for i, v in msgs]

    def once():
        for i, v in msgs:
            enc.encode_datagram(i, v, 1)
            enc.encode(i, v)
        for i, v in bad:
            for fn in (enc.encode_datagram, enc.encode):
                try:
                    fn(i, v)
                except FastError:
                    pass
        for d in decs:
            d.reset()
            for data in datas:
                d.decode_datagram(data)
                for n in (len(data) - 1, len(data) // 2):
                    try:
                        d.decode_datagram(data[:n])
                    except FastError:
                        pass
            for body in bodies:
                d.decode(body)
        enc.reset()

    for _ in range(300):
        once()
    gc.collect()
    before = sys.getallocatedblocks()
    for _ in range(3000):
        once()
    gc.collect()
    assert sys.getallocatedblocks() - before < 200
