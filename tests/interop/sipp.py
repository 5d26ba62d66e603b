"""Running SIPp (from Debian's sip-tester) against a proxy, bounded in calls and time."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

SCENARIOS = pathlib.Path(__file__).resolve().parent / "scenarios"


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("sipp not installed: `make test` installs the Debian package sip-tester")
    return path


def sipp_command(scenario: str, target: str, transport: str, calls: int, rate: int, workdir: pathlib.Path,
                 timeout: float = 60.0, inf: pathlib.Path | None = None, extra: list[str] | None = None,
                 local_ip: str = "127.0.0.1", name: str = "") -> list[str]:
    """SIPp running `calls` calls at `rate`/s, each bounded by `timeout`; transport "udp-per-call":
    a socket per call, like that many phones."""
    per_call = ["-max_socket", str(calls + 10)] if transport == "udp-per-call" else []
    return [sipp_binary(), "-sf", str(SCENARIOS / scenario), "-m", str(calls), "-r", str(rate),
            *(["-inf", str(inf)] if inf else []), *(extra or []), *per_call,
            "-t", {"udp": "u1", "tcp": "t1", "udp-per-call": "un"}[transport], "-i", local_ip, "-timeout", f"{int(timeout)}s",
            "-timeout_error", "-nostdin", "-trace_stat", "-stf", str(workdir / f"stats-{name or local_ip}.csv"), target]


def run_sipp(scenario: str, target: str, transport: str, calls: int, rate: int, workdir: pathlib.Path,
             timeout: float = 60.0, inf: pathlib.Path | None = None, extra: list[str] | None = None,
             local_ip: str = "127.0.0.1") -> tuple[int, str]:
    """Run `calls` calls at `rate`/s; returns SIPp's exit code (0: all succeeded) and its statistics."""
    args = sipp_command(scenario, target, transport, calls, rate, workdir, timeout, inf, extra, local_ip)
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30,
                          check=False)
    return proc.returncode, proc.stdout[-3000:] + proc.stderr[-2000:]


def start_sipp(scenario: str, target: str, calls: int, rate: int, workdir: pathlib.Path, timeout: float = 60.0,
               extra: list[str] | None = None, local_ip: str = "127.0.0.1", name: str = "") -> subprocess.Popen[str]:
    """SIPp over UDP in the background (the test acts meanwhile); `communicate()` for its statistics."""
    return subprocess.Popen(sipp_command(scenario, target, "udp", calls, rate, workdir, timeout, extra=extra,
                                         local_ip=local_ip, name=name),
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def call_counts(output: str) -> tuple[int, int]:
    """Successful and failed calls, from SIPp's final statistics screen."""
    ok = re.search(r"Successful call\s+\|\s+\d+\s+\|\s+(\d+)", output)
    failed = re.search(r"Failed call\s+\|\s+\d+\s+\|\s+(\d+)", output)
    assert ok and failed, output[-3000:]
    return int(ok.group(1)), int(failed.group(1))


def message_counts(output: str) -> list[tuple[str, int]]:
    """The scenario screen's rows, in order: (message, how many went or came), e.g. ("200", 39)."""
    rows = re.findall(r"^\s+(\S+) (?:---------->|<----------)\s+(?:E-RTD\d\s+)?(\d+)", output, re.MULTILINE)
    return [(name, int(count)) for name, count in rows]


class SippServer:
    """A SIPp UAS in the background (a backend), stopped by PID afterwards."""

    def __init__(self, scenario: str, port: int, workdir: pathlib.Path, name: str, local_ip: str = "127.0.0.1") -> None:
        self.port = port
        self.stats = workdir / f"{name}-stats.csv"
        self.proc = subprocess.Popen(
            [sipp_binary(), "-sf", str(SCENARIOS / scenario), "-i", local_ip, "-p", str(port), "-aa",
             "-nostdin", "-trace_stat", "-stf", str(self.stats), "-fd", "1", "-timeout", "300s"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def successful(self) -> int:
        """Calls it completed (INVITE…BYE), from its statistics file."""
        import csv

        if not self.stats.exists():
            return 0
        with self.stats.open() as f:
            rows = list(csv.reader(f, delimiter=";"))
        return int(dict(zip(rows[0], rows[-1]))["SuccessfulCall(C)"]) if len(rows) > 1 else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
