"""Load shedding on real sockets: a worker that fell behind drops new requests
from its UDP queue and still answers every request inside a dialog."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import sys

import pytest

from benchmarks.presence_bench import Watchers, edge_config, ok_for
from edgeproxy.transport.udp import BUFFER_BYTES, bind_socket, buffer_shortfall, receive_queue
from tests.helpers import eventually, free_port, metric, options, running_proxy, status_of
from tests.integration.test_presence_wire import publish

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


def test_the_answers_to_a_large_fan_out_are_not_taken_for_an_overload() -> None:
    """A PUBLISH fanned out to many watchers brings their 200s back all at once: a burst the
    worker reads in a few ms, not a backlog. The next new request, sent once, is answered."""
    cost, buffer = queue_cost(ok_for(options("sip:127.0.0.1").replace(b"OPTIONS", b"NOTIFY", 1)))
    count = 2000
    # their 200s together: three times the threshold, while a turn of the loop leaves a few dozen
    # (a buffer capped by a small rmem_max cannot hold them all: the test then only checks no harm)
    threshold = min(0.5, round(count * cost / (3 * buffer), 4))
    ops = free_port()
    with running_proxy(f'{edge_config(count)}[limits]\noverload_queue = {threshold}\n'
                       f'[metrics]\nlisten = "127.0.0.1:{ops}"\n') as proxy:
        watchers = Watchers()
        try:
            watchers.subscribe(proxy.port, count)
            assert watchers.wait(count, timeout=10), (watchers.notifies, count)
            assert status_of(publish(proxy.port)) == 200
            assert watchers.wait(2 * count, timeout=10, poll=0.0005), (watchers.notifies, count)
            # at once, while their 200s are still coming in; sent once: no retransmission to save it
            assert status_of(proxy.udp(options(proxy.uri))) == 200
            assert metric(ops, "edgeproxy_overload_dropped_total") == 0
        finally:
            watchers.close()
