"""The dialog store, both backends (memory, and a real redis-server), and the recorder that feeds it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from edgeproxy.state.dialogs import CallRecorder, Dialog, DialogStore, MemoryDialogStore, RedisDialogStore
from tests.unit.test_state_stores import both_backends

NOW = time.time()  # Redis prunes its index by start time, in real time


def dialog(call_id: str, state: str = "confirmed", started: float = NOW) -> Dialog:
    return Dialog(call_id, state, "sip:alice@example.com", "sip:bob@example.com", "sip:10.0.0.1:5060", "edge-a",
                  started)


@pytest.fixture(params=["memory", "redis"])
async def dialogs(request: pytest.FixtureRequest) -> AsyncIterator[DialogStore]:
    async for store in both_backends(request, MemoryDialogStore, RedisDialogStore):
        yield store


@pytest.fixture(params=["memory", "redis"])
async def short_lived(request: pytest.FixtureRequest) -> AsyncIterator[DialogStore]:
    async for store in both_backends(request, lambda: MemoryDialogStore(ttl=0.3),
                                     lambda client: RedisDialogStore(client, ttl=0.3)):
        yield store


async def test_a_call_listed_while_it_lasts_and_readable_after(dialogs: DialogStore) -> None:
    await dialogs.write([dialog("c1", "early", NOW + 1), dialog("c2", "confirmed", NOW + 2)])
    await dialogs.write([dialog("c1", "confirmed", NOW + 1)])
    assert [(d.call_id, d.state) for d in await dialogs.active()] == [("c2", "confirmed"), ("c1", "confirmed")]
    assert await dialogs.get("c1") == dialog("c1", "confirmed", NOW + 1)
    await dialogs.write([dialog("c1", "terminated", NOW + 1)])
    assert [d.call_id for d in await dialogs.active()] == ["c2"]
    ended = await dialogs.get("c1")  # the parties of an ended call stay readable a while (BLF)
    assert ended is not None and ended.state == "terminated"
    assert await dialogs.get("nope") is None
    assert len(await dialogs.active(limit=1)) == 1


async def test_a_call_whose_bye_nobody_saw_expires(short_lived: DialogStore) -> None:
    await short_lived.write([dialog("lost", "confirmed", time.time())])
    assert [d.call_id for d in await short_lived.active()] == ["lost"]
    await asyncio.sleep(0.5)
    assert await short_lived.get("lost") is None and await short_lived.active() == []


async def test_memory_store_is_bounded() -> None:
    store = MemoryDialogStore(max_dialogs=3)
    await store.write([dialog(f"c{i}", started=NOW + i) for i in range(5)])
    assert [d.call_id for d in await store.active()] == ["c4", "c3", "c2"]


async def test_recorder_keeps_order_and_ends_calls_begun_elsewhere(dialogs: DialogStore) -> None:
    a, b = CallRecorder(dialogs, "edge-a"), CallRecorder(dialogs, "edge-b")
    # early, confirmed and a retransmitted confirmed in one burst: the last state wins, in order
    for state in ("early", "confirmed", "confirmed"):
        a.update("c1", state, "sip:alice@example.com", "sip:bob@example.com", "sip:10.0.0.1")
    a.update("c2", "early", "sip:carol@example.com", "sip:bob@example.com")
    await a.flush()
    stored = await dialogs.get("c1")
    assert stored is not None and (stored.state, stored.edge, stored.backend) == ("confirmed", "edge-a", "sip:10.0.0.1")
    b.update("c1", "terminated")  # the BYE crossed the other instance
    b.update("unknown", "terminated")  # a call nobody recorded: nothing to end
    await b.flush()
    ended = await dialogs.get("c1")
    assert ended is not None and (ended.state, ended.caller, ended.edge) == ("terminated", "sip:alice@example.com",
                                                                             "edge-a")
    assert [d.call_id for d in await dialogs.active()] == ["c2"]
    assert await dialogs.get("unknown") is None


async def test_recorder_queue_is_bounded() -> None:
    store = MemoryDialogStore()
    recorder = CallRecorder(store, "edge-a", max_queued=10)
    for i in range(25):
        recorder.update(f"c{i}", "early")
    assert recorder.dropped == 15
    await recorder.flush()
    assert len(await store.active()) == 10
