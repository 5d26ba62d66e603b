"""Fixtures shared by every test layer."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance_dir() -> pathlib.Path:
    if not (CONFORMANCE / "manifest.tsv").exists():
        pytest.skip(f"conformance corpus not found at {CONFORMANCE}")
    return CONFORMANCE


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server on a free port for the whole session; its URL."""
    from tests.helpers import start_redis

    with start_redis() as url:
        yield url
