"""Proxy flows on real sockets: forking, CANCEL, double Record-Route."""

from __future__ import annotations

import secrets
import select
import socket
import time

import pytest

from tests.helpers import header_values, running_proxy, status_of

CONFIG = 'domains = ["example.com"]\n[registrar]\nauth = false\n[security]\ntrusted = ["127.0.0.2/32"]\n'


class UA:
    """A UDP endpoint speaking just enough SIP for the test."""

    def __init__(self, ip: str, user: str = "alice") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(5)
        self.ip, self.port = self.sock.getsockname()
        self.user = user

    @property
    def contact(self) -> str:
        return f"sip:{self.user}@{self.ip}:{self.port}"

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    def recv(self, skip_100: bool = True) -> bytes:
        while True:
            data = self.sock.recv(65535)
            if not (skip_100 and data.startswith(b"SIP/2.0 100")):
                return data

    def register(self, port: int) -> None:
        self.send((f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(4)};rport\r\n"
                   f"From: <sip:{self.user}@example.com>;tag=r\r\nTo: <sip:{self.user}@example.com>\r\nCall-ID: {secrets.token_hex(5)}\r\n"
                   f"CSeq: 1 REGISTER\r\nContact: <{self.contact}>\r\nExpires: 300\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), port)
        assert status_of(self.recv()) == 200

    def reply(self, request: bytes, status: str, to_tag: str | None = None) -> None:
        """Answer a request received from the proxy (back to the proxy: the top Via)."""
        via = header_values(request, "Via")[0]
        host, port = via.split()[1].split(";")[0].rsplit(":", 1)
        self.sock.sendto(answer(request.decode(), status, self.contact, to_tag).encode(), (host, int(port)))


def answer(request: str, status: str, contact: str, to_tag: str | None = None) -> str:
    """A UAS's response to `request`: its dialog headers copied, our Contact added."""
    head = request.split("\r\n\r\n")[0].split("\r\n")
    keep = [h for h in head[1:] if h.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq", "record-route")]
    if to_tag:
        keep = [h + f";tag={to_tag}" if h.lower().startswith("to:") and "tag=" not in h else h for h in keep]
    return "\r\n".join([f"SIP/2.0 {status}", *keep, f"Contact: <{contact}>", "Content-Length: 0", "", ""])


def invite(caller: UA, ruri: str, call_id: str, branch: str = "z9hG4bKinv1", method: str = "INVITE",
           transport: str = "UDP") -> bytes:
    return (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{transport} {caller.ip}:{caller.port};branch={branch};rport\r\n"
            f"From: <sip:pbx@example.com>;tag=c1\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
            f"Contact: <sip:pbx@{caller.ip}:{caller.port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def method_of(data: bytes) -> str:
    return data.split(b" ", 1)[0].decode()


def test_parallel_forking_cancels_the_other_branch() -> None:
    with running_proxy(CONFIG) as proxy:
        desk, mobile = UA("127.0.0.3"), UA("127.0.0.4")
        desk.register(proxy.port)
        mobile.register(proxy.port)
        pbx = UA("127.0.0.2", "pbx")
        pbx.send(invite(pbx, "sip:alice@example.com", "fork-1"), proxy.port)
        inv_desk, inv_mobile = desk.recv(), mobile.recv()
        assert method_of(inv_desk) == method_of(inv_mobile) == "INVITE"
        assert header_values(inv_desk, "Record-Route") == header_values(inv_mobile, "Record-Route") != []
        desk.reply(inv_desk, "180 Ringing", "d1")
        mobile.reply(inv_mobile, "180 Ringing", "m1")
        statuses = {status_of(pbx.recv()), status_of(pbx.recv())}
        assert statuses == {180}
        desk.reply(inv_desk, "200 OK", "d1")
        assert status_of(pbx.recv()) == 200
        cancel = mobile.recv()
        assert method_of(cancel) == "CANCEL"  # the losing branch is cancelled
        assert header_values(cancel, "Via")[0] == header_values(inv_mobile, "Via")[0]  # same branch as its INVITE
        mobile.reply(cancel, "200 OK")
        mobile.reply(inv_mobile, "487 Request Terminated", "m1")
        ack = mobile.recv()
        assert method_of(ack) == "ACK"  # the proxy ACKs the 487 hop by hop
        pbx.sock.settimeout(1.0)
        try:
            extra = pbx.recv()
            assert status_of(extra) == 200  # at most a 2xx retransmission; never the 487
        except TimeoutError:
            pass


def test_upstream_cancel_reaches_the_branch() -> None:
    with running_proxy(CONFIG) as proxy:
        phone = UA("127.0.0.3")
        phone.register(proxy.port)
        pbx = UA("127.0.0.2", "pbx")
        pbx.send(invite(pbx, "sip:alice@example.com", "cancel-1"), proxy.port)
        inv = phone.recv()
        phone.reply(inv, "180 Ringing", "p1")
        assert status_of(pbx.recv()) == 180
        pbx.send(invite(pbx, "sip:alice@example.com", "cancel-1", method="CANCEL"), proxy.port)
        assert status_of(pbx.recv()) == 200  # the proxy answers the CANCEL itself
        cancel = phone.recv()
        assert method_of(cancel) == "CANCEL"
        phone.reply(cancel, "200 OK")
        phone.reply(inv, "487 Request Terminated", "p1")
        assert status_of(pbx.recv()) == 487


def test_unknown_and_unregistered_users() -> None:
    with running_proxy(CONFIG) as proxy:
        pbx = UA("127.0.0.2", "pbx")
        pbx.send(invite(pbx, "sip:ghost@example.com", "nf-1"), proxy.port)
        assert status_of(pbx.recv()) == 404


def test_double_record_route_when_transport_changes() -> None:
    with running_proxy(CONFIG) as proxy:
        phone = UA("127.0.0.3")
        phone.register(proxy.port)
        with socket.create_connection(("127.0.0.1", proxy.port), source_address=("127.0.0.2", 0)) as tcp:
            ip, port = tcp.getsockname()
            tcp.sendall((f"INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/TCP {ip}:{port};branch=z9hG4bKtcp1;rport\r\n"
                         "From: <sip:pbx@example.com>;tag=c1\r\nTo: <sip:alice@example.com>\r\nCall-ID: rr-1\r\n"
                         f"CSeq: 1 INVITE\r\nContact: <sip:pbx@{ip}:{port};transport=tcp>\r\nMax-Forwards: 70\r\n"
                         "Content-Length: 0\r\n\r\n").encode())
            inv = phone.recv()
            rrs = header_values(inv, "Record-Route")
            assert len(rrs) == 2, rrs  # RFC 5658: one per side
            assert "transport" not in rrs[0] and "r2=on" in rrs[0]  # the UDP side, toward the phone
            assert "transport=tcp" in rrs[1] and "r2=on" in rrs[1]  # the TCP side, toward the caller


def test_timer_c_cancels_a_branch_that_only_rings() -> None:
    with running_proxy(CONFIG + "[limits]\ninvite_timeout = 1.0\n") as proxy:
        phone = UA("127.0.0.3")
        phone.register(proxy.port)
        pbx = UA("127.0.0.2", "pbx")
        pbx.send(invite(pbx, "sip:alice@example.com", "timerc-1"), proxy.port)
        inv = phone.recv()
        phone.reply(inv, "180 Ringing", "p1")
        assert status_of(pbx.recv()) == 180
        cancel = phone.recv()  # about a second later: Timer C
        assert method_of(cancel) == "CANCEL"
        phone.reply(cancel, "200 OK")
        phone.reply(inv, "487 Request Terminated", "p1")
        assert status_of(pbx.recv()) == 487


def test_a_backend_silent_for_suspect_after_calls_is_probed_at_once_and_keeps_calls_when_alone() -> None:
    """One unanswered INVITE says nothing (a datagram lost under load); `suspect_after` in a
    row make the backend PROBING and it is probed right then, long before the next round.
    Being the only backend, it still gets the calls meanwhile (no 503 for a suspicion)."""
    backend = UA("127.0.0.5", "pbx")
    config = (f'[dispatcher]\nprobe_interval = 60.0\nbranch_timeout = 0.5\nsuspect_after = 2\n'
              f'[[dispatcher.backends]]\nuri = "sip:127.0.0.5:{backend.port}"\n')
    with running_proxy(config) as proxy:
        caller = UA("127.0.0.3", "bob")

        def call(call_id: str) -> bytes:
            caller.send(invite(caller, f"sip:pbx@127.0.0.1:{proxy.port}", call_id, branch=f"z9hG4bK{call_id}"),
                        proxy.port)
            request = backend.recv()
            while call_id.encode() not in request:  # the first round's probe, the last INVITE's retransmissions
                if method_of(request) == "OPTIONS":
                    backend.reply(request, "200 OK")
                request = backend.recv()
            return request

        def status(call_id: str) -> int:
            response = caller.recv()
            while f"Call-ID: {call_id}\r\n".encode() not in response:  # the last 408's retransmissions (no ACK)
                response = caller.recv()
            return status_of(response)

        call("lost-1")
        assert status("lost-1") == 408  # nobody answered within branch_timeout
        call("lost-2")
        assert status("lost-2") == 408
        started = time.monotonic()
        probe = backend.recv()
        while method_of(probe) != "OPTIONS":  # the INVITE's retransmissions, then the probe
            probe = backend.recv()
        assert time.monotonic() - started < 5  # not the 60 s of the next round
        answered = call("while-probing")  # the only backend, suspect: still tried
        backend.reply(answered, "200 OK", "b1")
        assert status("while-probing") == 200


@pytest.mark.parametrize("refusal", ["503 Service Unavailable", "500 Server Internal Error"])
def test_a_backend_refusing_the_call_fails_over_to_the_next_in_the_same_transaction(refusal: str) -> None:
    """RFC 3261 §16.7 and Kamailio's failure_route: the refusal is ACKed hop by hop, the INVITE
    tries the other backend (same Call-ID, new branch), and the caller sees only its answer."""
    first, second = UA("127.0.0.5", "pbx"), UA("127.0.0.6", "pbx")
    backends = "".join(f'[[dispatcher.backends]]\nuri = "sip:{b.ip}:{b.port}"\n' for b in (first, second))
    with running_proxy(f"[dispatcher]\nprobe_interval = 60.0\n{backends}") as proxy:
        by_socket = {first.sock: first, second.sock: second}

        def next_invite() -> tuple[UA, bytes]:
            """The next INVITE either backend gets (the first round's probes answered on the way)."""
            while True:
                ready, _, _ = select.select(list(by_socket), [], [], 5)
                assert ready, "no backend got the INVITE"
                backend = by_socket[ready[0]]
                request = backend.sock.recv(65535)
                if method_of(request) == "OPTIONS":
                    backend.reply(request, "200 OK")
                elif method_of(request) == "INVITE":
                    return backend, request

        caller = UA("127.0.0.3", "bob")
        caller.send(invite(caller, f"sip:pbx@127.0.0.1:{proxy.port}", "failover-1"), proxy.port)
        refusing, tried = next_invite()
        refusing.reply(tried, refusal, "r1")
        ack = refusing.recv()
        assert method_of(ack) == "ACK" and header_values(ack, "Via")[0] == header_values(tried, "Via")[0]
        answering, retried = next_invite()
        assert answering is not refusing
        assert header_values(retried, "Call-ID") == ["failover-1"]
        assert header_values(retried, "Via")[0] != header_values(tried, "Via")[0]  # a new branch
        answering.reply(retried, "200 OK", "a1")
        assert status_of(caller.recv()) == 200


def test_calls_get_503_once_the_only_backend_is_down() -> None:
    backend = UA("127.0.0.5", "pbx")  # never answers a probe
    config = (f'[dispatcher]\nprobe_interval = 0.2\ndown_after = 2\n'
              f'[[dispatcher.backends]]\nuri = "sip:127.0.0.5:{backend.port}"\n')
    with running_proxy(config) as proxy:
        time.sleep(1.0)  # rounds of unanswered probes
        caller = UA("127.0.0.3", "bob")
        caller.send(invite(caller, f"sip:pbx@127.0.0.1:{proxy.port}", "refused"), proxy.port)
        reply = caller.recv()
        assert status_of(reply) == 503 and header_values(reply, "Retry-After") == ["5"]


def test_sigterm_drains_a_call_in_progress_and_refuses_new_ones() -> None:
    import signal

    backend = UA("127.0.0.5", "pbx")
    config = f'[dispatcher]\nprobe_interval = 60.0\n[[dispatcher.backends]]\nuri = "sip:127.0.0.5:{backend.port}"\n'
    with running_proxy(config) as proxy:
        caller = UA("127.0.0.3", "bob")
        caller.send(invite(caller, f"sip:pbx@127.0.0.1:{proxy.port}", "drain-1"), proxy.port)
        inv = backend.recv()
        while method_of(inv) != "INVITE":  # skip a dispatcher probe
            backend.reply(inv, "200 OK")
            inv = backend.recv()
        proxy.proc.send_signal(signal.SIGTERM)  # the call is still ringing
        deadline = time.monotonic() + 5
        while b'"draining"' not in proxy.log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)  # the signal is handled asynchronously: wait for the drain to begin
        backend.reply(inv, "180 Ringing", "b1")
        assert status_of(caller.recv()) == 180
        caller.send(invite(caller, f"sip:pbx@127.0.0.1:{proxy.port}", "drain-2", branch="z9hG4bKinv2"), proxy.port)
        assert status_of(caller.recv()) == 503  # no new dialog while draining
        backend.reply(inv, "200 OK", "b1")
        assert status_of(caller.recv()) == 200  # the open transaction finished
        assert proxy.proc.wait(15) == 0


class WsPhone:
    """A browser-like client: SIP over one WebSocket connection, a `.invalid` Contact (RFC 7118),
    and an RFC 5626 instance id so a re-registration replaces its binding."""

    CONTACT = "sip:k3s9f0@df7jal23ls0d.invalid;transport=ws"

    def __init__(self, port: int) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection
        from wsproto.events import Request as WsRequest

        self.ws = WSConnection(ConnectionType.CLIENT)
        self.conn = socket.create_connection(("127.0.0.1", port))
        self.conn.settimeout(5)
        self.conn.sendall(self.ws.send(WsRequest(host="127.0.0.1", target="/", subprotocols=["sip"])))
        self.ws.receive_data(self.conn.recv(65535))
        assert any(isinstance(e, AcceptConnection) for e in self.ws.events())

    def send(self, text: str) -> None:
        from wsproto.events import TextMessage

        self.conn.sendall(self.ws.send(TextMessage(data=text)))

    def messages(self) -> list[str]:
        from wsproto.events import TextMessage

        self.ws.receive_data(self.conn.recv(65535))
        return [e.data for e in self.ws.events() if isinstance(e, TextMessage)]

    def register(self, cseq: int = 1) -> None:
        self.send(f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws{cseq}\r\n"
                  "From: <sip:alice@example.com>;tag=w1\r\nTo: <sip:alice@example.com>\r\nCall-ID: ws-reg\r\n"
                  f"CSeq: {cseq} REGISTER\r\nContact: <{self.CONTACT}>;expires=300;reg-id=1;"
                  '+sip.instance="<urn:uuid:0f5e3d1c-6f1e-4c11-9f43-0d1f0c7a9e21>"\r\nMax-Forwards: 70\r\n'
                  "Content-Length: 0\r\n\r\n")
        assert self.messages()[0].startswith("SIP/2.0 200")

    def close(self) -> None:
        self.conn.close()


def test_call_to_a_websocket_client_uses_its_connection() -> None:
    """A browser registers over WS with a `.invalid` Contact; a backend's call reaches it on that
    connection. When the browser reconnects (its connection lost, as after an edge failover) and
    registers again, the call's BYE reaches it on the new connection."""
    from tests.helpers import free_port

    port, ws_port = free_port(), free_port()
    listen = [f"udp:127.0.0.1:{port}", f"ws:127.0.0.1:{ws_port}"]
    with running_proxy(CONFIG, port=port, listen=listen) as proxy:
        browser = WsPhone(ws_port)
        browser.register()
        pbx = UA("127.0.0.2", "pbx")
        pbx.send(invite(pbx, "sip:alice@example.com", "ws-call"), proxy.port)
        got = browser.messages()
        assert got and got[0].startswith(f"INVITE {WsPhone.CONTACT} SIP/2.0"), got
        assert "Via: SIP/2.0/WS 127.0.0.1:" in got[0]
        browser.send(answer(got[0], "200 OK", WsPhone.CONTACT, "b1"))
        ok = pbx.recv()
        assert status_of(ok) == 200
        remote_target = header_values(ok, "Contact")[0].strip("<>")
        routes = list(reversed(header_values(ok, "Record-Route")))

        browser.close()
        browser = WsPhone(ws_port)
        browser.register(2)
        pbx.send((f"BYE {remote_target} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx.ip}:{pbx.port};branch=z9hG4bKbye1;rport\r\n"
                  + "".join(f"Route: {r}\r\n" for r in routes)
                  + "From: <sip:pbx@example.com>;tag=c1\r\nTo: <sip:alice@example.com>;tag=b1\r\n"
                  "Call-ID: ws-call\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                 proxy.port)
        bye = browser.messages()
        assert bye and bye[0].startswith(f"BYE {WsPhone.CONTACT} SIP/2.0"), bye
        browser.send(answer(bye[0], "200 OK", WsPhone.CONTACT))
        assert status_of(pbx.recv()) == 200
        browser.close()


def test_options_to_our_address() -> None:
    """A SIP ping to the proxy's address is answered by it, whatever the user part,
    unless that user is registered; Require is honoured (420)."""
    from tests.helpers import options

    with running_proxy(CONFIG) as proxy:
        assert status_of(proxy.udp(options(f"sip:service@127.0.0.1:{proxy.port}"))) == 200
        refused = proxy.udp(options(f"sip:127.0.0.1:{proxy.port}", extra="Require: foo, path\r\n"))
        assert status_of(refused) == 420 and header_values(refused, "Unsupported") == ["foo"]
        phone = UA("127.0.0.3")
        phone.register(proxy.port)
        caller = UA("127.0.0.6", "bob")
        caller.send(options(f"sip:alice@127.0.0.1:{proxy.port}", sent_by=f"{caller.ip}:{caller.port}"), proxy.port)
        assert method_of(phone.recv()) == "OPTIONS"  # a registered user's OPTIONS is theirs


def test_route_to_our_ip_on_another_port_is_not_ours() -> None:
    """`sip:127.0.0.1;lr` means 127.0.0.1:5060 (an Asterisk on the same host), not us on another port."""
    import pytest

    asterisk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        asterisk.bind(("127.0.0.1", 5060))
    except OSError:
        pytest.skip("port 5060 is taken on this machine")
    asterisk.settimeout(5)
    with running_proxy(CONFIG) as proxy:
        assert proxy.port != 5060
        pbx = UA("127.0.0.2", "pbx")
        msg = invite(pbx, "sip:alice@10.9.9.9", "route-1", method="MESSAGE").replace(
            b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nRoute: <sip:127.0.0.1;lr>\r\n")
        pbx.send(msg, proxy.port)
        got = asterisk.recv(65535)
        assert got.startswith(b"MESSAGE sip:alice@10.9.9.9 SIP/2.0") and b"Route: <sip:127.0.0.1;lr>" in got
    asterisk.close()
