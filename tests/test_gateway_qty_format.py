"""OrderQty with a decimal point gets an answer on an open session, never a dropped connection
(engine and gateway as processes, a raw FIX client on a socket)."""
from __future__ import annotations

import socket
import time

import pytest
import simplefix

from tests.fixclient import Stack, utc_now, write_fix_config

pytestmark = pytest.mark.integration


def _send(sock, seq: int, msg_type: str, fields: list) -> None:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4")
    m.append_pair(35, msg_type)
    m.append_pair(49, "BROKER1")
    m.append_pair(56, "BOURSE")
    m.append_pair(34, seq)
    m.append_pair(52, utc_now())
    for t, v in fields:
        m.append_pair(t, v)
    sock.sendall(m.encode())


def _read_until(sock, parser, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    got = []
    while time.monotonic() < deadline:
        msg = parser.get_message()
        if msg is not None:
            got.append(msg)
            if want(msg):
                return msg, got
            continue
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        assert data, f"connection closed; received {[str(m) for m in got]}"
        parser.append_buffer(data)
    raise AssertionError(f"no answer; received {[str(m) for m in got]}")


@pytest.mark.parametrize("qty, accepted", [("100.0", True), ("100.5", False), ("1e2", False)])
def test_decimal_order_qty_is_answered(procs, tmp_path, qty, accepted):
    stack = Stack(procs, write_fix_config(tmp_path, (("BROKER1", "FIRM1"),))).start()
    with socket.create_connection(stack.fix, timeout=10) as sock:
        parser = simplefix.FixParser()
        _send(sock, 1, "A", [(98, 0), (108, 30)])
        _read_until(sock, parser, lambda m: m.get(35) == b"A")
        _send(sock, 2, "D", [(11, "Q1"), (1, "A1"), (55, "SBER"), (54, 1), (60, utc_now()),
                             (38, qty), (40, 2), (44, "279.00")])
        answer, _ = _read_until(sock, parser, lambda m: m.get(35) in (b"8", b"3", b"j"))
        if accepted:                       # a whole number written with a decimal point
            assert answer.get(35) == b"8" and answer.get(150) == b"0"
            assert answer.get(38) in (b"100", b"100.0")
        else:                              # refused with a reason
            assert answer.get(35) in (b"8", b"3")
            assert answer.get(58)
            if answer.get(35) == b"8":
                assert answer.get(150) == b"8"
        _send(sock, 3, "0", [])            # the session is still open
        _send(sock, 4, "1", [(112, "still-there")])
        hb, _ = _read_until(sock, parser, lambda m: m.get(35) == b"0" and m.get(112))
        assert hb.get(112) == b"still-there"
