"""Who and what the feed exposes, and how viewers respond: the ledger behind ``/v1/stats`` and
``reelrank audit``.

One ``ExposureLedger`` is fed every served page (``observe_feed``) and every accepted event
(``observe_events``); ``figures()`` turns it into the fairness and diversity figures:

- **creator exposure Gini**: inequality of served slots over every creator of the catalog, zeros
  included (0: equal exposure; near 1: a few creators get everything);
- **popularity bias**: mean popularity percentile of the served slots, popularity being views
  (0.5: served as often as a random pick; 1.0: only the most viewed video);
- **per-user topic entropy over time**: per time bucket of the event clock, the Shannon entropy
  (bits) of the topics served to each viewer, averaged over the viewers of that bucket;
- **coverage**: share of the catalog served at least once; **exploration share** and
  **new-creator share** of served slots (by the exploration reason codes on the items);
- **engagement**: per bucket, from the events: long views per view, likes and shares per
  impression, mean watch ratio (capped at 2, as the item counters are).

The same code computes the live figures of a running service and the figures of an audit run,
so what an audit reports is what ``/v1/stats`` would have shown. Per-viewer rows (the topic
counts behind the entropy) are dropped when the viewer is erased (``forget_user``); the
remaining figures are counts over items and creators with no viewer in them.

The service never imports ``eval/``: the two small formulas here (Gini, entropy) are tested
against ``reelrank.metrics``.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from reelrank.store.live import CatalogView
from reelrank.topics import NO_TOPIC, topic_of
from reelrank.types import (EXPLORATION_CODES, HOUR_MS, NEW_CREATOR, VIEW_TYPES, Event, FeedItem,
                            is_long_view)


def gini(counts: Iterable[float]) -> float:
    """Gini of exposure, n-based, over every entity passed (zeros included); nan if all 0."""
    c = sorted(float(x) for x in counts)
    n, total = len(c), sum(c)
    if total <= 0:
        return math.nan
    return sum((2 * i - n - 1) * x for i, x in enumerate(c, start=1)) / (n * total)


def entropy_bits(counts: Iterable[float]) -> float:
    c = [float(x) for x in counts if x > 0]
    total = sum(c)
    if total <= 0:
        return math.nan
    return -sum(x / total * math.log2(x / total) for x in c)


def popularity_percentiles(popularity: Mapping[str, float]) -> dict[str, float]:
    """Each item's ascending average rank by popularity over the catalog size (ties share)."""
    ordered = sorted(popularity.items(), key=lambda kv: kv[1])
    n, out, k = len(ordered), {}, 0
    while k < n:
        j = k
        while j + 1 < n and ordered[j + 1][1] == ordered[k][1]:
            j += 1
        rank = (k + j) / 2 + 1  # 1-based average rank of the tie group
        for t in range(k, j + 1):
            out[ordered[t][0]] = rank / n
        k = j + 1
    return out


@dataclass
class _Bucket:
    """One time bucket of the event clock."""

    topics: dict[str, Counter] = field(default_factory=dict)  # viewer -> topics served
    slots: int = 0
    impressions: int = 0
    views: int = 0
    long_views: int = 0
    likes: int = 0
    shares: int = 0
    watch_ratio_sum: float = 0.0


class ExposureLedger:
    def __init__(self, bucket_ms: int = HOUR_MS, max_buckets: int = 48,
                 max_viewers_per_bucket: int = 100_000, origin_ms: int | None = None):
        self.bucket_ms = bucket_ms
        # With an origin (an audit run's start), buckets count from it and anything earlier
        # falls in the first; without one they are aligned to the epoch (hours, UTC days).
        self.origin_ms = origin_ms
        self.max_buckets = max_buckets
        self.max_viewers_per_bucket = max_viewers_per_bucket
        self.item_slots: Counter = Counter()
        self.creator_slots: Counter = Counter()
        self.topic_slots: Counter = Counter()
        self.slots = self.exploration_slots = self.new_creator_slots = self.pages = 0
        self.viewers_not_tracked = 0  # past max_viewers_per_bucket: left out of the entropy
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    # -- feeding ----------------------------------------------------------------------------------
    def observe_feed(self, user_id: str, ts: int, items: list[FeedItem],
                     catalog: CatalogView) -> None:
        rows = []
        for it in items:
            item = catalog.get(it.item_id)
            codes = {r.code for r in it.reasons}
            rows.append((it.item_id, item.creator_id if item else None,
                         topic_of(item) or NO_TOPIC, bool(codes & EXPLORATION_CODES),
                         NEW_CREATOR in codes))
        with self._lock:
            b = self._bucket(ts)
            self.pages += 1
            b.slots += len(rows)
            mine = b.topics.get(user_id)
            if mine is None and rows:
                if len(b.topics) < self.max_viewers_per_bucket:
                    mine = b.topics[user_id] = Counter()
                else:
                    self.viewers_not_tracked += 1
            for item_id, creator, topic, explore, new_creator in rows:
                self.slots += 1
                self.item_slots[item_id] += 1
                if creator is not None:
                    self.creator_slots[creator] += 1
                self.topic_slots[topic] += 1
                self.exploration_slots += explore
                self.new_creator_slots += new_creator
                if mine is not None:
                    mine[topic] += 1

    def observe_events(self, events: Iterable[Event], catalog: CatalogView) -> None:
        with self._lock:
            for e in events:
                b = self._bucket(e.ts)
                if e.type == "impression":
                    b.impressions += 1
                elif e.type in ("like", "share"):
                    b.likes += e.type == "like"
                    b.shares += e.type == "share"
                elif e.type in VIEW_TYPES and e.type != "rewatch":
                    item = catalog.get(e.item_id)
                    if item is None:
                        continue
                    b.views += 1
                    b.long_views += e.type == "play" and is_long_view(e.watch_ms, item.duration_ms)
                    b.watch_ratio_sum += min((e.watch_ms or 0) / item.duration_ms, 2.0)

    def viewers(self) -> set[str]:
        """The viewers whose topic counts some bucket keeps."""
        with self._lock:
            return {u for b in self._buckets.values() for u in b.topics}

    def forget_user(self, user_id: str) -> None:
        with self._lock:
            for b in self._buckets.values():
                b.topics.pop(user_id, None)

    def _bucket(self, ts: int) -> _Bucket:
        if self.origin_ms is None:
            key = ts // self.bucket_ms
        else:
            key = max(0, (ts - self.origin_ms) // self.bucket_ms)
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket()
            if len(self._buckets) > self.max_buckets:
                # Late events may open an old bucket; evict the oldest, not the first opened.
                del self._buckets[min(self._buckets)]
                b = self._buckets.get(key) or _Bucket()
        return b

    # -- figures ----------------------------------------------------------------------------------
    def figures(self, catalog: CatalogView, popularity: Mapping[str, float] | None = None) -> dict:
        """The figures over everything observed. ``popularity`` (item -> views) defaults to
        nothing; without it the popularity bias is left out."""
        with self._lock:
            item_slots = Counter(self.item_slots)
            creator_slots = Counter(self.creator_slots)
            buckets = [(k, b, {u: Counter(c) for u, c in b.topics.items()})
                       for k, b in sorted(self._buckets.items())]
            slots, explore, new_creator = self.slots, self.exploration_slots, self.new_creator_slots
            topic_slots = Counter(self.topic_slots)
            pages, untracked = self.pages, self.viewers_not_tracked
        creators: Counter = Counter()
        for item_id in catalog.ids():
            item = catalog.get(item_id)
            if item is not None:
                creators[item.creator_id] += 0
        creators.update(creator_slots)
        out: dict = {
            "pages": pages, "slots": slots,
            "catalog_coverage": len(item_slots) / len(catalog) if len(catalog) else math.nan,
            "creator_exposure_gini": gini(creators.values()) if slots else math.nan,
            "creators_served": len(creator_slots), "creators_in_catalog": len(creators),
            "exploration_share": explore / slots if slots else math.nan,
            "new_creator_share": new_creator / slots if slots else math.nan,
            "served_topic_entropy_bits": entropy_bits(topic_slots.values()),
        }
        if popularity is not None and slots:
            pct = popularity_percentiles({i: popularity.get(i, 0.0) for i in catalog.ids()})
            total = sum(pct.get(i, 0.0) * k for i, k in item_slots.items())
            out["popularity_bias"] = total / slots
        out["over_time"] = [self._bucket_figures(k, b, topics) for k, b, topics in buckets]
        per_user = [e for _, _, topics in buckets for e in
                    (entropy_bits(c.values()) for c in topics.values()) if not math.isnan(e)]
        out["per_user_topic_entropy_bits"] = (sum(per_user) / len(per_user)) if per_user else math.nan
        out["viewers_not_tracked"] = untracked
        return out

    def _bucket_figures(self, key: int, b: _Bucket, topics: dict[str, Counter]) -> dict:
        ent = [e for e in (entropy_bits(c.values()) for c in topics.values()) if not math.isnan(e)]
        return {
            "start_ms": key * self.bucket_ms + (self.origin_ms or 0), "slots": b.slots,
            "viewers": len(topics),
            "per_user_topic_entropy_bits": sum(ent) / len(ent) if ent else None,
            "impressions": b.impressions, "views": b.views,
            "long_view_rate": b.long_views / b.views if b.views else None,
            "mean_watch_ratio": b.watch_ratio_sum / b.views if b.views else None,
            "like_rate": b.likes / b.impressions if b.impressions else None,
            "share_rate": b.shares / b.impressions if b.impressions else None,
        }
