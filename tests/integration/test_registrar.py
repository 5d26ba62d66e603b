"""The registrar over real UDP against a real edgeproxy, with each state backend."""

from __future__ import annotations

import hashlib
import hmac
import pathlib
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from tests.helpers import Proxy, digest_header, header_values, running_proxy, status_of

SECRET = "test-secret-shared-by-instances"
PASSWORD = "s3cret"


def users_file(tmp: pathlib.Path, realm: str) -> pathlib.Path:
    path = tmp / "users.toml"
    md5 = hashlib.md5(f"bob:{realm}:{PASSWORD}".encode()).hexdigest()
    sha = hashlib.sha256(f"bob:{realm}:{PASSWORD}".encode()).hexdigest()
    path.write_text(f'[users]\nalice = {{ password = "{PASSWORD}" }}\n'
                    f'bob = {{ ha1_md5 = "{md5}", ha1_sha256 = "{sha}" }}\n')
    return path


@pytest.fixture(params=["memory", "redis"])
def registrar(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Proxy]:
    state = ""
    if request.param == "redis":
        state = f'[state]\nbackend = "redis"\nredis_url = "{request.getfixturevalue("redis_server")}"\n' \
                f'key_prefix = "t{secrets.token_hex(3)}:"\n'
    config = (f'domains = ["example.com"]\n[registrar]\nusers = "{users_file(tmp_path, "example.com")}"\n'
              f'secret = "{SECRET}"\nmin_expires = 30\nmax_expires = 600\nchallenge_methods = ["INVITE"]\n{state}')
    with running_proxy(config) as proxy:
        proxy.backend = request.param  # type: ignore[attr-defined]
        proxy.prefix = state.split('key_prefix = "')[1].split('"')[0] if state else ""  # type: ignore[attr-defined]
        yield proxy


class Phone:
    """A UDP client that registers (test-side digest, independent of the server's code)."""

    def __init__(self, proxy: Proxy, user: str = "alice") -> None:
        self.proxy = proxy
        self.user = user
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)
        self.port = self.sock.getsockname()[1]
        self.call_id = secrets.token_hex(8)
        self.cseq = 0

    def request(self, method: str = "REGISTER", contacts: tuple[str, ...] | None = None, expires: int | None = 120,
                auth: str | None = None, extra: str = "", to_user: str | None = None,
                uri: str = "sip:example.com") -> bytes:
        self.cseq += 1
        contacts = contacts if contacts is not None else (f"<sip:{self.user}@127.0.0.1:{self.port}>",)
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
                 f"From: <sip:{self.user}@example.com>;tag=ph1", f"To: <sip:{to_user or self.user}@example.com>",
                 f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} {method}", "Max-Forwards: 70"]
        lines += [f"Contact: {c}" for c in contacts]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth:
            lines.append(f"{'Proxy-Authorization' if method != 'REGISTER' else 'Authorization'}: {auth}")
        text = "\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n"
        self.sock.sendto(text.encode(), ("127.0.0.1", self.proxy.port))
        reply = self.sock.recv(65535)
        while status_of(reply) == 100:
            reply = self.sock.recv(65535)
        return reply

    def register(self, password: str = PASSWORD, algorithm: int = 0, **kw: object) -> bytes:
        first = self.request(**kw)  # type: ignore[arg-type]
        if status_of(first) not in (401, 407):
            return first
        header = "WWW-Authenticate" if status_of(first) == 401 else "Proxy-Authenticate"
        challenge = header_values(first, header)[algorithm]
        method = str(kw.get("method", "REGISTER"))
        auth = digest_header(challenge, self.user, password, method, str(kw.get("uri", "sip:example.com")))
        return self.request(auth=auth, **kw)  # type: ignore[arg-type]


def test_challenge_then_register_sha256_and_md5(registrar: Proxy) -> None:
    phone = Phone(registrar)
    first = phone.request()
    assert status_of(first) == 401
    offered = header_values(first, "WWW-Authenticate")
    assert [v.split("algorithm=")[1].split(",")[0] for v in offered] == ["SHA-256", "MD5"]
    for index in (0, 1):
        ok = phone.register(algorithm=index)
        assert status_of(ok) == 200
        contact = header_values(ok, "Contact")
        assert len(contact) == 1 and contact[0].startswith(f"<sip:alice@127.0.0.1:{phone.port}>;expires=")
        assert 115 <= int(contact[0].split("expires=")[1]) <= 120
        assert header_values(ok, "Date") and "path" in header_values(ok, "Supported")[0]
    bob = Phone(registrar, "bob")  # HA1-only credentials
    assert status_of(bob.register()) == 200


def test_register_through_a_preloaded_route_to_us(registrar: Proxy) -> None:
    """A phone with the edge as its outbound proxy puts it in a Route (baresip, Linphone):
    the edge strips its own entry and is the registrar, as Kamailio's loose_route() does."""
    phone = Phone(registrar)
    ok = phone.register(extra=f"Route: <sip:127.0.0.1:{registrar.port};transport=udp;lr>\r\n")
    assert status_of(ok) == 200 and header_values(ok, "Contact")[0].startswith(f"<sip:alice@127.0.0.1:{phone.port}>")


def test_failures_look_alike(registrar: Proxy) -> None:
    """Unknown user and wrong password: same status, same headers, same timing class."""
    def attempt(user: str, password: str) -> tuple[int, list[str], float]:
        phone = Phone(registrar, user)
        start = time.perf_counter()
        reply = phone.register(password=password)
        elapsed = time.perf_counter() - start
        names = sorted(line.split(b":")[0].decode() for line in reply.split(b"\r\n\r\n")[0].split(b"\r\n")[1:])
        return status_of(reply), names, elapsed

    wrong = [attempt("alice", "guess") for _ in range(8)]
    ghost = [attempt("nosuchuser", "guess") for _ in range(8)]
    assert {w[0] for w in wrong} == {g[0] for g in ghost} == {401}
    assert wrong[0][1] == ghost[0][1]
    median = lambda xs: sorted(xs)[len(xs) // 2]
    a, b = median([w[2] for w in wrong]), median([g[2] for g in ghost])
    assert max(a, b) < 5 * min(a, b) + 0.005  # the same class, not an exact match (shared machine)


def test_replayed_nonce_count_is_refused(registrar: Proxy) -> None:
    phone = Phone(registrar)
    challenge = header_values(phone.request(), "WWW-Authenticate")[0]
    auth = digest_header(challenge, "alice", PASSWORD, "REGISTER", "sip:example.com", nc=1)
    assert status_of(phone.request(auth=auth)) == 200
    assert status_of(phone.request(auth=auth)) == 401  # the same nc again: a replay
    auth2 = digest_header(challenge, "alice", PASSWORD, "REGISTER", "sip:example.com", nc=2)
    assert status_of(phone.request(auth=auth2)) == 200


def test_stale_nonce_gets_stale_true(registrar: Proxy) -> None:
    phone = Phone(registrar)
    old = int(time.time()) - 3600
    stamp, salt = f"{old:x}", "00112233aabbccdd"
    mac = hmac.new(SECRET.encode(), f"{stamp}.{salt}:example.com".encode(), hashlib.sha256).hexdigest()[:32]
    challenge = f'Digest realm="example.com", nonce="{stamp}.{salt}.{mac}", algorithm=SHA-256, qop="auth"'
    reply = phone.request(auth=digest_header(challenge, "alice", PASSWORD, "REGISTER", "sip:example.com"))
    assert status_of(reply) == 401 and all("stale=true" in v for v in header_values(reply, "WWW-Authenticate"))


def test_someone_elses_aor_is_forbidden(registrar: Proxy) -> None:
    phone = Phone(registrar, "alice")
    assert status_of(phone.register(to_user="bob")) == 403


def test_binding_rules_end_to_end(registrar: Proxy) -> None:
    phone = Phone(registrar)
    assert status_of(phone.register(expires=10)) == 423
    assert header_values(phone.request(expires=10), "Min-Expires") in ([], ["30"])
    two = phone.register(contacts=("<sip:alice@127.0.0.1:5999>;q=0.4", f"<sip:alice@127.0.0.1:{phone.port}>"),
                         expires=900)
    assert status_of(two) == 200 and len(header_values(two, "Contact")) == 2
    assert all(int(c.split("expires=")[1].split(";")[0]) <= 600 for c in header_values(two, "Contact"))  # clamped
    query = phone.register(contacts=(), expires=None)
    assert status_of(query) == 200 and len(header_values(query, "Contact")) == 2
    gone = phone.register(contacts=("*",), expires=0)
    assert status_of(gone) == 200 and header_values(gone, "Contact") == []


def test_path_is_stored_and_echoed(registrar: Proxy) -> None:
    phone = Phone(registrar)
    extra = "Path: <sip:p1.example.net;lr>\r\nSupported: path\r\n"
    ok = phone.register(extra=extra)
    assert status_of(ok) == 200 and header_values(ok, "Path") == ["<sip:p1.example.net;lr>"]
    if registrar.backend == "redis":
        import json

        import redis

        client = redis.Redis.from_url(header_url(registrar))
        key = f"{registrar.prefix}loc:{{alice@example.com}}"
        stored = json.loads(client.get(key))
        assert stored[0]["path"] == ["<sip:p1.example.net;lr>"] and 100_000 <= client.pttl(key) <= 122_000


def header_url(proxy: Proxy) -> str:
    return next(line.split('"')[1] for line in (proxy.log.parent / "edge.toml").read_text().splitlines()
                if line.startswith("redis_url"))


def test_proxy_challenges_configured_methods(registrar: Proxy) -> None:
    phone = Phone(registrar)
    first = phone.request(method="INVITE", uri="sip:bob@example.com", expires=None)
    assert status_of(first) == 407 and len(header_values(first, "Proxy-Authenticate")) == 2
    answer = phone.register(method="INVITE", uri="sip:bob@example.com", expires=None)
    assert status_of(answer) != 407  # authenticated: handled (routing is the proxy's job)


def test_register_for_foreign_domain_is_refused(registrar: Proxy) -> None:
    phone = Phone(registrar)
    assert status_of(phone.request(uri="sip:elsewhere.org")) == 403


def test_redis_down_gets_a_clear_answer(tmp_path: pathlib.Path) -> None:
    """With the store unreachable, an authenticated REGISTER gets 503 + Retry-After, and the proxy keeps serving."""
    from tests.helpers import free_port, options

    dead = free_port()  # nothing listens there
    config = (f'domains = ["example.com"]\n[registrar]\nusers = "{users_file(tmp_path, "example.com")}"\n'
              f'secret = "{SECRET}"\n[state]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:{dead}/0"\n')
    with running_proxy(config) as proxy:
        phone = Phone(proxy)
        reply = phone.register()
        assert status_of(reply) == 503 and header_values(reply, "Retry-After") == ["5"]
        assert status_of(proxy.udp(options(proxy.uri))) == 200
