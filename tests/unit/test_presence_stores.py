"""One suite, both backends: publications and subscriptions in memory and in Redis (real redis-server)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import pytest

from edgeproxy.state.redis_store import connect
from presence.publications import MemoryPublicationStore, Publication, PublicationStore
from presence.redis_stores import RedisPublicationStore, RedisSubscriptionStore
from presence.subscriptions import MemorySubscriptionStore, Subscription, SubscriptionStore
from tests.unit.test_state_stores import Clock, both_backends


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def publications(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[PublicationStore]:
    async for store in both_backends(request, lambda: MemoryPublicationStore(clock=clock),
                                     lambda client: RedisPublicationStore(client, clock=clock)):
        yield store


def redis_subscriptions(url: str, clock: Clock, **kw: int) -> RedisSubscriptionStore:
    return RedisSubscriptionStore(connect(url), clock=clock, listener=connect(url, None), **kw)


@pytest.fixture(params=["memory", "redis"])
async def subscriptions(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[SubscriptionStore]:
    async for store in both_backends(
            request, lambda: MemorySubscriptionStore(max_subscriptions=3, clock=clock),
            lambda client: redis_subscriptions(request.getfixturevalue("redis_server"), clock, max_subscriptions=3)):
        await store.start()
        yield store


BODY = b"<presence \x00\xff binary-safe/>"


async def test_publications_newest_first_and_expiring(publications: PublicationStore, clock: Clock) -> None:
    t = clock.now
    await publications.update("alice@x|presence", lambda cur: [*cur, Publication("a", BODY, t + 60, t)])
    got = await publications.update("alice@x|presence", lambda cur: [*cur, Publication("b", b"2", t + 30, t + 1)])
    assert [p.etag for p in got] == ["b", "a"] and got[1].body == BODY
    assert [p.etag for p in await publications.lookup("alice@x|presence")] == ["b", "a"]
    assert await publications.lookup("bob@x|presence") == []
    clock.now += 31
    assert [p.etag for p in await publications.lookup("alice@x|presence")] == ["a"]
    await publications.update("alice@x|presence", lambda cur: [])
    assert await publications.lookup("alice@x|presence") == []


def sub(tag: str, clock: Clock, resource: str = "alice@x", expires: float = 600) -> Subscription:
    return Subscription(call_id=f"c-{tag}", local_tag=tag, remote_tag="r", event="presence", resource=resource,
                        resource_uri=f"sip:{resource}", watcher_uri="sip:bob@x", remote_target="sip:bob@10.0.0.2",
                        route_set=("<sip:p1;lr>",), expires_at=clock.now + expires)


async def test_subscriptions_by_key_and_by_resource(subscriptions: SubscriptionStore, clock: Clock) -> None:
    one, two = sub("t1", clock), sub("t2", clock, expires=30)
    await subscriptions.put(one)
    await subscriptions.put(two)
    await subscriptions.put(sub("t3", clock, resource="carol@x"))
    assert await subscriptions.get(one.key) == one
    assert sorted(s.key for s in await subscriptions.watching("alice@x|presence")) == [one.key, two.key]
    changed = dataclasses.replace(one, cseq=5)
    await subscriptions.put(changed)  # an update is not a new subscription: no overflow
    assert (await subscriptions.get(one.key)) == changed
    await subscriptions.update(dataclasses.replace(one, cseq=6, version=2))  # a NOTIFY went out
    assert (await subscriptions.get(one.key)) == dataclasses.replace(one, cseq=6, version=2)
    await subscriptions.update(sub("gone", clock))  # never stored: update does not create it
    assert await subscriptions.get("c-gone;gone") is None
    with pytest.raises(OverflowError):
        await subscriptions.put(sub("t4", clock))
    assert await subscriptions.count() == 3
    await subscriptions.remove(two.key)
    assert [s.key for s in await subscriptions.watching("alice@x|presence")] == [one.key]
    assert await subscriptions.get(two.key) is None
    assert await subscriptions.count() == 2


async def test_a_watched_resource_is_never_said_to_be_unwatched(subscriptions: SubscriptionStore,
                                                               clock: Clock) -> None:
    """What lets a call's BLF skip a lookup must be sure; nobody subscribed is known at once."""
    assert subscriptions.unwatched("alice@x|presence")
    one = sub("t1", clock)
    await subscriptions.put(one)
    assert not subscriptions.unwatched("alice@x|presence")
    assert subscriptions.unwatched("carol@x|presence")
    await subscriptions.remove(one.key)
    # the memory store knows at once; a shared one keeps "maybe watched" until the subscription's end
    assert subscriptions.unwatched("alice@x|presence") is isinstance(subscriptions, MemorySubscriptionStore)
    clock.now += 600 + 61
    assert subscriptions.unwatched("alice@x|presence")


async def test_every_instance_learns_which_resources_are_watched(redis_server: str, clock: Clock) -> None:
    """Redis: an instance running when another one stores a subscription hears of it; one started later
    loads it; one whose channel was cut is unsure (never "unwatched") until it has caught up again."""
    async def soon(check: Callable[[], bool]) -> bool:
        for _ in range(100):
            if check():
                return True
            await asyncio.sleep(0.02)
        return check()

    await connect(redis_server).flushdb()
    a, b = redis_subscriptions(redis_server, clock), redis_subscriptions(redis_server, clock)
    await a.start()
    await b.start()
    try:
        assert b.unwatched("alice@x|dialog")
        await a.put(dataclasses.replace(sub("t1", clock), event="dialog"))
        assert await soon(lambda: not b.unwatched("alice@x|dialog"))
        late = redis_subscriptions(redis_server, clock)
        await late.start()
        assert not late.unwatched("alice@x|dialog") and late.unwatched("bob@x|dialog")
        await late.close()
        await connect(redis_server).client_kill_filter(_type="pubsub")
        assert await soon(lambda: not b.follower.synced)
        assert not b.unwatched("bob@x|dialog")  # unsure while cut off
        assert await soon(lambda: b.follower.synced)
        await a.put(dataclasses.replace(sub("t2", clock, resource="bob@x"), event="dialog"))
        assert await soon(lambda: not b.unwatched("bob@x|dialog"))
    finally:
        await a.close()
        await b.close()


async def test_expired_subscriptions_are_handed_out_once(subscriptions: SubscriptionStore, clock: Clock) -> None:
    short = sub("t1", clock, expires=10)
    await subscriptions.put(short)
    await subscriptions.put(sub("t2", clock, expires=600))
    assert await subscriptions.expired(clock.now) == []
    clock.now += 11
    assert [s.key for s in await subscriptions.expired(clock.now)] == [short.key]
    assert await subscriptions.expired(clock.now) == []  # claimed: no second final NOTIFY
    assert await subscriptions.count() == 1
    assert [s.key for s in await subscriptions.watching("alice@x|presence")] == ["c-t2;t2"]
