"""The least a Python process spends per operation: datagrams moved by uvloop, no SIP logic.

    python benchmarks/floor.py register PORT
    python benchmarks/floor.py relay PORT UAS_PORT

Not a proxy: a reference row for the SIPp benchmarks. `register` answers a
REGISTER without credentials with a canned 401 and one with credentials with
a 200 (nothing parsed or checked beyond finding the header lines to echo);
`relay` inserts one Via line into requests for the UAS and strips it from
responses, which go to whoever sent the last request (one SIPp UAC socket).
Whatever edgeproxy spends above this row is its own code; what this row
costs against Kamailio is what the interpreter and event loop cost before
any of it.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

ECHOED = (b"via:", b"from:", b"to:", b"call-id:", b"cseq:")
CHALLENGE = b'WWW-Authenticate: Digest realm="example.com", nonce="0123456789abcdef", qop="auth", algorithm=MD5\r\n'


def answer(data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    echoed = b"".join(line + b"\r\n" for line in lines[1:] if line.lower().startswith(ECHOED))
    if b"\r\nAuthorization:" in data:
        contact = next((line for line in lines if line.startswith(b"Contact:")), b"")
        return b"SIP/2.0 200 OK\r\n" + echoed + contact + b";expires=3600\r\nContent-Length: 0\r\n\r\n"
    return b"SIP/2.0 401 Unauthorized\r\n" + echoed + CHALLENGE + b"Content-Length: 0\r\n\r\n"


class Registrar(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"REGISTER"):
            self.transport.sendto(answer(data), addr)
        elif data.startswith(b"OPTIONS"):  # the harness's readiness probe
            self.transport.sendto(answer(data).replace(b"401 Unauthorized", b"200 OK", 1), addr)


class Relay(asyncio.DatagramProtocol):
    def __init__(self, port: int, uas: tuple[str, int]) -> None:
        self.uas = uas
        self.via = f"\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKfloor".encode()
        self.uac: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"SIP/2.0"):
            if self.uac is not None:
                self.transport.sendto(data.replace(self.via, b"", 1), self.uac)
        elif data.startswith(b"OPTIONS"):
            self.transport.sendto(answer(data).replace(b"401 Unauthorized", b"200 OK", 1), addr)
        else:
            self.uac = addr
            end = data.index(b"\r\n")
            self.transport.sendto(data[:end] + self.via + data[end:], self.uas)


async def serve(argv: list[str]) -> None:
    loop = asyncio.get_running_loop()
    port = int(argv[1])
    factory = Registrar if argv[0] == "register" else (lambda: Relay(port, ("127.0.0.1", int(argv[2]))))
    await loop.create_datagram_endpoint(factory, local_addr=("127.0.0.1", port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1:]))
