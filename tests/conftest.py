"""Shared fixtures: every test gets its own temporary store.

``REELRANK_TEST_STORE=postgresql`` gives each test a throwaway PostgreSQL database instead of a
SQLite file (tests/pg.py), to run any test that takes ``store`` on that backend.
"""

from __future__ import annotations

import os

import pytest

from reelrank.store import open_store


@pytest.fixture
def store(tmp_path):
    if os.environ.get("REELRANK_TEST_STORE") == "postgresql":
        from tests.pg import throwaway_database

        with throwaway_database() as url:
            s = open_store(url)
            yield s
            s.close()
        return
    s = open_store(tmp_path / "data")
    yield s
    s.close()
