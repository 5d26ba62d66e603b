"""One suite, both backends: the memory stores and the Redis ones (real redis-server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

import pytest
import redis.asyncio as aioredis

from edgeproxy.state.errors import StoreFull
from edgeproxy.state.location import Binding, LocationStore, MemoryLocationStore
from edgeproxy.state.nonces import MemoryNonceCounter, NonceCounter
from edgeproxy.state.redis_store import (
    RedisLocationStore,
    RedisNonceCounter,
    RedisUpstreamStore,
    RedisUserStore,
    connect,
)
from edgeproxy.state.upstream import MemoryUpstreamStore, UpstreamRegistration, UpstreamStore
from edgeproxy.state.users import Credentials, MemoryUserStore, credentials_for_password


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Closable(Protocol):
    async def close(self) -> None: ...


S = TypeVar("S", bound=Closable)


async def both_backends(request: pytest.FixtureRequest, memory: Callable[[], S],
                        redis: Callable[[aioredis.Redis], S]) -> AsyncIterator[S]:
    """The store under test for the fixture's param: in memory, or on a flushed real redis-server."""
    if request.param == "memory":
        store = memory()
    else:
        client = connect(request.getfixturevalue("redis_server"))
        await client.flushdb()
        store = redis(client)
    yield store
    await store.close()


@pytest.fixture(params=["memory", "redis"])
async def location(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[LocationStore]:
    async for store in both_backends(request, lambda: MemoryLocationStore(clock=clock),
                                     lambda client: RedisLocationStore(client, clock=clock)):
        yield store


@pytest.fixture(params=["memory", "redis"])
async def nonces(request: pytest.FixtureRequest) -> AsyncIterator[NonceCounter]:
    async for store in both_backends(request, MemoryNonceCounter, RedisNonceCounter):
        yield store


def binding(contact: str, expires_at: float, **kw: object) -> Binding:
    return Binding(contact=contact, expires_at=expires_at, **kw)  # type: ignore[arg-type]


async def test_add_lookup_ordered_by_q(location: LocationStore, clock: Clock) -> None:
    t = clock.now
    await location.update("alice@example.com", lambda cur: cur + [binding("sip:a@1.1.1.1", t + 60, q=0.5)])
    await location.update("alice@example.com", lambda cur: cur + [
        binding("sip:a@2.2.2.2", t + 60, q=1.0, path=["<sip:edge;lr>"], instance='"<urn:uuid:1>"', reg_id=1)])
    found = await location.lookup("alice@example.com")
    assert [b.contact for b in found] == ["sip:a@2.2.2.2", "sip:a@1.1.1.1"]
    assert found[0].path == ["<sip:edge;lr>"] and found[0].instance == '"<urn:uuid:1>"' and found[0].reg_id == 1
    assert await location.lookup("bob@example.com") == []


async def test_expired_bindings_vanish(location: LocationStore, clock: Clock) -> None:
    t = clock.now
    await location.update("a@x", lambda cur: [binding("sip:short@h", t + 10), binding("sip:long@h", t + 100)])
    clock.now += 11
    assert [b.contact for b in await location.lookup("a@x")] == ["sip:long@h"]
    seen: list[list[str]] = []

    def change(cur: list[Binding]) -> list[Binding]:
        seen.append([b.contact for b in cur])
        return cur

    await location.update("a@x", change)
    assert seen[-1] == ["sip:long@h"]  # change() never sees expired bindings
    clock.now += 100
    assert await location.lookup("a@x") == []


async def test_remove_all(location: LocationStore, clock: Clock) -> None:
    await location.update("a@x", lambda cur: [binding("sip:1@h", clock.now + 60)])
    assert await location.update("a@x", lambda cur: []) == []
    assert await location.lookup("a@x") == []


async def test_count_follows_adds_refreshes_removals_and_expiry(location: LocationStore, clock: Clock) -> None:
    t = clock.now
    assert await location.count() == 0
    await location.update("a@x", lambda cur: [binding("sip:1@h", t + 10), binding("sip:2@h", t + 100)])
    await location.update("b@x", lambda cur: [binding("sip:1@h", t + 100)])
    assert await location.count() == 3
    await location.update("b@x", lambda cur: [binding("sip:1@h", t + 200)])  # a refresh is no new binding
    assert await location.count() == 3
    clock.now += 11  # a@x's first binding lapses, nothing written since
    assert await location.count() == 2
    await location.update("a@x", lambda cur: [])
    assert await location.count() == 1
    clock.now += 200
    assert await location.count() == 0


async def test_concurrent_updates_lose_nothing(location: LocationStore, clock: Clock) -> None:
    async def add(i: int) -> None:
        await location.update("busy@x", lambda cur: cur + [binding(f"sip:{i}@h", clock.now + 60)])

    await asyncio.gather(*(add(i) for i in range(30)))
    assert len(await location.lookup("busy@x")) == 30


async def test_redis_layout_has_ttl_and_hash_tag(redis_server: str, clock: Clock) -> None:
    import time

    client = connect(redis_server)
    await client.flushdb()
    store = RedisLocationStore(client)  # real clock: Redis TTLs are real time
    await store.update("carol@example.com", lambda cur: [binding("sip:c@h", time.time() + 120)])
    key = "ep:loc:{carol@example.com}"
    assert await client.exists(key)
    assert 118_000 <= await client.pttl(key) <= 121_100
    await store.close()


async def test_redis_writes_survive_a_script_flush(redis_server: str, clock: Clock) -> None:
    """A restarted Redis has lost the compare-and-set script: the write loads it again and goes through."""
    client = connect(redis_server)
    await client.flushdb()
    store = RedisLocationStore(client, clock=clock)
    await store.update("dave@x", lambda cur: [binding("sip:d@h", clock.now + 60)])
    await client.script_flush()
    await store.update("dave@x", lambda cur: cur + [binding("sip:d2@h", clock.now + 60)])
    assert [b.contact for b in await store.lookup("dave@x")] == ["sip:d@h", "sip:d2@h"]
    assert await store.count() == 2
    await store.close()


async def test_memory_store_is_bounded(clock: Clock) -> None:
    store = MemoryLocationStore(max_aors=2, clock=clock)
    for aor in ("a@x", "b@x"):
        await store.update(aor, lambda cur: [binding("sip:1@h", clock.now + 10)])
    with pytest.raises(StoreFull):
        await store.update("c@x", lambda cur: [binding("sip:1@h", clock.now + 10)])
    clock.now += 20  # both expire: the sweep makes room
    await store.update("c@x", lambda cur: [binding("sip:1@h", clock.now + 10)])
    assert len(store) == 1


async def test_nonce_count_must_increase(nonces: NonceCounter) -> None:
    assert await nonces.advance("n1", 1, 30)
    assert not await nonces.advance("n1", 1, 30)  # replay
    assert await nonces.advance("n1", 2, 30)
    assert not await nonces.advance("n1", 1, 30)
    assert await nonces.advance("n2", 1, 30)  # another nonce is independent


async def test_user_stores(redis_server: str) -> None:
    creds = credentials_for_password("alice", "example.com", "secret")
    memory = MemoryUserStore({"alice": creds})
    client = connect(redis_server)
    await client.flushdb()
    redis_users = RedisUserStore(client)
    await redis_users.put("alice", creds)
    for store in (memory, redis_users):
        assert await store.get("alice") == creds
        assert await store.get("mallory") is None
    assert creds.ha1("MD5") == "b1726872c344b6dc8365b774f8fd6412"  # md5("alice:example.com:secret")
    assert Credentials(None, "x").ha1("MD5") is None
    await redis_users.close()


async def test_two_instances_writing_one_aor_lose_nothing(redis_server: str, clock: Clock) -> None:
    stores = [RedisLocationStore(connect(redis_server), clock=clock) for _ in range(2)]
    await stores[0].client.flushdb()

    async def add(store: RedisLocationStore, i: int) -> None:
        await store.update("shared@x", lambda cur: cur + [binding(f"sip:{i}@h", clock.now + 60)])

    await asyncio.gather(*(add(stores[i % 2], i) for i in range(20)))
    assert len(await stores[1].lookup("shared@x")) == 20
    for store in stores:
        await store.close()


async def test_stale_write_cache_loses_nothing(redis_server: str, clock: Clock) -> None:
    """A refreshes on what it wrote last; B wrote since: A's compare-and-set fails and it re-reads."""
    a, b = (RedisLocationStore(connect(redis_server), clock=clock) for _ in range(2))
    await a.client.flushdb()
    await a.update("dup@x", lambda cur: cur + [binding("sip:a@h", clock.now + 60)])
    await b.update("dup@x", lambda cur: cur + [binding("sip:b@h", clock.now + 60)])
    await a.update("dup@x", lambda cur: cur + [binding("sip:a2@h", clock.now + 60)])
    assert sorted(x.contact for x in await b.lookup("dup@x")) == ["sip:a2@h", "sip:a@h", "sip:b@h"]
    for store in (a, b):
        await store.close()


@pytest.fixture(params=["memory", "redis"])
async def upstream(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[UpstreamStore]:
    async for store in both_backends(request, lambda: MemoryUpstreamStore(clock=clock),
                                     lambda client: RedisUpstreamStore(client, clock=clock)):
        yield store


async def test_upstream_registration_round_trip_and_lapse(upstream: UpstreamStore, clock: Clock) -> None:
    assert await upstream.get("alice@example.com") is None
    reg = UpstreamRegistration(clock.now + 600, ["sip:alice@10.0.0.5:5060"], "cid-1", 7)
    await upstream.put("alice@example.com", reg)
    assert await upstream.get("alice@example.com") == reg
    assert await upstream.get("bob@example.com") is None
    clock.now += 601
    assert await upstream.get("alice@example.com") is None  # lapsed upstream: the next REGISTER goes there


async def test_upstream_registration_delete(upstream: UpstreamStore, clock: Clock) -> None:
    await upstream.put("alice@example.com", UpstreamRegistration(clock.now + 600))
    await upstream.delete("alice@example.com")
    assert await upstream.get("alice@example.com") is None


async def test_redis_upstream_key_has_the_registration_ttl(redis_server: str, clock: Clock) -> None:
    client = connect(redis_server)
    await client.flushdb()
    store = RedisUpstreamStore(client)
    await store.put("alice@example.com", UpstreamRegistration(time.time() + 600))
    assert 598_000 <= await client.pttl("ep:up:{alice@example.com}") <= 600_000
    await store.close()


async def test_memory_upstream_store_is_bounded(clock: Clock) -> None:
    store = MemoryUpstreamStore(max_aors=10, clock=clock)
    for i in range(50):
        await store.put(f"u{i}@example.com", UpstreamRegistration(clock.now + 600))
    assert len(store) == 10 and await store.get("u49@example.com") is not None
