"""Viewer communities: viewers grouped by the mix of topics they watch to the end.

Each live viewer with at least ``min_long_views`` long views in their recent history is a vector
of the shares of those long views per topic (the topics the feed reads: learned where the
serving model has them, ``reelrank.pipeline.topics``). The vectors are clustered by spherical
k-means, the number of communities chosen by silhouette within configured bounds
(``reelrank.clustering.choose_k``), and each community is named by its two heaviest topics
("fitness · running + home cooking"). A refresh matches the new communities to the last ones
by member overlap (Hungarian), so an id keeps its meaning and its growth can be reported.

Used for:

- **cold start**: ``CommunitySource`` proposes, to a viewer with a few long views, the videos
  most watched to the end by their likeliest community (the nearest centroid to their own mix,
  computed at request time from their live history);
- **creator insights**: the share of a creator's audience in each community, never for a
  group under the insights' ``min_viewers`` floor (``audience``);
- **operators**: community sizes and growth since the last refresh in ``/v1/stats``
  (``figures``), sizes under the floor withheld.

Communities are derived from live state and recomputed every ``refresh_s`` seconds (in a
background thread once the first set exists); an erased viewer leaves the assignment at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from reelrank.clustering import choose_k, kmeans, min_cost_assignment, unit
from reelrank.learned_topics import TopicConfig
from reelrank.pipeline.side_effects import Calls
from reelrank.topics import ATTRIBUTE_TOPICS, NO_TOPIC
from reelrank.types import Candidate, Reason, is_long_view

log = logging.getLogger(__name__)


@dataclass
class CommunityConfig:
    min_communities: int = 4
    max_communities: int = 32
    min_long_views: int = 3  # a viewer with fewer is not clustered (nor assigned)
    max_viewers: int = 20_000  # viewers read per refresh (the most recently active first)
    refresh_s: float = 300.0
    popular: int = 200  # videos kept per community for the cold-start source
    min_viewers: int = 20  # k-anonymity floor for anything shown about a community
    seed: int = 0


@dataclass
class Community:
    id: int
    name: str
    topics: list[str]  # topic keys, heaviest first
    viewers: int
    growth: int | None  # viewers since the refresh before (None: new community)
    popular: list[str] = field(default_factory=list)


class Communities:
    def __init__(self, catalog, live, topics=None, cfg: CommunityConfig | None = None):
        self.catalog = catalog
        self.live = live
        self.topics = topics or ATTRIBUTE_TOPICS
        self.cfg = cfg or CommunityConfig()
        self.communities: list[Community] = []
        self._dims: list[str] = []  # topic key of each vector dimension
        self._centroids: np.ndarray | None = None  # (C, T)
        self._assignment: dict[str, int] = {}  # viewer -> community id
        self._members: dict[int, set[str]] = {}
        self._next_id = 0
        self.refreshed_at: float | None = None
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._refreshing = False

    # -- the viewers' topic mix ----------------------------------------------------------------
    def long_view_topics(self, user) -> Counter:
        out: Counter = Counter()
        for h in tuple(user.history):
            if h.type != "play":
                continue
            item = self.catalog.get(h.item_id)
            if item is not None and is_long_view(h.watch_ms, item.duration_ms):
                out[self.topics.of(item) or NO_TOPIC] += 1
        return out

    def _vector(self, counts: Counter, dims: dict[str, int]) -> np.ndarray:
        v = np.zeros(len(dims), np.float32)
        for key, k in counts.items():
            j = dims.get(key)
            if j is not None:
                v[j] = k
        return v

    # -- clustering -----------------------------------------------------------------------------
    def refresh(self) -> list[Community]:
        """Recompute the communities from live state now (one refresh at a time: a second
        waits, so ids are always matched against the set before)."""
        with self._refresh_lock:
            return self._refresh()

    def _refresh(self) -> list[Community]:
        cfg = self.cfg
        viewers, mixes = [], []
        for uid in self.live.user_ids()[-cfg.max_viewers:]:
            u = self.live.user(uid)
            if u is None:
                continue
            counts = self.long_view_topics(u)
            if sum(counts.values()) >= cfg.min_long_views:
                viewers.append(uid)
                mixes.append(counts)
        total: Counter = Counter()
        for counts in mixes:
            total.update(counts)
        dims_list = [k for k, _ in total.most_common(500)]
        dims = {k: j for j, k in enumerate(dims_list)}
        if len(viewers) < max(2, cfg.min_communities):
            with self._lock:
                self.communities, self._centroids, self._dims = [], None, dims_list
                self._assignment, self._members = {}, {}
                self.refreshed_at = time.monotonic()
            return []
        x = unit(np.stack([self._vector(c, dims) for c in mixes]))
        k, _ = choose_k(x, TopicConfig(min_topics=cfg.min_communities,
                                       max_topics=cfg.max_communities, seed=cfg.seed))
        centroids = kmeans(x, k, cfg.seed, 25, nredo=3) if k > 1 else unit(x.mean(0, keepdims=True))
        rows = np.argmax(x @ centroids.T, axis=1)
        used = np.unique(rows)
        centroids, rows = centroids[used], np.searchsorted(used, rows)
        ids = self._match(viewers, rows, len(used))
        popular: dict[int, Counter] = {i: Counter() for i in ids}
        for uid, r in zip(viewers, rows.tolist()):
            u = self.live.user(uid)
            if u is None:
                continue
            for h in tuple(u.history):
                item = self.catalog.get(h.item_id)
                if h.type == "play" and item is not None and is_long_view(h.watch_ms,
                                                                          item.duration_ms):
                    popular[ids[r]][h.item_id] += 1
        before = {c.id: c.viewers for c in self.communities}
        communities = []
        for r, cid in enumerate(ids):
            order = np.argsort(-centroids[r])[:2]
            keys = [dims_list[j] for j in order if centroids[r, j] > 0]
            name = " + ".join(self.topics.label(key) if key != NO_TOPIC else "no topic"
                              for key in keys) or f"community {cid}"
            size = int((rows == r).sum())
            communities.append(Community(cid, name, keys, size,
                                         size - before[cid] if cid in before else None,
                                         [i for i, _ in popular[cid].most_common(cfg.popular)]))
        with self._lock:
            self.communities = communities
            self._centroids, self._dims = centroids, dims_list
            self._assignment = {uid: ids[r] for uid, r in zip(viewers, rows.tolist())}
            self._members = {cid: {u for u, c in self._assignment.items() if c == cid}
                             for cid in ids}
            self.refreshed_at = time.monotonic()
        log.info("communities: %d over %d viewers", len(communities), len(viewers))
        return communities

    def _match(self, viewers: list[str], rows: np.ndarray, k: int) -> list[int]:
        """Ids for the new clusters: the previous community with the most overlapping members
        (Jaccard >= 0.2, one to one), else a new id."""
        previous = self._members
        ids: list[int | None] = [None] * k
        if previous:
            prev_ids = list(previous)
            new_sets = [set() for _ in range(k)]
            for uid, r in zip(viewers, rows.tolist()):
                new_sets[r].add(uid)
            jac = np.array([[len(a & previous[p]) / max(len(a | previous[p]), 1)
                             for p in prev_ids] for a in new_sets])
            for r, j in zip(*min_cost_assignment(-jac)):
                if jac[r, j] >= 0.2:
                    ids[r] = prev_ids[j]
        nxt = max(self._next_id, max(previous, default=-1) + 1)
        for r in range(k):
            if ids[r] is None:
                ids[r], nxt = nxt, nxt + 1
        self._next_id = nxt
        return ids  # type: ignore[return-value]

    def maybe_refresh(self) -> None:
        """Refresh in a background thread when the set is older than ``refresh_s`` (or there is
        none yet); readers keep the current set meanwhile."""
        if self.refreshed_at is not None and time.monotonic() - self.refreshed_at < self.cfg.refresh_s:
            return
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True

        def run() -> None:
            try:
                self.refresh()
            except Exception:
                log.exception("refreshing communities failed")
            finally:
                self._refreshing = False

        threading.Thread(target=run, name="communities", daemon=True).start()

    # -- reading them ---------------------------------------------------------------------------
    def get(self, community_id: int) -> Community | None:
        return next((c for c in self.communities if c.id == community_id), None)

    def of_viewer(self, user) -> Community | None:
        """The likeliest community of a viewer from their live history (a new viewer's first
        long views are enough): the nearest centroid to their topic mix."""
        centroids, dims = self._centroids, self._dims
        if user is None or centroids is None:
            return None
        counts = self.long_view_topics(user)
        if not counts:
            return None
        v = self._vector(counts, {k: j for j, k in enumerate(dims)})
        if not v.any():
            return None
        r = int(np.argmax(centroids @ (v / np.linalg.norm(v))))
        communities = self.communities
        return communities[r] if r < len(communities) else None

    def viewers(self) -> list[str]:
        with self._lock:
            return list(self._assignment)

    def forget_user(self, user_id: str) -> None:
        with self._lock:
            cid = self._assignment.pop(user_id, None)
            if cid is not None:
                self._members.get(cid, set()).discard(user_id)

    def audience(self, viewer_ids, floor: int | None = None) -> list[dict]:
        """Share of these viewers in each community, for groups of at least ``floor`` viewers
        (default ``min_viewers``; counts rounded down to a multiple of 5)."""
        floor = self.cfg.min_viewers if floor is None else floor
        self.maybe_refresh()
        viewer_ids = list(viewer_ids)
        counts = Counter(self._assignment.get(u) for u in viewer_ids)
        out = []
        for cid, k in counts.most_common():
            c = self.get(cid) if cid is not None else None
            if c is None or k < floor:
                continue
            out.append({"community": c.name, "id": cid, "share": round(k / len(viewer_ids), 4),
                        "viewers": k - k % 5})
        return out

    def figures(self) -> dict:
        """For ``/v1/stats``: sizes and growth, withheld for communities under the floor."""
        self.maybe_refresh()
        floor = self.cfg.min_viewers
        return {
            "communities": len(self.communities),
            "viewers_assigned": len(self._assignment),
            "min_viewers": floor,
            "refreshed_s_ago": (round(time.monotonic() - self.refreshed_at, 1)
                                if self.refreshed_at is not None else None),
            "sizes": [{"id": c.id, "name": c.name,
                       "viewers": c.viewers - c.viewers % 5 if c.viewers >= floor else None,
                       "growth": c.growth if c.viewers >= floor else None}
                      for c in sorted(self.communities, key=lambda c: -c.viewers)],
        }


class CommunitySource:
    """Candidates popular in the viewer's likeliest community, once they have a few long
    views: what viewers like them watched to the end."""

    name = "community"

    def __init__(self, communities: Communities, max_long_views: int | None = None):
        """``max_long_views``: stop proposing once the viewer has this many long views (the
        personal sources know them well by then); None: always."""
        self.communities = communities
        self.max_long_views = max_long_views

    def generate(self, ctx, n: int) -> list[Candidate]:
        self.communities.maybe_refresh()
        u = ctx.user
        if u is None or not u.history:
            return []
        if self.max_long_views is not None:
            longs = sum(self.communities.long_view_topics(u).values())
            if longs > self.max_long_views:
                return []
        c = self.communities.of_viewer(u)
        if c is None or not c.popular:
            return []
        exclude = set(u.seen) | set(u.served) | set(u.not_interested)
        picks = [i for i in c.popular if i not in exclude][:n]
        reason = Reason("community", f"popular with viewers who watch what you watch ({c.name})")
        return [Candidate(i, self.name, 1.0 - k / max(len(picks), 1), (reason,))
                for k, i in enumerate(picks)]


def install(engine, topics=None, cfg: CommunityConfig | None = None,
            source: bool = False) -> Communities:
    """Communities over an engine's live state, read by the topics ``topics`` gives; erasures
    reach them. ``source=True`` also adds ``CommunitySource`` to the personalized feed's
    sources (for viewers with at most 10 long views: the cold start)."""
    communities = Communities(engine.catalog, engine.live, topics, cfg)
    engine.effects.add(Calls("communities", erase=communities.forget_user,
                             held=communities.viewers))
    if source:
        personal = engine.pipeline.sources.get("personalized")
        if personal is not None:
            personal.insert(1, CommunitySource(communities, max_long_views=10))
    communities.maybe_refresh()
    return communities
