"""FAST codec throughput: encode and decode messages/s for the exchange's templates.

    python -m bench.fast_codec_bench [--seconds 1.0] [--pairs] [--impl both|c|python]

Messages go through ``encode_datagram``/``decode_datagram``, as on the feed: a 4-byte
sequence number and one message encoded with fresh dictionaries (the Moscow Exchange
convention).  Decimals are given as ``Decimal`` objects and
decoded to ``Decimal`` (``--pairs``: as exact (mantissa, exponent) pairs instead).
Both implementations are measured by default: the compiled one the Encoder/Decoder use
("c", marketdata/fast/_fastvm.c; skipped when not built) and the generated-Python
reference ("python").  Prints one line per case; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from decimal import Decimal

from marketdata.fast import Decoder, Encoder, Templates, vm

SPEC = os.path.join(os.path.dirname(__file__), "..", "spec", "fast-templates.xml")


def _px(cents: int, pairs: bool):
    return (cents, -2) if pairs else Decimal(cents).scaleb(-2)


def incremental(n: int, pairs: bool) -> dict:
    """A typical incremental refresh: one matching event at one time stamp, reported as a
    trade plus book-level changes of one instrument (every third entry is a trade)."""
    entries = []
    for k in range(n):
        trade = k % 3 == 0
        entries.append({
            "MDUpdateAction": 0 if trade else 1, "MDEntryType": "2" if trade else "01"[k % 2],
            "SecurityID": 2871, "Symbol": "SBER", "TradingSessionID": "TQBR",
            "RptSeq": 100_000 + k, "MDEntryPx": _px(25_015 + 5 * k, pairs),
            "MDEntrySize": 1_000 + 10 * k, "MDEntryTime": 101_530_123,
            "NumberOfOrders": None if trade else 3 + k,
            "MDPriceLevel": None if trade else 1 + k,
            "MDEntryID": None, "TradeID": 4_455_000_123 if trade else None,
            "AggressorSide": 1 if trade else None,
        })
    return {"MsgSeqNum": 1_234_567, "SendingTime": 20_231_123_153_012_345,
            "LastFragment": None, "MDEntries": entries}


def snapshot(pairs: bool) -> dict:
    entries = [{"MDEntryType": "0" if k < 5 else "1", "MDEntryID": None,
                "MDEntryPx": _px(25_000 - 5 * k if k < 5 else 25_005 + 5 * k, pairs),
                "MDEntrySize": 100 * (k + 1), "MDEntryTime": 101_530_123,
                "NumberOfOrders": 2, "MDPriceLevel": k % 5 + 1} for k in range(10)]
    return {"MsgSeqNum": 55, "SendingTime": 20_231_123_153_012_345,
            "LastMsgSeqNumProcessed": 1_234_560, "RptSeq": 100_000, "TotNumReports": 250,
            "LastFragment": 1, "RouteFirst": 1, "TradSesStatus": 2, "SecurityID": 2871,
            "Symbol": "SBER", "TradingSessionID": "TQBR", "MDSecurityTradingStatus": 17,
            "MDEntries": entries}


def security_definition(pairs: bool) -> dict:
    return {"MsgSeqNum": 7, "SendingTime": 20_231_123_153_012_345, "TotNumReports": 250,
            "Symbol": "SBER", "SecurityID": 2871, "SecurityIDSource": "8",
            "SecurityDesc": "Сбербанк России ао", "EncodedSecurityDesc": None,
            "CFICode": "ESVUFR", "SecurityType": "CS", "Currency": "RUB", "RoundLot": 10,
            "FaceValue": _px(300, pairs), "SecurityTradingStatus": 17,
            "SecurityAltIDs": [{"SecurityAltID": "RU0009029540", "SecurityAltIDSource": "4"}],
            "MarketSegments": [{"MarketSegmentID": "TQBR", "TradingSessionID": "TQBR",
                                "PriceLimits": {"HighLimitPx": _px(27_500, pairs),
                                                "LowLimitPx": _px(22_500, pairs),
                                                "TickRules": {"MinPriceIncrement": _px(1, pairs),
                                                              "MinPriceIncrementAmount": None}}}]}


def rate(fn, seconds: float) -> float:
    """Messages/s of the best of several short rounds (the machine is shared: the best
    round is the least disturbed one)."""
    best = 0.0
    batch = 500
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        best = max(best, batch / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--pairs", action="store_true", help="decimals as (mantissa, exponent)")
    ap.add_argument("--impl", choices=("both", "c", "python"), default="both",
                    help="implementations to measure")
    args = ap.parse_args()
    templates = Templates.load(SPEC)
    impls = ["c", "python"] if args.impl == "both" else [args.impl]
    if "c" in impls and not vm.available():
        print("(the compiled codec is not built: measuring the Python reference only)")
        impls = [i for i in impls if i != "c"] or ["python"]
    codecs = {impl: (Encoder(templates, impl=impl),
                     Decoder(templates, decimals="pair" if args.pairs else "decimal", impl=impl))
              for impl in impls}
    cases = [
        ("incremental refresh, 1 entry", "MarketDataIncrementalRefresh", incremental(1, args.pairs)),
        ("incremental refresh, 3 entries", "MarketDataIncrementalRefresh", incremental(3, args.pairs)),
        ("incremental refresh, 10 entries", "MarketDataIncrementalRefresh", incremental(10, args.pairs)),
        ("snapshot, 10 entries", "MarketDataSnapshotFullRefresh", snapshot(args.pairs)),
        ("security definition", "SecurityDefinition", security_definition(args.pairs)),
    ]
    print(f"FAST codec, dictionaries reset per message, decimals as "
          f"{'pairs' if args.pairs else 'Decimal'}; messages/s")
    head = f"{'case':34s} {'bytes':>5s}"
    for impl in impls:
        head += f" {impl + ' encode':>14s} {impl + ' decode':>14s}"
    print(head)
    for label, name, values in cases:
        line = ""
        data = None
        for impl in impls:
            enc, dec = codecs[impl]
            got = enc.encode_datagram(name, values, 1)
            assert data is None or got == data, "the implementations disagree"
            data = got

            def do_encode(enc=enc, name=name, values=values):
                enc.encode_datagram(name, values, 1)

            def do_decode(dec=dec, data=data):
                dec.decode_datagram(data)

            e = rate(do_encode, args.seconds)
            d = rate(do_decode, args.seconds)
            line += f" {e:14,.0f} {d:14,.0f}"
        print(f"{label:34s} {len(data):5d}" + line)


if __name__ == "__main__":
    main()
