"""Prometheus metrics (prometheus-client), served on `[metrics] listen`
(edgeproxy.observability.http).

Names follow Prometheus conventions: `edgeproxy_…_total` for counters,
seconds for durations.
They live in the process-wide default registry, so every part that counts
imports its metric from here and nothing is registered twice.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTERS = Counter("edgeproxy_throttle_registers_total",
                    "Client REGISTERs seen by the throttling edge, by outcome (received, absorbed, forwarded)",
                    ["outcome"])
BANS = Counter("edgeproxy_bans_total", "Bans imposed by this instance, by reason", ["reason"])
TRANSACTIONS = Gauge("edgeproxy_transactions", "SIP transactions in the table")
STORE_ERRORS = Counter("edgeproxy_store_errors_total", "Requests that failed on the state store (Redis)")
BACKEND_UP = Gauge("edgeproxy_backend_up", "Dispatcher backend health: 1 up, 0 probing or down", ["backend"])
CALLS = Gauge("edgeproxy_calls_in_progress", "Calls set up through this instance and not ended (INVITEs in flight "
              "included)")
BINDINGS = Gauge("edgeproxy_bindings", "Unexpired registrations (contacts) in the location store; with Redis, "
                 "every instance and worker reports the shared total")
SUBSCRIPTIONS = Gauge("edgeproxy_subscriptions", "Presence/dialog subscriptions in the store; with Redis, every "
                      "instance and worker reports the shared total")
SHED = Counter("edgeproxy_overload_dropped_total",
               "New requests received over UDP dropped unread while the receive queue was past "
               "limits.overload_queue (their senders retransmit them)")
OVERLOADED = Gauge("edgeproxy_overloaded", "1 while new requests received over UDP are being dropped (load shedding)")
WORKER_MESSAGES = Counter("edgeproxy_worker_messages_total",
                          "Messages this worker passed to a sibling: responses to the sibling's requests "
                          "(response), messages for a connection the sibling holds (write)", ["kind"])

# Per-message counts are plain integers (no lock, no label lookup on the hot
# path), turned into counters only when /metrics is scraped.
_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH",
            "MESSAGE", "REFER", "INFO", "UPDATE", "PRACK")
_requests = dict.fromkeys((*_METHODS, "other"), 0)  # unknown methods share one series: labels stay bounded
_responses = [0] * 7  # by status class, 1..6


class FastHistogram:
    """A histogram for the hot path: plain counters (the event loop is one thread, so
    no lock), turned into Prometheus buckets only when /metrics is scraped."""

    __slots__ = ("bounds", "counts", "doc", "name", "total")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name, self.doc, self.bounds = name, doc, bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def family(self) -> HistogramMetricFamily:
        buckets, cumulative = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.total)


_LATENCY = (0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
MESSAGE_SECONDS = FastHistogram(
    "edgeproxy_message_seconds",
    "Time a SIP message takes on the event loop, from arrival to the end of its handling (parse, decide, "
    "send); a handler waiting on Redis is continued later, see edgeproxy_store_seconds", _LATENCY)
STORE_SECONDS = FastHistogram("edgeproxy_store_seconds", "Duration of each Redis operation of the state store",
                              _LATENCY)


def count_request(method: str) -> None:
    key = method if method in _requests else "other"
    _requests[key] += 1


def count_response(status: int) -> None:
    if 100 <= status < 700:
        _responses[status // 100] += 1


class _MessageCounts(Collector):
    def collect(self) -> Iterator[Metric]:
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
        yield MESSAGE_SECONDS.family()
        yield STORE_SECONDS.family()


REGISTRY.register(_MessageCounts())
