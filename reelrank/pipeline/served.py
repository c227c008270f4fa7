"""The feed as served: which sources, filters, scorer and reranker a page goes through.

``default_pipeline`` is the served one; ``offline_pipeline`` the same for replays and
simulations, whose feeds must not depend on how fast the machine replays them.
"""

from __future__ import annotations

from reelrank.pipeline.explore import ExploreSource
from reelrank.pipeline.feed import FeedPipeline
from reelrank.pipeline.filters import default_filters
from reelrank.pipeline.neural import NeuralScorer, RetrievalSource, ServingModels
from reelrank.pipeline.plans import FeedPlans
from reelrank.pipeline.rank import HeuristicScorer
from reelrank.pipeline.rerank import DiversityReranker
from reelrank.pipeline.sources import (
    CoEngagementSource,
    FollowingSource,
    PopularSource,
    RegionalPopularSource,
    TrendingSource,
)


def default_pipeline(
    models: ServingModels | None = None,
    *,
    reranker: DiversityReranker | None = None,
    explore: ExploreSource | None = None,
    exploration: bool = True,
    plans: FeedPlans | None = None,
) -> FeedPipeline:
    """The feed as served: the retrieval model is the main source when a model is published;
    the v0 sources stay, as fallbacks and for viewers and videos the models do not know yet.

    New videos reach their first audiences through ``explore`` (default ``ExploreSource()``);
    ``exploration=False`` leaves them to the other sources. ``reranker`` (default
    ``DiversityReranker()``) sets the diversity rules and the exploration share of each page.
    ``plans``: serve a viewer's next pages from the ranking of their last one
    (``pipeline/plans.py``; ``reelrank serve`` turns it on); None: every page runs it all."""
    trending, regional = TrendingSource(), RegionalPopularSource()
    fresh = [explore or ExploreSource()] if exploration else []
    # A new viewer's first pages come from regional popularity, trending and fresh videos
    # (the personal sources have nothing yet); from the first swipes on, the personal ones lead.
    personal: list = [
        CoEngagementSource(),
        FollowingSource(),
        regional,
        trending,
        PopularSource(),
        *fresh,
    ]
    heuristic = HeuristicScorer()
    scorer: HeuristicScorer | NeuralScorer = heuristic
    if models is not None:
        personal.insert(0, RetrievalSource(models))
        scorer = NeuralScorer(models, fallback=heuristic)
    return FeedPipeline(
        sources={
            "personalized": personal,
            "non_personalized": [regional, trending, *fresh],
            "following": [FollowingSource()],
        },
        filters=default_filters(),
        # (rank.Scorer declares ``version`` settable; NeuralScorer's is a read-only property)
        scorer=scorer,  # type: ignore[arg-type]
        # (FeedPipeline's annotation names the subclass; any DiversityReranker is served)
        reranker=reranker or DiversityReranker(),  # type: ignore[arg-type]
        plans=plans,
    )


def offline_pipeline(models: ServingModels | None = None) -> FeedPipeline:
    """The served pipeline for offline evaluation and simulation: the exploration pool is
    recomputed on every request instead of being cached for seconds and refreshed in the
    background, so a replay gives the same feeds whatever the machine's speed."""
    return default_pipeline(
        models, explore=ExploreSource(refresh_events=0, background_refresh=False)
    )
