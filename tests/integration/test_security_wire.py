"""No open relay and no enumeration, on real sockets: what a client outside
`security.trusted` can and cannot learn or reach."""

from __future__ import annotations

import pathlib

from tests.helpers import header_values, options, running_proxy, status_of
from tests.integration.test_proxy_flows import UA, invite, method_of
from tests.interop.test_attacks import register


def config(tmp_path: pathlib.Path, extra: str = "") -> str:
    users = tmp_path / "users.toml"
    users.write_text('[users]\nalice = { password = "a-secret" }\ncarol = { password = "c-secret" }\n')
    return (f'domains = ["example.com"]\n[registrar]\nusers = "{users}"\nalgorithms = ["MD5"]\nsecret = "t"\n'
            f'[security]\ntrusted = ["127.0.0.2/32"]\n{extra}')


def shape(response: bytes) -> tuple[int, tuple[str, ...]]:
    """Status and header names (values vary: tags, nonces)."""
    head = response.split(b"\r\n\r\n")[0].decode().split("\r\n")
    return status_of(response), tuple(line.split(":")[0] for line in head[1:])


def test_outsiders_cannot_reach_or_tell_apart_users(tmp_path: pathlib.Path) -> None:
    with running_proxy(config(tmp_path)) as proxy:
        phone = UA("127.0.0.3", "alice")
        assert register(proxy.port, "alice", "a-secret", phone.sock) == 200
        outsider = UA("127.0.0.6", "mallory")
        answers = {}
        for user in ("alice", "carol", "nobody"):  # registered, existing offline, not existing
            outsider.send(invite(outsider, f"sip:{user}@example.com", f"enum-{user}", branch=f"z9hG4bK{user}"),
                          proxy.port)
            answers[user] = outsider.recv()
        assert {shape(a) for a in answers.values()} == {shape(answers["alice"])}
        assert status_of(answers["alice"]) == 407
        # an OPTIONS from outside is answered by the edge itself, registered user or not
        for user in ("alice", "nobody"):
            outsider.send(options(f"sip:{user}@127.0.0.1:{proxy.port}", sent_by=f"{outsider.ip}:{outsider.port}"),
                          proxy.port)
            got = outsider.recv()
            assert status_of(got) == 200 and header_values(got, "Allow"), got
        phone.sock.settimeout(0.5)
        try:
            leaked = phone.sock.recv(65535)
        except TimeoutError:
            leaked = b""
        assert not leaked.startswith((b"INVITE", b"OPTIONS")), leaked  # nothing reached the phone
        # a trusted backend reaches the registered user, and learns who is merely offline
        pbx = UA("127.0.0.2", "pbx")
        pbx.send(invite(pbx, "sip:carol@example.com", "pbx-carol"), proxy.port)
        assert status_of(pbx.recv()) == 480
        pbx.send(invite(pbx, "sip:nobody@example.com", "pbx-nobody", branch="z9hG4bKpbx2"), proxy.port)
        assert status_of(pbx.recv()) == 404
        phone.sock.settimeout(5)
        pbx.send(invite(pbx, "sip:alice@example.com", "pbx-alice", branch="z9hG4bKpbx3"), proxy.port)
        assert method_of(phone.recv()) == "INVITE"


def test_foreign_domains_are_refused_to_outsiders(tmp_path: pathlib.Path) -> None:
    with running_proxy(config(tmp_path)) as proxy:
        outsider = UA("127.0.0.6", "mallory")
        outsider.send(invite(outsider, "sip:bob@elsewhere.example.org", "relay-1"), proxy.port)
        assert status_of(outsider.recv()) == 403


def test_no_product_name_unless_configured(tmp_path: pathlib.Path) -> None:
    with running_proxy(config(tmp_path)) as proxy:
        got = proxy.udp(options(f"sip:127.0.0.1:{proxy.port}"))
        assert not header_values(got, "Server") and not header_values(got, "User-Agent")
        refused = proxy.udp(options("sip:x@elsewhere.example.org").replace(b"OPTIONS", b"MESSAGE"))
        assert status_of(refused) == 403 and not header_values(refused, "Server")
    with running_proxy('user_agent = "ACME SBC"\n' + config(tmp_path)) as proxy:
        got = proxy.udp(options(f"sip:127.0.0.1:{proxy.port}"))
        assert header_values(got, "Server") == ["ACME SBC"]
        refused = proxy.udp(options("sip:x@elsewhere.example.org").replace(b"OPTIONS", b"MESSAGE"))
        assert header_values(refused, "Server") == ["ACME SBC"]


def test_transactions_per_source_are_bounded(tmp_path: pathlib.Path) -> None:
    """INVITEs nobody answers stay open; past the per-source bound the source gets 503, others do not."""
    backend = UA("127.0.0.5", "pbx")  # receives the INVITEs and never answers
    extra = (f'[limits]\nmax_transactions_per_source = 5\n[dispatcher]\nprobe_interval = 60.0\n'
             f'[[dispatcher.backends]]\nuri = "sip:127.0.0.5:{backend.port}"\n')
    with running_proxy(config(tmp_path, extra)) as proxy:
        greedy = UA("127.0.0.6", "mallory")
        for i in range(5):
            greedy.send(invite(greedy, "sip:pbx@example.com", f"held-{i}", branch=f"z9hG4bKheld{i}"), proxy.port)
        greedy.send(invite(greedy, "sip:pbx@example.com", "held-5", branch="z9hG4bKheld5"), proxy.port)
        statuses = [status_of(greedy.recv(skip_100=False)) for _ in range(6)]
        assert statuses.count(100) == 5 and statuses.count(503) == 1, statuses
        other = UA("127.0.0.7", "bob")
        other.send(invite(other, "sip:pbx@example.com", "other-1"), proxy.port)
        assert status_of(other.recv(skip_100=False)) == 100
