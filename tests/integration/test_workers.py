"""`server.workers = 2`: two processes on the same ports, one instance to the outside.

A WebSocket client's connection lives in one worker; calls for it arrive at
either (SO_REUSEPORT picks by source address), and both the INVITE and its
answer must cross to the right worker. The supervisor restarts a worker that
dies, passes SIGHUP on only for a configuration that checks out, and stops
every worker on SIGTERM.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.helpers import Proxy, eventually, free_port, http_get, metric, running_proxy, status_of, wait_for
from tests.integration.test_proxy_flows import UA, WsPhone, answer, invite

BASE = 'workers = 2\ndomains = ["example.com"]\n[registrar]\nauth = false\n[security]\ntrusted = ["127.0.0.2/32"]\n'


def workers_of(proxy: Proxy) -> list[int]:
    """The supervisor's children (the workers), by PID."""
    with open(f"/proc/{proxy.proc.pid}/task/{proxy.proc.pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


@contextmanager
def two_workers(redis_url: str, extra: str = "", listen: list[str] | None = None,
                port: int | None = None) -> Iterator[tuple[Proxy, int]]:
    ops = free_port()
    config = (BASE + f'[state]\nbackend = "redis"\nredis_url = "{redis_url}"\nkey_prefix = "w{ops}:"\n'
              f'[metrics]\nlisten = "127.0.0.1:{ops}"\n{extra}')
    with running_proxy(config, listen=listen, port=port) as proxy:
        assert wait_for(ops, "/ready", 200), http_get(ops, "/ready")  # both workers up
        yield proxy, ops


def test_a_websocket_client_is_reached_whichever_worker_a_call_lands_on(redis_server: str) -> None:
    port, ws_port = free_port(), free_port()
    with two_workers(redis_server, listen=[f"udp:127.0.0.1:{port}", f"ws:127.0.0.1:{ws_port}"], port=port) as (
            proxy, ops):
        browser = WsPhone(ws_port)
        browser.register()
        marks = set()
        for n in range(16):  # 16 source ports: the kernel spreads them over both workers
            pbx = UA("127.0.0.2", "pbx")
            pbx.send(invite(pbx, "sip:alice@example.com", f"w-call-{n}"), proxy.port)
            try:
                got = browser.messages()
            except TimeoutError:  # seen twice in CI, never alone: say what the proxy and the caller saw
                pbx.sock.settimeout(0.5)
                try:
                    caller_got = pbx.recv().decode(errors="replace")
                except TimeoutError:
                    caller_got = "nothing"
                pytest.fail(f"call {n} never reached the browser; the caller got: {caller_got}\n"
                            f"proxy log:\n{proxy.log.read_text()[-4000:]}")
            assert got and got[0].startswith(f"INVITE {WsPhone.CONTACT} SIP/2.0"), got
            marks.add(re.search(r"branch=z9hG4bK\S*\.w(\d)", got[0]).group(1))  # type: ignore[union-attr]
            browser.send(answer(got[0], "200 OK", WsPhone.CONTACT, f"b{n}"))
            assert status_of(pbx.recv()) == 200  # the answer found the worker that forwarded the INVITE
        browser.close()
        assert marks == {"0", "1"}  # both workers forwarded calls: one of them through its sibling
        crossed = sum(metric(ops, f'edgeproxy_worker_messages_total{{kind="{kind}",worker="{w}"}}')
                      for kind in ("write", "response") for w in (0, 1))
        assert crossed >= 2  # at least one INVITE written through, and its answer handed back
        invites = [metric(ops, f'edgeproxy_requests_total{{method="INVITE",worker="{w}"}}') for w in (0, 1)]
        assert sum(invites) == 16 and all(invites), invites


def test_a_worker_that_dies_is_started_again(redis_server: str) -> None:
    with two_workers(redis_server) as (proxy, ops):
        first = workers_of(proxy)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        assert wait_for(ops, "/ready", 503, timeout=5)  # one worker short
        assert wait_for(ops, "/ready", 200, timeout=10)
        now = workers_of(proxy)
        assert len(now) == 2 and first[0] not in now and first[1] in now
        assert b"worker died, starting it again" in proxy.log.read_bytes()
        for _ in range(4):  # whichever worker each lands on, it serves
            phone = UA("127.0.0.3")
            phone.register(proxy.port)
        assert proxy.stop() == 0
        stopped = events(proxy, "stopped")
        assert [e.get("worker") for e in stopped[-3:]] in ([0, 1, None], [1, 0, None])  # the supervisor last
        assert not any(pathlib.Path(f"/proc/{pid}").exists() for pid in now)


def events(proxy: Proxy, name: str) -> list[dict[str, object]]:
    """The JSON log lines of that event."""
    lines = [json.loads(line) for line in proxy.log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


def test_sighup_reaches_every_worker_only_with_a_valid_configuration(redis_server: str) -> None:
    with two_workers(redis_server) as (proxy, _):
        config = proxy.log.parent / "edge.toml"
        good = config.read_text()
        config.write_text(good.replace("[registrar]\n", "[registrar]\nmin_expires = 5000\nmax_expires = 60\n"))
        os.kill(proxy.proc.pid, signal.SIGHUP)
        assert eventually(lambda: bool(events(proxy, "reload failed: workers keep their configuration")))
        assert events(proxy, "reloaded") == []
        config.write_text(good)
        os.kill(proxy.proc.pid, signal.SIGHUP)
        assert eventually(lambda: len(events(proxy, "reloaded")) == 2)
        assert {e["worker"] for e in events(proxy, "reloaded")} == {0, 1}


def test_workers_do_not_outlive_their_supervisor(redis_server: str) -> None:
    """kill -9 of the supervisor: its workers drain and go, leaving the ports to the next start."""
    with two_workers(redis_server) as (proxy, _):
        workers = workers_of(proxy)
        proxy.proc.kill()
        proxy.proc.wait()
        assert eventually(lambda: not any(pathlib.Path(f"/proc/{pid}").exists() for pid in workers), timeout=15)
