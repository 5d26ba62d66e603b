"""Credentials for digest authentication: HA1 values, never passwords."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from edgeproxy.config import read_toml


@dataclass(frozen=True, slots=True)
class Credentials:
    ha1_md5: str | None = None
    ha1_sha256: str | None = None

    def ha1(self, algorithm: str) -> str | None:
        return self.ha1_sha256 if algorithm == "SHA-256" else self.ha1_md5


def ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    digest = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    return digest(f"{username}:{realm}:{password}".encode()).hexdigest()


def credentials_for_password(username: str, realm: str, password: str) -> Credentials:
    return Credentials(ha1(username, realm, password, "MD5"), ha1(username, realm, password, "SHA-256"))


class UserStore(Protocol):
    async def get(self, username: str) -> Credentials | None: ...

    async def close(self) -> None: ...


class MemoryUserStore:
    def __init__(self, users: dict[str, Credentials] | None = None) -> None:
        self.users = users or {}

    async def get(self, username: str) -> Credentials | None:
        return self.users.get(username)

    async def close(self) -> None:
        return None


class UsersFileError(Exception):
    """A users file entry is unusable; the message names it."""


def load_users_file(path: str, realm: str) -> dict[str, Credentials]:
    """`[users]` table: `name = { ha1_md5 = "…", ha1_sha256 = "…" }` or, for labs, `{ password = "…" }`."""
    table = read_toml(path, UsersFileError).get("users")
    if not isinstance(table, dict):
        raise UsersFileError(f"{path}: expected a [users] table")
    return {name: _entry(path, name, realm, value) for name, value in table.items()}


def _entry(path: str, name: str, realm: str, value: Any) -> Credentials:
    where = f"{path}: users.{name}"
    if not isinstance(value, dict):
        raise UsersFileError(f"{where}: expected {{ ha1_md5 = …, ha1_sha256 = … }} or {{ password = … }}")
    unknown = set(value) - {"ha1_md5", "ha1_sha256", "password"}
    if unknown:
        raise UsersFileError(f"{where}.{min(unknown)}: unknown key")
    if "password" in value:
        if not isinstance(value["password"], str):
            raise UsersFileError(f"{where}.password: expected a string")
        return credentials_for_password(name, realm, value["password"])
    md5, sha = value.get("ha1_md5"), value.get("ha1_sha256")
    for key, digest, size in (("ha1_md5", md5, 32), ("ha1_sha256", sha, 64)):
        if digest is not None and (not isinstance(digest, str) or len(digest) != size
                                   or digest.strip("0123456789abcdefABCDEF")):
            raise UsersFileError(f"{where}.{key}: expected {size} hex digits")
    if md5 is None and sha is None:
        raise UsersFileError(f"{where}: needs ha1_md5 and/or ha1_sha256")
    return Credentials(md5.lower() if md5 else None, sha.lower() if sha else None)
