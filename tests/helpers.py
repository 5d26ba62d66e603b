"""Starting a real edgeproxy process and talking SIP to it over real sockets."""

from __future__ import annotations

import os
import pathlib
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on host."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = t.getsockname()[1]
            with socket.socket(family, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def options(uri: str, transport: str = "UDP", sent_by: str = "127.0.0.1:9", branch: str | None = None,
            extra: str = "", call_id: str | None = None) -> bytes:
    branch = branch or "z9hG4bK" + secrets.token_hex(6)
    return (f"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {sent_by};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:tester@example.com>;tag={secrets.token_hex(4)}\r\n"
            f"To: <{uri}>\r\nCall-ID: {call_id or secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\n{extra}"
            f"Content-Length: 0\r\n\r\n").encode()


def status_of(data: bytes) -> int:
    assert data.startswith(b"SIP/2.0 "), data[:80]
    return int(data[8:11])


class Proxy:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, host: str, log: pathlib.Path) -> None:
        self.proc = proc
        self.port = port
        self.host = host
        self.log = log

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def udp(self, data: bytes, timeout: float = 3.0) -> bytes:
        with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, (self.host, self.port))
            call_id = re.search(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", data, re.IGNORECASE | re.MULTILINE)
            while True:
                reply = s.recv(65535)
                # a port can be reused while a late answer to its former owner is in flight
                if call_id is None or call_id.group(1) in reply:
                    return reply

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def _wait_ready(proc: subprocess.Popen[bytes], host: str, port: int, log: pathlib.Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"edgeproxy exited with {proc.returncode}:\n{log.read_text()}")
        if b"edgeproxy started" in log.read_bytes():
            return
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"edgeproxy did not start:\n{log.read_text()}")


@contextmanager
def running_proxy(config: str = "", host: str = "127.0.0.1", port: int | None = None,
                  listen: list[str] | None = None, prefix: list[str] | None = None,
                  drain_timeout: float = 2.0) -> Iterator[Proxy]:
    """An edgeproxy process on free ports; `config` is extra TOML after [server];
    `prefix` runs it under another command (`ip netns exec NS`, which execs: same PID)."""
    port = port or free_port(host)
    h = f"[{host}]" if ":" in host else host
    listen = listen or [f"udp:{h}:{port}", f"tcp:{h}:{port}"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = pathlib.Path(tmp) / "edge.toml"
        log = pathlib.Path(tmp) / "edge.log"
        listen_toml = ", ".join(f'"{item}"' for item in listen)
        cfg.write_text(f"[server]\nlisten = [{listen_toml}]\ndrain_timeout = {drain_timeout}\n{config}\n")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "edgeproxy.cli", "run", "--config", str(cfg)],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        proxy = Proxy(proc, port, host, log)
        try:
            _wait_ready(proc, host, port, log)
            yield proxy
        finally:
            if proc.poll() is None:
                proxy.stop()


@contextmanager
def redis_process(port: int, *args: str, host: str = "127.0.0.1") -> Iterator[subprocess.Popen[bytes]]:
    """redis-server with `args` (a node, or a Sentinel) answering PING on `port`, stopped by PID afterwards."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not installed: `make test` installs the Debian package redis-server")
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((host, port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"redis-server {' '.join(args)} did not start")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


@contextmanager
def start_redis(port: int | None = None, bind: tuple[str, ...] = ()) -> Iterator[str]:
    """redis-server on a free port (or `port`), no persistence, stopped (by PID) afterwards;
    on 127.0.0.1 and the `bind` addresses (the URL names the first)."""
    port = port or free_port()
    with tempfile.TemporaryDirectory() as tmp, redis_process(
            port, "--port", str(port), "--bind", *bind, "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no" if bind else "yes", "--dir", tmp):
        yield f"redis://{(*bind, '127.0.0.1')[0]}:{port}/0"


def http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    """Status and body of a GET to the instance's operations endpoint."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def eventually(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Whether `check()` turns true within `timeout` (asked every `interval`)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_for(port: int, path: str, status: int, timeout: float = 10.0) -> bool:
    """Whether the operations endpoint's `path` answers `status` within `timeout`."""
    return eventually(lambda: http_get(port, path)[0] == status, timeout)


def metric(port: int, sample: str) -> float:
    """One sample (`name{label="value"}`) from the instance's /metrics; 0 when absent."""
    text = http_get(port, "/metrics")[1]
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " ")]
    return values[0] if values else 0.0


def parse_challenge(value: str) -> dict[str, str]:
    """Parameters of a `Digest …` challenge (test-side, independent of the server's code)."""
    assert value.startswith("Digest ")
    params = {}
    for part in value[7:].split(","):
        name, _, raw = part.strip().partition("=")
        params[name.lower()] = raw.strip('"')
    return params


def digest_header(challenge: str, username: str, password: str, method: str, uri: str, nc: int = 1,
                  cnonce: str = "0a4f113b", realm: str | None = None) -> str:
    import hashlib

    c = parse_challenge(challenge)
    algorithm = c.get("algorithm", "MD5")
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]

    def H(text: str) -> str:
        return h(text.encode()).hexdigest()

    realm = realm or c["realm"]
    ha1 = H(f"{username}:{realm}:{password}")
    ha2 = H(f"{method}:{uri}")
    ncv = f"{nc:08x}"
    response = H(f"{ha1}:{c['nonce']}:{ncv}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{username}", realm="{realm}", nonce="{c["nonce"]}", uri="{uri}", '
            f'response="{response}", algorithm={algorithm}, qop=auth, nc={ncv}, cnonce="{cnonce}"')


def header_values(message: bytes, name: str) -> list[str]:
    out = []
    for line in message.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.decode().partition(":")
        if key.strip().lower() == name.lower():
            out.append(value.strip())
    return out
