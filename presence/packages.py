"""The event packages the presence server knows (RFC 6665 §4.4.2 / §7.2):
what each accepts in a PUBLISH, and the document its watchers get."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgeproxy.sip import SipError

from . import bodies


@dataclass(frozen=True, slots=True)
class EventPackage:
    name: str
    content_type: str
    check: Callable[[bytes], None]  # raises SipError(400/413) for a body that does not parse
    # the document for watchers from the live publications, newest first (empty: the neutral state)
    document: Callable[[str, list[bytes]], bytes]


def _presence_document(entity: str, published: list[bytes]) -> bytes:
    return bodies.merge_pidf(entity, published) if published else bodies.closed_pidf(entity)


def _latest_or(neutral: Callable[[str], bytes]) -> Callable[[str, list[bytes]], bytes]:
    """Packages whose state is one document: the newest publication wins."""
    def document(entity: str, published: list[bytes]) -> bytes:
        return published[0] if published else neutral(entity)

    return document


def _idle_dialogs(entity: str) -> bytes:
    return bodies.dialog_info(entity, 0, [])


PACKAGES: dict[str, EventPackage] = {
    p.name: p for p in (
        EventPackage("presence", "application/pidf+xml", bodies.check_pidf, _presence_document),
        EventPackage("dialog", "application/dialog-info+xml", bodies.check_dialog_info, _latest_or(_idle_dialogs)),
        EventPackage("message-summary", "application/simple-message-summary", bodies.check_message_summary,
                     _latest_or(lambda _: bodies.no_messages())),
    )
}


def package_for(name: str | None, enabled: frozenset[str] | set[str] | None = None) -> EventPackage:
    """The package an event name (Request.event: the Event header without parameters)
    names; 489 when not configured."""
    package = PACKAGES.get(name or "")
    if package is None or (enabled is not None and package.name not in enabled):
        allowed = ", ".join(sorted(enabled if enabled is not None else PACKAGES))
        raise SipError(489, "Bad Event", [("Allow-Events", allowed)])
    return package


def checked_body(package: EventPackage, content_type: str | None, body: bytes) -> bytes:
    """A PUBLISH body for `package`: 415 for another type, 400 when it does not parse."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime != package.content_type:
        raise SipError(415, "Unsupported Media Type", [("Accept", package.content_type)])
    package.check(body)
    return body
