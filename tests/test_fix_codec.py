"""Tests for fix_gateway.codec: encoding, framing, garbled detection, timestamps."""
from __future__ import annotations

import calendar

import pytest
import simplefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fix_gateway.codec import (
    DATA_LENGTH_TAGS,
    MAX_MESSAGE_SIZE,
    FixMessage,
    FrameReader,
    checksum,
    encode,
    format_utc_timestamp,
    parse,
    parse_utc_timestamp,
    split,
)

NOW = 1_704_189_600_123_456_789  # 2024-01-02 10:00:00.123456789 UTC
TS = format_utc_timestamp(NOW)


def msg(seq=1, mt="D", fields=None, **kw) -> bytes:
    if fields is None:
        fields = [(11, "ORD1"), (21, 1), (55, "SBER"), (54, 1), (38, 100), (40, 2),
                  (44, "10.5"), (60, TS)]
    kw.setdefault("sender", "BRK")
    kw.setdefault("target", "BOURSE")
    return encode(mt, fields, seq=seq, sending_time=TS, **kw)


def sohs(text: str) -> bytes:
    return text.replace("|", "\x01").encode()


def frame(body: str, begin: str = "FIX.4.4") -> bytes:
    """A correctly framed message around ``body`` ('|' as SOH)."""
    b = sohs(body)
    head = f"8={begin}\x019={len(b)}\x01".encode() + b
    return head + b"10=%03d\x01" % (sum(head) % 256)


# ----------------------------------------------------------------------------- encoding

def test_encode_layout_length_and_checksum():
    raw = msg(seq=7)
    text = raw.decode()
    assert text.startswith("8=FIX.4.4\x019=")
    fields = [f.split("=", 1) for f in text.split("\x01")[:-1]]
    assert [t for t, _ in fields[:7]] == ["8", "9", "35", "49", "56", "34", "52"]
    assert fields[-1][0] == "10"
    body_start = raw.index(b"\x0135=") + 1
    body_end = raw.rindex(b"10=")
    assert int(fields[1][1]) == body_end - body_start
    assert int(fields[-1][1]) == sum(raw[:body_end]) % 256
    assert len(fields[-1][1]) == 3


def test_encode_agrees_with_simplefix():
    raw = msg(seq=42)
    p = simplefix.FixParser()
    p.append_buffer(raw)
    m = p.get_message()
    assert m is not None
    assert m.get(34) == b"42" and m.get(55) == b"SBER" and m.get(52) == TS
    # and simplefix's encoding parses here identically
    sm = simplefix.FixMessage()
    sm.append_pair(8, "FIX.4.4")
    sm.append_pair(35, "D")
    sm.append_pair(49, "BRK")
    sm.append_pair(56, "BOURSE")
    sm.append_pair(34, 42)
    sm.append_pair(52, TS)
    for t, v in [(11, "ORD1"), (21, 1), (55, "SBER"), (54, 1), (38, 100), (40, 2),
                 (44, "10.5"), (60, TS)]:
        sm.append_pair(t, v)
    assert parse(sm.encode()).fields == parse(raw).fields


def test_encode_value_types_and_extra_header():
    raw = encode("8", [(1, b"\xff\xfebytes"), (2, "str"), (3, 12), (4, True), (5, False)],
                 sender=b"S", target="T", seq=3, sending_time=TS,
                 extra_header=[(43, "Y"), (122, TS)])
    m = parse(raw)
    assert [t for t, _ in m.fields] == [8, 9, 35, 49, 56, 34, 52, 43, 122, 1, 2, 3, 4, 5, 10]
    assert m.get(1) == b"\xff\xfebytes"
    assert m.get(3) == b"12" and m.get(4) == b"Y" and m.get(5) == b"N"


@pytest.mark.parametrize("bad", [[(58, "a\x01b")], [(58, b"a\x01b")]])
def test_encode_refuses_soh_in_values(bad):
    with pytest.raises(ValueError):
        encode("0", bad, sender="S", target="T", seq=1, sending_time=TS)
    with pytest.raises(ValueError):
        encode("0", [], sender="S\x01", target="T", seq=1, sending_time=TS)


def test_checksum_matches_plain_sum():
    data = bytes(range(256)) * 5 + b"tail"
    for end in (0, 1, 255, 256, 257, 700, len(data)):
        assert checksum(data, 0, end) == sum(data[:end]) % 256
    assert checksum(data, 3, 600) == sum(data[3:600]) % 256


# --------------------------------------------------------------------------- FixMessage

def test_fix_message_shape():
    raw = msg()
    m = parse(raw)
    assert m.raw == raw
    assert isinstance(m.fields, tuple)
    assert m.fields[0] == (8, b"FIX.4.4") and m.fields[1][0] == 9 and m.fields[-1][0] == 10
    assert m.msg_type == "D"
    assert m.get(55) == b"SBER"
    assert m.get(9999) is None and m.get(9999, b"x") == b"x"
    assert 55 in m and 9999 not in m


def test_get_returns_first_occurrence():
    m = FixMessage([(8, b"FIX.4.4"), (9, b"1"), (35, b"D"), (55, b"A"), (55, b"B"), (10, b"0")])
    assert m.get(55) == b"A"
    assert m.get_all(55) == [b"A", b"B"]
    assert "55=A" in repr(m)


# ------------------------------------------------------------------------------ framing

def test_split_several_messages_and_partial_tail():
    a, b = msg(1), msg(2)
    frames, rest, garbled = split(a + b + b[:20])
    assert [f.get(34) for f in frames] == [b"1", b"2"]
    assert rest == b[:20] and garbled == []
    assert frames[0].raw == a


def test_reader_byte_by_byte():
    stream = msg(1) + msg(2, mt="0", fields=[]) + msg(3)
    r = FrameReader()
    got = []
    for i in range(len(stream)):
        frames, garbled = r.feed(stream[i:i + 1])
        assert garbled == []
        got += frames
    assert [f.get(34) for f in got] == [b"1", b"2", b"3"]
    assert r.buffered == 0


@pytest.mark.parametrize("bad,reason", [
    (lambda m: m.replace(b"10=", b"10=9", 1)[:-2] + b"\x01", "CheckSum"),
    (lambda m: m[:-4] + (b"%03d" % ((int(m[-4:-1]) + 1) % 256)) + b"\x01", "CheckSum incorrect"),
    (lambda m: m.replace(b"\x0134=", b"\x0134x=", 1), "BodyLength"),
    (lambda m: m.replace(b"9=", b"9=x", 1), "BodyLength not numeric"),
])
def test_garbled_variants(bad, reason):
    good = msg(5)
    frames, rest, garbled = split(bad(good) + good)
    assert [f.get(34) for f in frames] == [b"5"]
    assert garbled and reason in garbled[0].reason
    assert rest == b""


def test_garbled_structure():
    cases = {
        "BodyLength is not the second field": sohs("8=FIX.4.4|35=0|9=5|10=000|"),
        "MsgType is not the third field": frame("34=1|35=0|49=A|"),
        "malformed field": frame("35=0|49garbled=A|"),
        "inside the body": frame("35=0|49=A|10=123|56=B|"),
    }
    for reason, data in cases.items():
        frames, rest, garbled = split(data + msg(1))
        assert [f.get(34) for f in frames] == [b"1"], reason
        assert any(reason in g.reason for g in garbled), (reason, garbled)


def test_junk_between_messages_is_reported_and_skipped():
    stream = b"hello\x01world" + msg(1) + b"\r\n" + msg(2) + b"8=FI"
    frames, rest, garbled = split(stream)
    assert [f.get(34) for f in frames] == [b"1", b"2"]
    assert [g.data for g in garbled] == [b"hello\x01world", b"\r\n"]
    assert rest == b"8=FI"  # could be the start of the next message


def test_body_length_too_long_recovers_swallowed_messages():
    good = msg(1)
    body_len = int(good.split(b"\x01")[1][2:])
    bad = good.replace(b"9=%d" % body_len, b"9=%d" % (body_len + 150), 1)
    stream = bad + msg(2) + msg(3) + msg(4)
    frames, rest, garbled = split(stream)
    assert [f.get(34) for f in frames] == [b"2", b"3", b"4"]
    assert len(garbled) == 1 and rest == b""


def test_body_length_too_short():
    good = msg(1)
    body_len = int(good.split(b"\x01")[1][2:])
    bad = good.replace(b"9=%d" % body_len, b"9=%d" % (body_len - 10), 1)
    frames, rest, garbled = split(bad + msg(2))
    assert [f.get(34) for f in frames] == [b"2"] and len(garbled) == 1


def test_missing_checksum_detected_without_waiting():
    no_trailer = msg(1)[:-7]
    frames, rest, garbled = split(no_trailer + b"8=FIX.4.4\x019=")
    assert frames == [] and garbled and rest == b"8=FIX.4.4\x019="


def test_oversized_message_is_garbled_immediately_and_buffer_bounded():
    huge = msg(1, fields=[(58, "x" * 5000)])
    r = FrameReader(max_size=1024)
    frames, garbled = r.feed(huge[:100])
    assert frames == [] and garbled and "maximum size" in garbled[0].reason
    frames, garbled = r.feed(huge[100:] + msg(2))
    assert [f.get(34) for f in frames] == [b"2"]
    assert r.buffered <= 1024


def test_reader_buffer_never_exceeds_max_size():
    r = FrameReader(max_size=512)
    partial = msg(1)[:-1]
    r.feed(partial)
    assert r.buffered == len(partial)
    for _ in range(100):
        r.feed(b"z" * 97)
        assert r.buffered <= 512


def test_data_fields_may_contain_soh():
    raw = frame("35=D|49=A|56=B|34=1|52=20240102-10:00:00.000|95=5|96=a\x01b=c|55=X|")
    m = parse(raw)
    assert m.get(96) == b"a\x01b=c" and m.get(55) == b"X"
    bad = frame("35=D|49=A|56=B|34=1|95=9|96=a\x01b|55=X|")
    with pytest.raises(ValueError):
        parse(bad)


def test_large_tag_numbers():
    m = parse(frame("35=D|49=A|56=B|34=1|20001=big|5001=u|"))
    assert m.get(20001) == b"big" and m.get(5001) == b"u"


def test_parse_requires_exactly_one_message():
    with pytest.raises(ValueError):
        parse(msg(1) + msg(2))
    with pytest.raises(ValueError):
        parse(msg(1)[:-1])


# ---------------------------------------------------------------------------- timestamps

def test_format_timestamp():
    assert format_utc_timestamp(NOW) == b"20240102-10:00:00.123"
    assert format_utc_timestamp(0) == b"19700101-00:00:00.000"
    assert format_utc_timestamp(951_782_400 * 10**9 + 999_999_999) == b"20000229-00:00:00.999"


@pytest.mark.parametrize("text,expected", [
    (b"20240102-10:00:00", 1_704_189_600 * 10**9),
    (b"20240102-10:00:00.123", 1_704_189_600_123_000_000),
    (b"20240102-10:00:00.123456", 1_704_189_600_123_456_000),
    (b"20240102-10:00:00.123456789", 1_704_189_600_123_456_789),
    ("20240229-23:59:59.999", calendar.timegm((2024, 2, 29, 23, 59, 59)) * 10**9 + 999 * 10**6),
])
def test_parse_timestamp(text, expected):
    assert parse_utc_timestamp(text) == expected


@pytest.mark.parametrize("text", [
    b"", b"2024-01-02 10:00:00", b"20240102-10:00", b"20240102-10:00:00.1",
    b"20241302-10:00:00", b"20230229-10:00:00", b"20240132-10:00:00", b"20240102-24:00:00",
    b"20240102-10:60:00", b"2024010x-10:00:00", b"20240102-10:00:00,123", b"+2024010-10:00:00",
])
def test_parse_timestamp_rejects(text):
    with pytest.raises(ValueError):
        parse_utc_timestamp(text)


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))
def test_timestamp_roundtrip(ns):
    text = format_utc_timestamp(ns)
    assert parse_utc_timestamp(text) == ns // 1_000_000 * 1_000_000


# ------------------------------------------------------------------------ property-based

_NOT_PLAIN = {34, 35, 49, 52, 56} | set(DATA_LENGTH_TAGS) | set(DATA_LENGTH_TAGS.values())
tags = st.integers(min_value=11, max_value=20000).filter(lambda t: t not in _NOT_PLAIN)
values = st.binary(min_size=1, max_size=40).filter(lambda b: b"\x01" not in b)
field_lists = st.lists(st.tuples(tags, values), max_size=25)


@given(field_lists, st.integers(min_value=1, max_value=10**9))
def test_encode_split_roundtrip(fields, seq):
    raw = encode("D", fields, sender="S", target="T", seq=seq, sending_time=TS)
    frames, rest, garbled = split(raw)
    assert garbled == [] and rest == b"" and len(frames) == 1
    body = [(t, v) for t, v in frames[0].fields if t not in (8, 9, 35, 49, 56, 34, 52, 10)]
    assert body == fields
    assert frames[0].get(34) == str(seq).encode()


@given(st.lists(field_lists, min_size=1, max_size=5), st.data())
def test_any_chunking_gives_the_same_frames(messages, data):
    raws = [encode("8", f, sender="S", target="T", seq=i + 1, sending_time=TS)
            for i, f in enumerate(messages)]
    stream = b"".join(raws)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    r = FrameReader()
    got = []
    prev = 0
    for c in cuts + [len(stream)]:
        frames, garbled = r.feed(stream[prev:c])
        assert garbled == []
        got += frames
        prev = c
    assert [f.raw for f in got] == raws


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.integers(min_value=512, max_value=4096))
def test_arbitrary_bytes_never_raise(data, max_size):
    r = FrameReader(max_size=max_size)
    for i in range(0, len(data), 333):
        frames, garbled = r.feed(data[i:i + 333])
        assert r.buffered <= max_size
    # whatever came before, valid messages get through once enough bytes have followed
    good = msg(9)
    got = []
    for _ in range(max_size // len(good) + 2):
        frames, garbled = r.feed(good)
        got += frames
        assert r.buffered <= max_size
    assert got and got[-1].get(34) == b"9"


@given(st.data())
def test_single_byte_corruption_is_never_a_valid_frame(data):
    raw = msg(3)
    i = data.draw(st.integers(0, len(raw) - 1))
    b = data.draw(st.integers(0, 255).filter(lambda x: x != raw[i]))
    bad = raw[:i] + bytes([b]) + raw[i + 1:]
    # A changed BodyLength digit can claim up to 999 bytes: until that many have arrived the
    # frame is only incomplete, so enough messages follow to show the corruption.
    following = list(range(4, 14))
    frames, rest, garbled = split(bad + b"".join(msg(k) for k in following))
    # the corrupted message never comes out; the following ones do
    assert [f.get(34) for f in frames][-len(following):] == [b"%d" % k for k in following]
    assert all(f.get(34) != b"3" for f in frames)


def test_max_message_size_default():
    assert MAX_MESSAGE_SIZE >= 4096


def test_trickled_message_is_not_rescanned_per_byte(monkeypatch):
    import fix_gateway.codec as codec

    calls = []
    real = codec._split
    monkeypatch.setattr(codec, "_split", lambda buf, m: calls.append(len(buf)) or real(buf, m))
    raw = msg(1, fields=[(58, "z" * 10_000)])
    r = FrameReader()
    got = []
    for i in range(len(raw)):
        got += r.feed(raw[i:i + 1])[0]
    assert [f.get(34) for f in got] == [b"1"]
    assert len(calls) < 60  # header bytes and the trailer, not every one of 10 000 bytes
