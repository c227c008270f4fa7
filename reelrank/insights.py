"""Creator insights: who watches a creator, how their videos do against similar ones, and what
to post next. Served by ``GET /v1/creators/{creator_id}/insights``.

Privacy rules, all enforced here:

- only aggregates, never a viewer id, and never a group under ``min_viewers`` distinct viewers:
  an audience, a video's figures, an interest or a suggestion backed by fewer viewers is left out
  and the answer says so; viewer counts are rounded down to a multiple of 5, so a count moving by
  one does not reveal one viewer's arrival or departure;
- everything is read from live state, which erasure empties at once (``LiveState.forget_user``)
  and "refresh my feed" clears the history of: an erased viewer never counts, and the cached
  table is dropped on every erasure (``forget_user``, registered as an erase listener);
- viewers who turned personalization off count in the videos' performance (as they would in a
  public view count) but not in the audience's interests: building an interest profile of them,
  even an aggregated one, is the profiling they opted out of.

Definitions: a *view* is a ``play`` or ``skip`` (rewatches add nothing), watch-through is long
views per view (``types.is_long_view``), like and share rates are per view. The *audience* is the
viewers with a long view or an explicit positive (like, share, comment, follow) on one of the
creator's videos, within the recent history live state keeps per viewer (the last 200 events).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable

from reelrank.errors import NotFoundError
from reelrank.pipeline.explore import ExploreSource
from reelrank.pipeline.side_effects import Calls
from reelrank.store.live import Catalog, LiveState, length_class
from reelrank.topics import ATTRIBUTE_TOPICS
from reelrank.types import DAY_MS, HOUR_MS, Item, UserSettings, is_long_view

LENGTH_LABELS = ("under 10 s", "10-20 s", "20-40 s", "40-80 s", "80-160 s", "over 160 s")
_AUDIENCE_TYPES = frozenset({"like", "share", "comment", "follow"})
RATES = ("watch_through", "like_rate", "share_rate", "mean_watch_ratio")


@dataclass
class _ItemAgg:
    viewers: int = 0
    views: int = 0
    long_views: int = 0
    likes: int = 0
    shares: int = 0
    watch_ratio_sum: float = 0.0

    def rates(self) -> dict[str, float]:
        v = max(self.views, 1)
        return {"watch_through": self.long_views / v, "like_rate": self.likes / v,
                "share_rate": self.shares / v, "mean_watch_ratio": self.watch_ratio_sum / v}


@dataclass
class _Table:
    """One pass over every live viewer's recent history."""

    made_at: float
    items: dict[str, _ItemAgg] = field(default_factory=dict)
    audience: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


class CreatorInsights:
    def __init__(self, catalog: Catalog, live: LiveState,
                 settings_of: Callable[[str], UserSettings],
                 explore: ExploreSource | None = None, min_viewers: int = 20,
                 recent_videos: int = 10, min_similar: int = 5, supply_days: float = 7.0,
                 suggestions_per_kind: int = 3, cache_seconds: float = 30.0, topics=None,
                 communities=None):
        """``topics``: how a video's topic is read (``of``, ``name_of``): learned topics
        (``reelrank.pipeline.topics.LearnedTopics``) or, by default, ``reelrank.topics``.
        ``communities``: viewer communities (``reelrank.communities``); the audience's share
        in each is reported for groups of at least ``min_viewers``."""
        if min_viewers < 1:
            raise ValueError("min_viewers must be >= 1")
        self.catalog = catalog
        self.live = live
        self.settings_of = settings_of
        self.explore = explore
        self.min_viewers = min_viewers
        self.recent_videos = recent_videos
        self.min_similar = min_similar
        self.supply_days = supply_days
        self.suggestions_per_kind = suggestions_per_kind
        self.cache_seconds = cache_seconds
        self.topics = topics or ATTRIBUTE_TOPICS
        self.communities = communities
        self._table: _Table | None = None
        self._lock = threading.Lock()

    def viewers(self) -> set[str]:
        """The viewers the cached table names (in creators' audiences)."""
        with self._lock:
            t = self._table
        return set().union(*t.audience.values()) if t is not None else set()

    def forget_user(self, user_id: str) -> None:
        """An erasure: the cached table may hold the viewer's contribution; drop it."""
        with self._lock:
            self._table = None

    # -- the answer -------------------------------------------------------------------------------
    def for_creator(self, creator_id: str) -> dict:
        ids = self.catalog.by_creator(creator_id)
        videos = sorted((it for it in map(self.catalog.get, ids) if it is not None),
                        key=lambda it: (-it.created_at, it.item_id))
        if not videos:
            raise NotFoundError(f"unknown creator_id {creator_id!r}: no video of theirs in the catalog")
        table = self._current_table()
        audience = table.audience.get(creator_id, set())
        interested = [u for u in audience if self.settings_of(u).personalization]
        demand = self._demand(interested)
        baseline = None
        if self.explore is not None:  # the watch-through a video needs to graduate, once
            recent = self.explore.recent_uploads(self.catalog, self.live.clock)
            baseline = self.explore.cohort_baseline(
                [self.live.item_stats(x.item_id) for x in recent])
        return {
            "creator_id": creator_id,
            "videos": len(videos),
            "min_viewers": self.min_viewers,
            "privacy": (f"aggregates only; groups of fewer than {self.min_viewers} distinct "
                        "viewers are left out; viewer counts are rounded down to a multiple of "
                        "5; viewers with personalization off count in video performance, not "
                        "in interests"),
            "audience": self._audience(audience, interested, demand),
            "recent_videos": [self._video(it, table, baseline)
                              for it in videos[: self.recent_videos]],
            "what_to_post_next": self._suggestions(demand, len(interested), videos),
        }

    def _audience(self, audience: set[str], interested: list[str], demand: dict) -> dict:
        if len(audience) < self.min_viewers:
            return {"suppressed": True, "viewers": None,
                    "reason": f"fewer than {self.min_viewers} distinct viewers so far"}
        out: dict = {"suppressed": False, "viewers": _round5(len(audience))}
        if len(interested) < self.min_viewers:
            out["interests"] = None
            out["interests_note"] = (f"fewer than {self.min_viewers} viewers with "
                                     "personalization on")
            return out
        out["interests"] = {
            kind: [{"value": label, "share": round(share, 4), "viewers": _round5(viewers)}
                   for label, share, viewers in rows[:5]]
            for kind, rows in ((k, self._ranked(demand[k])) for k in demand)
        }
        if self.communities is not None:
            # "a third of your audience is in fitness + running": groups under the floor left out
            out["communities"] = self.communities.audience(interested, floor=self.min_viewers)[:5]
        return out

    def _video(self, item: Item, table: _Table, baseline: float | None) -> dict:
        agg = table.items.get(item.item_id, _ItemAgg())
        out: dict = {"item_id": item.item_id, "created_at": item.created_at,
                     "topic": self.topics.name_of(item),
                     "length": LENGTH_LABELS[length_class(item.duration_ms)]}
        if self.explore is not None and baseline is not None:
            st = self.explore.standing(item.item_id, self.live.item_stats(item.item_id), baseline)
            out["exploration"] = {"state": st.state, "pool": st.pool,
                                  "pools": list(self.explore.pools)}
        if agg.viewers < self.min_viewers:
            out.update(suppressed=True,
                       reason=f"fewer than {self.min_viewers} distinct viewers so far")
            return out
        mine = agg.rates()
        similar, basis = self._similar(item, table)
        out.update(suppressed=False, viewers=_round5(agg.viewers),
                   **{k: round(v, 4) for k, v in mine.items()})
        if not similar:
            out["similar"] = None
            return out
        med = {k: statistics.median(a.rates()[k] for a in similar) for k in RATES}
        out["similar"] = {"videos": len(similar), "basis": basis,
                          **{k: round(v, 4) for k, v in med.items()}}
        out["vs_similar"] = {k: (round(mine[k] / med[k] - 1.0, 4) if med[k] > 0 else None)
                             for k in RATES}
        return out

    def _similar(self, item: Item, table: _Table) -> tuple[list[_ItemAgg], str]:
        """Other creators' videos with enough viewers: same topic and length, else same topic,
        else all of them."""
        topic, length = self.topics.of(item), length_class(item.duration_ms)
        pool = []
        for item_id, agg in table.items.items():
            other = self.catalog.get(item_id)
            if other is None or other.creator_id == item.creator_id:
                continue
            if agg.viewers >= self.min_viewers:
                pool.append((other, agg))
        tiers = (("same topic and length", lambda o: self.topics.of(o) == topic
                  and length_class(o.duration_ms) == length),
                 ("same topic", lambda o: self.topics.of(o) == topic),
                 ("all videos", lambda o: True))
        for basis, keep in tiers:
            chosen = [a for o, a in pool if keep(o)]
            if len(chosen) >= self.min_similar:
                return chosen, basis
        return [], "none"

    # -- demand and supply ------------------------------------------------------------------------
    def _demand(self, viewers: list[str]) -> dict[str, dict[str, list[float]]]:
        """Per kind, per value: [share of the audience's long views (each viewer weighing the
        same), distinct viewers]."""
        kinds = ("topics", "sounds", "lengths", "hours")
        out: dict[str, dict[str, list[float]]] = {k: defaultdict(lambda: [0.0, 0]) for k in kinds}
        n = 0
        for uid in viewers:
            u = self.live.user(uid)
            if u is None:
                continue
            per: dict[str, Counter] = {k: Counter() for k in kinds}
            for h in tuple(u.history):  # a tuple copy is taken in one step, safe beside writers
                item = self.catalog.get(h.item_id)
                if item is None or h.type != "play" or not is_long_view(h.watch_ms, item.duration_ms):
                    continue
                per["topics"][self.topics.name_of(item)] += 1
                if item.sound_id:
                    per["sounds"][item.sound_id] += 1
                per["lengths"][LENGTH_LABELS[length_class(item.duration_ms)]] += 1
                per["hours"][_hour_label(h.ts)] += 1
            if not sum(per["topics"].values()):
                continue
            n += 1
            for kind, counts in per.items():
                total = sum(counts.values())
                for value, k in counts.items():
                    out[kind][value][0] += k / total
                    out[kind][value][1] += 1
        for kind in kinds:
            for value in out[kind]:
                out[kind][value][0] /= max(n, 1)
        return out

    def _ranked(self, rows: dict[str, list[float]]) -> list[tuple[str, float, int]]:
        kept = [(v, s, int(k)) for v, (s, k) in rows.items() if k >= self.min_viewers]
        return sorted(kept, key=lambda r: (-r[1], r[0]))

    def _supply(self, creator_id: str | None = None) -> dict[str, Counter]:
        """Videos posted in the last ``supply_days`` by value, all creators' or one's own."""
        now = self.live.clock
        recent = self.catalog.newest(100_000, created_after=now - int(self.supply_days * DAY_MS))
        out = {k: Counter() for k in ("topics", "sounds", "lengths", "hours")}
        for it in recent:
            if creator_id is not None and it.creator_id != creator_id:
                continue
            out["topics"][self.topics.name_of(it)] += 1
            if it.sound_id:
                out["sounds"][it.sound_id] += 1
            out["lengths"][LENGTH_LABELS[length_class(it.duration_ms)]] += 1
            out["hours"][_hour_label(it.created_at)] += 1
        return out

    def _suggestions(self, demand: dict, n_interested: int, videos: list[Item]) -> dict:
        if n_interested < self.min_viewers:
            return {"suppressed": True, "items": [],
                    "reason": f"fewer than {self.min_viewers} viewers with personalization on"}
        supply = self._supply()
        own = self._supply(videos[0].creator_id)
        days = f"{self.supply_days:g}"
        out = []
        nouns = {"topics": "topic", "sounds": "sound", "lengths": "length", "hours": "posting hour"}
        for kind, rows in demand.items():
            total = sum(supply[kind].values())
            scored = []
            for value, share, viewers in self._ranked(rows):
                if share < 0.05:
                    continue
                supply_share = supply[kind].get(value, 0) / total if total else 0.0
                # Few recent videos is the point: demand over supply, the floor keeping one
                # video in an empty market from reading as infinite opportunity.
                opportunity = share / max(supply_share, 1.0 / (total + 1))
                scored.append((opportunity, value, share, viewers, supply_share,
                               supply[kind].get(value, 0)))
            scored.sort(key=lambda r: (-r[0], r[1]))
            for opp, value, share, viewers, supply_share, count in scored[: self.suggestions_per_kind]:
                viewers_text = f"{_round5(viewers)}+ viewers"
                if kind == "hours":
                    evidence = (f"{share:.0%} of your audience's long views ({viewers_text}) "
                                f"happen at {value}; {count} of the {total} videos posted in "
                                f"the last {days} days ({supply_share:.0%}) went up then")
                else:
                    evidence = (f"{share:.0%} of your audience's long views ({viewers_text}) "
                                f"are of {nouns[kind]} {value}; {count} of the {total} videos "
                                f"posted in the last {days} days ({supply_share:.0%}) are")
                out.append({"kind": nouns[kind], "value": value, "demand_share": round(share, 4),
                            "supply_share": round(supply_share, 4),
                            "your_recent_videos": own[kind].get(value, 0),
                            "opportunity": round(opp, 3), "evidence": evidence})
        out.sort(key=lambda r: -r["opportunity"])
        return {"suppressed": False, "items": out}

    # -- the table --------------------------------------------------------------------------------
    def _current_table(self) -> _Table:
        with self._lock:
            t = self._table
            if t is not None and time.monotonic() - t.made_at < self.cache_seconds:
                return t
        t = self._build_table()
        with self._lock:
            self._table = t
        return t

    def _build_table(self) -> _Table:
        t = _Table(time.monotonic())
        for uid in self.live.user_ids():
            u = self.live.user(uid)
            if u is None:
                continue
            viewed: set[str] = set()
            for h in tuple(u.history):
                item = self.catalog.get(h.item_id)
                if item is None:
                    continue
                agg = t.items.get(h.item_id)
                if agg is None:
                    agg = t.items[h.item_id] = _ItemAgg()
                if h.type in ("play", "skip"):
                    agg.views += 1
                    agg.watch_ratio_sum += min(h.watch_ratio or 0.0, 2.0)
                    if h.item_id not in viewed:
                        viewed.add(h.item_id)
                        agg.viewers += 1
                    if h.type == "play" and is_long_view(h.watch_ms, item.duration_ms):
                        agg.long_views += 1
                        t.audience[item.creator_id].add(uid)
                elif h.type == "unlike":
                    agg.likes = max(0, agg.likes - 1)
                elif h.type in _AUDIENCE_TYPES:
                    agg.likes += h.type == "like"
                    agg.shares += h.type == "share"
                    t.audience[item.creator_id].add(uid)
        return t


def _round5(n: int) -> int:
    return n - n % 5


def _hour_label(ts: int) -> str:
    h = (ts % DAY_MS) // HOUR_MS
    return f"{h:02d}:00-{(h + 1) % 24:02d}:00 UTC"


def insights_for(engine, min_viewers: int = 20, topics=None, communities=None) -> CreatorInsights:
    """Creator insights over an engine's live state, reading exploration standings from its
    pipeline's exploration source (if any) and dropping its cache on every erasure;
    ``topics`` and ``communities``: as ``CreatorInsights``."""
    explore = next((s for sources in engine.pipeline.sources.values() for s in sources
                    if isinstance(s, ExploreSource)), None)
    insights = CreatorInsights(engine.catalog, engine.live, engine.store.get_settings,
                               explore=explore, min_viewers=min_viewers, topics=topics,
                               communities=communities)
    engine.effects.add(Calls("insights", erase=insights.forget_user, held=insights.viewers))
    return insights
