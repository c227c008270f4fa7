"""Live figures of a running service, for ``GET /v1/stats``.

``LiveStats`` is a step of the engine (every served page, every accepted event, every erasure)
and keeps an ``ExposureLedger`` plus two short wall-clock windows: events accepted (for
events/s) and feed build times (for exact recent latency percentiles). The HTTP-level feed
latency comes from the Prometheus histogram that ``ServiceMetrics`` already keeps, interpolated
within its buckets the way Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque

from reelrank.engine import Engine
from reelrank.exposure import ExposureLedger
from reelrank.pipeline.side_effects import SideEffect
from reelrank.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class LiveStats(SideEffect):
    """A step of the engine (``pipeline/side_effects.py``): every served page, every batch of
    accepted events and every erasure reach it."""

    def __init__(self, engine: Engine, metrics: ServiceMetrics | None = None,
                 ledger: ExposureLedger | None = None, window_s: float = 60.0,
                 latency_window: int = 5_000):
        self.engine = engine
        self.metrics = metrics
        self.ledger = ledger or ExposureLedger()
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()  # (monotonic time, events accepted)
        self._latencies: deque[float] = deque(maxlen=latency_window)  # pipeline ms
        self._lock = threading.Lock()
        self.started = time.monotonic()
        engine.effects.add(self)

    def __repr__(self) -> str:
        return "LiveStats()"

    def on_feed(self, result) -> None:
        self.ledger.observe_feed(result.user_id, result.trace.ts, result.items,
                                 self.engine.catalog)
        with self._lock:
            self._latencies.append(result.trace.elapsed_ms)

    def on_events(self, events) -> None:
        if not events:
            return
        self.ledger.observe_events(events, self.engine.catalog)
        now = time.monotonic()
        with self._lock:
            self._events.append((now, len(events)))
            while self._events and self._events[0][0] < now - self.window_s:
                self._events.popleft()

    def on_erase(self, user_id: str) -> None:
        self.ledger.forget_user(user_id)

    def held_users(self) -> set[str]:
        return self.ledger.viewers()

    def events_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._events and self._events[0][0] < now - self.window_s:
                self._events.popleft()
            n = sum(k for _, k in self._events)
        span = min(self.window_s, max(now - self.started, 1e-3))
        return n / span

    def view(self) -> dict:
        engine = self.engine
        catalog = engine.catalog
        popularity = {i: float(engine.live.item_stats(i).views) for i in catalog.ids()}
        exposure = self.ledger.figures(catalog, popularity)
        over_time = exposure.pop("over_time")
        with self._lock:
            recent = sorted(self._latencies)
        published = engine.serving_meta().get("published_at")
        return {
            "events_per_second": round(self.events_per_second(), 3),
            "events_window_s": self.window_s,
            "feed_latency_ms": {
                "p50": _quantile(recent, 0.50), "p99": _quantile(recent, 0.99),
                "requests": len(recent),
                "measured": "feed pipeline time of the last requests, exact",
            },
            "http_feed_latency_ms": self._http_latency(),
            "model": {
                "version": engine.model_version,
                "published_at": published,
                "age_s": (round(time.time() - published / 1000.0, 1)
                          if isinstance(published, (int, float)) else None),
            },
            "catalog": {"items": len(catalog), "viewers_live": engine.live.viewer_count()},
            "engagement": _engagement(engine),
            "online": _latest(over_time),
            "fairness": {k: _clean(v) for k, v in exposure.items()},
            "over_time": [{k: _clean(v) for k, v in b.items()} for b in over_time],
            "clock_ms": engine.live.clock,
        }

    def _http_latency(self) -> dict | None:
        """p50 / p99 of the feed route's HTTP time, from the Prometheus histogram (all modes,
        since start), interpolated within buckets."""
        if self.metrics is None:
            return None
        buckets: dict[float, float] = {}
        for family in self.metrics.feed_seconds.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
        if not buckets or buckets.get(math.inf, 0.0) == 0:
            return {"p50": None, "p99": None, "requests": 0}
        bounds = sorted(buckets.items())
        return {"p50": _hist_quantile(bounds, 0.50), "p99": _hist_quantile(bounds, 0.99),
                "requests": int(bounds[-1][1]),
                "measured": "HTTP time of GET /v1/feed since start, bucket-interpolated"}


def memory_view(engine: Engine, trainer=None) -> dict:
    """What holds memory, each part with its bound: the feed traces (a byte budget); the live
    state's viewers known only from feeds (a count, the least recently served out first) and
    those with events (a count, the least recently active out first, rebuilt from the log by
    the engine when they return; None where every one is held); the online trainer's budgets
    (viewers, examples kept for late corrections, event ids, rows waiting, from its
    configuration); and the resident memory of this process and of the trainer's
    (``trainer``: the runtime's)."""
    trainer_status = trainer.status() if trainer is not None else None
    trainer_view = None
    if trainer_status is not None:
        trainer_view = {
            "mode": trainer_status.get("mode", "thread"),
            "rows_waiting": trainer_status.get("rows_waiting"),
            "max_rows_waiting": _trainer_queue_bound(),
            "rss_bytes": rss_bytes(trainer_status.get("pid")) if trainer_status.get("pid")
            else None,
            # The child writes its budgets into its status file; None until it has.
            "budgets": trainer_status.get("memory"),
        }
    live = engine.live
    viewers = live.viewer_count()
    feed_only = live.feed_only_viewers()
    return {
        "rss_bytes": rss_bytes(),
        "traces": engine.trace_usage(),
        # Viewers' feed plans (a count, the least recently served out first) and the pages
        # served from them: {"enabled": false} when plans are off.
        "feed_plans": engine.plan_usage(),
        "live_state": {"viewers": viewers, "viewers_with_events": viewers - feed_only,
                       "max_viewers_with_events": getattr(live, "max_viewers", None),
                       "viewers_with_events_evicted": live.viewers_evicted,
                       "viewers_feed_only": feed_only,
                       "max_viewers_feed_only": live.max_feed_only_viewers,
                       "viewers_feed_only_evicted": live.feed_only_evicted},
        "trainer": trainer_view,
    }


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident memory of a process, from /proc (Linux); None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * _PAGE_SIZE


def _trainer_queue_bound() -> int:
    from reelrank.train.learner import OnlineConfig  # only when a trainer runs

    return OnlineConfig().max_queue


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return round(sorted_values[k], 3)


def _hist_quantile(bounds: list[tuple[float, float]], q: float) -> float | None:
    """Cumulative ``(upper bound s, count)`` pairs -> the q-quantile in ms."""
    total = bounds[-1][1]
    target = q * total
    lower, below = 0.0, 0.0
    for upper, count in bounds:
        if count >= target:
            if math.isinf(upper):
                return round(lower * 1000, 3)  # past the last finite bucket: its bound
            inside = count - below
            frac = (target - below) / inside if inside > 0 else 1.0
            return round((lower + (upper - lower) * frac) * 1000, 3)
        lower, below = upper, count
    return None


def _engagement(engine: Engine) -> dict:
    """Engagement over every event the log holds, from the videos' live counters (rebuilt from
    the log at start-up and kept up to date by each accepted event). ``online`` below covers
    only what this process has served since it started, one time bucket of it; these figures
    are the ones that describe the catalog's audience as a whole."""
    imp = views = long_views = likes = shares = negatives = 0
    ratio_sum = 0.0
    for s in engine.live.item_stats_many(engine.catalog.ids()):
        imp += s.impressions
        views += s.views
        long_views += s.long_views
        likes += s.likes
        shares += s.shares
        negatives += s.negatives
        ratio_sum += s.watch_ratio_sum
    # The same definitions as the over-time buckets: view rates per view (play, skip,
    # rewatch), reaction rates per impression.
    return {
        "window": "all events in the log",
        "impressions": imp, "views": views,
        "long_view_rate": _clean(long_views / views) if views else None,
        "mean_watch_ratio": _clean(ratio_sum / views) if views else None,
        "like_rate": _clean(likes / imp) if imp else None,
        "share_rate": _clean(shares / imp) if imp else None,
        "negative_rate": _clean(negatives / imp) if imp else None,
        "through_ms": engine.live.clock,
    }


def _latest(over_time: list[dict]) -> dict | None:
    """The newest bucket with events in it: the online engagement figures."""
    for b in reversed(over_time):
        if b.get("views") or b.get("impressions"):
            return {k: _clean(v) for k, v in b.items()}
    return None


def _clean(value):
    """JSON has no NaN: unknown figures are null."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value
