"""Presence driven by SIPp: a watcher subscribes; a PUBLISH (presence) or a call
through the edge (dialog) produces the NOTIFY it waits for; it unsubscribes and
gets the terminated NOTIFY. SIPp's exit code says every step matched."""

from __future__ import annotations

import pathlib
import subprocess
import time

from tests.helpers import eventually, free_port, metric, running_proxy
from tests.interop.sipp import SCENARIOS, SippServer, run_sipp, sipp_command

CONFIG = 'domains = ["example.com"]\n[registrar]\nauth = false\n'


def watcher(proxy_port: int, event: str, expect: str, workdir: pathlib.Path) -> subprocess.Popen[str]:
    """A SIPp watcher in the background, waiting for a NOTIFY whose body matches `expect`."""
    scenario = workdir / "watcher.xml"
    scenario.write_text((SCENARIOS / "watcher.xml").read_text().replace("EXPECTED", expect))
    args = sipp_command(str(scenario), f"127.0.0.1:{proxy_port}", "udp", calls=1, rate=1, workdir=workdir,
                        timeout=30, extra=["-s", "alice", "-key", "event", event, "-p", str(free_port())],
                        local_ip="127.0.0.3", name="watcher")
    return subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out[-3000:]


def test_publish_reaches_a_sipp_watcher(tmp_path: pathlib.Path) -> None:
    with running_proxy(CONFIG) as proxy:
        watching = watcher(proxy.port, "presence", "<basic>open</basic>", tmp_path)
        time.sleep(1.0)  # subscribed, first NOTIFY answered
        code, output = run_sipp("publish.xml", f"127.0.0.1:{proxy.port}", "udp", calls=1, rate=1,
                                workdir=tmp_path, extra=["-s", "alice"], local_ip="127.0.0.4")
        assert code == 0, output
        code, output = finished(watching)
        assert code == 0, output


def test_a_call_through_the_edge_reaches_a_sipp_blf_watcher(tmp_path: pathlib.Path) -> None:
    uas_port = free_port()
    backend = SippServer("uas_call.xml", uas_port, tmp_path, "uas")
    config = (CONFIG + f'[dispatcher]\nprobe_interval = 1.0\n[[dispatcher.backends]]\n'
              f'uri = "sip:127.0.0.1:{uas_port}"\n')
    try:
        with running_proxy(config) as proxy:
            watching = watcher(proxy.port, "dialog", "<state>terminated</state>", tmp_path)
            time.sleep(1.5)  # subscribed, and the backend probed
            code, output = run_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", "udp", calls=1, rate=1,
                                    workdir=tmp_path, extra=["-s", "alice"], local_ip="127.0.0.4")
            assert code == 0, output
            code, output = finished(watching)
            assert code == 0, output  # early and confirmed came, then terminated
    finally:
        backend.stop()


def test_sipp_subscription_cycles_are_counted_and_leave_none(tmp_path: pathlib.Path) -> None:
    """The benchmark's presence scenario: 100 SIPp watchers subscribe, get the active NOTIFY, unsubscribe and
    get the terminated one; the subscriptions gauge counts a watcher that stays and ends at 0."""
    ops = free_port()
    with running_proxy(CONFIG + f'[metrics]\nlisten = "127.0.0.1:{ops}"\n') as proxy:
        watching = watcher(proxy.port, "presence", "<basic>open</basic>", tmp_path)
        assert eventually(lambda: metric(ops, "edgeproxy_subscriptions") == 1)
        code, output = run_sipp("subscribe_cycle.xml", f"127.0.0.1:{proxy.port}", "udp", calls=100, rate=50,
                                workdir=tmp_path, extra=["-s", "alice", "-key", "event", "presence"])
        assert code == 0, output
        assert metric(ops, "edgeproxy_subscriptions") == 1
        code, output = run_sipp("publish.xml", f"127.0.0.1:{proxy.port}", "udp", calls=1, rate=1,
                                workdir=tmp_path, extra=["-s", "alice"], local_ip="127.0.0.4")
        assert code == 0, output
        assert finished(watching)[0] == 0  # it saw the open state and unsubscribed
        assert metric(ops, "edgeproxy_subscriptions") == 0
