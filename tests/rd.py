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


def encodings(value: str) -> dict[str, bytes]:
    """The byte strings an id can leave behind: raw in the common text encodings, escaped as
    JSON and URLs write it, as hex and base64 (at each alignment), and unkeyed digests."""
    import base64
    import hashlib
    import json as json_
    from urllib.parse import quote

    raw = value.encode()
    out = {"utf-8": raw, "utf-16-le": value.encode("utf-16-le"),
           "utf-16-be": value.encode("utf-16-be"), "utf-32-le": value.encode("utf-32-le"),
           "json": json_.dumps(value)[1:-1].encode(), "url": quote(value, safe="").encode(),
           "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode(),
           "sha256": hashlib.sha256(raw).hexdigest().encode(),
           "md5": hashlib.md5(raw).hexdigest().encode()}
    for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        for k in range(3):  # the id at each offset modulo 3 of the encoded bytes
            text = encode(b"\0" * k + raw)
            out[f"{name}+{k}"] = text[(k + 2) // 3 * 4:(k + len(raw)) // 3 * 4]
    return out


def redis_dump(client, prefix: str) -> bytes:
    """Every key under the prefix (and the scratch keys a rebuild makes from it), each with
    its whole value read by type, as one byte string."""
    parts = []
    for key in client.scan_iter(match="*", count=1000):
        if prefix.encode() not in key:
            continue
        kind = client.type(key).decode()
        if kind == "string":
            value = [client.get(key)]
        elif kind == "hash":
            value = [x for kv in client.hgetall(key).items() for x in kv]
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = list(client.smembers(key))
        elif kind == "zset":
            value = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            value = [x for _, fields in client.xrange(key) for kv in fields.items() for x in kv]
        else:
            value = [client.dump(key) or b""]
        parts += [key, *(v for v in value if v is not None)]
    return b"\n".join(parts)
