"""FIX 4.4 session layer as a pure state machine (no I/O, no clock, no threads).

The caller (an asyncio adapter, a test) owns the socket and the clock. It calls
``on_connect``, ``on_bytes``, ``on_timer``, ``on_disconnect``, ``send_app`` and ``logout``
with the current time ``now_ns``; each returns a list of *actions* to carry out in order:

* ``Send(data, seq, msg_type, poss_dup)``: write ``data`` to the socket.
* ``Deliver(msg, seq)``: an in-order, validated application message for the application.
* ``SessionEvent(kind, text)``: something to log or react to (kinds: ``logged_on``,
  ``logged_out``, ``reset``, ``garbled``, ``gap_detected``, ``gap_filled``,
  ``duplicate_ignored``, ``resend_requested``, ``resend_done``, ``sequence_reset``,
  ``reject_sent``, ``reject_received``, ``test_request_sent``, ``logout_sent``, ``warning``,
  ``error``).
* ``Queued(seq, reason)``: ``send_app`` stored the message under ``seq`` but did not send it
  (not logged on, or logout in progress); the counterparty gets it by ResendRequest.
* ``Disconnect(reason)``: close the connection after writing the preceding ``Send`` s. The
  session is then disconnected; later input is ignored until ``on_connect``.

Peer input never raises: garbled data, protocol violations and invalid fields come back as
values (events, rejects, logouts, disconnects). Programming errors (an admin MsgType passed to
``send_app``, a value containing SOH) raise ValueError.

Behaviour follows FIX 4.4 Volume 2 and the FIX session-level test cases (see
``tests/test_fix_conformance.py`` for the case list), notably:

* Acceptor: the first message must be a valid Logon (else disconnect). A Logon with the wrong
  BeginString or CompIDs, a SendingTime out of tolerance, a missing or bad MsgSeqNum,
  EncryptMethod other than 0, HeartBtInt outside the configured bounds, bad credentials
  (Username 553 / Password 554), or MsgSeqNum too low is answered with a Logout naming the
  problem (``logout_on_failed_logon``) and a disconnect. ResetSeqNumFlag 141=Y resets both
  sides (policy ``reset_on_logon``: ``accept`` / ``always`` / ``refuse``); a Logon with 141=Y
  while logged on is an in-session reset; another Logon while logged on ends the session.
* Sequence numbers: too high -> queue the message (bounded) and send one ResendRequest
  (EndSeqNo 0); queued messages are processed in order once the gap is filled (a
  ResendRequest or Logout received with a gap is acted on at once). Too low without
  PossDupFlag -> Logout "MsgSeqNum too low, expecting X but received Y" and disconnect; with
  PossDupFlag -> ignored. Garbled messages are ignored and consume no sequence number.
* PossDupFlag=Y needs OrigSendingTime (else Reject 1, ref 122), not later than SendingTime
  (else Reject 10). SendingTime more than ``sending_time_tolerance_s`` away from ``now_ns``
  -> Reject 10 then Logout; wrong CompIDs -> Reject 9 then Logout; wrong BeginString or a
  missing MsgSeqNum -> Logout and disconnect. After such a Logout only the counterparty's
  Logout (or ``logout_timeout_s``) ends the session.
* Header-level checks on every in-sequence message: SendingTime (52) present and well formed,
  PossDupFlag/PossResend Y or N, OrigSendingTime well formed, no empty values (Reject 4),
  header fields before body fields (Reject 14), no repeated header tag (Reject 13), valid
  MsgType (Reject 11, ref 35) and the required fields of admin messages. Application messages
  then go to the optional ``validator`` (a returned ``Reject`` is sent as 35=3, or 35=j when
  ``business``); ``supported_app_msg_types`` answers other types with BusinessMessageReject
  380=3. Every rejected in-sequence message consumes its sequence number.
* ResendRequest is answered from the store: application messages resent with PossDupFlag=Y,
  OrigSendingTime and a new SendingTime; each run of admin messages (not stored) becomes one
  SequenceReset-GapFill. At most ``max_resend_chunk`` stored messages are read per call; the
  rest follows on later ``on_timer`` calls (``pending_resend`` tells the adapter to call
  again as soon as its write buffer drains).
* SequenceReset-GapFill moves the expected number forward (NewSeqNo not above MsgSeqNum ->
  Reject 5, ref 36); SequenceReset-Reset applies regardless of MsgSeqNum, and a NewSeqNo
  below the expected number is refused with Reject 5 (ref 36).
* Timers (``on_timer``): Heartbeat after HeartBtInt without sending; TestRequest after
  HeartBtInt + grace without receiving, disconnect after a further HeartBtInt + grace;
  Logon timeout; Logout reply timeout; a ResendRequest that makes no progress for
  ``resend_request_timeout_s`` is sent again.

The per-message header checks run compiled (``fix_gateway._fixfast.check_header``) when the
message is a compiled ``FixMessage``; ``_check_header_py`` is their reference.

State is persisted through the ``MessageStore`` before the corresponding action is returned:
an outbound message is stored (or the sender seq advanced) before its ``Send``, and the
inbound seq advances when a message is consumed, i.e. before its ``Deliver`` is handed over.
"""
from __future__ import annotations

import hmac
from typing import Callable, Iterable, Literal, Optional, Union

import msgspec

from . import codec as _codec
from .codec import (
    MAX_MESSAGE_SIZE,
    FixMessage,
    FrameReader,
    encode,
    format_utc_timestamp,
    parse,
    parse_utc_timestamp,
)
from .errors import REJECT_TEXT, BusinessRejectReason, Reject, SessionRejectReason
from .store import MessageStore

__all__ = [
    "SessionConfig", "Session", "Send", "Deliver", "SessionEvent", "Disconnect", "Queued",
    "Action", "Reject", "Validator", "ADMIN_MSG_TYPES", "FIX44_APP_MSG_TYPES",
    "DISCONNECTED", "AWAITING_LOGON", "LOGON_SENT", "ACTIVE", "LOGOUT_SENT", "LOGOUT_RECEIVED",
]

R = SessionRejectReason

ADMIN_MSG_TYPES = frozenset({"0", "1", "2", "3", "4", "5", "A"})
#: Application MsgTypes of FIX 4.4 (types starting with "U" are user defined and also valid).
FIX44_APP_MSG_TYPES = frozenset(
    list("6789BCDEFGHJKLMNPQRSTVWXYZabcdefghijklmnopqrstuvwxyz")
    + ["A" + c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    + ["B" + c for c in "ABCDEFGH"])
#: Standard header tags of FIX 4.4 (besides 8, 9, 35 which the codec pins first).
HEADER_TAGS = frozenset({49, 56, 115, 128, 90, 91, 34, 50, 142, 57, 143, 116, 144, 129, 145,
                         43, 97, 52, 122, 212, 213, 347, 369, 627, 628, 629, 630})
_HOP_TAGS = frozenset({628, 629, 630})
_FRAME_TAGS = frozenset({8, 9, 35, 10})
#: Fields not copied from a stored message when it is resent (the header is rebuilt).
_RESEND_SKIP = frozenset({8, 9, 10, 35, 49, 56, 34, 52, 43, 122})


def _check_header_py(msg: FixMessage) -> Union[None, bool, tuple[int, int]]:
    """The header checks of every in-sequence message (the reference of the compiled
    ``check_header``): (SessionRejectReason, tag) of the first problem, else True when
    PossDupFlag is Y (OrigSendingTime still to check), else None.

    In order: among fields 3 .. n-2 an empty value, a header field after a body field, a
    repeated header field, a framing tag out of place; then SendingTime missing or malformed,
    PossDupFlag or PossResend other than Y or N."""
    fields = msg.fields
    seen: set[int] = set()
    in_body = False
    header_tags = HEADER_TAGS
    for i in range(3, len(fields) - 1):
        tag, value = fields[i]
        if not value:
            return SessionRejectReason.TAG_SPECIFIED_WITHOUT_VALUE, tag
        if tag in header_tags:
            if in_body:
                return SessionRejectReason.TAG_OUT_OF_ORDER, tag
            if tag in seen and tag not in _HOP_TAGS:
                return SessionRejectReason.TAG_APPEARS_MORE_THAN_ONCE, tag
            seen.add(tag)
        elif tag in _FRAME_TAGS:
            return SessionRejectReason.TAG_OUT_OF_ORDER, tag
        else:
            in_body = True
    get = msg.get
    sending = get(52)
    if sending is None:
        return SessionRejectReason.REQUIRED_TAG_MISSING, 52
    if _ts(sending) is None:
        return SessionRejectReason.INCORRECT_DATA_FORMAT, 52
    poss_dup = get(43)
    if poss_dup is not None and poss_dup != b"Y" and poss_dup != b"N":
        return SessionRejectReason.INCORRECT_DATA_FORMAT, 43
    v = get(97)
    if v is not None and v != b"Y" and v != b"N":
        return SessionRejectReason.INCORRECT_DATA_FORMAT, 97
    return True if poss_dup == b"Y" else None


# The same checks, compiled (NotImplemented for messages they do not handle).
if _codec._fast is not None:
    _codec._fast.set_header_tags(HEADER_TAGS, _HOP_TAGS)
    _check_header = _codec._fast.check_header
    #: the common-path test of ``_on_message`` in one call (False: not certain, the Python
    #: test below decides)
    _in_sequence = getattr(_codec._fast, "in_sequence", None)
else:
    def _check_header(msg):
        return NotImplemented
    _in_sequence = None

DISCONNECTED = "disconnected"
AWAITING_LOGON = "awaiting_logon"
LOGON_SENT = "logon_sent"
ACTIVE = "active"
LOGOUT_SENT = "logout_sent"
LOGOUT_RECEIVED = "logout_received"

_S = 1_000_000_000


# --------------------------------------------------------------------------------- actions

# gc=False on the per-message actions: they hold only bytes, scalars and a parsed message,
# never a cycle, so the collector need not track them.
class Send(msgspec.Struct, frozen=True, gc=False):
    """Write ``data`` to the connection."""

    data: bytes
    seq: int = 0
    msg_type: str = ""
    poss_dup: bool = False


class Deliver(msgspec.Struct, frozen=True, gc=False):
    """An in-order application message for the application, and its MsgSeqNum."""

    msg: FixMessage
    seq: int = 0


class SessionEvent(msgspec.Struct, frozen=True):
    """Something that happened (for logs, metrics, the application's session callbacks)."""

    kind: str
    text: str = ""


class Disconnect(msgspec.Struct, frozen=True):
    """Close the connection (after the Sends that precede this action)."""

    reason: str


class Queued(msgspec.Struct, frozen=True):
    """An application message stored under ``seq`` but not sent now (back-pressure value)."""

    seq: int
    reason: str


Action = Union[Send, Deliver, SessionEvent, Disconnect, Queued]
Validator = Callable[[FixMessage], Optional[Reject]]


class SessionConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Static configuration of one FIX session (one SenderCompID/TargetCompID pair)."""

    target_comp_id: str
    sender_comp_id: str = "BOURSE"
    begin_string: str = "FIX.4.4"
    role: Literal["acceptor", "initiator"] = "acceptor"
    #: HeartBtInt the initiator asks for (an acceptor adopts the counterparty's value).
    heartbeat_s: int = 30
    min_heartbeat_s: int = 1
    max_heartbeat_s: int = 300
    #: Extra silence tolerated before a TestRequest; None means 20% of HeartBtInt.
    test_request_grace_s: Optional[float] = None
    logon_timeout_s: float = 10.0
    logout_timeout_s: float = 10.0
    sending_time_tolerance_s: float = 120.0
    resend_request_timeout_s: float = 30.0
    username: Optional[str] = None
    password: Optional[str] = None
    reset_on_logon: Literal["accept", "always", "refuse"] = "accept"
    logout_on_failed_logon: bool = True
    max_resend_chunk: int = 500
    max_queued: int = 10_000
    max_message_size: int = MAX_MESSAGE_SIZE
    #: Valid application MsgTypes (None: FIX 4.4's, plus user-defined "U...").
    app_msg_types: Optional[frozenset] = None
    #: Application MsgTypes the application handles (None: all valid ones); others get a
    #: BusinessMessageReject with BusinessRejectReason 3.
    supported_app_msg_types: Optional[frozenset] = None


def _int(v: Optional[bytes]) -> Optional[int]:
    if v is None or not v.isdigit() or len(v) > 18:
        return None
    return int(v)


_ts_last: list = [None, None]  # one-entry memo: SendingTime is parsed twice per message


def _ts(v: Optional[bytes]) -> Optional[int]:
    if v is None:
        return None
    if v is _ts_last[0]:
        return _ts_last[1]
    try:
        ns: Optional[int] = parse_utc_timestamp(v)
    except ValueError:
        ns = None
    _ts_last[0], _ts_last[1] = v, ns
    return ns


class Session:
    """One FIX session. Not thread-safe; one instance per SenderCompID/TargetCompID pair."""

    def __init__(self, config: SessionConfig, store: MessageStore,
                 validator: Optional[Validator] = None) -> None:
        self.config = config
        self.store = store
        self.validator = validator
        self._begin_b = config.begin_string.encode()
        self._sender_b = config.sender_comp_id.encode()
        self._target_b = config.target_comp_id.encode()
        self._app_types = (config.app_msg_types if config.app_msg_types is not None
                           else FIX44_APP_MSG_TYPES)
        #: the MsgTypes _process hands on without further type checks: application types
        #: (not admin) that are supported
        supported = config.supported_app_msg_types
        self._plain_app_types = frozenset(
            t for t in self._app_types
            if t not in ADMIN_MSG_TYPES and (supported is None or t in supported))
        self._tolerance_ns = int(config.sending_time_tolerance_s * _S)
        self._reader = FrameReader(config.max_message_size)
        self._state = DISCONNECTED
        self._logged_on = False
        self._fatal = False
        self._hb_ns = 0
        self._grace_ns = 0
        self._connected_at = 0
        self._last_recv = 0
        self._last_sent = 0
        self._test_req_at: Optional[int] = None
        self._test_req_count = 0
        self._logout_at = 0
        self._queue: dict[int, tuple[FixMessage, bool]] = {}
        self._gap_until = 0
        self._gap_progress_at = 0
        self._resend: Optional[list[int]] = None
        self._now = 0

    # ------------------------------------------------------------------ introspection
    @property
    def state(self) -> str:
        return self._state

    @property
    def is_logged_on(self) -> bool:
        return self._logged_on

    @property
    def next_sender_seq(self) -> int:
        return self.store.next_sender_seq

    @property
    def next_target_seq(self) -> int:
        return self.store.next_target_seq

    @property
    def heartbeat_interval_s(self) -> float:
        return self._hb_ns / _S

    @property
    def pending_resend(self) -> bool:
        """True while a ResendRequest is being answered (call ``on_timer`` to continue)."""
        return self._resend is not None

    @property
    def queued_inbound(self) -> int:
        """Messages received ahead of a gap, waiting for it to be filled."""
        return len(self._queue)

    @property
    def next_timer_ns(self) -> Optional[int]:
        """Earliest time at which ``on_timer`` has something to do (None: nothing pending).

        While a resend is pending this is the time of the last call, i.e. due at once."""
        st = self._state
        if st == DISCONNECTED:
            return None
        if st in (AWAITING_LOGON, LOGON_SENT):
            return self._connected_at + int(self.config.logon_timeout_s * _S)
        if st in (LOGOUT_SENT, LOGOUT_RECEIVED):
            t = self._logout_at + int(self.config.logout_timeout_s * _S)
            return min(t, self._now) if self._resend is not None else t
        times = []
        if self._resend is not None:
            times.append(self._now)
        if self._hb_ns:
            times.append(self._last_sent + self._hb_ns)
            if self._test_req_at is not None:
                times.append(self._test_req_at + self._hb_ns + self._grace_ns)
            else:
                times.append(self._last_recv + self._hb_ns + self._grace_ns)
        if self._gap_until:
            times.append(self._gap_progress_at + int(self.config.resend_request_timeout_s * _S))
        return min(times) if times else None

    # --------------------------------------------------------------------- public API
    def on_connect(self, now_ns: int) -> list[Action]:
        """A transport connection is up. An initiator sends its Logon here."""
        out: list[Action] = []
        self._now = now_ns
        if self._state != DISCONNECTED:
            return out
        self._reset_connection(now_ns)
        if self.config.role == "initiator":
            self._state = LOGON_SENT
            fields: list = [(98, 0), (108, self.config.heartbeat_s)]
            if self.config.reset_on_logon == "always":
                self.store.reset(now_ns)
                out.append(SessionEvent("reset", "sequence numbers reset on logon"))
                fields.append((141, "Y"))
            self._add_credentials(fields)
            self._send(out, "A", fields, now_ns)
        else:
            self._state = AWAITING_LOGON
        return out

    def on_bytes(self, data: bytes, now_ns: int) -> list[Action]:
        """Bytes received from the counterparty."""
        out: list[Action] = []
        self._now = now_ns
        if self._state == DISCONNECTED:
            return out
        frames, garbled = self._reader.feed(data)
        for g in garbled:
            out.append(SessionEvent("garbled", f"{g.reason} ({g.size} bytes): {g.data[:80]!r}"))
        if frames:
            # (nothing below changes these two, and a disconnect sets the same values)
            self._last_recv = now_ns
            self._test_req_at = None
            on_message = self._on_message
            for msg in frames:
                if self._state == DISCONNECTED:
                    break
                on_message(msg, now_ns, out)
        return out

    def on_timer(self, now_ns: int) -> list[Action]:
        """Time passed: heartbeats, test requests, timeouts, next chunk of a resend."""
        out: list[Action] = []
        self._now = now_ns
        st = self._state
        cfg = self.config
        if st == DISCONNECTED:
            return out
        if st in (AWAITING_LOGON, LOGON_SENT):
            if now_ns - self._connected_at >= cfg.logon_timeout_s * _S:
                out.append(SessionEvent("error", "no Logon within the logon timeout"))
                self._disconnect(out, "logon timeout")
            return out
        if st in (LOGOUT_SENT, LOGOUT_RECEIVED):
            if now_ns - self._logout_at >= cfg.logout_timeout_s * _S:
                why = ("no Logout reply within the logout timeout" if st == LOGOUT_SENT
                       else "counterparty did not disconnect after Logout")
                self._disconnect(out, why)
                return out
            if self._resend is not None:
                self._pump_resend(now_ns, out)
            return out
        # ACTIVE
        if self._resend is not None:
            self._pump_resend(now_ns, out)
        hb = self._hb_ns
        if hb:
            limit = hb + self._grace_ns
            if self._test_req_at is not None:
                if now_ns - self._test_req_at >= limit:
                    out.append(SessionEvent("error", "no response to TestRequest"))
                    self._disconnect(out, "heartbeat timeout")
                    return out
            elif now_ns - self._last_recv >= limit:
                self._test_req_count += 1
                self._test_req_at = now_ns
                req_id = f"TEST{self._test_req_count}"
                self._send(out, "1", [(112, req_id)], now_ns)
                out.append(SessionEvent("test_request_sent", req_id))
            if now_ns - self._last_sent >= hb:
                self._send(out, "0", [], now_ns)
        if self._gap_until and (now_ns - self._gap_progress_at
                                >= cfg.resend_request_timeout_s * _S):
            expected = self.store.next_target_seq
            out.append(SessionEvent("warning", f"ResendRequest from {expected} made no "
                                               "progress; sending it again"))
            self._send_resend_request(out, expected, now_ns)
        return out

    def on_disconnect(self, now_ns: int) -> list[Action]:
        """The transport connection is gone (closed by either side)."""
        out: list[Action] = []
        self._now = now_ns
        if self._state == DISCONNECTED:
            return out
        self._leave(out, "connection closed")
        self._state = DISCONNECTED
        self._reset_connection(now_ns)
        return out

    def send_app(self, msg_type: str, fields: Iterable[tuple[int, object]], now_ns: int, *,
                 extra_header: Iterable[tuple[int, object]] = ()) -> list[Action]:
        """Send an application message (stored first, so it can be resent)."""
        seq = self.store.next_sender_seq
        data = self.send_app_data(msg_type, fields, now_ns, tuple(extra_header))
        if data is not None:
            return [Send(data, seq, msg_type)]
        reason = "logout in progress" if self._logged_on else "not logged on"
        return [Queued(seq, reason)]

    def send_app_data(self, msg_type: str, fields: list, now_ns: int,
                      extra_header: tuple = ()) -> bytes | None:
        """``send_app`` for an adapter that writes at once, without the action list: the
        bytes to write (``Send``), or None where ``send_app`` gives ``Queued`` (stored, to be
        delivered by resend). Same checks, same store."""
        if msg_type in ADMIN_MSG_TYPES:
            raise ValueError(f"send_app is for application messages, not MsgType {msg_type}")
        self._now = now_ns
        store = self.store
        seq = store.next_sender_seq
        data = encode(msg_type, fields, begin_string=self._begin_b, sender=self._sender_b,
                      target=self._target_b, seq=seq, sending_time=format_utc_timestamp(now_ns),
                      extra_header=extra_header)
        store.save_sent(seq, data)
        if self._state == ACTIVE:
            self._last_sent = now_ns
            return data
        return None

    def logout(self, text: str, now_ns: int) -> list[Action]:
        """Start the Logout handshake (or just disconnect before logon)."""
        out: list[Action] = []
        self._now = now_ns
        if self._state == ACTIVE:
            self._send_logout(out, text, now_ns)
        elif self._state in (AWAITING_LOGON, LOGON_SENT):
            self._disconnect(out, text or "logout before logon completed")
        return out

    def reset(self, now_ns: int) -> list[Action]:
        """Reset both sequence numbers to 1 and archive the store (e.g. a daily schedule).

        Only while disconnected; while logged on, use a Logon with ResetSeqNumFlag instead.
        """
        if self._state != DISCONNECTED:
            raise ValueError("reset() is only allowed while disconnected")
        self.store.reset(now_ns)
        return [SessionEvent("reset", "sequence numbers reset")]

    def send_sequence_reset(self, new_seq: int, now_ns: int) -> list[Action]:
        """Operator action: SequenceReset-Reset (no GapFill) moving our sender seq forward."""
        out: list[Action] = []
        self._now = now_ns
        if self._state != ACTIVE:
            return out
        if new_seq <= self.store.next_sender_seq:
            raise ValueError("SequenceReset-Reset can only move the sequence number forward")
        self._send(out, "4", [(36, new_seq)], now_ns)
        self.store.set_next_sender_seq(new_seq)
        return out

    # ------------------------------------------------------------------ sending helpers
    def _send(self, out: list, msg_type: str, fields: list, now: int,
              extra_header: tuple = ()) -> int:
        store = self.store
        seq = store.next_sender_seq
        data = encode(msg_type, fields, begin_string=self._begin_b, sender=self._sender_b,
                      target=self._target_b, seq=seq, sending_time=format_utc_timestamp(now),
                      extra_header=extra_header)
        store.set_next_sender_seq(seq + 1)
        self._last_sent = now
        out.append(Send(data, seq, msg_type))
        return seq

    def _add_credentials(self, fields: list) -> None:
        if self.config.username is not None:
            fields.append((553, self.config.username))
        if self.config.password is not None:
            fields.append((554, self.config.password))

    def _send_logout(self, out: list, text: str, now: int) -> None:
        self._send(out, "5", [(58, text)] if text else [], now)
        self._state = LOGOUT_SENT
        self._logout_at = now
        out.append(SessionEvent("logout_sent", text))

    def _fatal_logout(self, out: list, text: str, now: int) -> None:
        """Logout after a serious error: then only wait for the Logout reply or the timeout."""
        out.append(SessionEvent("error", text))
        self._send_logout(out, text, now)
        self._fatal = True

    def _logout_and_disconnect(self, out: list, text: str, now: int) -> None:
        out.append(SessionEvent("error", text))
        self._send(out, "5", [(58, text)], now)
        self._disconnect(out, text)

    def _disconnect(self, out: list, reason: str) -> None:
        self._leave(out, reason)
        out.append(Disconnect(reason))
        self._state = DISCONNECTED
        self._reset_connection(self._now)

    def _leave(self, out: list, text: str) -> None:
        if self._logged_on:
            self._logged_on = False
            out.append(SessionEvent("logged_out", text))

    def _reset_connection(self, now: int) -> None:
        self._reader.clear()
        self._fatal = False
        self._queue.clear()
        self._gap_until = 0
        self._resend = None
        self._test_req_at = None
        self._connected_at = self._last_recv = self._last_sent = now

    def _reject(self, out: list, msg: FixMessage, seq: int, rej: Reject, now: int) -> None:
        mt = msg.get(35, b"")
        text = rej.describe().replace("\x01", " ")
        ref_type = [(372, mt)] if mt else []
        if rej.business:
            fields: list = [(45, seq), *ref_type]
            if rej.ref_id:
                fields.append((379, rej.ref_id.replace("\x01", " ")))
            fields += [(380, rej.reason), (58, text)]
            self._send(out, "j", fields, now)
        else:
            fields = [(45, seq)]
            if rej.ref_tag is not None:
                fields.append((371, rej.ref_tag))
            fields += [*ref_type, (373, rej.reason), (58, text)]
            self._send(out, "3", fields, now)
        out.append(SessionEvent("reject_sent", f"seq {seq} MsgType {mt.decode('latin-1')}: "
                                               f"{text}"))

    def _send_resend_request(self, out: list, begin: int, now: int) -> None:
        self._send(out, "2", [(7, begin), (16, 0)], now)
        self._gap_progress_at = now

    # ------------------------------------------------------------------ inbound dispatch
    def _consume(self, seq: int) -> None:
        self.store.set_next_target_seq(seq + 1)
        self._gap_progress_at = self._now

    def _on_message(self, msg: FixMessage, now: int, out: list) -> None:
        st = self._state
        mt = msg.msg_type
        if st == ACTIVE and not self._fatal:
            # the common case first: an in-sequence message of a logged-on session
            if _in_sequence is not None and _in_sequence(
                    msg, self._begin_b, self._target_b, self._sender_b,
                    self.store.next_target_seq, now, self._tolerance_ns):
                self._process(msg, self.store.next_target_seq, now, out, mt)
                if self._queue or self._gap_until:
                    self._drain(now, out)
                return
            get = msg.get
            raw_seq = get(34)
            if (get(8) == self._begin_b and raw_seq is not None and raw_seq.isdigit()
                    and len(raw_seq) <= 18 and mt != "4" and mt != "A"
                    and get(49) == self._target_b and get(56) == self._sender_b):
                seq = int(raw_seq)
                if seq >= 1 and seq == self.store.next_target_seq:
                    sent_ns = _ts(get(52))
                    if sent_ns is None or abs(sent_ns - now) <= self._tolerance_ns:
                        self._process(msg, seq, now, out, mt)
                        if self._queue or self._gap_until:
                            self._drain(now, out)
                        return
        if st == AWAITING_LOGON or st == LOGON_SENT:
            if mt != "A":
                out.append(SessionEvent("error", f"first message not a logon (MsgType {mt})"))
                self._disconnect(out, "first message not a logon")
            else:
                self._on_logon(msg, now, out)
            return
        if st == LOGOUT_RECEIVED:
            return
        if self._fatal:
            if mt == "5":
                if _int(msg.get(34)) == self.store.next_target_seq:
                    self._consume(self.store.next_target_seq)
                self._disconnect(out, "logout complete")
            return
        if msg.get(8) != self._begin_b:
            self._logout_and_disconnect(out, "Incorrect BeginString", now)
            return
        raw_seq = msg.get(34)
        seq = _int(raw_seq)
        reset_mode = mt == "4" and msg.get(123) != b"Y"
        if seq is None or (seq < 1 and not reset_mode):
            self._logout_and_disconnect(out, "MsgSeqNum(34) missing or invalid", now)
            return
        expected = self.store.next_target_seq
        sender, target = msg.get(49), msg.get(56)
        if sender != self._target_b or target != self._sender_b:
            bad = 49 if sender != self._target_b else 56
            reason = R.REQUIRED_TAG_MISSING if msg.get(bad) is None else R.COMPID_PROBLEM
            self._reject(out, msg, seq, Reject(reason, bad, REJECT_TEXT[R.COMPID_PROBLEM]
                                               if reason == R.COMPID_PROBLEM else ""), now)
            if seq == expected:
                self._consume(seq)
            self._fatal_logout(out, "CompID problem", now)
            return
        sent_ns = _ts(msg.get(52))
        if sent_ns is not None and abs(sent_ns - now) > self._tolerance_ns:
            self._reject(out, msg, seq, Reject(R.SENDING_TIME_ACCURACY, 52), now)
            if seq == expected:
                self._consume(seq)
            self._fatal_logout(out, "SendingTime accuracy problem", now)
            return
        if mt == "A" and msg.get(141) == b"Y":
            self._on_logon(msg, now, out)  # in-session sequence reset
            return
        if reset_mode:
            self._on_sequence_reset(msg, seq, now, out)
            return
        if seq > expected:
            self._on_too_high(msg, seq, expected, now, out)
        elif seq < expected:
            self._on_too_low(msg, seq, expected, now, out)
        else:
            self._process(msg, seq, now, out)
            self._drain(now, out)

    def _on_too_high(self, msg: FixMessage, seq: int, expected: int, now: int,
                     out: list) -> None:
        mt = msg.msg_type
        handled = False
        if mt == "5":
            out.append(SessionEvent("warning", f"Logout with MsgSeqNum {seq} while expecting "
                                               f"{expected}; the gap stays open"))
            self._on_logout(now, out)
            return
        if mt == "2" and self._check_common(msg, mt) is None:
            handled = self._serve_resend_request(msg, seq, now, out) is None
        queue = self._queue
        if seq not in queue:
            if len(queue) < self.config.max_queued:
                queue[seq] = (msg, handled)
            else:
                out.append(SessionEvent("warning", f"inbound queue full, dropped seq {seq}"))
        if self._gap_until:
            self._gap_until = max(self._gap_until, seq)
        elif self._state == ACTIVE:  # no ResendRequest once our Logout has gone out
            self._gap_until = seq
            out.append(SessionEvent("gap_detected", f"expected {expected}, received {seq}"))
            self._send_resend_request(out, expected, now)

    def _on_too_low(self, msg: FixMessage, seq: int, expected: int, now: int,
                    out: list) -> None:
        if msg.get(43) == b"Y":
            rej = self._check_poss_dup(msg, msg.msg_type)
            if rej is not None:
                self._reject(out, msg, seq, rej, now)
            else:
                out.append(SessionEvent("duplicate_ignored", f"seq {seq} already received"))
            return
        self._logout_and_disconnect(
            out, f"MsgSeqNum too low, expecting {expected} but received {seq}", now)

    def _drain(self, now: int, out: list) -> None:
        queue = self._queue
        store = self.store
        while queue and (self._state == ACTIVE or self._state == LOGOUT_SENT) \
                and not self._fatal:
            expected = store.next_target_seq
            entry = queue.pop(expected, None)
            if entry is None:
                break
            msg, handled = entry
            if handled:
                self._consume(expected)
            else:
                self._process(msg, expected, now, out)
        if self._gap_until and store.next_target_seq > self._gap_until:
            self._gap_until = 0
            out.append(SessionEvent("gap_filled", f"next expected {store.next_target_seq}"))
            if queue and self._state == ACTIVE and not self._fatal:
                self._prune_queue()
                if queue:
                    self._gap_until = max(queue)
                    out.append(SessionEvent("gap_detected", "messages still missing"))
                    self._send_resend_request(out, store.next_target_seq, now)

    def _prune_queue(self) -> None:
        expected = self.store.next_target_seq
        for s in [s for s in self._queue if s < expected]:
            del self._queue[s]

    # -------------------------------------------------------------- in-sequence checks
    def _check_poss_dup(self, msg: FixMessage, mt: str) -> Optional[Reject]:
        orig = msg.get(122)
        if orig is None:
            if mt == "4":  # gap fills are commonly sent without OrigSendingTime
                return None
            return Reject(R.REQUIRED_TAG_MISSING, 122)
        orig_ns = _ts(orig)
        if orig_ns is None:
            return Reject(R.INCORRECT_DATA_FORMAT, 122)
        sent_ns = _ts(msg.get(52))
        if sent_ns is not None and orig_ns > sent_ns:
            return Reject(R.SENDING_TIME_ACCURACY, 122)
        return None

    def _check_common(self, msg: FixMessage, mt: str) -> Optional[Reject]:
        """Header-level checks every in-sequence message must pass."""
        problem = _check_header(msg)
        if problem is None:
            return None
        if problem is NotImplemented:
            problem = _check_header_py(msg)
            if problem is None:
                return None
        if problem is True:
            return self._check_poss_dup(msg, mt)
        return Reject(*problem)

    def _process(self, msg: FixMessage, seq: int, now: int, out: list,
                 mt: Optional[str] = None) -> None:
        """Handle a message whose MsgSeqNum is the expected one."""
        if mt is None:
            mt = msg.msg_type
        # _check_common, its common case (the compiled check passes) first
        rej = None if _check_header(msg) is None else self._check_common(msg, mt)
        if rej is not None:
            self._reject(out, msg, seq, rej, now)
            if mt != "4":
                self._consume(seq)
            return
        if mt not in self._plain_app_types:
            if mt in ADMIN_MSG_TYPES:
                self._process_admin(msg, mt, seq, now, out)
                return
            if mt not in self._app_types and not mt.startswith("U"):
                self._reject(out, msg, seq, Reject(R.INVALID_MSG_TYPE, 35), now)
                self._consume(seq)
                return
            supported = self.config.supported_app_msg_types
            if supported is not None and mt not in supported:
                self._reject(out, msg, seq,
                             Reject(BusinessRejectReason.UNSUPPORTED_MESSAGE_TYPE,
                                    business=True), now)
                self._consume(seq)
                return
        if self.validator is not None:
            try:
                rej = self.validator(msg)
            except Exception as e:  # a validator bug must not kill the session
                out.append(SessionEvent("error", f"validator raised {e!r}"))
                rej = Reject(R.OTHER, text="Message could not be validated")
            if rej is not None and not isinstance(rej, Reject):
                out.append(SessionEvent("error", f"validator returned {rej!r}"))
                rej = Reject(R.OTHER, text="Message could not be validated")
            if rej is not None:
                self._reject(out, msg, seq, rej, now)
                self._consume(seq)
                return
        self.store.set_next_target_seq(seq + 1)        # _consume(seq), spelled out
        self._gap_progress_at = self._now
        out.append(Deliver(msg, seq))

    def _process_admin(self, msg: FixMessage, mt: str, seq: int, now: int, out: list) -> None:
        if mt == "0":
            self._consume(seq)
        elif mt == "1":
            req_id = msg.get(112)
            self._consume(seq)
            if req_id is None:
                self._reject(out, msg, seq, Reject(R.REQUIRED_TAG_MISSING, 112), now)
            else:
                self._send(out, "0", [(112, req_id)], now)
        elif mt == "2":
            rej = self._serve_resend_request(msg, seq, now, out)
            self._consume(seq)
            if rej is not None:
                self._reject(out, msg, seq, rej, now)
        elif mt == "3":
            self._consume(seq)
            ref = msg.get(45, b"?").decode("latin-1")
            text = msg.get(58, b"").decode("latin-1")
            out.append(SessionEvent("reject_received", f"RefSeqNum {ref}: {text}"))
        elif mt == "4":
            self._on_gap_fill(msg, seq, now, out)
        elif mt == "5":
            self._consume(seq)
            self._on_logout(now, out)
        else:  # "A" without ResetSeqNumFlag while logged on
            self._consume(seq)
            self._logout_and_disconnect(out, "Logon received while already logged on", now)

    def _on_logout(self, now: int, out: list) -> None:
        if self._state == LOGOUT_SENT:
            self._disconnect(out, "logout complete")
            return
        self._leave(out, "logout requested by counterparty")
        self._send(out, "5", [], now)
        self._resend = None
        self._state = LOGOUT_RECEIVED
        self._logout_at = now

    def _on_gap_fill(self, msg: FixMessage, seq: int, now: int, out: list) -> None:
        raw = msg.get(36)
        new = _int(raw)
        if new is None:
            reason = R.REQUIRED_TAG_MISSING if raw is None else R.INCORRECT_DATA_FORMAT
            self._reject(out, msg, seq, Reject(reason, 36), now)
            return
        if new <= seq:
            self._reject(out, msg, seq, Reject(
                R.VALUE_INCORRECT, 36,
                f"Attempt to lower sequence number, invalid value NewSeqNo={new}"), now)
            return
        self.store.set_next_target_seq(new)
        self._gap_progress_at = now
        out.append(SessionEvent("sequence_reset", f"gap fill {seq} -> {new}"))
        self._prune_queue()

    def _on_sequence_reset(self, msg: FixMessage, seq: int, now: int, out: list) -> None:
        """SequenceReset in Reset mode: MsgSeqNum is ignored."""
        rej = self._check_common(msg, "4")
        raw = msg.get(36)
        new = _int(raw)
        if rej is None and new is None:
            reason = R.REQUIRED_TAG_MISSING if raw is None else R.INCORRECT_DATA_FORMAT
            rej = Reject(reason, 36)
        if rej is not None:
            self._reject(out, msg, seq, rej, now)
            return
        expected = self.store.next_target_seq
        assert new is not None
        if new > expected:
            self.store.set_next_target_seq(new)
            self._gap_progress_at = now
            out.append(SessionEvent("sequence_reset", f"reset {expected} -> {new}"))
            self._prune_queue()
            self._drain(now, out)
        elif new == expected:
            out.append(SessionEvent("warning", f"SequenceReset to the expected {new}"))
        else:
            self._reject(out, msg, seq, Reject(R.VALUE_INCORRECT, 36), now)

    # ------------------------------------------------------------------------ logon
    def _logon_failed(self, out: list, text: str, now: int) -> None:
        out.append(SessionEvent("error", f"Logon refused: {text}"))
        if self.config.logout_on_failed_logon:
            self._send(out, "5", [(58, text)], now)
        self._disconnect(out, text)

    def _on_logon(self, msg: FixMessage, now: int, out: list) -> None:
        cfg = self.config
        in_session = self._state != AWAITING_LOGON and self._state != LOGON_SENT
        if msg.get(8) != self._begin_b:
            return self._logon_failed(out, "Incorrect BeginString", now)
        if msg.get(49) != self._target_b or msg.get(56) != self._sender_b:
            return self._logon_failed(out, "CompID problem", now)
        seq = _int(msg.get(34))
        if seq is None or seq < 1:
            return self._logon_failed(out, "MsgSeqNum(34) missing or invalid", now)
        sent_ns = _ts(msg.get(52))
        if sent_ns is None:
            return self._logon_failed(out, "SendingTime(52) missing or invalid", now)
        if abs(sent_ns - now) > self._tolerance_ns:
            return self._logon_failed(out, "SendingTime accuracy problem", now)
        if msg.get(98) != b"0":
            return self._logon_failed(out, "EncryptMethod(98) must be 0", now)
        hb = _int(msg.get(108))
        if cfg.role == "acceptor" or in_session:
            if hb is None or not (cfg.min_heartbeat_s <= hb <= cfg.max_heartbeat_s):
                return self._logon_failed(out, "Invalid HeartBtInt(108)", now)
        else:
            hb = cfg.heartbeat_s
        if cfg.role == "acceptor" and cfg.password is not None:
            ok = hmac.compare_digest(msg.get(554, b""), cfg.password.encode())
            if cfg.username is not None:
                ok = hmac.compare_digest(msg.get(553, b""), cfg.username.encode()) and ok
            if not ok:
                return self._logon_failed(out, "Invalid username or password", now)
        reset_flag = msg.get(141) == b"Y"
        did_reset = False
        if cfg.role == "acceptor" or in_session:
            if reset_flag and cfg.reset_on_logon == "refuse":
                return self._logon_failed(out, "ResetSeqNumFlag not accepted", now)
            if reset_flag or (cfg.reset_on_logon == "always" and not in_session):
                self.store.reset(now)
                self._queue.clear()
                self._gap_until = 0
                self._resend = None
                did_reset = True
                out.append(SessionEvent("reset", "sequence numbers reset by Logon"))
        elif reset_flag and self.store.next_target_seq != 1:
            self.store.set_next_target_seq(1)  # the acceptor reset on our behalf
        expected = self.store.next_target_seq
        if seq < expected:
            return self._logon_failed(
                out, f"MsgSeqNum too low, expecting {expected} but received {seq}", now)
        if cfg.role == "acceptor" or in_session:
            fields: list = [(98, 0), (108, hb)]
            if did_reset:
                fields.append((141, "Y"))
            self._send(out, "A", fields, now)
        self._state = ACTIVE
        self._hb_ns = hb * _S
        grace = cfg.test_request_grace_s
        self._grace_ns = int(grace * _S) if grace is not None else self._hb_ns // 5
        if not self._logged_on:
            self._logged_on = True
            out.append(SessionEvent("logged_on", f"HeartBtInt {hb}"))
        if seq == expected:
            self._consume(seq)
        else:
            self._queue[seq] = (msg, True)
            self._gap_until = seq
            out.append(SessionEvent("gap_detected", f"Logon: expected {expected}, "
                                                    f"received {seq}"))
            self._send_resend_request(out, expected, now)
        next_expected = _int(msg.get(789))
        if next_expected is not None and 1 <= next_expected < self.store.next_sender_seq - 1:
            self._start_resend(next_expected, self.store.next_sender_seq - 2, now, out)

    # ---------------------------------------------------------------------- resending
    def _serve_resend_request(self, msg: FixMessage, seq: int, now: int,
                              out: list) -> Optional[Reject]:
        raw_begin, raw_end = msg.get(7), msg.get(16)
        begin, end = _int(raw_begin), _int(raw_end)
        if raw_begin is None:
            return Reject(R.REQUIRED_TAG_MISSING, 7)
        if raw_end is None:
            return Reject(R.REQUIRED_TAG_MISSING, 16)
        if begin is None:
            return Reject(R.INCORRECT_DATA_FORMAT, 7)
        if end is None:
            return Reject(R.INCORRECT_DATA_FORMAT, 16)
        if begin < 1:
            return Reject(R.VALUE_INCORRECT, 7)
        if end and end < begin:
            return Reject(R.VALUE_INCORRECT, 16)
        last = self.store.next_sender_seq - 1
        if end == 0 or end > last:
            end = last
        out.append(SessionEvent("resend_requested", f"{begin}..{end}"))
        if begin > end:
            out.append(SessionEvent("warning", f"ResendRequest from {begin}: nothing sent "
                                               f"beyond {last}"))
            return None
        self._start_resend(begin, end, now, out)
        return None

    def _start_resend(self, begin: int, end: int, now: int, out: list) -> None:
        self._resend = [begin, end]
        self._pump_resend(now, out)

    def _gap_fill(self, out: list, seq: int, new_seq: int, now: int) -> None:
        ts = format_utc_timestamp(now)
        data = encode("4", [(123, "Y"), (36, new_seq)], begin_string=self._begin_b,
                      sender=self._sender_b, target=self._target_b, seq=seq, sending_time=ts,
                      extra_header=((43, "Y"), (122, ts)))
        out.append(Send(data, seq, "4", True))

    def _pump_resend(self, now: int, out: list) -> None:
        """Send the next chunk (at most max_resend_chunk stored messages) of a resend."""
        assert self._resend is not None
        cursor, end = self._resend
        limit = max(1, self.config.max_resend_chunk)
        count = 0
        ts = format_utc_timestamp(now)
        for seq, data in self.store.get_range(cursor, end, limit):
            count += 1
            try:
                old = parse(data)
            except ValueError:
                out.append(SessionEvent("error", f"stored message {seq} is unreadable; "
                                                 "gap-filled instead"))
                continue
            if seq > cursor:
                self._gap_fill(out, cursor, seq, now)
            mt = old.get(35, b"")
            body = [(t, v) for t, v in old.fields if t not in _RESEND_SKIP]
            extra = ((43, "Y"), (122, old.get(52, ts)))
            resent = encode(mt, body, begin_string=self._begin_b, sender=self._sender_b,
                            target=self._target_b, seq=seq, sending_time=ts,
                            extra_header=extra)
            out.append(Send(resent, seq, mt.decode("latin-1"), True))
            cursor = seq + 1
        self._last_sent = now
        if count < limit:
            if cursor <= end:
                self._gap_fill(out, cursor, end + 1, now)
            self._resend = None
            out.append(SessionEvent("resend_done", f"through {end}"))
        else:
            self._resend = [cursor, end]
