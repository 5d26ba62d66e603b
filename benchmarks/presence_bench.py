"""Presence fan-out: one presentity, 1,000 watchers, each PUBLISH → 1,000 NOTIFYs.

    python benchmarks/presence_bench.py [--watchers 1000] [--publishes 5]

For the memory store and the Redis store: the SUBSCRIBE rate (each answered
200 plus its first NOTIFY) and CPU µs per SUBSCRIBE; then `--publishes`
PUBLISHes, each fanned out to every watcher: NOTIFYs per second (from the
PUBLISH to the last NOTIFY received) and CPU µs per NOTIFY (utime+stime of
the edgeproxy process from /proc, over the fan-out, divided by NOTIFYs
received). The watchers are one UDP socket in this process answering every
NOTIFY with 200. Kamailio runs the same: presence + presence_xml (Debian's
kamailio-presence-modules, installed by `make bench`), db_text tables copied
from its schema and cached in memory (db_mode 1), subscriptions in memory
(subs_db_mode 0), one UDP worker.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.harness import Server, cpu_seconds, edgeproxy, kamailio, redis_server, report

KAMAILIO_SCHEMA = pathlib.Path("/usr/share/kamailio/dbtext/kamailio")
KAMAILIO_MODULES = ["tm", "sl", "rr", "maxfwd", "pv", "db_text", "presence", "presence_xml"]
KAMAILIO_ROUTE = """
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (method == "PUBLISH") { handle_publish(); t_release(); exit; }
    if (method == "SUBSCRIBE") { handle_subscribe(); t_release(); exit; }
    sl_send_reply("404", "Not here");
}
"""


def kamailio_params(db: pathlib.Path) -> str:
    url = f"text://{db}"
    return (f'modparam("db_text", "db_mode", 1)\nmodparam("presence", "db_url", "{url}")\n'
            f'modparam("presence", "subs_db_mode", 0)\nmodparam("presence", "publ_cache", 1)\n'
            f'modparam("presence_xml", "db_url", "{url}")\nmodparam("presence_xml", "force_active", 1)\n')

PIDF = ('<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">'
        '<tuple id="t"><status><basic>{}</basic></status><note>n{}</note></tuple></presence>')


def ok_for(request: bytes) -> bytes:
    """A watcher's 200 to a NOTIFY: the headers that identify its transaction, nothing else."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [h for h in head[1:] if h.split(b":", 1)[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")]
    return b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0", b"", b""])


class Watchers:
    """Many subscriptions on one socket; every NOTIFY is answered 200 and counted."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.3", 0))
        self.port = self.sock.getsockname()[1]
        self.notifies = 0
        self.oks = 0
        self.last = 0.0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if data.startswith(b"NOTIFY"):
                self.sock.sendto(ok_for(data), peer)
                self.notifies += 1
                self.last = time.monotonic()
            elif data.startswith(b"SIP/2.0 200"):
                self.oks += 1

    def subscribe(self, port: int, count: int) -> None:
        for i in range(count):
            msg = (f"SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:{self.port};"
                   f"branch=z9hG4bKs{i}x;rport\r\nFrom: <sip:w{i}@example.com>;tag=w{i}\r\n"
                   f"To: <sip:alice@example.com>\r\nCall-ID: bench-{i}\r\nCSeq: 1 SUBSCRIBE\r\n"
                   f"Contact: <sip:w{i}@127.0.0.3:{self.port}>\r\nEvent: presence\r\nExpires: 3600\r\n"
                   "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            self.sock.sendto(msg.encode(), ("127.0.0.1", port))
            if i % 100 == 99:
                time.sleep(0.05)  # 2,000 SUBSCRIBEs/s at most: a fixed rate, not a burst

    def wait(self, notifies: int, timeout: float = 60, poll: float = 0.01) -> bool:
        deadline = time.monotonic() + timeout
        while self.notifies < notifies and time.monotonic() < deadline:
            time.sleep(poll)
        return self.notifies >= notifies

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def publish(port: int, n: int) -> None:
    body = PIDF.format("open" if n % 2 else "closed", n).encode()
    msg = (f"PUBLISH sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.4:9;branch=z9hG4bKp{n}x;rport\r\n"
           f"From: <sip:alice@example.com>;tag=p{n}\r\nTo: <sip:alice@example.com>\r\nCall-ID: pub-{n}\r\n"
           f"CSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n"
           f"Max-Forwards: 70\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.4", 0))
        s.sendto(msg, ("127.0.0.1", port))


@dataclass
class FanOut:
    subscribe_us: float  # CPU per SUBSCRIBE, with its 200 and first NOTIFY
    notify_us: float  # CPU per NOTIFY over every fan-out (one is a few /proc ticks)
    notify_rate: float  # median NOTIFYs per second of a fan-out


@contextmanager
def kamailio_presence(work: pathlib.Path, allocator: str = "") -> Iterator[Server | None]:
    """Kamailio's presence server, or None without kamailio-presence-modules' schema."""
    if not (KAMAILIO_SCHEMA / "presentity").exists():
        yield None
        return
    db = work / "dbtext"
    shutil.rmtree(db, ignore_errors=True)
    shutil.copytree(KAMAILIO_SCHEMA, db)
    with kamailio(KAMAILIO_ROUTE, KAMAILIO_MODULES, kamailio_params(db), work, "kamailio-presence",
                  allocator=allocator) as server:
        yield server


def edge_config(watchers: int) -> str:
    return f'domains = ["example.com"]\n[registrar]\nauth = false\n[presence]\nmax_subscriptions = {watchers * 2}\n'


def run(server: Server, watchers: int, publishes: int) -> tuple[list[str], FanOut | None]:
    """Subscribe, then fan out: the lines to print, and the figures when every NOTIFY came."""
    w = Watchers()
    try:
        pids = server.pids()
        before = cpu_seconds(pids)
        start = time.monotonic()
        w.subscribe(server.port, watchers)
        ok = w.wait(watchers)
        sub_seconds = time.monotonic() - start
        sub_cpu = cpu_seconds(pids) - before
        if not ok:
            return [f"{server.name}: only {w.notifies} of {watchers} first NOTIFYs arrived"], None
        rows = [(f"{server.name}: {watchers} SUBSCRIBEs in {sub_seconds:.2f} s ({watchers / sub_seconds:,.0f}/s), "
                f"{sub_cpu / watchers * 1e6:,.0f} µs CPU per SUBSCRIBE (with its 200 and first NOTIFY)")]
        rates, costs = [], []
        for n in range(publishes):
            base = w.notifies
            before = cpu_seconds(pids)
            start = time.monotonic()
            publish(server.port, n)
            if not w.wait(base + watchers):
                rows.append(f"  publish {n}: only {w.notifies - base} NOTIFYs")
                break
            elapsed = w.last - start
            spent = cpu_seconds(pids) - before
            rates.append(watchers / elapsed)
            costs.append(spent / watchers * 1e6)
        if len(rates) < publishes:
            return rows, None
        rates.sort()
        costs.sort()
        result = FanOut(sub_cpu / watchers * 1e6, sum(costs) / len(costs), rates[len(rates) // 2])
        rows.append(f"  fan-out ({len(rates)} PUBLISHes × {watchers} watchers): median {result.notify_rate:,.0f} "
                    f"NOTIFYs/s, {result.notify_us:,.1f} µs CPU per NOTIFY over all "
                    f"(per PUBLISH {costs[0]:,.0f}–{costs[-1]:,.0f})")
        return rows, result
    finally:
        w.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--publishes", type=int, default=5)
    args = parser.parse_args()
    config = edge_config(args.watchers)
    lines = [f"presence fan-out: 1 presentity, {args.watchers} watchers, {args.publishes} PUBLISHes"]
    results: dict[str, FanOut | None] = {}

    def measured(server: Server | None, name: str) -> None:
        if server is None:
            lines.append(f"{name}: not run (apt-get install kamailio-presence-modules)")
            return
        rows, results[server.name] = run(server, args.watchers, args.publishes)
        lines.extend(rows)

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        with edgeproxy(config, work, "edgeproxy-memory") as server:
            measured(server, "edgeproxy-memory")
        with redis_server() as (url, _), edgeproxy(
                config + f'[state]\nbackend = "redis"\nredis_url = "{url}"\n', work, "edgeproxy-redis") as server:
            measured(server, "edgeproxy-redis")
        with kamailio_presence(work) as server:
            measured(server, "kamailio")
    kam = results.get("kamailio-presence")
    for name, result in results.items():
        if kam and result and name != "kamailio-presence" and kam.subscribe_us and kam.notify_us:
            lines.append(f"{name} vs kamailio: SUBSCRIBE {result.subscribe_us / kam.subscribe_us:.2f}×, "
                         f"NOTIFY {result.notify_us / kam.notify_us:.2f}× the CPU")
    report(lines, "presence")


if __name__ == "__main__":
    main()
