"""Redis goes away under load: calls to backends and in-dialog requests keep
flowing, requests that need shared state get 503 + Retry-After, /ready is
false; Redis comes back and the instance serves everything again, unrestarted."""

from __future__ import annotations

import contextlib
import pathlib
import time

from tests.ha.phone import Phone, header
from tests.helpers import free_port, running_proxy, start_redis, wait_for
from tests.interop.sipp import SippServer, start_sipp

CALLS = 300


def test_calls_flow_and_stateful_requests_get_503_while_redis_is_out(tmp_path: pathlib.Path) -> None:
    ops, redis_port, backend_port = free_port(), free_port(), free_port()
    config = (f'domains = ["example.com"]\n[registrar]\nauth = false\n[presence]\nenabled = true\n'
              f'[state]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:{redis_port}/0"\n'
              f'[metrics]\nlisten = "127.0.0.1:{ops}"\n'
              f'[dispatcher]\nprobe_interval = 0.5\n[[dispatcher.backends]]\nuri = "sip:127.0.0.1:{backend_port}"\n')
    with contextlib.ExitStack() as stack:
        first_redis = contextlib.ExitStack()
        first_redis.enter_context(start_redis(redis_port))
        stack.callback(first_redis.close)
        backend = SippServer("uas_call.xml", backend_port, tmp_path, "asterisk")
        stack.callback(backend.stop)
        proxy = stack.enter_context(running_proxy(config))
        phone = Phone("127.0.0.1")
        stack.callback(phone.close)
        edge = ("127.0.0.1", proxy.port)

        def register() -> tuple[int, str]:
            call_id = phone.request("REGISTER", "sip:example.com", "sip:alice@example.com", edge,
                                    "Expires: 600\r\n", user="alice")
            status = phone.final(call_id)
            answer = next((r for r in phone.responses if header(r, "Call-ID") == call_id), b"")
            return status, header(answer, "Retry-After")

        assert register() == (200, "")
        assert wait_for(ops, "/ready", 200)
        time.sleep(1.0)  # the backend is probed up
        # calls that last 4 s each; Redis stops while the first ones are up and new ones start
        calls = start_sipp("uac_call.xml", f"127.0.0.1:{proxy.port}", CALLS, 50, tmp_path, extra=["-d", "4000"])
        stack.callback(lambda: calls.poll() is None and calls.kill())
        time.sleep(2.0)
        first_redis.close()
        out_at = time.monotonic()
        assert wait_for(ops, "/ready", 503)
        assert register() == (503, "5")
        sub = phone.request("SUBSCRIBE", "sip:bob@example.com", "sip:bob@example.com", edge,
                            "Event: presence\r\nExpires: 600\r\n", user="alice")
        assert phone.final(sub) == 503
        output, _ = calls.communicate(timeout=120)
        assert calls.returncode == 0, output[-3000:]  # every call, set up or ended during the outage, succeeded
        assert time.monotonic() - out_at > 3  # the outage covered BYEs and new INVITEs
        # Redis is back (empty: it was not persisted): the same instance serves state again
        stack.enter_context(start_redis(redis_port))
        assert wait_for(ops, "/ready", 200)
        deadline = time.monotonic() + 10
        while register()[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert register() == (200, "")
        log = proxy.log.read_text()
        assert "Traceback" not in log and "request handling failed" not in log, log[-3000:]
