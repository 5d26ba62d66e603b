"""A headless baresip (Debian's baresip-core) driven through its ctrl_tcp module.

ctrl_tcp speaks netstrings carrying JSON: commands (`{"command", "params", "token"}`)
are answered with `{"response": true, "token", "data"}`, and every UA event
(REGISTER_OK, CALL_ESTABLISHED, CALL_CLOSED…) arrives on the same connection.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import subprocess
import time
from typing import Self

import pytest

from tests.helpers import eventually, free_port

MODULES = pathlib.Path("/usr/lib/baresip/modules")


def baresip_binary() -> str:
    path = shutil.which("baresip")
    if path is None:
        pytest.skip("baresip not installed (Debian package baresip-core; `make test-interop` installs it)")
    return path


def _port_pair() -> int:
    """A port P with P and P+1 free: baresip listens on P (UDP, TCP) and P+1 (TLS)."""
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class Baresip:
    """One user agent: registers `user` through the edge at `proxy_port` over `transport`."""

    def __init__(self, workdir: pathlib.Path, user: str, password: str, proxy_port: int, transport: str,
                 contacts: tuple[str, ...] = (), auto_answer: bool = False) -> None:
        self.user = user
        self.dir = workdir / user
        self.dir.mkdir()
        self.sip_port = _port_pair()
        self.ctrl_port = free_port()
        self.events: list[dict[str, object]] = []
        self._buffer = b""
        # media on loopback only (net_interface), opus at 48 kHz: ausine's only rate
        (self.dir / "config").write_text(
            f"poll_method epoll\nnet_interface 127.0.0.1\nsip_listen 127.0.0.1:{self.sip_port}\n"
            "audio_source ausine,440\naudio_player aufile," + str(self.dir / "heard.wav") + "\n"
            "audio_alert aufile,/dev/null\n"
            f"module_path {MODULES}\n"
            + "".join(f"module {m}.so\n" for m in ("opus", "ausine", "aufile", "account", "contact", "menu",
                                                    "presence"))
            + f"module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n")
        params = f";auth_pass={password};outbound=\"sip:127.0.0.1:{proxy_port};transport={transport}\";regint=300"
        params += ";pubint=300" + (";answermode=auto" if auto_answer else "")
        (self.dir / "accounts").write_text(f"<sip:{user}@example.com;transport={transport}>{params}\n")
        (self.dir / "contacts").write_text("".join(f"<sip:{c}@example.com>;presence=p2p\n" for c in contacts))
        self.log = self.dir / "baresip.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([baresip_binary(), "-f", str(self.dir)], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        try:
            self.ctrl = self._connect()
        except RuntimeError:
            self.proc.kill()
            self.proc.wait()
            raise

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 10
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"baresip {self.user} did not start:\n{self.log.read_text()}") from None
                time.sleep(0.1)

    def _next(self, deadline: float) -> dict[str, object]:
        """The next netstring off the control connection."""
        while True:
            head, colon, rest = self._buffer.partition(b":")
            if colon and len(rest) > int(head):
                size = int(head)
                self._buffer = rest[size + 1:]
                message: dict[str, object] = json.loads(rest[:size])
                if message.get("event"):
                    self.events.append(message)
                return message
            self.ctrl.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.ctrl.recv(65536)
            except TimeoutError:
                raise AssertionError(f"baresip {self.user}: nothing in time; log:\n{self.log.read_text()[-3000:]}")
            if not chunk:
                raise AssertionError(f"baresip {self.user} closed its control connection")
            self._buffer += chunk

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> str:
        """Run a command (dial, hangup, contacts, presence_offline…); its text output."""
        payload = json.dumps({"command": name, "params": params, "token": name}).encode()
        self.ctrl.sendall(b"%d:%s," % (len(payload), payload))
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            if message.get("response") and message.get("token") == name:
                assert message.get("ok"), message
                return str(message.get("data", ""))

    def event(self, kind: str, timeout: float = 10.0) -> dict[str, object]:
        """The first event of this type (already received or still to come)."""
        seen = [e for e in self.events if e.get("type") == kind]
        if seen:
            return seen[0]
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            if message.get("type") == kind:
                return message

    def shows(self, command: str, *words: str, timeout: float = 10.0) -> bool:
        """Whether one line of a listing (`reginfo`, `contacts`) has all `words` within `timeout`."""
        return eventually(lambda: any(all(w in line for w in words) for line in self.command(command).splitlines()),
                          timeout, 0.2)

    def registered(self) -> bool:
        return self.shows("reginfo", f"sip:{self.user}@example.com", "OK")

    def sees(self, contact: str, status: str) -> bool:
        """Whether the contact list shows `contact` with presence `status` (Online, Offline)."""
        return self.shows("contacts", f"sip:{contact}@", status)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        try:
            self.command("quit", timeout=2)
        except (AssertionError, OSError):
            pass
        self.ctrl.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
