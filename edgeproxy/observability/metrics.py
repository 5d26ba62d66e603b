"""Prometheus metrics (prometheus-client), served on `[metrics] listen`.

Names follow Prometheus conventions: `edgeproxy_…_total` for counters.
They live in the process-wide default registry, so every part that counts
imports its metric from here and nothing is registered twice.
"""

from __future__ import annotations

from prometheus_client import Counter, start_http_server

REGISTERS = Counter("edgeproxy_throttle_registers_total",
                    "Client REGISTERs seen by the throttling edge, by outcome (received, absorbed, forwarded)",
                    ["outcome"])
BANS = Counter("edgeproxy_bans_total", "Bans imposed by this instance, by reason", ["reason"])


def serve_metrics(listen: str) -> None:
    """Start the HTTP endpoint (a daemon thread of prometheus-client) on "IP:PORT"."""
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]"))
