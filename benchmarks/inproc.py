"""An edgeproxy instance in this process with its sends captured, for the path micro-benchmarks.

call_path_bench.py and register_path_bench.py feed datagrams straight into
`on_message` and read what the instance would have sent; this module starts
the instance, times each step, repeats the operation and counts bytecodes
(`--opcodes`) for both.
"""

from __future__ import annotations

import asyncio
import collections
import cProfile
import pathlib
import sys
import time
import tomllib
import types
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

ROOT = str(pathlib.Path(__file__).resolve().parent.parent) + "/"
sys.path.insert(0, ROOT)

from edgeproxy.app import EdgeProxy
from edgeproxy.cli import settle_gc
from edgeproxy.config import from_dict
from edgeproxy.observability.logging import setup_logging
from edgeproxy.transport.base import Source, Target


@dataclass
class Instance:
    edge: EdgeProxy
    local: tuple[str, int]  # the address it listens on
    sent: list[tuple[bytes, Target]] = field(default_factory=list)

    def source(self, address: tuple[str, int]) -> Source:
        return Source("udp", address, self.local)

    def last_to(self, address: tuple[str, int]) -> bytes:
        """The last message sent to `address`."""
        return next(data for data, target in reversed(self.sent) if target.address == address)


async def start(config: str) -> Instance:
    """An instance on a UDP port of 127.0.0.1 with `config` (TOML, [server] listen set here)."""
    setup_logging("warning", "console")
    edge = EdgeProxy(from_dict(tomllib.loads(f'[server]\nlisten = ["udp:127.0.0.1:0"]\n{config}\n'
                                             '[log]\nlevel = "warning"\n')))
    await edge.start()
    instance = Instance(edge, edge.transports.bound[0][1])

    def capture(data: bytes, target: Target, *_: object) -> None:
        instance.sent.append((data, target))

    edge.transports.send = capture  # type: ignore[method-assign]
    if edge.proxy is not None:
        edge.proxy.send = capture
    settle_gc()  # as `edgeproxy run` does once listening
    return instance


class Steps:
    """Seconds spent in `on_message`, per step of the operation a benchmark repeats."""

    def __init__(self, instance: Instance, names: tuple[str, ...]) -> None:
        self.instance, self.names = instance, names
        self.seconds = [0.0] * len(names)

    def feed(self, step: int, data: bytes, source: Source) -> None:
        start = time.perf_counter()
        self.instance.edge.on_message(data, source)
        self.seconds[step] += time.perf_counter() - start


class VirtualClock(asyncio.SelectorEventLoop):
    """An event loop whose clock `repeat` moves on by 1/rate per operation: the
    transactions' timers fire (and finished transactions leave their tables) as they
    would at that rate, however fast the bench runs, so the steady state is measured."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def time(self) -> float:
        return self.now


def run_virtual(main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=VirtualClock) as runner:
        runner.run(main)


async def repeat(operation: Callable[[int], None], count: int, warmup: int, steps: Steps, what: str,
                 opcodes: bool = False, profiler: cProfile.Profile | None = None, rate: float = 1000.0) -> None:
    """`operation(n)` for `warmup` numbers, then for `count` more, measured; between two,
    the clock moves on by 1/rate and the loop turns, so timers run as in production.
    Prints µs per operation in on_message, per step, in the timers, and of process CPU;
    bytecodes when asked."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClock), "run me with inproc.run_virtual"
    edge = steps.instance.edge
    tick = edge._on_tick
    timers = [0.0]

    def timed_tick() -> None:
        start = time.perf_counter()
        tick()
        timers[0] += time.perf_counter() - start

    edge._on_tick = timed_tick  # type: ignore[method-assign]
    step = 1.0 / rate

    async def run(numbers: range) -> None:
        for n in numbers:
            operation(n)
            loop.now += step
            await asyncio.sleep(0)

    await run(range(warmup))
    steps.seconds = [0.0] * len(steps.names)
    timers[0] = 0.0
    counts: collections.Counter[str] = collections.Counter()
    if opcodes:
        count_opcodes(counts)
    if profiler is not None:
        profiler.enable()
    cpu = time.process_time()
    await run(range(warmup, warmup + count))
    cpu = time.process_time() - cpu
    sys.settrace(None)
    if profiler is not None:
        profiler.disable()
    if opcodes:
        print_opcodes(counts, count, what)
    print(f"{count} {what}s at {rate:g}/s of virtual time: {(sum(steps.seconds) + timers[0]) * 1e6 / count:.1f} µs "
          f"per {what} in on_message and the timers ({cpu * 1e6 / count:.1f} µs per {what} of process CPU, "
          "the driver's side included)")
    print("  " + ", ".join(f"{name} {t * 1e6 / count:.1f}" for name, t in zip(steps.names, steps.seconds))
          + f", timers {timers[0] * 1e6 / count:.1f}")


def count_opcodes(counts: collections.Counter[str]) -> None:
    """From now on (until sys.settrace(None)), count every bytecode executed, by function."""
    def per_opcode(frame: types.FrameType, event: str, arg: object) -> object:
        if event == "opcode":
            counts[f"{frame.f_code.co_filename.removeprefix(ROOT)}:{frame.f_code.co_name}"] += 1
        return per_opcode

    def per_frame(frame: types.FrameType, event: str, arg: object) -> object:
        frame.f_trace_opcodes, frame.f_trace_lines = True, False
        return per_opcode

    sys.settrace(per_frame)


def print_opcodes(counts: collections.Counter[str], operations: int, what: str) -> None:
    print(f"{sum(counts.values()) / operations:.0f} bytecodes per {what} (the driver's own included), "
          "the functions that execute most:")
    for name, n in counts.most_common(30):
        print(f"  {n / operations:8.0f}  {name}")
