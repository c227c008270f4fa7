"""The served score's priors as training chooses them: each held-out viewer's trending count is
the training positives in the window before the moment they asked, the weights come from one
search on the held-out measure each page size names, and serving adds weight x log(1 + the
live state's trending count)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reelrank.train import validation
from reelrank.train.retrieval import SequenceTable
from reelrank.train.validation import (CO_ENGAGEMENT_WEIGHTS, POPULARITY_WEIGHTS,
                                       TRENDING_WEIGHTS, RecentEngagement, held_moments)
from reelrank.types import HOUR_MS, Token
from tests.pipeline.test_scorer import plays_only_engine  # noqa: F401 (a fixture)
from tests.pipeline.test_scorer import scores_by_weight


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
    ids = m.item_ids[:60]
    scores = scores_by_weight(engine, engine.live.user_ids()[0], ids, "trending")
    window = dict(engine.live.trending(10_000))
    expected = np.log1p(np.array([window.get(i, 0.0) for i in ids]))
    assert expected.max() > 0
    assert np.allclose(scores[2.0] - scores[0.0], 2.0 * expected, atol=1e-5)


class _Frozen:
    """A model whose vectors the cache already holds: validation_metrics never calls it."""

    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def _slow_metrics(users, keep, target, later, table, scores):
    """Each held-out viewer on their own, as the definitions read."""
    ranks, recall, ndcg = [], [], []
    discount = 1.0 / np.log2(np.arange(10) + 2)
    for row, u in enumerate(users.tolist()):
        start = table.offsets[u]
        seen = set(table.item[start:start + keep[row]].tolist())
        sc = scores[row]
        t = int(target[row])
        ranks.append(sum(1 for i in range(len(sc)) if i not in seen and sc[i] > sc[t]))
        unseen = sorted((i for i in range(len(sc)) if i not in seen), key=lambda i: -sc[i])[:50]
        hit = np.array([i in set(later[row].tolist()) for i in unseen])
        recall.append(hit.sum() / len(later[row]))
        ndcg.append((hit[:10] * discount[:len(hit[:10])]).sum()
                    / discount[:min(10, len(later[row]))].sum())
    r = np.array(ranks)
    return {"recall@100": np.mean(r < 100), "ndcg@10": np.mean(np.where(r < 10, 1 / np.log2(r + 2), 0)),
            "tail_recall@50": np.mean(recall), "tail_ndcg@10": np.mean(ndcg)}


def test_the_chunked_measure_equals_the_definition_viewer_by_viewer():
    rng = np.random.default_rng(5)
    n_items, dim = 300, 8
    hist = {f"u{u}": [_token(f"v{i}", k) for k, i in enumerate(rng.integers(0, n_items, 40))]
            for u in range(70)}
    table = SequenceTable.from_tokens(hist, {f"v{i}": i for i in range(n_items)})
    users = np.arange(0, 70, 2)
    keep = rng.integers(5, 39, len(users))
    target = np.array([table.item[table.offsets[u] + k] for u, k in zip(users, keep)])
    later = [np.unique(table.item[table.offsets[u] + k:table.offsets[u + 1]])
             for u, k in zip(users, keep)]
    user_vectors = torch.randn(len(users), dim)
    item_vectors = torch.randn(n_items, dim)
    prior = rng.random(n_items).astype(np.float32)
    extra = rng.random((len(users), n_items)).astype(np.float32)
    # chunk 8 with 300 items: five chunks, the last one short
    cache = {"items": item_vectors, **{("users", s, 8): user_vectors[s:s + 8]
                                       for s in range(0, len(users), 8)}}
    got = validation.validation_metrics(_Frozen(), None, table, (users, keep, target, later), 5,
                                        chunk=8, prior=prior, per_viewer=lambda rows: extra[rows],
                                        cache=cache)
    scores = (user_vectors @ item_vectors.T).numpy() + prior + extra
    want = _slow_metrics(users, keep, target, later, table, scores)
    assert got["users"] == len(users)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-9), k
