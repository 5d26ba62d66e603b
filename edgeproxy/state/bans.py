"""Bans (a source address or a user name, for some seconds), enforced by
every instance.

`banned` is asked for every message, so it only ever reads a local table.
The Redis implementation writes each ban to a key with a TTL (for instances
that start later) and publishes it (for the running ones), which copy it
into their local table.

  {prefix}ban:{<key>}   string: the reason; TTL = the ban's length
  {prefix}bans          pub/sub channel: "<milliseconds> <key>"
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from edgeproxy.observability.metrics import BANS

from .follow import Follower

log = structlog.get_logger(__name__)


class BanList(Protocol):
    def banned(self, key: str) -> bool: ...

    def ban(self, key: str, seconds: float, reason: str) -> None:
        """Ban `key` ("ip:ADDRESS" or "user:NAME") here at once, and everywhere soon after."""
        ...

    def __len__(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MemoryBanList:
    """Bounded: when full, expired bans go first, then the oldest."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._until: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def banned(self, key: str) -> bool:
        until = self._until.get(key) if self._until else None
        if until is None:
            return False
        if until > self.clock():
            return True
        del self._until[key]
        return False

    def ban(self, key: str, seconds: float, reason: str) -> None:
        log.warning("banned", key=key, seconds=seconds, reason=reason)
        BANS.labels(reason).inc()
        self._record(key, seconds)

    def _record(self, key: str, seconds: float) -> None:
        until = self._until
        if key not in until and len(until) >= self.max_entries:
            now = self.clock()
            for stale in [k for k, t in until.items() if t <= now]:
                del until[stale]
            if len(until) >= self.max_entries:
                del until[next(iter(until))]
        until[key] = max(until.get(key, 0.0), self.clock() + seconds)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._until.clear()


class RedisBanList(MemoryBanList):
    def __init__(self, client: aioredis.Redis, prefix: str = "ep:", max_entries: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(max_entries, clock)
        self.client = client
        self.prefix = prefix
        self.follower = Follower(client, f"{prefix}bans", f"{prefix}ban:", self._record)
        self._tasks: set[asyncio.Task[None]] = set()

    def key(self, key: str) -> str:
        return f"{self.prefix}ban:{{{key}}}"

    def ban(self, key: str, seconds: float, reason: str) -> None:
        super().ban(key, seconds, reason)
        task = asyncio.get_running_loop().create_task(self._share(key, seconds, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _share(self, key: str, seconds: float, reason: str) -> None:
        ms = max(1, int(seconds * 1000))
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.key(key), reason, px=ms)
                self.follower.share(pipe, key, ms)
                await pipe.execute()
        except RedisError as err:
            log.warning("ban not shared", key=key, error=str(err))

    async def start(self) -> None:
        """Load the bans in force, then follow new ones (until close)."""
        await self.follower.start()

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.follower.close()
        await super().close()
        await self.client.aclose()
