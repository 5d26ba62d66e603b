"""`server.workers = N` (N > 1): the parent of N worker processes.

Each worker is a full instance (`edgeproxy run --worker I`) binding the same
ports with SO_REUSEPORT; they share their state through Redis and each other
through `transport.workers`. The parent starts them, passes SIGTERM (drain)
and SIGHUP (reload, only once the new configuration checks out) on, starts a
worker again when one dies, and answers the `[metrics]` port for all of them:
/metrics merges the workers' series under a `worker` label, /ready is ready
when every worker is.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys

import structlog
from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.config import Config, ConfigError, load
from edgeproxy.observability.http import OpsServer
from edgeproxy.state.errors import StoreError
from edgeproxy.state.users import UsersFileError
from edgeproxy.transport.workers import LINK_HOST, SECRET_ENV

log = structlog.get_logger(__name__)

RESTART_DELAY = 1.0  # seconds before a worker that died is started again
FETCH_TIMEOUT = 5.0


def die_with_parent(group: str) -> None:
    """In a worker: SIGTERM (a drain) when the supervisor goes, even by kill -9, so no
    orphan keeps the shared ports next to the next generation of workers (Linux prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if str(os.getppid()) != group.split("-", 1)[0]:  # the supervisor (its PID starts the group) was gone before
        os.kill(os.getpid(), signal.SIGTERM)


def ops_name(group: str, index: int) -> str:
    """The abstract Unix socket a worker answers operations requests on."""
    return f"@edgeproxy-{group}-ops{index}"


async def fetch(name: str, path: str) -> tuple[int, bytes]:
    """GET `path` from a worker's operations socket: (status, body)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, "\0" + name[1:]), FETCH_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: worker\r\n\r\n".encode())
        reply = await asyncio.wait_for(reader.read(), FETCH_TIMEOUT)
    finally:
        writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def free_udp_port() -> int:
    """A port for a worker's link socket (it binds it again when started anew)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LINK_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class _Merged:
    """A collector handing generate_latest the workers' families, each sample labelled with its worker."""

    def __init__(self, texts: dict[int, str]) -> None:
        self.texts = texts

    def collect(self) -> list[Metric]:
        families: dict[str, Metric] = {}
        for worker, text in self.texts.items():
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": str(worker)}, sample.value,
                                      sample.timestamp)
        return list(families.values())


def merge_metrics(texts: dict[int, str]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(texts))  # type: ignore[arg-type]
    return generate_latest(registry)


class Supervisor:
    def __init__(self, config: Config, path: str) -> None:
        self.config = config
        self.path = path
        self.count = config.server.workers
        self.group = f"{os.getpid()}-{secrets.token_hex(3)}"  # the PID first: see die_with_parent
        # without registrar.secret, the nonce secret the workers share (a nonce one issues, another verifies)
        self.secret = secrets.token_hex(32)
        self.link_ports = ",".join(str(free_udp_port()) for _ in range(self.count))
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = False
        self._watchers: list[asyncio.Task[int]] = []

    async def run(self) -> int:
        ops = OpsServer(self.readiness, self.calls, self.metrics)
        try:
            if self.config.metrics.listen:
                await ops.start(self.config.metrics.listen)
        except OSError as err:
            log.error("cannot listen", error=str(err), key="metrics.listen")
            return 1
        for index in range(self.count):
            await self._start(index)
        self._watchers = [asyncio.create_task(self._watch(i)) for i in range(self.count)]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        log.info("workers started", workers=self.count, pids=[p.pid for p in self.procs.values()])
        await stop.wait()
        self.stopping = True
        self._signal(signal.SIGTERM)
        codes = await asyncio.gather(*self._watchers)
        await ops.close()
        log.info("stopped", workers=self.count)
        return max(codes, default=0)

    async def _start(self, index: int) -> None:
        self.procs[index] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgeproxy.cli", "run", "--config", self.path,
            "--worker", str(index), "--group", self.group, "--link-ports", self.link_ports, env={**os.environ, SECRET_ENV: self.secret})

    async def _watch(self, index: int) -> int:
        """Wait for the worker to end; start it again unless we are stopping. Its exit code, when we stop."""
        while True:
            code = await self.procs[index].wait()
            if self.stopping:
                return code
            log.error("worker died, starting it again", worker=index, exit_code=code, delay=RESTART_DELAY)
            await asyncio.sleep(RESTART_DELAY)
            if self.stopping:
                return 0
            await self._start(index)

    def _signal(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    def _reload(self) -> None:
        """Pass SIGHUP on only if the file checks out: no worker is left on a half-read configuration."""
        try:
            config = load(self.path)
        except (ConfigError, UsersFileError, OSError, ValueError) as err:
            log.error("reload failed: workers keep their configuration", error=str(err))
            return
        if config.server.workers != self.count:
            log.warning("server.workers changes only with a restart", running=self.count,
                        configured=config.server.workers)
        self._signal(signal.SIGHUP)

    # -- the operations endpoint, for every worker ----------------------------------------
    async def _ask(self, path: str) -> dict[int, tuple[int, bytes] | Exception]:
        async def one(index: int) -> tuple[int, bytes] | Exception:
            try:
                return await fetch(ops_name(self.group, index), path)
            except (OSError, TimeoutError, ValueError, IndexError) as err:
                return err

        answers = await asyncio.gather(*(one(i) for i in range(self.count)))
        return dict(enumerate(answers))

    async def metrics(self) -> bytes:
        answers = await self._ask("/metrics")
        return merge_metrics({i: a[1].decode() for i, a in answers.items() if not isinstance(a, Exception)})

    async def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "draining"
        problems = []
        for index, answer in (await self._ask("/ready")).items():
            if isinstance(answer, Exception):
                problems.append(f"worker {index}: not answering ({answer or type(answer).__name__})")
            elif answer[0] != 200:
                problems.append(f"worker {index}: {answer[1].decode(errors='replace').strip()}")
        return (False, "; ".join(problems)) if problems else (True, f"ready: {self.count} workers")

    async def calls(self) -> list[dict[str, object]]:
        """The dialog store is shared: any worker that answers lists every call."""
        for answer in (await self._ask("/calls")).values():
            if not isinstance(answer, Exception) and answer[0] == 200:
                calls: list[dict[str, object]] = json.loads(answer[1])["calls"]
                return calls
        raise StoreError("no worker could read the calls")
