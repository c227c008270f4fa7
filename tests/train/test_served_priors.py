"""The served score's priors as training chooses them: each held-out viewer's trending count is
the training positives in the window before the moment they asked, the weights come from one
search on the held-out measure each page size names, and serving adds weight x log(1 + the
live state's trending count)."""

from __future__ import annotations

import numpy as np
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.neural import retrieval_scores
from reelrank.train import validation
from reelrank.train.retrieval import SequenceTable
from reelrank.train.validation import (CO_ENGAGEMENT_WEIGHTS, POPULARITY_WEIGHTS,
                                       TRENDING_WEIGHTS, RecentEngagement, held_moments)
from reelrank.types import HOUR_MS, Token
from tests.pipeline.test_scorer import plays_only_engine  # noqa: F401 (a fixture)


def _token(item: str, ts: int, positive: bool = True) -> Token:
    return Token(item, ts, "long_view" if positive else "play", 1.0 if positive else 0.1)


def test_recent_engagement_counts_the_window_before_a_moment():
    h = HOUR_MS
    hist = {"a": [_token("v0", 0), _token("v1", 2 * h), _token("v2", 3 * h, False),
                  _token("v1", 5 * h)],
            "b": [_token("v1", 1 * h), _token("v3", 4 * h), _token("v0", 6 * h)]}
    table = SequenceTable.from_tokens(hist, {f"v{i}": i for i in range(4)})
    assert table.ts.tolist() == [0, 2 * h, 3 * h, 5 * h, h, 4 * h, 6 * h]
    # b's last token is held out: it counts for nobody.
    past = RecentEngagement(table, np.array([4, 2]), 4, window_ms=3 * h)
    cols, values = past.trending(5 * h)  # [2h, 5h): v1 at 2h, v3 at 4h (v2 not positive)
    assert cols.tolist() == [1, 3] and np.allclose(values, np.log1p([1.0, 1.0]))
    cols, values = past.trending(6 * h + 1)  # [3h, 6h]: v3, v1 at 5h; not b's held-out v0
    assert cols.tolist() == [1, 3] and np.allclose(values, np.log1p([1.0, 1.0]))
    cols, values = past.trending(3 * h)  # [0, 3h): v0, v1 twice
    assert cols.tolist() == [0, 1] and np.allclose(values, np.log1p([1.0, 2.0]))
    # A held-out viewer asks at the time of their first held-out token.
    held = (np.array([0, 1]), np.array([3, 2]), np.array([1, 0]))
    assert held_moments(table, held) == [5 * h, 6 * h]


def test_the_weights_are_searched_one_prior_at_a_time_on_the_named_measure(monkeypatch):
    # Each prior lands in its own column, so the fake reads the weights off them: NDCG@10
    # is best at popularity 0.25, co-engagement 0.5, trending 1; Recall@50 at co-engagement 2
    # and trending 4, with popularity 2 without that trending and 0.5 with it.
    def fake(model, catalog, table, held, max_len, prior=None, per_viewer=None, cache=None):
        _, c, t = per_viewer(np.array([0]))[0] if per_viewer is not None else (0.0, 0.0, 0.0)
        p = float(prior[0]) if prior is not None else 0.0
        return {"ndcg@10": -abs(p - 0.25) - abs(c - 0.5) - abs(t - 1.0),
                "tail_recall@50": -abs(c - 2.0) - abs(t - 4.0) - abs(p - (0.5 if t == 4 else 2))}

    class Recent:
        n_items = 3

        def trending(self, now_ms):
            return np.array([2]), np.ones(1, dtype=np.float32)

    class Graph:
        def sparse_scores(self, seeds):
            return np.array([1]), np.ones(1, dtype=np.float32)

    monkeypatch.setattr(validation, "validation_metrics", fake)
    monkeypatch.setattr(validation, "held_moments", lambda table, held: [0])
    monkeypatch.setattr(validation, "held_seeds", lambda table, held: [[0]])
    log_pop = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    got = validation.prior_weights(None, None, None, None, 5, log_pop, Recent(), Graph(),
                                   {"weight": "ndcg@10", "weight@50": "tail_recall@50"})
    pop, co, trend = got["popularity"], got["co_engagement"], got["trending"]
    assert (pop["weight"], co["weight"], trend["weight"]) == (0.25, 0.5, 1.0)
    assert (pop["weight@50"], co["weight@50"], trend["weight@50"]) == (0.5, 2.0, 4.0)
    assert float(max(pop["tried"]["weight@50"], key=lambda w: pop["tried"]["weight@50"][w][
        "tail_recall@50"])) == 2.0  # the first search, before trending
    for prior, grid in ((pop["tried"], POPULARITY_WEIGHTS), (pop["tried_again"], POPULARITY_WEIGHTS),
                        (co["tried"], CO_ENGAGEMENT_WEIGHTS), (trend["tried"], TRENDING_WEIGHTS)):
        assert set(prior["weight"]) == {str(w) for w in grid}
    # Without the graph and with trending off, popularity alone.
    alone = validation.prior_weights(None, None, None, None, 5, log_pop, Recent(), None,
                                     {"weight": "ndcg@10"}, trending=False)
    assert set(alone) == {"popularity"} and alone["popularity"]["weight"] == 0.25


def test_serving_adds_weight_times_log_trending(plays_only_engine):
    engine, result = plays_only_engine
    chosen = result.metrics["retrieval_trending"]
    assert chosen["weight"] in TRENDING_WEIGHTS
    m = engine.models.current
    assert m.bundle.value_weights["trending"] == chosen["weight"]
    assert m.bundle.value_weights["popularity"] == result.metrics["retrieval_popularity"]["weight"]
    user = engine.live.user_ids()[0]
    ids = m.item_ids[:60]
    items = engine.catalog.get_many(ids)
    scores = {}
    for w in (0.0, 2.0):
        m.bundle.value_weights.update({"trending": w, "trending@50": w})
        ctx = engine.context(FeedRequest(user_id=user, n=10))
        scores[w] = retrieval_scores(m, ctx, ids, items).numpy()
    window = dict(engine.live.trending(10_000))
    expected = np.log1p(np.array([window.get(i, 0.0) for i in ids]))
    assert expected.max() > 0
    assert np.allclose(scores[2.0] - scores[0.0], 2.0 * expected, atol=1e-5)
