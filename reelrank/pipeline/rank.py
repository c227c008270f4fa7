"""Scorers: turn filtered candidates into scores and per-task predictions.

``HeuristicScorer`` is the v0 scorer and the fallback when no trained ranker is loaded: smoothed
engagement rates of the item, the viewer's affinity for its hashtags and creator, and the
candidate source's own score. The neural ranker (models/ranker.py) plugs in behind the same
``Scorer`` protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from reelrank.pipeline.context import FeedContext
from reelrank.types import HEURISTIC_TASKS, Candidate, Item, Reason

TASKS = HEURISTIC_TASKS  # what it estimates, in order (types.py)


@dataclass
class Scored:
    candidate: Candidate
    score: float
    predictions: dict[str, float] = field(default_factory=dict)
    reasons: tuple[Reason, ...] = ()

    @property
    def item_id(self) -> str:
        return self.candidate.item_id


class Scorer(Protocol):
    version: str

    def score(self, ctx: FeedContext, candidates: list[Candidate]) -> list[Scored]: ...


def _rate(hits: int, trials: int, prior: float, strength: float) -> float:
    """Beta-smoothed rate: with few trials it stays near the prior."""
    return (hits + prior * strength) / (trials + strength)


@dataclass
class HeuristicScorer:
    """A transparent weighted sum; weights are configuration."""

    w_source: float = 0.3
    w_long_view: float = 1.0
    w_like: float = 2.0
    w_share: float = 3.0
    w_negative: float = 3.0
    w_affinity: float = 1.0
    affinity_prior: float = 5.0
    version: str = "heuristic-v0"
    # Learned topics (``reelrank.pipeline.topics.LearnedTopics``): adds "you watched 3 videos
    # in <topic> to the end" to the reasons; None: hashtag and creator reasons only.
    topics: object | None = None

    def score(self, ctx: FeedContext, candidates: list[Candidate]) -> list[Scored]:
        out = []
        for cand in candidates:
            item = ctx.catalog.get(cand.item_id)
            if item is None:
                continue
            preds = self.predict(ctx, item)
            affinity, reasons = self._affinity(ctx, item) if ctx.personalized else (0.0, ())
            value = (self.w_source * cand.score + self.w_long_view * preds["long_view"]
                     + self.w_like * preds["like"] + self.w_share * preds["share"]
                     - self.w_negative * preds["negative"] + self.w_affinity * affinity)
            out.append(Scored(cand, value, preds, reasons + cand.reasons))
        return out

    def predict(self, ctx: FeedContext, item: Item) -> dict[str, float]:
        s = ctx.live.item_stats(item.item_id)
        return {
            "long_view": _rate(s.long_views, s.views, 0.3, 10.0),
            "like": _rate(s.likes, max(s.impressions, s.views), 0.02, 50.0),
            "share": _rate(s.shares, max(s.impressions, s.views), 0.005, 100.0),
            "negative": _rate(s.negatives, max(s.impressions, s.views), 0.01, 100.0),
        }

    def signals(self, ctx: FeedContext, item: Item) -> tuple[Reason, ...]:
        """The viewer's history signals that point at this item, as reasons."""
        u = ctx.user
        reasons = tuple(self._reasons(u, item, self._totals(ctx)[1])) if u is not None else ()
        if self.topics is not None:
            reasons = self.topics.reasons(ctx, item) + reasons
        return reasons

    def _totals(self, ctx: FeedContext) -> tuple[float, float]:
        """The viewer's hashtag affinity total and top creator affinity, each with the prior
        strength added (which shrinks affinities built on a handful of events towards zero);
        computed once per request."""
        totals = ctx.cache.get("affinity_totals")
        if totals is None:
            u = ctx.user
            totals = ctx.cache["affinity_totals"] = (
                sum(abs(v) for v in u.hashtag_affinity.values()) + self.affinity_prior,
                max((abs(v) for v in u.creator_affinity.values()), default=0.0)
                + self.affinity_prior)
        return totals

    @staticmethod
    def _reasons(u, item: Item, top: float) -> list[Reason]:
        """The reasons of ``_affinity``, without its value (the neural scorer asks for the
        reasons of its top items only)."""
        reasons: list[Reason] = []
        long_views = u.hashtag_long_views
        # With no long view on any hashtag, no hashtag can be the reason.
        best = (max(item.hashtags, key=lambda t: long_views.get(t, 0), default=None)
                if long_views else None)
        if best is not None and long_views.get(best, 0) > 0:
            k = long_views[best]
            noun = "video" if k == 1 else "videos"
            reasons.append(Reason("hashtag_affinity",
                                  f"you watched {k} #{best} {noun} to the end"))
        if item.creator_id in u.following:
            reasons.append(Reason("following", "you follow this creator"))
        elif u.creator_affinity.get(item.creator_id, 0.0) / top > 0.2:
            reasons.append(Reason("creator_affinity", "you enjoyed videos by this creator"))
        return reasons

    def _affinity(self, ctx: FeedContext, item: Item) -> tuple[float, tuple[Reason, ...]]:
        """How much this viewer's history points at the item's hashtags and creator, in [-1, 1],
        with the signals that justify it."""
        u = ctx.user
        if u is None:
            return 0.0, ()
        total, top = self._totals(ctx)
        tag_score = sum(u.hashtag_affinity.get(t, 0.0) for t in item.hashtags) / total
        if item.creator_id in u.following:
            creator_score = 1.0
        else:
            creator_score = u.creator_affinity.get(item.creator_id, 0.0) / top
        value = math.tanh(3.0 * tag_score) * 0.7 + creator_score * 0.3
        return value, tuple(self._reasons(u, item, top))
