"""The engine process: journal recovery, the sequencing loop and the two TCP listeners.

This module is the thin I/O shell around the pure parts (``engine.core``, ``engine.sequencer``,
``engine.link``, ``engine.journal``). Its guarantees:

- Start-up: the journal is recovered (a torn tail is cut off), checked against this node's
  release and configuration digest, and replayed; every replayed batch must reproduce the
  recorded events byte for byte, otherwise the engine refuses to start. With snapshots on
  (``snapshot_every_commands`` > 0) the newest valid snapshot (engine.snapshot) is loaded first
  and only the records after it are replayed; the records it covers are indexed for history
  without being replayed. A snapshot that cannot be used is ignored with a warning naming the
  reason (then the next older one, then a full replay).
- Snapshots are taken at a batch boundary whose records are all durable: every
  ``snapshot_every_commands`` commands and at a clean stop. A periodic snapshot is made by a
  forked child from its copy-on-write image of the engine (export, digest, encode, write), so
  matching pauses only for the fork; the clean stop's is made in the loop. The newest two are
  kept.
- Group commit: submissions that arrive while a batch is being processed form the next batch.
  A batch's record is appended and committed (fsync per policy) before any of its events or acks
  leave the process, so nothing acknowledged can be lost by a crash. With fsync per batch the
  loop syncs each batch itself, or (``sync_threads`` >= 1) sync threads do (engine.syncer):
  the loop then keeps reading while the disk works, gathers what arrives into the next batch
  (a full batch is matched at once) and releases each batch, in order, once it is durable.
- Consumers get history from the journal and then live events with no gap and no duplicate.
  A consumer whose unsent backlog would exceed ``consumer_buffer_bytes`` is disconnected with a
  reason; the engine never waits for it.
- Nodes announcing another release or configuration digest are refused and an alert is raised
  (logged and sequenced as an ``Alert`` event, so every consumer sees it).
- The clock is read here, once per batch, and recorded in the journal with the batch.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from typing import Callable

import msgspec

from bourse import RELEASE
from bourse.config import BourseConfig
from engine import journal as jr
from engine import snapshot as snap
from engine.commands import OPERATOR_COMMANDS, RaiseAlert
from engine.core import Engine
from engine.history import HistoryIndex
from engine.link import (
    HEADER, TO_ENGINE_DECODER, Ack, Disconnect, EventsOut, FrameBuffer, FrameError, Heartbeat,
    Hello, Nack, Ping, Refused, Submit, Welcome,
)
from engine.record import EVENTS_DECODER, RECORD_VIEW_DECODER
from engine.sequencer import ReplayDivergence, Sequencer, Submission, replay
from engine.syncer import BackgroundSync

log = logging.getLogger("bourse.engine")

JOURNAL_FILE = "engine.journal"
ENGINE_NODE = "engine"
MAX_UNSYNCED_BATCHES = 256      # batches matched ahead of the disk before matching waits
JOURNAL_FORMAT = 1


class StartupError(Exception):
    """The engine cannot start; the message says why and what to do."""


class EngineServer:
    def __init__(self, config: BourseConfig, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.cfg = config
        self.ecfg = config.engine
        self.clock = clock
        self.engine = Engine(config.market)
        self.sequencer = Sequencer(self.engine)
        self._enc = msgspec.msgpack.Encoder()
        self._pending: list[Submission] = []
        self._pending_cmds = 0
        self._scheduled = False
        self._paused_reading = False
        self._last_ts = 0
        self._sequenced_req: dict[str, int] = {}
        self._order_entry_nodes: dict[str, _Conn] = {}
        self._subscribers: list[_Conn] = []     # live, in connection order
        self._conns: set[_Conn] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._heartbeat_task: asyncio.Task | None = None
        self._sync_handle: asyncio.TimerHandle | None = None
        self.journal: jr.JournalWriter | None = None
        self.reader: jr.JournalReader | None = None
        self.history: HistoryIndex | None = None
        self.released_offset = 0
        self.released_next_event = 1          # first event seq not yet sent to consumers
        self._syncer: BackgroundSync | None = None
        self._unsynced: collections.deque = collections.deque()   # (end offset, batch)
        self.order_entry_port = 0
        self.replication_port = 0
        self.alerts: list[str] = []
        self.failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None   # set by start()
        self.snapshot_loaded: str | None = None   # the snapshot recover() started from
        self.replayed_records = 0                 # journal records recover() replayed
        self._snap_every = self.ecfg.snapshot_every_commands
        self._snap_due = 1 << 62                  # next_cmd_seq at which a snapshot is due
        self._snap_writer: snap.Writer | None = None
        self._snap_loaded_cmd = 0                 # next_cmd_seq of the loaded snapshot

    # ------------------------------------------------------------------ start-up

    def recover(self) -> None:
        """Recover and replay the journal; open it for appending."""
        os.makedirs(self.ecfg.journal_dir, exist_ok=True)
        path = os.path.join(self.ecfg.journal_dir, JOURNAL_FILE)
        header = jr.JournalHeader(format_version=JOURNAL_FORMAT, release=RELEASE,
                                  config_digest=self.cfg.digest, created_ns=self.clock())
        if os.path.exists(path) and os.path.getsize(path) > 0:
            try:
                result = jr.recover(path)
            except jr.JournalError as exc:
                raise StartupError(f"journal {path} is unreadable: {exc}") from None
            old = result.header
            if old.config_digest != self.cfg.digest:
                raise StartupError(
                    f"journal {path} was written with configuration digest {old.config_digest[:16]}, "
                    f"but {self.cfg.source} has digest {self.cfg.digest[:16]}: start with the "
                    "configuration the journal was written with, or archive the journal to start "
                    "a new session")
            if old.release != RELEASE:
                raise StartupError(
                    f"journal {path} was written by release {old.release}, this is release "
                    f"{RELEASE}: replay it with the release that wrote it, or archive it")
            if result.truncated_bytes and not result.zero_tail:
                log.warning("journal %s: cut off a torn tail of %d bytes after %d valid records",
                            path, result.truncated_bytes, result.records_valid)
            loaded = self._load_snapshot(path, result) if self._snap_every else None
            if loaded is not None:
                try:
                    self._replay(path, loaded, result.data_offset)
                except StartupError as exc:
                    # the journal after the snapshot does not replay: try without it, so that
                    # a bad snapshot can never stop the engine (a bad journal still does)
                    log.warning("snapshot %s ignored: the records after it do not replay (%s)",
                                loaded.path, exc)
                    loaded = None
            if loaded is None:
                self._replay(path, None, result.data_offset)
            if loaded is not None:
                self.snapshot_loaded = loaded.path
                self._snap_loaded_cmd = loaded.header.next_cmd_seq
                log.info("journal %s: restored snapshot %s (commands up to %d, %d records "
                         "indexed without replay), replayed %d of %d records, next command "
                         "%d, next event %d", path, os.path.basename(loaded.path),
                         loaded.header.next_cmd_seq - 1, loaded.records,
                         self.replayed_records, result.records_valid,
                         self.engine.next_cmd_seq, self.engine.next_event_seq)
            else:
                log.info("journal %s: replayed %d records, next command %d, next event %d",
                         path, self.replayed_records, self.engine.next_cmd_seq,
                         self.engine.next_event_seq)
        elif self._snap_every and snap.list_snapshots(self.ecfg.journal_dir):
            log.warning("snapshot files in %s but no journal: ignored (they are removed when "
                        "the first new snapshot is written)", self.ecfg.journal_dir)
        self.journal = jr.JournalWriter.open(path, header, fsync=self.ecfg.fsync,
                                             fsync_interval_ms=self.ecfg.fsync_interval_ms)
        if self.history is None:
            self.history = HistoryIndex(self.journal.offset)
        self.released_offset = self.journal.offset
        self.released_next_event = self.engine.next_event_seq
        self.reader = jr.JournalReader(path)
        self._sequenced_req = dict(self.engine.last_req)
        if self._snap_every:
            kept = [self.snapshot_loaded] if self.snapshot_loaded else []
            self._snap_writer = snap.Writer(self.ecfg.journal_dir, kept, self._snap_loaded_cmd)
            # the last snapshot (or the journal's start) plus the period: right after the first
            # batch when a long journal was replayed without one
            self._snap_due = max(self._snap_loaded_cmd, 1) + self._snap_every

    def _load_snapshot(self, path: str, result: jr.RecoveryResult) -> "snap.Loaded | None":
        """The newest snapshot that is valid for this journal, restored; None if none is."""
        for candidate in snap.list_snapshots(self.ecfg.journal_dir):
            try:
                return snap.load(candidate, self.cfg.market, release=RELEASE,
                                 config_digest=self.cfg.digest, journal_path=path,
                                 journal_header=result.header, data_offset=result.data_offset,
                                 end_offset=result.end_offset)
            except snap.SnapshotInvalid as exc:
                log.warning("snapshot %s ignored: %s", candidate, exc)
            except Exception as exc:   # a snapshot only saves time: any failure -> replay
                log.warning("snapshot %s ignored: %s: %s", candidate, type(exc).__name__, exc)
        return None

    def _replay(self, path: str, loaded: "snap.Loaded | None", data_offset: int) -> None:
        """Replay the journal from the start, or after a loaded snapshot, into a fresh engine."""
        if loaded is None:
            self.engine = Engine(self.cfg.market)
            self.history = HistoryIndex(data_offset)
            self._last_ts = 0
            start = None
        else:
            self.engine = loaded.engine
            self.history = loaded.history
            self._last_ts = loaded.header.last_ts
            start = loaded.header.journal_offset
        self.sequencer = Sequencer(self.engine)
        engine = self.engine
        history = self.history
        enc = self._enc
        replayed = 0
        for offset, payload in jr.iter_records(path, start_offset=start):
            try:
                rec = replay(engine, payload, enc)
            except ReplayDivergence as exc:
                raise StartupError(f"journal {path}: {exc}") from None
            history.add(rec.first_event_seq, offset)
            if rec.cmds:
                self._last_ts = max(self._last_ts, rec.cmds[-1].ts)
            replayed += 1
        self.replayed_records = replayed

    async def start(self) -> None:
        if self.journal is None:
            self.recover()
        # asyncio.get_running_loop() costs a getpid() system call on Python 3.11: the hot
        # paths use this reference instead
        loop = self._loop = asyncio.get_running_loop()
        host = self.ecfg.host
        try:
            oe = await loop.create_server(lambda: _Conn(self, "order_entry"), host,
                                          self.ecfg.order_entry_port)
            rp = await loop.create_server(lambda: _Conn(self, "replication"), host,
                                          self.ecfg.replication_port)
        except OSError as exc:
            for s in self._servers:
                s.close()
            raise StartupError(f"cannot listen on {host}: {exc.strerror or exc}") from None
        self._servers = [oe, rp]
        self.order_entry_port = oe.sockets[0].getsockname()[1]
        self.replication_port = rp.sockets[0].getsockname()[1]
        self._heartbeat_task = asyncio.ensure_future(self._heartbeats())
        if self.ecfg.fsync == "interval":
            self._arm_sync_timer()
        elif self.ecfg.fsync == "batch":
            self.journal.preallocate(self.ecfg.preallocate_mb << 20)
            if self.ecfg.sync_threads:
                def durable(offset, exc, call=loop.call_soon_threadsafe) -> None:
                    try:
                        call(self._durable, offset, exc)
                    except RuntimeError:     # the loop is closed: the process is stopping
                        pass
                self._syncer = BackgroundSync(self.journal, durable,
                                              threads=self.ecfg.sync_threads)

    async def close(self) -> None:
        for s in self._servers:
            s.close()
        if self._heartbeat_task:
            self._heartbeat_task.cancel()
        if self._sync_handle:
            self._sync_handle.cancel()
        if self._pending and self.failed is None:
            self._run_batch()
        if self._syncer is not None:
            self._syncer.close()           # a last sync of what was written
            self._syncer = None
            if self.failed is None:
                self._durable(self.journal.synced_offset, None)
        for c in list(self._conns):
            c.transport.close()
        closed = False
        if self.journal is not None:
            try:
                self.journal.close()     # writes what is buffered and syncs
                closed = True
            except OSError as exc:
                log.critical("ALERT CRITICAL: journal close failed: %s", exc)
        writer = self._snap_writer
        if writer is not None:
            writer.join()
            if (closed and self.failed is None and not self._unsynced
                    and self.engine.next_cmd_seq > 1
                    and writer.last_cmd != self.engine.next_cmd_seq):
                # a clean stop: the whole journal is durable (fsync "never": written)
                cap = self._capture()
                if cap is not None:
                    writer.write(cap)
        if self.reader is not None:
            self.reader.close()

    # ------------------------------------------------------------------ sequencing

    def submit(self, sub: Submission) -> None:
        self._pending.append(sub)
        self._pending_cmds += len(sub.cmds)
        if not self._scheduled:
            self._scheduled = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._run_batch)
        if self._pending_cmds > 32 * self.ecfg.max_batch_commands and not self._paused_reading:
            self._paused_reading = True
            for c in self._order_entry_nodes.values():
                c.transport.pause_reading()

    def raise_alert(self, severity: str, text: str) -> None:
        self.alerts.append(text)
        log.error("ALERT %s: %s", severity.upper(), text)
        if self.failed is None and self.journal is not None:
            self.submit(Submission(ENGINE_NODE, 0, [RaiseAlert("engine", severity, text)], None))

    def _take_batch(self) -> list[Submission]:
        limit = self.ecfg.max_batch_commands
        pending = self._pending
        n = 0
        i = 0
        while i < len(pending) and (i == 0 or n + len(pending[i].cmds) <= limit):
            n += len(pending[i].cmds)
            i += 1
        batch = pending[:i]
        del pending[:i]
        self._pending_cmds -= n
        return batch

    def _run_batch(self) -> None:
        self._scheduled = False
        if self.failed is not None or not self._pending:
            return
        if self._unsynced and len(self._unsynced) >= self.ecfg.sync_threads and (
                self._pending_cmds < self.ecfg.max_batch_commands
                or len(self._unsynced) >= MAX_UNSYNCED_BATCHES):
            # Every sync thread is busy: whatever is sequenced now would wait for one of them
            # anyway, so let submissions gather and run them as one batch when a sync ends
            # (_durable), unless a full batch is already waiting. Fewer, larger batches cost
            # less per command; reading pauses if input keeps growing.
            return
        subs = self._take_batch()
        ts = self.clock()
        if ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        batch = self.sequencer.run(subs, ts)
        journal = self.journal
        syncer = self._syncer
        try:
            offset = journal.append(batch.record)
            journal.commit(ts, defer_sync=syncer is not None)
        except OSError as exc:
            self._fail_stop(exc)
            return
        self.history.add(batch.first_event_seq, offset)
        if syncer is None:
            self.released_offset = journal.offset
            self._release(batch)
            if self.engine.next_cmd_seq >= self._snap_due:
                self._periodic_snapshot()
        else:
            # Released by _durable once the sync thread reports it on disk; the loop goes
            # on matching the next batch meanwhile.
            self._unsynced.append((journal.offset, batch))
            syncer.request()
        if self._pending and not self._scheduled:
            self._scheduled = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._run_batch)
        if self._paused_reading and self._pending_cmds < 4 * self.ecfg.max_batch_commands:
            self._paused_reading = False
            for c in self._order_entry_nodes.values():
                c.transport.resume_reading()

    def _fail_stop(self, exc: BaseException) -> None:
        """The engine's state is ahead of the journal: release nothing more. The operator
        restarts and the journal replay restores the last durable state."""
        self.failed = exc
        self._unsynced.clear()
        log.critical("ALERT CRITICAL: journal write failed (%s); the engine stops and "
                     "releases nothing more", exc)
        for c in list(self._conns):
            c.close_with(Disconnect(f"engine stopped: journal write failed: {exc}", c.last_seq))

    def _durable(self, offset: int | None, exc: BaseException | None) -> None:
        """(loop thread) The journal is on disk up to ``offset``: release those batches."""
        if self.failed is not None:
            return
        if exc is not None:
            self._fail_stop(exc)
            return
        unsynced = self._unsynced
        while unsynced and unsynced[0][0] <= offset:
            end, batch = unsynced.popleft()
            self.released_offset = end
            self._release(batch)
        if not unsynced and self.engine.next_cmd_seq >= self._snap_due:
            self._periodic_snapshot()    # every batch run so far is durable
        if self._pending and not self._scheduled:
            self._scheduled = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._run_batch)

    def _release(self, batch) -> None:
        body = self._enc.encode(EventsOut(batch.first_event_seq, batch.event_count,
                                          msgspec.Raw(batch.events)))
        frame = HEADER.pack(len(body)) + body
        last = batch.first_event_seq + batch.event_count - 1
        self.released_next_event = last + 1
        # A node's consecutive submissions in a batch are consecutive request ids and command
        # seqs, so their acks merge into one range per connection.
        enc = self._enc
        acks = batch.acks
        ack_bytes = {}
        i, n = 0, len(acks)
        while i < n:
            token, first_req, count, first_cmd = acks[i]
            i += 1
            while (i < n and acks[i][0] is token and acks[i][1] == first_req + count
                   and acks[i][3] == first_cmd + count):
                count += acks[i][2]
                i += 1
            if token is not None and not token.closed:
                body = enc.encode(Ack(first_req, count, first_cmd))
                ack_bytes[token] = ack_bytes.get(token, b"") + HEADER.pack(len(body)) + body
        # One write per connection: a submitter that also subscribes gets the events and then
        # its acks in the same write, so it wakes once for both.
        limit = self.ecfg.consumer_buffer_bytes
        slow = None
        for c in self._subscribers:
            if c.transport.get_write_buffer_size() + len(frame) > limit:
                if slow is None:
                    slow = []
                slow.append(c)
                ack_bytes.pop(c, None)      # closed below; it learns its acks on reconnecting
                continue
            own = ack_bytes.pop(c, None) if ack_bytes else None
            c.transport.write(frame + own if own else frame)
            c.last_seq = last
            c.sent_at = batch
        for token, data in ack_bytes.items():
            token.transport.write(data)
            token.sent_at = True
        if slow:
            for c in slow:
                c.close_with(Disconnect(
                    f"slow consumer: more than {limit} bytes unsent; reconnect from seq "
                    f"{c.last_seq + 1}", c.last_seq))

    def _periodic_snapshot(self) -> None:
        """(loop, at a batch boundary with nothing unsynced) Start a snapshot in a forked child
        (a thread where there is no fork); if the previous one is still being written, retry
        after the next batch."""
        writer = self._snap_writer
        if self.failed is not None or writer is None or writer.busy:
            return
        journal = self.journal
        if self.ecfg.fsync != "never" and journal.synced_offset < journal.offset:
            try:    # fsync "interval": make the captured state durable first
                journal.sync(self.clock())
            except OSError as exc:
                self._fail_stop(exc)
                return
        self._snap_due = self.engine.next_cmd_seq + self._snap_every
        if hasattr(os, "fork"):
            if writer.fork(self._capture_or_raise, self.engine.next_cmd_seq):
                self._poll_snapshot()
                return
        cap = self._capture()
        if cap is not None:
            writer.submit(cap)

    def _poll_snapshot(self) -> None:
        """Reap the snapshot child once it is done (every 50 ms until then)."""
        writer = self._snap_writer
        if writer is not None and writer.poll():
            asyncio.get_running_loop().call_later(0.05, self._poll_snapshot)

    def _capture_or_raise(self) -> snap.Capture:
        """``_capture`` that raises instead of logging (the snapshot child reports it)."""
        journal = self.journal
        engine = self.engine
        return snap.capture(
            engine, directory=self.ecfg.journal_dir, journal_path=journal.path,
            release=RELEASE, config_digest=self.cfg.digest,
            journal_created_ns=journal.header.created_ns, journal_offset=journal.offset,
            # every record holds at least one event: the last event's record is the last
            last_record_offset=(self.history.locate(engine.next_event_seq - 1)
                                if engine.next_event_seq > 1 else -1),
            last_ts=self._last_ts, now_ns=self.clock())

    def _capture(self) -> snap.Capture | None:
        """Export the state for a snapshot (None, logged, if that fails: a snapshot is only an
        optimisation and must never disturb the engine)."""
        try:
            return self._capture_or_raise()
        except Exception as exc:
            log.error("snapshot at command %d not taken: %s: %s", self.engine.next_cmd_seq,
                      type(exc).__name__, exc)
            return None

    def _arm_sync_timer(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.ecfg.fsync_interval_ms / 1000

        def tick() -> None:
            if self.failed is None:
                try:
                    self.journal.sync_if_due(self.clock())
                except OSError as exc:
                    self.failed = exc
                    log.critical("ALERT CRITICAL: journal sync failed: %s", exc)
                    return
            self._sync_handle = loop.call_later(interval, tick)

        self._sync_handle = loop.call_later(interval, tick)

    async def _heartbeats(self) -> None:
        interval = self.ecfg.heartbeat_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for c in list(self._conns):
                if c.ready and c.sent_at is None:
                    c.send(self._enc.encode(Heartbeat(self.released_next_event)))
                c.sent_at = None

    # ------------------------------------------------------------------ connections

    def hello(self, conn: "_Conn", msg: Hello) -> None:
        who = f"{msg.component} {msg.node_id!r} from {conn.peer}"
        if msg.release != RELEASE:
            reason = (f"release mismatch: {who} runs release {msg.release!r}, the engine runs "
                      f"{RELEASE!r}; every node must run the same release")
            conn.refuse(reason)
            self.raise_alert("critical", f"refused {reason}")
            return
        if msg.config_digest != self.cfg.digest:
            reason = (f"configuration mismatch: {who} loaded configuration digest "
                      f"{msg.config_digest[:16]}, the engine loaded {self.cfg.digest[:16]}; "
                      "every node must load the same instruments and firms")
            conn.refuse(reason)
            self.raise_alert("critical", f"refused {reason}")
            return
        if not msg.node_id or not msg.component:
            conn.refuse("hello must name a component and a node id")
            return
        next_event = self.released_next_event
        start = msg.subscribe_from
        if conn.role == "replication" and start < 1:
            conn.refuse("replication connections must subscribe from a sequence number >= 1")
            return
        if start < 0 or start > next_event:
            conn.refuse(f"cannot subscribe from {start}: the next event is {next_event}")
            return
        if conn.role == "order_entry":
            if msg.node_id == ENGINE_NODE or msg.node_id in self._order_entry_nodes:
                conn.refuse(f"node id {msg.node_id!r} is already connected for order entry")
                return
            self._order_entry_nodes[msg.node_id] = conn
            if self._paused_reading:
                conn.transport.pause_reading()
        conn.node_id = msg.node_id
        conn.component = msg.component
        conn.ready = True
        conn.next_req = self._sequenced_req.get(msg.node_id, 0) + 1
        conn.send(self._enc.encode(Welcome(ENGINE_NODE, RELEASE, self.engine.next_cmd_seq,
                                           next_event, conn.next_req - 1)))
        log.info("%s connected (%s%s)", who, conn.role,
                 f", events from {start}" if start else "")
        if start:
            # Bound the kernel's share of the backlog too, so that "unsent bytes" means what
            # the configuration says and a stalled reader is detected at the configured size.
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                min(self.ecfg.consumer_buffer_bytes, 4 << 20))
            conn.cursor = start
            conn.last_seq = start - 1
            conn.catch_up = asyncio.ensure_future(self._catch_up(conn))

    def on_submit(self, conn: "_Conn", msg: Submit) -> None:
        n = len(msg.cmds)
        if conn.role != "order_entry":
            conn.send(self._enc.encode(Nack(msg.first_req_id, n, "this port is read-only")))
            return
        if self.failed is not None:
            conn.send(self._enc.encode(Nack(msg.first_req_id, n, "engine stopped")))
            return
        if n == 0 or msg.first_req_id != conn.next_req:
            conn.send(self._enc.encode(Nack(
                msg.first_req_id, n,
                f"request ids must continue at {conn.next_req}" if n else "empty submission")))
            return
        if conn.component != "operator":
            for cmd in msg.cmds:
                if isinstance(cmd, OPERATOR_COMMANDS):
                    conn.send(self._enc.encode(Nack(
                        msg.first_req_id, n,
                        f"{type(cmd).__name__} needs an operator connection")))
                    return
        conn.next_req += n
        self._sequenced_req[conn.node_id] = conn.next_req - 1
        self.submit(Submission(conn.node_id, msg.first_req_id, msg.cmds, conn))

    def disconnected(self, conn: "_Conn") -> None:
        self._conns.discard(conn)
        if conn.live:
            self._subscribers.remove(conn)
            conn.live = False
        if conn.catch_up is not None:
            conn.catch_up.cancel()
        if conn.role == "order_entry" and self._order_entry_nodes.get(conn.node_id) is conn:
            del self._order_entry_nodes[conn.node_id]
        if conn.ready:
            log.info("%s %r disconnected", conn.component, conn.node_id)

    async def _catch_up(self, conn: "_Conn") -> None:
        """Send history from the journal until the consumer reaches the live stream."""
        enc = self._enc
        limit = self.ecfg.consumer_buffer_bytes
        pos = self.history.locate(conn.cursor)
        while not conn.closed:
            end = self.released_offset
            if pos >= end:
                conn.live = True
                conn.catch_up = None
                self._subscribers.append(conn)
                return
            records, pos = self.reader.read_from(pos, 1 << 20, end)
            for _offset, payload in records:
                view = RECORD_VIEW_DECODER.decode(payload)
                first, count = view.first_event_seq, view.event_count
                if first + count <= conn.cursor:
                    continue
                if first >= conn.cursor:
                    body = enc.encode(EventsOut(first, count, view.events))
                else:
                    tail = EVENTS_DECODER.decode(view.events)[conn.cursor - first:]
                    body = enc.encode(EventsOut(conn.cursor, len(tail),
                                                msgspec.Raw(enc.encode(tail))))
                conn.transport.write(HEADER.pack(len(body)) + body)
                conn.cursor = first + count
                conn.last_seq = conn.cursor - 1
            if conn.transport.get_write_buffer_size() > limit // 2:
                await conn.drained()
            else:
                await asyncio.sleep(0)


class _Conn(asyncio.Protocol):
    """One TCP connection to the engine (either port)."""

    def __init__(self, server: EngineServer, role: str) -> None:
        self.server = server
        self.role = role
        self.frames = FrameBuffer()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.ready = False
        self.closed = False
        self.live = False
        self.node_id = ""
        self.component = ""
        self.next_req = 1
        self.cursor = 0
        self.last_seq = 0
        self.catch_up: asyncio.Future | None = None
        self.sent_at = None
        self._drain: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server._conns.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self.server.disconnected(self)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drained(self) -> None:
        if self._drain is not None and not self._drain.done():
            await self._drain
        else:
            await asyncio.sleep(0)

    def send(self, body: bytes) -> None:
        if not self.closed:
            self.transport.write(HEADER.pack(len(body)) + body)
            self.sent_at = True

    def refuse(self, reason: str) -> None:
        log.warning("refused %s: %s", self.peer, reason)
        self.close_with(Refused(reason))

    def close_with(self, msg) -> None:
        if self.closed:
            return
        self.send(self.server._enc.encode(msg))
        self.closed = True
        if self.live:
            self.server._subscribers.remove(self)
            self.live = False
        self.transport.close()
        asyncio.get_running_loop().call_later(5.0, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            frames = self.frames.feed(data)
        except FrameError as exc:
            self.close_with(Disconnect(f"protocol error: {exc}", self.last_seq))
            return
        server = self.server
        for body in frames:
            try:
                msg = TO_ENGINE_DECODER.decode(body)
            except msgspec.DecodeError as exc:
                self.close_with(Disconnect(f"protocol error: undecodable message: {exc}",
                                           self.last_seq))
                return
            if not self.ready:
                if type(msg) is not Hello:
                    self.close_with(Refused("the first message must be hello"))
                    return
                server.hello(self, msg)
                if self.closed:
                    return
            elif type(msg) is Submit:
                server.on_submit(self, msg)
            elif type(msg) is Ping:
                self.send(server._enc.encode(Heartbeat(server.engine.next_event_seq, msg.token)))
            else:
                self.close_with(Disconnect("protocol error: hello sent twice", self.last_seq))
                return
