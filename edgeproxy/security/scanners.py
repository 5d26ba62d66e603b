"""Recognising SIP scanners by their User-Agent (SIPVicious and its kin)."""

from __future__ import annotations

import functools

# Substrings, matched case-insensitively, of User-Agents only attack tools send.
DEFAULT_SCANNERS = ("friendly-scanner", "sipvicious", "sipcli", "vaxsipuseragent", "sundayddr", "iwar",
                    "sip-scan", "sivus", "smap", "pplsip", "voipsipsdk", "scanner")


class ScannerMatcher:
    def __init__(self, patterns: list[str] | tuple[str, ...]) -> None:
        self.patterns = tuple(p.lower() for p in patterns)
        self.matches = functools.lru_cache(maxsize=1024)(self._matches)

    def _matches(self, user_agent: str) -> bool:
        agent = user_agent.lower()
        return any(p in agent for p in self.patterns)
