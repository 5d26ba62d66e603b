"""A local copy of short-lived entries every instance shares through Redis.

What must be read on every message (bans) or every call (is anybody watching
this party?) cannot cost a Redis round trip, so each instance keeps a table
of `key → seconds left`: the writer sets a key with a TTL (for instances that
start later) and publishes `"<milliseconds> <key>"` (for the running ones).
A follower loads the keys in force when it subscribes (a SCAN: startup and
reconnection only, never in the request path) and records every message.
`synced` says whether the copy is complete: false before the first load and
from a lost channel until the next load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

Record = Callable[[str, float], None]  # (key, seconds left)


class Follower:
    def __init__(self, client: aioredis.Redis, channel: str, prefix: str, record: Record) -> None:
        """Keys `{prefix}{key}` (the key in a hash tag) hold the entries; `record` files one locally."""
        self.client = client
        self.channel = channel
        self.prefix = prefix
        self.record = record
        self.synced = False
        self._loaded = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    def share(self, pipe: Pipeline, key: str, ms: int) -> None:
        """Queue, with the writer's own commands, the message that tells every follower of `key`."""
        pipe.publish(self.channel, f"{ms} {key}")

    async def start(self, timeout: float = 5.0) -> None:
        """Follow the channel (until close); return once loaded, or after `timeout` without Redis."""
        self._listener = asyncio.get_running_loop().create_task(self._follow())
        try:
            await asyncio.wait_for(self._loaded.wait(), timeout)
        except TimeoutError:
            log.warning("starting without a shared table: Redis does not answer", channel=self.channel)

    async def _follow(self) -> None:
        retry = 0.5
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._load()  # after subscribing: no entry falls between the two
                    self.synced = True
                    self._loaded.set()
                    retry = 0.5
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._received(message["data"])
            except (RedisError, OSError) as err:
                self.synced = False
                log.warning("shared table channel lost", channel=self.channel, error=str(err), retry_in=retry)
                self._loaded.set()  # start up without it rather than not at all
                await asyncio.sleep(retry)
                retry = min(retry * 2, 10.0)

    async def _load(self) -> None:
        async for name in self.client.scan_iter(match=f"{self.prefix}{{*", count=1000):
            text = name.decode() if isinstance(name, bytes) else name
            ms = await self.client.pttl(text)
            if ms > 0:
                self.record(text[len(self.prefix) + 1:-1], ms / 1000)

    def _received(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        ms, _, key = text.partition(" ")
        if ms.isdigit() and key:
            self.record(key, int(ms) / 1000)

    async def close(self) -> None:
        self.synced = False
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
