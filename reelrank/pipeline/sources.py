"""Candidate sources: each proposes items for a request, with its own score and reasons.

A source is any object with a ``name`` and ``generate(ctx, n) -> list[Candidate]``. Sources are
cheap and independent; the feed asks each for more than it needs and a failing one is skipped.
"""

from __future__ import annotations

import operator
from collections import Counter
from typing import Protocol

from reelrank.pipeline.context import FeedContext
from reelrank.types import DAY_MS, Candidate, Reason


_NEWEST = operator.attrgetter("created_at", "item_id")  # the following feed's order


class CandidateSource(Protocol):
    name: str

    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]: ...


class _Reuse:
    """The candidates a source last made from a top list, handed out again while the list is
    the same: trending and popular lists change when live state refreshes them (every
    thousand events or seconds), not per request, and building a few hundred candidates per
    page was a measurable share of a feed (benchmarks/results/throughput-profile.md).
    Candidates are immutable, so pages may share them. Keyed by what the list depends on
    (for regional popularity, the region and language), at most ``size`` keys."""

    def __init__(self, size: int = 256):
        self.size = size
        self._made: dict = {}  # key -> (pairs, candidates)

    def get(self, key, pairs: list) -> list[Candidate] | None:
        made = self._made.get(key)
        if made is not None and made[0] == pairs:
            return list(made[1])
        return None

    def put(self, key, pairs: list, candidates: list[Candidate]) -> list[Candidate]:
        if len(self._made) >= self.size and key not in self._made:
            self._made.clear()  # many regions and languages asked for: start over
        self._made[key] = (list(pairs), list(candidates))
        return candidates


def _normalise(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Scale scores to (0, 1] so sources can be compared."""
    if not pairs:
        return []
    top = max(s for _, s in pairs) or 1.0
    return [(i, s / top) for i, s in pairs]


class TrendingSource:
    """Most engaged-with items in the recent window; all-time popular when the window is empty."""

    name = "trending"

    def __init__(self) -> None:
        self._reuse = _Reuse()

    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]:
        pairs = ctx.live.trending(n)
        if len(pairs) < n:
            known = {i for i, _ in pairs}
            pairs += [(i, s * 0.5) for i, s in ctx.live.popular(n + len(pairs)) if i not in known]
            pairs = pairs[:n]
        made = self._reuse.get(None, pairs)
        if made is not None:
            return made
        reason = Reason("trending", "popular right now")
        return self._reuse.put(None, pairs, [Candidate(i, self.name, s, (reason,))
                                             for i, s in _normalise(pairs)])


class PopularSource:
    """The most engaged-with videos of all time: a first-class candidate for everyone, since
    what many viewers enjoyed is a strong guess for one more (the scorer decides whether it
    beats the personal candidates)."""

    name = "popular"

    def __init__(self) -> None:
        self._reuse = _Reuse()

    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]:
        pairs = ctx.live.popular(n)
        made = self._reuse.get(None, pairs)
        if made is not None:
            return made
        reason = Reason("popular", "popular with viewers")
        return self._reuse.put(None, pairs, [Candidate(i, self.name, s, (reason,))
                                             for i, s in _normalise(pairs)])


class RegionalPopularSource:
    """What viewers in the request's coarse region engage with most, preferring the viewer's
    language when the request names one. Uses nothing about the viewer but region and
    language, so it serves the feed that is not based on profiling (DSA Art. 38)."""

    name = "popular_region"

    def __init__(self, other_language_factor: float = 0.5):
        self.other_language_factor = other_language_factor
        self._reuse = _Reuse()

    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]:
        region = ctx.region
        if not region:
            return []
        pairs = ctx.live.popular_in_region(region, n * 2)
        language = ctx.request.language
        # With a language, the weights read the items' languages too: an upload changes them.
        key = (region, language, n, ctx.catalog.version if language else None)
        made = self._reuse.get(key, pairs)
        if made is not None:
            return made
        return self._reuse.put(key, pairs, self._make(ctx, pairs, region, language, n))

    def _make(self, ctx: FeedContext, pairs: list, region: str, language: str | None,
              n: int) -> list[Candidate]:
        if language:
            weighted = []
            for item_id, score in pairs:
                item = ctx.catalog.get(item_id)
                same = item is None or item.language in (None, language)
                weighted.append((item_id, score * (1.0 if same else self.other_language_factor)))
            pairs = sorted(weighted, key=lambda p: (-p[1], p[0]))
        reason = Reason("popular_region", f"popular in your region ({region})")
        return [Candidate(i, self.name, s, (reason,)) for i, s in _normalise(pairs[:n])]


class FreshSource:
    """Recent uploads that few viewers have seen yet: every new video gets a first audience."""

    name = "fresh"

    def __init__(self, max_age_ms: int = 3 * DAY_MS, max_impressions: int = 200):
        self.max_age_ms = max_age_ms
        self.max_impressions = max_impressions

    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]:
        reason = Reason("fresh", "a new video we are trying out")
        out = []
        for item in ctx.catalog.newest(n * 4, created_after=ctx.now - self.max_age_ms):
            if ctx.live.item_stats(item.item_id).impressions < self.max_impressions:
                age = max(0, ctx.now - item.created_at)
                out.append(Candidate(item.item_id, self.name, 1.0 - age / self.max_age_ms,
                                     (reason,)))
                if len(out) >= n:
                    break
        return out


class CoEngagementSource:
    """Items that viewers engaged with together with this viewer's recent positives."""

    name = "co_engagement"

    def __init__(self, seeds: int = 10, per_seed: int = 30):
        self.seeds = seeds
        self.per_seed = per_seed

    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]:
        if ctx.user is None or not ctx.user.positives:
            return []
        seeds = list(ctx.user.positives)[-self.seeds:]
        scores: Counter = Counter()
        because: dict[str, str] = {}
        for rank, seed in enumerate(reversed(seeds)):
            recency = 1.0 / (1 + rank)  # the latest swipe counts most
            for other, count in ctx.live.co_engaged(seed, self.per_seed):
                scores[other] += recency * count
                because.setdefault(other, seed)
        out = []
        for item_id, score in _normalise(scores.most_common(n)):
            seed_item = ctx.catalog.get(because[item_id])
            label = (seed_item.caption or seed_item.item_id) if seed_item else because[item_id]
            text = f"viewers who enjoyed \"{label[:60]}\" also enjoyed this"
            out.append(Candidate(item_id, self.name, score, (Reason("co_engagement", text),)))
        return out


class FollowingSource:
    """Newest videos of the creators this viewer follows."""

    name = "following"

    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]:
        if ctx.user is None or not ctx.user.following:
            return []
        items = []
        for creator in ctx.user.following:
            items += ctx.catalog.get_many(ctx.catalog.by_creator(creator))  # one C-level pass
        items = [it for it in items if it is not None]
        items.sort(key=_NEWEST, reverse=True)
        reason = Reason("following", "you follow this creator")
        newest = items[0].created_at if items else 0
        span = max(1, newest - (items[min(len(items), n) - 1].created_at if items else 0))
        return [Candidate(it.item_id, self.name, 1.0 - 0.5 * (newest - it.created_at) / span,
                          (reason,)) for it in items[: n]]
