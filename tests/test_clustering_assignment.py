"""``clustering.min_cost_assignment`` against the two references it stands in for: every
pairing tried (small matrices), and scipy's ``linear_sum_assignment`` (larger ones)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from reelrank.clustering import min_cost_assignment


def brute_force(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(sum(cost[i, j] for i, j in enumerate(cols))
                   for cols in itertools.permutations(range(m), n))
    return brute_force(cost.T)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 1), (3, 3), (3, 5), (5, 3), (5, 5),
                                   (4, 6), (6, 4)])
def test_the_least_total_cost_of_every_pairing(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.integers(-5, 6, size=shape).astype(float)  # ties on purpose
        rows, cols = min_cost_assignment(cost)
        assert len(rows) == min(shape)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert list(rows) == sorted(rows)
        assert cost[rows, cols].sum() == pytest.approx(brute_force(cost))


def test_the_same_pairs_as_scipy_where_the_best_is_unique():
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    for shape in [(8, 8), (20, 30), (30, 20), (64, 64), (100, 3), (3, 100)]:
        cost = rng.random(shape)  # no ties: one best pairing
        ours = min_cost_assignment(cost)
        theirs = optimize.linear_sum_assignment(cost)
        assert [a.tolist() for a in ours] == [a.tolist() for a in theirs], shape
        # maximising, as the topic and community matches do (negated Jaccard)
        ours = min_cost_assignment(-cost)
        theirs = optimize.linear_sum_assignment(-cost)
        assert [a.tolist() for a in ours] == [a.tolist() for a in theirs], shape


def test_empty_and_bad_input():
    rows, cols = min_cost_assignment(np.zeros((0, 3)))
    assert rows.size == 0 and cols.size == 0
    with pytest.raises(ValueError):
        min_cost_assignment(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        min_cost_assignment(np.zeros(3))
