"""The operations endpoint: /health, /ready (flips with Redis), /metrics moving with traffic."""

from __future__ import annotations

from contextlib import ExitStack

from tests.helpers import free_port, http_get, metric, options, running_proxy, start_redis, status_of, wait_for


def test_health_ready_and_metrics() -> None:
    ops = free_port()
    with running_proxy(f'[metrics]\nlisten = "127.0.0.1:{ops}"\n') as proxy:
        assert http_get(ops, "/health") == (200, "ok\n")
        assert http_get(ops, "/ready") == (200, "ready\n")
        assert http_get(ops, "/nothing")[0] == 404
        before = metric(ops, 'edgeproxy_requests_total{method="OPTIONS"}')
        for _ in range(3):
            assert status_of(proxy.udp(options(proxy.uri))) == 200
        after = metric(ops, 'edgeproxy_requests_total{method="OPTIONS"}')
        assert after - before == 3
        assert "edgeproxy_transactions " in http_get(ops, "/metrics")[1]


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
        assert http_get(ops, "/ready")[1] == "state store unreachable\n"
        assert http_get(ops, "/health")[0] == 200
        assert status_of(proxy.udp(options(proxy.uri))) == 200
        stack.enter_context(start_redis(redis_port))
        assert wait_for(ops, "/ready", 200)


def test_grafana_dashboard_reads_only_metrics_we_export() -> None:
    """Every series deploy/grafana/edgeproxy.json queries is one /metrics describes."""
    import json
    import re

    from tests.helpers import ROOT

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "edgeproxy.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = {re.sub(r"_bucket$", "", n) for e in exprs for n in re.findall(r"\b((?:edgeproxy|process)_\w+)", e)}
    ops = free_port()
    with running_proxy(f'[metrics]\nlisten = "127.0.0.1:{ops}"\n'):
        described = set(re.findall(r"^# HELP (\w+)", http_get(ops, "/metrics")[1], re.MULTILINE))
    assert len(names) >= 10 and names <= described, names - described
