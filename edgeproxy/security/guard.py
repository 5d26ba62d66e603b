"""The edge's defences, asked by the instance for every message: bans,
flood limits (like Kamailio's pike), failed-authentication tracking (like
fail2ban) and scanner User-Agents. Sans-IO: the caller brings the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from edgeproxy.state.bans import BanList

from .ratelimit import WindowCounter
from .scanners import ScannerMatcher

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class GuardPolicy:
    rate_limit: int = 0  # messages per source address per window; 0: off
    rate_window: float = 2.0
    auth_fail_limit: int = 0  # failed digests per source address per window; 0: off
    auth_fail_user_limit: int = 0  # failed digests for one user (any source) per window; 0: off
    auth_fail_window: float = 60.0
    ban_time: float = 300.0
    scanner_action: str = "off"  # off | drop | 403
    scanner_user_agents: tuple[str, ...] = ()
    max_tracked: int = 100_000


class Guard:
    def __init__(self, policy: GuardPolicy, bans: BanList, is_trusted: Callable[[str], bool],
                 clock: Callable[[], float]) -> None:
        self.policy = policy
        self.bans = bans
        self.is_trusted = is_trusted
        self.clock = clock
        n = policy.max_tracked
        self._flood = WindowCounter(policy.rate_limit, policy.rate_window, n) if policy.rate_limit else None
        self._ip_fails = WindowCounter(policy.auth_fail_limit, policy.auth_fail_window, n) \
            if policy.auth_fail_limit else None
        self._user_fails = WindowCounter(policy.auth_fail_user_limit, policy.auth_fail_window, n) \
            if policy.auth_fail_user_limit else None
        self.scanners = ScannerMatcher(policy.scanner_user_agents) if policy.scanner_action != "off" else None

    def admit(self, ip: str) -> bool:
        """Before parsing: False drops the message (a banned or flooding source)."""
        if self.bans.banned("ip:" + ip):
            return self.is_trusted(ip)
        if self._flood is not None and self._flood.hit(ip, self.clock()) and not self.is_trusted(ip):
            self.bans.ban("ip:" + ip, self.policy.ban_time, "flood")
            return False
        return True

    def scanner(self, user_agent: str | None) -> str | None:
        """The configured action ("drop" or "403") for a scanner's request, else None."""
        if self.scanners is None or not user_agent or not self.scanners.matches(user_agent):
            return None
        return self.policy.scanner_action

    # -- the authenticator's hooks ----------------------------------------------------
    def locked(self, user: str) -> bool:
        """A user under a brute-force ban: every attempt fails, right password or not."""
        return self.bans.banned("user:" + user)

    def auth_failed(self, user: str, ip: str) -> None:
        now = self.clock()
        if self._ip_fails is not None and ip and self._ip_fails.hit(ip, now) and not self.is_trusted(ip):
            self.bans.ban("ip:" + ip, self.policy.ban_time, "failed authentication")
        if self._user_fails is not None and self._user_fails.hit(user, now):
            self.bans.ban("user:" + user, self.policy.ban_time, "failed authentication")
