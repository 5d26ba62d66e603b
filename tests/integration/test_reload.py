"""SIGHUP: a changed backend list and users file take effect without a restart; a bad file changes nothing."""

from __future__ import annotations

import pathlib
import signal
import time

from tests.helpers import Proxy, running_proxy
from tests.integration.test_proxy_flows import UA, invite, method_of
from tests.interop.test_attacks import register


def backend_config(port: int, users: pathlib.Path) -> str:
    return (f'domains = ["example.com"]\n[registrar]\nusers = "{users}"\nalgorithms = ["MD5"]\nsecret = "r"\n'
            f'[dispatcher]\nprobe_interval = 60.0\n[[dispatcher.backends]]\nuri = "sip:127.0.0.1:{port}"\n')


def reload_with(proxy: Proxy, text: str) -> None:
    """Rewrite the running instance's configuration file and send SIGHUP; wait for its log line."""
    cfg = proxy.log.parent / "edge.toml"
    head = cfg.read_text().split("drain_timeout = 2.0\n", 1)[0] + "drain_timeout = 2.0\n"
    cfg.write_text(head + text)
    seen = proxy.log.read_text().count('"reloaded"') + proxy.log.read_text().count('"reload failed"')
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = proxy.log.read_text()
        if log.count('"reloaded"') + log.count('"reload failed"') > seen:
            return
        time.sleep(0.05)
    raise AssertionError("no reload logged")


def next_invite(backend: UA) -> bytes:
    got = backend.recv()
    while method_of(got) != "INVITE":  # a probe
        backend.reply(got, "200 OK")
        got = backend.recv()
    return got


def test_sighup_swaps_backends_and_users(tmp_path: pathlib.Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text('[users]\n"1000" = { password = "1234" }\n')
    old, new = UA("127.0.0.1", "old"), UA("127.0.0.1", "new")
    with running_proxy(backend_config(old.port, users)) as proxy:
        caller = UA("127.0.0.4", "bob")
        caller.send(invite(caller, f"sip:pbx@127.0.0.1:{proxy.port}", "before"), proxy.port)
        assert next_invite(old).startswith(b"INVITE")
        assert register(proxy.port, "1001", "77") == 401  # not a user yet
        users.write_text('[users]\n"1000" = { password = "1234" }\n"1001" = { password = "77" }\n')
        reload_with(proxy, backend_config(new.port, users))
        caller.send(invite(caller, f"sip:pbx@127.0.0.1:{proxy.port}", "after", branch="z9hG4bKafter"), proxy.port)
        assert next_invite(new).startswith(b"INVITE")  # the new backend takes new calls
        assert register(proxy.port, "1001", "77") == 200  # the new user registers
        reload_with(proxy, "[dispatcher\n")  # broken: logged, nothing changes
        assert '"reload failed"' in proxy.log.read_text()
        assert register(proxy.port, "1001", "77") == 200
        caller.send(invite(caller, f"sip:pbx@127.0.0.1:{proxy.port}", "later", branch="z9hG4bKlater"), proxy.port)
        assert next_invite(new).startswith(b"INVITE")  # still the reloaded backend
