"""100,000 mutated messages over UDP and TCP into a live instance: it must not
crash, log no unhandled exception, keep its memory bounded, and still answer
a valid OPTIONS afterwards.

The mutator is seeded (a failure replays) and starts from the RFC 4475
torture messages plus well-formed requests and responses. The instance
resolves names only through a DNS port on loopback where nothing listens,
so no mutated message can make it send beyond 127.0.0.0/8.
"""

from __future__ import annotations

import pathlib
import random
import socket
import time

from tests.helpers import Proxy, free_port, options, running_proxy, status_of

SEED = 4475
UDP_MESSAGES = 60_000
TCP_MESSAGES = 40_000
SYNC_EVERY = 100  # datagrams between two OPTIONS pings that wait for their 200 (none is lost)
TCP_BATCH = 50

VALID = [
    (b"INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKf1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: f1@h\r\n"
    b"CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5999>\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: 31\r\n\r\nv=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"),
    (b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKf2\r\nMax-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=2\r\nTo: <sip:alice@example.com>\r\nCall-ID: f2@h\r\nCSeq: 7 REGISTER\r\n"
    b"Contact: <sip:alice@127.0.0.1:5999>;expires=60\r\nContent-Length: 0\r\n\r\n"),
    (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKf3\r\nVia: SIP/2.0/UDP 127.0.0.1:5998;branch=z9hG4bKf4\r\n"
    b"From: <sip:a@example.com>;tag=3\r\nTo: <sip:b@example.com>;tag=4\r\nCall-ID: f3@h\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"),
    (b"BYE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKf5\r\nMax-Forwards: 70\r\n"
    b"Route: <sip:127.0.0.1;lr>\r\nFrom: <sip:bob@example.com>;tag=1\r\nTo: <sip:alice@example.com>;tag=9\r\n"
    b"Call-ID: f1@h\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"),
]

INTERESTING = [b"\r\n", b"\r\n\r\n", b"\x00", b"\xff", b";", b",", b":", b"<", b">", b"\"", b"%", b"[", b"]",
               b"Content-Length: 99999\r\n", b"Content-Length: -1\r\n", b"Via: SIP/2.0/UDP x;branch=z9hG4bK\r\n",
               b"Max-Forwards: 0\r\n", b"CSeq: 4294967296 INVITE\r\n", b" " * 200, b"A" * 5000, b"sip:",
               b"Route: <sip:127.0.0.1;lr>\r\n", b"To: <sip:x@y>;tag=\r\n", b"\t\r\n "]


def corpus(conformance_dir: pathlib.Path) -> list[bytes]:
    return VALID + [p.read_bytes() for p in sorted((conformance_dir / "rfc4475").glob("*.dat"))]


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:  # insert something that matters to a SIP parser
            data[pos:pos] = rng.choice(INTERESTING)
        elif op == 2:  # delete a range
            del data[pos:pos + rng.randint(1, 40)]
        elif op == 3:  # truncate
            del data[pos:]
        elif op == 4:  # duplicate or drop a line
            lines = bytes(data).split(b"\r\n")
            i = rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines.insert(i, lines[i])
            else:
                del lines[i]
            data = bytearray(b"\r\n".join(lines))
        elif op == 5:  # splice in a piece of another message
            other = rng.choice(seeds)
            start = rng.randrange(len(other))
            data[pos:pos] = other[start:start + rng.randint(1, 200)]
        elif op == 6:  # a number out of range
            data[pos:pos] = rng.choice([b"99999999999999999999", b"-1", b"0", b"65536", b"4294967296"])
        else:  # change case
            data = bytearray(bytes(data).swapcase() if rng.random() < 0.2 else bytes(data).upper())
    return bytes(data[:60_000])


def ping(proxy: Proxy) -> None:
    """A valid OPTIONS must still be answered: the instance is alive and keeping up."""
    reply = proxy.udp(options(f"sip:127.0.0.1:{proxy.port}"), timeout=10)
    assert status_of(reply) == 200, reply[:200]


def rss_kb(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fuzz_udp(proxy: Proxy, rng: random.Random, seeds: list[bytes], count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.20", 0))
        for i in range(count):
            s.sendto(mutate(rng, seeds), ("127.0.0.1", proxy.port))
            if i % SYNC_EVERY == SYNC_EVERY - 1:
                ping(proxy)


def fuzz_tcp(proxy: Proxy, rng: random.Random, seeds: list[bytes], count: int) -> int:
    """Mutated messages streamed in batches, one connection each, then FIN: the
    instance has read a batch once it closes the connection in turn (a batch
    whose framing a mutation broke is cut short there, as it must be).
    Returns the connections used."""
    connections = 0
    for start in range(0, count, TCP_BATCH):
        connections += 1
        batch = b"".join(mutate(rng, seeds) for _ in range(min(TCP_BATCH, count - start)))
        with socket.create_connection(("127.0.0.1", proxy.port), source_address=("127.0.0.21", 0)) as conn:
            conn.settimeout(10)
            try:
                conn.sendall(batch)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass  # responses, until the instance closes its side
            except OSError:
                pass  # reset by the instance mid-batch: also an answer
        if connections % 50 == 0:
            ping(proxy)
    return connections


def test_fuzzed_messages_over_udp_and_tcp(conformance_dir: pathlib.Path) -> None:
    config = (f'domains = ["example.com"]\nnameservers = ["127.0.0.1:{free_port()}"]\n'
              '[registrar]\nauth = false\n[limits]\nmax_connections_per_ip = 20\n')
    seeds = corpus(conformance_dir)
    rng = random.Random(SEED)
    with running_proxy(config) as proxy:
        pid = proxy.proc.pid
        # the first half warms up: the parse memo tables (8,192 entries each, started afresh when
        # full), the transaction table (limits.transaction_wait of traffic) and the allocator's
        # pools reach their working size; the second half must not grow the process much further
        fuzz_udp(proxy, rng, seeds, UDP_MESSAGES // 2)
        fuzz_tcp(proxy, rng, seeds, TCP_MESSAGES // 2)
        before = rss_kb(pid)
        started = time.monotonic()
        fuzz_udp(proxy, rng, seeds, UDP_MESSAGES // 2)
        connections = fuzz_tcp(proxy, rng, seeds, TCP_MESSAGES // 2)
        elapsed = time.monotonic() - started
        ping(proxy)
        after = rss_kb(pid)
        assert proxy.proc.poll() is None, "the instance died"
        log = proxy.log.read_text(errors="replace")
        for sign in ("unhandled error", "Traceback", "request handling failed", "timer handling failed"):
            assert sign not in log, log[log.find(sign) - 2000:log.find(sign) + 2000]
        print(f"\nfuzz: {UDP_MESSAGES // 2} UDP + {TCP_MESSAGES // 2} TCP messages ({connections} connections) in "
              f"{elapsed:.1f} s; RSS {before / 1024:.1f} → {after / 1024:.1f} MB")
        assert after - before < 40 * 1024, f"RSS grew from {before} kB to {after} kB"
