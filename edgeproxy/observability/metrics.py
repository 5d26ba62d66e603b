"""Prometheus metrics (prometheus-client), served on `[metrics] listen`
(edgeproxy.observability.http).

Names follow Prometheus conventions: `edgeproxy_…_total` for counters.
They live in the process-wide default registry, so every part that counts
imports its metric from here and nothing is registered twice.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

REGISTERS = Counter("edgeproxy_throttle_registers_total",
                    "Client REGISTERs seen by the throttling edge, by outcome (received, absorbed, forwarded)",
                    ["outcome"])
BANS = Counter("edgeproxy_bans_total", "Bans imposed by this instance, by reason", ["reason"])
REQUESTS = Counter("edgeproxy_requests_total", "SIP requests received (parsed and valid), by method", ["method"])
RESPONSES = Counter("edgeproxy_responses_total", "SIP responses received, by status class", ["class"])
TRANSACTIONS = Gauge("edgeproxy_transactions", "SIP transactions in the table")
STORE_ERRORS = Counter("edgeproxy_store_errors_total", "Requests that failed on the state store (Redis)")
BACKEND_UP = Gauge("edgeproxy_backend_up", "Dispatcher backend health: 1 up, 0 probing or down", ["backend"])

_METHODS = frozenset({"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH",
                      "MESSAGE", "REFER", "INFO", "UPDATE", "PRACK"})
_requests = {m: REQUESTS.labels(m) for m in _METHODS}
_other = REQUESTS.labels("other")  # unknown methods share one series: labels stay bounded
_responses = {c: RESPONSES.labels(f"{c}xx") for c in range(1, 7)}


def count_request(method: str) -> None:
    _requests.get(method, _other).inc()


def count_response(status: int) -> None:
    counter = _responses.get(status // 100)
    if counter is not None:
        counter.inc()
