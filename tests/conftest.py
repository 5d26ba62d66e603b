"""Fixtures shared by every test layer."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance_dir() -> pathlib.Path:
    if not (CONFORMANCE / "manifest.tsv").exists():
        pytest.skip(f"conformance corpus not found at {CONFORMANCE}")
    return CONFORMANCE
