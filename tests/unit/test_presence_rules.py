"""Presence as pure parts: event bodies, package selection, PUBLISH rules, the publication store."""

from __future__ import annotations

import pytest

from edgeproxy.sip import Request, SipError
from presence import bodies
from presence.packages import PACKAGES, checked_body, package_for
from presence.publications import MemoryPublicationStore, Publication, apply_publish

OPEN = (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">'
        b'<tuple id="desk"><status><basic>open</basic></status><note>at my desk</note></tuple></presence>')
MOBILE = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">'
          b'<tuple id="mobile"><status><basic>closed</basic></status></tuple></presence>')
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
          b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">&lol2;</presence>')


def status(fn: object, *args: object) -> int:
    with pytest.raises(SipError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.status


def test_pidf_checked() -> None:
    bodies.check_pidf(OPEN)
    assert status(bodies.check_pidf, b"<presence") == 400
    assert status(bodies.check_pidf, b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>') == 400  # no entity
    assert status(bodies.check_pidf, b"<other/>") == 400
    assert status(bodies.check_pidf, LAUGHS) == 400  # a DTD is never processed
    assert status(bodies.check_pidf, b"<x>" * 40_000) == 413


def test_publications_merge_into_one_document() -> None:
    merged = bodies.merge_pidf("sip:alice@example.com", [OPEN, MOBILE])
    bodies.check_pidf(merged)
    assert merged.count(b"<ns0:tuple") + merged.count(b"<tuple") == 2 and b"at my desk" in merged
    again = bodies.merge_pidf("sip:alice@example.com", [MOBILE, MOBILE.replace(b"closed", b"open")])
    assert again.count(b'id="mobile"') == 1 and b"closed" in again  # one tuple id: the newest wins
    bodies.check_pidf(bodies.closed_pidf("sip:alice@example.com"))


def test_dialog_info_and_message_summary() -> None:
    doc = bodies.dialog_info("sip:alice@example.com", 3, [bodies.DialogState(
        "c1@h", "confirmed", "initiator", "sip:alice@example.com", "sip:bob@example.com")])
    bodies.check_dialog_info(doc)
    assert b'version="3"' in doc and b"<state>confirmed</state>" in doc
    assert status(bodies.check_dialog_info, b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"/>') == 400
    bodies.check_message_summary(b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (0/2)\r\n")
    assert status(bodies.check_message_summary, b"Voice-Message: 2/8\r\n") == 400


def test_packages_and_media_types() -> None:
    subscribe = Request.build("SUBSCRIBE", "sip:alice@example.com", [("Event", "Presence;id=1")])
    assert package_for(subscribe.event).name == "presence"  # the name without its parameters
    assert status(package_for, "reg") == 489
    assert status(package_for, "dialog", {"presence"}) == 489  # not configured
    assert status(checked_body, PACKAGES["presence"], "text/plain", OPEN) == 415
    assert checked_body(PACKAGES["presence"], "application/pidf+xml; charset=utf-8", OPEN) == OPEN


def test_publish_rules() -> None:
    now = 1000.0
    pubs, made = apply_publish([], None, OPEN, 60, now, "e1")
    assert made is not None and made.etag == "e1" and made.expires_at == now + 60
    assert status(apply_publish, pubs, None, b"", 60, now, "x") == 400  # initial without body
    assert status(apply_publish, pubs, "nope", b"", 60, now, "x") == 412  # unknown entity-tag
    pubs, refreshed = apply_publish(pubs, "e1", b"", 120, now + 30, "e2")  # refresh: new tag, same body
    assert refreshed is not None and refreshed.body == OPEN and refreshed.etag == "e2" and len(pubs) == 1
    assert status(apply_publish, pubs, "e1", b"", 60, now, "x") == 412  # the old tag is gone
    pubs, modified = apply_publish(pubs, "e2", MOBILE, 120, now + 40, "e3")
    assert modified is not None and modified.body == MOBILE and modified.modified == now + 40
    pubs, removed = apply_publish(pubs, "e3", b"", 0, now + 50, "e4")
    assert removed is None and pubs == []


async def test_publication_store_orders_newest_first_and_expires() -> None:
    clock = [100.0]
    store = MemoryPublicationStore(max_keys=2, clock=lambda: clock[0])
    await store.update("a|presence", lambda cur: [*cur, Publication("1", OPEN, 160, 100)])
    await store.update("a|presence", lambda cur: [*cur, Publication("2", MOBILE, 130, 110)])
    assert [p.etag for p in await store.lookup("a|presence")] == ["2", "1"]
    clock[0] = 140
    assert [p.etag for p in await store.lookup("a|presence")] == ["1"]
    for key in ("b|presence", "c|presence"):
        await store.update(key, lambda cur: [Publication("x", OPEN, 999, 100)])
    assert len(store) == 2 and await store.lookup("a|presence") == []  # bounded: the oldest went
