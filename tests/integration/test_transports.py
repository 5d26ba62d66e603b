"""Each transport on real sockets against a real edgeproxy process."""

from __future__ import annotations

import datetime
import pathlib
import socket
import ssl
import time

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, TextMessage
from wsproto.events import Request as WsRequest

from tests.helpers import free_port, options, running_proxy, status_of


def read_response(sock: socket.socket, timeout: float = 3.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65535)
        if not chunk:
            break
        data += chunk
    return data


def read_responses(sock: socket.socket, count: int, timeout: float = 3.0) -> list[bytes]:
    sock.settimeout(timeout)
    data = b""
    while data.count(b"\r\n\r\n") < count:
        chunk = sock.recv(65535)
        if not chunk:
            break
        data += chunk
    return [part + b"\r\n\r\n" for part in data.split(b"\r\n\r\n") if part]


def test_udp_options_and_malformed() -> None:
    with running_proxy() as proxy:
        assert status_of(proxy.udp(options(proxy.uri))) == 200
        bad = options(proxy.uri).replace(b"Max-Forwards: 70", b"Max-Forwards: many")
        reply = proxy.udp(bad)
        assert status_of(reply) == 400 and b"Max-Forwards" in reply.split(b"\r\n")[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # garbage: dropped, no crash
            s.sendto(b"\x00\xff garbage \r\n\r\n", ("127.0.0.1", proxy.port))
        assert status_of(proxy.udp(options(proxy.uri))) == 200
        # a retransmission is answered by the transaction with the same response
        req = options(proxy.uri, branch="z9hG4bKsame")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(req, ("127.0.0.1", proxy.port))
            first = s.recv(65535)
            s.sendto(req, ("127.0.0.1", proxy.port))
            assert s.recv(65535) == first


def test_udp_response_follows_rport_to_the_source_port() -> None:
    with running_proxy() as proxy:
        # the Via claims port 9; rport makes the answer come back to our real port
        assert status_of(proxy.udp(options(proxy.uri, sent_by="192.0.2.7:9"))) == 200


def test_non_options_gets_an_answer_and_cancel_without_invite_481() -> None:
    with running_proxy() as proxy:
        msg = options(proxy.uri).replace(b"OPTIONS", b"CANCEL")
        assert status_of(proxy.udp(msg)) == 481


def test_tcp_options_framing_and_keepalive() -> None:
    with running_proxy() as proxy, socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(options(proxy.uri, "TCP"))
        assert status_of(read_response(s)) == 200
        # several messages in one segment, and a keep-alive ping in between
        s.sendall(options(proxy.uri, "TCP") + b"\r\n\r\n" + options(proxy.uri, "TCP") + options(proxy.uri, "TCP"))
        s.settimeout(3)
        data = b""
        while data.count(b"SIP/2.0 200") < 3:
            data += s.recv(65535)
        assert data.startswith(b"SIP/2.0 200") and b"\r\n\r\n\r\nSIP/2.0 200" in data  # the pong, between
        # one message split into single bytes, each its own segment
        for byte in options(proxy.uri, "TCP"):
            s.send(bytes([byte]))
            time.sleep(0.0005)
        assert status_of(read_response(s)) == 200
        # split at assorted boundaries
        msg = options(proxy.uri, "TCP")
        for cut in (1, 17, len(msg) // 2, len(msg) - 5, len(msg) - 1):
            s.send(msg[:cut])
            time.sleep(0.01)
            s.send(msg[cut:])
            assert status_of(read_response(s)) == 200


def test_tcp_malformed_gets_400_and_server_keeps_serving() -> None:
    with running_proxy() as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.sendall(options(proxy.uri, "TCP").replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"))
            assert status_of(read_response(s)) == 400
            s.sendall(options(proxy.uri, "TCP"))  # same connection still works
            assert status_of(read_response(s)) == 200
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.sendall(options(proxy.uri, "TCP").replace(b"Content-Length: 0", b"Content-Length: -1"))
            reply = read_response(s)
            assert status_of(reply) == 400
            assert s.recv(100) == b""  # framing lost: the server closed this connection
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.sendall(options(proxy.uri, "TCP"))
            assert status_of(read_response(s)) == 200


def test_connection_caps_and_idle_timeout() -> None:
    extra = "[limits]\nmax_connections_per_ip = 2\nidle_timeout = 1.0\n"
    with running_proxy(extra) as proxy:
        a = socket.create_connection(("127.0.0.1", proxy.port))
        b = socket.create_connection(("127.0.0.1", proxy.port))
        for s in (a, b):
            s.sendall(options(proxy.uri, "TCP"))
            assert status_of(read_response(s)) == 200
        c = socket.create_connection(("127.0.0.1", proxy.port))
        c.settimeout(3)
        try:
            assert c.recv(10) == b""  # over the per-IP cap: closed at once
        except ConnectionResetError:
            pass
        time.sleep(2.5)  # idle connections are closed
        for s in (a, b):
            s.settimeout(3)
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
            s.close()
        c.close()
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.sendall(options(proxy.uri, "TCP"))
            assert status_of(read_response(s)) == 200


def make_certificate(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("edge.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_options(tmp_path: pathlib.Path) -> None:
    cert, key = make_certificate(tmp_path)
    port, tls_port = free_port(), free_port()
    with running_proxy(f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n', port=port,
                       listen=[f"udp:127.0.0.1:{port}", f"tls:127.0.0.1:{tls_port}"]):
        ctx = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", tls_port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="edge.test") as s:
            s.sendall(options(f"sip:127.0.0.1:{tls_port};transport=tls", "TLS"))
            assert status_of(read_response(s)) == 200
            s.sendall(b"\r\n\r\n")
            assert s.recv(10) == b"\r\n"
            s.sendall(options(f"sip:127.0.0.1:{tls_port}", "TLS").replace(b"To:", b"To :<bad"))
            assert status_of(read_response(s)) == 400


def ws_exchange(port: int, subprotocols: list[str], messages: list[bytes], expect: int,
                tls: ssl.SSLContext | None = None) -> list[str]:
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            (tls.wrap_socket(raw, server_hostname="edge.test") if tls else raw) as s:
        s.settimeout(3)
        s.sendall(ws.send(WsRequest(host="127.0.0.1", target="/", subprotocols=subprotocols)))
        replies: list[str] = []
        accepted = False
        pending = list(messages)
        while len(replies) < expect:
            data = s.recv(65535)
            if not data:
                break
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    accepted = event.subprotocol == "sip"
                    for m in pending:
                        s.sendall(ws.send(TextMessage(data=m.decode())))
                elif isinstance(event, RejectConnection):
                    return ["rejected"]
                elif isinstance(event, TextMessage):
                    replies.append(event.data)
        assert accepted
        return replies


def test_websocket_options_keepalive_and_subprotocol() -> None:
    port, ws_port = free_port(), free_port()
    with running_proxy(port=port, listen=[f"udp:127.0.0.1:{port}", f"ws:127.0.0.1:{ws_port}"]):
        uri = f"sip:127.0.0.1:{ws_port};transport=ws"
        jssip_like = options(uri, "WS", sent_by="df7jal23ls0d.invalid").replace(b"Content-Length: 0\r\n", b"")
        replies = ws_exchange(ws_port, ["sip"], [jssip_like, b"\r\n\r\n", options(uri, "WS")], 3)
        assert replies[0].startswith("SIP/2.0 200") and replies[1] == "\r\n" and replies[2].startswith("SIP/2.0 200")
        assert ws_exchange(ws_port, ["chat"], [], 1) == ["rejected"]


def test_ipv6_udp_and_tcp() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with running_proxy(host="::1") as proxy:
        assert status_of(proxy.udp(options(f"sip:[::1]:{proxy.port}", sent_by="[::1]:9"))) == 200
        with socket.create_connection(("::1", proxy.port)) as s:
            s.sendall(options(f"sip:[::1]:{proxy.port}", "TCP", sent_by="[::1]:9"))
            assert status_of(read_response(s)) == 200


def test_secure_websocket(tmp_path: pathlib.Path) -> None:
    cert, key = make_certificate(tmp_path)
    port, wss_port = free_port(), free_port()
    with running_proxy(f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n', port=port,
                       listen=[f"udp:127.0.0.1:{port}", f"wss:127.0.0.1:{wss_port}"]):
        ctx = ssl.create_default_context(cafile=str(cert))
        uri = f"sip:127.0.0.1:{wss_port};transport=wss"
        replies = ws_exchange(wss_port, ["sip"], [options(uri, "WSS", sent_by="h7kjh12.invalid")], 1, tls=ctx)
        assert replies[0].startswith("SIP/2.0 200")


def test_invite_gets_100_trying_then_final_retransmitted_until_ack() -> None:
    with running_proxy() as proxy, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        invite = options(proxy.uri, branch="z9hG4bKinv1", call_id="inv-1").replace(b"OPTIONS", b"INVITE")
        s.sendto(invite, ("127.0.0.1", proxy.port))
        assert status_of(s.recv(65535)) == 100
        final = s.recv(65535)
        assert status_of(final) >= 300
        assert s.recv(65535) == final  # Timer G: no ACK yet, the final comes again
        to_tag = final.split(b"To: ")[1].split(b"\r\n")[0]
        ack = (invite.replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
               .replace(b"To: <" + proxy.uri.encode() + b">", b"To: " + to_tag))
        s.sendto(ack, ("127.0.0.1", proxy.port))
        s.settimeout(2.5)
        with pytest.raises(TimeoutError):  # the ACK stopped Timer G: silence
            s.recv(65535)
