"""Load shedding for UDP: when the receive queue fills, new requests are dropped unread.

Past capacity, a proxy that reads everything in order falls further behind for
good: queued messages outlive T1, the peers retransmit, and each retransmission
costs as much as the original, so a few seconds of a slow machine end in
thousands of failed calls (Kamailio under the same load fails the same way).
The kernel, once the buffer is full, drops whatever comes, the ACKs, BYEs and
responses that would finish calls included. Dropping only the requests that
start something new (no To tag: INVITE, REGISTER, SUBSCRIBE…) frees the
worker for the calls under way; the senders retransmit them over UDP, so a
new call waits a T1 or two instead of failing. Sans-IO: the transport reads the
queue and brings the datagrams.
"""

from __future__ import annotations

import re

import structlog

from edgeproxy.observability.metrics import OVERLOADED, SHED

log = structlog.get_logger(__name__)

RESUME_SHARE = 0.2  # of the shedding threshold: drained this far, new requests are read again

# a To header field (or its compact form t) with a tag parameter: a request inside a dialog
_TO_TAG = re.compile(rb"\n(?:to|t)[ \t]*:[^\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE)


def starts_something(data: bytes) -> bool:
    """A request outside any dialog and transaction of ours, judged from its bytes:
    not a response, not ACK or CANCEL (they belong to an INVITE under way), no To tag."""
    return not data.startswith((b"SIP/", b"ACK ", b"CANCEL ")) and _TO_TAG.search(data) is None


class LoadShedder:
    """Hysteresis on the share of the receive buffer that is queued: shedding starts
    past `threshold` and stops below a fifth of it, so it does not flap per tick."""

    __slots__ = ("_episode", "active", "threshold")

    def __init__(self, threshold: float) -> None:
        """`threshold`: share of the UDP receive buffer (0–1); 0 never sheds."""
        self.threshold = threshold
        self.active = False
        self._episode = 0  # dropped in the current spell: the log line when it ends
        OVERLOADED.set_function(lambda: int(self.active))

    def update(self, queued: float) -> None:
        """`queued`: the fullest UDP receive queue now, as a share of its buffer."""
        if not self.threshold:
            return
        if not self.active and queued >= self.threshold:
            self.active = True
            log.warning("overloaded: dropping new requests received over UDP", queued=round(queued, 3))
        elif self.active and queued < self.threshold * RESUME_SHARE:
            self.active = False
            log.warning("overload over: reading every request again", dropped=self._episode)
            self._episode = 0

    def sheds(self, data: bytes) -> bool:
        """While active: whether this datagram is one to drop (and count)."""
        if starts_something(data):
            self._episode += 1
            SHED.inc()
            return True
        return False
