"""Backend sets and how one is chosen (Kamailio dispatcher's algorithms), sans-IO."""

from __future__ import annotations

import enum
import itertools
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from edgeproxy.observability.metrics import BACKEND_UP
from edgeproxy.proxy.routing import Hop, hop_for, is_ip
from edgeproxy.sip import Request, parse_uri
from edgeproxy.sip.uri import unescape

log = structlog.get_logger(__name__)

ALGORITHMS = ("round-robin", "weighted", "hash-callid", "hash-from", "least-busy")


class Health(enum.Enum):
    UP = "up"
    PROBING = "probing"  # failed lately: probed, given calls only when no backend is UP, until it answers again
    DOWN = "down"


@dataclass(slots=True)
class Backend:
    uri: str
    weight: int = 1
    health: Health = Health.UP
    failures: int = 0  # consecutive failed probes
    successes: int = 0  # consecutive good probes
    timeouts: int = 0  # calls in a row it did not answer at all
    calls: int = 0  # calls in flight (least-busy)
    hop: Hop = field(init=False)

    def __post_init__(self) -> None:
        self.hop = hop_for(parse_uri(self.uri))

    @property
    def usable(self) -> bool:
        """Healthy, and its address known (a name waits for the resolver)."""
        return self.health is Health.UP and is_ip(self.hop.host)

    @property
    def suspect(self) -> bool:
        return self.health is Health.PROBING and is_ip(self.hop.host)


def _set_health(backend: Backend, health: Health, why: str) -> None:
    if backend.health is not health:
        log.warning("backend health", backend=backend.uri, health=health.value, previous=backend.health.value,
                    reason=why)
        backend.health = health
        backend.timeouts = 0  # counted afresh in each state
    BACKEND_UP.labels(backend.uri).set(1 if health is Health.UP else 0)


class BackendSet:
    """The backends of one set and the algorithm choosing among them.

    Health moves with probes: one unanswered probe makes a backend PROBING
    (calls go to the UP ones, to it only when none is UP), `down_after` in a
    row DOWN (no calls), `up_after` good ones bring it back UP.
    `suspect_after` calls in a row that it leaves unanswered make it PROBING
    too (Kamailio's ds_probing_threshold: one datagram lost under load is not
    a dead backend), and `on_suspect` hears of it (the app probes it then, so
    a live one is back after a round trip, not the next round).
    """

    def __init__(self, backends: Iterable[Backend], algorithm: str = "round-robin", down_after: int = 2,
                 up_after: int = 1, suspect_after: int = 3) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}")
        self.backends = list(backends)
        self.algorithm = algorithm
        self.down_after = down_after
        self.up_after = up_after
        self.suspect_after = suspect_after
        self._rr = itertools.count()
        self._weighted = [b for b in self.backends for _ in range(max(b.weight, 0))]
        self.on_suspect: Callable[[Backend], None] = lambda backend: None
        self._export(())

    def __bool__(self) -> bool:
        return bool(self.backends)

    def replace(self, backends: Iterable[Backend], algorithm: str) -> None:
        """A reload (SIGHUP): backends kept by URI keep their health and calls in
        flight (and take the new weight); new ones start UP like at startup."""
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}")
        known = {b.uri: b for b in self.backends}
        fresh = []
        for new in backends:
            old = known.get(new.uri)
            if old is not None:
                old.weight = new.weight
                fresh.append(old)
            else:
                fresh.append(new)
        dropped = known.keys() - {b.uri for b in fresh}
        self.backends = fresh
        self.algorithm = algorithm
        self._weighted = [b for b in self.backends for _ in range(max(b.weight, 0))]
        self._export(dropped)

    def _export(self, dropped: Iterable[str]) -> None:
        """Every backend's health on /metrics from the start; a removed one leaves it."""
        for uri in dropped:
            BACKEND_UP.remove(uri)
        for backend in self.backends:
            BACKEND_UP.labels(backend.uri).set(1 if backend.health is Health.UP else 0)

    def candidates(self, exclude: set[str] | frozenset[str] = frozenset()) -> list[Backend]:
        """The UP backends not yet tried (failover); when there is none, the PROBING ones. A
        backend only suspected (a probe or a few calls left unanswered, as under load) still
        takes calls rather than every call getting 503; a DOWN one (`down_after` probes) never."""
        return ([b for b in self.backends if b.usable and b.uri not in exclude]
                or [b for b in self.backends if b.suspect and b.uri not in exclude])

    def select(self, req: Request, exclude: set[str] | frozenset[str] = frozenset()) -> Backend | None:
        """The backend for this request among the candidates."""
        usable = self.candidates(exclude)
        if not usable:
            return None
        algorithm = self.algorithm
        if algorithm == "round-robin":
            return usable[next(self._rr) % len(usable)]
        if algorithm == "weighted":
            pool = [b for b in self._weighted if b in usable] or usable
            return pool[next(self._rr) % len(pool)]
        if algorithm == "least-busy":
            return min(usable, key=lambda b: (b.calls, self.backends.index(b)))
        key = req.call_id if algorithm == "hash-callid" else unescape(req.from_.uri.user or "")
        # hash over all backends, then walk to the next usable: a backend going
        # down moves only its own share of calls
        start = zlib.crc32(key.encode("utf-8", "surrogateescape")) % len(self.backends)
        for i in range(len(self.backends)):
            candidate = self.backends[(start + i) % len(self.backends)]
            if candidate in usable:
                return candidate
        return None

    def probe_result(self, backend: Backend, ok: bool) -> None:
        if ok:
            backend.failures = 0
            backend.successes += 1
            if backend.health is not Health.UP and backend.successes >= self.up_after:
                _set_health(backend, Health.UP, "probe answered")
        else:
            backend.successes = 0
            backend.failures += 1
            if backend.failures >= self.down_after:
                _set_health(backend, Health.DOWN, f"{backend.failures} probes unanswered")
            elif backend.health is Health.UP:
                _set_health(backend, Health.PROBING, "probe unanswered")

    def call_failed(self, backend: Backend) -> None:
        """A call timed out on it: after `suspect_after` in a row, it is PROBING until a probe says it is back."""
        if backend.health is not Health.UP:
            return  # out of rotation already: the calls it still had in flight say nothing new
        backend.timeouts += 1
        if backend.timeouts >= self.suspect_after:
            backend.successes = 0
            _set_health(backend, Health.PROBING, f"{self.suspect_after} calls in a row unanswered")
            self.on_suspect(backend)

    def call_answered(self, backend: Backend) -> None:
        backend.timeouts = 0

    def find(self, uri: str) -> Backend | None:
        return next((b for b in self.backends if b.uri == uri), None)
