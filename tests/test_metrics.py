"""Metric tests: hand-computed values (worked out in comments) and fast paths vs slow paths."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from reelrank import metrics as m

# ------------------------------------------------------------------ classification


def test_auc_hand_case():
    # positives score 0.9, 0.3; negatives 0.8, 0.1.
    # pairs: 0.9>0.8 (1), 0.9>0.1 (1), 0.3<0.8 (0), 0.3>0.1 (1) -> 3/4
    assert m.auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)


def test_auc_ties_count_half():
    # one pos, one neg, same score -> 0.5
    assert m.auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # pos 0.7, 0.5; neg 0.5, 0.2: pairs 1 + 1 + 0.5 (tie) + 1 = 3.5 of 4
    assert m.auc([1, 1, 0, 0], [0.7, 0.5, 0.5, 0.2]) == pytest.approx(0.875)


def test_auc_undefined_and_invalid():
    assert math.isnan(m.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(m.auc([], []))
    with pytest.raises(ValueError):
        m.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        m.auc([0, 1], [0.1])


def _slow_auc(labels, scores):
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def test_auc_matches_pairwise_on_random_data():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        labels[0], labels[1] = 0, 1
        # small integer scores force many ties on half the trials
        scores = rng.integers(0, 5, n).astype(float) if trial % 2 else rng.normal(size=n)
        assert m.auc(labels, scores) == pytest.approx(_slow_auc(labels, scores))


def test_gauc_excludes_single_class_users_and_weights_by_impressions():
    users = ["a"] * 4 + ["b"] * 2 + ["c"] * 3
    labels = [1, 0, 1, 0] + [1, 0] + [1, 1, 1]
    scores = [0.9, 0.8, 0.3, 0.1] + [0.2, 0.6] + [0.5, 0.4, 0.3]
    # a: AUC 0.75 over 4 impressions; b: AUC 0 over 2; c has only positives -> excluded.
    # (4 * 0.75 + 2 * 0) / 6 = 0.5
    value, n_users, n_impr = m.gauc_detail(users, labels, scores)
    assert value == pytest.approx(0.5)
    assert (n_users, n_impr) == (2, 6)
    assert m.gauc(users, labels, scores) == pytest.approx(0.5)


def test_gauc_no_usable_user():
    value, n_users, n_impr = m.gauc_detail([1, 2], [1, 0], [0.3, 0.2])
    assert math.isnan(value) and (n_users, n_impr) == (0, 0)


def test_gauc_matches_per_user_loop():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 15, 300)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 4, 300).astype(float)
    num = den = 0.0
    for u in np.unique(users):
        sel = users == u
        if 0 < labels[sel].sum() < sel.sum():
            num += sel.sum() * _slow_auc(labels[sel], scores[sel])
            den += sel.sum()
    assert m.gauc(users, labels, scores) == pytest.approx(num / den)


def test_paired_gauc_difference_hand_computed():
    users = ["a"] * 4 + ["b"] * 2 + ["c"] * 3
    labels = [1, 0, 1, 0] + [1, 0] + [1, 1, 1]
    a = [0.9, 0.8, 0.3, 0.1] + [0.2, 0.6] + [0.5, 0.4, 0.3]  # a: 0.75, b: 0 -> GAUC 0.5
    b = [0.9, 0.1, 0.8, 0.3] + [0.6, 0.2] + [0.1, 0.2, 0.3]  # a: 1.0, b: 1.0 -> GAUC 1.0
    out = m.paired_gauc_difference(users, labels, a, b, n_boot=500)
    # per user differences -0.25 (4 impressions) and -1.0 (2): (4 * -0.25 + 2 * -1) / 6 = -0.5
    assert out["diff"] == pytest.approx(-0.5)
    assert out["diff"] == pytest.approx(m.gauc(users, labels, a) - m.gauc(users, labels, b))
    assert out["users"] == 2 and out["share_a_better"] == 0.0
    # resampling two users: the mean is -0.25, -1.0 or a weighted mix of them, never outside
    assert -1.0 - 1e-12 <= out["low"] <= out["diff"] <= out["high"] <= -0.25 + 1e-12


def test_paired_gauc_difference_same_scores_and_a_real_gain():
    rng = np.random.default_rng(3)
    users = rng.integers(0, 200, 4000)
    labels = rng.integers(0, 2, 4000)
    noise = rng.normal(size=4000)
    same = m.paired_gauc_difference(users, labels, noise, noise)
    assert same["diff"] == same["low"] == same["high"] == 0.0 and same["share_a_better"] == 0.5
    better = m.paired_gauc_difference(users, labels, noise + 0.8 * labels, noise)
    assert better["low"] > 0.0  # an informative score wins clearly, per user and overall
    worse = m.paired_gauc_difference(users, labels, noise, noise + 0.8 * labels)
    assert worse["high"] < 0.0
    assert math.isnan(m.paired_gauc_difference([1, 2], [1, 0], [0.3, 0.2], [0.1, 0.2])["diff"])


def test_logloss_two_elements_and_clipping():
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.2231436 + 0.5108256) / 2 = 0.3669846
    assert m.logloss([1, 0], [0.8, 0.4]) == pytest.approx(0.3669846, abs=1e-6)
    # confidently wrong: clipped to -ln(1e-7) = 16.1181 per element instead of inf
    assert m.logloss([0, 1], [1.0, 0.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert math.isnan(m.logloss([], []))


# ------------------------------------------------------------------ graded ranking


def test_ndcg_at_k_known_ideal_order():
    # ranked rels [1, 3, 0, 2], k=3: DCG = 1/log2(2) + 3/log2(3) + 0 = 1 + 1.892789 = 2.892789
    # ideal [3, 2, 1]: 3 + 2/log2(3) + 1/log2(4) = 3 + 1.261860 + 0.5 = 4.761860 -> 0.607492
    assert m.ndcg_at_k([1, 3, 0, 2], 3) == pytest.approx(0.607492, abs=1e-6)
    assert m.ndcg_at_k([3, 2, 1, 0], 2) == pytest.approx(1.0)
    assert m.ndcg_at_k([0, 1], 10) == pytest.approx(1 / math.log2(3))  # k beyond the list


def test_ndcg_at_k_undefined_and_invalid():
    assert math.isnan(m.ndcg_at_k([0, 0, 0], 3))
    assert math.isnan(m.ndcg_at_k([], 3))
    with pytest.raises(ValueError):
        m.ndcg_at_k([1, 0], 0)
    with pytest.raises(ValueError):
        m.ndcg_at_k([-1, 0], 2)


def test_grouped_ndcg_hand_case():
    groups = ["g1"] * 3 + ["g2"] * 2 + ["g3"]
    rels = [2, 0, 1] + [0, 0] + [1]
    scores = [0.1, 0.9, 0.5] + [0.3, 0.2] + [0.7]
    # g1 ranked by score: rels 0, 1, 2 -> DCG@2 = 0 + 1/log2(3) = 0.630930
    #    ideal 2, 1 -> 2 + 0.630930 = 2.630930 -> 0.239812
    # g2 has no positive -> skipped; g3 single positive -> 1.0; mean = 0.619906
    assert m.grouped_ndcg_at_k(groups, rels, scores, 2) == pytest.approx(0.619906, abs=1e-6)


def test_grouped_ndcg_ties_are_pessimistic_and_order_free():
    # equal scores: the zero-relevance item is put first whatever the input order -> NDCG@1 = 0
    assert m.grouped_ndcg_at_k([0, 0], [1, 0], [0.5, 0.5], 1) == 0.0
    assert m.grouped_ndcg_at_k([0, 0], [0, 1], [0.5, 0.5], 1) == 0.0
    assert math.isnan(m.grouped_ndcg_at_k([0, 1], [0, 0], [0.5, 0.4], 1))
    assert math.isnan(m.grouped_ndcg_at_k([], [], [], 1))


def test_grouped_ndcg_matches_per_group_loop():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 12, 200)
    rels = rng.integers(0, 4, 200).astype(float) * (rng.random(200) < 0.5)
    scores = rng.normal(size=200)  # distinct scores: the plain sort is unambiguous
    values = []
    for g in np.unique(groups):
        sel = groups == g
        order = np.argsort(-scores[sel])
        value = m.ndcg_at_k(rels[sel][order], 5)
        if not math.isnan(value):
            values.append(value)
    assert m.grouped_ndcg_at_k(groups, rels, scores, 5) == pytest.approx(np.mean(values))


# ------------------------------------------------------------------ retrieval / next item


def test_recall_at_k():
    # relevant {3, 1, 7}: top-2 [5, 3] finds 3 -> 1/3; top-4 finds 3 and 1 -> 2/3
    assert m.recall_at_k([5, 3, 9, 1], {3, 1, 7}, 2) == pytest.approx(1 / 3)
    assert m.recall_at_k([5, 3, 9, 1], {3, 1, 7}, 4) == pytest.approx(2 / 3)
    assert m.recall_at_k([], {3}, 4) == 0.0
    assert math.isnan(m.recall_at_k([5, 3], set(), 2))


def test_single_target_metrics():
    # rank 2 (0-based): HR@2 = 0, HR@3 = 1; NDCG@3 = 1/log2(4) = 0.5; MRR = 1/3
    assert m.hit_rate_at_k(2, 2) == 0.0
    assert m.hit_rate_at_k(2, 3) == 1.0
    assert m.ndcg_at_k_single(2, 3) == pytest.approx(0.5)
    assert m.ndcg_at_k_single(2, 2) == 0.0
    assert m.mrr(2) == pytest.approx(1 / 3)
    # averaged: ranks 0 and 2 -> HR@1 = 0.5, NDCG@3 = (1 + 0.5)/2, MRR = (1 + 1/3)/2
    assert m.hit_rate_at_k([0, 2], 1) == 0.5
    assert m.ndcg_at_k_single([0, 2], 3) == pytest.approx(0.75)
    assert m.mrr([0, 2]) == pytest.approx(2 / 3)


def test_unreachable_target_scores_zero():
    assert m.hit_rate_at_k(np.inf, 10) == 0.0
    assert m.ndcg_at_k_single(np.inf, 10) == 0.0
    assert m.mrr(np.inf) == 0.0
    assert math.isnan(m.mrr([]))
    with pytest.raises(ValueError):
        m.mrr(-1)


def test_target_ranks_hand_case():
    scores = np.array([[0.1, 0.5, 0.5, 0.9]] * 5)
    targets = np.array([1, 1, 1, 3, -1])
    exclude = [[], [3], [1], [], []]
    ranks = m.target_ranks(scores, targets, exclude)
    # user 0: one higher (0.9) + one tie (item 2) -> pessimistic rank 2
    # user 1: item 3 excluded -> only the tie remains -> 1
    # user 2: the target itself is excluded -> inf; user 3: top item -> 0; user 4: no target -> inf
    assert ranks.tolist() == [2.0, 1.0, np.inf, 0.0, np.inf]


def test_target_ranks_not_retrieved_and_constant_scores():
    scores = np.array([[0.3, -np.inf, 0.1], [0.2, np.nan, 0.4]])
    assert m.target_ranks(scores, [1, 1]).tolist() == [np.inf, np.inf]
    # NaN competitors never outrank the target
    assert m.target_ranks(scores, [0, 2]).tolist() == [0.0, 0.0]
    # a model scoring everything equally gets the worst possible rank
    assert m.target_ranks(np.zeros((1, 6)), [0]).tolist() == [5.0]


def test_target_ranks_matches_plain_loop_for_every_exclude_format():
    rng = np.random.default_rng(3)
    n_users, n_items = 30, 25
    scores = rng.integers(0, 6, (n_users, n_items)).astype(float)  # many ties
    targets = rng.integers(0, n_items, n_users)
    exclude = [rng.choice(n_items, int(rng.integers(0, 6)), replace=False) for _ in range(n_users)]
    expected = []
    for u in range(n_users):
        t = targets[u]
        if t in exclude[u]:
            expected.append(np.inf)
            continue
        others = [i for i in range(n_items) if i != t and i not in exclude[u]]
        expected.append(sum(scores[u, i] >= scores[u, t] for i in others))
    mask = np.zeros((n_users, n_items), dtype=bool)
    for u, e in enumerate(exclude):
        mask[u, e] = True
    csr = SimpleNamespace(
        indptr=np.concatenate(([0], np.cumsum([len(e) for e in exclude]))),
        indices=np.concatenate(exclude),
    )
    for form in (exclude, mask, csr):
        assert m.target_ranks(scores, targets, form).tolist() == expected


def test_target_ranks_rejects_bad_input():
    with pytest.raises(ValueError):
        m.target_ranks(np.zeros((2, 3)), [0])
    with pytest.raises(ValueError):
        m.target_ranks(np.zeros((1, 3)), [0], [[5]])
    with pytest.raises(ValueError):
        m.target_ranks(np.zeros((1, 3)), [3])


# ------------------------------------------------------------------ beyond accuracy


def test_catalog_coverage():
    # items {0, 1, 2} of 10
    assert m.catalog_coverage([[0, 1], [1, 2]], 10) == pytest.approx(0.3)
    assert m.catalog_coverage([], 10) == 0.0


def test_gini_n_based():
    assert m.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    # sorted [0, 0, 0, 1]: (2*4 - 4 - 1) * 1 / (4 * 1) = 3/4
    assert m.gini([0, 0, 0, 1]) == pytest.approx(0.75)
    # [1, 3]: ((2-3)*1 + (4-3)*3) / (2 * 4) = 2/8
    assert m.gini([3, 1]) == pytest.approx(0.25)
    assert math.isnan(m.gini([0, 0]))
    assert math.isnan(m.gini([]))


def test_lorenz_curve_and_its_area_give_gini():
    x, y = m.lorenz_curve([0, 0, 0, 1])
    assert x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert y.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    counts = np.random.default_rng(4).integers(0, 50, 40)
    x, y = m.lorenz_curve(counts)
    area = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
    assert m.gini(counts) == pytest.approx(1 - 2 * area)


def test_popularity_percentile():
    # popularity [10, 0, 5, 5]: ascending average ranks item1=1, items2,3=2.5, item0=4
    # -> percentiles 1.0, 0.25, 0.625, 0.625; slots 0, 2, 1 -> (1 + 0.625 + 0.25) / 3 = 0.625
    assert m.popularity_percentile([[0, 2], [1]], [10, 0, 5, 5]) == pytest.approx(0.625)
    assert math.isnan(m.popularity_percentile([[]], [1, 2]))


def test_intra_list_diversity_jaccard():
    tags = {0: {"a", "b"}, 1: {"b", "c"}, 2: {"d"}, 3: set(), 4: set()}
    # [0, 1]: |{b}| / |{a, b, c}| = 1/3 -> distance 2/3
    assert m.intra_list_diversity([[0, 1]], tags) == pytest.approx(2 / 3)
    # [0, 1, 2]: pairs 2/3, 1, 1 -> 8/9; the one-item list is skipped; mean (2/3 + 8/9) / 2 = 7/9
    assert m.intra_list_diversity([[0, 1], [0, 1, 2], [2]], tags) == pytest.approx(7 / 9)
    # two untagged items count as identical
    assert m.intra_list_diversity([[3, 4]], tags) == 0.0
    assert math.isnan(m.intra_list_diversity([[0], []], tags))


def test_new_creator_share():
    creators = ["c0", "c0", "c1", "c2"]
    # user 0: item 0 (c0, seen), item 2 (c1, new); user 1: item 3 (c2, new) -> 2 of 3
    assert m.new_creator_share([[0, 2], [3]], creators, [{"c0"}, set()]) == pytest.approx(2 / 3)
    assert math.isnan(m.new_creator_share([[]], creators, [set()]))
    with pytest.raises(ValueError):
        m.new_creator_share([[0]], creators, [])


def test_topic_entropy():
    assert m.topic_entropy([2, 2]) == pytest.approx(1.0)  # two equal topics: 1 bit
    assert m.topic_entropy([4, 0]) == pytest.approx(0.0)
    assert m.topic_entropy({"a": 1, "b": 1, "c": 1, "d": 1}) == pytest.approx(2.0)
    # [1, 1, 0, 0]: 1 bit of at most log2(4) = 2 -> 0.5
    assert m.topic_entropy([1, 1, 0, 0], normalized=True) == pytest.approx(0.5)
    assert math.isnan(m.topic_entropy([0, 0]))


def test_session_position_bucket():
    from reelrank.eval.replay import session_position_bucket

    cases = {1: "1-5", 5: "1-5", 6: "6-20", 20: "6-20", 21: "21+", 300: "21+"}
    for position, bucket in cases.items():
        assert session_position_bucket(position) == bucket
    with pytest.raises(ValueError):
        session_position_bucket(0)


def test_paired_mean_difference_of_hand_computed_units():
    from reelrank.metrics import paired_mean_difference

    out = paired_mean_difference([0.5, 0.0, 1.0, 0.25], [0.25, 0.0, 0.5, 0.25])
    assert out["diff"] == pytest.approx(0.1875) and out["n"] == 4
    assert out["low"] <= out["diff"] <= out["high"]
    assert 0.0 <= out["low"] and out["high"] <= 0.5  # the unit differences are 0 .. 0.5
    shifted = paired_mean_difference([0.3, 0.6, 0.9], [0.2, 0.5, 0.8])
    assert shifted["low"] == pytest.approx(0.1) and shifted["high"] == pytest.approx(0.1)
    assert np.isnan(paired_mean_difference([], [])["diff"])
