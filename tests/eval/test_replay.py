"""The engine replay: live updates change the next score; positions bucket by session."""

from __future__ import annotations

import numpy as np
import pytest

from reelrank.eval import harness
from reelrank.eval.baselines import EngineRecommender
from reelrank.eval.protocols import load_dataset, temporal_split
from reelrank.eval.replay import position_report, replay_scores, run_replay
from tests.eval.test_protocols import KUAIRAND_ROWS, bj, write_kuairand


@pytest.fixture
def split(tmp_path):
    rows = list(KUAIRAND_ROWS) + [
        # u9, new in the test days, watches video 3 (creator a2, tag 3) to the end and likes it,
        # then is shown video 4 (creator a2, tags 3 and 4).
        ("u9", "3", bj("2022-05-01", 9), 20_000, {"like"}),
        ("u9", "4", bj("2022-05-01", 10), 20_000),
    ]
    ds = load_dataset(f"kuairand:{write_kuairand(tmp_path / 'kr', rows)}")
    return temporal_split(ds, "2022-05-01")


def _row(split, user, item):
    ids, test = split.index, split.test
    return next(k for k in range(len(test))
                if ids.user_ids[test.user[k]] == user and ids.item_ids[test.item[k]] == item)


def test_a_live_event_changes_the_next_score_only_when_live(split):
    on = replay_scores(split, live=True)
    off = replay_scores(split, live=False)
    first, second = _row(split, "u9", "3"), _row(split, "u9", "4")
    assert not np.isnan(on.scores).any() and not np.isnan(off.scores).any()
    # Scored before anything of u9 is revealed: the same either way.
    assert on.scores[first] == pytest.approx(off.scores[first])
    # After the long view and like of a2's video, a2's next video ranks higher only when live.
    assert on.scores[second] > off.scores[second]
    assert off.events_ingested == 0 and on.events_ingested == len(split.test_events)


def test_replay_off_is_the_frozen_engine(split):
    off = replay_scores(split, live=False)
    model = EngineRecommender()
    try:
        harness.fit(model, split)
        frozen = model.score_pairs(split.test.user, split.test.item)
    finally:
        model.close()
    np.testing.assert_allclose(off.scores, frozen)


def test_positions_bucket_by_session(tmp_path):
    # u7 watches 22 videos on 05-01 (alternating long views and skips), 1 on 05-02.
    rows = list(KUAIRAND_ROWS[:5])
    rows += [("u7", str(1 + k % 6), bj("2022-05-01", 8, 2 * k), 20_000 if k % 2 else 1_000)
             for k in range(22)]
    rows.append(("u7", "1", bj("2022-05-02", 8), 20_000))
    split = temporal_split(load_dataset(f"kuairand:{write_kuairand(tmp_path / 'kr', rows)}"),
                           "2022-05-01")
    assert sorted(split.test.position.tolist()) == sorted(list(range(1, 23)) + [1])
    report = position_report(split, split.test.position.astype(float))
    counts = {b: r["impressions"] for b, r in report["by_position"].items()}
    assert counts == {"1-5": 6, "6-20": 15, "21+": 2}
    assert report["overall"]["impressions"] == 23
    full = run_replay(split)
    assert set(full) >= {"live_on", "live_off"}
    assert full["live_on"]["by_position"]["21+"]["impressions"] == 2
