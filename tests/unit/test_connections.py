"""Connection table caps and aliases, and UDP sockets shared between processes."""

from __future__ import annotations

import socket

from edgeproxy.transport.connections import ConnectionTable
from edgeproxy.transport.udp import bind_socket


class FakeConnection:
    def __init__(self, transport: str, ip: str, port: int) -> None:
        self.transport = transport
        self.remote = (ip, port)
        self.local = ("127.0.0.1", 5060)
        self.closed = False

    def send(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_caps_per_ip_and_total() -> None:
    table = ConnectionTable(max_total=3, max_per_ip=2)
    a, b = FakeConnection("tcp", "10.0.0.1", 1), FakeConnection("tcp", "10.0.0.1", 2)
    for conn in (a, b):
        assert table.admit(conn.remote[0])
        table.add(conn)
    assert not table.admit("10.0.0.1") and table.admit("10.0.0.2")
    table.add(FakeConnection("tls", "10.0.0.2", 1))
    assert not table.admit("10.0.0.3")  # total reached
    table.remove(a)
    assert table.admit("10.0.0.1") and len(table) == 2


def test_find_alias_and_closed_connections() -> None:
    table = ConnectionTable(10, 10)
    conn = FakeConnection("tcp", "10.0.0.1", 40000)
    table.add(conn)
    table.alias(conn, ("phone.example.com", 5060))
    assert table.find("tcp", ("10.0.0.1", 40000)) is conn
    assert table.find("tcp", ("phone.example.com", 5060)) is conn
    assert table.find("tls", ("10.0.0.1", 40000)) is None
    conn.closed = True
    assert table.find("tcp", ("10.0.0.1", 40000)) is None and len(table) == 0
    assert table.find("tcp", ("phone.example.com", 5060)) is None


def test_udp_port_shared_with_so_reuseport() -> None:
    first = bind_socket("127.0.0.1", 0, socket.SOCK_DGRAM)
    port = first.getsockname()[1]
    second = bind_socket("127.0.0.1", port, socket.SOCK_DGRAM)  # a second worker on the same port
    try:
        assert second.getsockname()[1] == port
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 200_000
    finally:
        first.close()
        second.close()
