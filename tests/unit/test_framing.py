import pytest

from benchmarks.samples import INVITE, OK_200, REGISTER
from edgeproxy.sip import Limits, SipError, StreamFramer
from edgeproxy.sip.framing import KEEPALIVE


def test_split_at_every_byte_boundary() -> None:
    for cut in range(1, len(INVITE)):
        framer = StreamFramer()
        assert framer.feed(INVITE[:cut]) == []
        assert framer.feed(INVITE[cut:]) == [INVITE]
        assert framer.buffered == 0


def test_several_messages_in_one_segment() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE + REGISTER + OK_200 + INVITE[:10]) == [INVITE, REGISTER, OK_200]
    assert framer.feed(INVITE[10:]) == [INVITE]


def test_keepalive_ping_and_pong() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KEEPALIVE]
    assert framer.feed(b"\r\n") == []  # could still become a ping: wait
    assert framer.feed(b"\r\n") == [KEEPALIVE]
    assert framer.feed(b"\r\n" + REGISTER) == [REGISTER]  # a lone CRLF before a message is skipped
    assert framer.feed(KEEPALIVE + INVITE + KEEPALIVE) == [KEEPALIVE, INVITE, KEEPALIVE]


def test_missing_content_length_means_no_body_on_streams() -> None:
    msg = REGISTER.replace(b"Content-Length: 0\r\n", b"")
    assert StreamFramer().feed(msg + msg) == [msg, msg]


def test_buffer_is_bounded() -> None:
    framer = StreamFramer(Limits(max_message=1000))
    with pytest.raises(SipError) as info:
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 300)
    assert info.value.status == 513
    with pytest.raises(SipError) as info:
        StreamFramer(Limits(max_message=1000)).feed(INVITE.replace(b"Content-Length: 253", b"Content-Length: 5000"))
    assert info.value.status == 513


def test_malformed_content_length_is_answerable() -> None:
    with pytest.raises(SipError) as info:
        StreamFramer().feed(INVITE.replace(b"Content-Length: 253", b"Content-Length: -4"))
    assert info.value.status == 400 and info.value.message is not None
