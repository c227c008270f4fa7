"""A throwaway PostgreSQL database per test, on the server that runs on loopback.

Where: ``REELRANK_TEST_PG_URL`` (a URL to a maintenance database such as ``postgres``, for a role
allowed to create databases), else the ``reelrank_test`` role on 127.0.0.1:5432. When that role
is missing and the tests run as root, it is created through the ``postgres`` system account
(``runuser`` or ``sudo``), idempotently: that is all a fresh CI machine needs.

No server: the tests skip saying why, unless ``CI`` is set, where they fail, so that CI can never
pass by skipping the backend.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

ROLE = "reelrank_test"
# A test-only credential for a role that can create databases on a loopback server, nothing more.
DEFAULT_URL = f"postgresql://{ROLE}:{ROLE}@127.0.0.1:5432/postgres"

_ROLE_SQL = f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
    CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{ROLE}';
  ELSE  -- made earlier by hand, perhaps without login or with another password
    ALTER ROLE {ROLE} LOGIN CREATEDB PASSWORD '{ROLE}';
  END IF;
END
$$;
"""

_checked: dict[str, str | None] = {}


def admin_url() -> str:
    return os.environ.get("REELRANK_TEST_PG_URL") or DEFAULT_URL


def _connect(url: str):
    import psycopg

    return psycopg.connect(url, connect_timeout=3, autocommit=True)


def _create_role() -> str | None:
    """Create the test role as the postgres system account; None on success, else why not."""
    if os.geteuid() != 0:
        return "not root, so the test role cannot be created"
    psql = shutil.which("psql")
    if psql is None:
        return "psql is not installed"
    if shutil.which("runuser"):
        prefix = ["runuser", "-u", "postgres", "--"]
    elif shutil.which("sudo"):
        prefix = ["sudo", "-u", "postgres"]
    else:
        return "neither runuser nor sudo can act as postgres"
    # Over the local socket as the superuser (peer or trust auth), which needs no password.
    done = subprocess.run([*prefix, psql, "-v", "ON_ERROR_STOP=1", "-q", "-c", _ROLE_SQL],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return f"creating role {ROLE} failed: {done.stderr.strip()}"
    return None


def _problem(url: str) -> str | None:
    """Why no test database can be made through ``url``, or None when it can."""
    if url in _checked:
        return _checked[url]
    try:
        import psycopg
    except ImportError:
        _checked[url] = "psycopg is not installed"
        return _checked[url]
    try:
        _connect(url).close()
        why = None
    except psycopg.OperationalError as exc:
        why = str(exc).strip()
        # A server that answers but does not know the role (or its password): make the role
        # when the URL is ours, then try again.
        if url == DEFAULT_URL and ("authentication" in why or "does not exist" in why):
            failed = _create_role()
            if failed is None:
                try:
                    _connect(url).close()
                    why = None
                except psycopg.OperationalError as again:
                    why = str(again).strip()
            else:
                why = f"{why} ({failed})"
    _checked[url] = why
    return why


def require_server() -> str:
    """The admin URL, or skip (fail under CI) when no server can be reached through it."""
    url = admin_url()
    why = _problem(url)
    if why is not None:
        skip_or_fail(f"PostgreSQL is not reachable at {_redacted(url)}: {why}. Set "
                     "REELRANK_TEST_PG_URL to a server's maintenance database to run these tests")
    return url


def skip_or_fail(message: str) -> None:
    """A backend's server is missing: the test skips, saying why, except under CI (``CI`` set),
    where it fails, so that CI never passes by skipping a backend."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set and {message}", pytrace=False)
    pytest.skip(message)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def database_url(admin: str, name: str) -> str:
    return urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """A new empty database (unique name) for one test, dropped afterwards; yields its URL."""
    admin = require_server()
    name = f"reelrank_test_{uuid.uuid4().hex[:12]}"
    with _connect(admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(admin, name)
    finally:
        with _connect(admin) as conn:
            # FORCE: a connection a failed test left open must not keep the database alive.
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
