import asyncio

from edgeproxy.aio import start_eagerly


async def test_finishes_synchronously_without_a_task() -> None:
    done: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    async def quick() -> None:
        done.append("ran")

    start_eagerly(quick(), tasks, lambda e: done.append(f"error {e}"))
    assert done == ["ran"] and not tasks


async def test_suspending_coroutine_continues_in_a_task() -> None:
    log: list[object] = []
    tasks: set[asyncio.Task[None]] = set()
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def slow() -> None:
        log.append("start")
        log.append(await fut)
        await asyncio.sleep(0)
        log.append(await asyncio.sleep(0.01, result="slept"))

    start_eagerly(slow(), tasks, lambda e: log.append(f"error {e}"))
    assert log == ["start"]
    fut.set_result(42)
    for _ in range(50):
        await asyncio.sleep(0.005)
        if not tasks and len(log) == 3:
            break
    assert log == ["start", 42, "slept"] and not tasks


async def test_errors_before_and_after_suspension_reach_on_error() -> None:
    errors: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    async def fails_now() -> None:
        raise ValueError("now")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("later")

    start_eagerly(fails_now(), tasks, lambda e: errors.append(str(e)))
    start_eagerly(fails_later(), tasks, lambda e: errors.append(str(e)))
    await asyncio.sleep(0.02)
    assert errors == ["now", "later"]


async def test_cancellation_reaches_the_coroutine() -> None:
    log: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    async def waits() -> None:
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    start_eagerly(waits(), tasks, lambda e: log.append("error"))
    await asyncio.sleep(0.01)
    for task in list(tasks):
        task.cancel()
    await asyncio.sleep(0.01)
    assert log == ["cancelled"]
