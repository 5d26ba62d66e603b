"""RFC 5626-style keep-alives toward UDP clients behind NAT.

The registrar tells the pinger which contacts sit behind NAT; every
`interval` seconds each gets a CRLF pair or an OPTIONS request, so the
pinhole in the client's NAT stays open for calls toward it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from edgeproxy.sip import Request
from edgeproxy.sip.ids import new_branch, new_call_id, new_tag

from .base import Address, Target
from .pacing import in_turns

PING = b"\r\n\r\n"


class NatPinger:
    def __init__(self, mode: str, interval: float, max_targets: int, send: Callable[[bytes, Target], None],
                 our_address: Callable[[], Address], user_agent: str = "") -> None:
        self.mode = mode  # off | crlf | options
        self.interval = interval
        self.max_targets = max_targets
        self._send = send
        self._our_address = our_address
        self.user_agent = user_agent
        self._targets: dict[Address, float] = {}  # address → until (wall clock): its registration's end
        self._task: asyncio.Task[None] | None = None
        self._seq = itertools.count(1)

    def watch(self, address: Address, until: float) -> bool:
        """Ping a UDP contact until `until` (time.time()); False when the table is full."""
        if self.mode == "off" or (address not in self._targets and len(self._targets) >= self.max_targets):
            return False
        self._targets[address] = until
        return True

    def unwatch(self, address: Address) -> None:
        self._targets.pop(address, None)

    def __len__(self) -> int:
        return len(self._targets)

    def start(self) -> None:
        if self.mode != "off" and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.ping_all()

    async def ping_all(self) -> None:
        """One round, in turns of the event loop (see pacing): the OPTIONS' 200s come back as
        they are read, not as one burst from every client."""
        now = time.time()
        async for address, until in in_turns(list(self._targets.items())):
            if until <= now:
                self._targets.pop(address, None)  # its registration ended (or it left meanwhile)
            else:
                self._send(self._ping(address), Target("udp", address))

    def _ping(self, address: Address) -> bytes:
        if self.mode == "crlf":
            return PING
        host, port = self._our_address()
        host = f"[{host}]" if ":" in host else host
        peer = f"[{address[0]}]" if ":" in address[0] else address[0]
        return Request.build("OPTIONS", f"sip:{peer}:{address[1]}", [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:keepalive@{host}>;tag={new_tag()}"),
            ("To", f"<sip:{peer}:{address[1]}>"),
            ("Call-ID", new_call_id()),
            ("CSeq", f"{next(self._seq) % 2**31} OPTIONS"),
            *([("User-Agent", self.user_agent)] if self.user_agent else []),
        ]).to_bytes()
