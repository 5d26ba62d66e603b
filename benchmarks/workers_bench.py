"""Scaling with worker processes: the highest call rate 1 and 2 workers sustain, and CPU per call.

    python benchmarks/workers_bench.py [--seconds 8] [--start 400] [--step 1.2] [--workers 1 2]

SIPp UAC (`-t un`: a socket per call, as many phones would) → edgeproxy
(Redis state, as workers need; dispatcher to one SIPp UAS, started afresh
for each worker count) → SIPp UAS. For each worker count the rate climbs by
`--step` from `--start` until a run fails more than 0.1 % of its calls or
all but 0.1 % of them are not over within 25 % more than calls/rate (the
proxy fell behind); the last rate that passed is the highest sustainable
one. Every run also reports the CPU the proxy's
processes, the two SIPp processes and redis-server used (cores busy): on a
2-core machine their share bounds what a second worker can add.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.call_bench import answering
from benchmarks.harness import (
    AtRate,
    climb,
    cpu_seconds,
    descendants,
    edgeproxy,
    free_port,
    redis_server,
    report,
    run_sipp,
)


@dataclass
class Run(AtRate):
    proxy_cpu: float  # seconds
    sipp_cpu: float  # seconds, UAC and UAS
    redis_cpu: float  # seconds

    def row(self, workers: int) -> str:
        busy = self.seconds or 1.0
        return (f"{workers:>7} {self.rate:>6} {self.ok:>7} {self.failed:>6} {self.seconds:>7.1f} "
                f"{self.proxy_cpu * 1e6 / max(self.ok, 1):>11.1f} {self.proxy_cpu / busy:>10.2f} "
                f"{self.sipp_cpu / busy:>9.2f} {self.redis_cpu / busy:>10.2f} {'ok' if self.passed else 'FAIL':>5}")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(port: int, proxy_pids: list[int], uas_pid: int, redis_pid: int, rate: int, seconds: float,
            tmp: pathlib.Path) -> Run:
    calls = int(rate * seconds)
    proxy_before, uas_before, uac_before = cpu_seconds(proxy_pids), cpu_seconds([uas_pid]), children_cpu()
    redis_before = cpu_seconds([redis_pid])
    result = run_sipp("uac_call.xml", f"127.0.0.1:{port}", calls, rate, tmp, extra=["-d", "0"], transport="un",
                      timeout=seconds * 4 + 30)
    proxy = cpu_seconds(proxy_pids) - proxy_before
    sipp = cpu_seconds([uas_pid]) - uas_before + children_cpu() - uac_before
    redis = cpu_seconds([redis_pid]) - redis_before
    return Run(rate, result.successful, result.failed, result.seconds, result.settled, proxy, sipp, redis)


def climb_workers(workers: int, redis_url: str, redis_pid: int, uas_port: int, uas_pid: int, args: argparse.Namespace,
                  tmp: pathlib.Path) -> list[Run]:
    config = (f"workers = {workers}\n[state]\nbackend = \"redis\"\nredis_url = \"{redis_url}\"\n"
              "record_calls = false\n[dispatcher]\nprobe_interval = 60.0\n"
              f"[[dispatcher.backends]]\nuri = \"sip:127.0.0.1:{uas_port}\"\n")
    with edgeproxy(config, tmp, f"edgeproxy-{workers}w") as server:
        time.sleep(1.0)  # every worker up (the supervisor answers as soon as one is)
        proxy_pids = descendants(server.proc.pid)
        run_sipp("uac_call.xml", f"127.0.0.1:{server.port}", 500, 250, tmp, extra=["-d", "0"], transport="un")

        def run_at(rate: int) -> Run:
            run = one_run(server.port, proxy_pids, uas_pid, redis_pid, rate, args.seconds, tmp)
            print(run.row(workers), flush=True)
            return run

        return climb(run_at, args.start, args.step, args.max_steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each run at a fixed rate")
    ap.add_argument("--start", type=int, default=400, help="first rate, calls per second")
    ap.add_argument("--step", type=float, default=1.2, help="rate factor between runs")
    ap.add_argument("--max-steps", type=int, default=15)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    header = (f"{'workers':>7} {'rate':>6} {'ok':>7} {'failed':>6} {'secs':>7} {'CPU µs/call':>11} "
              f"{'proxy CPUs':>10} {'SIPp CPUs':>9} {'Redis CPUs':>10} {'run':>5}")
    print(header)
    best: dict[int, Run | None] = {}
    lines = [f"Calls through 1..N workers (Redis state), SIPp -t un, {args.seconds:.0f} s per rate", header]
    with tempfile.TemporaryDirectory() as tmpdir, redis_server() as (redis_url, redis):
        tmp = pathlib.Path(tmpdir)
        for workers in args.workers:
            uas_port = free_port()
            with answering(uas_port, tmp) as backend:
                runs = climb_workers(workers, redis_url, redis.pid, uas_port, backend.pid, args, tmp)
            lines.extend(run.row(workers) for run in runs)
            best[workers] = max((r for r in runs if r.passed), key=lambda r: r.rate, default=None)
    lines.append("highest sustainable rate (< 0.1 % failed, on time):")
    base = best.get(args.workers[0])
    for workers, run in best.items():
        if run is None:
            lines.append(f"  {workers} workers: none of the rates passed")
            continue
        ratio = f", {run.rate / base.rate:.2f}x {args.workers[0]} worker(s)" if base else ""
        lines.append(f"  {workers} workers: {run.rate} calls/s, {run.proxy_cpu * 1e6 / max(run.ok, 1):.0f} µs CPU "
                     f"per call, SIPp {run.sipp_cpu / run.seconds:.2f} and Redis {run.redis_cpu / run.seconds:.2f} "
                     f"of {len(os.sched_getaffinity(0))} cores{ratio}")
    report(lines, "workers")


if __name__ == "__main__":
    main()
