"""Calls through the edge to SIPp backends: dispatch, Record-Route, probing, failover."""

from __future__ import annotations

import datetime
import pathlib
import signal
import threading
import time

from tests.helpers import free_port, metric, running_proxy
from tests.interop.sipp import SippServer, call_counts, message_counts, run_sipp, start_sipp


def dispatcher_config(ports: list[int], algorithm: str = "round-robin", probe: float = 0.5) -> str:
    backends = "".join(f'[[dispatcher.backends]]\nuri = "sip:127.0.0.1:{p}"\n' for p in ports)
    return f'[dispatcher]\nalgorithm = "{algorithm}"\nprobe_interval = {probe}\nbranch_timeout = 1.0\n{backends}'


def stamp(line: str) -> float:
    return datetime.datetime.fromisoformat(line.split('"timestamp": "')[1].split('"')[0]).timestamp()


def test_1000_calls_across_two_backends(tmp_path: pathlib.Path) -> None:
    ports = [free_port(), free_port()]
    backends = [SippServer("uas_call.xml", p, tmp_path, f"uas{i}") for i, p in enumerate(ports)]
    try:
        with running_proxy(dispatcher_config(ports)) as proxy:
            time.sleep(1.0)  # first probe round
            code, output = run_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", "udp", calls=1000, rate=200,
                                    workdir=tmp_path, extra=["-d", "20"])
            assert code == 0, output  # SIPp exits 0 only when every call succeeded
            time.sleep(2.5)  # backends write their statistics every second
            done = [b.successful() for b in backends]
            assert sum(done) == 1000, done  # every BYE reached the backend of its dialog
            assert all(400 <= n <= 600 for n in done), done  # round-robin used both
    finally:
        for b in backends:
            b.stop()


def test_backend_stopped_mid_run(tmp_path: pathlib.Path) -> None:
    ports = [free_port(), free_port()]
    backends = [SippServer("uas_call.xml", p, tmp_path, f"uas{i}") for i, p in enumerate(ports)]
    try:
        with running_proxy(dispatcher_config(ports, probe=0.5)) as proxy:
            time.sleep(1.0)
            stopped: list[float] = []
            killer = threading.Timer(3.0, lambda: (stopped.append(time.time()), backends[1].stop()))
            killer.start()
            started = time.monotonic()
            _, output = run_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", "udp", calls=1000, rate=100,
                                 workdir=tmp_path, extra=["-d", "10"], timeout=120)
            elapsed = time.monotonic() - started
            killer.join()
            successful, failed = call_counts(output)
            # only calls already answered by the stopped backend can fail (their BYE has no one to reach)
            assert successful >= 990 and successful + failed == 1000, output
            log = proxy.log.read_text().splitlines()
            marked = [line for line in log if "backend health" in line and f":{ports[1]}" in line]
            assert marked and ('"probing"' in marked[0] or '"down"' in marked[0]), log[-30:]
            marked_at = stamp(marked[0])
            assert 0 <= marked_at - stopped[0] <= 2.0, marked_at - stopped[0]  # probe window: 2 × 0.5 s + slack
            # a call sent to the dead backend fails over after branch_timeout (1 s): every failover
            # must concern an INVITE sent before the backend was marked
            failovers = [stamp(line) for line in log if '"failover"' in line]
            assert failovers and all(t - 1.0 <= marked_at + 0.2 for t in failovers), (marked_at, failovers)
            assert len(failovers) <= 150  # at 100 calls/s, only those of the detection window
            assert elapsed < 60
    finally:
        for b in backends:
            b.stop()


def test_backend_by_dns_name(tmp_path: pathlib.Path) -> None:
    """A backend given by name is located per RFC 3263 (NAPTR → SRV → A) before it takes calls."""
    from tests.dnsserver import DnsServer

    port = free_port()
    dns = DnsServer({("pbx.test", "NAPTR"): [(10, 10, "S", "SIP+D2U", "", "_sip._udp.pbx.test")],
                     ("_sip._udp.pbx.test", "SRV"): [(10, 1, port, "node1.pbx.test")],
                     ("node1.pbx.test", "A"): [("127.0.0.1",)]})
    backend = SippServer("uas_call.xml", port, tmp_path, "uas")
    config = (f'nameservers = ["127.0.0.1:{dns.port}"]\n[dispatcher]\nprobe_interval = 0.5\n'
              '[[dispatcher.backends]]\nuri = "sip:pbx.test"\n')
    try:
        with running_proxy(config) as proxy:
            time.sleep(1.0)
            code, output = run_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", "udp", calls=20, rate=20,
                                    workdir=tmp_path, extra=["-d", "10"])
            assert code == 0, output
            assert ("pbx.test", "NAPTR") in dns.queries and ("node1.pbx.test", "A") in dns.queries
    finally:
        backend.stop()
        dns.close()


def test_sigterm_during_a_sipp_run_loses_no_established_call(tmp_path: pathlib.Path) -> None:
    """SIGTERM while calls are up: new calls get 503, every call already answered gets its
    BYE through (the instance goes on listening), then the process exits 0 by itself."""
    port = free_port()
    backend = SippServer("uas_call.xml", port, tmp_path, "uas")
    try:
        with running_proxy(dispatcher_config([port]), drain_timeout=30) as proxy:
            time.sleep(1.0)  # first probe round
            calls = start_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", 60, 20, tmp_path, timeout=60,
                               extra=["-d", "3000"])
            time.sleep(1.5)  # about 30 calls up (3 s each), 30 still to come
            proxy.proc.send_signal(signal.SIGTERM)
            output, _ = calls.communicate(timeout=120)
            assert proxy.proc.wait(30) == 0
            rows = message_counts(output)
            answered = rows[[name for name, _ in rows].index("200")][1]  # the INVITEs' 200
            hung_up = [count for name, count in rows if name == "200"][-1]  # the BYEs' 200
            successful, failed = call_counts(output)
            print(f"\nSIGTERM after 1.5 s of 60 calls: {answered} established, {hung_up} hung up through the "
                  f"draining instance, {failed} failed (new calls, refused with 503)")
            assert 0 < answered < 60 and hung_up == answered == successful, output[-3000:]
            assert failed == 60 - answered  # the others were refused at once (503), none hung
            stopped = proxy.log.read_text()
            assert '"stopped"' in stopped and "Traceback" not in stopped
    finally:
        backend.stop()


def test_metrics_move_during_a_sipp_run(tmp_path: pathlib.Path, redis_server: str) -> None:
    """What an operator watches, scraped twice while SIPp calls flow through (state in Redis)."""
    port, ops = free_port(), free_port()
    config = (dispatcher_config([port]) + f'[metrics]\nlisten = "127.0.0.1:{ops}"\n'
              f'[state]\nbackend = "redis"\nredis_url = "{redis_server}"\nkey_prefix = "m{port}:"\n')
    backend = SippServer("uas_call.xml", port, tmp_path, "uas")
    try:
        with running_proxy(config) as proxy:
            time.sleep(1.0)  # first probe round
            invites = 'edgeproxy_requests_total{method="INVITE"}'
            calls = start_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", 150, 50, tmp_path, extra=["-d", "1000"])
            time.sleep(1.0)
            first = {name: metric(ops, name) for name in (invites, "edgeproxy_message_seconds_count",
                                                           "edgeproxy_store_seconds_count")}
            in_progress = metric(ops, "edgeproxy_calls_in_progress")
            time.sleep(1.0)
            second = {name: metric(ops, name) for name in first}
            output, _ = calls.communicate(timeout=60)
            assert call_counts(output) == (150, 0), output[-2000:]
            assert in_progress > 10  # about 50 calls of 1 s each are up at any moment
            assert all(second[name] > first[name] > 0 for name in first), (first, second)
            assert metric(ops, f'edgeproxy_backend_up{{backend="sip:127.0.0.1:{port}"}}') == 1
            assert metric(ops, invites) == 150 and metric(ops, 'edgeproxy_responses_total{class="2xx"}') >= 300
            assert metric(ops, "edgeproxy_calls_in_progress") == 0  # every BYE seen
            handled = metric(ops, "edgeproxy_message_seconds_count")
            assert metric(ops, 'edgeproxy_message_seconds_bucket{le="+Inf"}') == handled >= 600
    finally:
        backend.stop()


def test_calls_through_two_workers_sharing_the_port(tmp_path: pathlib.Path, redis_server: str) -> None:
    """`server.workers = 2`: SIPp's calls (a socket each) spread over both workers; the backend's
    answers all reach one of them, which hands the other its share: no call lost."""
    from tests.helpers import wait_for

    port, ops = free_port(), free_port()
    config = ("workers = 2\n" + dispatcher_config([port]) + f'[metrics]\nlisten = "127.0.0.1:{ops}"\n'
              f'[state]\nbackend = "redis"\nredis_url = "{redis_server}"\nkey_prefix = "w{port}:"\n')
    backend = SippServer("uas_call.xml", port, tmp_path, "uas")
    try:
        with running_proxy(config) as proxy:
            assert wait_for(ops, "/ready", 200)
            time.sleep(1.0)  # first probe round
            code, output = run_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", "udp-per-call", calls=400, rate=100,
                                    workdir=tmp_path, extra=["-d", "20"])
            assert code == 0 and call_counts(output) == (400, 0), output
            invites = [metric(ops, f'edgeproxy_requests_total{{method="INVITE",worker="{w}"}}') for w in (0, 1)]
            assert sum(invites) == 400 and min(invites) >= 100, invites  # both did a fair share
            handed = [metric(ops, f'edgeproxy_worker_messages_total{{kind="response",worker="{w}"}}') for w in (0, 1)]
            assert sum(handed) >= min(invites) * 2, handed  # ≥ 180 and 200 of the other worker's INVITEs
            assert proxy.stop() == 0
    finally:
        backend.stop()


def test_sighup_moves_new_calls_to_the_new_backend_without_failures(tmp_path: pathlib.Path) -> None:
    """SIGHUP in the middle of a SIPp run, the backend list changed from A to B: no call fails, the calls up
    at the reload end through A (their BYE follows the Record-Route), the ones after it go to B."""
    from tests.helpers import eventually
    from tests.integration.test_reload import reload_with

    a_port, b_port = free_port(), free_port()
    a = SippServer("uas_call.xml", a_port, tmp_path, "uas-a")
    b = SippServer("uas_call.xml", b_port, tmp_path, "uas-b")
    try:
        with running_proxy(dispatcher_config([a_port])) as proxy:
            time.sleep(1.0)  # first probe round
            calls = start_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", 200, 40, tmp_path, timeout=60,
                               extra=["-d", "1000"])
            time.sleep(2.0)  # about 80 calls set up, 40 of them still up
            reload_with(proxy, dispatcher_config([b_port]))
            output, _ = calls.communicate(timeout=120)
            assert call_counts(output) == (200, 0), output[-3000:]
            assert eventually(lambda: a.successful() + b.successful() == 200, 5.0), (a.successful(), b.successful())
            print(f"\nSIGHUP after 2 s of 200 calls (40/s, 1 s each): {a.successful()} ended through A, "
                  f"{b.successful()} through B, 0 failed")
            assert 40 <= a.successful() <= 160 and b.successful() >= 40
            assert "Traceback" not in proxy.log.read_text()
    finally:
        a.stop()
        b.stop()
