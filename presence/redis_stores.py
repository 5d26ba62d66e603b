"""The presence stores on Redis, shared by every instance.

  {prefix}pub:{<aor>|<event>}   string: JSON list of live publications (body in
                                base64); TTL = the latest expiry
  {prefix}sub:{<call-id>;<tag>} string: JSON of one subscription; TTL = its expiry + 60 s
  {prefix}watch:{<aor>|<event>} set: keys of the subscriptions to that resource
  {prefix}subexp                sorted set: subscription key → expiry; whoever
                                removes a member sends that final NOTIFY
  {prefix}watched               pub/sub channel: "<milliseconds> <aor>|<event>" for each
                                subscription stored, so that every instance knows
                                locally which resources may have watchers (a call's
                                BLF asks Redis only for those)
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis.asyncio as aioredis

from edgeproxy.state.errors import StoreError, redis_errors
from edgeproxy.state.follow import Follower
from edgeproxy.state.redis_store import CasRecords, _text, _ttl_ms

from .publications import Change, Publication, newest_first
from .subscriptions import Subscription

GRACE_MS = 60_000  # a subscription's record outlives its expiry, for its final NOTIFY


def _encode_pubs(pubs: list[Publication]) -> str:
    if not pubs:
        return ""
    return json.dumps([{"etag": p.etag, "body": base64.b64encode(p.body).decode(), "expires_at": p.expires_at,
                        "modified": p.modified} for p in pubs], separators=(",", ":"))


def _decode_pubs(raw: str) -> list[Publication]:
    if not raw:
        return []
    try:
        return [Publication(d["etag"], base64.b64decode(d["body"]), d["expires_at"], d["modified"])
                for d in json.loads(raw)]
    except (ValueError, TypeError, KeyError) as err:
        raise StoreError(f"corrupt publication record: {err}") from err


class RedisPublicationStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "ep:", clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self.records = CasRecords(client, "publication record")

    def key(self, watched: str) -> str:
        return f"{self.prefix}pub:{{{watched}}}"

    async def lookup(self, key: str) -> list[Publication]:
        now = self.clock()
        return newest_first([p for p in _decode_pubs(await self.records.read(self.key(key))) if p.expires_at > now])

    async def update(self, key: str, change: Change) -> list[Publication]:
        written: list[Publication] = []

        def write(old: str) -> tuple[str, int]:
            now = self.clock()
            written[:] = [p for p in change([p for p in _decode_pubs(old) if p.expires_at > now]) if p.expires_at > now]
            return _encode_pubs(written), _ttl_ms([p.expires_at for p in written], now)

        await self.records.update(self.key(key), write)
        return newest_first(written)

    async def close(self) -> None:
        await self.client.aclose()


def _decode_sub(raw: str) -> Subscription | None:
    if not raw:
        return None
    try:
        data: dict[str, Any] = json.loads(raw)
        data["route_set"] = tuple(data.get("route_set", ()))
        return Subscription(**data)
    except (ValueError, TypeError) as err:
        raise StoreError(f"corrupt subscription record: {err}") from err


class RedisSubscriptionStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "ep:", max_subscriptions: int = 1_000_000,
                 clock: Callable[[], float] = time.time, listener: aioredis.Redis | None = None) -> None:
        """`listener`: a client without a read timeout, for the pub/sub channel (default: `client`)."""
        self.client = client
        self.prefix = prefix
        self.max_subscriptions = max_subscriptions
        self.clock = clock
        self.expiries = f"{prefix}subexp"
        self._watched: dict[str, float] = {}  # resource → until when it may have a watcher
        self._complete = True  # false once the table overflowed: then only Redis knows
        self.follower = Follower(listener or client, f"{prefix}watched", f"{prefix}watch:", self._record)

    def _sub(self, key: str) -> str:
        return f"{self.prefix}sub:{{{key}}}"

    def _watch(self, watched: str) -> str:
        return f"{self.prefix}watch:{{{watched}}}"

    async def get(self, key: str) -> Subscription | None:
        with redis_errors():
            return _decode_sub(_text(await self.client.get(self._sub(key))))

    async def put(self, sub: Subscription) -> None:
        ttl_ms = max(1, math.ceil((sub.expires_at - self.clock()) * 1000)) + GRACE_MS
        with redis_errors():
            if await self.client.zscore(self.expiries, sub.key) is None and \
                    await self.client.zcard(self.expiries) >= self.max_subscriptions:
                raise OverflowError("subscription table full")
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self._sub(sub.key), json.dumps(asdict(sub), separators=(",", ":")), px=ttl_ms)
                pipe.sadd(self._watch(sub.watched), sub.key)
                pipe.pexpire(self._watch(sub.watched), ttl_ms, gt=True)
                pipe.pexpire(self._watch(sub.watched), ttl_ms, nx=True)
                pipe.zadd(self.expiries, {sub.key: sub.expires_at})
                self.follower.share(pipe, sub.watched, ttl_ms)
                await pipe.execute()
        self._record(sub.watched, ttl_ms / 1000)

    async def update(self, sub: Subscription) -> None:
        """One SET of the record, keeping its TTL; nothing if it is gone meanwhile."""
        with redis_errors():
            await self.client.set(self._sub(sub.key), json.dumps(asdict(sub), separators=(",", ":")), xx=True,
                                  keepttl=True)

    async def remove(self, key: str) -> None:
        with redis_errors():
            sub = await self.get(key)
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self._sub(key))
                pipe.zrem(self.expiries, key)
                if sub is not None:
                    pipe.srem(self._watch(sub.watched), key)
                await pipe.execute()

    def unwatched(self, watched: str) -> bool:
        """From the local table of resources any instance subscribed to (until their
        subscriptions' expiry: an unsubscribed resource stays "maybe watched" until then);
        unsure, and so False, while the table is not in sync or overflowed."""
        if not (self.follower.synced and self._complete):
            return False
        until = self._watched.get(watched)
        return until is None or until <= self.clock()

    def _record(self, watched: str, seconds: float) -> None:
        table = self._watched
        until = self.clock() + seconds
        if watched not in table and len(table) >= self.max_subscriptions:
            now = self.clock()
            for stale in [k for k, t in table.items() if t <= now]:
                del table[stale]
            if len(table) >= self.max_subscriptions:
                self._complete = False  # dropping an entry could hide a watcher: stop answering
                return
        if table.get(watched, 0.0) < until:
            table[watched] = until

    async def start(self) -> None:
        await self.follower.start()

    async def watching(self, watched: str) -> list[Subscription]:
        with redis_errors():
            keys = sorted(k.decode() if isinstance(k, bytes) else k for k in
                          await self.client.smembers(self._watch(watched)))  # type: ignore[misc]
            if not keys:
                return []
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(self._sub(key))
                raws = await pipe.execute()
        now = self.clock()
        subs = [_decode_sub(_text(raw)) for raw in raws]
        gone = [k for k, s in zip(keys, subs, strict=True) if s is None]
        if gone:
            await self.client.srem(self._watch(watched), *gone)
        return [s for s in subs if s is not None and s.expires_at > now]

    async def expired(self, now: float) -> list[Subscription]:
        """Claimed: only the instance whose ZREM takes a member gets that subscription."""
        with redis_errors():
            due = await self.client.zrangebyscore(self.expiries, "-inf", now, start=0, num=500)
            out = []
            for member in due:
                key = member.decode() if isinstance(member, bytes) else str(member)
                if await self.client.zrem(self.expiries, key):
                    sub = await self.get(key)
                    if sub is not None:
                        out.append(sub)
            return out

    async def count(self) -> int:
        with redis_errors():
            return int(await self.client.zcard(self.expiries))

    async def close(self) -> None:
        await self.follower.close()
        await self.client.aclose()
