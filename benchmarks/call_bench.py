"""Calls through the proxy: CPU µs per call, edgeproxy vs Kamailio, same run.

    python benchmarks/call_bench.py [--rate 1000] [--calls 20000] [--warmup 12] [--rounds 1]

The defaults are the target's run: 1,000 calls/s for 20 s, 0 failed calls wanted.

SIPp UAC → proxy → SIPp UAS (INVITE/100/180/200/ACK/BYE/200, Record-Route
honoured). Kamailio runs the equivalent configuration: stateful t_relay
with record_route, loose routing for in-dialog requests, one UDP worker;
twice: with its default memory manager (qm, whose free-list searches take
most of its CPU at this rate) and with `-x tlsf`, the one an operator would
pick for load. edgeproxy runs its embedded defaults with the UAS as its one
dispatcher backend, once with `record_calls = false` (Kamailio's equivalent
has no dialog module) and once with the default (each call kept in the
store). CPU time of every process of each proxy is read from /proc around
the SIPp run and divided by the successful calls.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    Server,
    edgeproxy,
    free_port,
    kamailio,
    measure,
    python_floor,
    report,
    run_sipp,
    sipp_command,
    stolen_seconds,
)

KAMAILIO_ROUTE = """
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {{ sl_send_reply("200", "OK"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    record_route();
    $du = "sip:127.0.0.1:{uas_port}";
    t_relay();
}}
"""
KAMAILIO = "kamailio (t_relay + record_route)"  # its default allocator, qm: the ratios' reference
KAMAILIO_TLSF = "kamailio (same, -x tlsf)"
SHED = "edgeproxy_overload_dropped_total"  # new requests a worker dropped unread, behind (limits.overload_queue)
KAMAILIO_MODULES = ["tm", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "kex", "corex"]


def uas(port: int, workdir: pathlib.Path) -> subprocess.Popen[bytes]:
    """SIPp's -timeout ends its whole run: longer than any benchmark's use of it (the caller terminates it)."""
    return subprocess.Popen(sipp_command("uas_call.xml", "-p", str(port), "-aa", "-timeout", "1800s"), cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def answering(port: int, workdir: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    """A SIPp UAS for one measurement, so every proxy meets a fresh peer: a SIPp UAS slows
    down after a few hundred thousand calls."""
    backend = uas(port, workdir)
    time.sleep(0.5)
    try:
        yield backend
    finally:
        backend.terminate()
        try:
            backend.wait(10)
        except subprocess.TimeoutExpired:  # still retransmitting to a proxy that fell behind
            backend.kill()
            backend.wait()


def kamailio_calls(uas_port: int, workdir: pathlib.Path, allocator: str = "") -> AbstractContextManager[Server]:
    """Kamailio relaying calls to the UAS (see harness.kamailio for `allocator`)."""
    return kamailio(KAMAILIO_ROUTE.format(uas_port=uas_port), KAMAILIO_MODULES, "", workdir,
                    f"kamailio-{allocator or 'qm'}", allocator=allocator)


def edge_config(uas_port: int) -> str:
    """The UAS as edgeproxy's one dispatcher backend (probed rarely: the probes are not the load)."""
    return f'[dispatcher]\nprobe_interval = 60.0\n[[dispatcher.backends]]\nuri = "sip:127.0.0.1:{uas_port}"\n'


def bench(server: Server, rate: int, calls: int, tmp: pathlib.Path, warmup: float) -> dict[str, float]:
    """`warmup` seconds at the rate first: past the time finished transactions are kept (5 s,
    Kamailio's wt_timer and our transaction_wait) and Timer K, so the measured run is the
    steady state an operator's instance lives in, not the first seconds of an empty one."""
    target = f"127.0.0.1:{server.port}"
    run_sipp("uac_call.xml", target, max(int(rate * warmup), 100), rate, tmp, extra=["-d", "0"])
    stolen, shed = stolen_seconds(), server.metric(SHED)
    result, cpu = measure(server, lambda: run_sipp("uac_call.xml", target, calls, rate, tmp, extra=["-d", "0"]))
    stolen, shed = stolen_seconds() - stolen, server.metric(SHED) - shed
    ok = max(result.successful, 1)
    return {"ok": result.successful, "failed": result.failed, "us": cpu * 1e6 / ok, "seconds": result.seconds,
            "steal": 100 * stolen / max(result.seconds * (os.cpu_count() or 1), 1e-9), "shed": shed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000, help="calls per second")
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--warmup", type=float, default=12.0, help="seconds at the rate before the measured run")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of every proxy, one after the other in turn; the medians are compared")
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as servers:
        tmp = pathlib.Path(tmpdir)
        uas_port = free_port()
        config = edge_config(uas_port)
        # Kamailio runs without its dialog module: record_calls off is the equivalent; the
        # default (calls kept in the store for /calls and BLF) shows what that costs
        proxies = {
            KAMAILIO: kamailio_calls(uas_port, tmp),
            KAMAILIO_TLSF: kamailio_calls(uas_port, tmp, "tlsf"),
            "python floor (Via in/out, no SIP)": python_floor("relay", tmp, str(uas_port)),
            "edgeproxy (1 worker)": edgeproxy(config + "[state]\nrecord_calls = false\n", tmp, "edgeproxy-bare"),
            "edgeproxy (calls recorded)": edgeproxy(config, tmp),
        }
        started = {name: servers.enter_context(proxy) for name, proxy in proxies.items()}  # idle ones cost nothing
        for _ in range(args.rounds):  # in turn: a noisy spell on the machine hits one run of each, not one proxy
            for name, server in started.items():
                with answering(uas_port, tmp):
                    runs.setdefault(name, []).append(bench(server, args.rate, args.calls, tmp, args.warmup))
    medians = {name: statistics.median(r["us"] for r in rs) for name, rs in runs.items()}
    kam, tlsf = medians[KAMAILIO], medians[KAMAILIO_TLSF]
    lines = [(f"Calls INVITE/180/200/ACK/BYE through the proxy, {args.calls} calls at {args.rate}/s after "
              f"{args.warmup:g} s at that rate, SIPp on loopback, {args.rounds} round(s): median CPU per call"),
             (f"{'proxy':<36} {'ok':>7} {'failed':>6} {'CPU µs/call':>12} {'vs kamailio':>11} {'vs tlsf':>7}  runs "
              "(µs/call, failed, % of the machine stolen by the hypervisor; edgeproxy: requests shed)")]
    for name, rs in runs.items():
        ok, failed = sum(r["ok"] for r in rs), sum(r["failed"] for r in rs)
        each = "  ".join(f"{r['us']:.0f} {r['failed']:.0f} {r['steal']:.0f}%"
                         + (f" shed {r['shed']:.0f}" if started[name].metrics_port else "") for r in rs)
        lines.append(f"{name:<36} {ok:>7.0f} {failed:>6.0f} {medians[name]:>12.1f} {medians[name] / kam:>11.2f} "
                     f"{medians[name] / tlsf:>7.2f}  {each}")
    report(lines, "calls")


if __name__ == "__main__":
    main()
