"""Three Redis nodes (a master, two replicas) watched by three Sentinels, all on loopback."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

from tests.helpers import free_port, redis_process

MASTER = "mymaster"


class RedisGroup:
    def __init__(self, nodes: dict[int, subprocess.Popen[bytes]], sentinels: list[int]) -> None:
        self.nodes = nodes  # port → process
        self.sentinels = sentinels

    def master_port(self) -> int:
        """The master as the Sentinels name it now."""
        for port in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                address = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(MASTER)
                if address:
                    return int(address[1])
        raise AssertionError("no Sentinel answers")

    def kill_master(self) -> int:
        """kill -9 the master's process (ours, by PID); returns its port."""
        port = self.master_port()
        self.nodes[port].kill()
        self.nodes[port].wait()
        return port

    def wait_new_master(self, old: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port != old:
                with contextlib.suppress(redis.RedisError):
                    if redis.Redis(port=port, socket_timeout=1).info("replication")["role"] == "master":
                        return port
            time.sleep(0.1)
        raise AssertionError("the Sentinels elected no new master")


@contextlib.contextmanager
def sentinel_group() -> Iterator[RedisGroup]:
    ports = [free_port() for _ in range(3)]
    sentinel_ports = [free_port() for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        nodes = {}
        for i, port in enumerate(ports):
            workdir = pathlib.Path(tmp) / f"node{i}"
            workdir.mkdir()
            replica = ["--replicaof", "127.0.0.1", str(ports[0])] if i else []
            nodes[port] = stack.enter_context(redis_process(
                port, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(workdir), *replica))
        for i, port in enumerate(sentinel_ports):
            conf = pathlib.Path(tmp) / f"sentinel{i}.conf"  # a Sentinel rewrites its file: one each
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                            f"sentinel monitor {MASTER} 127.0.0.1 {ports[0]} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} 1000\n"
                            f"sentinel failover-timeout {MASTER} 10000\n")
            stack.enter_context(redis_process(port, str(conf), "--sentinel"))
        deadline = time.monotonic() + 20  # every Sentinel knows both replicas and the other two
        client = [redis.Redis(port=p, socket_timeout=1) for p in sentinel_ports]
        while not all(len(c.sentinel_slaves(MASTER)) == 2 and len(c.sentinel_sentinels(MASTER)) == 2
                      for c in client):
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinels did not discover each other")
            time.sleep(0.2)
        yield RedisGroup(nodes, sentinel_ports)
