"""Prometheus metrics (prometheus-client), served on `[metrics] listen`
(edgeproxy.observability.http).

Names follow Prometheus conventions: `edgeproxy_…_total` for counters.
They live in the process-wide default registry, so every part that counts
imports its metric from here and nothing is registered twice.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

REGISTERS = Counter("edgeproxy_throttle_registers_total",
                    "Client REGISTERs seen by the throttling edge, by outcome (received, absorbed, forwarded)",
                    ["outcome"])
BANS = Counter("edgeproxy_bans_total", "Bans imposed by this instance, by reason", ["reason"])
TRANSACTIONS = Gauge("edgeproxy_transactions", "SIP transactions in the table")
STORE_ERRORS = Counter("edgeproxy_store_errors_total", "Requests that failed on the state store (Redis)")
BACKEND_UP = Gauge("edgeproxy_backend_up", "Dispatcher backend health: 1 up, 0 probing or down", ["backend"])

# Per-message counts are plain integers (no lock, no label lookup on the hot
# path), turned into counters only when /metrics is scraped.
_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH",
            "MESSAGE", "REFER", "INFO", "UPDATE", "PRACK")
_requests = dict.fromkeys((*_METHODS, "other"), 0)  # unknown methods share one series: labels stay bounded
_responses = [0] * 7  # by status class, 1..6


def count_request(method: str) -> None:
    key = method if method in _requests else "other"
    _requests[key] += 1


def count_response(status: int) -> None:
    if 100 <= status < 700:
        _responses[status // 100] += 1


class _MessageCounts(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily("edgeproxy_requests", "SIP requests received (parsed and valid), by method",
                                       labels=["method"])
        for method, n in _requests.items():
            requests.add_metric([method], n)
        yield requests
        responses = CounterMetricFamily("edgeproxy_responses", "SIP responses received, by status class",
                                        labels=["class"])
        for cls in range(1, 7):
            responses.add_metric([f"{cls}xx"], _responses[cls])
        yield responses


REGISTRY.register(_MessageCounts())
