"""Index calculator and index definitions: values checked against hand computation.

Every expected value here is worked out with ``fractions.Fraction`` from the formula
``sum(P * N * FF * W) / D`` and rounded half-even to 2 decimals with Python's ``round``,
independently of the calculator's integer arithmetic.
"""
from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from bourse.config import ConfigError, load_config, parse_config
from engine.events import BookUpdate, Trade
from index_server.calc import DAY_NS, IndexCalculator, cap_multipliers, round_half_even
from index_server.service import IndexService

F = Fraction
T0 = 1_750_000_000 * 10**9 // DAY_NS * DAY_NS + 7 * 3600 * 10**9   # 2025-06-15T07:00:00Z

MARKET = """
[market]
price_decimals = 4
""" + "".join(f"""
[[instruments]]
symbol = "{s}"
name = "{s} plc"
tick_size = "0.01"
lot_size = 1
reference_price = "{p}"
price_band_pct = "50"
""" for s, p in [("AAA", "100.00"), ("BBB", "50.00"), ("CCC", "10.00"), ("DDD", "20.00"),
                 ("EEE", "5.00"), ("FFF", "1.00"), ("GGG", "2.00"), ("HHH", "4.00"),
                 ("III", "7.00"), ("JJJ", "35.00")])

TIX = """
[[indices]]
code = "TIX"
name = "Test Index"
base_value = "1000"
weight_cap_pct = "40"

[[indices.constituents]]
symbol = "AAA"
shares = 1000
free_float = "1"

[[indices.constituents]]
symbol = "BBB"
shares = 1000
free_float = "0.5"

[[indices.constituents]]
symbol = "CCC"
shares = 2500
free_float = "1"
"""


def cfg_of(text: str):
    return parse_config(MARKET + text, "test.toml")


def calc_of(text: str) -> IndexCalculator:
    cfg = cfg_of(text)
    return IndexCalculator(cfg.indices, cfg.market)


_seq = iter(range(1, 10**9))


def trade(sym: str, price: str, ts: int, seq: int | None = None) -> Trade:
    units = int(Decimal(price) * 10_000)
    s = next(_seq) if seq is None else seq
    return Trade(s, s, ts, s, sym, units, 1, 1, 1, 2, 0, 0)


def q2(x: Fraction, places: int = 2) -> str:
    """Half-even to 2 decimals, as text (independent of the calculator's formatting)."""
    r = round(x * 10**places)          # Fraction.__round__ rounds half to even
    sign = "-" if r < 0 else ""
    r = abs(r)
    return f"{sign}{r // 10**places}.{r % 10**places:0{places}d}"


def floor10(x: Fraction) -> Fraction:
    return F(x.numerator * 10**10 // x.denominator, 10**10)


# ---------------------------------------------------------------------------------------------
# Weight caps


def test_cap_multipliers_hand_computed_two_rounds():
    # Weights 60/25/10/5 %, cap 30 %: 60 is capped, which pushes 25 to 43.75 %: capped too.
    # Then the two uncapped hold 15 of a total T with 0.4 T = 15: T = 37.5, capped at 11.25 each.
    caps = [F(60), F(25), F(10), F(5)]
    m = cap_multipliers(caps, F(3, 10))
    assert m == [F(1125, 6000), F(1125, 2500), 1, 1]
    new = [c * k for c, k in zip(caps, m)]
    assert [w / sum(new) for w in new] == [F(3, 10), F(3, 10), F(4, 15), F(2, 15)]


def test_cap_multipliers_nothing_over_cap_and_equal_weights():
    assert cap_multipliers([F(1), F(2), F(3)], F(1, 2)) == [1, 1, 1]
    # n * cap == 1: everybody is capped, equal weights
    m = cap_multipliers([F(1), F(2), F(3), F(4)], F(1, 4))
    assert len({c * k for c, k in zip([1, 2, 3, 4], m)}) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 10**12), min_size=1, max_size=25), st.integers(1, 100))
def test_cap_multipliers_properties(raw, cap_pct):
    n = len(raw)
    cap = F(max(cap_pct, -(-100 // n)), 100)            # feasible: n * cap >= 1
    caps = [F(x) for x in raw]
    m = cap_multipliers(caps, cap)
    new = [c * k for c, k in zip(caps, m)]
    total = sum(new)
    assert all(0 < k <= 1 for k in m)
    assert all(w / total <= cap for w in new)           # nobody above the cap
    uncapped = [(c, w) for c, w, k in zip(caps, new, m) if k == 1]
    capped = [w for w, k in zip(new, m) if k != 1]
    # capped ones sit exactly at the cap; the others keep their relative sizes
    assert all(w / total == cap for w in capped)
    assert all(c == w for c, w in uncapped)


def test_weight_cap_applied_at_start_hand_computed():
    # AAA 100 x 1000 x 1 = 100000 (66.7 %), BBB 50 x 1000 x 0.5 = 25000, CCC 10 x 2500 = 25000.
    # Cap 40 %: AAA' = 0.4 T, T = 50000 / 0.6, AAA' = 33333.33..: W = 1/3 -> 0.3333333333.
    calc = calc_of(TIX)
    comp = {c["symbol"]: c for c in calc.composition("TIX")}
    assert comp["AAA"]["weight_cap"] == "0.3333333333"
    assert comp["BBB"]["weight_cap"] == comp["CCC"]["weight_cap"] == "1.0000000000"
    w = floor10(F(1, 3))
    mc = 100 * 1000 * w + 25000 + 25000
    assert comp["AAA"]["weight_pct"] == q2(100 * 1000 * w / mc * 100, 4)
    assert Decimal(comp["AAA"]["weight_pct"]) <= 40
    value, divisor = calc.exact("TIX")
    assert divisor == mc / 1000 and value == 1000
    v = calc.value("TIX")
    assert (v.value, v.prev_close, v.open, v.change) == ("1000.00", "1000.00", None, "0.00")
    assert v.capitalisation == q2(mc) == "83333.33"


def constituents(rows) -> str:
    return "".join(f"""
[[indices.constituents]]
symbol = "{s}"
shares = {n}
free_float = "{ff}"
""" for s, n, ff in rows)


def test_fifteen_percent_cap_scales_the_others():
    # Ten constituents: AAA 300000 (32.3 % of 930000), nine others at 70000 each (7.5 %).
    others = [("BBB", 1400), ("CCC", 7000), ("DDD", 3500), ("EEE", 14000), ("FFF", 70000),
              ("GGG", 35000), ("HHH", 17500), ("III", 10000), ("JJJ", 2000)]
    text = """
[[indices]]
code = "CAP15"
name = "Capped"
base_value = "100"
weight_cap_pct = "15"
""" + constituents([("AAA", 3000, "1")] + [(s, n, "1") for s, n in others])
    calc = calc_of(text)
    comp = {c["symbol"]: c for c in calc.composition("CAP15")}
    # AAA' = 0.15 T with T = 630000 / 0.85: W = 0.15 * 630000 / 0.85 / 300000 = 0.370588235294..
    t = F(630000) / (1 - F(15, 100))
    w_aaa = floor10(F(15, 100) * t / 300000)
    assert comp["AAA"]["weight_cap"] == "0.3705882352" == q2(w_aaa, 10)
    mc = 300000 * w_aaa + 630000
    assert comp["AAA"]["weight_pct"] == q2(300000 * w_aaa / mc * 100, 4) == "15.0000"
    # the others keep W = 1 and their relative sizes: each 70000 / mc = 9.4444 %, up from 7.53 %
    for s, _ in others:
        assert comp[s]["weight_cap"] == "1.0000000000"
        assert comp[s]["weight_pct"] == q2(F(70000) / mc * 100, 4) == "9.4444"
    _, divisor = calc.exact("CAP15")
    assert divisor == mc / 100
    # AAA rises 10 %: the coefficients stay until the next rebalance, so its weight drifts up
    calc.on_event(trade("AAA", "110.00", T0))
    assert calc.value("CAP15").value == q2((330000 * w_aaa + 630000) / divisor)
    assert Decimal(calc.composition("CAP15")[0]["weight_pct"]) > 15


def test_infeasible_cap_is_refused():
    text = """
[[indices]]
code = "CAP"
name = "Capped"
base_value = "100"
weight_cap_pct = "15"
""" + constituents([(s, 100, "1") for s in ("AAA", "BBB", "CCC", "DDD", "EEE")])
    # Five constituents at 15 % cannot hold (5 x 15 < 100): the configuration is refused.
    with pytest.raises(ConfigError) as info:
        cfg_of(text)
    assert info.value.key == "indices[0].weight_cap_pct" and "at least 100" in str(info.value)
    assert "cap >= 20.0000 %" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Values on a known trade sequence


def test_known_trade_sequence_hand_computed():
    calc = calc_of(TIX)
    w = floor10(F(1, 3))
    shares = {"AAA": 1000 * w, "BBB": 1000 * F(1, 2), "CCC": F(2500)}
    prices = {"AAA": F(100), "BBB": F(50), "CCC": F(10)}
    divisor = sum(prices[s] * shares[s] for s in shares) / 1000
    seen = []
    steps = [("AAA", "110.00"), ("CCC", "9.00"), ("BBB", "50.37"), ("DDD", "25.00"),
             ("AAA", "95.55"), ("CCC", "10.01")]
    for k, (sym, px) in enumerate(steps):
        changed = calc.on_event(trade(sym, px, T0 + k * 10**9))
        if sym == "DDD":                      # not a constituent: nothing changes
            assert changed == []
            continue
        prices[sym] = F(Decimal(px))
        exact = sum(prices[s] * shares[s] for s in shares) / divisor
        seen.append(q2(exact))
        v = calc.value("TIX")
        assert changed == ["TIX"]
        assert v.value == q2(exact), (sym, px)
        assert v.capitalisation == q2(sum(prices[s] * shares[s] for s in shares))
        assert v.time == T0 + k * 10**9
        assert calc.exact("TIX")[0] == exact
    v = calc.value("TIX")
    vals = [F(Decimal(s)) for s in seen]
    assert v.open == seen[0] and v.high == q2(max(vals)) and v.low == q2(min(vals))
    assert v.prev_close == "1000.00"
    assert v.change == q2(vals[-1] - 1000)
    assert v.change_pct == q2((vals[-1] - 1000) / 1000 * 100)
    assert v.seq == 5 and v.event_seq > 0
    assert v.time_utc.endswith("Z") and v.time_utc[11:19] == "07:00:05"


def test_given_divisor_and_base_capitalisation():
    calc = calc_of(TIX.replace('base_value = "1000"', 'base_value = "1000"\ndivisor = "55.5"'))
    value, divisor = calc.exact("TIX")
    assert divisor == F(555, 10)
    mc = 100 * 1000 * floor10(F(1, 3)) + 50000
    assert value == mc / divisor and calc.value("TIX").value == q2(mc / divisor)
    calc = calc_of(TIX.replace('base_value = "1000"',
                               'base_value = "500"\nbase_capitalisation = "100000"'))
    assert calc.exact("TIX")[1] == 200
    assert calc.value("TIX").value == q2(mc / 200) == "416.67"
    assert calc.value("TIX").divisor == "200.0000000000"


def test_half_even_rounding_of_published_value():
    assert round_half_even(5, 10) == 0 and round_half_even(15, 10) == 2
    assert round_half_even(25, 10) == 2 and round_half_even(-25, 10) == -2
    assert round_half_even(26, 10) == 3 and round_half_even(-26, 10) == -3
    # An index exactly on a half hundredth: divisor 8 and MC 100.005 * 8.
    calc = calc_of("""
[[indices]]
code = "HALF"
name = "Half"
base_value = "1"
divisor = "8"
weight_cap_pct = "100"
[[indices.constituents]]
symbol = "EEE"
shares = 16001
free_float = "0.1"
""")
    # 5.00 * 16001 * 0.1 = 8000.5; / 8 = 1000.0625 -> 1000.06
    assert calc.value("HALF").value == "1000.06"
    calc.on_event(trade("EEE", "5.01", T0))   # 5.01 * 1600.1 / 8 = 1002.062625 -> 1002.06
    assert calc.value("HALF").value == q2(F(501, 100) * F(160010, 100) / 8) == "1002.06"


# ---------------------------------------------------------------------------------------------
# Rebalancing


REBAL = TIX + """
[[indices.rebalances]]
effective = 2025-06-15T12:00:00Z
weight_cap_pct = "50"

[[indices.rebalances.constituents]]
symbol = "AAA"
shares = 1000
free_float = "0.8"

[[indices.rebalances.constituents]]
symbol = "CCC"
shares = 2500
free_float = "1"

[[indices.rebalances.constituents]]
symbol = "DDD"
shares = 4000
free_float = "0.25"
weight_cap = "0.9"
"""
REBAL_NS = 1_749_988_800 * 10**9          # 2025-06-15T12:00:00Z


def test_rebalance_keeps_the_value_and_changes_the_basket():
    calc = calc_of(REBAL)
    t = REBAL_NS - 3600 * 10**9
    calc.on_event(trade("AAA", "120.00", t))
    calc.on_event(trade("DDD", "22.00", t + 1))          # not yet a constituent
    calc.on_event(trade("BBB", "47.10", t + 2))
    before = calc.value("TIX")
    exact_before, d_old = calc.exact("TIX")
    # an event at the effective time (a book update) puts the new basket in force first
    changed = calc.on_event(BookUpdate(next(_seq), 1, REBAL_NS, "EEE", ()))
    after = calc.value("TIX")
    exact_after, d_new = calc.exact("TIX")
    assert changed == ["TIX"]
    assert exact_after == exact_before and after.value == before.value
    assert after.seq == before.seq + 1 and after.time == REBAL_NS
    assert (after.open, after.high, after.low) == (before.open, before.high, before.low)
    # hand computation of the new basket at the last prices:
    # AAA 120 x 1000 x 0.8 = 96000, CCC 10 x 2500 = 25000, DDD 22 x 4000 x 0.25 x 0.9 = 19800
    # total 140800: AAA 68 % > 50 %: AAA' = 0.5 T, T = 44800 / 0.5 = 89600, AAA' = 44800.
    w_aaa = floor10(F(44800, 96000))
    mc_new = 96000 * w_aaa + 25000 + 19800
    w_old = floor10(F(1, 3))
    mc_old = 120 * 1000 * w_old + F(4710, 100) * 500 + 25000
    assert d_new == d_old * mc_new / mc_old
    comp = {c["symbol"]: c for c in calc.composition("TIX")}
    assert set(comp) == {"AAA", "CCC", "DDD"}
    assert comp["DDD"]["weight_cap"] == "0.9000000000" and comp["AAA"]["free_float"] == "0.800000"
    # BBB no longer moves the index; DDD does, with the new divisor
    assert calc.on_event(trade("BBB", "60.00", REBAL_NS + 5)) == []
    calc.on_event(trade("DDD", "24.00", REBAL_NS + 6))
    expected = (120 * 1000 * F(8, 10) * w_aaa + 25000 + 24 * 4000 * F(1, 4) * F(9, 10)) / d_new
    assert calc.value("TIX").value == q2(expected)


def test_rebalance_applies_before_a_trade_at_the_same_time():
    calc = calc_of(REBAL)
    calc.on_event(trade("AAA", "120.00", REBAL_NS - 10))
    v0 = calc.exact("TIX")[0]
    calc.on_event(trade("BBB", "10.00", REBAL_NS))      # BBB already out at REBAL_NS
    assert calc.exact("TIX")[0] == v0


def test_day_change_closes_the_day():
    calc = calc_of(TIX)
    calc.on_event(trade("AAA", "110.00", T0))
    calc.on_event(trade("AAA", "90.00", T0 + 1))
    last = calc.value("TIX")
    nxt = T0 - T0 % DAY_NS + DAY_NS + 7 * 3600 * 10**9
    calc.on_event(BookUpdate(next(_seq), 1, nxt, "AAA", ()))
    v = calc.value("TIX")
    assert v.prev_close == last.value and v.value == last.value
    assert (v.open, v.high, v.low, v.change, v.change_pct) == (None, None, None, "0.00", "0.00")
    assert v.time == nxt - 7 * 3600 * 10**9                 # midnight UTC
    calc.on_event(trade("CCC", "11.00", nxt + 1))
    v = calc.value("TIX")
    assert v.open == v.high == v.low == v.value and v.prev_close == last.value


# ---------------------------------------------------------------------------------------------
# Determinism


def random_stream(seed: int, n: int = 3000, start: int = T0):
    rnd = random.Random(seed)
    ts = start
    out = []
    for seq in range(1, n + 1):
        ts += rnd.choice((0, 0, 1, 1000, 10**6, 3 * 10**8, 3600 * 10**9))
        if rnd.random() < 0.8:
            sym = rnd.choice("AAA BBB CCC DDD EEE".split())
            px = rnd.randrange(500, 20000)
            out.append(Trade(seq, seq, ts, seq, sym, px * 100, 1, 1, 1, 2, 0, 0))
        else:
            out.append(BookUpdate(seq, seq, ts, "AAA", ()))
    return out


TWO = REBAL + """
[[indices]]
code = "ALL"
name = "All"
base_value = "3000"
weight_cap_pct = "25"
""" + "".join(f"""
[[indices.constituents]]
symbol = "{s}"
shares = {n}
free_float = "0.{n % 7 + 2}"
""" for s, n in [("AAA", 7001), ("BBB", 12000), ("CCC", 9999), ("DDD", 300000), ("EEE", 4242)])


def test_replay_gives_identical_values():
    events = random_stream(7, start=REBAL_NS - 10 * 3600 * 10**9)
    a, b = calc_of(TWO), calc_of(TWO)
    trace_a = []
    for ev in events:
        for code in a.on_event(ev):
            trace_a.append(a.value(code))
    trace_b = []
    for ev in events:
        for code in b.on_event(ev):
            trace_b.append(b.value(code))
    assert trace_a == trace_b and len(trace_a) > 1000
    # a restart part way: a fresh calculator that replays from seq 1 lands on the same state
    c = calc_of(TWO)
    for ev in events[:1234]:
        c.on_event(ev)
    d = calc_of(TWO)
    for ev in events:
        d.on_event(ev)
    for ev in events[1234:]:
        c.on_event(ev)
    assert c.values() == d.values() == a.values()
    assert {v.code for v in a.values()} == {"TIX", "ALL"}


def test_service_history_is_deterministic():
    cfg = cfg_of(TWO)
    events = random_stream(11)
    ticks = iter(range(0, 10**15, 7_777_777))
    s1 = IndexService(cfg.market, cfg.indices, clock=lambda: next(ticks))
    s2 = IndexService(cfg.market, cfg.indices, clock=lambda: 42)
    for ev in events:
        s1.apply(ev)
    for ev in events:
        s2.apply(ev)
    for code in ("TIX", "ALL"):
        h = s1.history(code)
        assert h == s2.history(code) and h
        # one point per 1 s bucket of event time, each the last state of its bucket
        buckets = [p.time // 10**9 for p in h]
        assert buckets == sorted(set(buckets))
        assert h[-1] == s1.current(code)


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(5)), st.integers(0, 10**6))
def test_constituent_order_does_not_matter(order, seed):
    """Any permutation of the constituents in the file gives the same values."""
    blocks = TWO.split("[[indices]]")
    alls = blocks[2].split("[[indices.constituents]]")
    head, cons = alls[0], alls[1:]
    permuted = "[[indices]]".join(blocks[:2]) + "[[indices]]" + head + "".join(
        "[[indices.constituents]]" + cons[i] for i in order)
    base, perm = calc_of(TWO), calc_of(permuted)
    for ev in random_stream(seed, n=300):
        assert base.on_event(ev) == perm.on_event(ev)
    assert base.values() == perm.values()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("AAA BBB CCC DDD EEE".split()),
                          st.integers(500, 20000)), min_size=1, max_size=5,
                unique_by=lambda t: t[0]), st.randoms())
def test_same_time_trades_of_different_instruments_commute(trades, rnd):
    """The value after trades of distinct instruments at one ts does not depend on their order
    (exact sums); the intermediate states, and so high and low, may."""
    a, b = calc_of(TWO), calc_of(TWO)
    shuffled = list(trades)
    rnd.shuffle(shuffled)
    for k, (sym, px) in enumerate(trades):
        a.on_event(Trade(k + 1, k + 1, T0, k + 1, sym, px * 100, 1, 1, 1, 2, 0, 0))
    for k, (sym, px) in enumerate(shuffled):
        b.on_event(Trade(k + 1, k + 1, T0, k + 1, sym, px * 100, 1, 1, 1, 2, 0, 0))
    for code in ("TIX", "ALL"):
        assert a.exact(code) == b.exact(code)
        va, vb = a.value(code), b.value(code)
        assert (va.value, va.capitalisation, va.change, va.seq) == \
               (vb.value, vb.capitalisation, vb.change, vb.seq)


# ---------------------------------------------------------------------------------------------
# Definitions in the configuration


def test_default_configuration_indices():
    cfg = load_config(None)
    codes = [d.code for d in cfg.indices]
    assert codes == ["BRSX", "BRSOG"]
    brsx = cfg.indices[0]
    assert len(brsx.basket.constituents) == 10 and brsx.basket.weight_cap_pct == 15
    assert brsx.cadence_ms == 1000 and brsx.on_change is False
    calc = IndexCalculator(cfg.indices, cfg.market)
    assert calc.value("BRSX").value == "3000.00" and calc.value("BRSOG").value == "1000.00"
    for code in codes:
        assert max(Decimal(c["weight_pct"]) for c in calc.composition(code)) <= \
            Decimal(calc.weight_cap_pct(code))


@pytest.mark.parametrize("edit, key, fragment", [
    (('symbol = "CCC"', 'symbol = "ZZZ"'), "indices[0].constituents[2].symbol", "unknown symbol"),
    (('symbol = "CCC"', 'symbol = "AAA"'), "indices[0].constituents[2].symbol", "duplicate"),
    (('free_float = "0.5"', 'free_float = "1.5"'), "indices[0].constituents[1].free_float",
     "above 0 and at most 1"),
    (('free_float = "0.5"', 'free_float = "0"'), "indices[0].constituents[1].free_float",
     "above 0 and at most 1"),
    (('free_float = "0.5"', 'free_float = 0.5'), "indices[0].constituents[1].free_float",
     "quote it"),
    (('free_float = "0.5"', 'free_float = "0.1234567"'), "indices[0].constituents[1].free_float",
     "at most 6 decimals"),
    (('free_float = "0.5"', 'free_float = "0.5"\nweight_cap = "1.01"'),
     "indices[0].constituents[1].weight_cap", "above 0 and at most 1"),
    (('shares = 2500', 'shares = 0'), "indices[0].constituents[2].shares", ">= 1"),
    (('weight_cap_pct = "40"', 'weight_cap_pct = "30"'), "indices[0].weight_cap_pct",
     "at least 100"),
    (('weight_cap_pct = "40"', 'weight_cap_pct = "0"'), "indices[0].weight_cap_pct",
     "above 0 and at most 100"),
    (('base_value = "1000"', 'base_value = "-1"'), "indices[0].base_value", "must be > 0"),
    (('base_value = "1000"', 'base_value = "1000"\ndivisor = "1"\nbase_capitalisation = "5"'),
     "indices[0].base_capitalisation", "not both"),
    (('code = "TIX"', 'code = "AAA"'), "indices[0].code", "instrument symbol"),
    (('code = "TIX"', 'code = "tix"'), "indices[0].code", "index code"),
    (('name = "Test Index"', 'name = "Test Index"\nfoo = 1'), "indices[0].foo", "unknown key"),
])
def test_definition_errors_name_the_key(edit, key, fragment):
    assert TIX.count(edit[0]) == 1
    with pytest.raises(ConfigError) as info:
        cfg_of(TIX.replace(*edit))
    err = info.value
    assert err.source == "test.toml" and err.key == key, str(err)
    assert fragment in err.problem, str(err)


def test_errors_in_second_index_and_rebalances():
    second = TIX.replace('code = "TIX"', 'code = "TIX2"').replace(
        'free_float = "1"\n"""', 'free_float = "1"\n')
    text = TIX + second.replace('symbol = "CCC"\nshares = 2500\nfree_float = "1"',
                                'symbol = "CCC"\nshares = 2500\nfree_float = "2"')
    with pytest.raises(ConfigError) as info:
        cfg_of(text)
    assert info.value.key == "indices[1].constituents[2].free_float"
    with pytest.raises(ConfigError) as info:
        cfg_of(TIX + TIX)
    assert info.value.key == "indices[1].code" and "duplicate" in str(info.value)
    bad_time = REBAL + REBAL[REBAL.index("[[indices.rebalances]]"):].replace(
        "2025-06-15T12:00:00Z", "2025-06-14T12:00:00Z")
    with pytest.raises(ConfigError) as info:
        cfg_of(bad_time)
    assert info.value.key == "indices[0].rebalances[1].effective"
    with pytest.raises(ConfigError) as info:
        cfg_of(REBAL.replace("2025-06-15T12:00:00Z", "2025-06-15T12:00:00"))
    assert info.value.key == "indices[0].rebalances[0].effective"
    assert "timezone" in str(info.value)
    with pytest.raises(ConfigError) as info:
        cfg_of(REBAL.replace('symbol = "DDD"\nshares = 4000', 'symbol = "XXX"\nshares = 4000'))
    assert info.value.key == "indices[0].rebalances[0].constituents[2].symbol"
    # a rebalance inheriting a cap its basket cannot hold names where to set it
    two = REBAL.replace('weight_cap_pct = "50"\n', "").replace(
        'weight_cap_pct = "40"', 'weight_cap_pct = "34"')
    cut = two[:two.index('[[indices.rebalances.constituents]]\nsymbol = "DDD"')]
    with pytest.raises(ConfigError) as info:
        cfg_of(cut)
    assert info.value.key == "indices[0].rebalances[0].weight_cap_pct"
    assert "inherited from indices[0].weight_cap_pct; set weight_cap_pct here" in str(info.value)


def test_index_process_section_and_inheritance():
    cfg = cfg_of("""
[index]
http_port = 0
cadence_ms = 250
on_change = true
on_change_max_per_s = 50
""" + TIX + TIX.replace('code = "TIX"', 'code = "TIX2"').replace(
        'base_value = "1000"', 'base_value = "1000"\ncadence_ms = 1000\non_change = false'))
    assert (cfg.index.http_port, cfg.index.cadence_ms) == (0, 250)
    a, b = cfg.indices
    assert (a.cadence_ms, a.on_change, a.on_change_max_per_s) == (250, True, 50)
    assert (b.cadence_ms, b.on_change, b.on_change_max_per_s) == (1000, False, 50)
    with pytest.raises(ConfigError) as info:
        cfg_of("[index]\nhttp_port = 70000\n" + TIX)
    assert info.value.key == "index.http_port"
