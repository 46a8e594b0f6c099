"""Micro-benchmark of the FIX codec: parse and encode messages/s.

Run from the project root: ``python -m bench.fix_codec_bench [--seconds 1.0]``.
Measures, for a NewOrderSingle (35=D) and an ExecutionReport (35=8):
  * parse:  ``split()`` of one complete frame (framing, CheckSum, field split) and a ``get``;
  * stream: ``FrameReader.feed()`` of a 64-message buffer (messages/s);
  * encode: ``encode()`` of the whole message (header, BodyLength, CheckSum) with a
    pre-formatted SendingTime, the way the session calls it.
For scale, a last line runs the whole session path with an in-memory store: inbound
NewOrderSingles through ``Session.on_bytes`` (framing, header checks, sequencing, Deliver)
and outbound ExecutionReports through ``Session.send_app`` (encode, store, Send).
Each figure is the best of five short runs (the machine may be busy). Prints one line per
cell; nothing is asserted.
"""
from __future__ import annotations

import argparse
import time

from fix_gateway.codec import FrameReader, encode, format_utc_timestamp, split
from fix_gateway.session import Session, SessionConfig
from fix_gateway.store import MemoryStore

NOW_NS = 1_704_189_600_123_456_789
ST = format_utc_timestamp(NOW_NS)

NEW_ORDER = ("D", [(11, "ORD-000123456"), (1, "ACC-77"), (21, 1), (55, "SBER"), (207, "MISX"),
                   (54, 1), (60, ST), (38, 1000), (40, 2), (44, "285.17"), (59, 0),
                   (528, "A"), (386, 1), (336, "TQBR")])
EXEC_REPORT = ("8", [(37, "O-9876543210"), (11, "ORD-000123456"), (17, "E-1234567890"),
                     (150, "F"), (39, 1), (1, "ACC-77"), (55, "SBER"), (207, "MISX"), (54, 1),
                     (38, 1000), (40, 2), (44, "285.17"), (32, 200), (31, "285.15"),
                     (151, 800), (14, 200), (6, "285.15"), (60, ST), (336, "TQBR")])


def _encode(msg_type, fields, seq):
    return encode(msg_type, fields, sender="BOURSE", target="BROKER1", seq=seq,
                  sending_time=ST)


def _rate(fn, seconds: float, per_call: int = 1, trials: int = 5) -> float:
    """Best of ``trials`` runs of ``seconds / trials`` each (robust to a busy machine)."""
    best = 0.0
    for _ in range(trials):
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds / trials
        while True:
            for _ in range(200):
                fn()
            n += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n * per_call / (now - t0))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="duration of each cell")
    args = ap.parse_args(argv)
    for name, (mt, fields) in (("NewOrderSingle", NEW_ORDER), ("ExecutionReport", EXEC_REPORT)):
        raw = _encode(mt, fields, 123456)

        def parse_one(raw=raw):
            split(raw)[0][0].get(55)

        stream = raw * 64
        reader = FrameReader()

        def parse_stream(stream=stream, reader=reader):
            reader.feed(stream)

        def encode_one(mt=mt, fields=fields):
            _encode(mt, fields, 123456)

        p = _rate(parse_one, args.seconds)
        s = _rate(parse_stream, args.seconds, per_call=64) / 1
        e = _rate(encode_one, args.seconds)
        print(f"{name:16s} {len(raw):4d} B  parse {p:>10,.0f} msg/s   "
              f"stream {s / 1:>10,.0f} msg/s   encode {e:>10,.0f} msg/s")
    print(f"session path (MemoryStore): inbound NewOrderSingle {_session_in(args.seconds):>9,.0f}"
          f" msg/s   outbound ExecutionReport {_session_out(args.seconds):>9,.0f} msg/s")
    return 0


def _logged_on() -> Session:
    s = Session(SessionConfig(target_comp_id="BROKER1"), MemoryStore())
    s.on_connect(NOW_NS)
    s.on_bytes(encode("A", [(98, 0), (108, 30)], sender="BROKER1", target="BOURSE", seq=1,
                      sending_time=ST), NOW_NS)
    return s


def _session_in(seconds: float) -> float:
    """Inbound rate, timing only ``on_bytes`` (messages encoded beforehand); best batch."""
    s = _logged_on()
    mt, fields = NEW_ORDER
    seq, spent, best = 2, 0.0, 0.0
    while spent < seconds:
        batch = [encode(mt, fields, sender="BROKER1", target="BOURSE", seq=seq + i,
                        sending_time=ST) for i in range(1000)]
        t0 = time.perf_counter()
        for raw in batch:
            s.on_bytes(raw, NOW_NS)
        dt = time.perf_counter() - t0
        spent += dt
        best = max(best, len(batch) / dt)
        seq += len(batch)
    return best


def _session_out(seconds: float) -> float:
    s = _logged_on()
    mt, fields = EXEC_REPORT
    return _rate(lambda: s.send_app(mt, fields, NOW_NS), seconds)


if __name__ == "__main__":
    raise SystemExit(main())
