"""The served feed day by day, with the live state following the test days."""

from __future__ import annotations

import pytest

from reelrank.eval.protocols import load_dataset, temporal_split
from reelrank.eval.served_days import ServedDaysConfig, day_targets, positive_counts, served_days
from reelrank.train.batch import TrainConfig
from reelrank.train.ranker import RankerConfig
from reelrank.train.retrieval import RetrievalConfig
from tests.eval.test_protocols import bj, write_kuairand

LONG, SHORT = 20_000, 1_000


@pytest.fixture
def split(tmp_path):
    # Training days: u1..u4 see videos 1-3 (u1 and u2 watch 1 to the end). Test day 05-01:
    # u1 long-views 4 and 1 (1 was shown before: not a target), u2 skips 4, u3 long-views 5.
    # Test day 05-02: u1 long-views 4 again (shown on 05-01: not a target) and 6; u2 long-views
    # 4 (shown to u2 on 05-01, skipped: not a target) and 5; u4 long-views 5 (new to u4).
    rows = []
    for day in ("2022-04-29", "2022-04-30"):
        for u in range(1, 5):
            for k, video in enumerate("123"):
                rows.append((f"u{u}", video, bj(day, 8 + u, 10 * k),
                             LONG if (u <= 2 and video == "1") else SHORT))
    rows += [("u1", "4", bj("2022-05-01", 9), LONG), ("u1", "1", bj("2022-05-01", 10), LONG),
             ("u2", "4", bj("2022-05-01", 9), SHORT), ("u3", "5", bj("2022-05-01", 9), LONG),
             ("u1", "4", bj("2022-05-02", 9), LONG), ("u1", "6", bj("2022-05-02", 10), LONG),
             ("u2", "4", bj("2022-05-02", 9), LONG), ("u2", "5", bj("2022-05-02", 10), LONG),
             ("u4", "5", bj("2022-05-02", 9), LONG)]
    rows.sort(key=lambda r: r[2])
    return temporal_split(load_dataset(f"kuairand:{write_kuairand(tmp_path / 'kr', rows)}"),
                          "2022-05-01")


def _named(split, per_day):
    users, items = split.index.user_ids, split.index.item_ids
    return [{str(users[u]): sorted(str(items[i]) for i in t) for u, t in d.items()}
            for d in per_day.values()]


def test_a_days_targets_are_its_long_views_never_shown_before_that_day(split):
    first, second = _named(split, day_targets(split))
    assert first == {"u1": ["4"], "u3": ["5"]}
    assert second == {"u1": ["6"], "u2": ["5"], "u4": ["5"]}


def test_positives_count_the_training_period_and_each_test_day(split):
    items, days = positive_counts(split)
    ids = split.index.item_ids
    named = sorted((str(ids[i]), int(d)) for i, d in zip(items, days))
    # Training: u1 and u2 long-view 1 on both days; test: eight long views (u2 skips 4 once).
    assert [x for x, _ in named].count("1") == 5
    assert [x for x, _ in named].count("5") == 3
    assert len(named) == 4 + 8


CFG = TrainConfig(retrieval=RetrievalConfig(epochs=1, dim=8, max_len=8, layers=1),
                  ranker=RankerConfig(epochs=1, dim=8, experts=2, expert_dim=8, history_len=8,
                                      batch_size=64), holdout=0.0, topics=None)


def test_each_day_is_served_from_the_live_state_after_the_days_before(split):
    report = served_days(split, ServedDaysConfig(train=CFG, page=1, score_users=None))
    days = report["days"]
    assert list(days) == ["2022-05-01", "2022-05-02"]
    assert days["2022-05-01"]["viewers"] == 2 and days["2022-05-02"]["viewers"] == 3
    for day in days.values():
        for arm in ("served", "retrieval", "pop", "pop_recent"):
            assert 0.0 <= day[arm] <= 1.0
        assert sum(day["served_sources"].values()) > 0
    # The popularity list before 05-01 is video 1 (four long views), then the rest in catalog
    # order: u1 and u3 (shown 1-3) get 4, u1's target. Before 05-02 it is 1, then 4 and 5 (one
    # long view each on 05-01): u1 and u2 (shown 1-4) get 5, u2's target, u4 (shown 1-3) gets 4.
    assert report["overall"]["viewer_days"] == 5
    assert days["2022-05-01"]["pop"] == pytest.approx(0.5)
    assert days["2022-05-02"]["pop"] == pytest.approx(1 / 3)
    per = report["per_viewer_day"]
    assert len(per["units"]) == len(per["served"]) == len(per["pop"]) == 5
    assert per["units"][0][0] == "2022-05-01" and per["units"][-1][0] == "2022-05-02"
    assert sum(per["pop"]) / 5 == pytest.approx((0.5 * 2 + 1 / 3 * 3) / 5)


def test_the_online_arm_serves_the_next_days_pages_with_weights_learned_from_the_stream(split):
    from reelrank.train.learner import OnlineConfig

    online = OnlineConfig(batch_size=4, max_wait_ms=0, history_len=8)
    report = served_days(split, ServedDaysConfig(train=CFG, page=1, score_users=None,
                                                 online=online, settle_ms=0))
    days = report["days"]
    base = days["2022-05-01"]["version"]
    assert "+" not in base  # the first test day is served by the trained version
    assert days["2022-05-02"]["version"].startswith(base + "+")  # then by the learned one
    assert report["online"]["steps"] > 0 and report["online"]["retrieval_steps"] > 0
    assert report["online"]["installs"] == 1  # before 05-02 (nothing learned before 05-01)
