"""A throwaway Redis key prefix per test, on the server that runs on loopback.

Where: ``REELRANK_TEST_REDIS_URL``, else database 15 of 127.0.0.1:6379 (a database number the
tests alone use). Each test gets its own prefix, and every key under it is deleted afterwards.

No server: the tests skip saying why, unless ``CI`` is set, where they fail, so that CI can never
pass by skipping the backend (as ``tests/pg.py`` does for PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator


from tests.pg import skip_or_fail

DEFAULT_URL = "redis://127.0.0.1:6379/15"
_checked: dict[str, str | None] = {}


def server_url() -> str:
    return os.environ.get("REELRANK_TEST_REDIS_URL") or DEFAULT_URL


def _problem(url: str) -> str | None:
    if url in _checked:
        return _checked[url]
    try:
        import redis
    except ImportError:
        _checked[url] = "redis-py is not installed"
        return _checked[url]
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
        why = None
    except redis.RedisError as exc:
        why = str(exc).strip().rstrip(".") or type(exc).__name__
    _checked[url] = why
    return why


def require_server() -> str:
    """The server's URL, or skip (fail under CI) when it cannot be reached."""
    url = server_url()
    why = _problem(url)
    if why is not None:
        skip_or_fail(f"Redis is not reachable at {url}: {why}. Set REELRANK_TEST_REDIS_URL to "
                     "a server (and database number) to run these tests")
    return url


def keys_under(client, prefix: str) -> list[bytes]:
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    return list(client.scan_iter(match=pattern, count=1000))


@contextlib.contextmanager
def throwaway_prefix() -> Iterator[tuple[str, str]]:
    """(server URL, a new prefix) for one test; every key under the prefix, and under the
    scratch prefixes a rebuild makes from it, is deleted afterwards."""
    import redis

    url = require_server()
    prefix = f"rrtest-{uuid.uuid4().hex[:12]}:"
    try:
        yield url, prefix
    finally:
        client = redis.Redis.from_url(url)
        for pattern in (prefix, "~"):
            keys = [k for k in keys_under(client, pattern) if prefix.encode() in k]
            for k in range(0, len(keys), 1000):
                client.delete(*keys[k:k + 1000])
        client.close()
