"""The operations endpoint: /health, /ready (flips with Redis), /metrics moving with traffic."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from contextlib import ExitStack

from tests.helpers import free_port, options, running_proxy, start_redis, status_of


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def sample(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def wait_for(port: int, path: str, status: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(port, path)[0] == status:
            return True
        time.sleep(0.2)
    return False


def test_health_ready_and_metrics() -> None:
    ops = free_port()
    with running_proxy(f'[metrics]\nlisten = "127.0.0.1:{ops}"\n') as proxy:
        assert get(ops, "/health") == (200, "ok\n")
        assert get(ops, "/ready") == (200, "ready\n")
        assert get(ops, "/nothing")[0] == 404
        before = sample(get(ops, "/metrics")[1], 'edgeproxy_requests_total{method="OPTIONS"}')
        for _ in range(3):
            assert status_of(proxy.udp(options(proxy.uri))) == 200
        after = sample(get(ops, "/metrics")[1], 'edgeproxy_requests_total{method="OPTIONS"}')
        assert after - before == 3
        assert "edgeproxy_transactions " in get(ops, "/metrics")[1]


def test_ready_follows_redis() -> None:
    """Redis goes away: /ready turns 503 while /health stays 200 and stateless requests are served;
    Redis comes back on the same address: ready again, without a restart."""
    ops, redis_port = free_port(), free_port()
    config = (f'[state]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:{redis_port}/0"\n'
              f'[metrics]\nlisten = "127.0.0.1:{ops}"\n')
    with ExitStack() as stack:
        first_redis = ExitStack()
        first_redis.enter_context(start_redis(redis_port))
        stack.callback(first_redis.close)
        proxy = stack.enter_context(running_proxy(config))
        assert wait_for(ops, "/ready", 200)
        first_redis.close()
        assert wait_for(ops, "/ready", 503)
        assert get(ops, "/ready")[1] == "state store unreachable\n"
        assert get(ops, "/health")[0] == 200
        assert status_of(proxy.udp(options(proxy.uri))) == 200
        stack.enter_context(start_redis(redis_port))
        assert wait_for(ops, "/ready", 200)
