"""One table: CPU per operation and the highest sustained rate, edgeproxy vs Kamailio, in the same run.

    python benchmarks/bench_table.py [--seconds 5] [--step 1.25] [--max-rate 8000]

What `make bench` ends with. Each row is one operation on one server, each
server one process (Kamailio: one UDP worker, run with its default memory
manager, qm, then with `-x tlsf`; the ratios are to the default), SIPp on
loopback:

  call          INVITE/100/180/200/ACK/BYE/200 through the proxy to a SIPp UAS
                (Kamailio: stateful t_relay + record_route; edgeproxy: its
                dispatcher, calls not recorded — Kamailio has no dialog module here)
  REGISTER      REGISTER, 401, REGISTER with MD5 digest, 200; 1,000 users
                (Kamailio: registrar + auth, usrloc in memory; edgeproxy: memory,
                then Redis store)
  subscription  SUBSCRIBE, 200, NOTIFY, SUBSCRIBE Expires: 0, 200, NOTIFY
                (Kamailio: presence + presence_xml, subscriptions in memory)
  NOTIFY        a PUBLISH fanned out to --watchers subscribers (one socket of this
                script answering every NOTIFY), --publishes times

For a SIPp row the server first runs `--base-seconds` at the row's base
rate, the same for every server: its CPU (utime+stime of all its processes
from /proc) over the successful operations is the CPU µs per operation.
Then the rate climbs by `--step`, `--seconds` per rate, until a run fails
more than 0.1 % or falls behind (all but 0.1 % of its operations are not over
within 25 % more than they should take): the last
rate that passed is the highest sustainable one (`≥` when --max-rate was
reached first). SIPp shares the two cores with the server, so the highest
rates are bounded by the load generator too, for every server alike. The
NOTIFY row's CPU is over all its fan-outs (/proc counts 10 ms ticks), its
rate the fan-outs' median NOTIFYs per second. The Python
floor rows (benchmarks/floor.py: the same datagrams through uvloop with no
SIP logic) show what the interpreter and event loop cost before any of it.
The table is printed and saved under benchmarks/results/ with the machine.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks import call_bench, presence_bench, register_bench
from benchmarks.harness import (
    AtRate,
    Server,
    climb,
    edgeproxy,
    free_port,
    measure,
    python_floor,
    redis_server,
    report,
    run_sipp,
    sipp_users,
)

TLSF = "(same, -x tlsf)"  # Kamailio with the allocator an operator picks for load; ratios stay vs its default


@dataclass
class Step(AtRate):
    cpu: float  # seconds of the server's processes

    @property
    def us(self) -> float:
        return self.cpu * 1e6 / max(self.ok, 1)


@dataclass
class Row:
    operation: str
    server: str
    us: float | None  # CPU µs per operation at the base rate; None: it failed there
    base: int  # the rate it was measured at (0: not a fixed-rate row)
    highest: float  # highest sustained rate; 0: none passed
    capped: bool = False
    note: str = ""


@dataclass
class Sipp:
    """How a row's SIPp UAC runs."""
    scenario: str
    base: int
    extra: list[str]


def sipp_row(operation: str, name: str, start: Callable[[], AbstractContextManager[Server | None]], sipp: Sipp,
             args: argparse.Namespace, tmp: pathlib.Path) -> Row:
    with start() as server:
        if server is None:
            return Row(operation, name, None, sipp.base, 0, note="not run: kamailio-presence-modules missing")
        target = f"127.0.0.1:{server.port}"

        def run_at(rate: int, seconds: float = args.seconds) -> Step:
            count = int(rate * seconds)
            result, cpu = measure(server, lambda: run_sipp(sipp.scenario, target, count, rate, tmp, extra=sipp.extra,
                                                           timeout=seconds * 4 + 30))
            step = Step(rate, result.successful, result.failed, result.seconds, result.settled, cpu)
            print(f"  {operation:<13} {name:<28} {rate:>6}/s ok {step.ok:>6} failed {step.failed:>5} "
                  f"{step.seconds:>5.1f} s (settled {step.settled:>4.1f}) {step.us:>8.1f} µs/op "
                  f"{'ok' if step.passed else 'FAIL'}", flush=True)
            return step

        run_sipp(sipp.scenario, target, min(500, sipp.base * 2), sipp.base, tmp, extra=sipp.extra)  # warm up
        base = run_at(sipp.base, args.base_seconds)
        if not base.passed:
            return Row(operation, name, base.us, sipp.base, 0, note=f"{base.failed} failed at the base rate")
        runs = [base, *climb(run_at, sipp.base * args.step, args.step, args.max_steps, args.max_rate)]
        best = max(r.rate for r in runs if r.passed)
        return Row(operation, name, base.us, sipp.base, best, capped=best >= args.max_rate)


def fan_out_row(name: str, start: Callable[[], AbstractContextManager[Server | None]],
                args: argparse.Namespace) -> Row:
    with start() as server:
        if server is None:
            return Row("NOTIFY", name, None, 0, 0, note="not run: kamailio-presence-modules missing")
        lines, result = presence_bench.run(server, args.watchers, args.publishes)
    print("\n".join(f"  {line}" for line in lines), flush=True)
    if result is None:
        return Row("NOTIFY", name, None, 0, 0, note="NOTIFYs missing")
    return Row("NOTIFY", name, result.notify_us, 0, result.notify_rate)


def table(rows: list[Row], args: argparse.Namespace) -> list[str]:
    out = [(f"edgeproxy vs Kamailio, same run: CPU µs per operation (from /proc) at the base rate, and the highest "
            f"rate with < 0.1 % failures (+{(args.step - 1) * 100:.0f} % steps of {args.seconds:.0f} s)"),
           (f"{'operation':<13} {'server':<30} {'CPU µs/op':>10} {'vs kamailio':>11} {'at rate/s':>10} "
            f"{'highest rate/s':>15}")]
    kam: dict[str, float] = {}
    for row in rows:
        if row.server.startswith("kamailio") and row.us and row.operation not in kam:  # the default's row
            kam[row.operation] = row.us
        ratio = f"{row.us / kam[row.operation]:.2f}" if row.us and row.operation in kam else "-"
        us = f"{row.us:.1f}" if row.us is not None else "-"
        highest = f"{'≥' if row.capped else ''}{row.highest:,.0f}" if row.highest else "-"
        base = str(row.base) if row.base else "fan-out"
        out.append(f"{row.operation:<13} {row.server:<30} {us:>10} {ratio:>11} {base:>10} {highest:>15}"
                   + (f"  ({row.note})" if row.note else ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each climbing run")
    ap.add_argument("--base-seconds", type=float, default=10.0, help="length of the run CPU is measured on")
    ap.add_argument("--step", type=float, default=1.25, help="rate factor between climbing runs")
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--max-rate", type=int, default=8000, help="stop climbing here (SIPp's own limit is near)")
    ap.add_argument("--call-rate", type=int, default=1000)
    ap.add_argument("--register-rate", type=int, default=1000)
    ap.add_argument("--subscribe-rate", type=int, default=400)
    ap.add_argument("--watchers", type=int, default=2000)
    ap.add_argument("--publishes", type=int, default=7)
    ap.add_argument("--bindings", type=int, default=100_000)
    args = ap.parse_args()
    rows: list[Row] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmpdir, redis_server() as (redis_url, _):
        tmp = pathlib.Path(tmpdir)
        databases = itertools.count(1)

        def redis() -> str:
            """A database of its own for each Redis-backed server: a row's leftovers (subscriptions of
            SIPp runs that failed while climbing) must not cost the next row NOTIFYs to nobody."""
            return f'[state]\nbackend = "redis"\nredis_url = "{redis_url.rsplit("/", 1)[0]}/{next(databases)}"\n'

        uas_port = free_port()
        calls = Sipp("uac_call.xml", args.call_rate, ["-d", "0"])
        dispatcher = call_bench.edge_config(uas_port)
        for name, start in (
                ("kamailio (tm, record_route)", lambda: call_bench.kamailio_calls(uas_port, tmp)),
                (f"kamailio {TLSF}", lambda: call_bench.kamailio_calls(uas_port, tmp, "tlsf")),
                ("edgeproxy (memory)", lambda: edgeproxy(dispatcher + "[state]\nrecord_calls = false\n", tmp)),
                ("python floor (reference)", lambda: python_floor("relay", tmp, str(uas_port)))):
            with call_bench.answering(uas_port, tmp):
                rows.append(sipp_row("call", name, start, calls, args, tmp))

        csv, users = sipp_users(tmp, 1000)
        registers = Sipp("register_auth.xml", args.register_rate, ["-inf", str(csv)])
        registrar = register_bench.edge_config(users)
        for name, start in (
                ("kamailio (usrloc in memory)", lambda: register_bench.kamailio_registrar(tmp)),
                (f"kamailio {TLSF}", lambda: register_bench.kamailio_registrar(tmp, "tlsf")),
                ("edgeproxy (memory)", lambda: edgeproxy(registrar, tmp, "edge-memory")),
                ("edgeproxy (redis)", lambda: edgeproxy(registrar + redis(), tmp, "edge-redis")),
                ("python floor (reference)", lambda: python_floor("register", tmp))):
            rows.append(sipp_row("REGISTER", name, start, registers, args, tmp))

        cycles = Sipp("subscribe_cycle.xml", args.subscribe_rate, ["-s", "alice", "-key", "event", "presence"])
        presence = presence_bench.edge_config(max(args.watchers, args.subscribe_rate * 30))
        servers = (("kamailio (presence)", lambda: presence_bench.kamailio_presence(tmp)),
                   (f"kamailio {TLSF}", lambda: presence_bench.kamailio_presence(tmp, "tlsf")),
                   ("edgeproxy (memory)", lambda: edgeproxy(presence, tmp, "edge-presence-memory")),
                   ("edgeproxy (redis)", lambda: edgeproxy(presence + redis(), tmp, "edge-presence-redis")))
        for name, start in servers:
            rows.append(sipp_row("subscription", name, start, cycles, args, tmp))
        for name, start in servers:
            rows.append(fan_out_row(name, start, args))
    base, after = register_bench.bindings_rss(args.bindings)
    lines = [*table(rows, args),
             f"memory store, {args.bindings:,} bindings: RSS {after:.1f} MB (process before: {base:.1f} MB)",
             f"({time.monotonic() - started:.0f} s in all)"]
    report(lines, "table")


if __name__ == "__main__":
    main()
