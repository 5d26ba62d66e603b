"""The presence server on real sockets: SUBSCRIBE, PUBLISH, NOTIFY, unsubscribe."""

from __future__ import annotations

import pathlib
import re
import secrets

import pytest

from tests.helpers import header_values, running_proxy, status_of
from tests.integration.test_proxy_flows import UA, method_of
from tests.unit.test_presence_rules import OPEN

CONFIG = 'domains = ["example.com"]\n[registrar]\nauth = false\n'


def request(ua: UA, method: str, ruri: str, to: str, call_id: str, cseq: int, extra: str = "", body: bytes = b"",
            from_tag: str = "w1") -> bytes:
    return (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {ua.ip}:{ua.port};branch=z9hG4bK{secrets.token_hex(5)};rport\r\n"
            f"From: <sip:{ua.user}@example.com>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <{ua.contact}>\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def body_of(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[1]


class Watcher(UA):
    def subscribe(self, port: int, event: str = "presence", expires: int = 600) -> tuple[bytes, bytes]:
        """The 200 and the first NOTIFY (answered 200)."""
        self.call_id = f"sub-{secrets.token_hex(4)}"
        self.send(request(self, "SUBSCRIBE", "sip:alice@example.com", "<sip:alice@example.com>", self.call_id, 1,
                          f"Event: {event}\r\nExpires: {expires}\r\n"), port)
        ok = self.recv()
        notify = self.recv()
        self.reply(notify, "200 OK")
        return ok, notify

    def hears_nothing(self, seconds: float = 1.0) -> None:
        self.sock.settimeout(seconds)
        with pytest.raises(TimeoutError):
            self.sock.recv(65535)
        self.sock.settimeout(5)

    def notified(self, status: str = "200 OK") -> bytes:
        notify = self.recv()
        assert method_of(notify) == "NOTIFY", notify
        self.reply(notify, status)
        return notify


def publish(port: int, extra: str = "", body: bytes = OPEN, event: str = "presence",
            content_type: str = "application/pidf+xml") -> bytes:
    publisher = UA("127.0.0.4", "alice")
    ctype = f"Content-Type: {content_type}\r\n" if body else ""
    publisher.send(request(publisher, "PUBLISH", "sip:alice@example.com", "<sip:alice@example.com>",
                           secrets.token_hex(4), 1, f"Event: {event}\r\nExpires: 300\r\n{ctype}{extra}", body), port)
    return publisher.recv()


def test_subscribe_publish_notify_unsubscribe() -> None:
    with running_proxy(CONFIG) as proxy:
        watcher = Watcher("127.0.0.3", "bob")
        ok, first = watcher.subscribe(proxy.port)
        assert status_of(ok) == 200 and header_values(ok, "Expires") == ["600"]
        to_tag = header_values(ok, "To")[0].split("tag=")[1]
        assert header_values(first, "Subscription-State")[0].startswith("active;expires=")
        assert header_values(first, "Event") == ["presence"] and b"<basic>closed</basic>" in body_of(first)
        # a PUBLISH changes the state: the watcher hears of it
        published = publish(proxy.port)
        assert status_of(published) == 200 and header_values(published, "SIP-ETag")
        notify = watcher.notified()
        assert b"<basic>open</basic>" in body_of(notify) and b"at my desk" in body_of(notify)
        assert header_values(notify, "CSeq") == ["2 NOTIFY"]
        # unsubscribe inside the dialog: 200, then the terminated NOTIFY
        ours = header_values(ok, "Contact")[0].strip("<>")
        watcher.send(request(watcher, "SUBSCRIBE", ours, f"<sip:alice@example.com>;tag={to_tag}", watcher.call_id,
                             2, "Event: presence\r\nExpires: 0\r\n"), proxy.port)
        assert status_of(watcher.recv()) == 200
        final = watcher.notified()
        assert header_values(final, "Subscription-State")[0].startswith("terminated")
        # gone: a refresh is 481, and the next PUBLISH notifies nobody
        watcher.send(request(watcher, "SUBSCRIBE", ours, f"<sip:alice@example.com>;tag={to_tag}", watcher.call_id,
                             3, "Event: presence\r\nExpires: 600\r\n"), proxy.port)
        assert status_of(watcher.recv()) == 481
        publish(proxy.port)
        watcher.hears_nothing()


def test_a_watcher_answering_481_is_dropped() -> None:
    with running_proxy(CONFIG) as proxy:
        watcher = Watcher("127.0.0.3", "bob")
        watcher.subscribe(proxy.port)
        publish(proxy.port)
        watcher.notified("481 Call/Transaction Does Not Exist")
        publish(proxy.port)
        watcher.hears_nothing()


def test_dialog_and_mwi_subscriptions_get_their_documents() -> None:
    with running_proxy(CONFIG) as proxy:
        blf = Watcher("127.0.0.3", "bob")
        _, first = blf.subscribe(proxy.port, event="dialog")
        assert header_values(first, "Content-Type") == ["application/dialog-info+xml"]
        assert b'version="1"' in body_of(first) and b'state="full"' in body_of(first)
        mwi = Watcher("127.0.0.5", "bob")
        _, first = mwi.subscribe(proxy.port, event="message-summary")
        assert body_of(first).startswith(b"Messages-Waiting: no")
        summary = b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (0/2)\r\n"
        assert status_of(publish(proxy.port, body=summary, event="message-summary")) == 415  # a PIDF type
        assert status_of(publish(proxy.port, body=summary, event="message-summary",
                                 content_type="application/simple-message-summary")) == 200
        assert body_of(mwi.notified()) == summary  # only the MWI watcher hears of it
        blf.hears_nothing()


@pytest.mark.parametrize("extra,body,event,expected", [
    ("", OPEN, "weather", 489),
    ("", b"<presence", "presence", 400),
    ("SIP-If-Match: no-such-tag\r\n", b"", "presence", 412),
    ("", b"", "presence", 400),
])
def test_publish_errors(extra: str, body: bytes, event: str, expected: int) -> None:
    with running_proxy(CONFIG) as proxy:
        reply = publish(proxy.port, extra, body, event)
        assert status_of(reply) == expected
        if expected == 489:
            assert "presence" in header_values(reply, "Allow-Events")[0]


def test_publishing_someone_elses_state_is_forbidden(tmp_path: pathlib.Path) -> None:
    from tests.helpers import digest_header

    users = tmp_path / "users.toml"
    users.write_text('[users]\nmallory = { password = "m" }\n')
    with running_proxy(f'domains = ["example.com"]\n[registrar]\nusers = "{users}"\nalgorithms = ["MD5"]\n') as proxy:
        mallory = UA("127.0.0.6", "mallory")
        publish_req = request(mallory, "PUBLISH", "sip:alice@example.com", "<sip:alice@example.com>", "p-1", 1,
                              "Event: presence\r\nContent-Type: application/pidf+xml\r\n", OPEN)
        mallory.send(publish_req, proxy.port)
        challenge = mallory.recv()
        assert status_of(challenge) == 407
        auth = digest_header(header_values(challenge, "Proxy-Authenticate")[0], "mallory", "m", "PUBLISH",
                             "sip:alice@example.com")
        mallory.send(request(mallory, "PUBLISH", "sip:alice@example.com", "<sip:alice@example.com>", "p-1", 2,
                             f"Event: presence\r\nContent-Type: application/pidf+xml\r\nProxy-Authorization: {auth}\r\n",
                             OPEN), proxy.port)
        assert status_of(mallory.recv()) == 403


def bye_for(inv: bytes, pbx: UA, phone: UA) -> bytes:
    """The caller's BYE for the call that INVITE (as the phone got it, answered with tag p1) set up."""
    call_id = header_values(inv, "Call-ID")[0]
    return (f"BYE {phone.contact} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx.ip}:{pbx.port};branch=z9hG4bK{secrets.token_hex(5)};"
            f"rport\r\nRoute: {header_values(inv, 'Record-Route')[0]}\r\nFrom: <sip:pbx@example.com>;tag=c1\r\n"
            f"To: <sip:alice@example.com>;tag=p1\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def test_calls_through_the_edge_light_the_blf_lamp() -> None:
    """No one PUBLISHes: the calls the proxy routes become dialog-info (Kamailio's pua_dialoginfo)."""
    from tests.integration.test_proxy_flows import CONFIG as PROXY_CONFIG
    from tests.integration.test_proxy_flows import invite

    with running_proxy(PROXY_CONFIG) as proxy:
        phone = UA("127.0.0.3", "alice")
        phone.register(proxy.port)
        lamp = Watcher("127.0.0.5", "bob")
        _, first = lamp.subscribe(proxy.port, event="dialog")
        assert b"<dialog " not in body_of(first)  # idle
        pbx = UA("127.0.0.2", "pbx")
        pbx.send(invite(pbx, "sip:alice@example.com", "blf-call"), proxy.port)
        inv = phone.recv()
        phone.reply(inv, "180 Ringing", "p1")
        ringing = body_of(lamp.notified())
        assert b"<state>early</state>" in ringing and b'direction="recipient"' in ringing
        assert b"sip:pbx@example.com" in ringing
        phone.reply(inv, "200 OK", "p1")
        assert b"<state>confirmed</state>" in body_of(lamp.notified())
        assert status_of(pbx.recv()) == 180 and status_of(pbx.recv()) == 200
        pbx.send(bye_for(inv, pbx, phone), proxy.port)
        done = body_of(lamp.notified())
        assert b"<state>terminated</state>" in done
        versions = [int(v) for v in re.findall(rb'version="(\d+)"', done)]
        assert versions == [4]  # idle, early, confirmed, terminated: one document each
        got_bye = phone.recv()
        assert method_of(got_bye) == "BYE"
        phone.reply(got_bye, "200 OK")
        assert status_of(pbx.recv()) == 200
        lamp.hears_nothing()  # the BYE's 200 is not a new call state


def test_a_call_set_up_on_one_instance_and_ended_on_the_other(redis_server: str) -> None:
    """Two instances on one Redis (as after a failover): the INVITE crosses A, the BYE crosses B.
    Both list the call while it lasts (/calls), and B, which never saw the INVITE, turns the
    lamp off from the dialog store."""
    import json

    import redis

    from tests.helpers import free_port, http_get
    from tests.integration.test_proxy_flows import CONFIG as PROXY_CONFIG
    from tests.integration.test_proxy_flows import invite

    redis.Redis.from_url(redis_server).flushdb()
    ops = [free_port(), free_port()]
    config = PROXY_CONFIG + f'[state]\nbackend = "redis"\nredis_url = "{redis_server}"\n'
    with running_proxy(config + f'[metrics]\nlisten = "127.0.0.1:{ops[0]}"\n') as a, \
            running_proxy(config + f'[metrics]\nlisten = "127.0.0.1:{ops[1]}"\n') as b:
        phone = UA("127.0.0.3", "alice")
        phone.register(a.port)
        lamp = Watcher("127.0.0.5", "bob")
        lamp.subscribe(b.port, event="dialog")
        pbx = UA("127.0.0.2", "pbx")
        pbx.send(invite(pbx, "sip:alice@example.com", "cross-call"), a.port)
        inv = phone.recv()
        phone.reply(inv, "200 OK", "p1")
        assert b"<state>confirmed</state>" in body_of(lamp.notified())
        assert status_of(pbx.recv()) == 200
        for port in ops:  # every instance lists the call, with who set it up
            listed = json.loads(http_get(port, "/calls")[1])
            assert listed["count"] == 1, listed
            call = listed["calls"][0]
            assert (call["call_id"], call["state"], call["caller"], call["callee"]) == (
                "cross-call", "confirmed", "sip:pbx@example.com", "sip:alice@example.com")
        # the BYE reaches B: the route set's address now leads there (the floating address moved)
        bye = (f"BYE {phone.contact} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx.ip}:{pbx.port};branch=z9hG4bKbye2;rport\r\n"
               f"Route: <sip:127.0.0.1:{b.port};lr>\r\nFrom: <sip:pbx@example.com>;tag=c1\r\n"
               f"To: <sip:alice@example.com>;tag=p1\r\nCall-ID: cross-call\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
               "Content-Length: 0\r\n\r\n").encode()
        pbx.send(bye, b.port)
        got_bye = phone.recv()
        assert method_of(got_bye) == "BYE"
        phone.reply(got_bye, "200 OK")
        assert status_of(pbx.recv()) == 200
        done = lamp.notified()
        assert b"<state>terminated</state>" in body_of(done) and f":{b.port};" in header_values(done, "Via")[0]
        for port in ops:
            assert json.loads(http_get(port, "/calls")[1])["count"] == 0


def test_subscribe_on_one_instance_publish_on_the_other(redis_server: str) -> None:
    """Two instances on one Redis: the PUBLISH reaches a watcher that subscribed elsewhere, once."""
    import redis

    redis.Redis.from_url(redis_server).flushdb()
    config = CONFIG + f'[state]\nbackend = "redis"\nredis_url = "{redis_server}"\n'
    with running_proxy(config) as a, running_proxy(config) as b:
        watcher = Watcher("127.0.0.3", "bob")
        ok, _ = watcher.subscribe(a.port)
        assert status_of(ok) == 200
        assert status_of(publish(b.port)) == 200
        notify = watcher.notified()
        assert b"<basic>open</basic>" in body_of(notify)
        assert header_values(notify, "CSeq") == ["2 NOTIFY"]  # the dialog's CSeq lives in Redis
        assert f":{b.port};" in header_values(notify, "Via")[0]  # sent by the instance that took the PUBLISH
        watcher.hears_nothing()  # exactly one NOTIFY


def test_notify_rate_limit_coalesces_changes() -> None:
    """notify_interval = 2: three PUBLISHes in a burst make one NOTIFY now and one with the last state later."""
    with running_proxy(CONFIG + "[presence]\nnotify_interval = 2.0\n") as proxy:
        watcher = Watcher("127.0.0.3", "bob")
        watcher.subscribe(proxy.port)  # its first NOTIFY opens the interval
        for note in (b"first", b"second", b"third"):
            assert status_of(publish(proxy.port, body=OPEN.replace(b"at my desk", note))) == 200
        watcher.sock.settimeout(4)
        held = watcher.notified()
        assert b"third" in body_of(held)  # the interval's last state, not each step
        watcher.hears_nothing(1.5)


def test_mwi_notify_from_a_backend_reaches_mwi_watchers() -> None:
    """Asterisk sends its message-summary NOTIFY; watchers at the edge hear of it, and the NOTIFY goes on."""
    from tests.integration.test_proxy_flows import CONFIG as PROXY_CONFIG

    with running_proxy(PROXY_CONFIG) as proxy:
        phone = UA("127.0.0.4", "alice")
        phone.register(proxy.port)
        mwi = Watcher("127.0.0.3", "bob")
        _, first = mwi.subscribe(proxy.port, event="message-summary")
        assert body_of(first).startswith(b"Messages-Waiting: no")
        pbx = UA("127.0.0.2", "asterisk")
        summary = b"Messages-Waiting: yes\r\nMessage-Account: sip:*97@example.com\r\nVoice-Message: 1/0 (0/0)\r\n"
        pbx.send(request(pbx, "NOTIFY", "sip:alice@example.com", "<sip:alice@example.com>", "mwi-1", 1,
                         "Event: message-summary\r\nSubscription-State: active\r\n"
                         "Content-Type: application/simple-message-summary\r\n", summary), proxy.port)
        assert body_of(mwi.notified()) == summary
        unsolicited = phone.recv()
        assert method_of(unsolicited) == "NOTIFY"  # the phone still gets Asterisk's own NOTIFY
        phone.reply(unsolicited, "200 OK")
        assert status_of(pbx.recv()) == 200


def test_a_watcher_subscribing_mid_call_sees_the_call_then_its_end() -> None:
    """Calls nobody watches are still tracked (cheaply): a BLF key subscribed while its user is on
    the phone lights at once; a call that ended before leaves nothing behind."""
    from tests.integration.test_proxy_flows import CONFIG as PROXY_CONFIG
    from tests.integration.test_proxy_flows import invite

    with running_proxy(PROXY_CONFIG) as proxy:
        phone = UA("127.0.0.3", "alice")
        phone.register(proxy.port)
        pbx = UA("127.0.0.2", "pbx")
        calls = []
        for call_id in ("over-before", "under-way"):
            pbx.send(invite(pbx, "sip:alice@example.com", call_id, f"z9hG4bK-{call_id}"), proxy.port)
            inv = phone.recv()
            phone.reply(inv, "180 Ringing", "p1")
            phone.reply(inv, "200 OK", "p1")
            assert status_of(pbx.recv()) == 180 and status_of(pbx.recv()) == 200
            calls.append(inv)
        pbx.send(bye_for(calls[0], pbx, phone), proxy.port)  # the first call ends, unwatched
        phone.reply(phone.recv(), "200 OK")
        assert status_of(pbx.recv()) == 200
        lamp = Watcher("127.0.0.5", "bob")
        _, first = lamp.subscribe(proxy.port, event="dialog")
        assert body_of(first).count(b"<dialog ") == 1, first
        assert b'call-id="under-way"' in first and b"<state>confirmed</state>" in first
        assert b'direction="recipient"' in first and b"sip:pbx@example.com" in first
        pbx.send(bye_for(calls[1], pbx, phone), proxy.port)
        done = body_of(lamp.notified())
        assert b'call-id="under-way"' in done and b"<state>terminated</state>" in done
        phone.reply(phone.recv(), "200 OK")
        assert status_of(pbx.recv()) == 200
        lamp.hears_nothing()
        lamp.send(request(lamp, "SUBSCRIBE", "sip:alice@example.com", "<sip:alice@example.com>", "again", 1,
                          "Event: dialog\r\nExpires: 60\r\n"), proxy.port)
        assert status_of(lamp.recv()) == 200
        assert b"<dialog " not in body_of(lamp.notified())  # idle again: the ended call was forgotten
