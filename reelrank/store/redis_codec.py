"""The parts of the Redis live state (``store/redis_live.py``) that are not the state itself:
the viewer's state as MessagePack, item counters from a script's reply, the live-state URL, the
read cache each process keeps of item-level values, the readers of keys and top lists, an
event's fold (the in-memory backend's code) and the swap of a rebuilt state's keys.
"""

from __future__ import annotations

import itertools
import json
import operator
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import fields
from typing import Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import msgpack

from reelrank.store.live import CatalogView, HistoryEntry, ItemStats, UserState
from reelrank.store.memory import MemoryLiveState
from reelrank.types import HOUR_MS, Event, Token

DEFAULT_PREFIX = "reelrank:"
_ENTRY_TYPES = {"history": HistoryEntry, "tokens": Token}
# One C call per entry (a history holds 200, the tokens 100; encoding is most of an event's cost).
_ENTRY_ROWS = {name: operator.attrgetter(*(f.name for f in fields(cls)))
               for name, cls in _ENTRY_TYPES.items()}
BATCH = 2000  # commands per pipeline in bulk writes and reads


# -- the viewer's state as MessagePack (never pickle: whoever can write to Redis could run code) --
# Every event a process folds in reads and writes its viewer's whole state (some 15 KB at the
# bounds): MessagePack packs it about four times as fast as JSON and parses it three times as
# fast, in a third less space (benchmarks/results/scaleout-msgpack.md). States written as JSON
# by an older build still read: a MessagePack map never starts with "{".
def encode_user(u: UserState) -> bytes:
    out: dict = {}
    for f in fields(UserState):
        name = f.name
        if name in ("user_id", "served"):  # the id is in the key; what feeds sent has its own
            continue
        value = getattr(u, name)
        if isinstance(value, (deque, tuple)):
            row = _ENTRY_ROWS.get(name)
            out[name] = list(map(row, value)) if row else list(value)
        elif isinstance(value, dict):  # Counter and plain dicts: pairs keep int keys ints
            out[name] = list(value.items())
        elif isinstance(value, set):
            out[name] = list(value)
        elif value is None or isinstance(value, (int, float, str)):
            out[name] = value
        else:  # a new field of a kind this encoding does not know must not be dropped silently
            raise TypeError(f"UserState.{name}: cannot encode {type(value).__name__}")
    return msgpack.packb(out, use_bin_type=True)


def decode_user(user_id: str, text: str | bytes) -> UserState:
    if isinstance(text, str) or text[:1] == b"{":
        fields_of = json.loads(text)
    else:
        fields_of = msgpack.unpackb(text, raw=False)
    u = UserState(user_id)
    u.grow()
    for name, value in fields_of.items():
        current = getattr(u, name)
        if isinstance(current, deque):
            cls = _ENTRY_TYPES.get(name)
            current.extend(cls(*row) for row in value) if cls else current.extend(value)
        elif isinstance(current, Counter):
            setattr(u, name, Counter(dict(map(tuple, value))))
        elif isinstance(current, dict):
            setattr(u, name, dict(map(tuple, value)))
        elif isinstance(current, set):
            setattr(u, name, set(value))
        else:
            setattr(u, name, value)
    return u


# The outbox batches a viewer's writes folded in (``RedisLiveState.apply_many``), in the
# viewer's hash ("b"). A mark matters while its batch may still be folded in again: while it is
# pending in the store's outbox. Marks of batches below ``floor`` (the oldest pending batch, as
# the catch-up saw it a while ago: ``Engine.catch_up_live``) are dropped; MARKS_KEPT bounds the
# rest for a viewer in every batch.
MARKS_KEPT = 512


def has_mark(marks: bytes | str | None, batch: int) -> bool:
    if not marks:
        return False
    text = marks.decode() if isinstance(marks, bytes) else marks
    return str(batch) in text.split(",")


def with_mark(marks: bytes | str | None, batch: int, floor: int = 0) -> str:
    text = marks.decode() if isinstance(marks, bytes) else (marks or "")
    kept = [m for m in text.split(",") if m and int(m) >= floor][-(MARKS_KEPT - 1):]
    return ",".join([*kept, str(batch)])


def stats_from_row(row: list) -> ItemStats:
    """Counters from the ITEM_STATS script's seven values (empty where none)."""
    im, vw, lv, lk, sh, ng, wr = row
    return ItemStats(int(im or 0), int(vw or 0), int(lv or 0), int(lk or 0), int(sh or 0),
                     int(ng or 0), float(wr or 0.0))


def parse_live_url(url: str) -> tuple[str, str]:
    """``redis://host:port/db?prefix=x:`` -> (the URL for redis-py, the key prefix)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    prefix = query.pop("prefix", [DEFAULT_PREFIX])[0]
    rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
    return urlunsplit(parts._replace(query=rest)), prefix


class ReadCache:
    """Values fetched from Redis, trusted until this process marks them dirty (its own writes,
    or ``mark`` when the fan-out says another process changed them) or ``max_age`` seconds
    after they were fetched. A read that finds a value stale or missing fetches, in the same
    call, every dirty value, the oldest expired ones and, while ``warm`` (keys to read ahead,
    likeliest last) has more, keys never read: a feed that reads hundreds of values one at a
    time (the heuristic scorer, the exploration pool) makes one call, not one per value. With
    ``along=False`` (large values) only the stale values asked for are fetched. ``before``
    runs before each fetch (the live state's flush of the writes it holds back)."""

    def __init__(self, fetch: Callable[[list[str]], list], max_age: float,
                 max_size: int = 200_000, warm: Callable[[], list] | None = None,
                 along: bool = True, before: Callable[[], None] | None = None) -> None:
        self._fetch = fetch
        self._before = before
        self._along = along  # False for large values: fetch only what is asked
        self.max_age = max_age
        self.max_size = max_size
        self._values: OrderedDict = OrderedDict()  # key -> (value, fetched at), oldest first
        self._dirty: set = set()
        self._warm = warm
        self._ahead: list | None = None
        self._lock = threading.Lock()

    def mark(self, keys: Iterable) -> None:
        with self._lock:
            self._dirty.update(k for k in keys if k in self._values)

    def clear(self) -> None:
        with self._lock:
            self._values, self._dirty, self._ahead = OrderedDict(), set(), None

    def get_many(self, keys: list) -> list:
        now = time.monotonic()
        with self._lock:
            values, dirty, max_age = self._values, self._dirty, self.max_age
            stale = [k for k in keys
                     if k not in values or k in dirty or now - values[k][1] >= max_age]
            if not stale:
                return [values[k][0] for k in keys]
            wanted = dict.fromkeys(stale)
            if self._along:
                wanted.update(dict.fromkeys(itertools.islice(dirty, BATCH)))
                for k, (_, at) in values.items():  # the oldest first
                    if len(wanted) >= 2 * BATCH or now - at < max_age:
                        break
                    wanted[k] = None
            if self._warm is not None and any(k not in values for k in stale):
                if self._ahead is None:
                    self._ahead = list(self._warm())
                while self._ahead and len(wanted) < 3 * BATCH:
                    k = self._ahead.pop()
                    if k not in values:
                        wanted[k] = None
            order = list(wanted)
            # Marked again while the fetch runs: still dirty afterwards.
            dirty.difference_update(order)
        try:
            if self._before is not None:
                self._before()
            got = dict(zip(order, self._fetch(order)))
        except BaseException:
            with self._lock:
                self._dirty.update(k for k in order if k in self._values)
            raise
        now = time.monotonic()
        with self._lock:
            for k, v in got.items():
                values[k] = (v, now)
                values.move_to_end(k)
            while len(values) > self.max_size:
                values.popitem(last=False)
        return [got[k] if k in got else values[k][0] for k in keys]


def creators_of(catalog: CatalogView) -> list[str]:
    """Every creator in the catalog, once each (what the creator cache reads ahead)."""
    return list({it.creator_id: None for it in catalog.get_many(catalog.ids()) if it})


def scan_keys(client, prefix: str) -> Iterator[str]:
    """Every key under ``prefix`` (glob characters in it escaped)."""
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    for key in client.scan_iter(match=pattern, count=1000):
        yield key.decode() if isinstance(key, bytes) else key


def read_item_stats(script, p: str, item_ids: list[str]) -> list[ItemStats]:
    """Item counters through the ITEM_STATS script, one call per ``BATCH`` items."""
    out: list[ItemStats] = []
    for k in range(0, len(item_ids), BATCH):
        flat = json.loads(script(args=[p, *item_ids[k:k + BATCH]]))
        out += [stats_from_row(flat[j:j + 7]) for j in range(0, len(flat), 7)]
    return out


def read_co_engaged(script, p: str, item_ids: list[str],
                    size: int) -> list[list[tuple[str, int]]]:
    """The top ``size`` co-engaged items of each, through the CO_ENGAGED script."""
    out: list[list[tuple[str, int]]] = []
    for k in range(0, len(item_ids), BATCH):
        lists = json.loads(script(args=[p, size, *item_ids[k:k + BATCH]]))
        for flat in lists:
            flat = flat or []  # Lua's JSON writes an empty list as {}
            out.append([(flat[j], int(flat[j + 1])) for j in range(0, len(flat), 2)])
    return out


def read_trending(client, p: str, item_ids: list[str]) -> list[float]:
    """Each item's positive engagement in the trending window (one round trip)."""
    return [float(x or 0.0) for x in client.zmscore(p + "trend", item_ids)]


def read_top(client, p: str, key, size: int) -> list[tuple[str, float]]:
    """The top ``size`` of a list ("trending", "popular" or ("region", r)) by score, ties in
    the order the items entered the list (as the in-memory backend's counters keep them).
    Two or three round trips."""
    name = {"trending": "trend", "popular": "pop"}.get(key) or "reg:" + key[1]
    rows = client.zrevrange(p + name, 0, size - 1, withscores=True)
    if len(rows) == size:  # the items tied with the last one may lie beyond it
        rows = client.zrevrangebyscore(p + name, "+inf", rows[-1][1], withscores=True)
    rows = [(m.decode(), s) for m, s in rows if s > 1e-9]
    if not rows:
        return []
    firsts = client.hmget(p + "first:" + name, [m for m, _ in rows])
    order = sorted(range(len(rows)), key=lambda k: (-rows[k][1], int(firsts[k] or 0)))
    return [rows[k] for k in order[:size]]


def fold_event(scratch: MemoryLiveState, state: UserState | None, event: Event,
               interests: bool, window_ms: int) -> tuple[UserState, list, list[str]]:
    """The viewer after the event, the APPLY script's arguments for what the event changed for
    its item (up to the stream payload), and the items whose co-engagement with it grew: as the
    in-memory backend computes them, over ``scratch``, an empty state given this viewer alone."""
    if state is not None:
        scratch.put_user(state)
    scratch.apply(event, interests)
    u = scratch.user(event.user_id)
    item = scratch.catalog.get(event.item_id)
    assert u is not None and item is not None  # the caller checked the item is known
    s = scratch.item_stats(event.item_id)
    likes = -1 if event.type == "unlike" else s.likes
    top = scratch.popular(1)
    weight = top[0][1] if top else 0.0
    region = ""
    if weight > 0 and u.region and scratch.popular_in_region(u.region, 1):
        region = u.region
    co = [other for other, _ in scratch.co_engaged(event.item_id, 1 << 30)]
    return u, [event.item_id, item.creator_id, str(event.ts), s.impressions, s.views,
               s.long_views, likes, s.shares, s.negatives, repr(s.watch_ratio_sum),
               scratch.creator_impressions(item.creator_id), repr(weight), region, window_ms,
               HOUR_MS], co


# A rebuild's scratch prefix left by a process that died this long ago is deleted by the next.
SCRATCH_TTL_S = 3600.0


def open_scratch(client, p: str) -> str:
    """A new scratch prefix for a rebuild of ``p`` (it does not start with ``p``, so scans of
    ``p`` never see it), registered in ``{p}scratch`` so that, should the rebuilding process
    die before its swap, a later rebuild deletes what it wrote (copies of viewers' states)."""
    drop_stale_scratch(client, p)
    q = f"~{uuid.uuid4().hex[:12]}:{p}"
    client.zadd(p + "scratch", {q: time.time()})
    return q


def drop_stale_scratch(client, p: str, older_than_s: float = SCRATCH_TTL_S) -> int:
    """Delete the scratch prefixes of ``p`` opened more than ``older_than_s`` ago; how many."""
    stale = [q.decode() for q in client.zrangebyscore(p + "scratch", "-inf",
                                                       time.time() - older_than_s)]
    for q in stale:
        keys = list(scan_keys(client, q))
        for k in range(0, len(keys), BATCH):
            client.delete(*keys[k:k + BATCH])
        client.zrem(p + "scratch", q)
    return len(stale)


def swap_keys(client, p: str, q: str) -> None:
    """Rename the keys under ``q`` (a rebuilt state) over those under ``p``, keeping what the
    log does not hold: what feeds sent to viewers still present, the feed-only viewers, and the
    fan-out stream with its consumer groups, the registry of scratch prefixes, and the locks
    across processes (the rebuild's own among them)."""
    keep = (p + "s:", p + "feedonly", p + "fo:", p + "stream", p + "scratch", p + "lock:")
    mine = [k for k in scan_keys(client, p) if not k.startswith(keep)]
    theirs = list(scan_keys(client, q))
    new_users = {m.decode() for m in client.smembers(q + "users")}
    pipe = client.pipeline(transaction=True)
    if mine:
        pipe.delete(*mine)
    for k in theirs:
        pipe.rename(k, p + k[len(q):])
    pipe.execute()
    # Viewers with events now are no longer feed-only; served lists of viewers gone go.
    feed_only = {m.decode() for m in client.zrange(p + "feedonly", 0, -1)}
    pipe = client.pipeline(transaction=False)
    back = feed_only & new_users
    if back:
        pipe.zrem(p + "feedonly", *back)
    for k in scan_keys(client, p + "s:"):
        uid = k[len(p) + 2:]
        if uid not in new_users and uid not in feed_only:
            pipe.delete(k)
    pipe.incr(p + "version")
    pipe.zrem(p + "scratch", q)
    pipe.execute()


def cached_top(tops: dict, key, n: int, version: int, refresh_events: int,
               refresh_seconds: float,
               read: Callable[[int], list[tuple[str, float]]]) -> list[tuple[str, float]]:
    """A top list from ``tops`` (key -> (version, made at, size, list)), read again as the
    in-memory backend's lists are ranked again: when the state moved by ``refresh_events`` or
    the list is older than ``refresh_seconds``."""
    cached = tops.get(key)
    if cached is not None and cached[2] >= n:
        made_version, made_at, _, top = cached
        if (made_version == version
                or (version - made_version < refresh_events
                    and time.monotonic() - made_at < refresh_seconds)):
            return top[:n]
    size = max(n, 500)
    top = read(size)
    tops[key] = (version, time.monotonic(), size, top)
    return top[:n]
