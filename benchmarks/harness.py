"""Shared by the SIPp benchmarks: processes, their CPU time from /proc, SIPp runs, Kamailio.

The figure is CPU time per successful operation: utime+stime of every
process of the server under test (a process and all its descendants), read
from /proc before and after a SIPp run at a fixed rate, divided by the
operations SIPp counted as successful.
"""

from __future__ import annotations

import csv
import datetime
import os
import pathlib
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SCENARIOS = ROOT / "tests" / "interop" / "scenarios"
# SIPp's own sockets get 64 KB buffers by default: about 50 datagrams, 25 ms of a 1,000 calls/s
# run. A peer that is not scheduled for longer (this machine is shared) drops what comes in,
# and a lost ACK followed by its BYE aborts the call at a SIPp UAS: the proxies are measured,
# so the peers get the buffers the proxies have (4 MB, capped by net.core.rmem_max).
SIPP_BUFFERS = ("-buff_size", str(4 << 20))
TICK = os.sysconf("SC_CLK_TCK")
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def descendants(pid: int) -> list[int]:
    """pid and every process below it (Kamailio forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / TICK


def stolen_seconds() -> float:
    """CPU time the hypervisor gave to others while this VM wanted it (all cores, /proc/stat):
    on a shared VM, the disturbance that makes a proxy at most of a core fall behind."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


MAX_FAILED = 0.001  # a rate is sustained when at most 0.1 % of its calls fail…
MAX_SLOWDOWN = 1.25  # …and all but 0.1 % of them are over within 25 % more than calls/rate (it kept up)


@dataclass
class AtRate:
    """One SIPp run at a fixed rate, as `climb` steps through them (subclasses add their CPU figures)."""
    rate: int
    ok: int
    failed: int
    seconds: float
    settled: float  # seconds until all but MAX_FAILED of the calls were over

    @property
    def passed(self) -> bool:
        """Sustained: few enough failures, and over in time by `settled` (one lost datagram keeps
        SIPp waiting for its call's timeout: that is a failure, not a slowdown)."""
        calls = self.ok + self.failed
        return calls > 0 and self.failed <= MAX_FAILED * calls and self.settled <= MAX_SLOWDOWN * calls / self.rate


R = TypeVar("R", bound=AtRate)


def climb(run_at: Callable[[int], R], start: float, step: float, max_steps: int, cap: int = 0) -> list[R]:
    """Runs at rising rates (×step from start) until one is not sustained, `max_steps` ran or `cap` is
    reached; the last passing one is the highest sustainable rate."""
    runs: list[R] = []
    rate = start
    while len(runs) < max_steps:
        run = run_at(int(rate))
        runs.append(run)
        if not run.passed or (cap and rate >= cap):
            break
        rate = min(rate * step, cap) if cap else rate * step
    return runs


@dataclass
class SippResult:
    successful: int
    failed: int
    seconds: float
    exit_code: int
    settled: float  # seconds until all but MAX_FAILED of the calls were over (per-second statistics)


def _epoch(stamp: str) -> float:
    return float(stamp.split("\t")[-1])  # SIPp writes "date\ttime\tepoch"


def _settled(rows: list[list[str]], elapsed: float) -> float:
    head = rows[0]
    stats = [dict(zip(head, row)) for row in rows[1:]]
    if not stats:
        return elapsed
    start = _epoch(stats[0]["StartTime"])
    final = stats[-1]
    total = int(final["SuccessfulCall(C)"]) + int(final["FailedCall(C)"])
    for row in stats:
        if int(row["SuccessfulCall(C)"]) + int(row["FailedCall(C)"]) >= (1 - MAX_FAILED) * total:
            return _epoch(row["CurrentTime"]) - start
    return elapsed


def sipp_command(scenario: str, *options: str) -> list[str]:
    """SIPp on loopback running one of SCENARIOS, with the buffers every benchmark peer gets."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp not found: apt-get install sip-tester")
    return [sipp, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", *SIPP_BUFFERS, "-nostdin", *options]


def run_sipp(scenario: str, target: str, calls: int, rate: int, workdir: pathlib.Path,
             inf: pathlib.Path | None = None, extra: list[str] | None = None, timeout: float = 300,
             transport: str = "u1") -> SippResult:
    """`transport` "un": a socket per call, like many phones (so SO_REUSEPORT spreads them over workers)."""
    stats = workdir / f"stats-{time.monotonic_ns()}.csv"
    args = sipp_command(scenario, "-m", str(calls), "-r", str(rate), "-t", transport,
                        *(["-max_socket", str(min(calls, 10000) + 100)] if transport == "un" else []),
                        "-timeout", f"{int(timeout)}s", "-timeout_error", "-trace_stat",
                        "-stf", str(stats), "-fd", "1", *(["-inf", str(inf)] if inf else []), *(extra or []), target)
    start = time.monotonic()
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout + 60, check=False)
    elapsed = time.monotonic() - start
    with stats.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    last = dict(zip(rows[0], rows[-1]))
    return SippResult(int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"]), elapsed, proc.returncode,
                      _settled(rows, elapsed))


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int = 0  # edgeproxy's operations endpoint (0: none)

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def metric(self, sample: str) -> float:
        """One sample (`name` or `name{labels}`) of the server's /metrics, summed over its lines
        (one per worker); 0 when the server has no endpoint or the sample is absent."""
        if not self.metrics_port:
            return 0.0
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as page:
            text = page.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith((sample + " ", sample + "{")))


def wait_udp(port: int, proc: subprocess.Popen[bytes], log: pathlib.Path, timeout: float = 15.0) -> None:
    """Until an OPTIONS to the port gets any answer."""
    msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKwait;rport\r\n"
           "From: <sip:w@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: wait\r\nCSeq: 1 OPTIONS\r\n"
           "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
            s.sendto(msg, ("127.0.0.1", port))
            try:
                s.recv(65535)
                return
            except OSError:
                time.sleep(0.1)
    raise RuntimeError(f"server not answering on {port}:\n{log.read_text()[-3000:]}")


@contextmanager
def edgeproxy(config: str, workdir: pathlib.Path, name: str = "edgeproxy") -> Iterator[Server]:
    """With its operations endpoint on a free port (read only between runs: scrapes cost no CPU
    inside a measurement)."""
    port, metrics_port = free_port(), free_port()
    cfg = workdir / f"{name}.toml"
    log = workdir / f"{name}.log"
    cfg.write_text(f'[server]\nlisten = ["udp:127.0.0.1:{port}"]\n{config}\n[log]\nlevel = "warning"\n'
                   f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    with _serving([sys.executable, "-m", "edgeproxy.cli", "run", "--config", str(cfg)], name, port, log) as server:
        server.metrics_port = metrics_port
        yield server


@contextmanager
def python_floor(mode: str, workdir: pathlib.Path, *args: str) -> Iterator[Server]:
    """benchmarks/floor.py: what moving the same datagrams through uvloop costs, with no SIP logic."""
    port = free_port()
    argv = [sys.executable, str(ROOT / "benchmarks" / "floor.py"), mode, str(port), *args]
    with _serving(argv, f"floor-{mode}", port, workdir / f"floor-{mode}.log") as server:
        yield server


@contextmanager
def _serving(argv: list[str], name: str, port: int, log: pathlib.Path) -> Iterator[Server]:
    """Start a server process, wait until it answers SIP on port, SIGTERM it afterwards (by PID)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_udp(port, proc, log)
        yield Server(name, proc, port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def kamailio(route_script: str, modules: list[str], modparams: str, workdir: pathlib.Path,
             name: str = "kamailio", children: int = 1, allocator: str = "") -> Iterator[Server]:
    """`allocator` "": Kamailio's default memory manager (qm, which keeps debugging data per fragment and
    searches its free lists: under 1,000 calls/s most of Kamailio's CPU goes there); "tlsf" or "fm": the
    faster ones an operator picks with `-x` for load."""
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not os.path.exists(binary):
        raise SystemExit("kamailio not found: apt-get install kamailio")
    port = free_port()
    cfg = workdir / f"{name}.cfg"
    log = workdir / f"{name}.log"
    loads = "\n".join(f'loadmodule "{m}.so"' for m in modules)
    cfg.write_text(f"""#!KAMAILIO
debug=1
log_stderror=yes
children={children}
tcp_children=1
disable_tcp=yes
listen=udp:127.0.0.1:{port}
auto_aliases=no
mpath="{KAMAILIO_MODULES}"
{loads}
{modparams}
{route_script}
""")
    argv = [binary, "-f", str(cfg), "-D", "-E", "-P", str(workdir / f"{name}.pid"), "-w", str(workdir),
            "-m", "256", "-M", "32", *(["-x", allocator] if allocator else [])]
    with _serving(argv, name, port, log) as server:
        yield server


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", proc
        finally:
            proc.terminate()
            proc.wait(10)


def machine() -> str:
    """What a result was measured on, the interpreter's path included: a build without PGO and
    LTO (a plain pyenv one) runs edgeproxy 10–15 % slower than Debian's, so figures only compare
    within one interpreter."""
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    kam = subprocess.run(["kamailio", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    return (f"{platform.node()}: {os.cpu_count()} cores, {cpu}; Linux {platform.release()}; "
            f"Python {platform.python_version()} ({os.path.realpath(sys.executable)}); {kam.strip()}")


def measure(server: Server, run: callable) -> tuple[SippResult, float]:  # type: ignore[valid-type]
    """CPU seconds the server's processes spent during `run()` and its result."""
    pids = server.pids()
    before = cpu_seconds(pids)
    result = run()
    after = cpu_seconds(server.pids())
    return result, after - before


def report(lines: list[str], name: str) -> None:
    """Print a result table with the machine's description and keep it under benchmarks/results/."""
    text = "\n".join([*lines, f"machine: {machine()}"])
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{name}-{stamp}.txt").write_text(text + "\n")


def sipp_users(workdir: pathlib.Path, count: int) -> tuple[pathlib.Path, pathlib.Path]:
    """The same users twice: a SIPp injection file (user; [authentication …]) and an edgeproxy users file."""
    csv_file = workdir / "users.csv"
    toml = workdir / "users.toml"
    csv_file.write_text("SEQUENTIAL\n" + "".join(
        f"user{i:04d};[authentication username=user{i:04d} password=pw{i:04d}x]\n" for i in range(count)))
    toml.write_text("[users]\n" + "".join(f'user{i:04d} = {{ password = "pw{i:04d}x" }}\n' for i in range(count)))
    return csv_file, toml
