"""OPTIONS probing of backends (Kamailio dispatcher's ds_ping), sans-IO.

Every `interval` the app calls `round()`: a probe still unanswered from the
previous round counts as a failure, and a new OPTIONS goes to each backend.
`probe_now` probes one backend between rounds (a call just timed out on it).
Any answer below 500 means alive (a 404 to OPTIONS is still an answer).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeproxy.sip import Request, Response
from edgeproxy.sip.ids import new_branch, new_call_id, new_tag

from .backends import Backend, BackendSet


@dataclass(slots=True)
class Probe:
    backend: Backend
    answered: bool = False


class Prober:
    def __init__(self, backends: BackendSet, via_host: str, via_port: int, from_host: str,
                 user_agent: str = "") -> None:
        self.backends = backends
        self.via_host = via_host
        self.via_port = via_port
        self.from_host = from_host
        self.user_agent = user_agent
        self.outstanding: dict[str, Probe] = {}  # backend uri → last probe
        self._cseq = 0

    def round(self) -> list[tuple[Probe, Request]]:
        """Score the last round's silence, and the OPTIONS to send now."""
        for probe in self.outstanding.values():
            if not probe.answered:
                self.backends.probe_result(probe.backend, False)
        self.outstanding = {}
        return [self._probe(backend) for backend in self.backends.backends]

    def probe_now(self, backend: Backend) -> tuple[Probe, Request] | None:
        """A probe for this backend at once, unless one is still waiting for its answer."""
        last = self.outstanding.get(backend.uri)
        if last is not None and not last.answered:
            return None
        return self._probe(backend)

    def _probe(self, backend: Backend) -> tuple[Probe, Request]:
        probe = Probe(backend)
        self.outstanding[backend.uri] = probe
        return probe, self._options(backend)

    def answered(self, probe: Probe, resp: Response) -> None:
        if probe.answered or resp.status < 200:
            return
        probe.answered = True
        self.backends.probe_result(probe.backend, resp.status < 500)

    def timed_out(self, probe: Probe) -> None:
        if not probe.answered:
            probe.answered = True
            self.backends.probe_result(probe.backend, False)

    def _options(self, backend: Backend) -> Request:
        self._cseq = self._cseq % (2**31 - 1) + 1
        host = f"[{self.via_host}]" if ":" in self.via_host else self.via_host
        hop = backend.hop
        return Request.build("OPTIONS", backend.uri, [
            ("Via", f"SIP/2.0/{hop.transport.upper()} {host}:{self.via_port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:dispatcher@{self.from_host}>;tag={new_tag()}"),
            ("To", f"<{backend.uri}>"),
            ("Call-ID", new_call_id()),
            ("CSeq", f"{self._cseq} OPTIONS"),
            *([("User-Agent", self.user_agent)] if self.user_agent else []),
        ])
