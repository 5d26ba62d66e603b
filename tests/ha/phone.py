"""A UDP SIP endpoint in a thread: answers every request 200 and keeps what it heard."""

from __future__ import annotations

import secrets
import socket
import threading
import time

from tests.helpers import header_values


def header(message: bytes, name: str) -> str:
    """The first value of a header, "" when absent."""
    values = header_values(message, name)
    return values[0] if values else ""


class Phone:
    def __init__(self, ip: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(0.2)
        self.ip, self.port = self.sock.getsockname()
        self.requests: list[bytes] = []
        self.responses: list[bytes] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def contact(self, user: str) -> str:
        return f"sip:{user}@{self.ip}:{self.port}"

    def request(self, method: str, ruri: str, to: str, dest: tuple[str, int], extra: str = "",
                body: bytes = b"", user: str = "phone") -> str:
        """Send a request (new dialog); returns its Call-ID."""
        call_id = secrets.token_hex(8)
        self.sock.sendto((
            f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"From: <sip:{user}@example.com>;tag={secrets.token_hex(4)}\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\nContact: <{self.contact(user)}>\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body, dest)
        return call_id

    def final(self, call_id: str, timeout: float = 5.0) -> int:
        """Status of the final response to our request with that Call-ID (0: none in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for resp in self.responses:
                    if header(resp, "Call-ID") == call_id and not resp.startswith(b"SIP/2.0 1"):
                        return int(resp[8:11])
            time.sleep(0.02)
        return 0

    def heard(self, method: str) -> list[bytes]:
        with self.lock:
            return [r for r in self.requests if r.startswith(method.encode() + b" ")]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if data.startswith(b"SIP/2.0 "):
                with self.lock:
                    self.responses.append(data)
                continue
            with self.lock:
                self.requests.append(data)
            head = data.split(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
            keep = [h for h in head[1:] if h.split(":")[0].strip().lower() in ("via", "from", "call-id", "cseq")]
            to = header(data, "To")
            if "tag=" not in to:
                to += ";tag=" + secrets.token_hex(4)
            reply = "\r\n".join(["SIP/2.0 200 OK", *keep, f"To: {to}", "Content-Length: 0", "", ""])
            self.sock.sendto(reply.encode(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
