"""Calls from a trusted backend (SIPp) to registered users: NAT and Path."""

from __future__ import annotations

import pathlib
import secrets
import socket
import threading

from tests.helpers import free_port, running_proxy
from tests.interop.sipp import run_sipp


class Phone(threading.Thread):
    """A registered UA answering one call (INVITE → 180/200, ACK, BYE → 200)."""

    def __init__(self, ip: str, contact: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(20)
        self.contact = contact
        self.seen: list[str] = []  # first lines of what reached the phone
        self.invite = b""

    def register(self, edge_port: int, extra: str = "") -> bytes:
        ip, port = self.sock.getsockname()
        msg = (f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{secrets.token_hex(5)};rport\r\n"
               f"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: {secrets.token_hex(6)}\r\n"
               f"CSeq: 1 REGISTER\r\nContact: <{self.contact}>\r\nExpires: 300\r\nMax-Forwards: 70\r\n{extra}"
               "Content-Length: 0\r\n\r\n").encode()
        self.sock.sendto(msg, ("127.0.0.1", edge_port))
        return self.sock.recv(65535)

    def run(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            head = data.split(b"\r\n\r\n")[0].decode()
            first = head.split("\r\n")[0]
            self.seen.append(first)
            method = first.split(" ")[0]
            if method == "INVITE":
                self.invite = data
                for status in ("180 Ringing", "200 OK"):
                    self.sock.sendto(self._reply(head, status, True), peer)
            elif method == "BYE":
                self.sock.sendto(self._reply(head, "200 OK", False), peer)
                return

    def _reply(self, head: str, status: str, tag: bool) -> bytes:
        keep = [line for line in head.split("\r\n")[1:]
                if line.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq", "record-route")]
        keep = [line + ";tag=ph" if tag and line.lower().startswith("to:") and "tag=" not in line else line for line in keep]
        # behind NAT, the phone only knows its private address
        return ("\r\n".join([f"SIP/2.0 {status}", *keep, f"Contact: <{self.contact}>", "Content-Length: 0", "", ""])
                ).encode()


def trusted_config() -> str:
    return ('domains = ["example.com"]\n[registrar]\nauth = false\n'
            '[security]\ntrusted = ["127.0.0.2/32"]\n')


def test_backend_calls_a_user_behind_nat(tmp_path: pathlib.Path) -> None:
    with running_proxy(trusted_config()) as proxy:
        phone = Phone("127.0.0.3", "sip:alice@10.1.2.3:5060")
        assert phone.register(proxy.port).startswith(b"SIP/2.0 200")
        phone.start()
        code, output = run_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", "udp", calls=1, rate=1, workdir=tmp_path,
                                extra=["-s", "alice", "-i", "127.0.0.2", "-d", "50"])
        phone.join(10)
        assert code == 0, output
        # the INVITE went to where the phone really is, with its registered Contact as Request-URI
        assert phone.seen[0] == "INVITE sip:alice@10.1.2.3:5060 SIP/2.0"
        assert phone.seen[-1].startswith("BYE sip:alice@10.1.2.3:5060")  # the alias led the BYE through the pinhole
        assert "ACK sip:alice@10.1.2.3:5060 SIP/2.0" in phone.seen


def test_backend_call_follows_path(tmp_path: pathlib.Path) -> None:
    hop = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hop.bind(("127.0.0.4", 0))
    hop.settimeout(10)
    hop_port = hop.getsockname()[1]
    with running_proxy(trusted_config()) as proxy:
        phone = Phone("127.0.0.3", f"sip:alice@127.0.0.3:{free_port('127.0.0.3')}")
        reply = phone.register(proxy.port, f"Path: <sip:127.0.0.4:{hop_port};lr>\r\nSupported: path\r\n")
        assert reply.startswith(b"SIP/2.0 200") and b"Path: <sip:127.0.0.4" in reply
        t = threading.Thread(target=run_sipp, args=("uac_call.xml", f"127.0.0.1:{proxy.port}", "udp", 1, 1, tmp_path),
                             kwargs={"extra": ["-s", "alice", "-i", "127.0.0.2"], "timeout": 5}, daemon=True)
        t.start()
        data = hop.recv(65535).decode()
        lines = data.split("\r\n")
        assert lines[0] == f"INVITE {phone.contact} SIP/2.0"
        assert f"Route: <sip:127.0.0.4:{hop_port};lr>" in lines
        t.join(15)
    hop.close()


def test_client_cannot_relay_to_foreign_domain_or_unknown_user(tmp_path: pathlib.Path) -> None:
    from tests.helpers import options, status_of

    with running_proxy(trusted_config()) as proxy:
        invite = options("sip:bob@elsewhere.org").replace(b"OPTIONS", b"INVITE")
        assert status_of(proxy.udp(invite, timeout=3)) in (100, 403)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(options("sip:bob@elsewhere.org", branch="z9hG4bKfor1").replace(b"OPTIONS", b"MESSAGE"),
                     ("127.0.0.1", proxy.port))
            assert s.recv(65535).startswith(b"SIP/2.0 403")
            s.sendto(options("sip:nobody@example.com", branch="z9hG4bKfor2").replace(b"OPTIONS", b"MESSAGE"),
                     ("127.0.0.1", proxy.port))
            assert s.recv(65535).startswith(b"SIP/2.0 404")
