"""REGISTER with digest auth: CPU µs per successful registration, edgeproxy vs Kamailio.

    python benchmarks/register_bench.py [--rate 300] [--registrations 6000] [--users 1000]

Runs, in one go on this machine: edgeproxy with the memory store, edgeproxy
with the Redis store, and Kamailio 5.x (registrar + auth, in-memory usrloc,
the same users and passwords checked with pv_auth_check). Each gets a SIPp
run of REGISTER → 401 → REGISTER with credentials → 200 at a fixed rate.
Also measures the RSS of a process holding 100,000 bindings in the memory
store. Prints one table and saves it under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import textwrap
from contextlib import AbstractContextManager

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    ROOT,
    Server,
    cpu_seconds,
    edgeproxy,
    kamailio,
    measure,
    python_floor,
    redis_server,
    report,
    run_sipp,
    sipp_users,
)

KAMAILIO_ROUTE = """
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (is_method("REGISTER")) {
        $var(pw) = "pw" + $(tU{s.substr,4,0}) + "x";
        if (!pv_auth_check("$td", "$var(pw)", "0", "1")) {
            auth_challenge("$td", "1");
            exit;
        }
        consume_credentials();
        if (!save("location")) { sl_reply_error(); }
        exit;
    }
    if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; }
    sl_send_reply("404", "Not Found");
}
"""
KAMAILIO_MODULES = ["tm", "sl", "pv", "maxfwd", "textops", "siputils", "usrloc", "registrar", "auth", "kex", "corex"]
KAMAILIO_PARAMS = 'modparam("usrloc", "db_mode", 0)\nmodparam("auth", "secret", "bench-secret")\n'


def kamailio_registrar(workdir: pathlib.Path, allocator: str = "") -> AbstractContextManager[Server]:
    """Kamailio's registrar with digest auth, usrloc in memory (see harness.kamailio for `allocator`)."""
    return kamailio(KAMAILIO_ROUTE, KAMAILIO_MODULES, KAMAILIO_PARAMS, workdir, f"kamailio-{allocator or 'qm'}",
                    allocator=allocator)


def edge_config(users: pathlib.Path) -> str:
    """MD5 only: SIPp 3.6 knows no other digest algorithm."""
    return f'domains = ["example.com"]\n[registrar]\nusers = "{users}"\nalgorithms = ["MD5"]\nsecret = "b"\n'


def bench(server: Server, csv: pathlib.Path, rate: int, count: int, tmp: pathlib.Path,
          extra_pids: list[int] | None = None) -> dict[str, float]:
    target = f"127.0.0.1:{server.port}"
    run_sipp("register_auth.xml", target, min(500, count), rate, tmp, inf=csv)  # warm up
    extra_before = cpu_seconds(extra_pids or [])
    result, cpu = measure(server, lambda: run_sipp("register_auth.xml", target, count, rate, tmp, inf=csv))
    extra = cpu_seconds(extra_pids or []) - extra_before
    ok = max(result.successful, 1)
    return {"ok": result.successful, "failed": result.failed, "us": cpu * 1e6 / ok, "extra_us": extra * 1e6 / ok}


def bindings_rss(count: int) -> tuple[float, float]:
    """RSS (MB) of a fresh process before and after storing `count` bindings in memory."""
    code = textwrap.dedent(f"""
        import asyncio, time
        from edgeproxy.state.location import Binding, MemoryLocationStore
        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        async def main():
            store = MemoryLocationStore()
            base = rss()
            now = time.time()
            for i in range({count}):
                b = Binding(contact=f"sip:user{{i:06d}}@198.51.{{i % 250}}.{{i % 200}}:5060;transport=udp",
                            expires_at=now + 3600, call_id=f"{{i:08x}}-5f4e3d2c1b0a@198.51.100.7", cseq=i,
                            instance='"<urn:uuid:00000000-0000-1000-8000-{{i:012x}}>"', reg_id=1,
                            params=f';+sip.instance="<urn:uuid:00000000-0000-1000-8000-{{i:012x}}>";reg-id=1',
                            source=f"udp:203.0.113.{{i % 250}}:{{40000 + i % 20000}}", behind_nat=True,
                            edge="edge-1", user_agent="Z 5.6.1 v2.10.20.1")
                await store.update(f"user{{i:06d}}@example.com", lambda cur, b=b: [b])
            print(base, rss())
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    base, after = map(float, out.split())
    return base, after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=300, help="registrations per second")
    ap.add_argument("--registrations", type=int, default=6000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--bindings", type=int, default=100_000)
    args = ap.parse_args()
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        csv, toml = sipp_users(tmp, args.users)
        common = edge_config(toml)
        with kamailio_registrar(tmp) as server:
            rows.append(("kamailio (usrloc in memory)", bench(server, csv, args.rate, args.registrations, tmp)))
        with python_floor("register", tmp) as server:
            rows.append(("python floor (canned answers)", bench(server, csv, args.rate, args.registrations, tmp)))
        with edgeproxy(common, tmp, "edge-memory") as server:
            rows.append(("edgeproxy (memory store)", bench(server, csv, args.rate, args.registrations, tmp)))
        with redis_server() as (url, redis_proc):
            config = common + f'[state]\nbackend = "redis"\nredis_url = "{url}"\n'
            with edgeproxy(config, tmp, "edge-redis") as server:
                rows.append(("edgeproxy (redis store)",
                             bench(server, csv, args.rate, args.registrations, tmp, [redis_proc.pid])))
    base, after = bindings_rss(args.bindings)
    kam = rows[0][1]["us"]
    lines = [(f"REGISTER with digest auth (MD5, qop=auth), {args.registrations} registrations at {args.rate}/s "
              f"over {args.users} users, SIPp on loopback"),
             f"{'server':<30} {'ok':>7} {'failed':>6} {'CPU µs/reg':>11} {'vs kamailio':>11}"]
    for name, r in rows:
        lines.append(f"{name:<30} {r['ok']:>7.0f} {r['failed']:>6.0f} {r['us']:>11.1f} {r['us'] / kam:>11.2f}")
    redis_us = rows[-1][1]["extra_us"]
    lines.append(f"(redis-server itself: {redis_us:.1f} µs/reg more, not counted above)")
    lines.append(f"memory store, {args.bindings:,} bindings: RSS {after:.1f} MB (process before: {base:.1f} MB)")
    report(lines, "register")


if __name__ == "__main__":
    main()
