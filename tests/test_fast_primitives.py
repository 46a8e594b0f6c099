"""FAST 1.1 transfer-encoding primitives: the spec's Appendix 3 examples, the nullable and
64-bit edge cases, overlong entities, and round trips (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketdata.fast import FastError
from marketdata.fast import primitives as P

I32 = (P.INT32_MIN, P.INT32_MAX)
I64 = (P.INT64_MIN, P.INT64_MAX)


def enc(fn, v) -> bytes:
    out = bytearray()
    fn(out, v)
    return bytes(out)


# ------------------------------------------------------------------ spec Appendix 3.1


@pytest.mark.parametrize("value, nullable, wire", [
    (942755, True, "39 45 a4"),       # 3.1.1 ex.1 int32 optional positive (+1)
    (942755, False, "39 45 a3"),      # ex.2 mandatory positive
    (-942755, True, "46 3a dd"),      # ex.3 optional negative (not incremented)
    (-7942755, False, "7c 1b 1b 9d"),  # ex.4 mandatory negative
    (8193, False, "00 40 81"),        # ex.5 sign-bit extension
    # ex.6: the spec prints "0x73 0x3f 0xff" but its own binary column is 01111111
    # 00111111 11111111 = 7f 3f ff, which is the correct two's complement of -8193
    (-8193, False, "7f 3f ff"),
    (64, False, "00 c0"),             # 10.6.1.1 note: 64 needs a leading zero byte
    (-64, False, "c0"),
    (-65, False, "7f bf"),
    (63, False, "bf"),
    (0, True, "81"),
    (-1, True, "ff"),
    (None, True, "80"),
])
def test_signed_integer_examples(value, nullable, wire):
    fn, rd = (P.write_int_null, P.read_int_null) if nullable else (P.write_int, P.read_int)
    data = bytes.fromhex(wire)
    assert enc(fn, value) == data
    assert rd(data, 0) == (value, len(data))


@pytest.mark.parametrize("value, nullable, wire", [
    (None, True, "80"), (0, True, "81"), (1, True, "82"),
    (942755, True, "39 45 a4"),       # 3.1.2 ex.1 optional
    (0, False, "80"), (1, False, "81"),
    (942755, False, "39 45 a3"),      # ex.2 mandatory
    (P.UINT32_MAX, True, "10 00 00 00 80"),  # 10.6.1 note: needs 33 bits
])
def test_unsigned_integer_examples(value, nullable, wire):
    fn, rd = (P.write_uint_null, P.read_uint_null) if nullable else (P.write_uint, P.read_uint)
    data = bytes.fromhex(wire)
    assert enc(fn, value) == data
    assert rd(data, 0) == (value, len(data))


@pytest.mark.parametrize("value, nullable, wire", [
    (None, True, "80"), ("ABC", True, "41 42 c3"), ("", True, "00 80"),   # 3.1.3 ex.1
    ("ABC", False, "41 42 c3"), ("", False, "80"),                          # ex.2
    ("\x00", False, "00 80"), ("\x00", True, "00 00 80"),                   # 10.6.3 table
    ("A", False, "c1"), ("A\x00B", False, "41 00 c2"),
])
def test_ascii_string_examples(value, nullable, wire):
    fn, rd = (P.write_ascii_null, P.read_ascii_null) if nullable else (P.write_ascii, P.read_ascii)
    data = bytes.fromhex(wire)
    assert enc(fn, value) == data
    assert rd(data, 0) == (value, len(data))


@pytest.mark.parametrize("wire, nullable", [
    ("00 c1", False), ("00 00 c1", True), ("00 41 c2", True)])
def test_overlong_strings_are_reportable(wire, nullable):
    rd = P.read_ascii_null if nullable else P.read_ascii
    with pytest.raises(FastError) as ei:
        rd(bytes.fromhex(wire), 0)
    assert ei.value.code == "R9"
    # a lenient decoder drops the zero preamble
    assert rd(bytes.fromhex(wire), 0, False)[0] in ("A", "AB")


def test_strings_starting_with_nul_are_not_representable():
    with pytest.raises(FastError):
        enc(P.write_ascii, "\x00A")
    with pytest.raises(FastError):
        enc(P.write_ascii, "é")


@pytest.mark.parametrize("value, nullable, wire", [
    (None, True, "80"), (b"ABC", True, "84 41 42 43"), (b"", True, "81"),   # 3.1.4 ex.1
    (b"ABC", False, "83 41 42 43"), (b"", False, "80"),                     # ex.2
])
def test_byte_vector_examples(value, nullable, wire):
    fn, rd = (P.write_bytes_null, P.read_bytes_null) if nullable else (P.write_bytes, P.read_bytes)
    data = bytes.fromhex(wire)
    assert enc(fn, value) == data
    assert rd(data, 0) == (value, len(data))


@pytest.mark.parametrize("exponent, mantissa, nullable, wire", [
    (2, 942755, False, "82 39 45 a3"),          # 3.1.5 ex.1  94275500
    (1, 9427550, False, "81 04 3f 34 de"),      # ex.2  scaled mantissa
    (2, 942755, True, "83 39 45 a3"),           # ex.3  optional: exponent +1
    (-2, 942755, False, "fe 39 45 a3"),         # ex.4  9427.55
    (-2, -942755, True, "fe 46 3a dd"),         # ex.5  -9427.55 optional
    (-3, -8193, True, "fd 7f 3f ff"),           # ex.8  -8.193 (spec hex typo as above)
])
def test_scaled_number_examples(exponent, mantissa, nullable, wire):
    out = bytearray()
    (P.write_int_null if nullable else P.write_int)(out, exponent)
    P.write_int(out, mantissa)
    assert bytes(out) == bytes.fromhex(wire)


# ------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("value, nullable, wire", [
    (P.INT64_MIN, False, "7f 00 00 00 00 00 00 00 00 80"),
    (P.INT64_MAX, False, "00 7f 7f 7f 7f 7f 7f 7f 7f ff"),
    (P.INT64_MAX, True, "01 00 00 00 00 00 00 00 00 80"),  # 2**63: 65 bits
    (P.INT64_MIN, True, "7f 00 00 00 00 00 00 00 00 80"),
])
def test_int64_limits(value, nullable, wire):
    fn, rd = (P.write_int_null, P.read_int_null) if nullable else (P.write_int, P.read_int)
    data = bytes.fromhex(wire)
    assert enc(fn, value) == data
    assert rd(data, 0, *I64) == (value, len(data))


@pytest.mark.parametrize("value, nullable, wire", [
    (P.UINT64_MAX, False, "01 7f 7f 7f 7f 7f 7f 7f 7f ff"),
    (P.UINT64_MAX, True, "02 00 00 00 00 00 00 00 00 80"),  # 2**64 in 10 bytes
])
def test_uint64_limits(value, nullable, wire):
    fn, rd = (P.write_uint_null, P.read_uint_null) if nullable else (P.write_uint, P.read_uint)
    data = bytes.fromhex(wire)
    assert enc(fn, value) == data
    assert rd(data, 0, P.UINT64_MAX) == (value, len(data))


@pytest.mark.parametrize("wire, reader, args", [
    ("00 81", P.read_uint, ()),                 # 1 with a redundant leading zero byte
    ("00 00 81", P.read_uint_null, ()),
    ("00 81", P.read_int, ()),                  # sign bit of 0x81 is clear: 0x00 unneeded
    ("7f ff", P.read_int, ()),                  # -1 with a redundant 0x7f
    ("7f 40 80", P.read_int_null, ()),
])
def test_overlong_integers_are_reportable(wire, reader, args):
    data = bytes.fromhex(wire)
    with pytest.raises(FastError) as ei:
        reader(data, 0, *args)
    assert ei.value.code == "R6"
    assert reader(data, 0, *args, strict=False)[1] == len(data)


@pytest.mark.parametrize("wire, reader, args", [
    ("10 00 00 00 80", P.read_uint, (P.UINT32_MAX,)),            # 2**32 > uInt32
    ("10 00 00 00 81", P.read_uint_null, (P.UINT32_MAX,)),       # nullable 2**32 - 1 + 1
    ("08 00 00 00 80", P.read_int, I32),                         # 2**31 > int32 max
    ("77 7f 7f 7f ff", P.read_int, I32),                         # -2**31 - 1
    ("02 00 00 00 00 00 00 00 00 81", P.read_uint_null, (P.UINT64_MAX,)),
    ("01 00 00 00 00 00 00 00 00 80", P.read_int, I64),          # 2**63 non-nullable
    ("01 01 01 01 01 01 01 01 01 01 81", P.read_uint, ()),       # 11 bytes
])
def test_out_of_range_integers(wire, reader, args):
    with pytest.raises(FastError) as ei:
        reader(bytes.fromhex(wire), 0, *args)
    assert ei.value.code == "D2"


def test_32bit_nullable_maximum_fits():
    assert P.read_uint_null(bytes.fromhex("10 00 00 00 80"), 0, P.UINT32_MAX) == (P.UINT32_MAX, 5)
    assert P.read_int_null(bytes.fromhex("08 00 00 00 80"), 0, *I32) == (P.INT32_MAX, 5)


@pytest.mark.parametrize("reader", [P.read_uint, P.read_int, P.read_ascii, P.read_bytes,
                                    P.read_pmap])
def test_truncated_entities_raise_index_error(reader):
    # the codec turns this into a FastError; the primitive level reports running off
    with pytest.raises(IndexError):
        reader(b"\x01\x02", 0)


def test_truncated_byte_vector_body():
    with pytest.raises(IndexError):
        P.read_bytes(bytes.fromhex("85 41 42"), 0)


# ------------------------------------------------------------------ presence maps


@pytest.mark.parametrize("bits, wire", [
    ("1", "c0"), ("", "80"), ("0000001", "81"), ("1000000 1", "40 c0"),
    ("11", "e0"), ("0101111 111", "2f f0"),   # spec 15.6-style example
])
def test_pmap_encoding(bits, wire):
    bits = bits.replace(" ", "")
    pm = sum(1 << k for k, b in enumerate(bits) if b == "1")
    data = bytes.fromhex(wire)
    assert P.encode_pmap(pm) == data
    assert P.read_pmap(data, 0) == (pm, len(data))


def test_overlong_pmap_is_reportable():
    with pytest.raises(FastError) as ei:
        P.read_pmap(bytes.fromhex("40 80"), 0)
    assert ei.value.code == "R7"
    assert P.read_pmap(bytes.fromhex("40 80"), 0, False) == (1, 2)
    assert P.read_pmap(b"\x80", 0) == (0, 1)   # a single all-zero byte is fine


# ------------------------------------------------------------------ round trips


@given(st.integers(0, P.UINT64_MAX))
def test_uint_round_trip(v):
    assert P.read_uint(enc(P.write_uint, v), 0) == (v, len(enc(P.write_uint, v)))
    data = enc(P.write_uint_null, v)
    assert P.read_uint_null(data, 0) == (v, len(data))


@given(st.integers(P.INT64_MIN, P.INT64_MAX))
def test_int_round_trip(v):
    data = enc(P.write_int, v)
    assert P.read_int(data, 0) == (v, len(data))
    data = enc(P.write_int_null, v)
    assert P.read_int_null(data, 0) == (v, len(data))  # strict: never overlong


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=20)
       .filter(lambda s: not s.startswith("\x00") or s == "\x00"))
def test_ascii_round_trip(s):
    for w, r in ((P.write_ascii, P.read_ascii), (P.write_ascii_null, P.read_ascii_null)):
        data = enc(w, s)
        assert r(data + b"\x81", 0) == (s, len(data))


@given(st.binary(max_size=300))
def test_bytes_round_trip(b):
    for w, r in ((P.write_bytes, P.read_bytes), (P.write_bytes_null, P.read_bytes_null)):
        data = enc(w, b)
        assert r(data, 0) == (b, len(data))


@given(st.integers(0, (1 << 200) - 1))
def test_pmap_round_trip(pm):
    data = P.encode_pmap(pm)
    assert P.read_pmap(data, 0) == (pm, len(data))
    assert len(data) == max(1, -(-pm.bit_length() // 7))
