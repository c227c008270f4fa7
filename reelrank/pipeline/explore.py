"""Exploration: every new video gets a small first audience, and the good ones a larger one.

A candidate source. Each recent upload moves through audience pools of growing size, measured
in impressions (``pools``, e.g. 100, then 1,000, then 10,000). A video starts in pool 0; when it
has used a pool's budget it graduates to the next pool only if its early watch-through is good:
the mean of its Beta posterior on long views per view is at least the ``baseline`` (by default
the pooled rate of all the recent uploads scanned, so "good" means better than its peers of the
same age, on any dataset). A video that fails, or that used the last pool, leaves exploration;
from then on it reaches viewers only through the other sources, on its own merits.

Among the videos still exploring, which ones to show is Thompson sampling: for each, draw a
watch-through rate from its posterior ``Beta(a0 + long views, b0 + views - long views)`` (the
prior centred on the baseline, worth ``prior_strength`` views) and propose the highest draws.
Unseen videos draw widely around the baseline, so they get tried; videos with a good start draw
high often and earn more of the exploration traffic; poor ones fade out.

A creator is new when their first upload is recent (``new_creator_max_age_ms``) and, where a
limit is set, their videos together have had few impressions (``new_creator_max_impressions``).
At least ``new_creator_quota`` of the proposals go to new creators' videos when there are any;
the re-ranker guarantees exploration a share of the page (``DiversityReranker``).

Everything is derived from live state (item counters and the catalog), so it is rebuilt from the
event log like the rest and holds nothing per viewer.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from reelrank.pipeline.context import FeedContext
from reelrank.store.live import CatalogView, ItemStats, LiveState
from reelrank.types import DAY_MS, NEW_CREATOR, NEW_VIDEO, Candidate, Item, Reason

log = logging.getLogger(__name__)

NEW_CREATOR_REASON = Reason(NEW_CREATOR, "a new creator we are trying out")
NEW_VIDEO_REASON = Reason(NEW_VIDEO, "a new video we are trying out")
DEFAULT_BASELINE = 0.3  # when no recent upload has a view yet


@dataclass(frozen=True, slots=True)
class Exploring:
    """Where one video stands in exploration."""

    item_id: str
    pool: int  # index into ``pools``; len(pools) once it has left exploration
    state: str  # "exploring" | "graduated" (used every pool) | "stopped" (did not graduate)
    impressions: int
    views: int
    long_views: int
    posterior_mean: float

    @property
    def exploring(self) -> bool:
        return self.state == "exploring"


@dataclass(frozen=True, slots=True)
class _Pool:
    item_ids: list[str]
    alpha: np.ndarray  # Beta posterior parameters per exploring video
    beta: np.ndarray
    new_creator: np.ndarray  # bool


@dataclass(frozen=True, slots=True)
class _PoolCache:
    key: tuple
    version: int
    made_at: float
    pool: _Pool | None


class ExploreSource:
    name = "explore"
    # Its candidates are drawn anew for every page (Thompson samples): a page cut from a feed
    # plan draws them again rather than reusing the plan's (``FeedPipeline._from_plan``).
    per_page = True

    def __init__(self, pools: tuple[int, ...] = (100, 1_000, 10_000),
                 max_age_ms: int | None = 7 * DAY_MS, max_scan: int = 5_000,
                 prior_strength: float = 4.0, baseline: float | None = None,
                 new_creator_max_age_ms: int | None = 14 * DAY_MS,
                 new_creator_max_impressions: int | None = None,
                 new_creator_quota: float = 0.5, seed: int = 0,
                 refresh_events: int = 5_000, refresh_seconds: float = 10.0,
                 background_refresh: bool = True):
        if not pools or any(b <= a for a, b in zip(pools, pools[1:])) or pools[0] < 1:
            raise ValueError("pools must be increasing impression budgets >= 1")
        if prior_strength <= 0:
            raise ValueError("prior_strength must be > 0")
        self.pools = tuple(pools)
        self.max_age_ms = max_age_ms
        self.max_scan = max_scan
        self.prior_strength = prior_strength
        self.baseline = baseline
        self.new_creator_max_age_ms = new_creator_max_age_ms
        self.new_creator_max_impressions = new_creator_max_impressions
        self.new_creator_quota = new_creator_quota
        self._rng = np.random.default_rng([seed, 0xE])
        self._rng_lock = threading.Lock()
        self._first_upload: dict[str, tuple[int, int]] = {}  # creator -> (n items, first ts)
        self.refresh_events = refresh_events
        self.refresh_seconds = refresh_seconds
        self._cache: _PoolCache | None = None
        self.background_refresh = background_refresh
        self._refreshing = threading.Lock()

    # -- the source -------------------------------------------------------------------------------
    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]:
        return self.generate_pages(ctx, n, 1)[0]

    def generate_pages(self, ctx: FeedContext, n: int, pages: int) -> list[list[Candidate]]:
        """``pages`` independent draws of ``n`` proposals each, as ``pages`` calls of
        ``generate`` would make them, in one pass over the pool (a feed plan draws its next
        pages' exploration together)."""
        pool = self._pool(ctx)
        if pool is None or n <= 0 or pages <= 0:
            return [[] for _ in range(max(pages, 0))]
        with self._rng_lock:
            draws = self._rng.beta(pool.alpha, pool.beta, size=(pages, len(pool.item_ids)))
        return [self._choose(pool, row, n) for row in draws]

    def _choose(self, pool: "_Pool", draws: np.ndarray, n: int) -> list[Candidate]:
        """The highest draws, at least ``new_creator_quota`` of them new creators' videos."""
        order = np.argsort(-draws, kind="stable")
        quota = math.ceil(n * self.new_creator_quota)
        chosen = order[pool.new_creator[order]][:quota]
        rest = order[~np.isin(order, chosen)][: n - len(chosen)]
        chosen = sorted(np.concatenate([chosen, rest]).tolist(), key=lambda k: -draws[k])
        return [Candidate(pool.item_ids[k], self.name, float(draws[k]),
                          (NEW_CREATOR_REASON if pool.new_creator[k] else NEW_VIDEO_REASON,))
                for k in chosen]

    def _pool(self, ctx: FeedContext) -> "_Pool | None":
        """The videos still exploring, with their posteriors, recomputed when live state moved
        by ``refresh_events`` events, the catalog changed, or ``refresh_seconds`` passed:
        scanning thousands of recent uploads on every request would cost more than the rest of
        the feed."""
        key = (len(ctx.catalog), ctx.now // 60_000)
        if self.refresh_events <= 0:  # exact mode (offline evaluation): rescan every request
            return self._compute_pool(ctx, key)
        cached = self._cache
        if cached is not None and cached.key == key:
            moved = ctx.live.version - cached.version
            # Nothing changed, or not much and not for long: the cached pool stands. (Each
            # recomputation scans thousands of uploads and competes with serving for the GIL.)
            if moved == 0 or (moved < self.refresh_events
                              and time.monotonic() - cached.made_at < self.refresh_seconds):
                return cached.pool
        if cached is not None and self.background_refresh:
            # A stale pool is still a fair draw: recompute beside serving, not in this request.
            if self._refreshing.acquire(blocking=False):
                threading.Thread(target=self._refresh_then_release, args=(ctx,),
                                 name="explore-pool", daemon=True).start()
            return cached.pool
        return self._compute_pool(ctx, key)

    def _refresh_then_release(self, ctx: FeedContext) -> None:
        try:
            self._compute_pool(ctx, (len(ctx.catalog), ctx.now // 60_000))
        except Exception:  # the old pool keeps serving; the next request retries
            log.exception("refreshing the exploration pool failed")
        finally:
            self._refreshing.release()

    def _compute_pool(self, ctx: FeedContext, key: tuple) -> "_Pool | None":
        version = ctx.live.version
        recent = self.recent_uploads(ctx.catalog, ctx.now)
        stats = [ctx.live.item_stats(it.item_id) for it in recent]
        baseline = self.cohort_baseline(stats)
        open_ = [(it, s) for it, s in zip(recent, stats)
                 if self.standing(it.item_id, s, baseline).exploring]
        pool = None
        if open_:
            new_memo: dict[str, bool] = {}
            for it, _ in open_:
                if it.creator_id not in new_memo:
                    new_memo[it.creator_id] = self.is_new_creator(ctx.catalog, ctx.live,
                                                                  it.creator_id, ctx.now)
            wins = np.array([s.long_views for _, s in open_], dtype=np.float64)
            losses = np.array([max(0, s.views - s.long_views) for _, s in open_],
                              dtype=np.float64)
            pool = _Pool(
                item_ids=[it.item_id for it, _ in open_],
                alpha=baseline * self.prior_strength + wins,
                beta=(1.0 - baseline) * self.prior_strength + losses,
                new_creator=np.array([new_memo[it.creator_id] for it, _ in open_], dtype=bool))
        self._cache = _PoolCache(key, version, time.monotonic(), pool)
        return pool

    # -- the rules, also used by creator insights and audits ---------------------------------------
    def recent_uploads(self, catalog: CatalogView, now: int) -> list[Item]:
        after = None if self.max_age_ms is None else now - self.max_age_ms
        # Invisible videos stay in: the visibility filter removes them with its reason.
        return catalog.newest(self.max_scan, created_after=after)

    def cohort_baseline(self, stats: list[ItemStats]) -> float:
        """The watch-through a video must reach to graduate: the configured one, else the
        pooled long-view rate of the recent uploads."""
        if self.baseline is not None:
            return self.baseline
        views = sum(s.views for s in stats)
        if views == 0:
            return DEFAULT_BASELINE
        return min(0.95, max(0.05, sum(s.long_views for s in stats) / views))

    def posterior_mean(self, s: ItemStats, baseline: float) -> float:
        return ((baseline * self.prior_strength + s.long_views)
                / (self.prior_strength + max(s.views, s.long_views)))

    def standing(self, item_id: str, s: ItemStats, baseline: float) -> Exploring:
        """Which pool the video is in, from its counters alone (so a restart agrees)."""
        shown = max(s.impressions, s.views)
        mean = self.posterior_mean(s, baseline)
        pool = next((k for k, budget in enumerate(self.pools) if shown < budget), len(self.pools))
        if pool == len(self.pools):
            state = "graduated" if mean >= baseline else "stopped"
        elif pool > 0 and mean < baseline:
            state = "stopped"
        else:
            state = "exploring"
        return Exploring(item_id, pool, state, s.impressions, s.views, s.long_views, mean)

    def is_new_creator(self, catalog: CatalogView, live: LiveState, creator_id: str,
                       now: int) -> bool:
        items = catalog.by_creator(creator_id)
        if not items:
            return False
        if self.new_creator_max_age_ms is not None:
            cached = self._first_upload.get(creator_id)
            if cached is None or cached[0] != len(items):
                first = min((it.created_at for it in map(catalog.get, items) if it is not None),
                            default=now)
                cached = self._first_upload[creator_id] = (len(items), first)
            if now - cached[1] > self.new_creator_max_age_ms:
                return False
        if self.new_creator_max_impressions is not None:
            if live.creator_impressions(creator_id) >= self.new_creator_max_impressions:
                return False
        return True

    def annotate(self, ctx: FeedContext, candidates: list[Candidate]) -> list[Candidate]:
        """The same candidates, with the exploration reason added to those still exploring
        (for re-ranking lists that came from elsewhere, e.g. logged slates in an audit)."""
        recent = self.recent_uploads(ctx.catalog, ctx.now)
        baseline = self.cohort_baseline([ctx.live.item_stats(it.item_id) for it in recent])
        recent_ids = {it.item_id for it in recent}
        out = []
        for c in candidates:
            item = ctx.catalog.get(c.item_id)
            if item is not None and c.item_id in recent_ids and self.standing(
                    c.item_id, ctx.live.item_stats(c.item_id), baseline).exploring:
                new = self.is_new_creator(ctx.catalog, ctx.live, item.creator_id, ctx.now)
                c = Candidate(c.item_id, c.source, c.score,
                              c.reasons + (NEW_CREATOR_REASON if new else NEW_VIDEO_REASON,))
            out.append(c)
        return out
