"""Cold-start curves on the synthetic world: the measure, and a tiny run of every arm."""

from __future__ import annotations

import numpy as np
import pytest

from reelrank.eval.coldstart import (
    ARMS, REFERENCE_ARMS, ColdStartConfig, _Recorder, curves, paired_finals, plot, run_coldstart,
)
from reelrank.eval.simulator import build_world
from reelrank.train.learner import OnlineConfig
from reelrank.types import Event
from tests.train.test_training import TINY


def test_curves_find_the_swipe_that_reaches_80_percent():
    cfg = ColdStartConfig(swipes=10, smooth=1, final_swipes=4)
    level = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0, 1.0, 1.0, 1.0])
    values = {"like": np.tile(level, (3, 1))}
    c = curves(values, cfg)["like"]
    assert c["final"] == 1.0 and c["first"] == 0.1
    assert c["swipes_to_80"] == 6  # 0.85 is the first >= 0.8
    # 80% of the way from 0.1 to 1.0 is 0.82: also swipe 6.
    assert c["swipes_to_80_of_gain"] == 6
    smoothed = curves(values, ColdStartConfig(swipes=10, smooth=2, final_swipes=4))["like"]
    assert smoothed["swipes_to_80"] == 7  # (0.85 + 1.0) / 2 at swipe 7
    flat = curves({"like": np.full((2, 10), 0.5)}, cfg)["like"]
    assert flat["swipes_to_80"] == 1 and flat["swipes_to_80_of_gain"] is None


def test_engaged_topics_count_only_earlier_positive_swipes():
    world = build_world(n_users=5, n_items=300, seed=3)
    viewer = world.new_viewer("new0", seed=1)
    a, b = world.topics[:2]
    a_items, b_items = world.item_ids_of_topic(a), world.item_ids_of_topic(b)

    def swipe(item_id: str, long: bool, liked: bool = False) -> list[Event]:
        duration = world.item(item_id).duration_ms
        watch = duration if long else 500
        out = [Event("i", "new0", item_id, 0, "play" if long else "skip", watch)]
        return out + ([Event("l", "new0", item_id, 0, "like")] if liked else [])

    rec = _Recorder(ColdStartConfig(new_viewers=1, swipes=5))
    assert rec.record(world, viewer, a_items[0], swipe(a_items[0], True), 0, 0)
    assert not rec.record(world, viewer, a_items[1], swipe(a_items[1], False), 0, 1)
    assert not rec.record(world, viewer, b_items[0], swipe(b_items[0], False), 0, 2)
    assert rec.record(world, viewer, b_items[1], swipe(b_items[1], False, liked=True), 0, 3)
    rec.record(world, viewer, b_items[2], swipe(b_items[2], False), 0, 4)
    # swipe 1: A was watched to the end before; swipe 3: B only skipped before; swipe 5: B liked
    assert rec.values["engaged_topics"][0].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert rec.values["positive"][0].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert rec.values["like"][0].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]


def test_paired_finals_are_per_viewer_differences():
    a = {"like": np.array([0.5, 0.2, 0.9])}
    b = {"like": np.array([0.4, 0.2, 0.6])}
    out = paired_finals(a, b)["like"]
    # differences 0.1, 0.0, 0.3: mean 0.1333; sample sd 0.1528; se 0.1528 / sqrt(3) = 0.0882
    assert out == {"diff": 0.1333, "se": 0.0882}


def test_a_tiny_run_of_every_arm(tmp_path):
    cfg = ColdStartConfig(items=200, background_users=40, sessions=1, session_swipes=10,
                          new_viewers=4, swipes=8, page_size=2, train=TINY, index_kind="exact",
                          online=OnlineConfig(batch_size=8, max_wait_ms=0), settle_ms=0,
                          retrieval_every_ms=0, smooth=2, final_swipes=3)
    report = run_coldstart(cfg, arms=ARMS + REFERENCE_ARMS)
    assert set(report["arms"]) == {"reelrank", "reelrank_frozen", "most_popular",
                                   "topic_bandit", "oracle"}
    for arm in report["arms"].values():
        for m in ("watch_ratio", "like", "positive", "affinity", "same_language", "top_topics",
                  "engaged_topics"):
            assert len(arm[m]["per_swipe"]) == 8
            assert not np.isnan(arm[m]["per_swipe"]).any()
        # nothing is engaged with before the first swipe; likes are positives
        assert arm["engaged_topics"]["per_swipe"][0] == 0.0
        assert np.all(np.array(arm["like"]["per_swipe"]) <= arm["positive"]["per_swipe"])
    online = report["arms"]["reelrank"]["online"]
    assert online["steps"] > 0 and online["installs"] > 0 and online["retrieval_installs"] > 0
    assert "online" not in report["arms"]["reelrank_frozen"]
    paired = report["online_vs_frozen"]["like"]
    on, off = report["arms"]["reelrank"]["like"], report["arms"]["reelrank_frozen"]["like"]
    assert paired["diff"] == pytest.approx(on["final"] - off["final"], abs=2e-4)
    # The same new viewers, the same most-popular list: the popular arm is deterministic.
    again = run_coldstart(cfg, arms=("most_popular",))
    assert again["arms"]["most_popular"]["like"] == report["arms"]["most_popular"]["like"]
    # The oracle shows each viewer the videos of highest hidden fit, best first: its curve
    # never rises, and no arm showing distinct videos has a larger total fit after any swipe.
    ceiling = np.array(report["arms"]["oracle"]["affinity"]["per_swipe"])
    assert np.all(np.diff(ceiling) <= 1e-9)
    for name in ("reelrank", "most_popular", "topic_bandit"):
        fits = np.array(report["arms"][name]["affinity"]["per_swipe"])
        assert np.all(np.cumsum(fits) <= np.cumsum(ceiling) + 1e-3)
    assert plot(report, tmp_path / "c.png").stat().st_size > 0
