"""The link between worker processes: branch marks, responses handed over, writes on a
sibling's connection, and who holds which connection (two links on real loopback sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edgeproxy.proxy.routing import branch
from edgeproxy.sip import ids
from edgeproxy.transport.base import Source, Target
from edgeproxy.transport.workers import Key, WorkerLink, WorkerRole
from tests.helpers import free_port


def test_every_branch_a_worker_writes_carries_its_mark() -> None:
    try:
        ids.set_worker(1)
        proxied, own = branch("0badcafe"), ids.new_branch()
    finally:
        ids.set_worker(None)
    response = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={proxied};rport=5060\r\n"
                f"Via: SIP/2.0/UDP 10.0.0.9;branch={own.replace('.w1', '.w0')}\r\n\r\n").encode()
    assert ids.branch_worker(response) == 1  # the top Via's, not a lower one
    assert ids.branch_worker(f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h ; BRANCH = {own}\r\n".encode()) == 1
    assert ids.branch_worker(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKabc.wx\r\n") is None
    assert ids.branch_worker(f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch={ids.new_branch()}\r\n".encode()) is None


class Worker:
    """One side of the link, recording what its sibling sent it."""

    def __init__(self, role: WorkerRole) -> None:
        self.delivered: list[tuple[bytes, Source]] = []
        self.written: list[tuple[bytes, Target]] = []
        self.connections: list[Key] = []
        self.link = WorkerLink(role, lambda d, s: self.delivered.append((d, s)),
                               lambda d, t: self.written.append((d, t)), lambda: list(self.connections))


async def settle(check: Callable[[], object]) -> bool:
    """Until `check()` holds (the sibling's datagram has been read), at most a second."""
    for _ in range(100):
        if check():
            return True
        await asyncio.sleep(0.01)
    return False


async def test_siblings_hand_over_responses_and_writes_and_know_each_others_connections() -> None:
    ports = (free_port(), free_port())
    a = Worker(WorkerRole("g", 0, ports))
    a.connections.append(("ws", "192.0.2.7", 40000))  # held before the sibling starts
    a.link.open()
    b = Worker(WorkerRole("g", 1, ports))
    b.link.open()  # its hello: a tells it what a holds
    try:
        assert await settle(lambda: b.link.holder("ws", ("192.0.2.7", 40000)) == 0)
        assert a.link.holder("ws", ("192.0.2.7", 40000)) is None  # own connections are not in the sibling map

        source = Source("udp", ("192.0.2.1", 5080), ("127.0.0.1", 5060))
        b.link.hand_over(0, b"SIP/2.0 200 OK\r\n\r\n", source)
        assert await settle(lambda: a.delivered)
        assert a.delivered == [(b"SIP/2.0 200 OK\r\n\r\n", source)]

        b.link.write_through(0, b"INVITE sip:x SIP/2.0\r\n\r\n", Target("ws", ("192.0.2.7", 40000)))
        assert await settle(lambda: a.written)
        assert a.written == [(b"INVITE sip:x SIP/2.0\r\n\r\n", Target("ws", ("192.0.2.7", 40000)))]

        b.link.announce(("tcp", "192.0.2.8", 5060), True)
        assert await settle(lambda: a.link.holder("tcp", ("192.0.2.8", 5060)) == 1)
        b.link.announce(("tcp", "192.0.2.8", 5060), False)
        assert await settle(lambda: a.link.holder("tcp", ("192.0.2.8", 5060)) is None)

        a.link.close()  # a stops: b forgets what a held
        assert await settle(lambda: b.link.holder("ws", ("192.0.2.7", 40000)) is None)
    finally:
        a.link.close()
        b.link.close()


async def test_frames_from_outside_the_group_are_ignored() -> None:
    import socket

    ports = (free_port(), free_port())
    a = Worker(WorkerRole("g", 0, ports))
    a.link.open()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(b"S ws 192.0.2.7 40000\nBYE sip:x SIP/2.0\r\n\r\n", ("127.0.0.1", ports[0]))
            stranger.sendto(b"U ws 192.0.2.7 40000\n", ("127.0.0.1", ports[0]))
        await asyncio.sleep(0.2)
        assert a.written == [] and a.link.holder("ws", ("192.0.2.7", 40000)) is None
    finally:
        a.link.close()

