"""Live state in Redis: the ``LiveState`` of ``store/live.py`` shared by several API processes.

Chosen by ``new_live_state(catalog, url="redis://host:6379/0?prefix=rr:")``. Every key starts with
the deployment's prefix (``reelrank:`` by default). Per viewer: ``{p}u:{user}`` (a hash: the state
as MessagePack, and a random token of its last write for optimistic concurrency) and
``{p}s:{user}`` (what feeds sent, in order), and the id is a member of ``{p}users`` or
``{p}feedonly``; ``forget_user`` removes all four, and with a fan-out the viewer's messages in the
stream. Item-level keys (counters, top lists, co-engagement) hold item ids only; the aggregates an
erased viewer fed are recomputed by the rebuild after an erasure. docs/operations.md lists them.

How an event is folded is the in-memory backend's own code: ``apply`` reads the viewer (one
round trip), folds the event with ``MemoryLiveState`` over a one-viewer scratch state, and
writes the viewer with everything the event changed for the item in one Lua script (one round
trip), which refuses the write if the viewer changed meanwhile (the fold then runs again).
``apply_many`` does the same for a batch in two round trips in all.

Feed-path reads cost few round trips (``user_snapshot``): item counters and trending counts,
creator impressions and co-engagement lists are cached in the process, refetched when this
process changed them, when ``invalidate`` says another did (``store/fanout.py``), or every
``stats_max_age_s``; top lists as the in-memory backend caches them. Viewer state is never
cached: the next feed from any process sees the last accepted event. ``empty_like``: a
write-behind state in a scratch namespace (rebuilds), whose keys ``replace_with`` renames over
this state's.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import OrderedDict
from typing import Iterable

import redis

from reelrank.store.fanout import Fanout
from reelrank.store.live import Catalog, ItemStats, UserState
from reelrank.store.memory import MemoryLiveState
from reelrank.store.redis_codec import (BATCH, DEFAULT_PREFIX, ReadCache, cached_top,
                                        creators_of, decode_user, encode_user, fold_event,
                                        has_mark, open_scratch, parse_live_url,
                                        read_co_engaged, read_item_stats, read_top,
                                        read_trending, scan_keys, swap_keys, with_mark)
from reelrank.store.redis_lua import (APPLY, CO_ENGAGED, FORGET_USER, ITEM_STATS, PUT_USER,
                                     RECORD_SERVED)
from reelrank.types import DAY_MS, HOUR_MS, Event

__all__ = ["DEFAULT_PREFIX", "RedisLiveState", "decode_user", "encode_user", "parse_live_url"]
_OPTIONS = ("trending_window_ms", "co_engagement_span", "served_memory", "trending_refresh_events",
            "trending_refresh_seconds", "background_refresh", "max_feed_only_viewers",
            "co_engagement", "stats_max_age_s", "meta_max_age_s")


class RedisLiveState:
    """Per-viewer and per-item state in Redis (see the module's docstring)."""
    viewers_evicted = 0  # every viewer stays in Redis: none is let go from memory here

    def __init__(self, catalog: Catalog, client, *, prefix: str = DEFAULT_PREFIX,
                 trending_window_ms: int = DAY_MS, co_engagement_span: int = 10,
                 served_memory: int = 500, trending_refresh_events: int = 1000,
                 trending_refresh_seconds: float = 2.0, background_refresh: bool = False,
                 max_feed_only_viewers: int = 10_000, co_engagement: bool = True,
                 stats_max_age_s: float = 2.0, meta_max_age_s: float = 0.05,
                 fanout: Fanout | None = None, write_behind: bool = False) -> None:
        self.catalog = catalog
        self.client = client
        self.prefix = prefix
        self.trending_window_ms = trending_window_ms
        self.co_engagement_span = co_engagement_span
        self.served_memory = served_memory
        self.trending_refresh_events = trending_refresh_events
        self.trending_refresh_seconds = trending_refresh_seconds
        # Accepted as the in-memory backend's: a stale list is read here (ms, not a ranking).
        self.background_refresh = background_refresh
        self.max_feed_only_viewers = max_feed_only_viewers
        self.co_engagement = co_engagement
        self.stats_max_age_s = stats_max_age_s
        self.meta_max_age_s = meta_max_age_s
        # The stream every applied event is added to, in the same script, and that erasures and
        # resets are announced on (store/fanout.py).
        self.fanout = fanout
        self._apply = client.register_script(APPLY)
        self._record = client.register_script(RECORD_SERVED)
        self._put = client.register_script(PUT_USER)
        self._forget = client.register_script(FORGET_USER)
        self._item_stats = client.register_script(ITEM_STATS)
        self._co_script = client.register_script(CO_ENGAGED)
        # Pipelines call the apply script by its digest: redis-py's script objects would ask
        # Redis whether the script exists before every pipeline, one more round trip each.
        self._load_scripts()
        self._meta = (0, 0, float("-inf"))  # version, clock, when read
        flush = self.flush  # a cache's fetch first writes what this process holds back
        self._stats = ReadCache(lambda ids: read_item_stats(self._item_stats, prefix, ids),
                                stats_max_age_s, warm=catalog.ids, before=flush)
        self._creators = ReadCache(lambda ids: [int(x or 0) for x in client.hmget(prefix + "ci", ids)],
                                   stats_max_age_s, before=flush,
                                   warm=lambda: creators_of(catalog))
        self._co = ReadCache(self._fetch_co, stats_max_age_s, along=False)
        self._trend = ReadCache(lambda ids: read_trending(client, prefix, ids), stats_max_age_s,
                                warm=catalog.ids, before=flush)
        self._co_size = max(50, co_engagement_span * 3)
        self._tops: dict = {}
        self._lock = threading.Lock()
        self.write_behind = write_behind
        self.mark_floor = 0  # outbox marks below it are dropped (redis_codec.with_mark)
        self._pending: dict[str, UserState] = {}  # write-behind: viewers not written yet
        self._pipe = client.pipeline(transaction=False)  # write-behind's queue
        self._queued = 0

    def _load_scripts(self) -> None:
        self._apply.sha = self.client.script_load(APPLY)

    @classmethod
    def from_url(cls, catalog: Catalog, url: str, **options) -> RedisLiveState:
        """``fanout=True`` among the options: announce on the deployment's stream."""
        target, prefix = parse_live_url(url)
        client = redis.Redis.from_url(target)
        if options.get("fanout") is True:
            options["fanout"] = Fanout(client, prefix)
        return cls(catalog, client, prefix=prefix, **options)

    def _options(self) -> dict:  # what empty_like carries over
        return {k: getattr(self, k) for k in _OPTIONS}

    def empty_like(self) -> RedisLiveState:
        """A new, empty, write-behind state in a scratch namespace of the same server (its
        prefix does not start with this one's, so scans of this state never see it)."""
        scratch = open_scratch(self.client, self.prefix)
        return RedisLiveState(self.catalog, self.client, prefix=scratch, write_behind=True,
                              **self._options())

    # -- the fold, shared with the in-memory backend ---------------------------------------------
    def _scratch(self) -> MemoryLiveState:
        return MemoryLiveState(self.catalog, **{k: getattr(self, k) for k in _OPTIONS[:3]},
                               co_engagement=self.co_engagement)

    def _fold(self, state: UserState | None, event: Event, interests: bool) -> tuple[UserState, list]:
        """The viewer after the event, and the event's part of the APPLY script's arguments."""
        u, block, co = fold_event(self._scratch(), state, event, interests,
                                  self.trending_window_ms)
        return u, [*block, self._payload(event, co), len(co), *co]

    def _payload(self, event: Event, co: list[str]) -> str:
        if self.fanout is None or self.write_behind:  # a rebuild announces nothing
            return ""
        return self.fanout.event_message(event, co)

    def _stream(self) -> list:
        f = None if self.write_behind else self.fanout
        return ["", 0] if f is None else [f.key, f.maxlen]

    # -- writes ---------------------------------------------------------------------------------
    def apply(self, event: Event, interests: bool = True) -> None:
        """One accepted event (unknown items are ignored, as in memory): ``apply_many``."""
        self.apply_many([event], [interests])

    def apply_many(self, events: Iterable[Event],
                   interests: Iterable[bool] | None = None, batch: int = 0) -> int:
        """Fold events in, in two round trips: all viewers read in one pipeline, then one
        script per viewer (their state after their events, and what each changed for its item),
        refused if another process changed the viewer meanwhile (read and fold again).
        ``batch``: the outbox name of the batch, marked by each viewer's write; a viewer marked
        already is skipped (a batch folded again counts once). Returns the events folded in."""
        flags = interests if interests is not None else itertools.repeat(True)
        pending = [(e, i) for e, i in zip(events, flags)
                   if self.catalog.get(e.item_id) is not None]
        if self.write_behind:
            for e, i in pending:
                self._apply_behind(e, i)
            return len(pending)
        n = len(pending)
        for _ in range(50):
            if not pending:
                return n
            by_user: dict[str, list[tuple[Event, bool]]] = {}
            for e, i in pending:
                by_user.setdefault(e.user_id, []).append((e, i))
            users = list(by_user)
            pipe = self.client.pipeline(transaction=False)
            for uid in users:
                pipe.hmget(self.prefix + "u:" + uid, "v", "s", "b")
            rows = pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            folded = []
            for uid, (token, text, marks) in zip(users, rows):
                if batch and has_mark(marks, batch):
                    n -= len(by_user[uid])  # folded in already, by the process that stored it
                    continue
                state = decode_user(uid, text) if text else None
                blocks: list = []
                touched, creators = [], []
                for e, i in by_user[uid]:
                    state, block = self._fold(state, e, i)
                    blocks += block
                    touched += [e.item_id, *block[17:]]
                    creators.append(block[1])
                assert state is not None
                mark = with_mark(marks, batch, self.mark_floor) if batch else ""
                pipe.evalsha(self._apply.sha, 0, self.prefix, uid, token.decode() if token
                             else "", os.urandom(8).hex(), encode_user(state), *self._stream(),
                             mark, *blocks)
                folded.append((uid, touched, creators))
            try:
                results = pipe.execute()
            except redis.exceptions.NoScriptError:  # Redis restarted: no script ran
                self._load_scripts()
                continue
            retry = []
            for (uid, touched, creators), (applied, version, clock) in zip(folded, results):
                if applied:
                    self._after_write(touched, version, int(clock))
                    self._creators.mark(creators)
                else:
                    retry += by_user[uid]
            pending = retry
        raise RuntimeError("live state kept changing under this batch; events not applied")

    def _apply_behind(self, event: Event, interests: bool) -> None:
        u, block = self._fold(self._pending.get(event.user_id), event, interests)
        self._pending[event.user_id] = u
        self._pipe.evalsha(self._apply.sha, 0, self.prefix, event.user_id, "-", "", "", "", 0,
                           "", *block)
        self._queued += 1
        if self._queued >= BATCH:
            self._pipe.execute()
            self._queued = 0

    def flush(self) -> None:
        """Write what a write-behind state holds (viewers and queued item changes)."""
        if not self.write_behind:
            return
        pipe = self._pipe
        for k, (uid, u) in enumerate(self._pending.items()):
            pipe.hset(self.prefix + "u:" + uid,
                      mapping={"v": os.urandom(8).hex(), "s": encode_user(u)})
            pipe.sadd(self.prefix + "users", uid)
            if k % BATCH == BATCH - 1:
                pipe.execute()
        pipe.execute()
        self._pending, self._queued = {}, 0
        self._meta = (0, 0, float("-inf"))

    def _after_write(self, items: list[str], version: int, clock: int) -> None:
        for cache in (self._stats, self._co, self._trend):
            cache.mark(items)
        if clock // HOUR_MS != self._meta[1] // HOUR_MS:  # an hour may have left the window
            self._trend.clear()
        with self._lock:
            if version > self._meta[0]:
                self._meta = (version, max(clock, self._meta[1]), time.monotonic())

    def invalidate(self, items: Iterable[str] = (), creators: Iterable[str] = (),
                   everything: bool = False) -> None:
        """Another process changed these items' counters, or the whole state (the fan-out)."""
        if everything:
            return self._forget_caches()
        items = list(items)
        for cache in (self._stats, self._co, self._trend):
            cache.mark(items)
        self._creators.mark(creators)
        with self._lock:
            self._meta = (self._meta[0], self._meta[1], float("-inf"))

    def record_served(self, user_id: str, item_ids: list[str]) -> None:
        """One round trip (a script: append, bound, feed-only bookkeeping)."""
        self._record(args=[self.prefix, user_id, self.served_memory,
                           self.max_feed_only_viewers, *item_ids])

    def forget_user(self, user_id: str) -> None:
        """Deletes the viewer's keys; with a fan-out, also their event messages in the stream,
        and tells the other processes (by digest) to drop what they hold of the viewer."""
        self._pending.pop(user_id, None)
        self._forget(args=[self.prefix, user_id])
        if self.fanout is not None and not self.write_behind:
            self.fanout.forget(user_id)
            self.fanout.publish_erase(user_id)

    def put_user(self, state: UserState) -> None:
        served = json.dumps(list(state.served)) if state.served else ""
        self._put(args=[self.prefix, state.user_id, encode_user(state), served,
                        os.urandom(8).hex()])

    def reset_interests(self, user_id: str) -> None:
        """Read, clear with the in-memory backend's code, write back unless the viewer changed
        meanwhile (the APPLY script with no event); with a fan-out, the others are told."""
        if self.fanout is not None and not self.write_behind:
            self.fanout.publish_reset(user_id)
        for _ in range(50):
            token, text = self.client.hmget(self.prefix + "u:" + user_id, "v", "s")
            if not text:
                return
            scratch = self._scratch()
            scratch.put_user(decode_user(user_id, text))
            scratch.reset_interests(user_id)
            cleared = scratch.user(user_id)
            assert cleared is not None
            applied, _, _ = self.client.evalsha(
                self._apply.sha, 0, self.prefix, user_id, token.decode() if token else "",
                os.urandom(8).hex(), encode_user(cleared), "", 0, "")
            if applied:
                return

    def replace_with(self, other: RedisLiveState) -> None:
        """Take over a rebuilt state's keys (renamed over this state's), keeping what feeds
        sent to viewers still present and the feed-only viewers the log does not hold. Not one
        atomic step: a read during the swap can see part of each (as an erasure's rebuild is
        rare and takes a moment, that read is one slightly stale feed)."""
        other.flush()
        swap_keys(self.client, self.prefix, other.prefix)
        self._forget_caches()
        if self.fanout is not None:  # the others' caches hold what was swapped out
            self.fanout.publish("rebuilt")

    def clear(self) -> None:
        """Delete every key of this state's prefix (tests, and ``rebuild-live --flush``)."""
        keys = list(scan_keys(self.client, self.prefix))
        for k in range(0, len(keys), BATCH):
            self.client.delete(*keys[k:k + BATCH])
        self._forget_caches()

    def _forget_caches(self) -> None:
        for cache in (self._stats, self._co, self._creators, self._trend):
            cache.clear()
        with self._lock:
            self._tops = {}
            self._meta = (0, 0, float("-inf"))

    # -- reads ----------------------------------------------------------------------------------
    def _read_meta(self) -> tuple[int, int]:
        version, clock, at = self._meta
        if time.monotonic() - at < self.meta_max_age_s:
            return version, clock
        self.flush()
        v, c = self.client.mget(self.prefix + "version", self.prefix + "clock")
        return self._set_meta(v, c)

    def _set_meta(self, v, c) -> tuple[int, int]:
        with self._lock:
            self._meta = (int(v or 0), int(c or 0), time.monotonic())
            return self._meta[0], self._meta[1]

    @property
    def version(self) -> int:  # read at most every meta_max_age_s; own writes update it at once
        return self._read_meta()[0]

    @property
    def clock(self) -> int:
        return self._read_meta()[1]

    @clock.setter
    def clock(self, value: int) -> None:  # forward only: the newest event time any process saw
        if value > self.clock:
            self.client.set(self.prefix + "clock", int(value))
            self._meta = (self._meta[0], int(value), float("-inf"))

    @property
    def feed_only_evicted(self) -> int:
        return int(self.client.get(self.prefix + "fo:evicted") or 0)

    @feed_only_evicted.setter
    def feed_only_evicted(self, value: int) -> None:
        self.client.set(self.prefix + "fo:evicted", int(value))

    def _read_user(self, user_id: str, *, prefetch: bool) -> UserState | None:
        """One round trip: the viewer, what feeds sent them, whether they are feed-only, and
        the version and clock; a second one when their co-engagement seeds are stale."""
        self.flush()
        p = self.prefix
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(p + "u:" + user_id, "s")
        pipe.zrange(p + "s:" + user_id, 0, -1)
        pipe.zscore(p + "feedonly", user_id)
        pipe.mget(p + "version", p + "clock")
        text, served, feed_only, (v, c) = pipe.execute()
        self._set_meta(v, c)
        if text:
            u = decode_user(user_id, text)
        elif served or feed_only is not None:
            u = UserState(user_id)
        else:
            return None
        u.served = OrderedDict.fromkeys(s.decode() for s in served)
        if prefetch and self.co_engagement and u.positives:
            self._co.get_many(list(u.positives)[-self.co_engagement_span:])
        return u

    def user(self, user_id: str) -> UserState | None:  # a copy: events change it, not edits
        return self._read_user(user_id, prefetch=False)

    def user_snapshot(self, user_id: str) -> UserState | None:
        return self._read_user(user_id, prefetch=True)

    def user_ids(self) -> list[str]:
        self.flush()
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(self.prefix + "users")
        pipe.zrange(self.prefix + "feedonly", 0, -1)
        users, feed_only = pipe.execute()
        return sorted(m.decode() for m in users) + [m.decode() for m in feed_only]

    def viewer_count(self) -> int:
        self.flush()  # two counters in one round trip, never the members
        pipe = self.client.pipeline(transaction=False)
        pipe.scard(self.prefix + "users")
        pipe.zcard(self.prefix + "feedonly")
        return sum(int(n) for n in pipe.execute())

    def feed_only_viewers(self) -> int:
        return int(self.client.zcard(self.prefix + "feedonly"))

    def _fetch_co(self, item_ids: list[str]) -> list[list[tuple[str, int]]]:
        self.flush()
        return read_co_engaged(self._co_script, self.prefix, item_ids, self._co_size)

    def item_stats(self, item_id: str) -> ItemStats:
        return self._stats.get_many([item_id])[0]

    def item_stats_many(self, item_ids: Iterable[str]) -> list[ItemStats]:
        return self._stats.get_many(list(item_ids))

    def creator_impressions(self, creator_id: str) -> int:
        return self._creators.get_many([creator_id])[0]

    def co_engaged(self, item_id: str, n: int) -> list[tuple[str, int]]:
        if n > self._co_size:
            return self._fetch_co([item_id])[0][:n]
        return self._co.get_many([item_id])[0][:n]

    # -- top lists ------------------------------------------------------------------------------
    def trending(self, n: int) -> list[tuple[str, float]]:
        return self._top("trending", n)

    def trending_many(self, item_ids: Iterable[str]) -> list[float]:
        return self._trend.get_many(list(item_ids))

    def popular(self, n: int) -> list[tuple[str, float]]:
        return self._top("popular", n)

    def popular_in_region(self, region: str, n: int) -> list[tuple[str, float]]:
        return self._top(("region", region), n)

    def _top(self, key, n: int) -> list[tuple[str, float]]:
        def read(size: int) -> list[tuple[str, float]]:
            self.flush()
            return read_top(self.client, self.prefix, key, size)

        return cached_top(self._tops, key, n, self.version, self.trending_refresh_events,
                          self.trending_refresh_seconds, read)
