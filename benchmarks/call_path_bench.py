"""The call path in one process: CPU µs per call spent in edgeproxy's own code.

    python benchmarks/call_path_bench.py [--calls 20000] [--profile FILE]

A running EdgeProxy (embedded defaults, one dispatcher backend, memory
state) is fed the datagrams of a SIPp-like call straight into its
`on_message`: INVITE, 180, 200, ACK, BYE, 200 (the UAS's answers are made
from what the proxy forwarded, with its Via and Record-Route). Sockets are
left out (what the proxy would send is captured), so the figure is the
Python work per call, repeatable to a few per cent on a busy machine,
where call_bench.py measures everything (kernel included) against
Kamailio. The clock is virtual (inproc.VirtualClock): it moves on by
1/rate per call and the event loop turns, so the transactions' timers fire
and finished transactions leave their tables as at that rate, and the
figure (on_message plus the timer ticks) is the steady state's.
`--profile` writes a cProfile dump of the run (`python -m pstats FILE`);
`--opcodes` counts the bytecodes executed per call, by function (exact and
repeatable: use a few hundred calls, the tracing is slow), which is what
guided the hot-path work.
"""

from __future__ import annotations

import argparse
import cProfile
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from inproc import Steps, repeat, run_virtual, start

UAC = ("127.0.0.1", 5071)
UAS = ("127.0.0.1", 5072)
SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

INVITE = (b"INVITE sip:service@127.0.0.1:%(port)d SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-%(n)d-1-0;rport\r\n"
          b"From: \"sipp\" <sip:sipp@127.0.0.1:5071>;tag=1SIPpTag00%(n)d\r\n"
          b"To: <sip:service@127.0.0.1:%(port)d>\r\n"
          b"Call-ID: %(n)d-1@127.0.0.1\r\n"
          b"CSeq: 1 INVITE\r\n"
          b"Contact: <sip:sipp@127.0.0.1:5071>\r\n"
          b"Max-Forwards: 70\r\n"
          b"Content-Type: application/sdp\r\n"
          b"Content-Length: %(len)d\r\n\r\n")
IN_DIALOG = (b"%(method)s sip:service@127.0.0.1:5072 SIP/2.0\r\n"
             b"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-%(n)d-%(cseq)d-%(method)s;rport\r\n"
             b"%(routes)s"
             b"From: \"sipp\" <sip:sipp@127.0.0.1:5071>;tag=1SIPpTag00%(n)d\r\n"
             b"To: <sip:service@127.0.0.1:%(port)d>;tag=%(n)dUAS\r\n"
             b"Call-ID: %(n)d-1@127.0.0.1\r\n"
             b"CSeq: %(cseq)d %(method)s\r\n"
             b"Max-Forwards: 70\r\n"
             b"Content-Length: 0\r\n\r\n")


def answer(request: bytes, status: bytes, to_tag: bytes, body: bytes = b"") -> bytes:
    """The UAS's response to a forwarded request: its Via, From, To, Call-ID, CSeq and
    Record-Route lines copied (as SIPp's [last_*] keywords do), a tag and a Contact added."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = [line for line in head if line[:4] in (b"Via:", b"From", b"Call", b"CSeq", b"Reco")]
    to = next(line for line in head if line.startswith(b"To:"))
    if b";tag=" not in to:
        to += b";tag=" + to_tag
    lines = [b"SIP/2.0 " + status, *keep, to, b"Contact: <sip:service@127.0.0.1:5072>",
             b"Content-Length: %d" % len(body)]
    if body:
        lines.append(b"Content-Type: application/sdp")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def run(calls: int, profile: str | None, warmup: int, opcodes: bool, rate: float) -> None:
    instance = await start(f'[state]\nrecord_calls = false\n[dispatcher]\nprobe_interval = 60.0\n'
                           f'[[dispatcher.backends]]\nuri = "sip:{UAS[0]}:{UAS[1]}"\n')
    port, to = instance.local[1], instance.last_to
    uac, uas = instance.source(UAC), instance.source(UAS)
    steps = Steps(instance, ("INVITE", "180", "200", "ACK", "BYE", "200 (BYE)"))
    feed = steps.feed

    def one_call(n: int) -> None:
        for data, target in instance.sent:  # the dispatcher's probes since the last call: the UAS is up
            if data.startswith(b"OPTIONS") and target.address == UAS:
                instance.edge.on_message(answer(data, b"200 OK", b"probe"), uas)
        instance.sent.clear()
        feed(0, INVITE % {b"port": port, b"n": n, b"len": len(SDP)} + SDP, uac)
        forwarded = to(UAS)
        tag = b"%dUAS" % n
        feed(1, answer(forwarded, b"180 Ringing", tag), uas)
        feed(2, answer(forwarded, b"200 OK", tag, SDP), uas)
        ok = to(UAC)
        routes = b"".join(b"Route: " + line.partition(b":")[2].strip() + b"\r\n"
                          for line in ok.split(b"\r\n") if line.startswith(b"Record-Route:"))
        fields = {b"n": n, b"port": port, b"routes": routes}
        feed(3, IN_DIALOG % {**fields, b"method": b"ACK", b"cseq": 1}, uac)
        feed(4, IN_DIALOG % {**fields, b"method": b"BYE", b"cseq": 2}, uac)
        bye = to(UAS)
        assert bye.startswith(b"BYE"), bye[:60]
        feed(5, answer(bye, b"200 OK", tag), uas)
        assert to(UAC).startswith(b"SIP/2.0 200") and b"BYE" in to(UAC)

    profiler = cProfile.Profile() if profile else None
    await repeat(one_call, calls, warmup, steps, "call", opcodes, profiler, rate)
    if profiler is not None:
        profiler.dump_stats(profile)
    await instance.edge.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--profile", help="write a cProfile dump here")
    ap.add_argument("--rate", type=float, default=1000.0, help="calls per second of the virtual clock")
    ap.add_argument("--warmup", type=int, default=12000,
                    help="calls before the measured ones (12 s at 1,000/s: every kind of transaction has ended "
                         "in that time, so the tables are at their steady size)")
    ap.add_argument("--opcodes", action="store_true", help="count the bytecodes per call, by function")
    args = ap.parse_args()
    run_virtual(run(args.calls, args.profile, args.warmup, args.opcodes, args.rate))


if __name__ == "__main__":
    main()
