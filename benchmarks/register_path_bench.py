"""The REGISTER path in one process: CPU µs per registration spent in edgeproxy's own code.

    python benchmarks/register_path_bench.py [--registrations 20000] [--opcodes]

Like call_path_bench.py, for what register_bench.py drives with SIPp: a
running EdgeProxy (registrar with digest auth, memory store, 1,000 users
from a users file) gets REGISTER, answers 401, gets the REGISTER with MD5
credentials (qop=auth, each user's own nonce) and answers 200, straight
through `on_message` with its sends captured. Prints µs per registration
(both requests) and per step; `--opcodes` counts bytecodes by function.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from inproc import Steps, repeat, run_virtual, start

from registrar.digest import hexdigest

PHONE = ("127.0.0.1", 5081)
USERS = 1000
REGISTER = (b"REGISTER sip:127.0.0.1:%(port)d SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5081;branch=z9hG4bK-%(n)d-%(cseq)d;rport\r\n"
            b"From: <sip:%(user)s@example.com>;tag=%(n)dSIPpTag\r\n"
            b"To: <sip:%(user)s@example.com>\r\n"
            b"Call-ID: %(n)d-reg@127.0.0.1\r\n"
            b"CSeq: %(cseq)d REGISTER\r\n"
            b"Contact: <sip:%(user)s@127.0.0.1:5081>\r\n"
            b"%(auth)s"
            b"Max-Forwards: 70\r\n"
            b"Expires: 3600\r\n"
            b"User-Agent: SIPp\r\n"
            b"Content-Length: 0\r\n\r\n")


def authorization(challenge: bytes, user: str, uri: str, n: int) -> bytes:
    """The client's answer to a 401, as SIPp computes it (MD5, qop=auth, nc=1)."""
    nonce = challenge.split(b'nonce="', 1)[1].split(b'"', 1)[0].decode()
    ha1 = hexdigest("MD5", f"{user}:example.com:pw-{user}")
    cnonce = f"{n:08x}"
    response = hexdigest("MD5", f"{ha1}:{nonce}:00000001:{cnonce}:auth:{hexdigest('MD5', f'REGISTER:{uri}')}")
    return (f'Authorization: Digest username="{user}",realm="example.com",nonce="{nonce}",uri="{uri}",'
            f'response="{response}",algorithm=MD5,cnonce="{cnonce}",qop=auth,nc=00000001\r\n').encode()


async def run(registrations: int, warmup: int, opcodes: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        users = pathlib.Path(tmp) / "users.toml"
        users.write_text("[users]\n" + "".join(f'user{i:04d} = {{ password = "pw-user{i:04d}" }}\n'
                                                for i in range(USERS)))
        instance = await start(f'domains = ["example.com"]\n[registrar]\nusers = "{users}"\n'
                               'algorithms = ["MD5"]\nsecret = "bench"\n')
    port = instance.local[1]
    phone = instance.source(PHONE)
    uri = f"sip:127.0.0.1:{port}"
    steps = Steps(instance, ("REGISTER → 401", "REGISTER with credentials → 200"))

    def register(n: int) -> None:
        user = f"user{n % USERS:04d}"
        fields = {b"port": port, b"n": n, b"user": user.encode()}
        steps.feed(0, REGISTER % {**fields, b"cseq": 1, b"auth": b""}, phone)
        challenge = instance.last_to(PHONE)
        assert challenge.startswith(b"SIP/2.0 401"), challenge[:40]
        steps.feed(1, REGISTER % {**fields, b"cseq": 2, b"auth": authorization(challenge, user, uri, n)}, phone)
        ok = instance.last_to(PHONE)
        assert ok.startswith(b"SIP/2.0 200"), ok[:40]
        instance.sent.clear()

    await repeat(register, registrations, warmup, steps, "registration", opcodes)
    await instance.edge.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registrations", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--opcodes", action="store_true", help="count the bytecodes per registration, by function")
    args = ap.parse_args()
    run_virtual(run(args.registrations, args.warmup, args.opcodes))


if __name__ == "__main__":
    main()
