"""Calls in progress, shared by every instance: who calls whom, through which
backend, in which state, since when, set up by which instance.

Any instance can then list the calls (`/calls`), and the one that sees a
call's BYE can tell its parties' BLF watchers even when another instance saw
the INVITE. A call that ends stays readable (state "terminated") for
ENDED_TTL, so whoever needs its parties after the BYE still finds them; a
call whose BYE never crosses an instance expires after `ttl`.

Writes come from the proxy's synchronous hooks: `CallRecorder` queues them
(bounded) and one task writes them in order, batched, so a call's early,
confirmed and terminated never overtake each other.

Redis layout:
  {prefix}dlg:{<call-id>}   string: JSON of the Dialog; TTL `ttl` (ENDED_TTL once terminated)
  {prefix}dlgs              sorted set: call-id → start time, the calls not ended
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import redis.asyncio as aioredis
import structlog

from .errors import StoreError, redis_errors

log = structlog.get_logger(__name__)

ENDED_TTL = 30.0
DEFAULT_TTL = 4 * 3600.0  # a call longer than this without a BYE seen is taken as lost


@dataclass(slots=True)
class Dialog:
    call_id: str
    state: str  # early | confirmed | terminated
    caller: str  # From URI
    callee: str  # To URI
    backend: str  # the backend's URI, or "" (a call to a registered user)
    edge: str  # the instance that set it up
    started: float  # wall clock

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Dialog:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError) as err:
            raise StoreError(f"corrupt dialog record: {err}") from err


class DialogStore(Protocol):
    async def write(self, dialogs: list[Dialog]) -> None:
        """Record each dialog's latest state, in list order."""
        ...

    async def get(self, call_id: str) -> Dialog | None: ...

    async def active(self, limit: int = 1000) -> list[Dialog]:
        """Calls not ended, newest first."""
        ...

    async def close(self) -> None: ...


class MemoryDialogStore:
    """Bounded: beyond `max_dialogs`, the oldest entries go."""

    def __init__(self, max_dialogs: int = 1_000_000, ttl: float = DEFAULT_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_dialogs = max_dialogs
        self.ttl = ttl
        self.clock = clock
        self._dialogs: OrderedDict[str, tuple[Dialog, float]] = OrderedDict()  # call-id → (dialog, expires)

    async def write(self, dialogs: list[Dialog]) -> None:
        now = self.clock()
        for d in dialogs:
            self._dialogs[d.call_id] = (d, now + (ENDED_TTL if d.state == "terminated" else self.ttl))
            self._dialogs.move_to_end(d.call_id)
        while len(self._dialogs) > self.max_dialogs:
            self._dialogs.popitem(last=False)

    async def get(self, call_id: str) -> Dialog | None:
        entry = self._dialogs.get(call_id)
        if entry is None or entry[1] <= self.clock():
            return None
        return entry[0]

    async def active(self, limit: int = 1000) -> list[Dialog]:
        now = self.clock()
        live = [d for d, until in self._dialogs.values() if until > now and d.state != "terminated"]
        return sorted(live, key=lambda d: d.started, reverse=True)[:limit]

    async def close(self) -> None:
        self._dialogs.clear()


class RedisDialogStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "ep:", ttl: float = DEFAULT_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.clock = clock
        self._index = f"{prefix}dlgs"

    def _key(self, call_id: str) -> str:
        return f"{self.prefix}dlg:{{{call_id}}}"

    async def write(self, dialogs: list[Dialog]) -> None:
        # one round trip; every command touches one key (Redis Cluster)
        pipe = self.client.pipeline(transaction=False)
        for d in dialogs:
            ended = d.state == "terminated"
            pipe.set(self._key(d.call_id), d.to_json(), px=int((ENDED_TTL if ended else self.ttl) * 1000))
            if ended:
                pipe.zrem(self._index, d.call_id)
            else:
                pipe.zadd(self._index, {d.call_id: d.started})
        pipe.zremrangebyscore(self._index, "-inf", self.clock() - self.ttl)
        with redis_errors():
            await pipe.execute()

    async def get(self, call_id: str) -> Dialog | None:
        with redis_errors():
            raw = await self.client.get(self._key(call_id))
        return Dialog.from_json(raw) if raw else None

    async def active(self, limit: int = 1000) -> list[Dialog]:
        with redis_errors():
            ids = await self.client.zrevrange(self._index, 0, limit - 1)
            pipe = self.client.pipeline(transaction=False)
            for call_id in ids:
                pipe.get(self._key(call_id.decode() if isinstance(call_id, bytes) else str(call_id)))
            raws = await pipe.execute() if ids else []
        dialogs = [Dialog.from_json(raw) for raw in raws if raw]
        return [d for d in dialogs if d.state != "terminated"]

    async def close(self) -> None:
        await self.client.aclose()


class CallRecorder:
    """Turns the proxy's call events into Dialog writes, queued (bounded: a full
    queue drops, counted, rather than grows) and written in order, batched."""

    def __init__(self, store: DialogStore, edge: str, max_queued: int = 10_000, max_known: int = 1_000_000,
                 clock: Callable[[], float] = time.time, on_error: Callable[[Exception], None] | None = None) -> None:
        self.store = store
        self.edge = edge
        self.clock = clock
        self.on_error = on_error
        self.max_queued = max_queued
        self.max_known = max_known
        self._known: OrderedDict[str, Dialog] = OrderedDict()  # calls begun here and not ended
        self._queue: list[Dialog | str] = []  # a Dialog to write, or the Call-ID of a call begun elsewhere that ended
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def update(self, call_id: str, state: str, caller: str = "", callee: str = "", backend: str = "") -> None:
        known = self._known.get(call_id)
        if known is None:
            if state == "terminated":
                self._put(call_id)
                return
            known = self._known[call_id] = Dialog(call_id, state, caller, callee, backend, self.edge, self.clock())
            while len(self._known) > self.max_known:
                self._known.popitem(last=False)
        elif known.state == state:
            return
        if state == "terminated":
            del self._known[call_id]
        self._put(replace(known, state=state, backend=known.backend or backend))

    def _put(self, item: Dialog | str) -> None:
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            return
        self._queue.append(item)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                dialogs = []
                for item in batch:
                    if isinstance(item, str):  # begun elsewhere: its stored record ends
                        stored = await self.store.get(item)
                        if stored is None:
                            continue
                        item = replace(stored, state="terminated")
                    dialogs.append(item)
                await self.store.write(dialogs)
            except StoreError as err:  # the calls go on; only their record is missing
                if self.on_error is not None:
                    self.on_error(err)

    async def flush(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
