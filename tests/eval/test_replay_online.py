"""The replay with the trained models: static, frozen (live state only), online (weights too)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reelrank.eval.baselines import build_engine
from reelrank.eval.protocols import load_dataset, temporal_split
from reelrank.eval.replay import TrainedReplayConfig, _wanted_rows, replay_arm, replay_trained
from reelrank.registry import ModelRegistry
from reelrank.train.batch import TrainConfig, train_from_store
from reelrank.train.learner import OnlineConfig
from reelrank.train.ranker import RankerConfig
from reelrank.train.retrieval import RetrievalConfig
from tests.eval.test_protocols import bj, write_kuairand

CFG = TrainedReplayConfig(
    train=TrainConfig(retrieval=RetrievalConfig(epochs=0, dim=8, max_len=8, layers=1),
                      ranker=RankerConfig(dim=8, experts=2, expert_dim=8, history_len=8,
                                          batch_size=64), holdout=0.0),
    online=OnlineConfig(batch_size=4, max_wait_ms=0, ranker_lr=1e-2, train_retrieval=False,
                        history_len=8),
    settle_ms=0, install_every_ms=0)


@pytest.fixture
def split(tmp_path):
    # Six viewers; on odd videos (creators a1, a2, a3 in turn) the odd viewers watch to the end,
    # the even ones skip, on each of 04-29 .. 05-02, a swipe every 10 minutes.
    rows = []
    for day in ("2022-04-29", "2022-04-30", "2022-05-01", "2022-05-02"):
        for u in range(1, 7):
            for k, video in enumerate("123456"):
                likes = (u + int(video)) % 2 == 0
                rows.append((f"u{u}", video, bj(day, 8 + u, 10 * k), 20_000 if likes else 1_000,
                             {"like"} if likes and k % 2 else set()))
    rows.sort(key=lambda r: r[2])
    return temporal_split(load_dataset(f"kuairand:{write_kuairand(tmp_path / 'kr', rows)}"),
                          "2022-05-01")


def test_the_three_arms_score_alike_until_the_stream_moves_them(split, tmp_path):
    engine = build_engine(split.dataset.items, split.train_events, tmp_path / "train")
    registry = ModelRegistry(tmp_path / "models")
    train_from_store(engine.store, registry, CFG.train, progress=False)
    engine.store.close()
    wanted = _wanted_rows(split, None, 0)
    runs = {arm: replay_arm(split, arm, registry, wanted, CFG, tmp_path / arm, False)
            for arm in ("static", "frozen", "online")}
    scores = {arm: run["scores"] for arm, run in runs.items()}
    assert all(not np.isnan(s).any() for s in scores.values())
    first = int(np.argmin(split.test.ts))
    # Scored before anything of the test days is revealed: the same in every arm.
    assert scores["static"][first] == pytest.approx(scores["frozen"][first])
    assert scores["online"][first] == pytest.approx(scores["frozen"][first])
    # Live state moves the frozen model's scores; the weight updates move them further.
    assert not np.allclose(scores["static"], scores["frozen"])
    assert not np.allclose(scores["frozen"], scores["online"])
    online = runs["online"]["online"]
    assert online["steps"] > 0 and online["installs"] > 0
    assert online["rows_trained"] == len(split.test)  # each test impression learned once
    assert "online" not in runs["frozen"]


def test_the_report_has_positions_days_and_the_sample(split):
    report = replay_trained(split, CFG, arms=("frozen", "online"))
    assert set(report["arms"]) == {"frozen", "online"}
    for arm in report["arms"].values():
        assert set(arm["by_position"]) == {"1-5", "6-20", "21+"}
        assert set(arm["by_day"]) == {"2022-05-01", "2022-05-02"}
        assert arm["overall"]["impressions"] == len(split.test)
        assert arm["like_head"]["overall"]["impressions"] == len(split.test)
        assert set(arm["like_head"]["by_day"]) == {"2022-05-01", "2022-05-02"}
    assert report["scored_users"] == report["test_users"] == 6
    for arm in report["arms"].values():  # the same groups of impressions in both arms
        assert arm["same_version"]["value"]["impressions"] == len(split.test)
    paired = report["online_vs_frozen"]["value"]
    on, off = report["arms"]["online"], report["arms"]["frozen"]
    gap = on["overall"]["gauc"] - off["overall"]["gauc"]
    assert paired["overall"]["diff"] == pytest.approx(gap)
    assert set(paired["by_viewer"]) == {"in training", "new"}
    for day, entry in paired["by_day"].items():
        if entry["users"]:
            gap = on["by_day"][day]["gauc"] - off["by_day"][day]["gauc"]
            assert entry["diff"] == pytest.approx(gap)
            assert entry["low"] <= entry["diff"] <= entry["high"]
    sampled = replay_trained(split, TrainedReplayConfig(
        train=CFG.train, online=CFG.online, settle_ms=0, install_every_ms=0, score_users=2), arms=("frozen",))
    assert sampled["scored_users"] == 2
    assert sampled["arms"]["frozen"]["overall"]["impressions"] == 2 * 12


def test_online_with_a_zero_learning_rate_is_the_frozen_model(split, tmp_path):
    """The plumbing (rows, snapshots, swaps, reused encodings) changes no score by itself."""
    engine = build_engine(split.dataset.items, split.train_events, tmp_path / "train")
    registry = ModelRegistry(tmp_path / "models")
    train_from_store(engine.store, registry, CFG.train, progress=False)
    engine.store.close()
    wanted = _wanted_rows(split, None, 0)
    still = dataclasses.replace(CFG, online=dataclasses.replace(CFG.online, ranker_lr=0.0))
    frozen = replay_arm(split, "frozen", registry, wanted, still, tmp_path / "f", False)
    online = replay_arm(split, "online", registry, wanted, still, tmp_path / "o", False)
    assert online["online"]["installs"] > 0
    np.testing.assert_allclose(online["scores"], frozen["scores"], rtol=1e-5, atol=1e-6)


class _RecordingEngine:
    def __init__(self):
        self.calls = []

    def rank(self, user, items, region=None, device=None, source=None):
        from types import SimpleNamespace

        self.calls.append((user, tuple(items), region, device, source))
        return SimpleNamespace(items=[SimpleNamespace(item_id=i, score=1.0, predictions={})
                                      for i in items])


def test_a_replayed_request_carries_its_impressions_logged_context():
    from reelrank.eval.replay import _score_instant
    from reelrank.types import Event

    batch = [Event(user_id="u1", item_id="v1", type="impression", ts=5, event_id="a"),
             Event(user_id="u1", item_id="v2", type="impression", ts=5, event_id="b")]
    rows = {("u1", "v1", 5): [0], ("u1", "v2", 5): [1]}
    context = np.array([("phone", "north", "featured"), ("phone", "north", "featured")],
                       dtype=object)
    with_context, without = _RecordingEngine(), _RecordingEngine()
    _score_instant(with_context, batch, rows, np.full(2, np.nan), None, context)
    _score_instant(without, batch, rows, np.full(2, np.nan))
    assert with_context.calls == [("u1", ("v1", "v2"), "north", "phone", "featured")]
    assert without.calls == [("u1", ("v1", "v2"), None, None, None)]
