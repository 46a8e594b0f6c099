"""Shared helpers for FIX integration tests and benchmarks.

- ``gateway_toml`` / ``write_fix_config``: a test configuration (``tests.procs.write_config``
  output) with a ``[[gateways]]`` section and its sessions appended.
- ``Stack``: the engine and the gateway as real processes (``python -m bourse ...``), either
  separately (so that the gateway alone can be killed and restarted) or through ``bourse up``.
  Their stderr is drained in the background so that a chatty component never blocks on a full
  pipe; ``Stack.log()`` returns what they wrote.
- ``Relay``: a TCP relay on loopback between a client and the gateway that a test can cut
  (both sides closed at once) and hold down (connections refused) to simulate a network loss.
- ``FixMsg``: a received message (fields in wire order); ``new_order`` builds NewOrderSingle
  fields as (tag, value) pairs; ``encode_fix`` encodes a whole message.
- ``QuickFixClient``: a QuickFIX (C++ engine) initiator that loads the exchange's dialect
  dictionary (``spec/FIX44-bourse.xml``) with validation on, and collects every message it
  receives into a thread-safe queue.
- ``RawFixSession``: a minimal asyncio initiator with exact control of sequence numbers,
  resends and duplicates (for crash tests and load).
- ``engine_events``: every event of the engine's replication stream, to check outcomes
  against the engine itself.
"""
from __future__ import annotations

import asyncio
import functools
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tests.procs import ROOT, TEST_INSTRUMENTS, Proc, write_config

DICTIONARY = ROOT / "spec" / "FIX44-bourse.xml"
EXCHANGE = "BOURSE"
SOH = "\x01"

#: Session keys every test session gets unless overridden: no throttle or notional surprises,
#: and orders stay in the book when the session disconnects.
SESSION_DEFAULTS = {
    "throttle_per_s": 100_000,
    "max_order_qty": 1_000_000,
    "max_notional": "10000000000",
    "price_collar_pct": "10",
    "cancel_on_disconnect": False,
}


# ------------------------------------------------------------------------------- config


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def gateway_toml(store_dir: Path, sessions: Sequence[tuple[str, str] | dict], *,
                 node_id: str = "gw1", comp_id: str = EXCHANGE, store_fsync: str = "never",
                 port: int = 0, **gateway_keys) -> str:
    """A ``[[gateways]]`` table. ``sessions``: (comp_id, firm) pairs or full session dicts."""
    lines = ["", "[[gateways]]", f"node_id = {_toml_value(node_id)}", 'host = "127.0.0.1"',
             f"port = {port}", f"comp_id = {_toml_value(comp_id)}",
             f"store_dir = {_toml_value(str(store_dir))}",
             f"store_fsync = {_toml_value(store_fsync)}"]
    for k, v in gateway_keys.items():
        lines.append(f"{k} = {_toml_value(v)}")
    for s in sessions:
        d = dict(SESSION_DEFAULTS)
        if isinstance(s, dict):
            d.update(s)
        else:
            d["comp_id"], d["firm"] = s
        if d.get("drop_copy"):
            for k in ("throttle_per_s", "max_order_qty", "max_notional", "price_collar_pct"):
                d.pop(k, None)
        lines += ["", "[[gateways.sessions]]", f"comp_id = {_toml_value(d.pop('comp_id'))}",
                  f"firm = {_toml_value(d.pop('firm'))}"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in d.items()]
    return "\n".join(lines) + "\n"


def write_fix_config(tmp_path: Path, sessions: Sequence[tuple[str, str] | dict] = (
        ("BROKER1", "FIRM1"), ("BROKER3", "FIRM2")), *, fsync: str = "batch",
        instruments: str = TEST_INSTRUMENTS, store_dir: Path | None = None,
        store_fsync: str = "never", extra_engine: str = "", name: str = "bourse.toml",
        **gateway_keys) -> Path:
    """``tests.procs.write_config`` plus a gateway ``gw1`` with ``sessions`` (ports 0).

    The default instruments and firms are ``tests.procs.TEST_INSTRUMENTS``: SBER (tick 0.01,
    lot 10, reference 280.00) and GAZP; FIRM1 (accounts A1, A2) and FIRM2 (account B1).
    """
    store = store_dir or (tmp_path / "gateway")
    text = instruments + gateway_toml(store, sessions, store_fsync=store_fsync, **gateway_keys)
    return write_config(tmp_path, fsync=fsync, instruments=text, extra_engine=extra_engine,
                        name=name)


# ------------------------------------------------------------------------------- processes


class _Drain:
    """Reads a process's stderr in a daemon thread (a full pipe would block the process)."""

    def __init__(self, proc: Proc) -> None:
        self.chunks: list[bytes] = []
        self._fd = os.dup(proc.proc.stderr.fileno())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    break
                self.chunks.append(chunk)
        except OSError:
            pass
        finally:
            os.close(self._fd)

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


class Stack:
    """Engine and gateway processes of one test, started through the ``procs`` fixture."""

    def __init__(self, procs: Callable[..., Proc], cfg: Path) -> None:
        self.procs = procs
        self.cfg = cfg
        self.engine: Proc | None = None
        self.gateway: Proc | None = None
        self.up: Proc | None = None
        self.order_entry: tuple[str, int] = ("", 0)
        self.replication: tuple[str, int] = ("", 0)
        self.fix: tuple[str, int] = ("", 0)
        self._drains: list[tuple[str, _Drain]] = []

    def _start(self, name: str, args: list[str], timeout: float) -> Proc:
        p = self.procs(args)
        try:
            p.wait_ready(timeout)
        except AssertionError as exc:
            raise AssertionError(f"{name} did not become ready: {exc}") from None
        self._drains.append((name, _Drain(p)))
        return p

    def start_engine(self, timeout: float = 30.0) -> Proc:
        self.engine = self._start("engine", ["engine", "--config", str(self.cfg)], timeout)
        self.order_entry = self.engine.endpoint("order_entry")
        self.replication = self.engine.endpoint("replication")
        return self.engine

    def start_gateway(self, timeout: float = 30.0) -> Proc:
        host, port = self.order_entry
        self.gateway = self._start("gateway", ["gateway", "--config", str(self.cfg),
                                               "--engine", f"{host}:{port}"], timeout)
        self.fix = self.gateway.endpoint("fix")
        return self.gateway

    def start(self) -> "Stack":
        self.start_engine()
        self.start_gateway()
        return self

    def start_up(self, timeout: float = 60.0) -> "Stack":
        """``bourse up``: the launcher starts both and prints one combined READY line."""
        self.up = self._start("bourse up", ["up", "--config", str(self.cfg)], timeout)
        ready = self.up.ready
        eng = ready["engine"]
        gw = next(v for k, v in ready.items() if k.startswith("gateway"))

        def ep(s: str) -> tuple[str, int]:
            h, p = s.rsplit(":", 1)
            return h, int(p)
        self.order_entry, self.replication = ep(eng["order_entry"]), ep(eng["replication"])
        self.fix = ep(gw["fix"])
        return self

    def kill_gateway(self) -> None:
        assert self.gateway is not None
        self.gateway.kill()

    def log(self) -> str:
        return "\n".join(f"--- {name} stderr ---\n{d.text()}" for name, d in self._drains)

    @property
    def digest(self) -> str:
        from bourse.config import load_config
        return load_config(self.cfg).digest


# ------------------------------------------------------------------------------- relay


class Relay:
    """A TCP relay on 127.0.0.1 that the test can cut and hold down (own thread and loop).

    ``cut()`` closes every relayed connection on both sides at once (the gateway and the
    client each see the peer go away); ``hold(True)`` makes new connections close at once (the
    client keeps retrying) until ``hold(False)``.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.held = False
        self.connections = 0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> "Relay":
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self.held:
            cw.transport.abort()
            return
        try:
            sr, sw = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, asyncio.TimeoutError):
            cw.transport.abort()
            return
        self.connections += 1
        pair = (cw, sw)
        self._pairs.add(pair)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                for x in pair:
                    x.transport.abort()

        try:
            await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
        finally:
            self._pairs.discard(pair)

    async def _cut(self) -> int:
        n = len(self._pairs)
        for pair in list(self._pairs):
            for w in pair:
                w.transport.abort()
        return n

    def cut(self) -> int:
        """Close every relayed connection; returns how many were open."""
        return self._call(self._cut())

    def hold(self, on: bool) -> None:
        self.held = on

    def close(self) -> None:
        async def shutdown():
            self._server.close()
            await self._cut()
        try:
            self._call(shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()


# ------------------------------------------------------------------------------- messages


class FixMsg:
    """A received message: ``fields`` in wire order as (int tag, str value)."""

    __slots__ = ("fields", "raw", "_d")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.fields: list[tuple[int, str]] = []
        for part in raw.split(SOH):
            if part:
                tag, _, value = part.partition("=")
                self.fields.append((int(tag), value))
        self._d: dict[int, str] = {}
        for tag, value in self.fields:
            self._d.setdefault(tag, value)

    def get(self, tag: int, default: str | None = None) -> str | None:
        return self._d.get(tag, default)

    def __getitem__(self, tag: int) -> str:
        return self._d[tag]

    def __contains__(self, tag: int) -> bool:
        return tag in self._d

    def get_all(self, tag: int) -> list[str]:
        return [v for t, v in self.fields if t == tag]

    @property
    def msg_type(self) -> str:
        return self._d.get(35, "")

    @property
    def seq(self) -> int:
        return int(self._d.get(34, "0"))

    @property
    def poss_dup(self) -> bool:
        return self._d.get(43) == "Y"

    def body(self) -> list[tuple[int, str]]:
        """The fields without those a resend may change (header framing, seq, times, flags)."""
        skip = {8, 9, 10, 34, 43, 52, 97, 122}
        return [(t, v) for t, v in self.fields if t not in skip]

    def __repr__(self) -> str:
        return "FixMsg(" + "|".join(f"{t}={v}" for t, v in self.fields) + ")"


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def new_order(cl_ord_id: str, side: int, qty: int, price: str | None, *, account: str,
              symbol: str = "SBER", tif: str | None = None) -> list:
    f = [(11, cl_ord_id), (1, account), (55, symbol), (54, str(side)), (60, utc_now()),
         (38, str(qty)), (40, "2" if price is not None else "1")]
    if price is not None:
        f.append((44, price))
    if tif is not None:
        f.append((59, tif))
    return f


# ------------------------------------------------------------------------------- QuickFIX


def _quickfix():
    import quickfix
    return quickfix


@functools.lru_cache(maxsize=None)
def _make_app_class():
    """The quickfix.Application subclass, made on first use (QuickFIX is imported lazily)."""
    fix = _quickfix()

    class CollectingApp(fix.Application):
        """Collects every message received; records logon state and admin traffic."""

        def __init__(self) -> None:
            super().__init__()
            self.inbox: "queue.Queue[FixMsg]" = queue.Queue()
            self.app_in: list[FixMsg] = []       # every application message received
            self.admin_in: list[FixMsg] = []
            self.admin_out: list[FixMsg] = []
            self.app_out: list[FixMsg] = []      # sent, including resends (PossDup)
            self.logged_on = threading.Event()
            self.logged_out = threading.Event()
            self.logons = 0
            self.session_id = None
            self.lock = threading.Lock()

        def onCreate(self, sessionID):
            self.session_id = sessionID

        def onLogon(self, sessionID):
            with self.lock:
                self.logons += 1
            self.logged_out.clear()
            self.logged_on.set()

        def onLogout(self, sessionID):
            self.logged_on.clear()
            self.logged_out.set()

        def toAdmin(self, message, sessionID):
            with self.lock:
                self.admin_out.append(FixMsg(message.toString()))

        def fromAdmin(self, message, sessionID):
            with self.lock:
                self.admin_in.append(FixMsg(message.toString()))

        def toApp(self, message, sessionID):
            with self.lock:
                self.app_out.append(FixMsg(message.toString()))

        def fromApp(self, message, sessionID):
            m = FixMsg(message.toString())
            with self.lock:
                self.app_in.append(m)
            self.inbox.put(m)

    return CollectingApp


class QuickFixClient:
    """One QuickFIX initiator session (SocketInitiator, FileStore in ``work_dir``).

    Loads ``spec/FIX44-bourse.xml`` with ``UseDataDictionary=Y``: every message the exchange
    sends is validated by QuickFIX; an invalid one would be rejected (35=3) by QuickFIX and
    never reach ``inbox``, so tests also check ``rejects_sent()`` is empty.
    """

    def __init__(self, work_dir: Path, sender: str, port: int, *, host: str = "127.0.0.1",
                 target: str = EXCHANGE, heartbeat_s: int = 5, reset_on_logon: bool = False,
                 extra_settings: dict | None = None) -> None:
        fix = _quickfix()
        self.fix = fix
        self.sender = sender
        self.target = target
        work_dir = Path(work_dir) / f"qf-{sender}"
        (work_dir / "store").mkdir(parents=True, exist_ok=True)
        (work_dir / "log").mkdir(parents=True, exist_ok=True)
        settings = {
            "ConnectionType": "initiator",
            "BeginString": "FIX.4.4",
            "ReconnectInterval": "1",
            "HeartBtInt": str(heartbeat_s),
            "StartTime": "00:00:00",
            "EndTime": "00:00:00",
            "FileStorePath": str(work_dir / "store"),
            "FileLogPath": str(work_dir / "log"),
            "UseDataDictionary": "Y",
            "DataDictionary": str(DICTIONARY),
            # User-defined fields (MassCancelScope 20001, EventSeqNum 20002) are in the
            # dialect dictionary: validate them too.
            "ValidateUserDefinedFields": "Y",
            "ResetOnLogon": "Y" if reset_on_logon else "N",
            "PersistMessages": "Y",
            "LogonTimeout": "5",
            "LogoutTimeout": "2",
            "SocketNodelay": "Y",
        }
        settings.update(extra_settings or {})
        session = {"SenderCompID": sender, "TargetCompID": target,
                   "SocketConnectHost": host, "SocketConnectPort": str(port)}
        text = "[DEFAULT]\n" + "".join(f"{k}={v}\n" for k, v in settings.items())
        text += "\n[SESSION]\n" + "".join(f"{k}={v}\n" for k, v in session.items())
        self.settings_path = work_dir / "session.cfg"
        self.settings_path.write_text(text)
        self.app = _make_app_class()()
        self._settings = fix.SessionSettings(str(self.settings_path))
        self._store = fix.FileStoreFactory(self._settings)
        self._logs = fix.FileLogFactory(self._settings)
        self.initiator = fix.SocketInitiator(self.app, self._store, self._settings, self._logs)
        self.session_id = fix.SessionID("FIX.4.4", sender, target)
        self._started = False
        self._pending: list[FixMsg] = []

    # -- life cycle
    def start(self, wait_logon: float | None = 15.0) -> "QuickFixClient":
        self.initiator.start()
        self._started = True
        if wait_logon:
            self.wait_logon(wait_logon)
        return self

    def wait_logon(self, timeout: float = 15.0) -> None:
        if not self.app.logged_on.wait(timeout):
            raise AssertionError(f"{self.sender}: no logon within {timeout} s")

    def wait_logout(self, timeout: float = 10.0) -> None:
        if not self.app.logged_out.wait(timeout):
            raise AssertionError(f"{self.sender}: still logged on after {timeout} s")

    def logout(self) -> None:
        """Start the Logout handshake (returns at once; see ``wait_logout``)."""
        if self._started and self.app.logged_on.is_set():
            self.session().logout("done")

    def stop(self) -> None:
        if self._started:
            self.logout()
            self.app.logged_out.wait(3)
            self._started = False
            self.initiator.stop(True)       # logged out already: do not wait any longer

    @staticmethod
    def stop_all(clients: Sequence["QuickFixClient"]) -> None:
        """Stop several initiators at once (each stop takes about a second of QuickFIX time)."""
        for c in clients:
            c.logout()
        threads = [threading.Thread(target=c.stop) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)

    def session(self):
        return self.fix.Session.lookupSession(self.session_id)

    @property
    def next_sender_seq(self) -> int:
        return self.session().getExpectedSenderNum()

    @property
    def next_target_seq(self) -> int:
        return self.session().getExpectedTargetNum()

    # -- sending
    def build(self, msg_type: str, fields: Iterable) -> "object":
        """A quickfix.Message from (tag, value) pairs; a value that is a list of entries
        (each a list of (tag, value)) becomes a repeating group counted by ``tag``."""
        fix = self.fix
        m = fix.Message()
        m.getHeader().setField(fix.BeginString("FIX.4.4"))
        m.getHeader().setField(fix.MsgType(msg_type))
        for tag, value in fields:
            if isinstance(value, list):
                delim = value[0][0][0]
                for entry in value:
                    g = fix.Group(tag, delim)
                    for t, v in entry:
                        g.setField(fix.StringField(t, str(v)))
                    m.addGroup(g)
            else:
                m.setField(fix.StringField(tag, str(value)))
        return m

    def send(self, msg_type: str, fields: Iterable) -> None:
        ok = self.fix.Session.sendToTarget(self.build(msg_type, fields), self.session_id)
        if ok is False:
            raise AssertionError(f"{self.sender}: sendToTarget refused {msg_type}")

    # -- receiving
    def expect(self, pred: Callable[[FixMsg], bool] | None = None, timeout: float = 10.0,
               what: str = "a message") -> FixMsg:
        """The next received message matching ``pred`` (others are kept for later calls)."""
        for i, m in enumerate(self._pending):
            if pred is None or pred(m):
                return self._pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.sender}: timed out after {timeout} s waiting for "
                                     f"{what}; pending: {self._pending[-10:]}")
            try:
                m = self.app.inbox.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if pred is None or pred(m):
                return m
            self._pending.append(m)

    def expect_er(self, cl_ord_id: str, exec_type: str, timeout: float = 10.0) -> FixMsg:
        return self.expect(lambda m: m.msg_type == "8" and m.get(11) == cl_ord_id
                           and m.get(150) == exec_type, timeout,
                           f"ExecutionReport 11={cl_ord_id} 150={exec_type}")

    def drain(self, quiet_s: float = 0.3, timeout: float = 5.0) -> list[FixMsg]:
        """Everything received until nothing arrives for ``quiet_s``."""
        out = self._pending
        self._pending = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                out.append(self.app.inbox.get(timeout=quiet_s))
            except queue.Empty:
                break
        return out

    def rejects_sent(self) -> list[FixMsg]:
        """Session-level Rejects QuickFIX sent: messages of the exchange it found invalid."""
        with self.app.lock:
            return [m for m in self.app.admin_out if m.msg_type == "3"]


# ------------------------------------------------------------------------------- raw client


def encode_fix(msg_type: str, sender: str, target: str, seq: int, fields: Iterable,
               sending_time: str | None = None, orig_sending_time: str | None = None) -> bytes:
    """A complete FIX 4.4 message (BodyLength and CheckSum computed)."""
    head = (f"35={msg_type}\x0149={sender}\x0156={target}\x0134={seq}\x01"
            f"52={sending_time or utc_now()}\x01")
    if orig_sending_time is not None:
        head += f"43=Y\x01122={orig_sending_time}\x01"
    body = (head + "".join(f"{t}={v}\x01" for t, v in fields)).encode()
    msg = b"8=FIX.4.4\x019=" + str(len(body)).encode() + b"\x01" + body
    return msg + b"10=%03d\x01" % (sum(msg) % 256)


class Framer:
    """Splits a byte stream into FIX messages (by BodyLength)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf + data
        out, pos = [], 0
        while True:
            i = buf.find(b"8=FIX", pos)
            if i < 0:
                pos = max(pos, len(buf) - 4)
                break
            j = buf.find(b"\x019=", i)
            k = buf.find(b"\x01", j + 3) if j >= 0 else -1
            if k < 0:
                pos = i
                break
            end = k + 1 + int(buf[j + 3:k]) + 7
            if len(buf) < end:
                pos = i
                break
            out.append(buf[i:end])
            pos = end
        self.buf = buf[pos:]
        return out


_ADMIN = frozenset({"0", "1", "2", "3", "4", "5", "A"})


class RawFixSession:
    """A minimal asyncio FIX 4.4 initiator with the session rules a broker needs to recover:
    sequence numbers kept across connections (as a persistent client would), gap detection
    with ResendRequest and in-order processing of queued messages, PossDup duplicates set
    aside, SequenceReset-GapFill, answers to TestRequest, and ResendRequests of the exchange
    served from its own store of sent application messages (PossDupFlag=Y).

    ``delivered``: application messages processed in sequence (each MsgSeqNum once);
    ``duplicates``: PossDup messages whose MsgSeqNum had already been processed;
    ``covered``: every inbound MsgSeqNum accounted for (processed or gap-filled);
    ``errors``: protocol problems seen (Rejects, too-low MsgSeqNum without PossDup).
    """

    def __init__(self, sender: str, target: str = EXCHANGE, heartbeat_s: int = 30,
                 on_app: Callable[[FixMsg], None] | None = None) -> None:
        self.sender, self.target, self.heartbeat_s = sender, target, heartbeat_s
        self.on_app = on_app
        self.next_out = 1
        self.next_in = 1
        self.out_store: dict[int, tuple[str, list, str]] = {}
        self.delivered: list[FixMsg] = []
        self.by_seq: dict[int, FixMsg] = {}
        self.duplicates: list[FixMsg] = []
        self.admin: list[FixMsg] = []
        self.covered: set[int] = set()
        self.errors: list[str] = []
        self.logon_replies: list[FixMsg] = []
        self.resend_requests_sent: list[tuple[int, int]] = []
        self.resend_requests_served: list[tuple[int, int]] = []
        self.connected = False
        self.logged_on = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.disconnected.set()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._queue: dict[int, tuple[FixMsg, bool]] = {}
        self._gap_open = False
        self._gap_since = 0.0

    # -- connection
    async def connect(self, host: str, port: int, timeout: float = 10.0) -> FixMsg:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        self._writer = writer
        self.connected = True
        self.logged_on.clear()
        self.disconnected.clear()
        self._queue.clear()
        self._gap_open = False
        self._task = asyncio.ensure_future(self._read_loop(reader))
        self._send_admin("A", [(98, 0), (108, self.heartbeat_s)])
        try:
            await asyncio.wait_for(self.logged_on.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.sender}: no Logon reply within {timeout} s; "
                                 f"errors {self.errors}") from None
        return self.logon_replies[-1]

    async def logout(self, timeout: float = 5.0) -> None:
        if self.connected:
            self._send_admin("5", [])
            try:
                await asyncio.wait_for(self.disconnected.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        framer = Framer()
        try:
            while data := await reader.read(1 << 16):
                for frame in framer.feed(data):
                    self._on_message(FixMsg(frame.decode("latin-1")))
                if self._gap_open and time.monotonic() - self._gap_since > 5:
                    self._request_resend()         # no progress: ask again
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connected = False
            self.logged_on.clear()
            self.disconnected.set()
            if self._writer is not None:
                self._writer.transport.abort()

    # -- sending
    def _write(self, data: bytes) -> None:
        if self.connected and self._writer is not None:
            self._writer.write(data)

    def _send_admin(self, msg_type: str, fields: list) -> None:
        seq = self.next_out
        self.next_out += 1
        self._write(encode_fix(msg_type, self.sender, self.target, seq, fields))

    def send_app(self, msg_type: str, fields: list) -> int:
        """Store and send (if connected) an application message; returns its MsgSeqNum."""
        seq = self.next_out
        self.next_out += 1
        st = utc_now()
        self.out_store[seq] = (msg_type, fields, st)
        self._write(encode_fix(msg_type, self.sender, self.target, seq, fields, st))
        return seq

    async def drain(self) -> None:
        if self.connected and self._writer is not None:
            try:
                await self._writer.drain()
            except OSError:
                pass

    def _serve_resend(self, begin: int, end: int) -> None:
        last = self.next_out - 1
        end = last if end == 0 or end > last else end
        self.resend_requests_served.append((begin, end))
        s = begin
        while s <= end:
            if s in self.out_store:
                mt, fields, st = self.out_store[s]
                self._write(encode_fix(mt, self.sender, self.target, s, fields,
                                       orig_sending_time=st))
                s += 1
            else:
                n = s
                while n <= end and n not in self.out_store:
                    n += 1
                self._write(encode_fix("4", self.sender, self.target, s,
                                       [(123, "Y"), (36, n)], orig_sending_time=utc_now()))
                s = n

    def request_resend(self, begin: int, end: int) -> None:
        """Ask for a range again (what a client does when it doubts what it has)."""
        self.resend_requests_sent.append((begin, end))
        self._send_admin("2", [(7, begin), (16, end)])

    def _request_resend(self) -> None:
        self.resend_requests_sent.append((self.next_in, 0))
        self._gap_since = time.monotonic()
        self._send_admin("2", [(7, self.next_in), (16, 0)])

    # -- receiving
    def _on_message(self, m: FixMsg) -> None:
        mt, seq = m.msg_type, m.seq
        if mt == "4" and m.get(123) != "Y":                 # SequenceReset-Reset
            self.covered.update(range(self.next_in, int(m[36])))
            self.next_in = max(self.next_in, int(m[36]))
            self._drain()
            return
        handled = False
        if mt == "A" and not self.logged_on.is_set():
            self.logon_replies.append(m)
            self.logged_on.set()
            handled = True
        if seq > self.next_in:
            if mt == "2":                                   # act on it at once
                self._serve_resend(int(m[7]), int(m[16]))
                handled = True
            self._queue.setdefault(seq, (m, handled))
            if not self._gap_open:
                self._gap_open = True
                self._request_resend()
            return
        if seq < self.next_in:
            if m.poss_dup:
                if mt not in _ADMIN:
                    self.duplicates.append(m)
            else:
                self.errors.append(f"MsgSeqNum too low: expected {self.next_in}, got {m!r}")
            return
        self._process(m, handled)
        self._drain()

    def _drain(self) -> None:
        while self.next_in in self._queue:
            m, handled = self._queue.pop(self.next_in)
            self._process(m, handled)
        for s in [s for s in self._queue if s < self.next_in]:
            del self._queue[s]
        if not self._queue:
            self._gap_open = False
        self._gap_since = time.monotonic()

    def _process(self, m: FixMsg, handled: bool) -> None:
        mt, seq = m.msg_type, m.seq
        if mt == "4":                                       # GapFill, in sequence
            new = int(m[36])
            self.covered.update(range(seq, new))
            self.next_in = max(self.next_in, new)
            return
        self.covered.add(seq)
        self.next_in = seq + 1
        if mt in _ADMIN:
            self.admin.append(m)
            if handled:
                return
            if mt == "1":
                self._send_admin("0", [(112, m[112])])
            elif mt == "2":
                self._serve_resend(int(m[7]), int(m[16]))
            elif mt == "3":
                self.errors.append(f"Reject received: {m!r}")
            elif mt == "5" and self.connected:
                self._send_admin("5", [])
            return
        if mt == "j":
            self.errors.append(f"BusinessMessageReject received: {m!r}")
        self.delivered.append(m)
        self.by_seq[seq] = m
        if self.on_app is not None:
            self.on_app(m)


async def engine_events(replication: tuple[str, int], digest: str, node_id: str,
                        timeout: float = 20.0) -> list:
    """Every event on the engine's replication stream, from 1 to the head at connect time."""
    from engine.client import EngineLink
    from engine.link import Events

    link = await EngineLink.connect(*replication, component="test", node_id=node_id,
                                    config_digest=digest, subscribe_from=1)
    head = link.welcome.next_event_seq
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while (out[-1].seq if out else 0) < head - 1:
            msg = await asyncio.wait_for(link.recv(), max(0.1, deadline - time.monotonic()))
            assert msg is not None, "replication stream ended early"
            if isinstance(msg, Events):
                out.extend(msg.events)
    finally:
        await link.close()
    return out
