"""A tiny authoritative DNS server on loopback for resolver tests (UDP; NAPTR, SRV, A, AAAA)."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from dataclasses import dataclass, field

TYPES = {"A": 1, "AAAA": 28, "SRV": 33, "NAPTR": 35}


def _name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    labels = []
    while data[pos]:
        n = data[pos]
        labels.append(data[pos + 1 : pos + 1 + n].decode())
        pos += 1 + n
    return ".".join(labels).lower(), pos + 1


@dataclass
class DnsServer:
    """records[(name, type)] = list of rdata tuples: A/AAAA: (ip,), SRV: (prio, weight, port, target),
    NAPTR: (order, pref, flags, service, regexp, replacement)."""

    records: dict[tuple[str, str], list[tuple]] = field(default_factory=dict)  # type: ignore[type-arg]
    ttl: int = 30
    queries: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(data), peer)
            except (IndexError, struct.error, KeyError):
                continue

    def _answer(self, query: bytes) -> bytes:
        qid, flags = struct.unpack("!HH", query[:4])
        name, pos = _read_name(query, 12)
        qtype, _ = struct.unpack("!HH", query[pos : pos + 4])
        question = query[12 : pos + 4]
        type_name = next((k for k, v in TYPES.items() if v == qtype), str(qtype))
        self.queries.append((name, type_name))
        answers = b""
        rows = self.records.get((name, type_name), [])
        for row in rows:
            rdata = self._rdata(type_name, row)
            answers += b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, self.ttl, len(rdata)) + rdata
        rcode = 0 if rows or any(k[0] == name for k in self.records) else 3  # NXDOMAIN for unknown names
        header = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, len(rows), 0, 0)
        return header + question + answers

    @staticmethod
    def _rdata(type_name: str, row: tuple) -> bytes:  # type: ignore[type-arg]
        if type_name == "A":
            return ipaddress.IPv4Address(row[0]).packed
        if type_name == "AAAA":
            return ipaddress.IPv6Address(row[0]).packed
        if type_name == "SRV":
            return struct.pack("!HHH", row[0], row[1], row[2]) + _name(row[3])
        order, pref, flags, service, regexp, replacement = row
        strings = b"".join(bytes([len(s)]) + s.encode() for s in (flags, service, regexp))
        return struct.pack("!HH", order, pref) + strings + _name(replacement)

    def close(self) -> None:
        self.sock.close()
