"""Shared fixtures: every test gets its own temporary store."""

from __future__ import annotations

import pytest

from reelrank.store import open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "data")
    yield s
    s.close()
