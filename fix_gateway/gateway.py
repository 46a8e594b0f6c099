"""The FIX access server: asyncio adapter joining FIX sessions, the engine link and the replica.

Everything with rules lives in pure modules (``session``, ``validator``, ``orders``, ``info``,
``replica``, ``reports``, ``throttle``); this module only moves bytes and events between them,
reads the clock and keeps timers. Its guarantees:

- Sessions are configured, one ``FileStore`` each. A connection is bound to a session by the
  CompIDs of its first message: unknown CompIDs, a disallowed source address or a session that
  is already connected get no answer and the connection is closed (and logged).
- Transactions (D, F, G, q) go to the engine after the door checks; information requests
  (H, AF, V, x) are answered from the replica, which the engine's replication stream keeps
  current; order-state requests (H, AF) wait for a ping barrier on the engine link, so every
  gateway answers with every event released before the request arrived. Every engine event about a session becomes a FIX message in that session's store,
  sent at once if the session is logged on, or delivered by resend after it logs on again.
  Drop-copy sessions get a copy (CopyMsgIndicator=Y) of every execution report of their firm.
- Exactly once across gateway restarts: every message made from an engine event carries that
  event's sequence number (EventSeqNum, tag 20002); on start the gateway replays the stream
  and skips what each session's store (or the gateway's watermark file) shows as already made.
- Commands to the engine are numbered; after an engine reconnection the gateway resends exactly
  those the engine has not sequenced. While the engine is unreachable new orders are rejected
  with a reason, never dropped silently.
- Cancel on disconnect: a session so configured that disconnects and is not logged on again
  within its grace window gets a mass cancel of its orders.
- A throttle per session rejects excess order messages with a reason (cancels are never
  throttled) and logs out a session that stays over the limit.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import mmap
import os
import socket
import struct
import time
from typing import Callable

from bourse.config import BourseConfig, GatewayConfig, GatewaySession
from engine.client import EngineLink, LinkClosed, LinkRefused
from engine.commands import MassCancel
from engine.link import Ack, Disconnect as LinkDisconnect, Events, Heartbeat, Nack
from fix_gateway import codec
from fix_gateway.codec import FixMessage, split
from fix_gateway.dictionary import load_dictionary
from fix_gateway.info import InfoService
from fix_gateway.orders import Forward, OrderEntry
from fix_gateway.replica import CancelRejectReport, ExecReport, MassCancelDone, Replica
from fix_gateway.reports import ReportWriter
from fix_gateway.schedule import last_reset_at
from fix_gateway.session import (
    Deliver, Disconnect, Send, Session, SessionConfig, SessionEvent,
)
from fix_gateway.store import FileStore, MessageStore, StoreError
from fix_gateway.throttle import Throttle
from fix_gateway.validator import Validator

log = logging.getLogger("bourse.gateway")

_U64 = struct.Struct("<Q")
EVENT_SEQ_TAG = 20002
ORDER_TYPES = frozenset({"D", "F", "G", "q"})
INFO_TYPES = frozenset({"H", "AF", "V", "x"})
ORDER_STATE_TYPES = frozenset({"H", "AF"})
DICTIONARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "spec", "FIX44-bourse.xml")
_MS = 1_000_000
#: Commands queued for the engine that make it send them at once rather than at the end of
#: the loop iteration, and events applied whose reports are then stored and written before the
#: rest of a burst of events: long bursts flow through the stages instead of queueing at each.
SUBMIT_BATCH = 256
EVENT_BATCH = 512


class GatewayError(Exception):
    """The gateway cannot start; the message says why."""


class _InboundStore(MessageStore):
    """A session's store whose inbound MsgSeqNum reaches the disk only up to the first message
    whose engine command is not acknowledged yet (acknowledged = journaled by the engine).

    The session consumes a message (next expected MsgSeqNum + 1) before the gateway hands its
    command to the engine; persisting that at once meant a crash in between lost the order
    silently (never executed, never answered, never requested again). Now the persisted value
    is ``commit()``ted after the gateway has acted on the input and held back while commands
    are unacknowledged, so after a crash the broker is asked to resend from there (a resent
    order the engine had already sequenced is refused as a duplicate ClOrdID, never executed
    twice). The rest of the ``MessageStore`` interface is the wrapped store's (delegated
    explicitly: attribute access on this object is on every message's path).

    A store with something to write (a message buffered by ``save_sent``, a ``commit()``)
    puts itself once on the gateway's ``dirty`` list; the end of the loop iteration
    ``persist()``s only the stores on it, however many sessions are configured.
    """

    __slots__ = ("_store", "_save", "get_range", "last_saved_seq", "sync", "close", "flush",
                 "next_target_seq", "next_sender_seq", "_want", "_order", "dirty",
                 "_dirty_list")

    def __init__(self, store: FileStore, dirty_list: list | None = None) -> None:
        self._store = store
        self._save = store.save_sent
        self.dirty = False
        self._dirty_list = dirty_list if dirty_list is not None else []
        self.get_range = store.get_range
        self.last_saved_seq = store.last_saved_seq
        self.sync = store.sync
        self.close = store.close
        self.flush = store.flush
        #: the next expected inbound MsgSeqNum (a plain slot: read for every message)
        self.next_target_seq = store.next_target_seq
        #: the next outbound MsgSeqNum, kept in step with the store's (every change to it goes
        #: through this object: save_sent, set_next_sender_seq, reset)
        self.next_sender_seq = store.next_sender_seq
        self._want = 0                         # target seq to persist at the next persist()
        #: MsgSeqNums whose command is not acknowledged yet, ascending: messages are consumed
        #: in MsgSeqNum order and the engine acknowledges commands in the order sent, so the
        #: oldest hold is the next one released
        self._order: collections.deque[int] = collections.deque()

    @property
    def created_ns(self) -> int:
        return self._store.created_ns

    def set_next_target_seq(self, seq: int) -> None:
        self.next_target_seq = seq             # persisted by commit()

    def set_next_sender_seq(self, seq: int) -> None:
        self._store.set_next_sender_seq(seq)
        self.next_sender_seq = self._store.next_sender_seq

    def save_sent(self, seq: int, data: bytes) -> None:
        self._save(seq, data)                  # buffered (group commit) until persist()
        if seq >= self.next_sender_seq:        # the store's own rule
            self.next_sender_seq = seq + 1
        if not self.dirty:
            self.dirty = True
            self._dirty_list.append(self)

    def reset(self, now_ns: int) -> None:
        self._store.reset(now_ns)
        self.next_target_seq = self._store.next_target_seq
        self.next_sender_seq = self._store.next_sender_seq
        self._want = 0
        self._order.clear()

    def hold(self, seq: int) -> None:
        """Message ``seq`` became a command to the engine: until it is acknowledged, the
        persisted next inbound MsgSeqNum stays at or below ``seq`` (so a restart asks for it
        again instead of losing it)."""
        self._order.append(seq)

    def release(self, seq: int, commit: bool = True) -> None:
        """The command of message ``seq`` is acknowledged; ``commit=False`` leaves the
        ``commit()`` to the caller (once after a batch of releases). A seq that is not held
        (its hold went with a reset of the store) is ignored."""
        order = self._order
        if order and order[0] == seq:
            order.popleft()
        else:
            try:
                order.remove(seq)
            except ValueError:
                return
        if commit:
            self.commit()

    def commit(self) -> None:
        """Compute what may be persisted now; ``persist()`` writes it (once per loop
        iteration, with the messages the store buffered)."""
        order = self._order
        target = self.next_target_seq
        self._want = min(target, order[0]) if order else target
        if not self.dirty:
            self.dirty = True
            self._dirty_list.append(self)

    def persist(self) -> None:
        self.dirty = False
        self._store.flush()
        want = self._want
        if want and want != self._store.next_target_seq:
            self._store.set_next_target_seq(want)


class _Slot:
    """One configured session and its live state."""

    def __init__(self, cfg: GatewaySession, fix: Session, entry: OrderEntry) -> None:
        self.cfg = cfg
        self.fix = fix
        self.entry = entry
        self.throttle = Throttle(cfg.throttle_per_s, cfg.throttle_disconnect_s)
        self.conn: _FixConnection | None = None
        self.resume_after = 0           # events up to this seq were already reported
        #: ExecIDs already stored for event ``resume_after`` when only some of its reports may
        #: have been stored before a crash (None: that event was reported in full)
        self.resume_partial: set | None = None
        self.cod: asyncio.TimerHandle | None = None
        self.reset_logout_sent = False


class Gateway:
    def __init__(self, config: BourseConfig, gcfg: GatewayConfig, *,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.cfg = config
        self.gcfg = gcfg
        self.clock = clock
        self.replica = Replica(config.market)
        self.writer = ReportWriter(config.market.price_decimals)
        self._er_wire = self.writer.execution_report_wire
        # ids this gateway makes itself (status reports, its own rejects): unique per node
        # and per start
        self.id_prefix = f"{gcfg.node_id}.{clock() // 1_000_000:x}"
        self.info = InfoService(self.replica, self.writer, self.id_prefix)
        self.slots: dict[str, _Slot] = {}
        self.drop_copies: dict[str, list[_Slot]] = {}
        self.link: EngineLink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None   # set by start()
        #: request id -> (command, store of the message it came from or None, its MsgSeqNum)
        self.inflight: dict[int, tuple] = {}
        self._outbox: list[tuple] = []     # such entries not yet sent to the engine
        self.unsent: list[tuple] = []      # ... and those waiting for the link to come back
        self._barriers: dict[int, tuple[_Slot, FixMessage]] = {}
        self._barrier_token = 0
        self._head = 0                     # the engine's next event seq when the link came up
        self._flush_scheduled = False
        self._watermark = 0                # last event seq routed, written by _flush_all
        self._route_now = 0                # the clock for the reports of the current events
        self._watermark_written = 0
        self._watermark_map: mmap.mmap | None = None
        #: stores with something to persist and connections with something to write at the
        #: end of this loop iteration (each on its list once)
        self._dirty: list[_InboundStore] = []
        self._out_conns: list[_FixConnection] = []
        self._kicked = False
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._watermark_fd = -1
        self.port = 0
        self.engine_up = asyncio.Event()
        self.caught_up = asyncio.Event()
        self._stopping = False

    # ------------------------------------------------------------------ start / stop

    def open_sessions(self) -> None:
        if codec.IMPLEMENTATION != "c":
            log.log(logging.INFO if os.environ.get("FIX_GATEWAY_PURE_PYTHON") else logging.WARNING,
                    "FIX hot path: pure Python (fix_gateway._fixfast not in use), several times "
                    "slower than the compiled one")
        try:
            validator = Validator(load_dictionary(DICTIONARY))
        except Exception as exc:  # the dictionary ships with the release: report, not crash
            raise GatewayError(f"cannot load the FIX dictionary {DICTIONARY}: {exc}") from None
        os.makedirs(self.gcfg.store_dir, exist_ok=True)
        wm_path = os.path.join(self.gcfg.store_dir, "reported.seq")
        self._watermark_fd = os.open(wm_path, os.O_RDWR | os.O_CREAT, 0o644)
        raw = os.pread(self._watermark_fd, 8, 0)
        watermark = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
        if len(raw) < 8:
            os.ftruncate(self._watermark_fd, 8)      # zeros: no event reported yet
        # written in place through a shared mapping: in the page cache at once (as a pwrite
        # would be, so it survives a crash of the process), without a system call per write
        self._watermark_map = mmap.mmap(self._watermark_fd, 8)
        now = self.clock()
        for s in self.gcfg.sessions:
            try:
                store = _InboundStore(FileStore(os.path.join(self.gcfg.store_dir, s.comp_id),
                                                fsync=self.gcfg.store_fsync, now_ns=now,
                                                group_commit=True), self._dirty)
            except StoreError as exc:
                raise GatewayError(f"session {s.comp_id}: {exc}") from None
            fix = Session(SessionConfig(
                target_comp_id=s.comp_id, sender_comp_id=self.gcfg.comp_id,
                min_heartbeat_s=s.heartbeat_min_s, max_heartbeat_s=s.heartbeat_max_s,
                sending_time_tolerance_s=float(self.gcfg.sending_time_tolerance_s),
                password=s.password or None, reset_on_logon=s.reset_on_logon,
                supported_app_msg_types=ORDER_TYPES | INFO_TYPES), store,
                validator.validate)   # the bound method: no __call__ slot per message
            entry = OrderEntry(s, self.cfg.market, id_prefix="G" + self.id_prefix,
                               instrument_of=self._instrument_of)
            slot = _Slot(s, fix, entry)
            last, stored = _last_event_seq(store)
            slot.resume_after = max(watermark, last)
            if last > watermark:        # the crash may have come between reports of ``last``
                slot.resume_partial = stored
            self.slots[s.comp_id] = slot
            if s.drop_copy:
                self.drop_copies.setdefault(s.firm, []).append(slot)

    async def start(self) -> None:
        # asyncio.get_running_loop() costs a getpid() system call on Python 3.11: the hot
        # paths use this reference instead
        self._loop = asyncio.get_running_loop()
        if not self.slots:
            self.open_sessions()
        self._tasks.append(asyncio.ensure_future(self._engine_loop()))
        try:
            await asyncio.wait_for(self.caught_up.wait(), 60)
        except asyncio.TimeoutError:
            raise GatewayError("could not catch up with the engine's replication stream "
                               "within 60 s") from None
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _FixConnection(self),
                                                    self.gcfg.host, self.gcfg.port)
        except OSError as exc:
            raise GatewayError(f"cannot listen on {self.gcfg.host}:{self.gcfg.port}: "
                               f"{exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks.append(asyncio.ensure_future(self._timers()))
        # After a restart nobody is connected: sessions that had orders resting get the same
        # cancel-on-disconnect treatment as if their connection had just dropped.
        for slot in self.slots.values():
            if slot.cfg.cancel_on_disconnect and not slot.cfg.drop_copy:
                slot.cod = loop.call_later(slot.cfg.cancel_on_disconnect_grace_ms / 1000,
                                           self._cancel_on_disconnect, slot)

    async def close(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        now = self.clock()
        for slot in self.slots.values():
            if slot.conn is not None and slot.fix.is_logged_on:
                self._perform(slot, slot.fix.logout("gateway shutting down", now))
        await asyncio.sleep(0.05)
        for t in self._tasks:
            t.cancel()
        self._flush_all()
        for slot in self.slots.values():
            if slot.conn is not None:
                slot.conn.transport.close()
            slot.fix.store.close()
        if self.link is not None:
            await self.link.close()
        if self._watermark_map is not None:
            self._watermark_map.close()
            self._watermark_map = None
        if self._watermark_fd >= 0:
            os.close(self._watermark_fd)

    def _kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._flush_all)

    def _flush_all(self) -> None:
        """End of a loop iteration: the stores' buffered messages and inbound sequence numbers
        reach the disk (one write per store), then the watermark, then the sockets — so
        nothing is sent, and no event is marked done, before it is stored."""
        self._kicked = False
        self._write_out()

    def _write_out(self) -> None:
        """Stores, then watermark, then sockets (see ``_flush_all``): only the stores and
        connections that have something to write."""
        dirty = self._dirty
        if dirty:
            for store in dirty:
                store.persist()
            dirty.clear()
        if self._watermark != self._watermark_written:
            _U64.pack_into(self._watermark_map, 0, self._watermark)
            self._watermark_written = self._watermark
        conns = self._out_conns
        if conns:
            for conn in conns:
                conn.flush()
            conns.clear()

    def _instrument_of(self, session: str, cl_ord_id: str, order_id: int) -> str | None:
        o = self.replica.find(session, cl_ord_id, order_id)
        return o.instrument if o is not None else None

    # ------------------------------------------------------------------ engine side

    async def _engine_loop(self) -> None:
        e = self.cfg.engine
        delay = 0.1
        while not self._stopping:
            try:
                self.link = await EngineLink.connect(
                    e.host, e.order_entry_port, component="gateway", node_id=self.gcfg.node_id,
                    config_digest=self.cfg.digest, subscribe_from=self.replica.next_seq)
            except LinkRefused as exc:
                log.critical("ALERT CRITICAL: the engine refused this gateway: %s", exc)
                await asyncio.sleep(5)
                continue
            except (OSError, asyncio.TimeoutError, LinkClosed) as exc:
                log.warning("engine unreachable at %s:%s (%s); retrying", e.host,
                            e.order_entry_port, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.1
            welcome = self.link.welcome
            log.info("engine link up: next event %d, last request %d", welcome.next_event_seq,
                     welcome.last_req_id)
            self._resend_inflight(welcome.last_req_id)
            head = welcome.next_event_seq
            if self.replica.next_seq >= head:
                self.caught_up.set()
            self.engine_up.set()
            self._head = head
            try:
                self.link.set_handler(self._on_link)
                await self.link.wait_closed()
            except (OSError, LinkClosed) as exc:
                log.warning("engine link lost: %s", exc)
            self.engine_up.clear()
            now = self.clock()
            for slot, request in self._barriers.values():   # answer from what we have
                self._answer_info(slot, request, now)
            self._barriers.clear()
            link, self.link = self.link, None    # new orders are refused from here on
            await link.close()

    def _on_link(self, msgs: list) -> None:
        """One read of the engine link, handed over as it arrives (``EngineLink.set_handler``)."""
        for msg in msgs:
            t = type(msg)
            if t is Events:
                self._on_events(msg.events)
                if not self.caught_up.is_set() and self.replica.next_seq >= self._head:
                    self.caught_up.set()
            elif t is Ack:
                self._release_range(msg.first_req_id, msg.count)
            elif t is Nack:
                log.error("engine refused requests %d..%d: %s", msg.first_req_id,
                          msg.first_req_id + msg.count - 1, msg.reason)
                self._release_range(msg.first_req_id, msg.count)
            elif t is Heartbeat:
                pending = self._barriers.pop(msg.token, None)
                if pending is not None:
                    self._answer_info(pending[0], pending[1], self.clock())
            elif t is LinkDisconnect:
                log.warning("engine closed the link: %s", msg.reason)
                self.link.abort()
                return

    def _resend_inflight(self, last_req: int) -> None:
        sequenced = sorted(r for r in self.inflight if r <= last_req)
        if sequenced:                       # the outcome is on the stream
            self._release_reqs(sequenced)
        if self.inflight:
            pending = [self.inflight[r] for r in sorted(self.inflight)]
            self.inflight.clear()
            self._send_entries(pending)
            log.info("resent %d commands the engine had not sequenced", len(pending))
        if self.unsent:
            entries, self.unsent = self.unsent, []
            self._send_entries(entries)

    def _send_entries(self, entries: list[tuple]) -> None:
        first = self.link.submit([e[0] for e in entries])
        self.inflight.update(zip(range(first, first + len(entries)), entries))

    def _release_range(self, first: int, count: int) -> None:
        """Requests ``first`` .. ``first + count - 1`` are acknowledged (or refused)."""
        self._release_reqs(range(first, first + count))

    def _release_reqs(self, reqs) -> None:
        """Requests ``reqs`` (ascending) are done: release the MsgSeqNums they held."""
        pop = self.inflight.pop
        stores = set()
        last = None
        for r in reqs:
            entry = pop(r, None)
            if entry is not None:
                _, store, seq = entry
                if store is not None:
                    order = store._order        # store.release(seq, False), its common case
                    if order and order[0] == seq:
                        order.popleft()
                    else:
                        store.release(seq, False)
                    if store is not last:
                        stores.add(store)
                        last = store
        for store in stores:
            store.commit()

    def _submit(self, cmd, slot: "_Slot | None" = None, seq: int = 0) -> None:
        """Queue a command for the engine; one made from message ``seq`` of ``slot`` holds
        that MsgSeqNum until the engine acknowledges the command."""
        if slot is not None:
            store = slot.fix.store
            store._order.append(seq)        # store.hold(seq), spelled out
            entry = (cmd, store, seq)
        else:
            entry = (cmd, None, 0)
        outbox = self._outbox
        outbox.append(entry)
        if len(outbox) >= SUBMIT_BATCH:
            self._flush()          # a long input burst: let the engine start on it meanwhile
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._flush)

    def _flush(self) -> None:
        """Send the queued commands to the engine (numbered, kept in ``inflight``)."""
        self._flush_scheduled = False
        entries, self._outbox = self._outbox, []
        if not entries:
            return
        if self.link is None:
            self.unsent.extend(entries)      # numbered and sent once the link is back
            return
        self._send_entries(entries)

    def _on_events(self, events: list) -> None:
        if not events:
            return
        self._route_now = self.clock()
        apply_many = self.replica.apply_many
        route = self._route
        n = len(events)
        if n <= EVENT_BATCH:
            apply_many(events, route)
        else:
            for i in range(0, n, EVENT_BATCH):
                if i:
                    # a long burst of events: store and send what is ready so far (the
                    # watermark moves only once the whole burst is routed)
                    self._write_out()
                apply_many(events[i:i + EVENT_BATCH], route)
        self._watermark = events[-1].seq
        self._kick()

    def _route(self, r, seq: int) -> None:
        """One report of event ``seq``, made at ``_route_now``: stored for its session (and
        the firm's drop copies) and sent if logged on, unless it was made before a restart."""
        now = self._route_now
        slot = self.slots.get(r.session)
        if type(r) is ExecReport:
            copies = self.drop_copies.get(r.firm, ())
            if not copies:                  # the common case: one message, encoded at once
                if slot is not None and (seq > slot.resume_after or _fresh(slot, seq, r.exec_id)):
                    self._send(slot, "8", self._er_wire(r, EVENT_SEQ_TAG, seq), now)
                return
            tag = (EVENT_SEQ_TAG, seq)
            fields = self.writer.execution_report(r)
            if slot is not None and (seq > slot.resume_after or _fresh(slot, seq, r.exec_id)):
                self._send(slot, "8", fields + [tag], now)
            for dc in copies:
                if _fresh(dc, seq, r.exec_id):
                    self._send(dc, "8", _drop_copy(fields, r.session) + [tag], now)
            return
        if slot is None or not _fresh(slot, seq, None):
            return
        tag = (EVENT_SEQ_TAG, seq)
        if type(r) is CancelRejectReport:
            self._send(slot, "9", self.writer.cancel_reject(r) + [tag], now)
        elif type(r) is MassCancelDone and not r.cl_ord_id.startswith("COD-"):
            self._send(slot, "r", self.writer.mass_cancel_report(r) + [tag], now)

    # ------------------------------------------------------------------ FIX side

    def _send(self, slot: _Slot, msg_type: str, fields: list, now: int) -> None:
        """An application message to a session: stored, then written at the end of the
        iteration if the session is logged on (``_perform`` of ``send_app``'s actions,
        spelled out for the one action it gives)."""
        fix = slot.fix
        data = fix.send_app_data(msg_type, fields, now)
        conn = slot.conn
        if data is not None and conn is not None:
            out = conn.out
            out.append(data)
            if len(out) == 1:
                self._out_conns.append(conn)
            if not self._kicked:
                self._kick()
        if conn is not None and fix.pending_resend:
            (self._loop or asyncio.get_running_loop()).call_soon(self._tick_slot, slot)

    def _perform(self, slot: _Slot, actions: list, now: int = 0) -> None:
        """Carry out a session's actions; ``now`` is the time they were made at (the arrival
        of the bytes they answer), 0 to read the clock where one is needed."""
        for a in actions:
            t = type(a)
            if t is Send:
                conn = slot.conn
                if conn is not None:
                    out = conn.out                  # _FixConnection.queue, inlined
                    out.append(a.data)
                    if len(out) == 1:
                        self._out_conns.append(conn)
                    if not self._kicked:
                        self._kick()
            elif t is Deliver:
                self._on_app(slot, a.msg, a.seq, now or self.clock())
            elif t is SessionEvent:
                self._on_session_event(slot, a)
            elif t is Disconnect:
                log.info("session %s: disconnect: %s", slot.cfg.comp_id, a.reason)
                if slot.conn is not None:
                    self._flush_all()
                    slot.conn.transport.close()
        if slot.fix.pending_resend and slot.conn is not None:
            (self._loop or asyncio.get_running_loop()).call_soon(self._tick_slot, slot)

    def _on_session_event(self, slot: _Slot, ev: SessionEvent) -> None:
        if ev.kind == "logged_on":
            log.info("session %s logged on", slot.cfg.comp_id)
            slot.reset_logout_sent = False
            if slot.cod is not None:
                slot.cod.cancel()
                slot.cod = None
        elif ev.kind in ("error", "reject_sent", "garbled", "warning"):
            log.warning("session %s: %s: %s", slot.cfg.comp_id, ev.kind, ev.text)
        elif ev.kind == "logged_out":
            log.info("session %s logged out %s", slot.cfg.comp_id, ev.text)

    def _on_app(self, slot: _Slot, msg: FixMessage, seq: int, now: int) -> None:
        t = msg.msg_type
        if t in ORDER_TYPES:
            if t != "F" and not slot.throttle.allow(now):
                self._reply(slot, slot.entry.throttled(msg, now), now)
                if slot.throttle.abusive(now):
                    log.warning("session %s: over its throttle for %d s: logging out",
                                slot.cfg.comp_id, slot.cfg.throttle_disconnect_s)
                    self._perform(slot, slot.fix.logout("throttle exceeded persistently", now))
                return
            result = slot.entry.handle(msg, now)
            if type(result) is Forward:
                if self.link is None:       # engine_up clear (the link goes with it)
                    self._reply(slot, slot.entry.unavailable(msg, now), now)
                    return
                self._submit(result.cmd, slot, seq)
            else:
                self._reply(slot, result, now)
        elif t in ORDER_STATE_TYPES and self.link is not None:
            # Read-your-writes across gateways: answer once this replica has applied every
            # event the engine had released when the request arrived (the engine answers the
            # ping after all earlier events on this link, without touching the matching core).
            self._barrier_token += 1
            self._barriers[self._barrier_token] = (slot, msg)
            self.link.ping(self._barrier_token)
        else:
            self._answer_info(slot, msg, now)

    def _reply(self, slot: _Slot, reply, now: int) -> None:
        """The gateway's own answer to an order message; an ExecutionReport (a reject at the
        door) also goes to the firm's drop copies, as the engine's reports do."""
        self._send(slot, reply.msg_type, reply.fields, now)
        if reply.msg_type == "8" and not slot.cfg.drop_copy:
            for dc in self.drop_copies.get(slot.cfg.firm, ()):
                self._send(dc, "8", _drop_copy(reply.fields, slot.cfg.comp_id), now)

    def _answer_info(self, slot: _Slot, msg: FixMessage, now: int) -> None:
        for msg_type, fields in self.info.handle(slot.cfg.comp_id, msg, now, slot.cfg.firm):
            self._send(slot, msg_type, fields, now)

    def attach(self, conn: "_FixConnection", first: FixMessage) -> _Slot | None:
        sender = (first.get(49) or b"").decode("ascii", "replace")
        target = (first.get(56) or b"").decode("ascii", "replace")
        slot = self.slots.get(sender)
        if slot is None or target != self.gcfg.comp_id:
            log.warning("connection from %s with unknown CompIDs %s->%s: closed without answer",
                        conn.peer, sender, target)
            return None
        allowed = slot.cfg.allowed_addresses
        if allowed and conn.peer_host not in allowed:
            log.warning("session %s: connection from %s not in allowed_addresses: closed",
                        sender, conn.peer_host)
            return None
        if slot.conn is not None:
            log.warning("session %s: second connection from %s refused: already connected",
                        sender, conn.peer)
            return None
        slot.conn = conn
        if slot.cod is not None:
            slot.cod.cancel()
            slot.cod = None
        return slot

    def detach(self, slot: _Slot, conn: "_FixConnection") -> None:
        if slot.conn is not conn:
            return
        slot.conn = None
        now = self.clock()
        self.info.end_session(slot.cfg.comp_id)
        self._perform(slot, slot.fix.on_disconnect(now))
        if slot.cfg.cancel_on_disconnect and not slot.cfg.drop_copy and not self._stopping:
            grace = slot.cfg.cancel_on_disconnect_grace_ms / 1000
            slot.cod = asyncio.get_running_loop().call_later(grace, self._cancel_on_disconnect,
                                                             slot)

    def _cancel_on_disconnect(self, slot: _Slot) -> None:
        slot.cod = None
        if slot.conn is not None and slot.fix.is_logged_on:
            return
        if not self.replica.open_orders(slot.cfg.comp_id):
            return
        now = self.clock()
        log.info("session %s: cancel on disconnect", slot.cfg.comp_id)
        self._submit(MassCancel(slot.cfg.comp_id, f"COD-{now:x}", firm=slot.cfg.firm,
                                target_session=slot.cfg.comp_id))

    def _daily_reset(self, now: int) -> None:
        boundary = last_reset_at(now, self.gcfg.daily_reset_utc)
        for slot in self.slots.values():
            if slot.fix.store.created_ns >= boundary:
                continue
            if slot.conn is None and slot.fix.state == "disconnected":
                log.info("session %s: daily sequence reset", slot.cfg.comp_id)
                self._perform(slot, slot.fix.reset(now))
            elif slot.fix.is_logged_on and not slot.reset_logout_sent:
                slot.reset_logout_sent = True
                self._perform(slot, slot.fix.logout("daily sequence reset: log on again", now))

    def _tick_slot(self, slot: _Slot) -> None:
        self._perform(slot, slot.fix.on_timer(self.clock()))

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = self.clock()
            for slot in self.slots.values():
                due = slot.fix.next_timer_ns
                if due is not None and due <= now:
                    self._perform(slot, slot.fix.on_timer(now))
            if self.gcfg.daily_reset_utc:
                self._daily_reset(now)
            for session, msg_type, fields in self.info.due(now):
                slot = self.slots.get(session)
                if slot is not None and slot.fix.is_logged_on:
                    self._send(slot, msg_type, fields, now)
            self._kick()


class _FixConnection(asyncio.Protocol):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.slot: _Slot | None = None
        self.pending = b""
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_host = ""
        self.closed = False
        self.out: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_host = peer[0]
            self.peer = f"{peer[0]}:{peer[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        asyncio.get_running_loop().call_later(10.0, self._logon_timeout)

    def queue(self, data: bytes) -> None:
        """Write ``data`` at the end of this loop iteration (``Gateway._flush_all``), after the
        store has it, with everything else queued by then: one socket write per iteration."""
        self.out.append(data)
        if len(self.out) == 1:
            self.gw._out_conns.append(self)
        self.gw._kick()

    def flush(self) -> None:
        if self.out and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def _logon_timeout(self) -> None:
        if self.slot is None and not self.closed:
            log.warning("connection from %s sent no logon within 10 s: closed", self.peer)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self._received(data)
        except Exception:  # a defect must cost one connection, never the gateway
            log.exception("session %s: internal error on input from %s; connection closed",
                          self.slot.cfg.comp_id if self.slot else "?", self.peer)
            self.transport.abort()

    def _received(self, data: bytes) -> None:
        gw = self.gw
        if self.slot is None:
            if self.closed:
                return
            self.pending += data
            frames, _rest, _garbled = split(self.pending)
            if not frames:
                if len(self.pending) > 65536:
                    self.transport.close()
                return
            slot = gw.attach(self, frames[0])
            if slot is None:
                self.closed = True
                self.transport.close()
                return
            self.slot = slot
            data, self.pending = self.pending, b""
            now = gw.clock()
            gw._perform(slot, slot.fix.on_connect(now))
        slot = self.slot
        now = gw.clock()
        gw._perform(slot, slot.fix.on_bytes(data, now), now)
        slot.fix.store.commit()
        gw._kick()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.slot is not None:
            self.gw.detach(self.slot, self)


def _drop_copy(fields: list, session: str) -> list:
    """An ExecutionReport's fields as a drop copy: the order's session as the entering party
    (PartyRole 55, session ID) after OrderID and ClOrdID, and CopyMsgIndicator Y."""
    return fields[:2] + [(453, 1), (448, session), (447, "D"), (452, 55)] + fields[2:] \
        + [(797, "Y")]


def _fresh(slot: _Slot, seq: int, exec_id: str | None) -> bool:
    """Whether the report ``exec_id`` (None: a report without ExecID) of event ``seq`` is still
    to be made for ``slot``: one event can make several reports for one session (both sides of
    a trade between two of its orders) and a crash can come between them."""
    if seq != slot.resume_after:
        return seq > slot.resume_after
    return slot.resume_partial is not None and exec_id not in slot.resume_partial


def _last_event_seq(store) -> tuple[int, set]:
    """The highest EventSeqNum among the last messages of a session's store (0 if none) and
    the ExecIDs (None for a message without one) of the stored messages made from it."""
    last = store.last_saved_seq()
    begin = max(1, last - 200)
    best, stored = 0, set()
    for _seq, data in store.get_range(begin, last, 1000):
        i = data.rfind(b"\x0120002=")
        if i >= 0:
            j = data.index(b"\x01", i + 1)
            ev = int(data[i + 7:j])
            if ev > best:
                best, stored = ev, set()
            if ev == best:
                k = data.find(b"\x0117=")
                stored.add(data[k + 4:data.index(b"\x01", k + 4)].decode() if k >= 0 else None)
    return best, stored
