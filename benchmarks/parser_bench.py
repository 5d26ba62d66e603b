"""Parser micro-benchmark: messages per second on one core.

    python benchmarks/parser_bench.py [--seconds 1.0]

For each sample:
- `parse`: split + structure checks (values parse on use);
- `forward`: parse, decrement Max-Forwards, add our Via (for a response:
  drop the top Via), serialise: the issue's definition of parse + forward
  (reading the client's top Via as well costs about 2.4 µs more);
- `validated`: parse + full validation (every header an element acts on:
  Request-URI, From, To, Call-ID, CSeq, top Via, Max-Forwards) + forward:
  what a stateful proxy does;
- `naive`: a split-based parse + rebuild with no validation at all, the
  floor any real parser is compared with.
Best of 5 runs is reported, messages per second on one core.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from samples import INVITE, OK_200, REGISTER

from edgeproxy.sip import Request, decrement_max_forwards, parse_message, validate

OUR_VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKep.1a2b3c4d.0;rport"


def parse(data: bytes) -> object:
    return parse_message(data)


def forward(data: bytes, full: bool = False) -> bytes:
    msg = parse_message(data)
    if full:
        validate(msg)
    if isinstance(msg, Request):
        decrement_max_forwards(msg)
        msg.insert("Via", OUR_VIA)
    else:
        msg.remove_first_value("Via")
    return msg.to_bytes()


def validated(data: bytes) -> bytes:
    return forward(data, full=True)


def naive(data: bytes) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return b"\r\n".join([lines[0], b"Via: " + OUR_VIA.encode(), *lines[1:]]) + b"\r\n\r\n" + body


def rate(fn: Callable[[bytes], object], data: bytes, seconds: float) -> float:
    best = 0.0
    for _ in range(5):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 5
        while True:
            for _ in range(200):
                fn(data)
            n += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args()
    rows = []
    for name, data in (("INVITE+SDP", INVITE), ("REGISTER", REGISTER), ("200 OK", OK_200)):
        rows.append([name, len(data)] + [rate(fn, data, args.seconds) for fn in (parse, forward, validated, naive)])
    print(f"{'message':<12} {'bytes':>6} {'parse/s':>10} {'forward/s':>10} {'validated/s':>12} {'naive/s':>10}"
          f" {'naive/fwd':>9} {'naive/val':>9}")
    for name, size, p, f, v, n in rows:
        print(f"{name:<12} {size:>6} {p:>10,.0f} {f:>10,.0f} {v:>12,.0f} {n:>10,.0f} {n / f:>9.2f} {n / v:>9.2f}")


if __name__ == "__main__":
    main()
