"""End-to-end FIX benchmark: NewOrderSingle -> ExecutionReport(New) over TCP on loopback.

    python -m bench.fix_gateway [--orders N] [--sessions S] [--window W] [--rate R]
                                [--duration SEC] [--tick-ms T] [--no-quickfix]
                                [--episodes MS] [--profile-gateway FILE] [--gateways N]

Starts the stack as real processes in a temporary directory: the engine (journal on, fsync
every batch) and a FIX gateway (message store on), then drives FIX sessions over TCP with
pre-encoded messages and a minimal parser counting 35=8/150=0:

  (a) throughput: N NewOrderSingle over S sessions, up to W orders in flight per session
      (asyncio/uvloop client in this process);
  (b) latency: one session offering a fixed R orders/s for SEC seconds (on a freshly started
      stack), time from the write of an order to the read of its ExecutionReport(New):
      p50/p90/p99/p99.9/max. The client is two processes on the one connection: a forked
      sender writes each order at its due time (within the 0.1-0.2 ms a sleep takes to wake
      here) and this process only blocks in recv() and stamps what it reads. ``--tick-ms T``
      instead writes the due orders in one burst every T ms (1 ms bursts of 10 orders are
      harsher: the last of a burst waits for the nine before it);
  (c) the same two workloads against a reference acceptor built on QuickFIX (the C++ engine's
      Python binding: SocketAcceptor, FileStore, the same dialect dictionary, a Python
      Application answering each NewOrderSingle with an ExecutionReport), and the ratios.

Orders never cross (buys 270.00-279.99, sells 280.01-289.99 in SBER, within the 10% collar),
so each order gets exactly one ExecutionReport(New); throttles, credit limits and maximum
notional are set high enough that nothing is rejected (rejects are counted and printed).
Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import mmap
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.pacing import pace
from bench.stats import percentiles

ROOT = Path(__file__).resolve().parent.parent
DICTIONARY = ROOT / "spec" / "FIX44-bourse.xml"
EXCHANGE = "BOURSE"

INSTRUMENTS = """
[[instruments]]
symbol = "SBER"
name = "Sberbank"
isin = "RU0009029540"
tick_size = "0.01"
lot_size = 10
reference_price = "280.00"
price_band_pct = "20"
"""

FIRMS = "".join(f"""
[[firms]]
id = "FIRM{i}"
name = "Bench firm {i}"
credit_limit = "100000000000000"
self_trade_prevention = "none"
accounts = ["A{i}"]
""" for i in range(1, 9))


def session_ids(n: int) -> list[str]:
    return [f"BROKER{i}" for i in range(1, n + 1)]


def bench_config(tmp: Path, sessions: list[str], fsync: str, gateways: int = 1) -> Path:
    """The stack's configuration: the sessions are dealt round-robin over ``gateways``
    gateway nodes (gw1, gw2, ...), as an exchange assigns each member session to one of its
    access servers."""
    lines = [f"""
[market]
price_decimals = 4

[engine]
host = "127.0.0.1"
order_entry_port = 0
replication_port = 0
journal_dir = "{tmp / 'journal'}"
fsync = "{fsync}"
{INSTRUMENTS}{FIRMS}"""]
    for g in range(gateways):
        lines.append(f"""
[[gateways]]
node_id = "gw{g + 1}"
host = "127.0.0.1"
port = 0
comp_id = "{EXCHANGE}"
store_dir = "{tmp / ('gateway' if gateways == 1 else f'gateway{g + 1}')}"
store_fsync = "never"
""")
        for k, s in enumerate(sessions):
            if k % gateways != g:
                continue
            lines.append(f"""
[[gateways.sessions]]
comp_id = "{s}"
firm = "FIRM{k % 8 + 1}"
throttle_per_s = 1000000000
max_order_qty = 1000000
max_notional = "100000000000"
price_collar_pct = "10"
cancel_on_disconnect = false
""")
    path = tmp / "bench.toml"
    path.write_text("".join(lines))
    return path


# --------------------------------------------------------------------------- processes


class Child:
    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, cwd=ROOT)
        self.ready: dict = {}

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(b"READY "):
                self.ready = json.loads(line[6:])
                return self.ready
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise SystemExit(f"{self.name} did not start; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def cpu_seconds(pid: int) -> float:
    """CPU time of a process so far, all its threads, in nanosecond-exact scheduler run time
    (/proc/PID/task/*/schedstat). The user + system times of /proc/PID/stat are sampled at
    the timer tick (4 ms here) and charge a whole tick to whoever runs at it: at low rates a
    process that wakes briefly for every order is billed several times what it uses.
    Falls back to those times where schedstat is missing; 0 off Linux."""
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
        if total:
            return total / 1e9
    except OSError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def client_cpu() -> float:
    """CPU seconds of this process and of its finished children (the forked sender)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cpu_use(children: list, t0: dict, wall: float) -> str:
    parts = [f"{c.name} {(cpu_seconds(c.proc.pid) - t0[c.name]) / wall:.0%}" for c in children]
    me = (client_cpu() - t0["client"]) / wall
    return ", ".join(parts + [f"load client {me:.0%}"]) + " of one CPU"


class CpuWindow:
    """CPU use of the stack's processes and of the load client over the measured part of a
    workload only: from ``start()`` (the orders are encoded, the sessions logged on) to
    ``stop()`` (the last answer read), not the set-up or the logout around it."""

    def __init__(self, children: list) -> None:
        self.children = children
        self.c0: dict | None = None
        self.w0 = 0.0
        self.text = ""

    def start(self) -> None:
        self.c0 = {c.name: cpu_seconds(c.proc.pid) for c in self.children}
        self.c0["client"] = client_cpu()
        self.w0 = time.perf_counter()

    def stop(self) -> None:
        if self.c0 is not None:
            self.text = cpu_use(self.children, self.c0, time.perf_counter() - self.w0)


def endpoint(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def start_bourse(tmp: Path, sessions: list[str], fsync: str, profile: str | None = None,
                 gateways: int = 1) -> tuple[list[Child], dict[str, int]]:
    """Engine and gateway processes; returns them and each session's FIX port."""
    cfg = bench_config(tmp, sessions, fsync, gateways)
    engine = Child("engine", ["-m", "bourse", "engine", "--config", str(cfg)], tmp / "engine.log")
    oe = engine.wait_ready()["order_entry"]
    children = [engine]
    ports: dict[str, int] = {}
    try:
        for g in range(gateways):
            name = "gateway" if gateways == 1 else f"gateway {g + 1}"
            prof = ["-m", "cProfile", "-o", f"{profile}.{tmp.name}.{g + 1}"] if profile else []
            gw = Child(name, [*prof, "-m", "bourse", "gateway", "--config", str(cfg),
                              "--node", f"gw{g + 1}", "--engine", oe], tmp / f"gateway{g + 1}.log")
            children.insert(g, gw)
            port = endpoint(gw.wait_ready()["fix"])[1]
            ports.update({s: port for k, s in enumerate(sessions) if k % gateways == g})
    except SystemExit:
        for c in children:
            c.stop()
        raise
    return children, ports


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_quickfix(tmp: Path, sessions: list[str]) -> tuple[list[Child], int]:
    port = free_port()
    child = Child("quickfix acceptor", ["-m", "bench.fix_gateway", "--quickfix-acceptor",
                                        str(tmp / "quickfix"), str(port), ",".join(sessions)],
                  tmp / "quickfix.log")
    child.wait_ready()
    return [child], {s: port for s in sessions}


# --------------------------------------------------------------------------- the load client


def utc_stamp() -> bytes:
    t = time.time()
    return (time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"
            ).encode()


def encode(msg_type: bytes, sender: bytes, seq: int, body: bytes, stamp: bytes) -> bytes:
    b = (b"35=" + msg_type + b"\x0149=" + sender + b"\x0156=" + EXCHANGE.encode() + b"\x0134="
         + str(seq).encode() + b"\x0152=" + stamp + b"\x01" + body)
    m = b"8=FIX.4.4\x019=" + str(len(b)).encode() + b"\x01" + b
    return m + b"10=%03d\x01" % (sum(m) % 256)


def new_orders(sender: str, account: str, first_seq: int, n: int, tag: str) -> list[bytes]:
    """``n`` pre-encoded NewOrderSingle with MsgSeqNum from ``first_seq``; ClOrdID ``<tag><i>``."""
    s, st, acct = sender.encode(), utc_stamp(), account.encode()
    out = []
    for i in range(n):
        if i & 1:
            side, px = b"2", 2800100 + (i * 7919 % 999) * 100       # 280.01 .. 289.99
        else:
            side, px = b"1", 2700000 + (i * 7919 % 1000) * 100      # 270.00 .. 279.99
        price = b"%d.%02d" % (px // 10000, px // 100 % 100)
        body = (b"11=" + tag.encode() + str(i).encode() + b"\x011=" + acct + b"\x0155=SBER\x0154="
                + side + b"\x0160=" + st + b"\x0138=10\x0140=2\x0144=" + price + b"\x0159=0\x01")
        out.append(encode(b"D", s, first_seq + i, body, st))
    return out


class FixConn(asyncio.Protocol):
    """One session of the throughput run: Logon, then counts ExecutionReports."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.scan = ReportScan()
        self.logged_on = asyncio.Event()
        self.closed = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.progress = asyncio.Event()

    @property
    def news(self) -> int:
        return self.scan.news

    @property
    def rejects(self) -> int:
        return self.scan.rejects

    @property
    def others(self) -> list[bytes]:
        return self.scan.others

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        self.closed.set()
        self.progress.set()

    def data_received(self, data: bytes) -> None:
        self.scan.feed(data, 0)
        if self.scan.logged_on and not self.logged_on.is_set():
            self.logged_on.set()
        self.progress.set()

    def write(self, data: bytes) -> None:
        self.transport.write(data)


async def logon(port: int, sender: str) -> FixConn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: FixConn(sender), "127.0.0.1", port)
    conn.write(encode(b"A", sender.encode(), 1, b"98=0\x01108=30\x01", utc_stamp()))
    await asyncio.wait_for(conn.logged_on.wait(), 15)
    return conn


async def logout(conns: list[FixConn], seqs: list[int]) -> None:
    for c, seq in zip(conns, seqs):
        if not c.closed.is_set():
            c.write(encode(b"5", c.sender.encode(), seq, b"", utc_stamp()))
    await asyncio.sleep(0.2)
    for c in conns:
        c.transport.close()


async def throughput(ports: dict[str, int], sessions: list[str], orders: int, window: int,
                     cpu: CpuWindow) -> dict:
    per = orders // len(sessions)
    msgs = {s: new_orders(s, f"A{k % 8 + 1}", 2, per, "T") for k, s in enumerate(sessions)}
    conns = [await logon(ports[s], s) for s in sessions]
    chunk = max(1, window // 4)

    async def pump(c: FixConn, m: list[bytes]) -> None:
        sent = 0
        while c.news + c.rejects < per and not c.closed.is_set():
            if sent < per and sent - (c.news + c.rejects) <= window - chunk:
                k = min(chunk, per - sent)
                c.write(b"".join(m[sent:sent + k]))
                sent += k
                continue
            c.progress.clear()
            try:
                await asyncio.wait_for(c.progress.wait(), 10)
            except asyncio.TimeoutError:
                break

    cpu.start()
    t0 = time.perf_counter()
    await asyncio.gather(*(pump(c, msgs[s]) for c, s in zip(conns, sessions)))
    elapsed = time.perf_counter() - t0
    cpu.stop()
    done = sum(c.news for c in conns)
    await logout(conns, [per + 2] * len(conns))
    return {"orders": per * len(sessions), "news": done, "seconds": elapsed,
            "rate": done / elapsed, "rejects": sum(c.rejects for c in conns),
            "problems": [p for c in conns for p in c.others]}


def _sender_process(sock: socket.socket, msgs: list[bytes], stamps, rate: float,
                    tick_ms: float) -> int:
    """(forked child) Write each order at its due time; its send time goes to ``stamps[i]``;
    ``stamps[n]`` / ``stamps[n + 1]`` receive the count sent and the nanoseconds taken."""
    n = len(msgs)

    def emit(lo: int, hi: int) -> None:
        data = b"".join(msgs[lo:hi])
        stamp = time.perf_counter_ns()
        for i in range(lo, hi):
            stamps[i] = stamp
        sock.sendall(data)

    try:
        if tick_ms <= 0:
            sent, seconds = pace(n, rate, emit)
        else:                               # the due orders in one write every tick
            t0 = time.perf_counter_ns()
            sent = 0
            while sent < n:
                due = min(n, int((time.perf_counter_ns() - t0) * rate / 1e9) + 1)
                if due > sent:
                    emit(sent, due)
                    sent = due
                time.sleep(tick_ms / 1000)
            seconds = (time.perf_counter_ns() - t0) / 1e9
    except OSError:
        return 1
    stamps[n], stamps[n + 1] = sent, int(seconds * 1e9)
    return 0


def latency(port: int, sender: str, account: str, rate: float, duration: float,
            cpu: CpuWindow, tick_ms: float = 0.0) -> dict:
    """One session offering ``rate`` orders/s. The load client is two processes sharing the
    connection: a forked sender paces the orders (bench.pacing) and stamps each one as it is
    written, and this process does nothing but block in recv() and stamp each ExecutionReport
    as it is read. No event loop and no second thread: the client adds no lock hand-offs or
    callbacks of its own between the exchange's answer and its time stamp."""
    n = int(rate * duration)
    msgs = new_orders(sender, account, 2, n, "L")
    stamps_mem = mmap.mmap(-1, 8 * (n + 2))         # shared with the forked sender
    stamps = memoryview(stamps_mem).cast("q")
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode(b"A", sender.encode(), 1, b"98=0\x01108=30\x01", utc_stamp()))
    scan = ReportScan(stamps, b"L")
    while not scan.logged_on:
        data = sock.recv(1 << 16)
        if not data:
            raise SystemExit("the acceptor closed the connection at logon")
        scan.feed(data, time.perf_counter_ns())
    # The client's own collector pauses would count as exchange latency: none while measuring.
    gc.collect()
    gc.freeze()
    gc.disable()
    cpu.start()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _sender_process(sock, msgs, stamps, rate, tick_ms)
        finally:
            os._exit(code)
    sock.settimeout(1.0)
    deadline = time.monotonic() + duration + 30
    try:
        while scan.news + scan.rejects < n and time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 16)
            except socket.timeout:
                if os.waitpid(pid, os.WNOHANG)[0] and stamps[n] == 0:
                    break                   # the sender failed: nothing more will come
                continue
            if not data:
                break
            scan.feed(data, time.perf_counter_ns())
    finally:
        _, status = os.waitpid(pid, 0) if os.waitpid(pid, os.WNOHANG)[0] == 0 else (pid, 0)
        cpu.stop()                          # (the reaped sender's CPU time included)
        gc.enable()
        gc.unfreeze()
    sent, offered_ns = stamps[n], stamps[n + 1]
    try:
        sock.sendall(encode(b"5", sender.encode(), n + 2, b"", utc_stamp()))
        time.sleep(0.2)
    except OSError:
        pass
    sock.close()
    lat = scan.latencies
    stamps.release()
    stamps_mem.close()
    return {"orders": n, "news": scan.news, "offered_rate": sent / max(offered_ns / 1e9, 1e-9),
            "lat": lat, "sent_at": scan.sent_at, "rejects": scan.rejects,
            "problems": scan.others}


def episodes(sent_at: list[int], lat: list[int], slow_ns: int, gap_ns: int = 3_000_000
             ) -> list[tuple[int, int, int]]:
    """Runs of orders slower than ``slow_ns`` sent within ``gap_ns`` of each other:
    (start, relative to the first order sent; orders; worst latency), in ns."""
    slow = sorted((t, x) for t, x in zip(sent_at, lat) if x > slow_ns)
    t0 = min(sent_at) if sent_at else 0
    out: list[list[int]] = []
    last = None
    for t, x in slow:
        if last is not None and t - last < gap_ns:
            out[-1][1] += 1
            out[-1][2] = max(out[-1][2], x)
        else:
            out.append([t - t0, 1, x])
        last = t
    return [tuple(e) for e in out]


class ReportScan:
    """Counts ExecutionReports in a stream of FIX bytes; with ``stamps``, the latency of each
    ExecutionReport whose ClOrdID is ``<tag><i>``: receive time minus ``stamps[i]``."""

    def __init__(self, stamps=None, tag: bytes = b"") -> None:
        self.buf = b""
        self.news = 0
        self.rejects = 0
        self.logged_on = False
        self.others: list[bytes] = []
        self.stamps = stamps
        self.tag = b"\x0111=" + tag
        self.latencies: list[int] = []
        self.sent_at: list[int] = []        # the send time of each latency sample

    def feed(self, data: bytes, now: int) -> None:
        buf = self.buf + data
        end = buf.rfind(b"\x0110=", 0, len(buf) - 4)   # a complete trailer: 8 bytes
        if end < 0:
            self.buf = buf
            return
        cut = end + 8
        done, self.buf = buf[:cut], buf[cut:]
        n = done.count(b"\x01150=0\x01")
        self.news += n
        if self.stamps is not None and n:
            ts, tag, lat, sent_at = self.stamps, self.tag, self.latencies, self.sent_at
            pos = done.find(tag)
            while pos >= 0:
                e = done.index(b"\x01", pos + 1)
                t = ts[int(done[pos + len(tag):e])]
                lat.append(now - t)
                sent_at.append(t)
                pos = done.find(tag, e)
        if b"\x01150=8\x01" in done:
            self.rejects += done.count(b"\x01150=8\x01")
        if not self.logged_on and b"\x0135=A\x01" in done:
            self.logged_on = True
        for t in (b"\x0135=3\x01", b"\x0135=j\x01"):
            if t in done and len(self.others) < 5:
                i = done.index(t)
                self.others.append(done[max(0, i - 60):i + 200])


# --------------------------------------------------------------------------- the reference


def run_quickfix_acceptor(work: str, port: int, sessions: list[str]) -> int:
    """A reference acceptor on QuickFIX: answers each NewOrderSingle with ExecutionReport New."""
    import quickfix as fix

    work_dir = Path(work)
    (work_dir / "store").mkdir(parents=True, exist_ok=True)
    text = (f"[DEFAULT]\nConnectionType=acceptor\nBeginString=FIX.4.4\nSenderCompID={EXCHANGE}\n"
            f"SocketAcceptHost=127.0.0.1\nSocketAcceptPort={port}\nStartTime=00:00:00\n"
            f"EndTime=00:00:00\nFileStorePath={work_dir / 'store'}\nUseDataDictionary=Y\n"
            f"DataDictionary={DICTIONARY}\nValidateUserDefinedFields=N\nSocketNodelay=Y\n"
            f"PersistMessages=Y\n")
    for s in sessions:
        text += f"\n[SESSION]\nTargetCompID={s}\n"
    (work_dir / "acceptor.cfg").write_text(text)

    class Reference(fix.Application):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def onCreate(self, sid): pass
        def onLogon(self, sid): pass
        def onLogout(self, sid): pass
        def toAdmin(self, msg, sid): pass
        def fromAdmin(self, msg, sid): pass
        def toApp(self, msg, sid): pass

        def fromApp(self, msg, sid):
            if msg.getHeader().getField(35) != "D":
                return
            self.n += 1
            qty = msg.getField(38)
            er = fix.Message()
            h = er.getHeader()
            h.setField(fix.BeginString("FIX.4.4"))
            h.setField(fix.MsgType("8"))
            for tag, value in ((37, str(self.n)), (11, msg.getField(11)), (17, f"E{self.n}"),
                               (150, "0"), (39, "0"), (1, msg.getField(1)),
                               (55, msg.getField(55)), (54, msg.getField(54)), (38, qty),
                               (40, msg.getField(40)), (44, msg.getField(44)), (151, qty),
                               (14, "0"), (6, "0"), (60, msg.getField(60))):
                er.setField(fix.StringField(tag, value))
            fix.Session.sendToTarget(er, sid)

    settings = fix.SessionSettings(str(work_dir / "acceptor.cfg"))
    app = Reference()
    acceptor = fix.SocketAcceptor(app, fix.FileStoreFactory(settings), settings,
                                  fix.ScreenLogFactory(False, False, False))
    acceptor.start()
    print("READY " + json.dumps({"fix": f"127.0.0.1:{port}"}), flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        while not stop:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    acceptor.stop()
    return 0


# --------------------------------------------------------------------------- main


def run_target(name: str, start, tmp: Path, args) -> dict:
    """Both workloads against one target, each on a freshly started stack (empty book, new
    stores), so that the latency run does not inherit the throughput run's resting orders."""
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    sessions = session_ids(args.sessions)

    def measured(sub: str, workload) -> dict:
        d = tmp / sub
        d.mkdir(parents=True, exist_ok=True)
        children, ports = start(d, sessions)
        try:
            cpu = CpuWindow(children)
            r = workload(ports, cpu)
            if asyncio.iscoroutine(r):
                r = run(r)
            r["cpu"] = cpu.text
        finally:
            for c in children:
                c.stop()
        return r

    t = measured("throughput", lambda ports, cpu: throughput(ports, sessions, args.orders,
                                                             args.window, cpu))
    lat = measured("latency", lambda ports, cpu: latency(ports[sessions[0]], sessions[0], "A1",
                                                         args.rate, args.duration, cpu,
                                                         args.tick_ms))
    print(f"\n{name}")
    print(f"  (a) throughput: {t['news']:,} of {t['orders']:,} NewOrderSingle -> "
          f"ExecutionReport(New) in {t['seconds']:.2f} s = {t['rate']:,.0f} orders/s "
          f"({args.sessions} sessions, window {args.window} per session; rejects "
          f"{t['rejects']})")
    print(f"      CPU: {t['cpu']}")
    p = percentiles(lat["lat"], (50, 90, 99, 99.9, 100))
    pacing = (f"in bursts every {args.tick_ms:g} ms" if args.tick_ms > 0 else
              "paced order by order")
    print(f"  (b) latency at {args.rate:,.0f} orders/s offered {pacing} "
          f"({lat['offered_rate']:,.0f} achieved) for {args.duration:g} s: {lat['news']:,} of "
          f"{lat['orders']:,} answered; rejects {lat['rejects']}")
    print("      order sent -> ExecutionReport(New) received, us: " + "  ".join(
        f"p{k:g}={v / 1000:,.0f}" if k != 100 else f"max={v / 1000:,.0f}" for k, v in p.items()))
    print(f"      CPU: {lat['cpu']}")
    if args.episodes:
        eps = episodes(lat["sent_at"], lat["lat"], int(args.episodes * 1e6))
        print(f"      orders slower than {args.episodes:g} ms: {len(eps)} episodes "
              "(start s: orders, worst ms): " + ", ".join(
                  f"{s / 1e9:.2f}: {k}, {w / 1e6:.1f}" for s, k, w in eps))
    for prob in (t["problems"] + lat["problems"])[:3]:
        print("      unexpected:", prob.replace(b"\x01", b"|")[:200].decode(errors="replace"))
    return {"rate": t["rate"], "p": p}


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--quickfix-acceptor"]:
        return run_quickfix_acceptor(argv[1], int(argv[2]), argv[3].split(","))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=200_000, help="throughput run: orders in all")
    ap.add_argument("--sessions", type=int, default=4, help="throughput run: FIX sessions")
    ap.add_argument("--window", type=int, default=2000, help="orders in flight per session")
    ap.add_argument("--rate", type=float, default=10_000, help="latency run: orders/s offered")
    ap.add_argument("--duration", type=float, default=10.0, help="latency run: seconds")
    ap.add_argument("--tick-ms", type=float, default=0.0,
                    help="latency run: send the due orders in one write every TICK ms "
                         "(default 0: a sender thread paces them order by order)")
    ap.add_argument("--fsync", default="batch", choices=("batch", "interval", "never"),
                    help="engine journal fsync policy (default: every batch)")
    ap.add_argument("--no-quickfix", action="store_true", help="skip the QuickFIX reference")
    ap.add_argument("--gateways", type=int, default=1, metavar="N",
                    help="Bourse: deal the sessions over N gateway processes, as an exchange "
                         "assigns member sessions to access servers (default 1; the QuickFIX "
                         "reference stays one process)")
    ap.add_argument("--episodes", type=float, metavar="MS", default=0.0,
                    help="latency run: list the episodes of orders slower than MS ms")
    ap.add_argument("--profile-gateway", metavar="FILE",
                    help="run the gateway under cProfile, writing FILE.<run> (numbers then "
                         "include the profiler's cost)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bourse-fixbench-"))
    print(f"FIX gateway benchmark: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load client, engine and gateway on this machine; engine fsync={args.fsync}, "
          f"gateway store on; temp dir {tmp}")
    print("load average at start (other processes share these CPUs): "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    try:
        gws = "gateway" if args.gateways == 1 else f"{args.gateways} gateways"
        ours = run_target(f"Bourse {gws} + engine (journal fsync per batch)"
                          if args.fsync == "batch" else f"Bourse {gws} (fsync={args.fsync})",
                          lambda d, s: start_bourse(d, s, args.fsync, args.profile_gateway,
                                                       args.gateways), tmp / "bourse", args)
        print(f"  target (for information): >= 50,000 orders/s end to end -> measured "
              f"{ours['rate']:,.0f}; p99 <= 1 ms at 10,000 orders/s -> measured p99 "
              f"{ours['p'][99] / 1e6:,.1f} ms at {args.rate:,.0f} orders/s")
        if not args.no_quickfix:
            ref = run_target("Reference: QuickFIX acceptor (C++ engine, Python application, "
                             "FileStore, same dictionary)",
                             start_quickfix, tmp / "quickfix-ref", args)
            print("\nBourse / QuickFIX reference:")
            print(f"  throughput ratio {ours['rate'] / ref['rate']:.2f}x")
            print("  latency ratio    " + "  ".join(
                f"p{k:g} {ours['p'][k] / max(1, ref['p'][k]):.2f}x" if k != 100 else
                f"max {ours['p'][k] / max(1, ref['p'][k]):.2f}x" for k in ours["p"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
