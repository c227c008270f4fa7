"""The served score's co-engagement prior: the graph training rebuilds from the histories is
the live state's own, the serving term is weight x log(1 + the recency-weighted sum of the
viewer's last positives' rows), and the weight is in the grid the held-out search tries
(tests/train/test_served_priors.py)."""

from __future__ import annotations

import numpy as np
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.neural import log_co_engagement
from reelrank.store import new_catalog, new_live_state
from reelrank.train.retrieval import SequenceTable
from reelrank.train.validation import CO_ENGAGEMENT_WEIGHTS, CoEngagementGraph, held_seeds
from reelrank.types import Event, Item, Token
from tests.pipeline.test_scorer import plays_only_engine  # noqa: F401 (a fixture)
from tests.pipeline.test_scorer import scores_by_weight


def _token(item: str, ts: int, positive: bool) -> Token:
    return Token(item, ts, "long_view" if positive else "play", 1.0 if positive else 0.1)


def _histories(rng: np.random.Generator, users: int, items: int) -> dict[str, list[Token]]:
    out = {}
    for u in range(users):
        picks = rng.integers(0, items, size=rng.integers(2, 30))
        out[f"u{u}"] = [_token(f"v{i}", 1000 * k, bool(rng.random() < 0.7))
                        for k, i in enumerate(picks)]
    return out


def test_the_graph_training_rebuilds_is_the_live_states():
    rng = np.random.default_rng(3)
    histories = _histories(rng, 25, 40)
    index = {f"v{i}": i for i in range(40)}
    table = SequenceTable.from_tokens(histories, index)
    graph = CoEngagementGraph(table, np.diff(table.offsets), 40)
    catalog = new_catalog()
    catalog.upsert([Item(f"v{i}", f"c{i % 5}", 10_000, 0) for i in range(40)])
    live = new_live_state(catalog)
    for user, toks in histories.items():
        for k, t in enumerate(toks):
            live.apply(Event(f"{user}-{k}", user, t.item_id, t.ts, "play",
                             watch_ms=10_000 if t.positive else 500))
    for item in range(40):
        lo, hi = graph.indptr[item], graph.indptr[item + 1]
        mine = dict(zip(graph.cols[lo:hi].tolist(), graph.counts[lo:hi].tolist()))
        theirs = {index[o]: float(c) for o, c in live.co_engaged(f"v{item}", 1000)}
        assert mine == theirs, item
    # A viewer's seeds are their last positives as the live state keeps them, oldest first.
    users = np.arange(len(table))
    held = (users, np.diff(table.offsets), np.zeros(len(users), dtype=np.int64))
    for u, seeds in zip(users.tolist(), held_seeds(table, held)):
        kept = list(live.user(table.user_ids[u]).positives)[-len(seeds):] if seeds else []
        assert [f"v{s}" for s in seeds] == kept


def test_the_graph_scores_sum_the_seeds_rows_the_latest_counting_most():
    hist = {"a": [_token("v0", 0, True), _token("v1", 1, True), _token("v2", 2, True)],
            "b": [_token("v1", 0, True), _token("v3", 1, True)]}
    table = SequenceTable.from_tokens(hist, {f"v{i}": i for i in range(4)})
    graph = CoEngagementGraph(table, np.diff(table.offsets), 4)
    # rows: v0-{v1:1, v2:1}; v1-{v0:1, v2:1, v3:1}; v3-{v1:1}
    got = graph.scores([0, 1])  # v1 latest (weight 1), v0 before it (weight 1/2)
    expected = np.log1p(np.array([1.0, 0.5, 1.0 + 0.5, 1.0]))
    assert np.allclose(got, expected)
    cols, values = graph.sparse_scores([0, 1])
    assert cols.tolist() == [0, 1, 2, 3] and np.allclose(values, expected)
    # The held-out part of a history adds no pair: ends cut b before v3.
    cut = CoEngagementGraph(table, np.array([3, 1]), 4)
    assert cut.scores([3]).sum() == 0.0


def test_serving_adds_weight_times_log_co_engagement(plays_only_engine):
    engine, result = plays_only_engine
    chosen = result.metrics["retrieval_co_engagement"]
    assert chosen["weight"] in CO_ENGAGEMENT_WEIGHTS
    m = engine.models.current
    assert m.bundle.value_weights["co_engagement"] == chosen["weight"]
    user = next(u for u in engine.live.user_ids() if len(engine.live.user(u).positives) > 2)
    ids = m.item_ids[:60]
    scores = scores_by_weight(engine, user, ids, "co_engagement")
    # By hand: the viewer's last 10 positives, the k-th latest weighted 1 / (1 + k).
    seeds = list(engine.live.user(user).positives)[-10:]
    acc = dict.fromkeys(ids, 0.0)
    for k, seed in enumerate(reversed(seeds)):
        for other, count in engine.live.co_engaged(seed, 1000):
            if other in acc:
                acc[other] += count / (1 + k)
    expected = np.log1p(np.array([acc[i] for i in ids]))
    assert expected.max() > 0
    assert np.allclose(scores[2.0] - scores[0.0], 2.0 * expected, atol=1e-5)
    ctx = engine.context(FeedRequest(user_id=user, n=10))
    assert np.allclose(log_co_engagement(ctx, ids), expected, atol=1e-6)


def test_a_whole_row_comes_back_as_most_common_orders_it():
    # The live state answers a large request with one sort: the same list, ties included.
    rng = np.random.default_rng(1)
    catalog = new_catalog()
    catalog.upsert([Item(f"v{i}", "c", 10_000, 0) for i in range(60)])
    live = new_live_state(catalog)
    for u in range(80):
        for k, i in enumerate(rng.integers(0, 60, size=12)):
            live.apply(Event(f"{u}-{k}", f"u{u}", f"v{i}", k, "play", watch_ms=10_000))
    row = live._co["v0"]  # the backend's own counter, as the slow reference
    assert len(row) > 20 and len(set(row.values())) < len(row)  # ties to keep in order
    for n in (1, 5, len(row) // 4, len(row) // 2, len(row), 1000):
        assert live.co_engaged("v0", n) == row.most_common(n)
