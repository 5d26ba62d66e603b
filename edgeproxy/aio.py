"""Starting coroutines eagerly (what Python 3.12's eager tasks do).

Request handlers are coroutines because a store may be remote; with the
in-memory stores they finish without ever suspending. Running the first
step at once spares those the cost of a Task; one that does suspend is
handed to a Task at the point where it waits.

Only for code that needs no current Task before its first suspension:
`asyncio.timeout` (which redis-py uses) does, so Redis-backed handlers are
started with `start_in_task`.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]],
                  on_error: Callable[[BaseException], None]) -> None:
    """Run coro now; if it suspends, continue it in a Task kept in `tasks`."""
    try:
        waited = coro.send(None)
    except StopIteration:
        return
    except Exception as err:  # noqa: BLE001  (any failure of a handler is reported, never raised)
        on_error(err)
        return

    def launch(_: object = None) -> None:
        start_in_task(_resume(coro), tasks, on_error)

    if isinstance(waited, asyncio.Future):
        waited._asyncio_future_blocking = False  # as a Task would, having taken it over
        waited.add_done_callback(launch)  # resume once what it awaits is done
    else:
        asyncio.get_running_loop().call_soon(launch)  # a bare yield (asyncio.sleep(0))


def start_in_task(coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]],
                  on_error: Callable[[BaseException], None]) -> None:
    """Run coro in a Task kept in `tasks` until it ends; failures go to on_error."""

    async def guarded() -> None:
        try:
            await coro
        except Exception as err:  # noqa: BLE001  (reported, never raised)
            on_error(err)

    task = asyncio.get_running_loop().create_task(guarded())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None]) -> Generator[Any, Any, None]:
    """Continue an already started coroutine; `yield from` delegates send,
    throw (cancellation) and close to it."""
    return (yield from coro)  # type: ignore[misc]
