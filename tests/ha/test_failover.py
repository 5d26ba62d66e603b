"""Active/active: kill -9 the instance carrying 200 established calls, move the
floating address to the other, and lose nothing: every call's BYE completes,
every registration still routes, every subscription still hears its NOTIFY."""

from __future__ import annotations

import contextlib
import json
import pathlib
import time

from tests.ha.lab import BACKEND, CLIENT, VIP, Lab
from tests.ha.phone import Phone
from tests.helpers import http_get, running_proxy, start_redis
from tests.interop.sipp import SippServer, call_counts, start_sipp
from tests.unit.test_presence_rules import OPEN

CALLS = 200
AORS = 50
SIP_PORT = 5060
BACKEND_PORT = 5080
OPS_PORT = 9090


def calls_listed(lab: Lab, i: int) -> list[dict[str, object]]:
    """What instance i's /calls says: every instance's calls, from the shared store."""
    calls: list[dict[str, object]] = json.loads(http_get(OPS_PORT, "/calls", lab.address(i))[1])["calls"]
    return calls


def instance_config(lab: Lab, i: int, redis_url: str) -> tuple[list[str], str]:
    # the floating address first: Via and sources name it, so a peer answering to where a request came
    # from (SIPp, many PBXs) reaches whichever instance holds it; the instance's own address is for admin
    listen = [f"udp:{VIP}:{SIP_PORT}", f"udp:{lab.address(i)}:{SIP_PORT}"]
    return listen, (
        f'advertise = "{VIP}"\ninstance_id = "edge-{"ab"[i]}"\ndomains = ["example.com"]\n'
        f'[registrar]\nauth = false\n'
        f'[state]\nbackend = "redis"\nredis_url = "{redis_url.replace(CLIENT, lab.gateway(i))}"\n'
        f'[presence]\nenabled = true\n'
        f'[security]\ntrusted = ["{BACKEND}"]\n'
        f'[metrics]\nlisten = "{lab.address(i)}:{OPS_PORT}"\n'
        f'[dispatcher]\nprobe_interval = 0.5\n[[dispatcher.backends]]\nuri = "sip:{BACKEND}:{BACKEND_PORT}"\n')


def test_kill_the_active_instance_with_calls_registrations_and_subscriptions(tmp_path: pathlib.Path) -> None:
    vip = (VIP, SIP_PORT)
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(Lab())
        redis_url = stack.enter_context(start_redis(bind=(CLIENT, lab.gateway(1))))
        backend = SippServer("uas_call.xml", BACKEND_PORT, tmp_path, "asterisk", local_ip=BACKEND)
        stack.callback(backend.stop)
        edges = []
        for i in (0, 1):
            listen, config = instance_config(lab, i, redis_url)
            edges.append(stack.enter_context(running_proxy(config, host=lab.address(i), port=SIP_PORT,
                                                           listen=listen, prefix=lab.prefix(i))))
        phones, watchers, checker = Phone(CLIENT), Phone(CLIENT), Phone(BACKEND)
        for p in (phones, watchers, checker):
            stack.callback(p.close)

        # through the active instance: registrations, subscriptions, then calls that stay up
        users = [f"u{n:03d}" for n in range(AORS)]
        regs = [phones.request("REGISTER", "sip:example.com", f"sip:{u}@example.com", vip, "Expires: 600\r\n", user=u)
                for u in users]
        assert [phones.final(c) for c in regs] == [200] * AORS
        subs = {u: watchers.request("SUBSCRIBE", f"sip:{u}@example.com", f"sip:{u}@example.com", vip,
                                    "Event: presence\r\nExpires: 600\r\n", user="w" + u) for u in users}
        assert [watchers.final(c) for c in subs.values()] == [200] * AORS
        time.sleep(1.0)  # probes have found the backend up on both instances
        calls = start_sipp("uac_call.xml", f"{VIP}:{SIP_PORT}", CALLS, 50, tmp_path, timeout=90, local_ip=CLIENT,
                           extra=["-d", "15000", "-l", str(CALLS)], name="callers")
        stack.callback(lambda: calls.poll() is None and calls.kill())
        time.sleep(CALLS / 50 + 3)  # every call set up, none hung up yet (15 s each)
        listed = calls_listed(lab, 1)  # the idle instance knows every call the active one carries
        assert len(listed) == CALLS and {(c["state"], c["edge"]) for c in listed} == {("confirmed", "edge-a")}

        # the active instance dies; the floating address moves to the survivor
        killed_at = time.monotonic()
        edges[0].proc.kill()
        edges[0].proc.wait()
        lab.fail_over(1)
        moved = time.monotonic() - killed_at

        # every registration still routes (a trusted backend calls each user through the VIP)
        messages = [checker.request("MESSAGE", f"sip:{u}@example.com", f"sip:{u}@example.com", vip, user="pbx")
                    for u in users]
        routed = sum(checker.final(c) == 200 for c in messages)
        # every subscription hears a state published after the failover
        published = [phones.request("PUBLISH", f"sip:{u}@example.com", f"sip:{u}@example.com", vip,
                                    "Event: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n",
                                    OPEN.replace(b"alice", u.encode()), user=u) for u in users]
        assert [phones.final(c) for c in published] == [200] * AORS
        deadline = time.monotonic() + 10
        notified: set[str] = set()
        while time.monotonic() < deadline and len(notified) < AORS:
            notified = {m.split(b"Call-ID: ")[1].split(b"\r\n")[0].decode() for m in watchers.heard("NOTIFY")
                        if b"<basic>open</basic>" in m}
            time.sleep(0.1)

        output, _ = calls.communicate(timeout=120)
        successful, failed = call_counts(output)
        lost_subscriptions = len(set(subs.values()) - notified)
        print(f"\nfailover: instance killed with {CALLS} calls up, address moved in {moved * 1000:.0f} ms; "
              f"calls completed {successful}/{CALLS}, calls lost = {CALLS - successful}, "
              f"registrations lost = {AORS - routed}, subscriptions lost = {lost_subscriptions}")
        survivor_log = edges[1].log.read_text()
        assert (successful, failed) == (CALLS, 0), output[-1500:] + survivor_log[-3000:]
        assert routed == AORS
        assert lost_subscriptions == 0
        assert "Traceback" not in survivor_log, survivor_log[-3000:]
        assert calls_listed(lab, 1) == []  # the survivor saw every BYE and ended every record
