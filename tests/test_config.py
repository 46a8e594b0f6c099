"""Typed TOML configuration: default file, integer conversion, digest, error reporting."""
from __future__ import annotations

import math
import os
import pickle
from decimal import Decimal
from fractions import Fraction

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from bourse.config import (
    DEFAULT_SOURCE,
    BourseConfig,
    ConfigError,
    EngineConfig,
    load_config,
    parse_config,
)
from engine.refdata import MarketRefData, StpMode

MINIMAL = """\
[market]
price_decimals = 4

[[instruments]]
symbol = "AAA"
name = "Alpha"
isin = "RU0009029540"
tick_size = "0.05"
lot_size = 10
reference_price = "100.05"
price_band_pct = "15"

[[instruments]]
symbol = "BBB"
name = "Beta"
tick_size = "0.01"
lot_size = 1
reference_price = "280.00"
price_band_pct = "20"

[[firms]]
id = "FIRM1"
name = "First"
credit_limit = "1000000.5"
self_trade_prevention = "cancel_resting"
accounts = ["A1", "A2"]

[[firms]]
id = "FIRM2"
name = "Second"
credit_limit = 250
"""


def write(tmp_path, text: str, name: str = "bourse.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_text(tmp_path, text: str) -> BourseConfig:
    return load_config(write(tmp_path, text))


def expect_error(tmp_path, text: str, key: str | None, *fragments: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    message = str(err)
    assert err.source == path
    assert message.startswith(f"{path}: "), message
    if key is not None:
        assert err.key == key, message
        assert message.startswith(f"{path}: {key}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message
    return err


# ---------------------------------------------------------------------------------------------
# The embedded default


def test_default_loads():
    cfg = load_config(None)
    assert isinstance(cfg, BourseConfig)
    assert cfg.source == DEFAULT_SOURCE
    assert isinstance(cfg.market, MarketRefData)
    assert cfg.market.price_decimals == 4
    assert 8 <= len(cfg.market.instruments) <= 12
    assert len(cfg.market.firms) == 4
    assert cfg.engine == EngineConfig()
    assert cfg.engine.journal_dir == "var/engine"
    assert cfg.digest == cfg.market.digest()
    symbols = [i.symbol for i in cfg.market.instruments]
    assert len(set(symbols)) == len(symbols)
    assert "SBER" in symbols
    assert {f.stp for f in cfg.market.firms} == set(StpMode)
    for ins in cfg.market.instruments:
        assert ins.currency == "RUB" and len(ins.isin) == 12
        assert ins.tick > 0 and ins.lot > 0
        assert ins.ref_price % ins.tick == 0
        assert ins.band_low % ins.tick == 0 and ins.band_high % ins.tick == 0
        assert 0 < ins.band_low < ins.ref_price < ins.band_high


def test_default_hand_computed_units():
    by_symbol = {i.symbol: i for i in load_config(None).market.instruments}
    sber = by_symbol["SBER"]  # 280.00 RUB, tick 0.01, 20 %: 224.00 .. 336.00 exactly
    assert (sber.tick, sber.lot, sber.ref_price) == (100, 10, 2_800_000)
    assert (sber.band_low, sber.band_high) == (2_240_000, 3_360_000)
    mtss = by_symbol["MTSS"]  # 221.35, tick 0.05: 177.08 -> up 177.10, 265.62 -> down 265.60
    assert (mtss.tick, mtss.ref_price) == (500, 2_213_500)
    assert (mtss.band_low, mtss.band_high) == (1_771_000, 2_656_000)
    vtbr = by_symbol["VTBR"]  # 89.915, tick 0.005: 71.932 -> up 71.935, 107.898 -> down 107.895
    assert (vtbr.tick, vtbr.band_low, vtbr.band_high) == (50, 719_350, 1_078_950)


def test_engine_defaults_match_spec():
    e = EngineConfig()
    assert (e.host, e.order_entry_port, e.replication_port) == ("127.0.0.1", 9100, 9101)
    assert (e.fsync, e.fsync_interval_ms, e.max_batch_commands) == ("batch", 5, 4096)
    assert (e.consumer_buffer_bytes, e.heartbeat_ms, e.journal_dir) == (8388608, 1000, "var/engine")


# ---------------------------------------------------------------------------------------------
# Conversion


def test_minimal_file_units(tmp_path):
    cfg = load_text(tmp_path, MINIMAL)
    assert cfg.source.endswith("bourse.toml")
    a, b = cfg.market.instruments
    # 100.05 * 0.85 = 85.0425 -> up to 85.05; 100.05 * 1.15 = 115.0575 -> down to 115.05
    assert (a.tick, a.lot, a.ref_price) == (500, 10, 1_000_500)
    assert (a.band_low, a.band_high) == (850_500, 1_150_500)
    assert a.isin == "RU0009029540" and b.isin == "" and b.currency == "RUB"
    f1, f2 = cfg.market.firms
    assert f1.credit_limit == 10_000_005_000 and f1.stp is StpMode.CANCEL_RESTING
    assert f1.accounts == ("A1", "A2")
    assert f2.credit_limit == 2_500_000 and f2.stp is StpMode.NONE and f2.accounts == ()
    assert cfg.engine == EngineConfig()


def test_engine_section_and_path_objects(tmp_path):
    text = '[engine]\nhost = "0.0.0.0"\norder_entry_port = 0\nreplication_port = 0\n' \
           'fsync = "interval"\nconsumer_buffer_bytes = 65536\n' + MINIMAL
    write(tmp_path, text, "x.toml")
    cfg = load_config(tmp_path / "x.toml")  # os.PathLike accepted
    assert cfg.source == str(tmp_path / "x.toml")
    assert cfg.engine.host == "0.0.0.0"
    assert cfg.engine.order_entry_port == cfg.engine.replication_port == 0
    assert cfg.engine.fsync == "interval" and cfg.engine.consumer_buffer_bytes == 65536
    assert cfg.engine.heartbeat_ms == 1000


def test_band_rounding_exact_bounds(tmp_path):
    text = MINIMAL.replace('price_band_pct = "15"', 'price_band_pct = "12.5"')
    a = load_text(tmp_path, text).market.instruments[0]
    # 100.05 * 0.875 = 87.54375 -> 87.55 ; 100.05 * 1.125 = 112.55625 -> 112.55
    assert (a.band_low, a.band_high) == (875_500, 1_125_500)


@settings(max_examples=200, deadline=None)
@given(
    tick_units=st.integers(1, 10_000),
    ref_ticks=st.integers(1, 100_000),
    pct_hundredths=st.integers(1, 9_999),
    decimals=st.integers(0, 6),
)
def test_band_rounding_property(tick_units, ref_ticks, pct_hundredths, decimals):
    tick = Decimal(tick_units).scaleb(-decimals)
    ref = tick * ref_ticks
    pct = Decimal(pct_hundredths).scaleb(-2)
    text = (
        f"[market]\nprice_decimals = {decimals}\n[[instruments]]\nsymbol = \"X\"\nname = \"X\"\n"
        f"tick_size = \"{tick}\"\nlot_size = 1\nreference_price = \"{ref}\"\n"
        f"price_band_pct = \"{pct}\"\n"
    )
    try:
        ins = parse_config(text, "prop.toml").market.instruments[0]
    except ConfigError as err:  # only possible if a value does not fit the decimals
        pytest.fail(str(err))
    t, r = tick_units, tick_units * ref_ticks
    low_exact = Fraction(r) * (100 - Fraction(pct)) / 100
    high_exact = Fraction(r) * (100 + Fraction(pct)) / 100
    assert (ins.tick, ins.ref_price) == (t, r)
    assert ins.band_low == math.ceil(low_exact / t) * t
    assert ins.band_high == math.floor(high_exact / t) * t
    assert 0 < ins.band_low <= r <= ins.band_high
    assert ins.band_low - t < low_exact <= ins.band_low
    assert ins.band_high <= high_exact < ins.band_high + t


def test_integer_decimals_accepted(tmp_path):
    text = MINIMAL.replace('tick_size = "0.01"', "tick_size = 1").replace(
        'reference_price = "280.00"', "reference_price = 280"
    ).replace('price_band_pct = "20"', "price_band_pct = 20")
    b = load_text(tmp_path, text).market.instruments[1]
    assert (b.tick, b.ref_price, b.band_low, b.band_high) == (10_000, 2_800_000, 2_240_000, 3_360_000)


# ---------------------------------------------------------------------------------------------
# Digest


def test_digest_stable_and_sensitive(tmp_path):
    first = load_config(None)
    second = load_config(None)
    assert first.digest == second.digest
    assert len(first.digest) == 64
    assert first.market == second.market

    base = load_text(tmp_path, MINIMAL)
    again = load_config(write(tmp_path, MINIMAL, "copy.toml"))
    assert base.digest == again.digest  # source path does not matter

    engine_only = load_text(tmp_path, "[engine]\nheartbeat_ms = 250\n" + MINIMAL)
    assert engine_only.digest == base.digest  # process sections are not part of the digest

    changed = load_text(tmp_path, MINIMAL.replace('reference_price = "100.05"', 'reference_price = "100.10"'))
    assert changed.digest != base.digest
    renamed = load_text(tmp_path, MINIMAL.replace('name = "Alpha"', 'name = "Alpha2"'))
    assert renamed.digest != base.digest
    firm_changed = load_text(tmp_path, MINIMAL.replace('"cancel_resting"', '"cancel_both"'))
    assert firm_changed.digest != base.digest


# ---------------------------------------------------------------------------------------------
# Errors: each names the file and the key


def test_unknown_top_level_key(tmp_path):
    expect_error(tmp_path, "colour = 1\n" + MINIMAL, "colour", "unknown key")


def test_unknown_nested_key(tmp_path):
    text = MINIMAL.replace("lot_size = 1\n", "lot_size = 1\nlotsize = 2\n")
    expect_error(tmp_path, text, "instruments[1].lotsize", "unknown key", "lot_size")
    expect_error(tmp_path, "[engine]\nhots = \"x\"\n" + MINIMAL, "engine.hots", "unknown key", "host")
    expect_error(tmp_path, "[market]\nx = 1\n" + MINIMAL.replace("[market]\n", ""),
                 "market.x", "unknown key")


def test_wrong_type(tmp_path):
    expect_error(tmp_path, MINIMAL.replace("lot_size = 10", 'lot_size = "10"'),
                 "instruments[0].lot_size", "expected an integer", "got a string")
    expect_error(tmp_path, "[engine]\norder_entry_port = 9100.0\n" + MINIMAL,
                 "engine.order_entry_port", "expected an integer", "float")
    expect_error(tmp_path, MINIMAL.replace('name = "Beta"', "name = 7"),
                 "instruments[1].name", "expected a string")
    expect_error(tmp_path, MINIMAL.replace('tick_size = "0.01"', "tick_size = true"),
                 "instruments[1].tick_size", "decimal")
    expect_error(tmp_path, '[engine]\nhost = "h"\n[[engine]]\n', None, "invalid TOML")
    expect_error(tmp_path, "engine = 5\n" + MINIMAL, "engine", "expected a table")


def test_sections_of_wrong_shape(tmp_path):
    text = '[instruments]\nsymbol = "X"\n'
    expect_error(tmp_path, text, "instruments", "[[instruments]]")


def test_missing_required_key(tmp_path):
    expect_error(tmp_path, MINIMAL.replace('name = "Beta"\n', ""),
                 "instruments[1].name", "required key is missing")
    expect_error(tmp_path, MINIMAL.replace('credit_limit = 250\n', ""),
                 "firms[1].credit_limit", "required key is missing")
    expect_error(tmp_path, "[market]\nprice_decimals = 4\n", "instruments", "required key is missing")


def test_float_tick_is_refused(tmp_path):
    err = expect_error(tmp_path, MINIMAL.replace('tick_size = "0.01"', "tick_size = 0.01"),
                       "instruments[1].tick_size", "float", 'tick_size = "0.01"')
    assert "quote" in err.problem
    expect_error(tmp_path, MINIMAL.replace('credit_limit = 250', "credit_limit = 250.0"),
                 "firms[1].credit_limit", "float")


def test_inexact_tick(tmp_path):
    expect_error(tmp_path, MINIMAL.replace('tick_size = "0.01"', 'tick_size = "0.00001"'),
                 "instruments[1].tick_size", "price_decimals = 4")
    expect_error(tmp_path, MINIMAL.replace('"1000000.5"', '"0.00005"'),
                 "firms[0].credit_limit", "not exact")


def test_malformed_decimal(tmp_path):
    for bad in ['"1e-2"', '"0,01"', '" 0.01"', '"NaN"', '"0.01.0"', '""']:
        expect_error(tmp_path, MINIMAL.replace('tick_size = "0.01"', f"tick_size = {bad}"),
                     "instruments[1].tick_size", "decimal")


def test_reference_not_multiple_of_tick(tmp_path):
    expect_error(tmp_path, MINIMAL.replace('"100.05"', '"100.07"'),
                 "instruments[0].reference_price", "multiple of tick_size")


def test_non_positive_values(tmp_path):
    expect_error(tmp_path, MINIMAL.replace("lot_size = 10", "lot_size = -10"),
                 "instruments[0].lot_size", ">= 1", "-10")
    expect_error(tmp_path, MINIMAL.replace("lot_size = 10", "lot_size = 0"),
                 "instruments[0].lot_size", ">= 1")
    expect_error(tmp_path, MINIMAL.replace("lot_size = 10", f"lot_size = {2**64}"),
                 "instruments[0].lot_size", "<=")
    expect_error(tmp_path, MINIMAL.replace('tick_size = "0.05"', 'tick_size = "0"'),
                 "instruments[0].tick_size", "> 0")
    expect_error(tmp_path, MINIMAL.replace('"280.00"', '"-280.00"'),
                 "instruments[1].reference_price", "> 0")
    expect_error(tmp_path, MINIMAL.replace('"1000000.5"', '"-1"'), "firms[0].credit_limit", ">= 0")
    for pct in ('"0"', '"100"', '"150"'):
        expect_error(tmp_path, MINIMAL.replace('price_band_pct = "20"', f"price_band_pct = {pct}"),
                     "instruments[1].price_band_pct", "< 100")


def test_duplicates(tmp_path):
    expect_error(tmp_path, MINIMAL.replace('symbol = "BBB"', 'symbol = "AAA"'),
                 "instruments[1].symbol", "duplicate symbol 'AAA'", "instruments[0]")
    expect_error(tmp_path, MINIMAL.replace('id = "FIRM2"', 'id = "FIRM1"'),
                 "firms[1].id", "duplicate firm id 'FIRM1'")
    expect_error(tmp_path, MINIMAL.replace('credit_limit = 250', 'credit_limit = 250\naccounts = ["A2"]'),
                 "firms[1].accounts[0]", "duplicate account 'A2'", "FIRM1")
    expect_error(tmp_path, MINIMAL.replace('["A1", "A2"]', '["A1", "A1"]'),
                 "firms[0].accounts[1]", "duplicate account")


def test_bad_identifiers(tmp_path):
    expect_error(tmp_path, MINIMAL.replace('symbol = "BBB"', 'symbol = "B B"'),
                 "instruments[1].symbol", "symbol")
    expect_error(tmp_path, MINIMAL.replace('symbol = "BBB"', 'symbol = ""'),
                 "instruments[1].symbol")
    expect_error(tmp_path, MINIMAL.replace('name = "Beta"', 'name = "  "'),
                 "instruments[1].name", "empty")
    expect_error(tmp_path, MINIMAL.replace('"RU0009029540"', '"RU0009029541"'),
                 "instruments[0].isin", "check digit")
    expect_error(tmp_path, MINIMAL.replace('"RU0009029540"', '"SBER"'), "instruments[0].isin", "ISIN")
    expect_error(tmp_path, MINIMAL.replace('name = "Beta"', 'name = "Beta"\ncurrency = "rub"'),
                 "instruments[1].currency", "currency")


def test_bad_stp_value(tmp_path):
    expect_error(tmp_path, MINIMAL.replace('"cancel_resting"', '"cancel_oldest"'),
                 "firms[0].self_trade_prevention", "cancel_oldest", "cancel_resting", "none")


def test_bad_fsync_value(tmp_path):
    expect_error(tmp_path, '[engine]\nfsync = "always"\n' + MINIMAL,
                 "engine.fsync", "'batch'", "'interval'", "'never'", "always")


def test_port_out_of_range(tmp_path):
    expect_error(tmp_path, "[engine]\norder_entry_port = 70000\n" + MINIMAL,
                 "engine.order_entry_port", "<= 65535", "70000")
    expect_error(tmp_path, "[engine]\nreplication_port = -1\n" + MINIMAL,
                 "engine.replication_port", ">= 0")
    expect_error(tmp_path, "[engine]\nreplication_port = 9100\n" + MINIMAL,
                 "engine.replication_port", "must differ")


def test_engine_sizes_positive(tmp_path):
    for key in ("fsync_interval_ms", "max_batch_commands", "consumer_buffer_bytes", "heartbeat_ms"):
        expect_error(tmp_path, f"[engine]\n{key} = 0\n" + MINIMAL, f"engine.{key}", ">= 1")
    expect_error(tmp_path, '[engine]\njournal_dir = ""\n' + MINIMAL, "engine.journal_dir")
    expect_error(tmp_path, "[market]\nprice_decimals = 12\n" + MINIMAL.replace("[market]\nprice_decimals = 4\n", ""),
                 "market.price_decimals", "<= 9")


def test_snapshot_every_commands(tmp_path):
    assert EngineConfig().snapshot_every_commands == 1_000_000
    assert load_config(None).engine.snapshot_every_commands == 1_000_000
    assert load_text(tmp_path, "[engine]\nsnapshot_every_commands = 0\n" + MINIMAL) \
        .engine.snapshot_every_commands == 0                   # 0 = snapshots off
    assert load_text(tmp_path, "[engine]\nsnapshot_every_commands = 5000\n" + MINIMAL) \
        .engine.snapshot_every_commands == 5000
    key = "engine.snapshot_every_commands"
    expect_error(tmp_path, f"[engine]\n{key[7:]} = -1\n" + MINIMAL, key, ">= 0", "-1")
    expect_error(tmp_path, f"[engine]\n{key[7:]} = 1000.0\n" + MINIMAL, key,
                 "expected an integer", "float")
    expect_error(tmp_path, f"[engine]\n{key[7:]} = true\n" + MINIMAL, key, "expected an integer")
    expect_error(tmp_path, f'[engine]\n{key[7:]} = "1000"\n' + MINIMAL, key,
                 "expected an integer")
    expect_error(tmp_path, f"[engine]\n{key[7:]} = {2 ** 63}\n" + MINIMAL, key)
    expect_error(tmp_path, "[engine]\nsnapshot_every_command = 5\n" + MINIMAL,
                 "engine.snapshot_every_command", "unknown key", "snapshot_every_commands")
    # a process-local key: not part of the digest
    assert load_text(tmp_path, "[engine]\nsnapshot_every_commands = 7\n" + MINIMAL).digest == \
        load_text(tmp_path, MINIMAL).digest


def test_toml_syntax_error(tmp_path):
    text = MINIMAL.replace('lot_size = 10', 'lot_size = = 10')
    err = expect_error(tmp_path, text, None, "invalid TOML", "line 9, column")
    assert err.key is None
    expect_error(tmp_path, MINIMAL + "x = ", None, "invalid TOML")


def test_missing_file(tmp_path):
    path = str(tmp_path / "absent.toml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: cannot read file")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path)  # a directory
    path = tmp_path / "binary.toml"
    path.write_bytes(b"[market]\n\xff\xfe = 1\n")
    with pytest.raises(ConfigError, match="line 2: not valid UTF-8"):
        load_config(path)
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked.toml"
        locked.write_text(MINIMAL)
        locked.chmod(0)
        with pytest.raises(ConfigError, match="cannot read file"):
            load_config(locked)


def test_byte_order_mark_tolerated(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path).market.instruments[0].symbol == "AAA"


def test_config_error_pickles():
    err = ConfigError("f.toml", "engine.fsync", "bad")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) == "f.toml: engine.fsync: bad"
    assert (again.source, again.key, again.problem) == ("f.toml", "engine.fsync", "bad")


def test_config_is_frozen():
    cfg = load_config(None)
    with pytest.raises(AttributeError):
        cfg.digest = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.engine.host = "x"  # type: ignore[misc]
    # The integer reference data round-trips through msgspec unchanged.
    assert msgspec.json.decode(msgspec.json.encode(cfg.market), type=MarketRefData) == cfg.market


GATEWAY_TEXT = """
[[gateways]]
node_id = "g1"
[[gateways.sessions]]
comp_id = "B1"
firm = "FIRM1"
{extra}
"""


@pytest.mark.parametrize("extra,key", [
    ('max_notional = "0"', "gateways[0].sessions[0].max_notional"),
    ('allowed_addresses = ["localhost"]', "gateways[0].sessions[0].allowed_addresses[0]"),
    ('firm = "NOPE"', None),
    ('[[gateways]]\nnode_id = "g1"', "gateways[1].node_id"),
    ('[[gateways]]\nnode_id = "g2"\n[[gateways.sessions]]\ncomp_id = "B1"\nfirm = "FIRM1"',
     "gateways[1].sessions[0].comp_id"),
])
def test_bad_gateway_sections_are_named(extra, key):
    from bourse.config import DEFAULT_SOURCE  # noqa: F401
    import importlib.resources
    base = importlib.resources.files("bourse").joinpath("default.toml").read_text()
    base = base[:base.index("[[gateways]]")] if "[[gateways]]" in base else base
    text = base + GATEWAY_TEXT.format(extra=extra)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "gw.toml")
    if key:
        assert f"gw.toml: {key}:" in str(info.value)
