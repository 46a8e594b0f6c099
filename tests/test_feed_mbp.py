"""Market-by-price entries rebuild the engine's top of book exactly, window edges included."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from bench.workload import default_refdata, generate
from engine.commands import SequencedCommand
from engine.core import Engine
from engine.events import BookUpdate
from marketdata.mbp import CHANGE, DELETE, NEW, FeedBooks


def consumer_apply(book: dict, e: dict) -> None:
    side = book.setdefault((e["Symbol"], e["MDEntryType"]), {})
    price = e["MDEntryPx"][0]
    if e["MDUpdateAction"] == DELETE:
        assert price in side, "delete of a level the consumer does not hold"
        del side[price]
    elif e["MDUpdateAction"] == NEW:
        assert price not in side, "new level already held"
        side[price] = (e["MDEntrySize"], e["NumberOfOrders"])
    else:
        assert e["MDUpdateAction"] == CHANGE and price in side
        side[price] = (e["MDEntrySize"], e["NumberOfOrders"])


@pytest.mark.parametrize("depth", [1, 5, 20])
def test_entries_rebuild_top_of_book(depth):
    ref = default_refdata()
    engine = Engine(ref)
    feed = FeedBooks(ref, depth)
    consumer: dict = {}
    rpt: dict = {}
    for seq, cmd in enumerate(generate(ref, 4000, seed=depth), 1):
        for ev in engine.apply(SequencedCommand(seq, seq, "t", 0, cmd)):
            for e in feed.on_event(ev):
                sym = e["Symbol"]
                assert e["RptSeq"] == rpt.get(sym, 0) + 1       # gap-free per instrument
                rpt[sym] = e["RptSeq"]
                if e["MDEntryType"] in ("0", "1"):
                    consumer_apply(consumer, e)
                    assert len(consumer[(sym, e["MDEntryType"])]) <= depth
    for inst in ref.instruments:
        for side, etype in ((1, "0"), (2, "1")):
            expected = engine.book_levels(inst.symbol, side)[:depth]
            got = consumer.get((inst.symbol, etype), {})
            assert sorted(got.items(), reverse=(side == 1)) == [(p, (q, n)) for p, q, n in expected]
        rpt_seq, entries = feed.snapshot(inst.symbol)
        assert rpt_seq == rpt.get(inst.symbol, 0)
        snap_bids = [(e["MDEntryPx"][0], e["MDEntrySize"], e["NumberOfOrders"])
                     for e in entries if e["MDEntryType"] == "0"]
        assert snap_bids == [tuple(x) for x in engine.book_levels(inst.symbol, 1)[:depth]]


@pytest.mark.parametrize("depth", [1, 3, 20])
@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_path_gives_exactly_the_full_recomputation(depth, seed):
    """The cheap path (touched published levels only) emits the very entries, in the very
    order, that recomputing and comparing the whole published top gives."""
    ref = default_refdata()
    engine = Engine(ref)
    fast, full = FeedBooks(ref, depth), FeedBooks(ref, depth, incremental=False)
    n = 0
    for seq, cmd in enumerate(generate(ref, 6000, seed=seed), 1):
        for ev in engine.apply(SequencedCommand(seq, seq, "t", 0, cmd)):
            a, b = fast.on_event(ev), full.on_event(ev)
            assert a == b
            n += len(a)
    assert n > 1000


# one BookUpdate's levels: several touched prices on either side, at a few prices only, so
# that levels enter, leave and cross the top's edge in every combination
_LEVELS = st.lists(st.tuples(st.sampled_from([1, 2]), st.integers(1, 12),
                             st.sampled_from([0, 0, 5, 10, 15]), st.integers(1, 3)),
                   min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4), st.lists(_LEVELS, min_size=1, max_size=40))
def test_incremental_path_matches_the_full_recomputation_on_any_level_changes(depth, updates):
    ref = default_refdata()
    sym = ref.instruments[0].symbol
    fast, full = FeedBooks(ref, depth), FeedBooks(ref, depth, incremental=False)
    consumer: dict = {}
    for seq, levels in enumerate(updates, 1):
        levels = tuple((side, price * 100, qty, n if qty else 0)
                       for side, price, qty, n in levels)
        ev = BookUpdate(seq, seq, seq * 1_000_000, sym, levels)
        a, b = fast.on_event(ev), full.on_event(ev)
        assert a == b
        for e in a:
            consumer_apply(consumer, e)
    for side, etype in ((1, "0"), (2, "1")):
        book: dict = {}
        for levels in updates:
            for s_, price, qty, n in levels:
                if s_ == side:
                    book[price * 100] = (qty, n)
        live = sorted(((p, v) for p, v in book.items() if v[0]), reverse=(side == 1))[:depth]
        assert sorted(consumer.get((sym, etype), {}).items(), reverse=(side == 1)) == live
