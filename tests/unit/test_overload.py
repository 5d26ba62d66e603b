"""Load shedding as a pure part: which datagrams start something new, and when shedding starts and stops."""

from __future__ import annotations

import pytest

from edgeproxy.transport.overload import LoadShedder, starts_something

INVITE = (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\n"
          b"From: <sip:alice@example.com>;tag=1\r\n%s\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
          b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("to", "new"), [
    (b"To: <sip:bob@example.com>", True),
    (b"To: \"Bob\" <sip:bob@example.com>;tag=9", False),  # a re-INVITE: inside a dialog
    (b"t: <sip:bob@example.com> ; TAG = 9", False),  # compact form, any case, spaces
    (b"To:<sip:bob@example.com;transport=udp>", True),  # a URI parameter is not a tag
])
def test_a_request_is_new_unless_its_to_has_a_tag(to: bytes, new: bool) -> None:
    assert starts_something(INVITE % to) is new


def test_responses_acks_and_cancels_are_never_new() -> None:
    new = INVITE % b"To: <sip:bob@example.com>"
    assert starts_something(new)
    assert not starts_something(new.replace(b"INVITE sip:bob@example.com SIP/2.0", b"SIP/2.0 180 Ringing", 1))
    assert not starts_something(new.replace(b"INVITE ", b"ACK ", 1))
    assert not starts_something(new.replace(b"INVITE ", b"CANCEL ", 1))
    assert starts_something(new.replace(b"INVITE ", b"REGISTER ", 1))


def test_shedding_starts_past_the_threshold_and_stops_well_below_it() -> None:
    shedder = LoadShedder(0.25)
    new, in_dialog = INVITE % b"To: <sip:bob@example.com>", INVITE % b"To: <sip:bob@example.com>;tag=9"
    shedder.update(0.24)
    assert not shedder.active
    shedder.update(0.25)
    assert shedder.active
    assert shedder.sheds(new) and not shedder.sheds(in_dialog)
    shedder.update(0.1)  # draining, not drained: no flapping between ticks
    assert shedder.active
    shedder.update(0.04)
    assert not shedder.active


def test_a_zero_threshold_never_sheds() -> None:
    shedder = LoadShedder(0.0)
    shedder.update(1.0)
    assert not shedder.active
