"""Typed TOML configuration: the one file every Bourse node loads.

Contract:
- ``load_config(path)`` reads a TOML file (``None``: the embedded ``bourse/default.toml``) and
  returns a frozen ``BourseConfig``. Any problem with the file - unreadable, not UTF-8, bad TOML
  syntax, unknown key, wrong type, missing value, out-of-range or inexact number, duplicate
  symbol/firm/account - raises ``ConfigError`` and nothing else. Its message reads
  ``<file>: <key path>: <problem>``, e.g. ``etc/bourse.toml: instruments[2].tick_size: ...``
  (array indices are 0-based, in file order).
- Decoding is two-step: ``tomllib`` gives a plain document, ``msgspec.convert`` turns it into
  ``ConfigFile`` (structs that mirror the TOML layout exactly and forbid unknown keys), and
  ``_build`` converts the reference data sections into the engine's integer
  ``engine.refdata.MarketRefData``.
- Every decimal in the file (tick sizes, prices, percentages, credit limits) is a quoted string
  (or a TOML integer) and is converted with ``decimal.Decimal`` and integer arithmetic only; a TOML
  float is refused, so no binary floating point value ever reaches a price.
- ``BourseConfig.digest`` is ``market.digest()``: the SHA-256 of the canonical msgspec JSON
  encoding of ``MarketRefData``. Process-local sections (``[engine]`` and the later
  ``[gateway]``, ``[marketdata]``, ``[index]``) are not part of it.
- Adding a process section is one struct plus one field of ``_Sections``: the section is decoded
  as part of ``ConfigFile`` and copied as is into ``BourseConfig``.
- ``[index]`` (the index server process) and ``[[indices]]`` (index definitions, validated and
  built by ``index_server.definitions.build_indices`` into ``BourseConfig.indices``) are
  described in spec/index-vendor-api.md.

The reference of every key is spec/configuration.md.
"""
from __future__ import annotations

import datetime
import decimal
import difflib
import importlib.resources
import ipaddress
import os
import re
import tomllib
from typing import Annotated, Any, Literal

import msgspec

from engine.refdata import Firm, Instrument, MarketRefData, StpMode
from index_server.definitions import IndexDefinition, IndexDefinitionError, build_indices

__all__ = [
    "BourseConfig",
    "ConfigError",
    "ConfigFile",
    "DEFAULT_SOURCE",
    "EngineConfig",
    "GatewayConfig",
    "GatewaySession",
    "IndexConfig",
    "IndexSection",
    "FirmSection",
    "InstrumentSection",
    "MarketDataConfig",
    "MarketSection",
    "load_config",
    "parse_config",
]

#: ``BourseConfig.source`` (and the file name in error messages) of the embedded default.
DEFAULT_SOURCE = "<embedded default>"

#: Largest integer any price-unit value may take (prices and notionals travel as int64).
INT64_MAX = 2**63 - 1

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

#: A decimal value as written in the file. Floats are accepted by the schema only so that
#: ``_build`` can refuse them with a message telling to quote the value.
DecimalText = str | int | float


class ConfigError(Exception):
    """A configuration file that cannot be loaded; the message says where and why."""

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        self.source = source
        self.key = key or None
        self.problem = problem
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + problem)

    def __reduce__(self):  # keep picklable despite the custom signature
        return (type(self), (self.source, self.key, self.problem))


# --------------------------------------------------------------------------------------------
# Process sections: decoded from the file and handed over unchanged.


class EngineConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[engine]``: the matching engine process (sequencer, journal, replication)."""

    host: NonEmpty = "127.0.0.1"
    order_entry_port: Port = 9100
    replication_port: Port = 9101
    journal_dir: NonEmpty = "var/engine"
    fsync: Literal["batch", "interval", "never"] = "batch"
    fsync_interval_ms: Positive = 5
    sync_threads: Annotated[int, msgspec.Meta(ge=0, le=8)] = 0   # fsync = "batch": see docs
    preallocate_mb: Annotated[int, msgspec.Meta(ge=0, le=4096)] = 8
    max_batch_commands: Positive = 4096
    consumer_buffer_bytes: Positive = 8388608
    heartbeat_ms: Positive = 1000
    # a state snapshot every N sequenced commands (and at a clean stop); 0 = no snapshots
    snapshot_every_commands: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] = 1_000_000

    def __post_init__(self) -> None:
        if self.order_entry_port and self.order_entry_port == self.replication_port:
            # "<field>: <problem>" puts the field into the error's key path (see _explain).
            raise ValueError(
                f"replication_port: must differ from order_entry_port (both are "
                f"{self.order_entry_port}); 0 picks a free port for each"
            )


class GatewaySessionSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[gateways.sessions]]`` table: a broker's FIX session on that gateway."""

    comp_id: NonEmpty                      # the broker's CompID (SenderCompID of its messages)
    firm: NonEmpty
    password: str = ""                     # "" = no password check
    drop_copy: bool = False                # read-only; receives every execution report of firm
    heartbeat_min_s: Positive = 1
    heartbeat_max_s: Positive = 300
    reset_on_logon: Literal["accept", "always", "refuse"] = "accept"
    throttle_per_s: Positive = 1000        # messages per second; excess rejected
    throttle_disconnect_s: Positive = 5    # seconds over the limit in a row before a logout
    max_order_qty: Positive = 10_000_000   # shares
    max_notional: DecimalText = "1000000000"   # currency, per order
    price_collar_pct: DecimalText = "10"   # limit price within this % of the reference price
    allowed_addresses: tuple[str, ...] = ("127.0.0.1",)   # () = any
    cancel_on_disconnect: bool = True
    cancel_on_disconnect_grace_ms: Annotated[int, msgspec.Meta(ge=0)] = 0


class GatewaySection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[gateways]]`` table: a FIX access server and its sessions."""

    node_id: NonEmpty
    host: NonEmpty = "127.0.0.1"
    port: Port = 9876
    comp_id: NonEmpty = "BOURSE"           # the exchange's CompID on this gateway
    store_dir: NonEmpty = "var/gateway"
    store_fsync: Literal["always", "never"] = "never"
    daily_reset_utc: str = ""              # "HH:MM": reset sequence numbers daily; "" = never
    sending_time_tolerance_s: Positive = 120
    sessions: tuple[GatewaySessionSection, ...] = ()


class GatewaySession(msgspec.Struct, frozen=True):
    """A session after validation: decimals converted to integer units."""

    comp_id: str
    firm: str
    password: str
    drop_copy: bool
    heartbeat_min_s: int
    heartbeat_max_s: int
    reset_on_logon: str
    throttle_per_s: int
    throttle_disconnect_s: int
    max_order_qty: int
    max_notional: int                      # price units
    price_collar_bps: int                  # basis points of the reference price
    allowed_addresses: tuple[str, ...]
    cancel_on_disconnect: bool
    cancel_on_disconnect_grace_ms: int


class GatewayConfig(msgspec.Struct, frozen=True):
    node_id: str
    host: str
    port: int
    comp_id: str
    store_dir: str
    store_fsync: str
    daily_reset_utc: str
    sending_time_tolerance_s: int
    sessions: tuple[GatewaySession, ...]


class IndexConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[index]``: the index server process (vendor HTTP endpoint, publication defaults)."""

    host: NonEmpty = "127.0.0.1"
    http_port: Port = 8080                 # 0 = ephemeral
    cadence_ms: Positive = 1000            # publish every cadence (IMOEX: once a second)
    on_change: bool = False                # also publish on every change ...
    on_change_max_per_s: Positive = 100    # ... at most this many times a second per index


class IndexConstituentSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[indices.constituents]]`` (or ``[[indices.rebalances.constituents]]``) table."""

    symbol: NonEmpty
    shares: Positive                       # number of shares issued
    free_float: DecimalText                # coefficient in (0, 1]
    weight_cap: DecimalText = "1"          # starting weight coefficient; the cap may lower it


class IndexRebalanceSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True,
                            kw_only=True):
    """One ``[[indices.rebalances]]`` table: the complete new basket from ``effective`` on."""

    effective: Annotated[datetime.datetime, msgspec.Meta(tz=True)]
    constituents: Annotated[tuple[IndexConstituentSection, ...], msgspec.Meta(min_length=1)]
    weight_cap_pct: DecimalText | None = None   # None: the index's


class IndexSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[indices]]`` table; built into ``index_server.definitions.IndexDefinition``."""

    code: NonEmpty
    name: str
    base_value: DecimalText
    divisor: DecimalText | None = None
    base_capitalisation: DecimalText | None = None
    weight_cap_pct: DecimalText = "15"
    cadence_ms: Positive | None = None          # None: from [index]
    on_change: bool | None = None
    on_change_max_per_s: Positive | None = None
    constituents: Annotated[tuple[IndexConstituentSection, ...], msgspec.Meta(min_length=1)]
    rebalances: tuple[IndexRebalanceSection, ...] = ()


def _multicast_feed(value: str) -> str | None:
    """Problem with a ``"GROUP:PORT"`` multicast feed address, or None when it is valid."""
    import ipaddress

    group, sep, port = value.rpartition(":")
    try:
        ip = ipaddress.IPv4Address(group)
    except ValueError:
        ip = None
    if not sep or ip is None or not ip.is_multicast or not port.isdigit() \
            or not 1 <= int(port) <= 65535:
        return f"expected \"GROUP:PORT\" with an IPv4 multicast group (224.0.0.0/4) and a port " \
               f"1-65535, got {value!r}"
    return None


class MarketDataConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[marketdata]``: the FAST multicast feed publisher and its TCP replay (spec/feed.md).

    Every channel has an A and a B feed (``"GROUP:PORT"``), carrying the same datagrams.
    """

    interface: NonEmpty = "127.0.0.1"      # IPv4 address: IP_MULTICAST_IF and the join interface
    ttl: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1   # 0 or 1 unless allow_routed_ttl
    allow_routed_ttl: bool = False         # permit ttl > 1 (datagrams leave the local network)
    loopback: bool = True                  # IP_MULTICAST_LOOP: local subscribers see the feed
    incremental_a: NonEmpty = "239.195.1.1:16001"
    incremental_b: NonEmpty = "239.195.1.129:17001"
    snapshot_a: NonEmpty = "239.195.1.2:16002"
    snapshot_b: NonEmpty = "239.195.1.130:17002"
    instruments_a: NonEmpty = "239.195.1.3:16003"
    instruments_b: NonEmpty = "239.195.1.131:17003"
    depth: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20
    snapshot_interval_ms: Positive = 1000  # start of one snapshot cycle to the next
    instrument_interval_ms: Positive = 5000
    heartbeat_ms: Positive = 1000          # a channel idle this long sends a Heartbeat
    replay_host: NonEmpty = "127.0.0.1"
    replay_port: Port = 9200               # 0 = ephemeral
    replay_max_messages: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000
    replay_buffer: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 100_000
    max_datagram: Annotated[int, msgspec.Meta(ge=256, le=65507)] = 1400

    def __post_init__(self) -> None:
        import ipaddress

        try:
            ipaddress.IPv4Address(self.interface)
        except ValueError:
            raise ValueError(f"interface: expected an IPv4 address, got {self.interface!r}")
        if self.ttl > 1 and not self.allow_routed_ttl:
            raise ValueError(f"ttl: must be 0 or 1 (host or local network only), got {self.ttl}; "
                             f"set allow_routed_ttl = true to send further")
        seen: dict[str, str] = {}
        for name in ("incremental_a", "incremental_b", "snapshot_a", "snapshot_b",
                     "instruments_a", "instruments_b"):
            value = getattr(self, name)
            problem = _multicast_feed(value)
            if problem:
                raise ValueError(f"{name}: {problem}")
            if value in seen:
                raise ValueError(f"{name}: {value} is already used by {seen[value]}")
            seen[value] = name


class _Sections(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Process sections shared verbatim by ``ConfigFile`` and ``BourseConfig``.

    To add ``[gateway]``: define ``GatewayConfig`` like ``EngineConfig`` and add
    ``gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)`` here.
    """

    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    marketdata: MarketDataConfig = msgspec.field(default_factory=MarketDataConfig)
    index: IndexConfig = msgspec.field(default_factory=IndexConfig)


# --------------------------------------------------------------------------------------------
# Reference data sections, as written in the file (decimal strings, currency units).


class MarketSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[market]``."""

    price_decimals: Annotated[int, msgspec.Meta(ge=0, le=9)] = 4


class InstrumentSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[instruments]]`` table."""

    symbol: str
    name: str
    tick_size: DecimalText
    lot_size: Positive
    reference_price: DecimalText
    price_band_pct: DecimalText
    isin: str = ""
    currency: str = "RUB"


class FirmSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[firms]]`` table."""

    id: str
    name: str
    credit_limit: DecimalText
    self_trade_prevention: Literal["none", "cancel_resting", "cancel_incoming", "cancel_both"] = (
        "none"
    )
    accounts: tuple[str, ...] = ()


class ConfigFile(_Sections, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole file, mirroring the TOML layout key for key."""

    market: MarketSection = msgspec.field(default_factory=MarketSection)
    gateways: tuple[GatewaySection, ...] = ()
    instruments: Annotated[tuple[InstrumentSection, ...], msgspec.Meta(min_length=1)]
    firms: tuple[FirmSection, ...] = ()
    indices: tuple[IndexSection, ...] = ()


class BourseConfig(_Sections, frozen=True, kw_only=True):
    """A loaded configuration: integer reference data plus the process sections."""

    source: str                 # file path as given, or DEFAULT_SOURCE
    market: MarketRefData
    digest: str                 # market.digest(), hex SHA-256
    gateways: tuple[GatewayConfig, ...] = ()
    indices: tuple[IndexDefinition, ...] = ()

    def gateway(self, node_id: str | None = None) -> GatewayConfig:
        """The gateway ``node_id`` (the only one when None); KeyError names the choices."""
        if node_id is None and len(self.gateways) == 1:
            return self.gateways[0]
        for g in self.gateways:
            if g.node_id == node_id:
                return g
        raise KeyError(f"{self.source}: no gateway {node_id!r} (gateways: "
                       f"{', '.join(g.node_id for g in self.gateways) or 'none'})")


# --------------------------------------------------------------------------------------------
# Loading.


def load_config(path: str | os.PathLike[str] | None = None) -> BourseConfig:
    """Load and validate a configuration file; ``None`` loads the embedded default."""
    if path is None:
        source = DEFAULT_SOURCE
        try:
            data = importlib.resources.files("bourse").joinpath("default.toml").read_bytes()
        except OSError as exc:
            raise ConfigError(
                source, None, f"cannot read the embedded default: {_os_reason(exc)}"
            ) from None
    else:
        try:
            source = os.fspath(path)
        except TypeError:
            raise ConfigError(repr(path), None, "expected a file path") from None
        try:
            with open(source, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ConfigError(source, None, f"cannot read file: {_os_reason(exc)}") from None
    try:
        text = data.decode("utf-8-sig")  # tolerate a byte order mark
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            source, None, f"line {line}: not valid UTF-8 (byte offset {exc.start})"
        ) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> BourseConfig:
    """Validate configuration ``text``; ``source`` names it in ``BourseConfig`` and errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, _toml_problem(str(exc))) from None
    try:
        raw = msgspec.convert(document, ConfigFile)
    except msgspec.ValidationError as exc:
        key, problem = _explain(str(exc), document)
        raise ConfigError(source, key, problem) from None
    market = _build_market(raw, source)
    try:
        gateways = tuple(_build_gateway(g, market, f"gateways[{i}]")
                         for i, g in enumerate(raw.gateways))
        _check_gateways_unique(gateways)
    except _Fail as fail:
        raise ConfigError(source, fail.key, fail.problem) from None
    try:
        indices = build_indices(raw.indices, market, raw.index)
    except IndexDefinitionError as fail:
        raise ConfigError(source, fail.key, fail.problem) from None
    sections = {name: getattr(raw, name) for name in _Sections.__struct_fields__}
    return BourseConfig(source=source, market=market, digest=market.digest(),
                        gateways=gateways, indices=indices, **sections)


def _check_gateways_unique(gateways: tuple[GatewayConfig, ...]) -> None:
    nodes: dict[str, int] = {}
    owners: dict[str, str] = {}
    for i, g in enumerate(gateways):
        if g.node_id in nodes:
            raise _Fail(f"gateways[{i}].node_id", f"duplicate gateway node id {g.node_id!r} "
                        f"(already gateways[{nodes[g.node_id]}])")
        nodes[g.node_id] = i
        for j, s in enumerate(g.sessions):
            if s.comp_id in owners:
                raise _Fail(f"gateways[{i}].sessions[{j}].comp_id",
                            f"session {s.comp_id!r} is already on gateway {owners[s.comp_id]!r}; "
                            "a session lives on one gateway")
            owners[s.comp_id] = g.node_id


def _build_gateway(g: GatewaySection, market: MarketRefData, where: str) -> GatewayConfig:
    firms = {f.id for f in market.firms}
    if g.daily_reset_utc and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", g.daily_reset_utc):
        raise _Fail(f"{where}.daily_reset_utc", f"expected HH:MM (UTC) or \"\", got "
                    f"{g.daily_reset_utc!r}")
    sessions = []
    seen: dict[str, int] = {}
    for j, s in enumerate(g.sessions):
        at = f"{where}.sessions[{j}]"
        if s.comp_id in seen:
            raise _Fail(f"{at}.comp_id", f"duplicate session {s.comp_id!r} (already "
                        f"{where}.sessions[{seen[s.comp_id]}])")
        seen[s.comp_id] = j
        if s.firm not in firms:
            raise _Fail(f"{at}.firm", f"unknown firm {s.firm!r} (firms: {', '.join(sorted(firms))})")
        if s.heartbeat_min_s > s.heartbeat_max_s:
            raise _Fail(f"{at}.heartbeat_min_s", "must not exceed heartbeat_max_s")
        for k, address in enumerate(s.allowed_addresses):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise _Fail(f"{at}.allowed_addresses[{k}]",
                            f"expected an IP address such as \"127.0.0.1\", got {address!r}")
        collar = _to_decimal(s.price_collar_pct, f"{at}.price_collar_pct")
        if not 0 < collar <= 100 or (collar * 100) != (collar * 100).to_integral_value():
            raise _Fail(f"{at}.price_collar_pct",
                        "expected a percentage above 0 and at most 100, with at most 2 decimals")
        max_notional = _to_units(s.max_notional, market.price_decimals, f"{at}.max_notional")
        if max_notional <= 0:
            raise _Fail(f"{at}.max_notional", "must be a positive amount")
        sessions.append(GatewaySession(
            s.comp_id, s.firm, s.password, s.drop_copy, s.heartbeat_min_s, s.heartbeat_max_s,
            s.reset_on_logon, s.throttle_per_s, s.throttle_disconnect_s, s.max_order_qty,
            max_notional, int(collar * 100), s.allowed_addresses, s.cancel_on_disconnect,
            s.cancel_on_disconnect_grace_ms))
    return GatewayConfig(g.node_id, g.host, g.port, g.comp_id, g.store_dir, g.store_fsync,
                         g.daily_reset_utc, g.sending_time_tolerance_s, tuple(sessions))


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _toml_problem(message: str) -> str:
    m = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
    if m:
        return f"line {m[2]}, column {m[3]}: invalid TOML: {m[1]}"
    m = re.fullmatch(r"(.*) \(at end of document\)", message, re.DOTALL)
    if m:
        return f"end of document: invalid TOML: {m[1]}"
    return f"invalid TOML: {message}"


# --------------------------------------------------------------------------------------------
# Conversion of the reference data into integer units.


_SYMBOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,19}")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,31}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_ISIN_RE = re.compile(r"[A-Z]{2}[A-Z0-9]{9}[0-9]")
_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")

_STP = {
    "none": StpMode.NONE,
    "cancel_resting": StpMode.CANCEL_RESTING,
    "cancel_incoming": StpMode.CANCEL_INCOMING,
    "cancel_both": StpMode.CANCEL_BOTH,
}


class _Fail(Exception):
    """Internal: a problem with one key; turned into ConfigError with the file name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


def _build_market(raw: ConfigFile, source: str) -> MarketRefData:
    try:
        decimals = raw.market.price_decimals
        instruments = []
        seen_symbols: dict[str, int] = {}
        for i, section in enumerate(raw.instruments):
            where = f"instruments[{i}]"
            instrument = _build_instrument(section, decimals, where)
            if instrument.symbol in seen_symbols:
                raise _Fail(
                    f"{where}.symbol",
                    f"duplicate symbol {instrument.symbol!r} (already defined at "
                    f"instruments[{seen_symbols[instrument.symbol]}])",
                )
            seen_symbols[instrument.symbol] = i
            instruments.append(instrument)
        firms = []
        seen_firms: dict[str, int] = {}
        seen_accounts: dict[str, str] = {}
        for i, section in enumerate(raw.firms):
            where = f"firms[{i}]"
            firm = _build_firm(section, decimals, where)
            if firm.id in seen_firms:
                raise _Fail(
                    f"{where}.id",
                    f"duplicate firm id {firm.id!r} (already defined at firms[{seen_firms[firm.id]}])",
                )
            seen_firms[firm.id] = i
            for j, account in enumerate(firm.accounts):
                if account in seen_accounts:
                    raise _Fail(
                        f"{where}.accounts[{j}]",
                        f"duplicate account {account!r} (already an account of firm "
                        f"{seen_accounts[account]!r})",
                    )
                seen_accounts[account] = firm.id
            firms.append(firm)
    except _Fail as fail:
        raise ConfigError(source, fail.key, fail.problem) from None
    return MarketRefData(price_decimals=decimals, instruments=tuple(instruments), firms=tuple(firms))


def _build_instrument(s: InstrumentSection, decimals: int, where: str) -> Instrument:
    _check_name(s.symbol, _SYMBOL_RE, f"{where}.symbol",
                "a symbol: 1 to 20 letters, digits, '.', '_' or '-', starting with a letter or digit")
    _check_text(s.name, f"{where}.name")
    if s.isin:
        _check_isin(s.isin, f"{where}.isin")
    _check_name(s.currency, _CURRENCY_RE, f"{where}.currency",
                "an ISO 4217 currency code: three upper-case letters such as \"RUB\"")

    tick = _to_units(s.tick_size, decimals, f"{where}.tick_size")
    if tick <= 0:
        raise _Fail(f"{where}.tick_size", f"must be > 0, got {_show(s.tick_size)}")
    ref = _to_units(s.reference_price, decimals, f"{where}.reference_price")
    if ref <= 0:
        raise _Fail(f"{where}.reference_price", f"must be > 0, got {_show(s.reference_price)}")
    if ref % tick:
        raise _Fail(
            f"{where}.reference_price",
            f"must be a multiple of tick_size {_show(s.tick_size)}, got {_show(s.reference_price)}",
        )

    pct = _to_decimal(s.price_band_pct, f"{where}.price_band_pct")
    if not 0 < pct < 100:
        raise _Fail(
            f"{where}.price_band_pct",
            f"must be > 0 and < 100 (percent), got {_show(s.price_band_pct)}",
        )
    num, den = pct.as_integer_ratio()
    # low = ref * (100 - pct) / 100 rounded up to a tick; high = ref * (100 + pct) / 100 rounded down.
    scale = 100 * den * tick
    band_low = -((-ref * (100 * den - num)) // scale) * tick
    band_high = (ref * (100 * den + num)) // scale * tick
    if band_low <= 0:
        raise _Fail(f"{where}.price_band_pct", "the lower band limit rounds to a price <= 0")
    if band_high > INT64_MAX:
        raise _Fail(f"{where}.reference_price", "the upper band limit does not fit in 64 bits")
    return Instrument(
        symbol=s.symbol,
        name=s.name,
        tick=tick,
        lot=s.lot_size,
        ref_price=ref,
        band_low=band_low,
        band_high=band_high,
        isin=s.isin,
        currency=s.currency,
    )


def _build_firm(s: FirmSection, decimals: int, where: str) -> Firm:
    _check_name(s.id, _SYMBOL_RE, f"{where}.id",
                "a firm id: 1 to 20 letters, digits, '.', '_' or '-', starting with a letter or digit")
    _check_text(s.name, f"{where}.name")
    limit = _to_units(s.credit_limit, decimals, f"{where}.credit_limit")
    if limit < 0:
        raise _Fail(f"{where}.credit_limit", f"must be >= 0, got {_show(s.credit_limit)}")
    seen: set[str] = set()
    for j, account in enumerate(s.accounts):
        _check_name(account, _ACCOUNT_RE, f"{where}.accounts[{j}]",
                    "an account: 1 to 32 letters, digits, '.', '_', '/' or '-', "
                    "starting with a letter or digit")
        if account in seen:
            raise _Fail(f"{where}.accounts[{j}]", f"duplicate account {account!r}")
        seen.add(account)
    return Firm(
        id=s.id,
        name=s.name,
        credit_limit=limit,
        stp=_STP[s.self_trade_prevention],
        accounts=tuple(s.accounts),
    )


def _check_name(value: str, pattern: re.Pattern[str], key: str, expected: str) -> None:
    if not pattern.fullmatch(value):
        raise _Fail(key, f"expected {expected}, got {value!r}")


def _check_text(value: str, key: str) -> None:
    if not value.strip():
        raise _Fail(key, "must not be empty")


def _check_isin(value: str, key: str) -> None:
    if not _ISIN_RE.fullmatch(value):
        raise _Fail(
            key,
            f"expected an ISIN: 2 letters, 9 letters or digits and a check digit, got {value!r}",
        )
    digits = "".join(str(int(c, 36)) for c in value)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    if total % 10:
        raise _Fail(key, f"ISIN {value!r} has a wrong check digit")


def _show(value: DecimalText) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _to_decimal(value: DecimalText, key: str) -> decimal.Decimal:
    if isinstance(value, float):
        name = key.rsplit(".", 1)[-1]
        raise _Fail(
            key,
            f"a TOML float ({value!r}) is not accepted for a decimal value because binary floats "
            f"are inexact; quote it as a string: {name} = \"{value!r}\"",
        )
    if isinstance(value, int):
        return decimal.Decimal(value)
    if not _DECIMAL_RE.fullmatch(value):
        raise _Fail(
            key,
            f"expected a decimal number written as a string of digits with an optional '.' and "
            f"fraction, such as \"0.01\", got {value!r}",
        )
    return decimal.Decimal(value)


def _to_units(value: DecimalText, decimals: int, key: str) -> int:
    """Exact conversion of a currency amount to price units (10**-decimals of the currency)."""
    num, den = _to_decimal(value, key).as_integer_ratio()
    scaled = num * 10**decimals
    if scaled % den:
        raise _Fail(
            key,
            f"{_show(value)} is not exact at price_decimals = {decimals} "
            f"(the smallest price unit is {decimal.Decimal(1).scaleb(-decimals)})",
        )
    units = scaled // den
    if abs(units) > INT64_MAX:
        raise _Fail(key, f"{_show(value)} is too large: it does not fit in 64 bits as price units")
    return units


# --------------------------------------------------------------------------------------------
# Turning msgspec validation errors into "<key path>: <problem>".

_TYPE_WORDS = {
    "int": "an integer",
    "str": "a string",
    "float": "a float",
    "bool": "a boolean",
    "array": "an array",
    "object": "a table",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
    "null": "null",
}


def _explain(message: str, document: Any) -> tuple[str, str]:
    """Map msgspec's ``<what> - at `$.a[0].b``` to (``a[0].b``, readable problem)."""
    m = re.fullmatch(r"(.*?)(?: - at `\$(.*)`)?", message, re.DOTALL)
    what, raw_path = m[1], m[2] or ""
    tokens: list[str | int] = [
        t[0] if t[0] else int(t[1]) for t in re.findall(r"\.([^.\[]+)|\[(\d+)\]", raw_path)
    ]
    node = _type_at(tokens)
    value = _value_at(document, tokens)

    if m2 := re.fullmatch(r"Object contains unknown field `(.*)`", what):
        field = m2[1]
        known = _fields(node)
        problem = "unknown key"
        close = difflib.get_close_matches(field, known, n=1)
        if close:
            problem += f" (did you mean {close[0]!r}?)"
        if known:
            problem += "; expected one of: " + ", ".join(known)
        return _join(tokens + [field]), problem
    if m2 := re.fullmatch(r"Object missing required field `(.*)`", what):
        return _join(tokens + [m2[1]]), "required key is missing"
    if what.startswith("Invalid enum value"):
        allowed = getattr(node, "values", None)
        if allowed:
            return _join(tokens), (
                "expected one of " + ", ".join(repr(v) for v in allowed) + f", got {value!r}"
            )
        return _join(tokens), _lower(what)
    if m2 := re.fullmatch(r"Expected `([^`]*)`, got `([^`]*)`", what):
        return _join(tokens), f"expected {_describe(m2[1], node, tokens)}, got {_word(m2[2])}"
    if m2 := re.fullmatch(r"Expected `([^`]*)` (.*)", what, re.DOTALL):
        shown = f"{len(value)} entries" if isinstance(value, (list, tuple)) else repr(value)
        return _join(tokens), f"expected {_describe(m2[1], node, tokens)} {m2[2]}, got {shown}"
    m2 = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*): (.*)", what, re.DOTALL)
    if m2 and m2[1] in _fields(node):
        # A __post_init__ check that names the offending field of its struct.
        return _join(tokens + [m2[1]]), m2[2]
    return _join(tokens), _lower(what)


def _join(tokens: list[str | int]) -> str:
    out = ""
    for t in tokens:
        out += f"[{t}]" if isinstance(t, int) else (f".{t}" if out else t)
    return out


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def _word(name: str) -> str:
    return _TYPE_WORDS.get(name, f"`{name}`")


def _describe(expected: str, node: Any, tokens: list[str | int]) -> str:
    parts = set(expected.split(" | "))
    if parts == {"int", "float", "str"}:
        return 'a decimal number as a quoted string (such as "0.01") or an integer'
    top = tokens[0] if len(tokens) == 1 and isinstance(tokens[0], str) else None
    if isinstance(node, msgspec.inspect.StructType) and top:
        return f"a table ([{top}])"
    if (
        isinstance(node, (msgspec.inspect.VarTupleType, msgspec.inspect.ListType))
        and isinstance(node.item_type, msgspec.inspect.StructType)
        and top
    ):
        return f"an array of tables ([[{top}]])"
    return " or ".join(_word(p) for p in expected.split(" | "))


def _fields(node: Any) -> list[str]:
    if isinstance(node, msgspec.inspect.StructType):
        return [f.encode_name for f in node.fields]
    return []


def _type_at(tokens: list[str | int]) -> Any:
    node: Any = msgspec.inspect.type_info(ConfigFile)
    for t in tokens:
        if isinstance(t, int):
            node = getattr(node, "item_type", None)
        elif isinstance(node, msgspec.inspect.StructType):
            node = next((f.type for f in node.fields if f.encode_name == t), None)
        else:
            node = None
        if node is None:
            return None
    return node


def _value_at(document: Any, tokens: list[str | int]) -> Any:
    value = document
    for t in tokens:
        try:
            value = value[t]
        except (KeyError, IndexError, TypeError):
            return None
    return value
