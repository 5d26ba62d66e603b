"""baresip, a softphone nobody here wrote, against the edge over UDP and TCP:
digest registration, a call between two of them (signalling through the edge,
media directly between them on loopback), hang-up, and presence."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.clients.baresip import Baresip, baresip_binary
from tests.helpers import Proxy, running_proxy

# libre (baresip 1.0) aborts on any SHA-256 challenge, so this edge offers MD5
# only, as Kamailio and Asterisk do by default
CONFIG = """domains = ["example.com"]
[registrar]
users = "{users}"
algorithms = ["MD5"]
"""


@pytest.fixture
def edge(users: pathlib.Path) -> Iterator[Proxy]:
    baresip_binary()
    with running_proxy(CONFIG.format(users=users)) as proxy:
        yield proxy


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_two_baresips_register_call_hang_up_and_see_presence(edge: Proxy, tmp_path: pathlib.Path,
                                                             transport: str) -> None:
    with (Baresip(tmp_path, "bob", "bob-secret", edge.port, transport, auto_answer=True) as bob,
          Baresip(tmp_path, "alice", "alice-secret", edge.port, transport, contacts=("bob",)) as alice):
        for phone in (alice, bob):
            assert phone.registered(), phone.command("reginfo")
        # presence: alice's SUBSCRIBE to bob is answered by the edge, which NOTIFYs bob's PUBLISHes
        assert alice.sees("bob", "Online"), alice.command("contacts")
        bob.command("presence_offline")
        assert alice.sees("bob", "Offline"), alice.command("contacts")
        bob.command("presence_online")
        assert alice.sees("bob", "Online"), alice.command("contacts")

        alice.command("dial", "sip:bob@example.com")
        for phone in (alice, bob):
            phone.event("CALL_ESTABLISHED")
            phone.event("CALL_RTPESTAB")  # RTP arrives: media flows between the two phones
        alice.command("hangup")
        closed = bob.event("CALL_CLOSED")  # alice's BYE reached bob through the edge
        assert "reset by peer" in str(closed["param"]), closed
        alice.event("CALL_CLOSED")  # raises when it never comes
    log = edge.log.read_text()
    assert "Traceback" not in log, log
