"""A two-instance lab in network namespaces this test creates, with a floating address.

    this namespace (SIPp, Redis, the test)          namespace <tag>a          namespace <tag>b
    198.18.N.1 (clients), 198.18.N.5 (backends)  ── veth ── 198.18.1.2 + VIP   ── veth ── 198.18.2.2 + VIP
    route VIP/32 via the active instance's end

Each instance holds the VIP on its loopback (as keepalived would add it) and
listens on it and on its own address; the host route is the switch the test
flips when the active instance dies, as a router follows a VRRP or BGP
announcement. 198.18.0.0/15 is the benchmarking range (RFC 2544): it clashes
with no real network. Deleting the namespaces removes every link and route.
"""

from __future__ import annotations

import os
import subprocess
from typing import Self

import pytest

VIP = "198.18.0.10"
CLIENT = "198.18.1.1"  # phones and SIPp callers
BACKEND = "198.18.1.5"  # Asterisk stand-ins and trusted checkers


def ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


class Lab:
    """Namespaces `<tag>a` and `<tag>b`, instance i at 198.18.{i+1}.2."""

    def __init__(self) -> None:
        self.tag = f"ep{os.getpid() % 100000}"
        self.names = [self.tag + "a", self.tag + "b"]
        self.active = 0

    def address(self, i: int) -> str:
        return f"198.18.{i + 1}.2"

    def gateway(self, i: int) -> str:
        return f"198.18.{i + 1}.1"

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[i]]

    def __enter__(self) -> Self:
        try:
            ip("netns", "add", self.names[0])
        except RuntimeError as err:
            pytest.skip(f"network namespaces unavailable here (needs CAP_NET_ADMIN): {err}")
        try:
            ip("netns", "add", self.names[1])
            for i, ns in enumerate(self.names):
                outer, inner = f"{ns}0", f"{ns}1"
                ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
                ip("addr", "add", f"{self.gateway(i)}/24", "dev", outer)
                ip("link", "set", outer, "up")
                ip("-n", ns, "link", "set", "lo", "up")
                ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", inner)
                ip("-n", ns, "addr", "add", f"{VIP}/32", "dev", "lo")
                ip("-n", ns, "link", "set", inner, "up")
                ip("-n", ns, "route", "add", "default", "via", self.gateway(i))
            ip("addr", "add", f"{BACKEND}/24", "dev", f"{self.names[0]}0")
            ip("route", "add", f"{VIP}/32", "via", self.address(0))
        except BaseException:
            self.__exit__()
            raise
        return self

    def fail_over(self, to: int) -> None:
        """The floating address now leads to instance `to`."""
        ip("route", "replace", f"{VIP}/32", "via", self.address(to))
        self.active = to

    def __exit__(self, *exc: object) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
