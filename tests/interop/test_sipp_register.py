"""SIPp registers 1,000 distinct users with digest auth, on each state backend."""

from __future__ import annotations

import json
import pathlib
import socket
import time

import pytest
import redis

from benchmarks.harness import sipp_users
from tests.helpers import free_port, metric, options, running_proxy
from tests.interop.sipp import run_sipp

USERS = 1000


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_sipp_registers_1000_users(backend: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> None:
    csv, toml = sipp_users(tmp_path, USERS)
    ops = free_port()
    state = ""
    if backend == "redis":
        url = request.getfixturevalue("redis_server")
        redis.Redis.from_url(url).flushdb()
        state = f'[state]\nbackend = "redis"\nredis_url = "{url}"\n'
    config = (f'domains = ["example.com"]\n[registrar]\nusers = "{toml}"\nalgorithms = ["MD5"]\n'
              f'secret = "sipp-test"\n{state}[security]\ntrusted = ["127.0.0.2/32"]\n'
              f'[metrics]\nlisten = "127.0.0.1:{ops}"\n')
    phone_port = free_port()
    with running_proxy(config) as proxy:
        assert metric(ops, "edgeproxy_bindings") == 0
        code, output = run_sipp("register_auth.xml", f"127.0.0.1:{proxy.port}", "udp", calls=USERS, rate=250,
                                workdir=tmp_path, inf=csv, extra=["-p", str(phone_port)])
        assert code == 0, output
        assert metric(ops, "edgeproxy_bindings") == USERS
        # a backend calls one of them: the INVITE reaches that user's registered contact
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            phone.bind(("127.0.0.1", phone_port))
            phone.settimeout(5)
            caller.bind(("127.0.0.2", 0))
            invite = options("sip:user0500@example.com", sent_by=f"127.0.0.2:{caller.getsockname()[1]}")
            caller.sendto(invite.replace(b"OPTIONS", b"INVITE"), ("127.0.0.1", proxy.port))
            first = phone.recv(65535).split(b"\r\n")[0]
            assert first == f"INVITE sip:user0500@127.0.0.1:{phone_port} SIP/2.0".encode()
        if backend == "redis":
            client = redis.Redis.from_url(url)
            now = time.time()
            for i in range(USERS):
                key = f"ep:loc:{{user{i:04d}@example.com}}"
                bindings = json.loads(client.get(key) or "[]")
                assert len(bindings) == 1 and bindings[0]["contact"].startswith(f"sip:user{i:04d}@127.0.0.1:")
                assert 3590 <= bindings[0]["expires_at"] - now <= 3601
                assert 3_590_000 <= client.pttl(key) <= 3_602_000
