"""Building the configured stores (memory or Redis) for one instance."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edgeproxy.config import Config
from edgeproxy.state.bans import BanList, MemoryBanList, RedisBanList
from presence.publications import MemoryPublicationStore, PublicationStore
from presence.redis_stores import RedisPublicationStore, RedisSubscriptionStore
from presence.subscriptions import MemorySubscriptionStore, SubscriptionStore

from .dialogs import DialogStore, MemoryDialogStore, RedisDialogStore
from .location import LocationStore, MemoryLocationStore
from .nonces import MemoryNonceCounter, NonceCounter
from .redis_store import RedisLocationStore, RedisNonceCounter, RedisUpstreamStore, RedisUserStore, connect
from .upstream import MemoryUpstreamStore, UpstreamStore
from .users import MemoryUserStore, UserStore, load_users_file


@dataclass(slots=True)
class Stores:
    location: LocationStore
    nonces: NonceCounter
    users: UserStore
    bans: BanList
    upstream: UpstreamStore
    publications: PublicationStore
    subscriptions: SubscriptionStore
    dialogs: DialogStore
    redis: aioredis.Redis | None = None  # the shared client, for /ready

    async def reachable(self) -> bool:
        if self.redis is None:
            return True
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        for store in (self.location, self.nonces, self.users, self.bans, self.upstream, self.publications,
                      self.subscriptions, self.dialogs):  # closing a shared client twice is harmless
            await store.close()


def open_stores(config: Config) -> Stores:
    """Stores for the configured backend; Redis connects lazily, on first use."""
    users_file = config.registrar.users
    file_users = MemoryUserStore(load_users_file(users_file, config.realm)) if users_file not in ("", "redis") else None
    if config.state.backend == "memory":
        return Stores(MemoryLocationStore(config.state.max_aors), MemoryNonceCounter(), file_users or MemoryUserStore(),
                      MemoryBanList(config.security.max_tracked), MemoryUpstreamStore(config.state.max_aors),
                      MemoryPublicationStore(config.state.max_aors),
                      MemorySubscriptionStore(config.presence.max_subscriptions), MemoryDialogStore())
    state = config.state
    client = connect(state.redis_url, sentinels=state.sentinels, master=state.sentinel_master)
    listener = connect(state.redis_url, None, state.sentinels, state.sentinel_master)  # pub/sub waits unbounded
    prefix = state.key_prefix
    return Stores(RedisLocationStore(client, prefix), RedisNonceCounter(client, prefix),
                  file_users or RedisUserStore(client, prefix),
                  RedisBanList(listener, prefix, config.security.max_tracked),
                  RedisUpstreamStore(client, prefix), RedisPublicationStore(client, prefix),
                  RedisSubscriptionStore(client, prefix, config.presence.max_subscriptions, listener=listener),
                  RedisDialogStore(client, prefix), client)
