"""What the real-client tests share: alice and bob, with passwords (a lab users file)."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture
def users(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "users.toml"
    path.write_text('[users]\nalice = { password = "alice-secret" }\nbob = { password = "bob-secret" }\n')
    return path
