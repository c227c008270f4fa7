"""Fixtures shared by the HTTP tests: the service keys of a fresh store."""

from __future__ import annotations

import json

import pytest

from reelrank.service import ensure_service_keys


@pytest.fixture
def keys(store, tmp_path) -> dict[str, str]:
    """One token per service scope (ingest, serve, admin), as a first start generates them."""
    return json.loads(ensure_service_keys(store, tmp_path / "keys").read_text())
