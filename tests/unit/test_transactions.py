"""RFC 3261 Figures 5–8 (and RFC 6026), timer by timer, on a fake clock."""

from __future__ import annotations

import itertools

import pytest

from edgeproxy.sip import Request, Response, SipError, make_response, parse_message
from edgeproxy.sip.transaction import T1, T2, T4, Deliver, Send, State, Terminated, Timeout
from edgeproxy.sip.transactions import TransactionLayer, server_key


def request(method: str = "INVITE", branch: str = "z9hG4bKabc", to_tag: str = "") -> Request:
    req = Request.build(method, "sip:bob@example.com", [
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
        ("Route", "<sip:edge.example.com;lr>"),
        ("Max-Forwards", "70"), ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", f"<sip:bob@example.com>{to_tag}"), ("Call-ID", "call-1"), ("CSeq", f"1 {method}")])
    msg = parse_message(req.to_bytes())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int) -> Response:
    return make_response(req, status, to_tag="b2")


def kinds(actions: list) -> list[str]:
    return [type(a).__name__ for a in actions]


def sent(actions: list) -> list[str]:
    return [a.message.method if isinstance(a.message, Request) else str(a.message.status)
            for a in actions if isinstance(a, Send)]


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, object]]:
    """Fire every timer up to `end`, recording (time, action)."""
    log = []
    while layer.deadline is not None and layer.deadline <= end:
        now = layer.deadline
        for action in layer.expire(now):
            log.append((now, action))
    return log


# -- Figure 5: INVITE client ----------------------------------------------------

def test_invite_client_timer_a_doubles_and_timer_b_times_out() -> None:
    layer = TransactionLayer()
    actions = layer.send_request(request(), reliable=False, now=0.0)
    assert sent(actions) == ["INVITE"]
    log = run_until(layer, 100.0)
    retransmits = [t for t, a in log if isinstance(a, Send)]
    assert retransmits == [T1, 3 * T1, 7 * T1, 15 * T1, 31 * T1, 63 * T1]  # A: T1, 2T1, 4T1 … (no cap)
    timeouts = [t for t, a in log if isinstance(a, Timeout)]
    assert timeouts == [64 * T1]  # B
    assert isinstance(log[-1][1], Terminated) and len(layer) == 0


def test_invite_client_reliable_has_no_timer_a() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), reliable=True, now=0.0)
    log = run_until(layer, 100.0)
    assert kinds([a for _, a in log]) == ["Timeout", "Terminated"]


def test_invite_client_provisional_then_non2xx_sends_ack_and_waits_timer_d() -> None:
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, reliable=False, now=0.0)
    txn = layer.client[("z9hG4bKabc", "INVITE")]
    assert kinds(layer.receive_response(response(req, 180), 0.1)) == ["Deliver"]
    assert txn.state is State.PROCEEDING and "A" not in txn.timers and "B" not in txn.timers
    actions = layer.receive_response(response(req, 486), 1.0)
    assert sent(actions) == ["ACK"] and kinds(actions) == ["Send", "Deliver"]
    ack = actions[0].message
    assert ack.cseq.method == "ACK" and ack.cseq.number == 1 and ack.to.tag == "b2"
    assert ack.top_via.branch == "z9hG4bKabc" and ack.get("Route") == "<sip:edge.example.com;lr>"
    assert ack.uri_text == req.uri_text and txn.state is State.COMPLETED
    assert sent(layer.receive_response(response(req, 486), 2.0)) == ["ACK"]  # retransmitted final: ACK again
    assert txn.timers["D"] == pytest.approx(1.0 + 32.0)
    log = run_until(layer, 40.0)
    assert kinds([a for _, a in log]) == ["Terminated"] and log[0][0] == pytest.approx(33.0)


def test_invite_client_reliable_timer_d_is_zero() -> None:
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, reliable=True, now=0.0)
    layer.receive_response(response(req, 503), 1.0)
    assert layer.deadline == 1.0
    assert kinds(layer.expire(1.0)) == ["Terminated"]


def test_invite_client_2xx_goes_to_accepted_and_passes_retransmissions() -> None:
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, reliable=False, now=0.0)
    txn = layer.client[("z9hG4bKabc", "INVITE")]
    assert kinds(layer.receive_response(response(req, 200), 0.2)) == ["Deliver"]
    assert txn.state is State.ACCEPTED and txn.timers == {"M": pytest.approx(0.2 + 64 * T1)}
    assert kinds(layer.receive_response(response(req, 200), 1.0)) == ["Deliver"]  # RFC 6026
    assert layer.receive_response(response(req, 180), 1.1) == []
    assert kinds([a for _, a in run_until(layer, 100.0)]) == ["Terminated"]


# -- Figure 6: non-INVITE client ---------------------------------------------------

def test_non_invite_client_timer_e_caps_at_t2_and_timer_f() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), reliable=False, now=0.0)
    log = run_until(layer, 100.0)
    times = [t for t, a in log if isinstance(a, Send)]
    assert times[:4] == [0.5, 1.5, 3.5, 7.5]  # intervals T1, 2T1, 4T1, then T2
    assert all(b - a == pytest.approx(T2) for a, b in itertools.pairwise(times[3:]))
    assert [t for t, a in log if isinstance(a, Timeout)] == [64 * T1]


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    layer.send_request(req, reliable=False, now=0.0)
    layer.expire(0.5)  # first E
    layer.receive_response(response(req, 100), 0.6)
    txn = layer.client[("z9hG4bKabc", "REGISTER")]
    assert txn.state is State.PROCEEDING
    log = run_until(layer, 12.0)
    sends = [t for t, a in log if isinstance(a, Send)]
    assert all(b - a == pytest.approx(T2) for a, b in itertools.pairwise(sends)) and len(sends) >= 2


def test_non_invite_client_final_then_timer_k() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.send_request(req, reliable=False, now=0.0)
    assert kinds(layer.receive_response(response(req, 200), 0.1)) == ["Deliver"]
    assert layer.receive_response(response(req, 200), 0.2) == []  # absorbed in Completed
    log = run_until(layer, 100.0)
    assert [(t, type(a).__name__) for t, a in log] == [(pytest.approx(0.1 + T4), "Terminated")]


def test_non_invite_client_reliable_timer_k_is_zero() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.send_request(req, reliable=True, now=0.0)
    layer.receive_response(response(req, 404), 0.1)
    assert kinds(layer.expire(0.1)) == ["Terminated"] and len(layer) == 0


# -- Figure 7: INVITE server ---------------------------------------------------------

def test_invite_server_sends_100_trying_and_retransmits_last_provisional() -> None:
    layer = TransactionLayer()
    req = request()
    actions = layer.receive_request(req, reliable=False, now=0.0)
    assert kinds(actions) == ["Send", "Deliver"] and sent(actions) == ["100"]
    trying = actions[0].message
    assert trying.to.tag is None and trying.raw_lines("Via") == req.raw_lines("Via")
    txn = actions[1].txn
    assert sent(layer.receive_request(request(), False, 0.1)) == ["100"]
    layer.respond(txn, response(req, 180), 0.3)
    assert sent(layer.receive_request(request(), False, 0.4)) == ["180"]


def test_invite_server_non2xx_timer_g_h() -> None:
    layer = TransactionLayer()
    req = request()
    txn = layer.receive_request(req, False, 0.0)[-1].txn
    assert sent(layer.respond(txn, response(req, 486), 1.0)) == ["486"]
    assert txn.state is State.COMPLETED
    assert sent(layer.receive_request(request(), False, 1.2)) == ["486"]  # request retransmitted
    log = run_until(layer, 100.0)
    g = [t for t, a in log if isinstance(a, Send)]
    assert g[:4] == [1.5, 2.5, 4.5, 8.5] and all(b - a == pytest.approx(T2) for a, b in itertools.pairwise(g[3:]))
    assert [t for t, a in log if isinstance(a, Timeout)] == [1.0 + 64 * T1]  # H: no ACK came


def test_invite_server_ack_confirms_and_timer_i() -> None:
    layer = TransactionLayer()
    req = request()
    txn = layer.receive_request(req, False, 0.0)[-1].txn
    layer.respond(txn, response(req, 404), 0.0)
    ack = request("ACK")
    assert layer.receive_request(ack, False, 0.3) == []
    assert txn.state is State.CONFIRMED and set(txn.timers) == {"I"}
    assert layer.receive_request(ack, False, 0.4) == []  # ACK retransmission absorbed
    assert [(t, type(a).__name__) for t, a in run_until(layer, 100.0)] == [(pytest.approx(0.3 + T4), "Terminated")]


def test_invite_server_reliable_has_no_timer_g_and_zero_timer_i() -> None:
    layer = TransactionLayer()
    req = request()
    txn = layer.receive_request(req, True, 0.0)[-1].txn
    layer.respond(txn, response(req, 480), 0.0)
    assert set(txn.timers) == {"H"}
    layer.receive_request(request("ACK"), True, 0.5)
    assert kinds(layer.expire(0.5)) == ["Terminated"]


def test_invite_server_2xx_accepted_timer_l() -> None:
    layer = TransactionLayer()
    req = request()
    txn = layer.receive_request(req, False, 0.0)[-1].txn
    ok = response(req, 200)
    assert sent(layer.respond(txn, ok, 1.0)) == ["200"]
    assert txn.state is State.ACCEPTED
    assert sent(layer.respond(txn, ok, 1.5)) == ["200"]  # the TU's 2xx retransmission
    assert layer.receive_request(request(), False, 1.6) == []  # INVITE retransmission absorbed
    ack = layer.receive_request(request("ACK", to_tag=";tag=b2"), False, 2.0)
    assert kinds(ack) == ["Deliver"]
    assert [(t, type(a).__name__) for t, a in run_until(layer, 100.0)] == [(1.0 + 64 * T1, "Terminated")]


def test_a_shorter_wait_ends_finished_transactions_sooner_and_still_absorbs() -> None:
    """limits.transaction_wait (Kamailio's wt_timer): Timers J, L and M last `wait`, not 64×T1,
    so a proxy at 1,000 calls/s keeps ~15k transactions instead of ~100k."""
    layer = TransactionLayer(wait=5.0)
    invite = request()
    server = layer.receive_request(invite, False, 0.0)[-1].txn
    layer.respond(server, response(invite, 200), 1.0)
    assert layer.receive_request(request(), False, 5.9) == []  # a late INVITE retransmission: absorbed
    options = request("OPTIONS", branch="z9hG4bKopt")
    done = layer.receive_request(options, False, 0.0)[-1].txn
    layer.respond(done, response(options, 200), 2.0)
    assert sent(layer.receive_request(request("OPTIONS", branch="z9hG4bKopt"), False, 6.9)) == ["200"]
    ours = request("INVITE", branch="z9hG4bKout")
    layer.send_request(ours, reliable=False, now=0.0)
    layer.receive_response(response(ours, 200), 3.0)
    assert [(t, type(a).__name__) for t, a in run_until(layer, 40.0)] == [
        (6.0, "Terminated"), (7.0, "Terminated"), (8.0, "Terminated")]  # L, J, M
    assert len(layer) == 0


def test_cancel_matches_its_invite() -> None:
    layer = TransactionLayer()
    txn = layer.receive_request(request(), False, 0.0)[-1].txn
    cancel = request("CANCEL")
    assert layer.cancel_target(cancel) is txn
    assert kinds(layer.receive_request(cancel, False, 0.1)) == ["Deliver"]  # its own transaction
    assert layer.cancel_target(request("CANCEL", branch="z9hG4bKother")) is None


def test_ack_without_transaction_goes_to_tu() -> None:
    layer = TransactionLayer()
    actions = layer.receive_request(request("ACK", branch="z9hG4bKnew"), False, 0.0)
    assert len(actions) == 1 and isinstance(actions[0], Deliver) and actions[0].txn is None


# -- Figure 8: non-INVITE server ---------------------------------------------------

def test_non_invite_server_trying_proceeding_completed_timer_j() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    txn = layer.receive_request(req, False, 0.0)[-1].txn
    assert txn.state is State.TRYING
    assert layer.receive_request(request("OPTIONS"), False, 0.1) == []  # Trying: absorbed silently
    layer.respond(txn, response(req, 100), 0.2)
    assert txn.state is State.PROCEEDING
    assert sent(layer.receive_request(request("OPTIONS"), False, 0.3)) == ["100"]
    layer.respond(txn, response(req, 200), 0.4)
    assert txn.state is State.COMPLETED
    assert sent(layer.receive_request(request("OPTIONS"), False, 0.5)) == ["200"]
    assert layer.respond(txn, response(req, 500), 0.6) == []  # only one final
    assert [(t, type(a).__name__) for t, a in run_until(layer, 100.0)] == [(0.4 + 64 * T1, "Terminated")]
    assert len(layer) == 0


def test_non_invite_server_reliable_timer_j_is_zero() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    txn = layer.receive_request(req, True, 0.0)[-1].txn
    layer.respond(txn, response(req, 200), 0.0)
    assert kinds(layer.expire(0.0)) == ["Terminated"]


def test_transport_error_times_out_and_removes() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), False, 0.0)
    txn = layer.client[("z9hG4bKabc", "OPTIONS")]
    assert kinds(layer.transport_error(txn)) == ["Timeout", "Terminated"] and len(layer) == 0


def test_table_is_bounded_and_cleaned() -> None:
    layer = TransactionLayer(max_transactions=10)
    for i in range(10):
        txn = layer.receive_request(request("OPTIONS", branch=f"z9hG4bK{i}"), False, 0.0)[0].txn
        layer.respond(txn, response(txn.request, 200), 0.0)
    with pytest.raises(SipError) as info:
        layer.receive_request(request("OPTIONS", branch="z9hG4bKmore"), False, 0.0)
    assert info.value.status == 503
    run_until(layer, 64 * T1)
    assert len(layer) == 0 and layer.deadline is None
    layer.receive_request(request("OPTIONS", branch="z9hG4bKmore"), False, 40.0)


def test_rfc2543_matching_without_magic_cookie() -> None:
    a = request("OPTIONS", branch="z9hG4bK")
    b = request("OPTIONS", branch="z9hG4bK")
    assert server_key(a) == server_key(b) and server_key(a)[0] == "2543"
    layer = TransactionLayer()
    layer.receive_request(a, False, 0.0)
    assert layer.receive_request(b, False, 0.1) == []  # same transaction: a retransmission


def test_a_transaction_ended_early_leaves_no_timer_behind() -> None:
    """A transport error or an abandoned branch ends a transaction whose timers are queued:
    the tick that reaches their slot finds nothing to do (and no error)."""
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS", branch="z9hG4bKgone"), False, 0.0)
    layer.send_request(request("OPTIONS", branch="z9hG4bKleft"), False, 0.0)
    gone = layer.client[("z9hG4bKgone", "OPTIONS")]
    assert kinds(layer.transport_error(gone)) == ["Timeout", "Terminated"]
    layer.abandon(layer.client[("z9hG4bKleft", "OPTIONS")])
    assert layer.expire(T1) == [] and layer.expire(64 * T1) == []
    assert len(layer) == 0 and layer.deadline is None


def test_timers_after_a_quiet_day() -> None:
    """The clock jumps a day between two transactions (nothing open in between): the
    next one's timers fire on time, and the slots of the quiet day are not walked one by one."""
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS", branch="z9hG4bKmorning"), False, 0.0)
    assert sent(layer.expire(T1)) == ["OPTIONS"]
    run_until(layer, 100.0)
    assert len(layer) == 0
    day = 86_400.0
    layer.send_request(request("OPTIONS", branch="z9hG4bKnext"), False, day)
    assert layer.expire(day + T1 / 2) == []
    assert sent(layer.expire(day + T1)) == ["OPTIONS"]
