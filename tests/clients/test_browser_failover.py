"""The failover demo: two browsers in a call through two edge instances sharing Redis
(the HA lab of tests/ha: network namespaces and a floating address). The instance
carrying the call is killed; the media keeps flowing (peer to peer), both browsers
reconnect to the survivor, and the hang-up completes through it."""

from __future__ import annotations

import contextlib
import pathlib
import time

from tests.clients.browser import WebPhone, web_phone_site
from tests.ha.lab import CLIENT, VIP, Lab
from tests.helpers import running_proxy, start_redis

WS_PORT = 5062


def test_a_browser_call_survives_the_death_of_its_edge(tmp_path: pathlib.Path, users: pathlib.Path) -> None:
    timeline: list[str] = []
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(Lab())
        redis_url = stack.enter_context(start_redis(bind=(CLIENT, lab.gateway(1))))
        edges = []
        for i in (0, 1):
            config = (f'advertise = "{VIP}"\ninstance_id = "edge-{"ab"[i]}"\ndomains = ["example.com"]\n'
                      f'[registrar]\nusers = "{users}"\nsecret = "shared-by-both-instances"\n'
                      f'[state]\nbackend = "redis"\nredis_url = "{redis_url.replace(CLIENT, lab.gateway(i))}"\n')
            edges.append(stack.enter_context(running_proxy(config, host=lab.address(i), port=WS_PORT,
                                                           listen=[f"ws:{VIP}:{WS_PORT}"], prefix=lab.prefix(i))))
        site = stack.enter_context(web_phone_site())
        server = f"ws://{VIP}:{WS_PORT}"
        alice = stack.enter_context(WebPhone(site, tmp_path, server, "alice", "alice-secret", target="bob"))
        bob = stack.enter_context(WebPhone(site, tmp_path, server, "bob", "bob-secret"))
        for phone in (alice, bob):
            phone.wait("window.phone.registration === 'registered'")
        alice.click("call")
        for phone in (alice, bob):
            phone.wait("window.phone.call === 'confirmed'")
        before = [phone.receives_media() for phone in (alice, bob)]

        start = time.monotonic()
        edges[0].proc.kill()  # the instance carrying the call (it holds the floating address)
        edges[0].proc.wait()
        lab.fail_over(1)
        timeline.append(f"+{time.monotonic() - start:6.3f} s  edge-a killed (kill -9), address moved to edge-b")
        # the media does not cross the edge: it keeps flowing while the browsers reconnect
        for phone, seen in zip((alice, bob), before):
            phone.receives_media(beyond=seen)
        timeline.append(f"+{time.monotonic() - start:6.3f} s  media still flowing both ways")
        for phone in (alice, bob):
            phone.wait("window.phone.connects >= 2 && window.phone.registration === 'registered'", 30)
        timeline.append(f"+{time.monotonic() - start:6.3f} s  both browsers reconnected and registered via edge-b")
        assert all(phone.js("window.phone.call") == "confirmed" for phone in (alice, bob))
        for phone in (alice, bob):
            phone.receives_media(beyond=phone.bytes_received())
        timeline.append(f"+{time.monotonic() - start:6.3f} s  media still flowing, call still confirmed on both")

        alice.click("hangup")
        timeline.append(f"+{time.monotonic() - start:6.3f} s  alice hangs up (BYE)")
        for phone in (alice, bob):
            phone.wait("window.phone.call === 'ended'")
        result = "ended (remote: Terminated)" in bob.timeline()
        timeline.append(f"+{time.monotonic() - start:6.3f} s  bob's call ended by the BYE: {result}")
        print("\nbrowser failover demo:\n  " + "\n  ".join(timeline))
        print("alice:\n  " + alice.timeline().replace("\n", "\n  ") + "\nbob:\n  " + bob.timeline().replace("\n", "\n  "))
        assert result, bob.timeline() + edges[1].log.read_text()[-3000:]
        assert "Traceback" not in edges[1].log.read_text()
