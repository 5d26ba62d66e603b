"""Backend selection and health (Kamailio dispatcher's algorithms and probing)."""

from __future__ import annotations

import collections

import pytest

from edgeproxy.dispatcher.backends import Backend, BackendSet, Health
from edgeproxy.dispatcher.probe import Prober
from edgeproxy.sip import Request, make_response, parse_message, validate


def call(call_id: str = "c1", user: str = "alice") -> Request:
    msg = parse_message((f"INVITE sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
                         f"From: <sip:{user}@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: {call_id}\r\n"
                         "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    validate(msg)
    return msg


def backends(*weights: int) -> list[Backend]:
    return [Backend(f"sip:10.0.0.{i + 1}:5060", w) for i, w in enumerate(weights)]


def test_round_robin_and_failover_exclusion() -> None:
    s = BackendSet(backends(1, 1, 1), "round-robin")
    picks = [s.select(call()).uri for _ in range(6)]  # type: ignore[union-attr]
    assert collections.Counter(picks) == {b.uri: 2 for b in s.backends}
    first = s.backends[0].uri
    assert all(s.select(call(), {first}).uri != first for _ in range(5))  # type: ignore[union-attr]
    assert s.select(call(), {b.uri for b in s.backends}) is None


def test_weighted() -> None:
    s = BackendSet(backends(3, 1), "weighted")
    picks = collections.Counter(s.select(call()).uri for _ in range(400))  # type: ignore[union-attr]
    assert picks[s.backends[0].uri] == 300 and picks[s.backends[1].uri] == 100


def test_hashes_are_sticky_and_spread() -> None:
    for algorithm, vary in (("hash-callid", lambda i: call(call_id=f"c{i}")), ("hash-from", lambda i: call(user=f"u{i}"))):
        s = BackendSet(backends(1, 1), algorithm)
        assert {s.select(vary(7)).uri for _ in range(5)} == {s.select(vary(7)).uri}  # type: ignore[union-attr]
        spread = collections.Counter(s.select(vary(i)).uri for i in range(200))  # type: ignore[union-attr]
        assert len(spread) == 2 and min(spread.values()) > 50
        # a backend going down moves only its own share
        before = {i: s.select(vary(i)).uri for i in range(200)}  # type: ignore[union-attr]
        s.backends[1].health = Health.DOWN
        after = {i: s.select(vary(i)).uri for i in range(200)}  # type: ignore[union-attr]
        assert all(after[i] == before[i] for i in before if before[i] == s.backends[0].uri)


def test_least_busy() -> None:
    s = BackendSet(backends(1, 1, 1), "least-busy")
    s.backends[0].calls, s.backends[1].calls, s.backends[2].calls = 5, 1, 3
    assert s.select(call()) is s.backends[1]


def test_health_from_probes_and_calls() -> None:
    s = BackendSet(backends(1, 1), "round-robin", down_after=2, up_after=2)
    b = s.backends[0]
    s.probe_result(b, False)
    assert b.health is Health.PROBING and not b.usable
    s.probe_result(b, False)
    assert b.health is Health.DOWN
    s.probe_result(b, True)
    assert b.health is Health.DOWN  # up_after = 2
    s.probe_result(b, True)
    assert b.health is Health.UP
    s.call_failed(b)
    s.call_failed(b)
    assert b.health is Health.UP  # suspect_after = 3 by default
    s.call_failed(b)
    assert b.health is Health.PROBING
    assert all(s.select(call()) is s.backends[1] for _ in range(4))


def test_only_silences_in_a_row_make_a_backend_suspect() -> None:
    s = BackendSet(backends(1), suspect_after=2)
    b = s.backends[0]
    for _ in range(5):  # an answered call in between: single lost datagrams, not a dead backend
        s.call_failed(b)
        s.call_answered(b)
    assert b.health is Health.UP and s.select(call()) is b
    s.call_failed(b)
    s.call_failed(b)
    assert b.health is Health.PROBING
    s.probe_result(b, True)
    s.call_failed(b)
    assert b.health is Health.UP  # back, counted afresh


def test_a_suspect_backend_takes_calls_only_when_none_is_up_and_a_down_one_never() -> None:
    s = BackendSet(backends(1, 1), down_after=2)
    first, second = s.backends
    s.probe_result(first, False)
    assert first.health is Health.PROBING
    assert all(s.select(call()) is second for _ in range(4))
    s.probe_result(second, False)  # both suspect (a loaded network loses probes): both still take calls
    assert {s.select(call()).uri for _ in range(4)} == {first.uri, second.uri}  # type: ignore[union-attr]
    assert s.select(call(), exclude={first.uri}) is second  # failover still moves on
    s.probe_result(first, False)
    assert first.health is Health.DOWN
    assert all(s.select(call()) is second for _ in range(4))
    s.probe_result(second, False)
    assert s.select(call()) is None and not s.candidates()  # 503, /ready false


def test_a_timed_out_call_has_its_backend_probed_at_once() -> None:
    s = BackendSet(backends(1), up_after=1, suspect_after=1)
    prober = Prober(s, "127.0.0.1", 5060, "edge.example.com")
    b = s.backends[0]
    suspects: list[Backend] = []
    s.on_suspect = suspects.append
    s.call_failed(b)
    s.call_failed(b)  # already probing: nothing new to say
    assert suspects == [b] and b.health is Health.PROBING
    pending = prober.probe_now(b)
    assert pending is not None and pending[1].method == "OPTIONS" and pending[1].uri_text == b.uri
    assert prober.probe_now(b) is None  # one probe in flight at a time
    prober.answered(pending[0], make_response(pending[1], 200))
    assert b.health is Health.UP and s.select(call()) is b
    assert prober.probe_now(b) is not None


def test_prober_scores_silence_and_answers() -> None:
    s = BackendSet(backends(1, 1), down_after=1)
    prober = Prober(s, "127.0.0.1", 5060, "edge.example.com")
    sent = prober.round()
    assert [r.method for _, r in sent] == ["OPTIONS", "OPTIONS"] and sent[0][1].uri_text == "sip:10.0.0.1:5060"
    prober.answered(sent[0][0], make_response(sent[0][1], 404))  # any answer below 500 means alive
    prober.round()  # the second backend stayed silent
    assert s.backends[0].health is Health.UP and s.backends[1].health is Health.DOWN
    with pytest.raises(ValueError):
        BackendSet([], "random")
