"""The connection table: stream connections by (transport, ip, port), with
per-IP and total caps, so a message to a client that reached us over
TCP/TLS/WS goes back over that same connection."""

from __future__ import annotations

from collections.abc import Callable

from .base import Address, Connection

Key = tuple[str, str, int]


class ConnectionTable:
    def __init__(self, max_total: int, max_per_ip: int) -> None:
        # on_change(key, reachable): a peer became reachable here, or no longer is
        # (sibling workers are told: see transport.workers)
        self.on_change: Callable[[Key, bool], None] | None = None
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._by_key: dict[Key, Connection] = {}
        self._aliases: dict[Key, Key] = {}  # alias → connection key
        self._alias_of: dict[Key, Key] = {}  # connection key → its alias (one each)
        self._per_ip: dict[str, int] = {}
        self._all: set[Connection] = set()

    def __len__(self) -> int:
        return len(self._all)

    def admit(self, ip: str) -> bool:
        """Whether one more connection from this IP fits under the caps."""
        return len(self._all) < self.max_total and self._per_ip.get(ip, 0) < self.max_per_ip

    def add(self, conn: Connection) -> None:
        ip = conn.remote[0]
        self._all.add(conn)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        key = (conn.transport, ip, conn.remote[1])
        self._by_key[key] = conn
        if self.on_change is not None:
            self.on_change(key, True)

    def alias(self, conn: Connection, address: Address) -> None:
        """RFC 5923 style: requests toward `address` may reuse this connection."""
        if conn in self._all:
            alias = (conn.transport, address[0], address[1])
            own = (conn.transport, conn.remote[0], conn.remote[1])
            if alias != own and alias not in self._by_key:
                old = self._alias_of.get(own)
                if old == alias and self._aliases.get(alias) == own:
                    return  # every request on a connection names it again
                if old is not None:
                    self._forget_alias(old, own)
                self._aliases[alias] = own
                self._alias_of[own] = alias
                if self.on_change is not None:
                    self.on_change(alias, True)

    def remove(self, conn: Connection) -> None:
        if conn not in self._all:
            return
        self._all.discard(conn)
        ip = conn.remote[0]
        left = self._per_ip.get(ip, 1) - 1
        if left:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)
        key = (conn.transport, ip, conn.remote[1])
        if self._by_key.get(key) is conn:
            del self._by_key[key]
            if self.on_change is not None:
                self.on_change(key, False)
            alias = self._alias_of.pop(key, None)
            if alias is not None:
                self._forget_alias(alias, key)

    def _forget_alias(self, alias: Key, key: Key) -> None:
        if self._aliases.get(alias) != key:
            return  # another connection has claimed it since
        del self._aliases[alias]
        if self.on_change is not None:
            self.on_change(alias, False)

    def reachable(self) -> list[Key]:
        """Every peer a connection here reaches: by its address or its alias."""
        return [*self._by_key, *self._aliases]

    def find(self, transport: str, address: Address) -> Connection | None:
        key = (transport, address[0], address[1])
        conn = self._by_key.get(key)
        if conn is None and key in self._aliases:
            conn = self._by_key.get(self._aliases[key])
        if conn is not None and conn.closed:
            self.remove(conn)
            return None
        return conn

    def connections(self) -> list[Connection]:
        return list(self._all)
