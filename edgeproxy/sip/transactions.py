"""The transaction table: matching (RFC 3261 §17.1.3, §17.2.3), creation,
bounds and timers for every transaction of one element, sans-IO."""

from __future__ import annotations

from typing import Any

from .errors import SipError
from .message import Request, Response
from .transaction import (
    WAIT,
    Action,
    ClientInvite,
    ClientNonInvite,
    ClientTransaction,
    Deliver,
    ServerInvite,
    ServerNonInvite,
    ServerTransaction,
    State,
    Terminated,
    Transaction,
)

MAGIC_COOKIE = "z9hG4bK"
Key = tuple[str, ...]


def server_key(req: Request, method: str | None = None) -> Key:
    """Key of the server transaction a request belongs to (ACK → its INVITE)."""
    via = req.top_via
    method = method or ("INVITE" if req.method == "ACK" else req.method)
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return (branch, via.sent_by.lower(), method)
    # RFC 2543 peer: no usable branch, match on the dialog and request identifiers
    to_tag = "" if req.method == "ACK" else (req.to.tag or "")
    return ("2543", req.uri_text, to_tag, req.from_.tag or "", req.call_id, str(req.cseq.number),
            str(via), method)


def client_key(msg: Request | Response) -> Key:
    """Key shared by a request we sent and the responses to it (§17.1.3)."""
    return (msg.top_branch, msg.cseq.method)


class TransactionLayer:
    """Every transaction of one element.

    `max_transactions` bounds the table: past it, new requests are refused
    with 503 (Retry-After) instead of growing memory. `max_per_origin`, when
    set, bounds the server transactions open for one origin (a source
    address), so one client cannot fill the table for everyone.
    """

    def __init__(self, max_transactions: int = 50_000, max_per_origin: int = 0, wait: float = WAIT,
                 resolution: float = 0.02) -> None:
        """`resolution`: the width of one slot of the timer wheel (seconds); the element
        calls `expire` about that often."""
        self.max_transactions = max_transactions
        self.wait = wait  # see Transaction: Timers J, L, M
        self.max_per_origin = max_per_origin
        self._origin_of: dict[Key, str] = {}
        self._per_origin: dict[str, int] = {}
        self.server: dict[Key, ServerTransaction] = {}
        self.client: dict[Key, ClientTransaction] = {}
        # timer wheel: slot number (deadline // resolution) → the transactions due in it. A
        # transaction is queued in one slot at a time (`Transaction.slot`); an entry left in
        # an older slot after its deadline moved is skipped. O(1) per change, where a heap
        # of every live transaction paid a cache miss per level on each push and pop.
        self.resolution = resolution
        self._slots: dict[int, list[Transaction]] = {}
        self._next_slot = 0  # every slot before it has been run

    def __len__(self) -> int:
        return len(self.server) + len(self.client)

    # -- incoming ----------------------------------------------------------
    def receive_request(self, req: Request, reliable: bool, now: float, peer: Any = None,
                        origin: str = "", new_allowed: bool = True) -> list[Action]:
        """A request from the wire: a new transaction, a retransmission or an ACK.

        Raises SipError(503) when the table (or the origin's share) is full or
        no new transaction is allowed (a draining instance: its retransmissions
        still reach the transactions it has), SipError(400) when the headers
        that identify the transaction are malformed.
        """
        key = server_key(req)
        if req.method == "ACK":
            invite = self.server.get(key)
            if isinstance(invite, ServerInvite):
                return self._track(invite, invite.receive_ack(req, now))
            return [Deliver(None, req)]  # ACK for a 2xx: end to end, no transaction
        txn = self.server.get(key)
        if txn is not None:
            return txn.retransmission(now)
        if not new_allowed or len(self) >= self.max_transactions:
            raise SipError(503, "Service Unavailable", [("Retry-After", "5")], req)
        if self.max_per_origin:
            self._count_origin(key, origin, req)
        txn = (ServerInvite if req.method == "INVITE" else ServerNonInvite)(key, req, reliable, peer, self.wait)
        self.server[key] = txn
        return self._track(txn, txn.start(now))

    def _count_origin(self, key: Key, origin: str, req: Request) -> None:
        open_ = self._per_origin.get(origin, 0)
        if open_ >= self.max_per_origin:
            raise SipError(503, "Service Unavailable (too many transactions)", [("Retry-After", "5")], req)
        self._per_origin[origin] = open_ + 1
        self._origin_of[key] = origin

    def _release_origin(self, key: Key) -> None:
        origin = self._origin_of.pop(key, None)
        if origin is not None:
            left = self._per_origin[origin] - 1
            if left:
                self._per_origin[origin] = left
            else:
                del self._per_origin[origin]

    def receive_response(self, resp: Response, now: float) -> list[Action]:
        """A response from the wire; one no transaction claims goes up as stray."""
        txn = self.client.get(client_key(resp))
        if txn is None:
            return [Deliver(None, resp)]
        return self._track(txn, txn.receive(resp, now))

    def cancel_target(self, cancel: Request) -> ServerInvite | None:
        """The INVITE server transaction a CANCEL cancels (§9.2)."""
        txn = self.server.get(server_key(cancel, "INVITE"))
        return txn if isinstance(txn, ServerInvite) else None

    # -- outgoing ----------------------------------------------------------
    def respond(self, txn: ServerTransaction, resp: Response, now: float) -> list[Action]:
        return self._track(txn, txn.respond(resp, now))

    def send_request(self, req: Request, reliable: bool, now: float, peer: Any = None) -> list[Action]:
        """Start a client transaction (ACK for 2xx is sent without one)."""
        return self.start_client(req, reliable, now, peer)[1]

    def start_client(self, req: Request, reliable: bool, now: float, peer: Any = None,
                     branch: str = "") -> tuple[ClientTransaction, list[Action]]:
        """Like send_request, also handing back the transaction (to attach context to).
        `branch`: the one the caller just wrote in its Via (spares reading it back)."""
        key = (branch, req.cseq.method) if branch else client_key(req)
        if len(self) >= self.max_transactions:
            raise SipError(503, "Service Unavailable", [("Retry-After", "5")], req)
        txn = (ClientInvite if req.method == "INVITE" else ClientNonInvite)(key, req, reliable, peer, self.wait)
        self.client[key] = txn
        return txn, self._track(txn, txn.start(now))

    def transport_error(self, txn: Transaction) -> list[Action]:
        return self._track(txn, txn.transport_error())

    def abandon(self, txn: Transaction) -> None:
        """Drop a transaction its user gave up on (no retransmissions, no actions)."""
        txn.state = State.TERMINATED
        txn.timers.clear()
        self._track(txn, [])

    # -- time --------------------------------------------------------------
    @property
    def deadline(self) -> float | None:
        """The earliest timer of any transaction (for callers that step time exactly)."""
        for number in sorted(self._slots):
            due = [txn.deadline for txn in self._slots[number] if txn.slot == number]
            if due:
                return min(due)  # type: ignore[type-var]  # queued transactions have timers
        return None

    def expire(self, now: float) -> list[Action]:
        """Fire every timer due by `now`."""
        actions: list[Action] = []
        slots = self._slots
        last = int(now / self.resolution)
        due = range(self._next_slot, last + 1)
        if len(due) > len(slots):  # after a quiet spell: only the slots that hold something
            due = sorted(number for number in slots if number <= last)  # type: ignore[assignment]
        for number in due:
            queued = slots.pop(number, None)
            if queued is None:
                continue
            waiting = []
            for txn in queued:
                if txn.slot != number:
                    continue  # its deadline moved: it is queued elsewhere
                if number == last and min(txn.timers.values()) > now:
                    waiting.append(txn)  # later in the current slot
                    continue
                txn.slot = -1
                actions += self._track(txn, txn.expire(now))
            if waiting:
                slots.setdefault(number, []).extend(waiting)
        self._next_slot = max(self._next_slot, last)
        return actions

    def _track(self, txn: Transaction, actions: list[Action]) -> list[Action]:
        """After every event: a finished transaction leaves its table, a live one's next deadline is queued."""
        if txn.state is State.TERMINATED:
            txn.slot = -1
            table: dict[Key, Any] = self.server if isinstance(txn, ServerTransaction) else self.client
            if table.get(txn.key) is txn:
                del table[txn.key]
                if self._origin_of and table is self.server:
                    self._release_origin(txn.key)
            if not actions or type(actions[-1]) is not Terminated:  # a transaction's own ending comes last
                actions.append(Terminated(txn))
        elif txn.timers:
            number = max(int(min(txn.timers.values()) / self.resolution), self._next_slot)
            if number != txn.slot:
                txn.slot = number
                queued = self._slots.get(number)
                if queued is None:
                    self._slots[number] = [txn]
                else:
                    queued.append(txn)
        else:
            txn.slot = -1  # waiting on nothing: an entry left in the wheel is stale
        return actions
