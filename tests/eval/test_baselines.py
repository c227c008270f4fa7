"""Baselines on hand-made data, each against what is computed by hand or by a slow loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reelrank.eval import harness
from reelrank.eval.baselines import (
    EngineRecommender, ItemKNNRecommender, PopularityRecommender, RandomRecommender,
    RecentPopularityRecommender,
)
from reelrank.eval.data import Interactions
from reelrank.eval.protocols import leave_one_out_split, load_dataset, temporal_split
from tests.eval.test_protocols import write_kuairand, write_sequences, KUAIRAND_ROWS

DAY = 86_400_000


def table(user, item, ts=None, n_users=None, n_items=None) -> Interactions:
    user, item = np.asarray(user), np.asarray(item)
    n_users = n_users or int(user.max()) + 1
    n_items = n_items or int(item.max()) + 1
    ts = np.arange(len(user)) if ts is None else np.asarray(ts)
    return Interactions(np.array([f"u{k}" for k in range(n_users)], dtype=object),
                        np.array([f"i{k}" for k in range(n_items)], dtype=object),
                        user.astype(np.int32), item.astype(np.int32), ts.astype(np.int64))


def test_pop_ranks_by_count_and_its_hit_rate_is_the_hand_computed_one(tmp_path):
    # Items 0..14, item k used (15 - k) times by 60 filler users of 2 items each (training only).
    uses = [str(k) for k in range(15) for _ in range(15 - k)]
    seqs = {f"f{j}": [uses[j], uses[j + 60]] for j in range(60)}
    seqs["x"] = ["0", "1", "12"]
    seqs["y"] = ["0", "5", "3"]
    seqs["z"] = ["13", "14", "2"]
    split = leave_one_out_split(
        load_dataset(f"sequences:{write_sequences(tmp_path / 's.txt', seqs)}"))
    model = PopularityRecommender()
    model.fit(split.train)
    ids = split.index
    pop = {ids.item_ids[i]: int(c) for i, c in enumerate(split.train.item_popularity())}
    assert pop == {"0": 17, "1": 15, "2": 13, "3": 12, "4": 11, "5": 11, "6": 9, "7": 8,
                   "8": 7, "9": 6, "10": 5, "11": 4, "12": 3, "13": 3, "14": 2}
    row = model.score_users(np.array([0]))[0]
    assert [ids.item_ids[i] for i in np.argsort(-row, kind="stable")[:3]] == ["0", "1", "2"]
    run = harness.ModelRun("pop")
    harness._evaluate_next_item(model, split, run, seed=0, progress=False, chunk=2)
    # x: 10 items above 12 and 13 tied with it -> rank 11 (a miss); y (target 3): 1, 2 above
    # -> rank 2; z (target 2): 0, 1 above -> rank 2.
    m = run.metrics["next_item"]
    assert m["users"] == 3
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((0 + 0.5 + 0.5) / 3)
    assert m["mrr"] == pytest.approx((1 / 12 + 1 / 3 + 1 / 3) / 3)


def test_pop_recent_counts_the_last_days_and_breaks_ties_by_all_time():
    t = [0, 0, 0, 0, 5 * DAY, 5 * DAY - 1, 4 * DAY - 1]
    train = table([0, 1, 2, 3, 0, 1, 2], [0, 0, 0, 1, 2, 3, 1], t, n_items=5)
    model = RecentPopularityRecommender(days=1)
    model.fit(train)
    order = list(np.argsort(-model.score_users(np.array([0]))[0], kind="stable"))
    # recent (after day 4): items 2 and 3 once each; 1 and 0 none (tie -> all-time: 0 has 3)
    assert order[:2] in ([2, 3], [3, 2]) and order[2:] == [0, 1, 4]


def test_random_is_reproducible_per_user_whatever_the_chunk():
    model = RandomRecommender(seed=7)
    model.fit(table([0, 1, 2], [0, 1, 2], n_items=6))
    both = model.score_users(np.array([2, 0]))
    assert np.array_equal(both[0], model.score_users(np.array([2]))[0])
    assert not np.array_equal(both[0], both[1])


def slow_itemknn(train: Interactions, neighbors: int | None) -> np.ndarray:
    users_of = [set(train.user[train.item == i].tolist()) for i in range(train.n_items)]
    n = train.n_items
    sim = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j and users_of[i] and users_of[j]:
                sim[i, j] = len(users_of[i] & users_of[j]) / math.sqrt(
                    len(users_of[i]) * len(users_of[j]))
    if neighbors is not None:
        for i in range(n):
            ranked = [j for j in sorted(range(n), key=lambda j: (-sim[i, j], j)) if sim[i, j] > 0]
            keep = ranked[:neighbors]
            row = np.zeros(n)
            row[keep] = sim[i, keep]
            sim[i] = row
    out = np.zeros((train.n_users, n))
    for u in range(train.n_users):
        for i in set(train.item[train.user == u].tolist()):
            out[u] += sim[i]
    return out


@pytest.mark.parametrize("neighbors", [None, 3])
def test_itemknn_matches_the_slow_loop(neighbors):
    rng = np.random.default_rng(1)
    train = table(rng.integers(0, 30, 250), rng.integers(0, 25, 250), n_users=31, n_items=26)
    model = ItemKNNRecommender(neighbors=neighbors, max_pairs=40)  # many fitting blocks
    model.fit(train)
    users = np.array([3, 0, 30, 7])  # user 30 has no history: all zeros
    np.testing.assert_allclose(model.score_users(users), slow_itemknn(train, neighbors)[users],
                               rtol=1e-5, atol=1e-6)


def test_engine_model_scores_with_engine_rank_and_retrieves_its_feed(tmp_path):
    ds = load_dataset(f"kuairand:{write_kuairand(tmp_path / 'kr', KUAIRAND_ROWS)}")
    split = temporal_split(ds, "2022-05-01")
    model = EngineRecommender(feed_size=3)
    try:
        harness.fit(model, split)
        users, items = split.test.user, split.test.item
        scores = model.score_pairs(users, items)
        for u, i, s in zip(users, items, scores):
            ranked = model.engine.rank(split.index.user_ids[u], [split.index.item_ids[i]])
            assert ranked.items[0].score == pytest.approx(s)
        assert set(model.predict_tasks(users, items)) >= {"long_view", "like"}
        matrix = model.score_users(np.array([0, 1]))
        assert (np.isfinite(matrix).sum(axis=1) <= 3).all()
        # the feed never retrieves what the viewer was shown in training
        for row, u in enumerate([0, 1]):
            assert not np.isfinite(matrix[row, split.train_seen[u]]).any()
    finally:
        model.close()
