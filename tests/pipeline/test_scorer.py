"""The served scorer: a log with plays and no impressions trains retrieval and no ranker, and
the feed then follows retrieval's order; the popularity prior adds exactly weight x log(1 +
long views and likes) to each candidate's retrieval score."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world, generate_history
from reelrank.importers import import_into
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.neural import retrieval_scores
from reelrank.registry import ModelRegistry
from reelrank.train.batch import train_from_store
from reelrank.train.retrieval import POPULARITY_WEIGHTS
from reelrank.types import Candidate
from tests.train.test_training import TINY


@pytest.fixture
def plays_only_engine(store, tmp_path):
    world = build_world(n_users=40, n_items=150, n_creators=15, seed=5)
    events = [e for e in generate_history(world, 2, 12, seed=5) if e.type != "impression"]
    import_into(store, world.items, events, progress=False)
    cfg = replace(TINY, retrieval=replace(TINY.retrieval, epochs=3, validation_users=30))
    registry = ModelRegistry(tmp_path / "models")
    result = train_from_store(store, registry, cfg, progress=False)
    engine = Engine(store, registry=registry, index_kind="exact").load()
    return engine, result


def scores_by_weight(engine, user: str, ids: list[str], prior: str,
                     weights=(0.0, 2.0)) -> dict:
    """The retrieval scores of ``ids`` for ``user`` on a page of 10 with the version's weight of
    ``prior`` (and of its ``@50``) set to each of ``weights`` in turn."""
    m = engine.models.current
    items = engine.catalog.get_many(ids)
    out = {}
    for w in weights:
        m.bundle.value_weights.update({prior: w, prior + "@50": w})
        ctx = engine.context(FeedRequest(user_id=user, n=10))
        out[w] = retrieval_scores(m, ctx, ids, items).numpy()
    return out


def test_without_impressions_retrieval_trains_and_orders_the_feed(plays_only_engine):
    engine, result = plays_only_engine
    assert result.metrics["ranker"].startswith("not trained")
    assert result.metrics["implied_examples"] > 0
    assert result.metrics["retrieval_holdout"]["users"] > 0
    chosen = result.metrics["retrieval_popularity"]
    assert chosen["weight"] in POPULARITY_WEIGHTS and set(chosen["tried"]["weight"]) == {
        str(w) for w in POPULARITY_WEIGHTS}
    m = engine.models.current
    assert m.bundle.ranker is None and m.bundle.retrieval is not None
    user = next(u for u in engine.live.user_ids() if engine.live.user(u).tokens)
    page = engine.feed(FeedRequest(user_id=user, n=10))
    assert page.model_version == m.version  # the neural scorer, not the heuristic fallback
    ctx = engine.context(FeedRequest(user_id=user, n=10))
    ids = list(page.trace.scored)
    expected = retrieval_scores(m, ctx, ids, engine.catalog.get_many(ids))
    got = torch.tensor([page.trace.scored[i].score for i in ids])
    assert torch.allclose(got, expected, atol=1e-5)
    assert all(s.predictions == {} for s in page.trace.scored.values())


def test_the_popularity_prior_adds_weight_times_log_counts(plays_only_engine):
    engine, _ = plays_only_engine
    m = engine.models.current
    user = next(u for u in engine.live.user_ids() if engine.live.user(u).tokens)
    ids = m.item_ids[:40]
    items = engine.catalog.get_many(ids)
    scores = {}
    m.bundle.value_weights["co_engagement"] = 0.0  # the other prior: its own test
    for w in (0.0, 1.5):
        m.bundle.value_weights["popularity"] = w
        ctx = engine.context(FeedRequest(user_id=user, n=10))
        scores[w] = retrieval_scores(m, ctx, ids, items).numpy()
    counts = np.array([s.long_views + s.likes for s in engine.live.item_stats_many(ids)])
    assert counts.max() > 0
    assert np.allclose(scores[1.5] - scores[0.0], 1.5 * np.log1p(counts), atol=1e-5)
    # A candidate any source proposes is scored on the same scale (here: one alone).
    ctx = engine.context(FeedRequest(user_id=user, n=1))
    one = engine.pipeline.scorer.score(ctx, [Candidate(ids[3], "trending")])
    assert one[0].score == pytest.approx(float(scores[1.5][3]), abs=1e-5)


def test_a_page_of_50_takes_the_weight_chosen_for_long_pages(plays_only_engine):
    engine, result = plays_only_engine
    chosen = result.metrics["retrieval_popularity"]
    assert chosen["weight@50"] in POPULARITY_WEIGHTS  # chosen on the held-out Recall@50
    m = engine.models.current
    assert m.bundle.value_weights["popularity@50"] == chosen["weight@50"]
    user = next(u for u in engine.live.user_ids() if engine.live.user(u).tokens)
    ids = m.item_ids[:40]
    items = engine.catalog.get_many(ids)
    m.bundle.value_weights.update({"popularity": 0.0, "popularity@50": 2.0,
                                   "co_engagement": 0.0, "co_engagement@50": 0.0})
    got = {n: retrieval_scores(m, engine.context(FeedRequest(user_id=user, n=n)), ids,
                               items).numpy() for n in (10, 49, 50, 100)}
    counts = np.array([s.long_views + s.likes for s in engine.live.item_stats_many(ids)])
    assert np.allclose(got[10], got[49])
    assert np.allclose(got[50], got[100])
    assert np.allclose(got[50] - got[10], 2.0 * np.log1p(counts), atol=1e-5)
    # The evaluation's whole-catalog ranking carries the weight of the page it stands for.
    from reelrank.eval.neural import retrieval_scores as catalog_scores
    full = {page: catalog_scores(engine, [user], page)[0][0] for page in (10, 50)}
    every = np.array([s.long_views + s.likes for s in engine.live.item_stats_many(m.item_ids)])
    assert np.allclose(full[50] - full[10], 2.0 * np.log1p(every), atol=1e-4)
