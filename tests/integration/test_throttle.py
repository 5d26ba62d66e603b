"""REGISTER throttling, with a second edgeproxy as the upstream registrar and a
counting relay between the two, so every REGISTER the upstream sees is counted."""

from __future__ import annotations

import pathlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from tests.helpers import Proxy, digest_header, free_port, header_values, metric, running_proxy, status_of
from tests.integration.test_proxy_flows import UA, invite, method_of

USERS = {"alice": "a-secret", "bob": "b-secret"}


class Relay:
    """UDP between the edge and the upstream, counting what crosses it."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.upstream = ("127.0.0.1", upstream_port)
        self.outer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # faces the edge
        self.outer.bind(("127.0.0.1", self.port))
        self.inner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # faces the upstream
        self.inner.bind(("127.0.0.1", 0))
        self.counts: Counter[str] = Counter()
        self.requests: list[bytes] = []  # what the edge sent upstream
        self.edge: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._pump, args=(self.outer, True), daemon=True),
                         threading.Thread(target=self._pump, args=(self.inner, False), daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, sock: socket.socket, outward: bool) -> None:
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            first = data.split(b"\r\n", 1)[0]
            if outward:
                self.edge = peer
                self.counts[first.split(b" ", 1)[0].decode(errors="replace")] += 1
                self.requests.append(data)
                self.inner.sendto(data, self.upstream)
            elif self.edge is not None:
                if first.startswith(b"SIP/2.0 200") and b"REGISTER" in data.split(b"\r\n\r\n")[0]:
                    self.counts["200 REGISTER"] += 1
                self.outer.sendto(data, self.edge)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.outer.close()
        self.inner.close()


@contextmanager
def deployment(tmp_path: pathlib.Path, mode: str, edges: int = 1, redis_url: str = "", client_expires: int = 30,
               upstream_expires: int = 600, users: pathlib.Path | None = None,
               extra: str = "") -> Iterator[tuple[Proxy, Relay, list[Proxy]]]:
    """The upstream registrar (auth on), the relay, and `edges` throttling edges in front."""
    if users is None:
        users = tmp_path / "users.toml"
        users.write_text("[users]\n" + "".join(f'{u} = {{ password = "{p}" }}\n' for u, p in USERS.items()))
    upstream_cfg = (f'domains = ["example.com"]\n[registrar]\nusers = "{users}"\nalgorithms = ["MD5"]\n'
                    f'secret = "up"\nmin_expires = 1\n[security]\ntrusted = ["127.0.0.2/32"]\n')
    state = f'[state]\nbackend = "redis"\nredis_url = "{redis_url}"\n' if redis_url else ""
    with ExitStack() as stack:
        upstream = stack.enter_context(running_proxy(upstream_cfg))
        relay = Relay(upstream.port)
        stack.callback(relay.close)
        edge_cfg = (f'domains = ["example.com"]\n[registrar]\nauth = false\n{state}'
                    f'[security]\ntrusted = ["127.0.0.1/32"]\n'
                    f'[throttle]\nmode = "{mode}"\nupstream = "sip:127.0.0.1:{relay.port}"\n'
                    f'client_expires = {client_expires}\nupstream_expires = {upstream_expires}\n{extra}')
        front = [stack.enter_context(running_proxy(edge_cfg)) for _ in range(edges)]
        yield upstream, relay, front


class Phone(UA):
    """A UA that registers through the edge and answers whatever challenge comes back."""

    def __init__(self, ip: str, user: str) -> None:
        super().__init__(ip, user)
        self.cseq = 0
        self.call_id = f"reg-{user}-{ip}"

    def register(self, port: int, expires: int = 300, contact: str | None = None) -> bytes:  # type: ignore[override]
        reply = self._send_register(port, expires, contact, "")
        if status_of(reply) == 401:
            challenge = header_values(reply, "WWW-Authenticate")[0]
            auth = digest_header(challenge, self.user, USERS[self.user], "REGISTER", "sip:example.com")
            reply = self._send_register(port, expires, contact, f"Authorization: {auth}\r\n")
        return reply

    def _send_register(self, port: int, expires: int, contact: str | None, auth: str) -> bytes:
        self.cseq += 1
        self.send((f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bKp{self.cseq}"
                   f"{self.user}{self.port};rport\r\nFrom: <sip:{self.user}@example.com>;tag=r\r\n"
                   f"To: <sip:{self.user}@example.com>\r\nCall-ID: {self.call_id}\r\nCSeq: {self.cseq} REGISTER\r\n"
                   f"Contact: <{contact or self.contact}>\r\nExpires: {expires}\r\nMax-Forwards: 70\r\n{auth}"
                   "Content-Length: 0\r\n\r\n").encode(), port)
        return self.recv()


def contact_expires(reply: bytes) -> list[int]:
    return [int(v.split("expires=")[1].split(";")[0]) for v in header_values(reply, "Contact")]


def call(upstream: Proxy, user: str, call_id: str) -> UA:
    """A trusted PBX calls `user` at the upstream registrar."""
    pbx = UA("127.0.0.2", "pbx")
    pbx.send(invite(pbx, f"sip:{user}@example.com", call_id, branch=f"z9hG4bK{call_id}"), upstream.port)
    return pbx


def test_contact_mode_absorbs_refreshes(tmp_path: pathlib.Path) -> None:
    metrics_port = free_port()
    with deployment(tmp_path, "contact", extra=f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n') as (
            upstream, relay, (edge,)):
        phone = Phone("127.0.0.3", "alice")
        reply = phone.register(edge.port)
        assert status_of(reply) == 200 and contact_expires(reply) == [30]  # the client's lifetime, not 600
        assert relay.counts["REGISTER"] == 2 and relay.counts["200 REGISTER"] == 1  # challenge, then auth
        for _ in range(5):  # refreshes inside the upstream lifetime: answered by the edge
            reply = phone.register(edge.port)
            assert status_of(reply) == 200 and contact_expires(reply) == [30]
        assert relay.counts["REGISTER"] == 2
        # a call from upstream reaches the phone through the edge's Path
        call(upstream, "alice", "c-1")
        got = phone.recv()
        assert method_of(got) == "INVITE" and got.startswith(f"INVITE {phone.contact} SIP/2.0".encode())
        # a new contact goes upstream at once; so does the un-registration
        moved = f"sip:alice@{phone.ip}:{phone.port};line=2"
        assert status_of(phone.register(edge.port, contact=moved)) == 200
        assert relay.counts["200 REGISTER"] == 2
        assert status_of(phone.register(edge.port, expires=0, contact=moved)) == 200
        assert status_of(phone.register(edge.port, expires=0)) == 200
        assert relay.counts["200 REGISTER"] == 4
        pbx = call(upstream, "alice", "c-2")
        assert status_of(pbx.recv()) == 480  # the upstream knows alice is gone
        counted = {outcome: metric(metrics_port, f'edgeproxy_throttle_registers_total{{outcome="{outcome}"}}')
                   for outcome in ("received", "absorbed", "forwarded")}
        assert counted == {"received": 13, "absorbed": 5, "forwarded": 8}, counted


def test_contact_mode_refreshes_upstream_before_it_lapses(tmp_path: pathlib.Path) -> None:
    with deployment(tmp_path, "contact", client_expires=2, upstream_expires=8) as (_, relay, (edge,)):
        phone = Phone("127.0.0.3", "alice")
        for _ in range(8):  # 8 s of refreshes every second; the upstream binding lives 8 s
            assert status_of(phone.register(edge.port, expires=2)) == 200
            time.sleep(1.0)
        # refreshed upstream when less than client_expires + 1 s is left: at 0 s and about 5 s
        assert 2 <= relay.counts["200 REGISTER"] <= 3, relay.counts


def test_aor_mode_aggregates_devices(tmp_path: pathlib.Path) -> None:
    with deployment(tmp_path, "aor") as (upstream, relay, (edge,)):
        desk, mobile = Phone("127.0.0.3", "alice"), Phone("127.0.0.4", "alice")
        assert status_of(desk.register(edge.port)) == 200
        assert relay.counts["200 REGISTER"] == 1
        reply = mobile.register(edge.port)
        assert status_of(reply) == 200 and len(header_values(reply, "Contact")) == 2  # both devices listed
        assert relay.counts["200 REGISTER"] == 1  # the second device cost the upstream nothing
        for phone in (desk, mobile, desk):
            assert status_of(phone.register(edge.port)) == 200
        assert relay.counts["REGISTER"] == 2
        call(upstream, "alice", "a-1")  # upstream → the edge's Contact → forked to both devices
        assert method_of(desk.recv()) == "INVITE" and method_of(mobile.recv()) == "INVITE"
        assert status_of(desk.register(edge.port, expires=0)) == 200
        assert relay.counts["REGISTER"] == 2  # one device left: the AoR stays registered upstream
        assert status_of(mobile.register(edge.port, expires=0)) == 200
        assert relay.counts["200 REGISTER"] == 2  # the last one leaving un-registers upstream at once
        pbx = call(upstream, "alice", "a-2")
        assert status_of(pbx.recv()) == 480


def test_mirror_mode_forwards_everything_and_routes_back(tmp_path: pathlib.Path) -> None:
    with deployment(tmp_path, "mirror") as (upstream, relay, (edge,)):
        phone = Phone("127.0.0.3", "bob")
        reply = phone.register(edge.port, expires=300)
        assert status_of(reply) == 200 and contact_expires(reply) == [300]
        assert status_of(phone.register(edge.port, expires=300)) == 200
        assert relay.counts["200 REGISTER"] == 2
        call(upstream, "bob", "m-1")
        assert method_of(phone.recv()) == "INVITE"
        assert status_of(phone.register(edge.port, expires=0)) == 200
        pbx = call(upstream, "bob", "m-2")
        assert status_of(pbx.recv()) == 480  # un-registered upstream at once


def test_edge_can_authenticate_clients_itself(tmp_path: pathlib.Path) -> None:
    """With throttle.authenticate the edge challenges; the upstream (trusting the edge) sees no credentials."""
    users = tmp_path / "edge-users.toml"
    users.write_text('[users]\nalice = { password = "a-secret" }\n')
    open_upstream = 'domains = ["example.com"]\n[registrar]\nauth = false\nmin_expires = 1\n'
    with running_proxy(open_upstream) as upstream:
        relay = Relay(upstream.port)
        edge_cfg = (f'domains = ["example.com"]\n[registrar]\nusers = "{users}"\nalgorithms = ["MD5"]\n'
                    f'secret = "edge"\n[throttle]\nmode = "contact"\nupstream = "sip:127.0.0.1:{relay.port}"\n'
                    'authenticate = true\n')
        try:
            with running_proxy(edge_cfg) as edge:
                phone = Phone("127.0.0.3", "alice")
                first = phone._send_register(edge.port, 300, None, "")
                assert status_of(first) == 401 and relay.counts["REGISTER"] == 0  # the edge's own challenge
                assert status_of(phone.register(edge.port)) == 200
                assert relay.counts["REGISTER"] == 1 and relay.counts["200 REGISTER"] == 1
                assert b"\r\nAuthorization:" not in relay.requests[0] and b"\r\nPath: <sip:" in relay.requests[0]
                USERS["mallory"] = "guess"
                try:
                    intruder = Phone("127.0.0.4", "mallory")
                    assert status_of(intruder.register(edge.port)) == 401  # unknown here: never reaches upstream
                finally:
                    del USERS["mallory"]
                assert relay.counts["REGISTER"] == 1
        finally:
            relay.close()


@pytest.mark.parametrize("mode", ["contact", "aor"])
def test_refresh_on_another_instance_is_absorbed(mode: str, tmp_path: pathlib.Path, redis_server: str) -> None:
    import redis

    redis.Redis.from_url(redis_server).flushdb()
    with deployment(tmp_path, mode, edges=2, redis_url=redis_server) as (upstream, relay, (a, b)):
        phone = Phone("127.0.0.3", "alice")
        assert status_of(phone.register(a.port)) == 200
        assert relay.counts["200 REGISTER"] == 1
        for edge in (b, a, b):
            reply = phone.register(edge.port)
            assert status_of(reply) == 200 and contact_expires(reply) == [30]
        assert relay.counts["REGISTER"] == 2  # the other instance knew the upstream registration
        call(upstream, "alice", f"r-{mode}")
        assert method_of(phone.recv()) == "INVITE"
