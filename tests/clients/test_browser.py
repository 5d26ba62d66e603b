"""Two browsers (headless Chromium running JsSIP) register over WebSocket through the
edge, call each other (media peer to peer over loopback) and hang up."""

from __future__ import annotations

import pathlib

from tests.clients.browser import WebPhone, web_phone_site
from tests.helpers import free_port, running_proxy


def test_two_browsers_register_call_and_hang_up(tmp_path: pathlib.Path, users: pathlib.Path) -> None:
    port, ws_port = free_port(), free_port()
    config = f'domains = ["example.com"]\n[registrar]\nusers = "{users}"\n'
    server = f"ws://127.0.0.1:{ws_port}"
    with (running_proxy(config, port=port, listen=[f"udp:127.0.0.1:{port}", f"ws:127.0.0.1:{ws_port}"]) as edge,
          web_phone_site() as site,
          WebPhone(site, tmp_path, server, "alice", "alice-secret", target="bob") as alice,
          WebPhone(site, tmp_path, server, "bob", "bob-secret") as bob):
        for phone in (alice, bob):
            phone.wait("window.phone.registration === 'registered'")
        alice.click("call")
        for phone in (alice, bob):
            phone.wait("window.phone.call === 'confirmed'")
        for phone in (alice, bob):
            phone.receives_media()  # audio from the fake microphone arrives, peer to peer
        alice.click("hangup")
        for phone in (alice, bob):
            phone.wait("window.phone.call === 'ended'")
        assert "ended (remote: Terminated)" in bob.timeline()  # the BYE reached bob through the edge
        assert "Traceback" not in edge.log.read_text()
