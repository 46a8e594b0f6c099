"""Unit tests of engine.book: levels, keys, FIFO queues and aggregates."""
from __future__ import annotations

from engine.book import BUY, SELL, Book, Order, side_key
from engine.refdata import Instrument

INST = Instrument(symbol="AAA", name="A", tick=100, lot=10, ref_price=10000, band_low=5000,
                  band_high=15000)

_ids = iter(range(1, 10_000))


def order(side: int, price: int, qty: int) -> Order:
    return Order(next(_ids), "S1", "F1", "", "", "AAA", side, 2, 0, price, qty)


def test_side_key_orders_better_prices_higher():
    assert side_key(BUY, 10100) > side_key(BUY, 10000)
    assert side_key(SELL, 10000) > side_key(SELL, 10100)


def test_add_builds_levels_best_last():
    b = Book(INST)
    for px in (9800, 10000, 9900):
        b.add(order(BUY, px, 10))
    for px in (10300, 10100, 10200):
        b.add(order(SELL, px, 20))
    assert b.bid_keys == [9800, 9900, 10000]
    assert b.ask_keys == [-10300, -10200, -10100]
    assert b.best(BUY) == 10000 and b.best(SELL) == 10100
    assert b.depth(BUY) == [(10000, 10, 1), (9900, 10, 1), (9800, 10, 1)]
    assert b.depth(SELL) == [(10100, 20, 1), (10200, 20, 1), (10300, 20, 1)]
    assert not b.crossed()
    assert len(b) == 6 and b.order_count() == 6


def test_level_aggregates_and_fifo():
    b = Book(INST)
    o1, o2, o3 = order(BUY, 10000, 10), order(BUY, 10000, 20), order(BUY, 10000, 30)
    for o in (o1, o2, o3):
        b.add(o)
    assert b.depth(BUY) == [(10000, 60, 3)]
    assert b.queue(BUY, 10000) == [o1, o2, o3]
    b.move_to_back(o1)
    assert b.queue(BUY, 10000) == [o2, o3, o1]
    b.reduce(o3, 10)
    assert o3.leaves == 20 and b.depth(BUY) == [(10000, 50, 3)]
    assert b.queue(BUY, 10000) == [o2, o3, o1]          # reduce keeps priority
    lvl = b.remove(o2)
    assert lvl.state() == (BUY, 10000, 30, 2)
    assert o2.level is None


def test_remove_last_order_drops_level_anywhere_in_the_list():
    b = Book(INST)
    orders = [order(SELL, px, 10) for px in (10100, 10200, 10300)]
    for o in orders:
        b.add(o)
    lvl = b.remove(orders[1])                            # middle level
    assert lvl.state() == (SELL, 10200, 0, 0)
    assert b.ask_keys == [-10300, -10100]
    b.remove(orders[0])                                  # best level
    assert b.ask_keys == [-10300] and b.best(SELL) == 10300
    assert b.level_state(-10100) == (SELL, 10100, 0, 0)
    assert b.level_state(-10300) == (SELL, 10300, 10, 1)
    b.remove(orders[2])
    assert b.best(SELL) == 0 and b.depth(SELL) == [] and len(b) == 0


def test_crossed_detection():
    b = Book(INST)
    b.add(order(BUY, 10000, 10))
    b.add(order(SELL, 10000, 10))
    assert b.crossed()


def test_cum_qty():
    o = order(BUY, 10000, 50)
    o.leaves = 20
    assert o.cum_qty == 30
