"""Event bodies: PIDF (RFC 3863), dialog-info (RFC 4235), message-summary
(RFC 3842). Each is checked before it is stored, and merged or built here.

XML is parsed by defusedxml: no DTD, no entity expansion, no external
references, so a PUBLISH cannot make the server expand a billion laughs.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from edgeproxy.sip import SipError

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DIALOG_NS = "urn:ietf:params:xml:ns:dialog-info"
MAX_BODY = 65_536


def _parse_xml(body: bytes, root_tag: str, what: str) -> ET.Element:
    if len(body) > MAX_BODY:
        raise SipError(413, "Request Entity Too Large")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as err:
        raise SipError(400, f"Bad {what} body ({type(err).__name__})") from None
    if root.tag != root_tag:
        raise SipError(400, f"Bad {what} body (root is not {root_tag})")
    return root


# -- PIDF ---------------------------------------------------------------------------------
def check_pidf(body: bytes) -> None:
    root = _parse_xml(body, f"{{{PIDF_NS}}}presence", "PIDF")
    if not root.get("entity"):
        raise SipError(400, "Bad PIDF body (no entity)")
    for tuple_ in root.findall(f"{{{PIDF_NS}}}tuple"):
        if not tuple_.get("id") or tuple_.find(f"{{{PIDF_NS}}}status") is None:
            raise SipError(400, "Bad PIDF body (tuple without id or status)")


def merge_pidf(entity: str, bodies: list[bytes]) -> bytes:
    """One document from every publication of a presentity (RFC 3863 §4.1:
    the union of their tuples; person/device elements and notes kept)."""
    ET.register_namespace("", PIDF_NS)
    merged = ET.Element(f"{{{PIDF_NS}}}presence", {"entity": entity})
    seen: set[str] = set()
    for body in bodies:
        for child in _parse_xml(body, f"{{{PIDF_NS}}}presence", "PIDF"):
            ident = child.get("id") or ""
            key = f"{child.tag}#{ident}" if ident else ""
            if key and key in seen:
                continue  # the newest publication's element wins (bodies come newest first)
            seen.add(key)
            merged.append(child)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(merged)


def closed_pidf(entity: str) -> bytes:
    """The neutral state (RFC 3903 §4.4 / RFC 3856): nothing published, so closed."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="{PIDF_NS}" entity={quoteattr(entity)}>'
            f'<tuple id="edge"><status><basic>closed</basic></status></tuple></presence>').encode()


# -- dialog-info ----------------------------------------------------------------------------
def check_dialog_info(body: bytes) -> None:
    root = _parse_xml(body, f"{{{DIALOG_NS}}}dialog-info", "dialog-info")
    if root.get("state") not in ("full", "partial") or not root.get("entity") or root.get("version") is None:
        raise SipError(400, "Bad dialog-info body (version, state and entity are required)")


@dataclass(frozen=True, slots=True)
class DialogState:
    """One call of an entity, as BLF shows it."""

    id: str  # the call's Call-ID
    state: str  # trying | early | confirmed | terminated
    direction: str  # initiator | recipient
    local: str  # this entity's URI
    remote: str  # the other party's URI


def dialog_info(entity: str, version: int, dialogs: list[DialogState]) -> bytes:
    """A full dialog-info document (RFC 4235 §4)."""
    parts = [(f'<?xml version="1.0" encoding="UTF-8"?>\n<dialog-info xmlns="{DIALOG_NS}" version="{version}" '
             f'state="full" entity={quoteattr(entity)}>')]
    for d in dialogs:
        parts.append(f'<dialog id={quoteattr(d.id)} call-id={quoteattr(d.id)} direction="{d.direction}">'
                     f"<state>{d.state}</state>"
                     f"<local><identity>{escape(d.local)}</identity></local>"
                     f"<remote><identity>{escape(d.remote)}</identity></remote></dialog>")
    parts.append("</dialog-info>")
    return "".join(parts).encode()


# -- message-summary --------------------------------------------------------------------------
_WAITING = re.compile(rb"^messages-waiting[ \t]*:[ \t]*(yes|no)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


def check_message_summary(body: bytes) -> None:
    if len(body) > MAX_BODY:
        raise SipError(413, "Request Entity Too Large")
    if not _WAITING.search(body):
        raise SipError(400, "Bad message-summary body (no Messages-Waiting line)")


def no_messages() -> bytes:
    return b"Messages-Waiting: no\r\n"
