"""The same stores on Redis, for active/active instances.

Layout (every key has a TTL; every operation touches one key, whose AoR or
nonce sits in a {hash tag}, so it all works on Redis Cluster; no KEYS or
SCAN in the request path):

  {prefix}loc:{<aor>}     string: JSON list of the AoR's bindings;
                          TTL = the latest binding expiry
  {prefix}locidx          sorted set: "<aor> <binding identity>" → its expiry, for
                          the bindings gauge only (the changes of the location writes
                          sent in batches, at least once a second; trimmed of
                          expired members when counted)
  {prefix}nc:{<nonce>}    string: highest digest nonce-count seen; TTL = nonce lifetime
  {prefix}user:{<name>}   hash: ha1_md5, ha1_sha256 (written by the operator)
  {prefix}up:{<aor>}      string: JSON of what the edge registered upstream for the
                          AoR (REGISTER throttling); TTL = until that lapses

Writes to a location key are compare-and-set: read, compute, then a Lua
script writes only if the value is still the one read (retried otherwise).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import redis.asyncio as aioredis
import structlog
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from .errors import StoreError, StoreFull, redis_errors
from .location import Binding, Change, by_q, live
from .upstream import UpstreamRegistration
from .users import Credentials

log = structlog.get_logger(__name__)

_CAS = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""

_ADVANCE = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > last then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

CAS_ATTEMPTS = 8
WRITTEN_CACHE = 50_000
INDEX_BATCH = 1000  # bindings-index changes held at most before they are sent


POOL_SIZE = 64  # connections per client; more concurrent commands wait for one (up to 2 s)


class _SentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Connections to whichever node the Sentinels name master, queued like a BlockingConnectionPool."""


def connect(url: str, timeout: float | None = 2.0, sentinels: list[str] | None = None,
            master: str = "mymaster") -> aioredis.Redis:
    """A client; `timeout=None` for one that waits on a pub/sub channel. Its pool
    makes a burst of requests queue for a connection instead of failing with
    "Too many connections" (redis-py's plain pool stops at 100 and raises).
    With `sentinels`, the master is asked of them and asked again after a
    connection fails, so a Sentinel failover is followed without a restart."""
    options: dict[str, Any] = {"max_connections": POOL_SIZE, "timeout": 2.0, "socket_timeout": timeout,
                               "socket_connect_timeout": 2.0, "health_check_interval": 30}
    if not sentinels:
        return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, **options))
    parsed = urlparse(url)
    db = int(parsed.path.strip("/") or 0)
    addresses = [(host, int(port)) for host, _, port in (s.rpartition(":") for s in sentinels)]
    manager = Sentinel(addresses, sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
                       username=parsed.username, password=parsed.password)
    return manager.master_for(master, connection_pool_class=_SentinelPool, db=db, **options)


def _encode(bindings: list[Binding]) -> str:
    return json.dumps([b.to_dict() for b in bindings], separators=(",", ":")) if bindings else ""


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw


def _decode(raw: str) -> list[Binding]:
    if not raw:
        return []
    try:
        return [Binding.from_dict(item) for item in json.loads(raw)]
    except (ValueError, TypeError) as err:
        raise StoreError(f"corrupt location record: {err}") from err


class CasRecords:
    """Read-modify-write of one string key per record, safe across instances.

    Writers in this process take turns per key; against other instances a
    Lua compare-and-set retries, with jittered backoff. What this instance
    last wrote per key is remembered: a refresh tries the compare-and-set on
    it directly (one round trip instead of two); if another instance wrote
    since, the CAS fails and the loop reads the key as usual.
    """

    def __init__(self, client: aioredis.Redis, what: str) -> None:
        self.client = client
        self.what = what  # for errors: "location record"
        self._cas = client.register_script(_CAS)
        self._locks: dict[str, list[Any]] = {}  # key → [lock, waiters]; empty when idle
        self._written: OrderedDict[str, str] = OrderedDict()

    async def read(self, key: str) -> str:
        with redis_errors():
            return _text(await self.client.get(key))

    async def update(self, key: str, change: Callable[[str], tuple[str, int]]) -> str:
        """`change(old)` gives the new text and its TTL in ms ("" deletes); the text written."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = [asyncio.Lock(), 0]
        lock[1] += 1
        try:
            async with lock[0]:
                return await self._update(key, change)
        finally:
            lock[1] -= 1
            if not lock[1]:
                del self._locks[key]

    async def _update(self, key: str, change: Callable[[str], tuple[str, int]]) -> str:
        guess = self._written.pop(key, None)
        with redis_errors():
            for attempt in range(CAS_ATTEMPTS):
                old = guess if guess is not None else _text(await self.client.get(key))
                encoded, ttl_ms = change(old)
                if await self._cas(keys=[key], args=[old, encoded, ttl_ms]):
                    if encoded:
                        self._written[key] = encoded
                        if len(self._written) > WRITTEN_CACHE:
                            self._written.popitem(last=False)
                    return encoded
                if guess is not None:
                    guess = None  # someone else wrote it: read it, no backoff needed yet
                    continue
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
        raise StoreFull(f"{self.what} {key} too contended")


def _ttl_ms(expiries: list[float], now: float) -> int:
    """A record lives until its last entry expires (plus a second)."""
    return math.ceil((max(expiries) - now) * 1000) + 1000 if expiries else 0


class RedisLocationStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "ep:", clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self.records = CasRecords(client, "location record")
        self.index = f"{prefix}locidx"
        # the gauge's index changes, sent in one batch a second (a write each would cost a
        # round trip per REGISTER); a batch lost to an error heals: refreshes re-add, scores expire
        self._indexed: dict[str, float] = {}
        self._unindexed: set[str] = set()
        self._index_sent = 0.0

    def key(self, aor: str) -> str:
        return f"{self.prefix}loc:{{{aor}}}"

    async def lookup(self, aor: str) -> list[Binding]:
        return by_q(live(_decode(await self.records.read(self.key(aor))), self.clock()))

    async def update(self, aor: str, change: Change) -> list[Binding]:
        written: list[Binding] = []
        replaced: list[Binding] = []

        def write(old: str) -> tuple[str, int]:
            now = self.clock()
            replaced[:] = _decode(old)
            written[:] = live(change(live(replaced, now)), now)
            return _encode(written), _ttl_ms([b.expires_at for b in written], now)

        await self.records.update(self.key(aor), write)
        self._note_index(aor, replaced, written)
        if len(self._indexed) + len(self._unindexed) >= INDEX_BATCH or self.clock() - self._index_sent >= 1.0:
            await self._send_index()
        return by_q(written)

    def _note_index(self, aor: str, replaced: list[Binding], written: list[Binding]) -> None:
        """The written bindings in the index with their expiry, the replaced ones not written again out."""
        kept = {f"{aor} {b.identity}": b.expires_at for b in written}
        gone = {f"{aor} {b.identity}" for b in replaced}.difference(kept)
        for member in gone:
            self._indexed.pop(member, None)
        self._unindexed.difference_update(kept)
        self._unindexed.update(gone)
        self._indexed.update(kept)

    async def _send_index(self) -> None:
        """Failing it must not fail a REGISTER that was stored."""
        added, removed = self._indexed, self._unindexed
        self._indexed, self._unindexed, self._index_sent = {}, set(), self.clock()
        if not (added or removed):
            return
        try:
            with redis_errors():
                async with self.client.pipeline(transaction=False) as pipe:
                    if added:
                        pipe.zadd(self.index, added)
                    if removed:
                        pipe.zrem(self.index, *removed)
                    await pipe.execute()
        except StoreError as err:
            log.warning("bindings index not updated", changes=len(added) + len(removed), error=str(err))

    async def count(self) -> int:
        await self._send_index()
        with redis_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(self.index, "-inf", self.clock())
                pipe.zcard(self.index)
                return int((await pipe.execute())[1])

    async def close(self) -> None:
        await self._send_index()
        await self.client.aclose()


class RedisNonceCounter:
    def __init__(self, client: aioredis.Redis, prefix: str = "ep:") -> None:
        self.client = client
        self.prefix = prefix
        self._advance = client.register_script(_ADVANCE)

    async def advance(self, nonce: str, nc: int, ttl: float) -> bool:
        with redis_errors():
            return bool(await self._advance(keys=[f"{self.prefix}nc:{{{nonce}}}"], args=[nc, math.ceil(ttl * 1000)]))

    async def close(self) -> None:
        await self.client.aclose()


class RedisUserStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "ep:") -> None:
        self.client = client
        self.prefix = prefix

    def key(self, username: str) -> str:
        return f"{self.prefix}user:{{{username}}}"

    async def get(self, username: str) -> Credentials | None:
        with redis_errors():
            fields = await self.client.hmget(self.key(username), ["ha1_md5", "ha1_sha256"])
        md5, sha = (_text(f) or None for f in fields)
        return Credentials(md5, sha) if md5 or sha else None

    async def put(self, username: str, creds: Credentials) -> None:
        """Provisioning helper (operators may also HSET directly)."""
        mapping: dict[str | bytes, str] = {
            k: v for k, v in (("ha1_md5", creds.ha1_md5), ("ha1_sha256", creds.ha1_sha256)) if v}
        await self.client.hset(self.key(username), mapping=mapping)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.client.aclose()


class RedisUpstreamStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "ep:", clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock

    def key(self, aor: str) -> str:
        return f"{self.prefix}up:{{{aor}}}"

    async def get(self, aor: str) -> UpstreamRegistration | None:
        with redis_errors():
            raw = _text(await self.client.get(self.key(aor)))
        reg = UpstreamRegistration.decode(raw) if raw else None
        return reg if reg is not None and reg.until > self.clock() else None

    async def put(self, aor: str, reg: UpstreamRegistration) -> None:
        ttl_ms = math.ceil((reg.until - self.clock()) * 1000)
        with redis_errors():
            if ttl_ms > 0:
                await self.client.set(self.key(aor), reg.encode(), px=ttl_ms)
            else:
                await self.client.delete(self.key(aor))

    async def delete(self, aor: str) -> None:
        with redis_errors():
            await self.client.delete(self.key(aor))

    async def close(self) -> None:
        await self.client.aclose()
