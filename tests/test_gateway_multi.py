"""Several gateways against one engine: one consistent order state for a firm's sessions."""
from __future__ import annotations

import socket
import time

import pytest
import simplefix

from tests.procs import TEST_INSTRUMENTS, write_config

pytestmark = pytest.mark.integration

GATEWAYS = """
[[gateways]]
node_id = "gwA"
port = 0
store_dir = "{store}/gwA"

[[gateways.sessions]]
comp_id = "BRK1A"
firm = "FIRM1"

[[gateways]]
node_id = "gwB"
port = 0
store_dir = "{store}/gwB"

[[gateways.sessions]]
comp_id = "BRK1B"
firm = "FIRM1"

[[gateways.sessions]]
comp_id = "BRK2B"
firm = "FIRM2"
"""


class RawFix:
    """A minimal blocking FIX 4.4 initiator for tests (simplefix as the reference codec)."""

    def __init__(self, port: int, comp_id: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.comp_id = comp_id
        self.seq = 0
        self.parser = simplefix.FixParser()

    def send(self, msg_type: str, *fields) -> None:
        self.seq += 1
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4")
        m.append_pair(35, msg_type)
        m.append_pair(49, self.comp_id)
        m.append_pair(56, "BOURSE")
        m.append_pair(34, self.seq)
        m.append_utc_timestamp(52, precision=3)
        for tag, value in fields:
            m.append_pair(tag, value)
        self.sock.sendall(m.encode())

    def recv(self, msg_type: str, timeout: float = 5.0) -> simplefix.FixMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.parser.get_message()
            if m is None:
                self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                self.parser.append_buffer(data)
                continue
            if m.get(35) == msg_type.encode():
                return m
        raise AssertionError(f"{self.comp_id}: no {msg_type} within {timeout} s")

    def logon(self) -> None:
        self.send("A", (98, 0), (108, 30))
        self.recv("A")

    def close(self) -> None:
        self.sock.close()


def order(clid: str, side: int, qty: int, price: str, account: str):
    return ((11, clid), (1, account), (55, "SBER"), (54, side), (60, "20261123-10:00:00.000"),
            (38, qty), (40, 2), (44, price))


def test_firm_state_is_consistent_across_gateways(tmp_path, procs):
    store = tmp_path / "gw"
    cfg = write_config(tmp_path, instruments=TEST_INSTRUMENTS + GATEWAYS.format(store=store))
    engine = procs(["engine", "--config", str(cfg)])
    engine.wait_ready()
    oe = engine.ready["order_entry"]
    gw_a = procs(["gateway", "--config", str(cfg), "--node", "gwA", "--engine", oe])
    gw_b = procs(["gateway", "--config", str(cfg), "--node", "gwB", "--engine", oe])
    port_a = int(gw_a.wait_ready()["fix"].rsplit(":", 1)[1])
    port_b = int(gw_b.wait_ready()["fix"].rsplit(":", 1)[1])
    a, b, c = RawFix(port_a, "BRK1A"), RawFix(port_b, "BRK1B"), RawFix(port_b, "BRK2B")
    try:
        for client in (a, b, c):
            client.logon()
        a.send("D", *order("a1", 1, 30, "279.00", "A1"))
        new = a.recv("8")
        assert new.get(150) == b"0"
        order_id = new.get(37)
        # the firm's other session, on the other gateway, sees the order
        b.send("H", (37, order_id.decode()), (11, "?"), (55, "SBER"), (54, 1))
        status = b.recv("8")
        assert status.get(150) == b"I" and status.get(39) == b"0" and status.get(11) == b"a1", str(status)
        # another firm's session fills part of it; both views agree on the new state
        c.send("D", *order("c1", 2, 10, "279.00", "B1"))
        fill = a.recv("8")
        while fill.get(150) != b"F":
            fill = a.recv("8")
        assert fill.get(39) == b"1" and fill.get(14) == b"10" and fill.get(151) == b"20"
        for client in (a, b):
            client.send("AF", (584, f"ms-{client.comp_id}"), (585, 7))
            rep = client.recv("8")
            assert (rep.get(11), rep.get(39), rep.get(14), rep.get(151)) == (
                b"a1", b"1", b"10", b"20")
        # the firm cancels it from the other gateway by OrderID
        b.send("F", (41, "a1"), (37, order_id.decode()), (11, "b-cxl"), (55, "SBER"), (54, 1),
               (60, "20261123-10:00:01.000"))
        done = b.recv("8")
        while done.get(150) != b"4":
            done = b.recv("8")
        assert done.get(39) == b"4"
    finally:
        for client in (a, b, c):
            client.close()
