"""Load shedding on real sockets: a worker that fell behind drops new requests
from its UDP queue and still answers every request inside a dialog."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import sys

import pytest

from edgeproxy.transport.udp import BUFFER_BYTES, bind_socket, buffer_shortfall, receive_queue
from tests.helpers import eventually, free_port, metric, options, running_proxy, status_of

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_MEMINFO is Linux's")


def queue_cost(datagram: bytes) -> tuple[int, int]:
    """What one such datagram takes of a receive buffer like the proxy's, and that buffer's size,
    as this kernel counts them."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as source:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
        sink.bind(("127.0.0.1", 0))
        for _ in range(50):
            source.sendto(datagram, sink.getsockname())
        queued, limit = receive_queue(sink)
        return queued // 50, limit


def replies(sock: socket.socket, quiet: float = 1.0) -> list[bytes]:
    """Everything that arrives until nothing has for `quiet` seconds."""
    sock.settimeout(quiet)
    got = []
    try:
        while True:
            got.append(sock.recv(65535))
    except TimeoutError:
        return got


def test_a_full_udp_queue_sheds_new_requests_not_dialogs(tmp_path: pathlib.Path) -> None:
    ops = free_port()
    with running_proxy(f'[limits]\noverload_queue = 0.05\n[metrics]\nlisten = "127.0.0.1:{ops}"\n') as proxy, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phones, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dialogs:
        for sock in (phones, dialogs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
            sock.bind(("127.0.0.1", 0))
        target = ("127.0.0.1", proxy.port)
        new = [options(proxy.uri, branch=f"z9hG4bKnew{i}", call_id=f"new-{i}") for i in range(20_000)]
        in_dialog = [options(proxy.uri, branch=f"z9hG4bKdlg{i}", call_id=f"dlg-{i}")
                     .replace(f"To: <{proxy.uri}>".encode(), f"To: <{proxy.uri}>;tag=callee{i}".encode())
                     for i in range(20)]
        cost, buffer = queue_cost(new[0])
        count = int(0.6 * buffer / cost)  # well past the threshold, well short of what the kernel drops
        assert status_of(proxy.udp(options(proxy.uri))) == 200  # its transaction keeps the timer tick going
        os.kill(proxy.proc.pid, signal.SIGSTOP)  # the worker falls behind while its queue fills
        try:
            for datagram in new[:count]:
                phones.sendto(datagram, target)
            for datagram in in_dialog:
                dialogs.sendto(datagram, target)
        finally:
            os.kill(proxy.proc.pid, signal.SIGCONT)
        answered_in_dialog = replies(dialogs)
        answered_new = replies(phones)
        assert sorted(status_of(r) for r in answered_in_dialog) == [200] * len(in_dialog)
        assert len(answered_new) < count / 2, (len(answered_new), count)
        assert metric(ops, "edgeproxy_overload_dropped_total") >= count / 2
        assert eventually(lambda: metric(ops, "edgeproxy_overloaded") == 0)
        assert status_of(proxy.udp(options(proxy.uri))) == 200  # drained: new requests are read again
        assert b"overload over" in proxy.log.read_bytes()


def test_a_receive_buffer_capped_below_what_was_asked_is_reported() -> None:
    """The kernel silently caps SO_RCVBUF at net.core.rmem_max; the proxy logs a warning then,
    since shedding's threshold is a share of what was granted."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as small:
        small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        assert buffer_shortfall(small) == 65536
    rmem_max = int(pathlib.Path("/proc/sys/net/core/rmem_max").read_text())
    with bind_socket("127.0.0.1", 0, socket.SOCK_DGRAM) as ours:
        assert buffer_shortfall(ours) == (None if rmem_max >= BUFFER_BYTES else rmem_max)
