"""RFC 4475 over the wire: each torture message sent over UDP to a running proxy
(its default configuration) gets the manifest's outcome."""

from __future__ import annotations

import pathlib
import re
import socket
import time
from collections.abc import Iterator

import pytest

from tests.helpers import Proxy, running_proxy
from tests.unit.test_conformance import manifest

PARSER_ERRORS = {400, 505, 513}


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    with running_proxy() as p:
        yield p


@pytest.fixture(scope="module")
def tcp_proxy() -> Iterator[Proxy]:
    """Another instance: the same message again within 32 s is, per RFC 3261
    §17.2.3, a retransmission of the first (transport is not in the key)."""
    with running_proxy() as p:
        yield p


def reply_port(data: bytes) -> int:
    """Where the proxy will answer: the top Via's port (5060 when absent), or our
    source port with rport. Sending from that very port catches both."""
    head = data.split(b"\r\n\r\n")[0].decode("utf-8", "replace")
    match = re.search(r"(?im)^(?:via|v)\s*:\s*SIP\s*/\s*2\.0\s*/\s*(\w+)\s+([^;,\s]+)", head)
    if match:
        port = match.group(2).rsplit(":", 1)
        if len(port) == 2 and port[1].isdigit() and not match.group(2).startswith("["):
            return int(port[1])
        return 5061 if match.group(1).upper() == "TLS" else 5060  # RFC 3261 §18.2.2: the transport's default
    return 5060


def exchange(proxy: Proxy, data: bytes, client_ip: str) -> int | None:
    """The final status answered to `data`, or None when nothing comes back.

    Each message comes from its own address: an unACKed final response to an
    INVITE is retransmitted (Timer G) and must not land in the next test."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((client_ip, reply_port(data)))
        s.sendto(data, ("127.0.0.1", proxy.port))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                reply = s.recv(65535)
            except TimeoutError:
                return None
            if reply.startswith(b"SIP/2.0 ") and not reply.startswith(b"SIP/2.0 100"):
                return int(reply[8:11])
    return None


@pytest.mark.parametrize("row", manifest(), ids=lambda r: pathlib.Path(r["file"]).stem)
def test_torture_message_over_udp(proxy: Proxy, conformance_dir: pathlib.Path, row: dict[str, str]) -> None:
    data = (conformance_dir / row["file"]).read_bytes()
    check(row, exchange(proxy, data, f"127.0.1.{manifest().index(row) + 1}"))
    assert proxy.proc.poll() is None  # still serving


def check(row: dict[str, str], status: int | None) -> None:
    expected = row["expected_response"].split("|")
    if "process" in expected and any(e.isdigit() for e in expected):
        return  # the manifest leaves the choice to the element
    if expected == ["drop"]:
        assert status is None, f"a response must be dropped, got {status}"
    elif expected == ["process"]:
        assert status not in PARSER_ERRORS, f"handled messages get no parser error, got {status}"
    else:
        assert status is not None and str(status) in expected, f"want {expected}, got {status}"


def exchange_tcp(proxy: Proxy, data: bytes) -> int | None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=1.0) as s:
        s.sendall(data)
        buffer = b""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65535)
            except TimeoutError:
                break
            if not chunk:
                break
            buffer += chunk
            for reply in buffer.split(b"\r\n\r\n"):
                reply = reply.lstrip(b"\r\n")
                if reply.startswith(b"SIP/2.0 ") and not reply.startswith(b"SIP/2.0 100"):
                    return int(reply[8:11])
    return None


@pytest.mark.parametrize("row", manifest(), ids=lambda r: pathlib.Path(r["file"]).stem)
def test_torture_message_over_tcp(tcp_proxy: Proxy, conformance_dir: pathlib.Path, row: dict[str, str]) -> None:
    data = (conformance_dir / row["file"]).read_bytes()
    if row["file"].endswith("clerr.dat"):
        # on a stream a Content-Length beyond the data means "the rest is coming" (RFC 3261 §18.3):
        # no answer yet (the 400 of the manifest is the datagram case, tested over UDP)
        assert exchange_tcp(tcp_proxy, data) is None
    else:
        check(row, exchange_tcp(tcp_proxy, data))
    assert tcp_proxy.proc.poll() is None
