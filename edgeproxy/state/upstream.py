"""What the edge registered upstream for each AoR (REGISTER throttling, the
mid-registrar): enough for any instance to decide whether a client refresh
can be answered here or must go upstream."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class UpstreamRegistration:
    until: float  # wall clock: when the upstream binding lapses unless refreshed
    contacts: list[str] = field(default_factory=list)  # Contact URIs the upstream holds for this AoR via us
    call_id: str = ""  # aor mode: the edge's own registration dialog
    cseq: int = 0

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str) -> UpstreamRegistration | None:
        try:
            data: dict[str, Any] = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError):
            return None  # unreadable: treated as unknown, so the next REGISTER goes upstream


class UpstreamStore(Protocol):
    async def get(self, aor: str) -> UpstreamRegistration | None: ...

    async def put(self, aor: str, reg: UpstreamRegistration) -> None:
        """Keep `reg` until it lapses (`reg.until`)."""
        ...

    async def delete(self, aor: str) -> None: ...

    async def close(self) -> None: ...


class MemoryUpstreamStore:
    """Bounded like the location store: past `max_aors`, the oldest entry goes
    (its next REGISTER is simply forwarded upstream)."""

    def __init__(self, max_aors: int = 1_000_000, clock: Callable[[], float] = time.time) -> None:
        self.max_aors = max_aors
        self.clock = clock
        self._regs: OrderedDict[str, UpstreamRegistration] = OrderedDict()

    def __len__(self) -> int:
        return len(self._regs)

    async def get(self, aor: str) -> UpstreamRegistration | None:
        reg = self._regs.get(aor)
        if reg is not None and reg.until <= self.clock():
            del self._regs[aor]
            return None
        return reg

    async def put(self, aor: str, reg: UpstreamRegistration) -> None:
        self._regs[aor] = UpstreamRegistration(reg.until, list(reg.contacts), reg.call_id, reg.cseq)
        self._regs.move_to_end(aor)
        while len(self._regs) > self.max_aors:
            self._regs.popitem(last=False)

    async def delete(self, aor: str) -> None:
        self._regs.pop(aor, None)

    async def close(self) -> None:
        self._regs.clear()
