"""RFC 3261 §17 transactions (with RFC 6026's Accepted state), sans-IO.

Each transaction is a state machine fed with messages and `now` (seconds
from any monotonic clock). It never sends or sleeps: every call returns the
actions the caller must carry out, and `deadline` says when `expire(now)`
must be called next. The timer letters are the RFC's.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import Any

from .abstract import Abstract
from .message import Message, Request, Response
from .responses import make_response

T1 = 0.5
T2 = 4.0
T4 = 5.0


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


@dataclass(slots=True)
class Send:
    """Put this message on the wire toward the transaction's peer."""

    txn: Transaction
    message: Message


@dataclass(slots=True)
class Deliver:
    """Hand this message to the transaction user (the core above)."""

    txn: Transaction | None
    message: Message


@dataclass(slots=True)
class Timeout:
    """Timer B, F or H fired: the peer never answered (or never ACKed)."""

    txn: Transaction


@dataclass(slots=True)
class Terminated:
    """The transaction is over; drop it from every table."""

    txn: Transaction


Action = Send | Deliver | Timeout | Terminated


WAIT = 64 * T1  # RFC 3261/6026: how long a finished transaction absorbs retransmissions


class Transaction(Abstract):
    __slots__ = ("context", "intervals", "key", "last_response", "peer", "reliable", "reply_to", "request", "slot",
                 "state", "timers", "wait")

    def __init__(self, key: tuple[str, ...], request: Request, reliable: bool, peer: Any = None,
                 wait: float = WAIT) -> None:
        """`wait`: Timers J, L and M (a finished transaction kept for late retransmissions);
        the RFC's 64×T1 unless the element keeps them shorter, as Kamailio's wt_timer does."""
        self.wait = wait
        self.key = key
        self.request = request
        self.reliable = reliable
        self.state = State.TRYING
        self.timers: dict[str, float] = {}  # letter → absolute deadline
        self.intervals: dict[str, float] = {}  # letter → current retransmit interval
        self.peer = peer  # where the transport sends: opaque to this module
        self.last_response: Response | None = None
        self.context: Any = None  # free for the transaction user
        self.reply_to: Any = None  # free for the transport user: where its messages go, once worked out
        self.slot = -1  # the TransactionLayer's timer wheel slot this transaction is queued in

    @property
    def deadline(self) -> float | None:
        return min(self.timers.values()) if self.timers else None

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def _start(self, letter: str, now: float, delay: float) -> None:
        self.timers[letter] = now + delay
        self.intervals[letter] = delay

    def _stop(self, *letters: str) -> None:
        for letter in letters:
            self.timers.pop(letter, None)

    def _terminate(self) -> list[Action]:
        self.state = State.TERMINATED
        self.timers.clear()
        return [Terminated(self)]

    def expire(self, now: float) -> list[Action]:
        """Fire every timer that is due, earliest first."""
        actions: list[Action] = []
        timers = self.timers
        while timers and self.state is not State.TERMINATED:
            letter = min(timers, key=timers.__getitem__)
            if timers[letter] > now:
                break
            del timers[letter]
            actions += self._fire(letter, now)
        return actions

    def transport_error(self) -> list[Action]:
        """RFC 3261 §17.1.4/§17.2.4: the transport failed: inform the TU and end."""
        if self.terminated:
            return []
        return [Timeout(self), *self._terminate()]

    @abc.abstractmethod
    def _fire(self, letter: str, now: float) -> list[Action]:
        """What the expiry of timer `letter` does in this kind of transaction."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value} {self.key[0]}>"


# -- client side ---------------------------------------------------------------


class ClientTransaction(Transaction):
    __slots__ = ()

    @abc.abstractmethod
    def receive(self, resp: Response, now: float) -> list[Action]:
        """A response for this transaction arrived."""


class ClientInvite(ClientTransaction):
    """Figure 5, with RFC 6026: a 2xx moves to Accepted (Timer M) so its
    retransmissions still reach the TU."""

    __slots__ = ()

    def start(self, now: float) -> list[Action]:
        self.state = State.CALLING
        if not self.reliable:
            self._start("A", now, T1)
        self._start("B", now, 64 * T1)
        return [Send(self, self.request)]

    def receive(self, resp: Response, now: float) -> list[Action]:
        state = self.state
        if state in (State.CALLING, State.PROCEEDING):
            self._stop("A", "B")
            if resp.status < 200:
                self.state = State.PROCEEDING
                return [Deliver(self, resp)]
            if resp.status < 300:
                self.state = State.ACCEPTED
                self._start("M", now, self.wait)
                return [Deliver(self, resp)]
            self.state = State.COMPLETED
            self.last_response = resp
            self._start("D", now, 0 if self.reliable else 32.0)
            return [Send(self, self.ack_for(resp)), Deliver(self, resp)]
        if state is State.ACCEPTED and 200 <= resp.status < 300:
            return [Deliver(self, resp)]
        if state is State.COMPLETED and resp.status >= 300:
            return [Send(self, self.ack_for(resp))]  # our ACK was lost: resend it
        return []

    def ack_for(self, resp: Response) -> Request:
        """RFC 3261 §17.1.1.3: the hop-by-hop ACK for a non-2xx final response."""
        return self._same_hop("ACK", resp.get("To") or "")

    def cancel_request(self) -> Request:
        """RFC 3261 §9.1: the CANCEL for this INVITE (same branch, same hop)."""
        return self._same_hop("CANCEL", self.request.get("To") or "")

    def _same_hop(self, method: str, to: str) -> Request:
        req = self.request
        headers = [("Via", req.raw_lines("Via")[0].partition(b":")[2].strip().decode())]
        headers += [("Route", r) for r in req.get_lines("Route")]
        headers += [
            ("Max-Forwards", "70"),
            ("From", req.get("From") or ""),
            ("To", to),
            ("Call-ID", req.call_id),
            ("CSeq", f"{req.cseq.number} {method}"),
        ]
        return Request.build(method, req.uri_text, headers)

    def _fire(self, letter: str, now: float) -> list[Action]:
        if letter == "A":
            interval = self.intervals["A"] * 2
            self._start("A", now, interval)
            return [Send(self, self.request)]
        if letter == "B":
            return [Timeout(self), *self._terminate()]
        return self._terminate()  # D, M


class ClientNonInvite(ClientTransaction):
    """Figure 6."""

    __slots__ = ()

    def start(self, now: float) -> list[Action]:
        self.state = State.TRYING
        if not self.reliable:
            self._start("E", now, T1)
        self._start("F", now, 64 * T1)
        return [Send(self, self.request)]

    def receive(self, resp: Response, now: float) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []  # Completed absorbs retransmitted finals
        if resp.status < 200:
            self.state = State.PROCEEDING
            return [Deliver(self, resp)]
        self.state = State.COMPLETED
        self.last_response = resp
        self._stop("E", "F")
        self._start("K", now, 0 if self.reliable else T4)
        return [Deliver(self, resp)]

    def _fire(self, letter: str, now: float) -> list[Action]:
        if letter == "E":
            interval = T2 if self.state is State.PROCEEDING else min(self.intervals["E"] * 2, T2)
            self._start("E", now, interval)
            return [Send(self, self.request)]
        if letter == "F":
            return [Timeout(self), *self._terminate()]
        return self._terminate()  # K


# -- server side ---------------------------------------------------------------


class ServerTransaction(Transaction):
    __slots__ = ()

    def start(self, now: float) -> list[Action]:
        return [Deliver(self, self.request)]

    def retransmission(self, now: float) -> list[Action]:
        """The request came again: answer with what we last sent, if anything."""
        if self.last_response is not None and self.state in (State.PROCEEDING, State.COMPLETED):
            return [Send(self, self.last_response)]
        return []

    @abc.abstractmethod
    def respond(self, resp: Response, now: float) -> list[Action]:
        """The transaction user answers."""


class ServerInvite(ServerTransaction):
    """Figure 7, with RFC 6026 (Accepted state, Timer L).

    100 Trying goes out at once (§17.2.1, and §16.2 for a proxy): it stops the
    client's INVITE retransmissions before the TU has decided anything.
    """

    __slots__ = ()

    def start(self, now: float) -> list[Action]:
        self.state = State.PROCEEDING
        self.last_response = make_response(self.request, 100)
        return [Send(self, self.last_response), Deliver(self, self.request)]

    def respond(self, resp: Response, now: float) -> list[Action]:
        state = self.state
        if state is State.PROCEEDING:
            self.last_response = resp
            if resp.status < 200:
                return [Send(self, resp)]
            if resp.status < 300:
                self.state = State.ACCEPTED
                self._start("L", now, self.wait)
                return [Send(self, resp)]
            self.state = State.COMPLETED
            if not self.reliable:
                self._start("G", now, T1)
            self._start("H", now, 64 * T1)
            return [Send(self, resp)]
        if state is State.ACCEPTED and 200 <= resp.status < 300:
            return [Send(self, resp)]  # the TU retransmits its 2xx
        return []

    def receive_ack(self, ack: Request, now: float) -> list[Action]:
        if self.state is State.COMPLETED:
            self.state = State.CONFIRMED
            self._stop("G", "H")
            self._start("I", now, 0 if self.reliable else T4)
            return []
        if self.state is State.ACCEPTED:
            return [Deliver(self, ack)]  # the ACK for a 2xx is the TU's business
        return []  # Confirmed absorbs retransmitted ACKs

    def _fire(self, letter: str, now: float) -> list[Action]:
        if letter == "G":
            self._start("G", now, min(self.intervals["G"] * 2, T2))
            assert self.last_response is not None
            return [Send(self, self.last_response)]
        if letter == "H":
            return [Timeout(self), *self._terminate()]
        return self._terminate()  # I, L


class ServerNonInvite(ServerTransaction):
    """Figure 8."""

    __slots__ = ()

    def respond(self, resp: Response, now: float) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []
        self.last_response = resp
        if resp.status < 200:
            self.state = State.PROCEEDING
            return [Send(self, resp)]
        self.state = State.COMPLETED
        self._start("J", now, 0 if self.reliable else self.wait)
        return [Send(self, resp)]

    def _fire(self, letter: str, now: float) -> list[Action]:
        return self._terminate()  # J
