"""Calls through the proxy: CPU µs per call, edgeproxy vs Kamailio, same run.

    python benchmarks/call_bench.py [--rate 300] [--calls 6000]

SIPp UAC → proxy → SIPp UAS (INVITE/100/180/200/ACK/BYE/200, Record-Route
honoured). Kamailio runs the equivalent configuration: stateful t_relay
with record_route, loose routing for in-dialog requests, one UDP worker.
edgeproxy runs its embedded defaults with the UAS as its one dispatcher
backend, once with `record_calls = false` (Kamailio's equivalent has no
dialog module) and once with the default (each call kept in the store). CPU time of every process of each proxy is read from /proc around
the SIPp run and divided by the successful calls.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    SCENARIOS,
    Server,
    edgeproxy,
    free_port,
    kamailio,
    measure,
    python_floor,
    report,
    run_sipp,
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
KAMAILIO_MODULES = ["tm", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "kex", "corex"]


def uas(port: int, workdir: pathlib.Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_call.xml"), "-i", "127.0.0.1", "-p", str(port),
                             "-aa", "-nostdin", "-timeout", "600s"], cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def edge_config(uas_port: int) -> str:
    """The UAS as edgeproxy's one dispatcher backend (probed rarely: the probes are not the load)."""
    return f'[dispatcher]\nprobe_interval = 60.0\n[[dispatcher.backends]]\nuri = "sip:127.0.0.1:{uas_port}"\n'


def bench(server: Server, rate: int, calls: int, tmp: pathlib.Path) -> dict[str, float]:
    target = f"127.0.0.1:{server.port}"
    run_sipp("uac_call.xml", target, min(500, calls), rate, tmp, extra=["-d", "0"])  # warm up
    result, cpu = measure(server, lambda: run_sipp("uac_call.xml", target, calls, rate, tmp, extra=["-d", "0"]))
    ok = max(result.successful, 1)
    return {"ok": result.successful, "failed": result.failed, "us": cpu * 1e6 / ok, "seconds": result.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=300, help="calls per second")
    ap.add_argument("--calls", type=int, default=6000)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        uas_port = free_port()
        backend = uas(uas_port, tmp)
        time.sleep(0.5)
        try:
            with kamailio(KAMAILIO_ROUTE.format(uas_port=uas_port), KAMAILIO_MODULES, "", tmp) as server:
                rows.append(("kamailio (t_relay + record_route)", bench(server, args.rate, args.calls, tmp)))
            with python_floor("relay", tmp, str(uas_port)) as server:
                rows.append(("python floor (Via in/out, no SIP)", bench(server, args.rate, args.calls, tmp)))
            config = edge_config(uas_port)
            # Kamailio runs without its dialog module: record_calls off is the equivalent; the
            # default (calls kept in the store for /calls and BLF) shows what that costs
            for name, state in (("edgeproxy (1 worker)", "[state]\nrecord_calls = false\n"),
                                ("edgeproxy (calls recorded)", "")):
                with edgeproxy(config + state, tmp) as server:
                    rows.append((name, bench(server, args.rate, args.calls, tmp)))
        finally:
            backend.terminate()
            backend.wait(10)
    kam = rows[0][1]["us"]
    lines = [f"Calls INVITE/180/200/ACK/BYE through the proxy, {args.calls} calls at {args.rate}/s, SIPp on loopback",
             f"{'proxy':<36} {'ok':>7} {'failed':>6} {'CPU µs/call':>12} {'vs kamailio':>11}"]
    for name, r in rows:
        lines.append(f"{name:<36} {r['ok']:>7.0f} {r['failed']:>6.0f} {r['us']:>12.1f} {r['us'] / kam:>11.2f}")
    report(lines, "calls")


if __name__ == "__main__":
    main()
