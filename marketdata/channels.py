"""Feed addresses and UDP multicast sockets for the FAST feed (spec/feed.md).

Contract:
- A ``Channel`` is one logical stream of datagrams (``incremental``, ``snapshot``,
  ``instruments``) published identically on two feeds, ``a`` and ``b`` (each a multicast
  ``(group, port)``). ``ChannelSet`` is the group of channels one publisher owns; the index
  server, when it publishes its own channel set, builds one the same way.
- ``sender(interface, ttl, loopback)`` is a non-blocking UDP socket with ``IP_MULTICAST_IF`` =
  ``interface``, ``IP_MULTICAST_TTL`` = ``ttl`` and ``IP_MULTICAST_LOOP`` = ``loopback``; the
  publisher connects one to each feed of each channel.
- ``receiver(group, port, interface)`` is a non-blocking UDP socket bound to ``(group, port)``
  (so it sees only that group's datagrams, several processes may bind the same feed:
  ``SO_REUSEADDR``/``SO_REUSEPORT``) that has joined ``group`` on ``interface``
  (``IP_ADD_MEMBERSHIP``), with a large receive buffer.
- ``multicast_loopback_works(interface)`` sends one datagram to itself through a multicast
  group and says whether it came back: tests skip with a clear message when it does not.
"""
from __future__ import annotations

import os
import select
import socket
import struct
from dataclasses import dataclass

INCREMENTAL, SNAPSHOT, INSTRUMENTS = "incremental", "snapshot", "instruments"
CHANNELS = (INCREMENTAL, SNAPSHOT, INSTRUMENTS)

RECV_BUFFER = 8 << 20


def parse_feed(text: str) -> tuple[str, int]:
    group, _, port = text.rpartition(":")
    return group, int(port)


def format_feed(feed: tuple[str, int]) -> str:
    return f"{feed[0]}:{feed[1]}"


@dataclass(frozen=True)
class Channel:
    name: str
    a: tuple[str, int]
    b: tuple[str, int]

    @property
    def feeds(self) -> tuple[tuple[str, int], tuple[str, int]]:
        return (self.a, self.b)

    def describe(self) -> str:
        return f"A {format_feed(self.a)} B {format_feed(self.b)}"


@dataclass(frozen=True)
class ChannelSet:
    incremental: Channel
    snapshot: Channel
    instruments: Channel

    def __getitem__(self, name: str) -> Channel:
        return getattr(self, name)

    def __iter__(self):
        return iter((self.incremental, self.snapshot, self.instruments))

    @classmethod
    def from_config(cls, md) -> "ChannelSet":
        """From ``bourse.config.MarketDataConfig`` (or anything with the same six fields)."""
        return cls(*(Channel(n, parse_feed(getattr(md, f"{n}_a")), parse_feed(getattr(md, f"{n}_b")))
                     for n in CHANNELS))


def sender(interface: str = "127.0.0.1", ttl: int = 1, loopback: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if loopback else 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def receiver(group: str, port: int, interface: str = "127.0.0.1",
             rcvbuf: int = RECV_BUFFER) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except OSError:
            pass
        s.bind((group, port))
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def multicast_loopback_works(interface: str = "127.0.0.1", group: str = "239.255.71.99",
                             timeout: float = 1.0) -> tuple[bool, str]:
    """(ok, reason): can this host send a multicast datagram to itself on ``interface``?"""
    port = 40000 + os.getpid() % 20000
    try:
        r = receiver(group, port, interface, rcvbuf=1 << 16)
    except OSError as exc:
        return False, f"cannot join {group} on {interface}: {exc}"
    try:
        s = sender(interface, 0, True)
    except OSError as exc:
        r.close()
        return False, f"cannot open a multicast sender on {interface}: {exc}"
    try:
        token = os.urandom(8)
        try:
            s.sendto(token, (group, port))
        except OSError as exc:
            return False, f"cannot send to {group}:{port} via {interface}: {exc}"
        ready, _, _ = select.select([r], [], [], timeout)
        if not ready:
            return False, (f"a datagram sent to {group}:{port} via {interface} did not come back "
                           f"(multicast loopback unavailable; on Linux 'ip link set lo multicast "
                           f"on' may help)")
        data = r.recv(64)
        return data == token, "ok" if data == token else "unexpected datagram"
    finally:
        s.close()
        r.close()
