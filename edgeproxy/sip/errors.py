"""The one error type the SIP core raises for bad input."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .message import Message


class SipError(Exception):
    """Input a server must refuse, with the status and reason it should answer.

    `message` is the partially parsed message when the start line and header
    block could be split, so a server can still build the error response
    (Via/From/To/Call-ID/CSeq are copied raw). Responses that raise are
    dropped by the caller, never answered.
    """

    __slots__ = ("headers", "message", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
        message: Message | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []
        self.message = message


def bad_request(reason: str) -> SipError:
    return SipError(400, reason)
