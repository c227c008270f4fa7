"""The harness end to end on tiny datasets: every requested model lands in the reports."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from reelrank.eval import harness
from reelrank.eval.command import run_eval_command
from reelrank.eval.protocols import load_dataset, temporal_split
from tests.eval.test_protocols import KUAIRAND_ROWS, write_kuairand, write_sequences

TEMPORAL_MODELS = ["random", "pop", "pop_recent", "itemknn", "engine"]
NEURAL = ["reelrank", "reelrank_ranker", "reelrank_served", "reelrank_served_plain",
          "reelrank_served_learned", "pop_3d"]


def test_kuairand_report_has_every_model_and_the_replay(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "ENGINE_RANKING_USERS", 2)  # the engine ranks 2 of 3 users
    data = write_kuairand(tmp_path / "kr", KUAIRAND_ROWS)
    out = tmp_path / "out"
    report = run_eval_command(f"kuairand:{data}", "2022-05-01", [",".join(TEMPORAL_MODELS)], out,
                              None, None, 0, False)
    saved = json.loads((out / "report.json").read_text())
    assert list(saved["models"]) == TEMPORAL_MODELS == list(report["models"])
    for name, r in saved["models"].items():
        m = r["metrics"]
        # The engine is also asked with each impression's logged context (the fixture's tab).
        assert set(m) == {"impressions", "retrieval", "beyond"} | (
            {"impressions_context"} if name == "engine" else set())
        assert set(m["retrieval"]) == {"recall@50", "recall@100", "recall@200", "users",
                                       "common_users"}
        assert m["retrieval"]["users"] == (2 if name == "engine" else 3)
        assert m["retrieval"]["common_users"]["users"] == 2
        assert r["wall_seconds"] >= 0
        if name != "engine":  # baselines give no probabilities: no LogLoss
            assert m["impressions"]["long_view"]["logloss"] is None
    assert saved["models"]["engine"]["metrics"]["impressions"]["long_view"]["logloss"] > 0
    assert saved["split"]["test_days"] == "2022-05-01..2022-05-03"
    assert set(saved["replay"]) >= {"live_on", "live_off"}
    assert "numpy" in saved["versions"]
    md = (out / "report.md").read_text()
    assert saved["command"].startswith("reelrank eval --dataset kuairand:") and saved["command"] in md
    for name in TEMPORAL_MODELS:
        assert f"| {name} |" in md
    assert "| — |" in md  # LogLoss of the baselines
    assert "Same, on the users every model was ranked for" in md
    assert "| engine | each impression's logged context |" in md
    assert "sample of 2 of 3 users" in md
    pytest.importorskip("matplotlib")
    assert (out / "replay_gauc_by_position.png").stat().st_size > 0
    assert (out / "creator_exposure_lorenz.png").stat().st_size > 0


def test_sequences_report(tmp_path):
    seqs = {f"u{u}": [str((u * 3 + k) % 9) for k in range(3 + u % 3)] for u in range(12)}
    path = write_sequences(tmp_path / "beauty.txt", seqs)
    report = run_eval_command(f"beauty:{path}", None, ["random", "pop", "itemknn"],
                              tmp_path / "out", None, None, 1, False)
    assert list(report["models"]) == ["random", "pop", "itemknn"]
    for r in report["models"].values():
        assert r["metrics"]["next_item"]["users"] == 12
        assert 0 <= r["metrics"]["next_item"]["hr@10"] <= 1
    assert "replay" not in report
    assert "| itemknn |" in (tmp_path / "out" / "report.md").read_text()


def test_the_served_feed_beside_its_components_on_kuairand(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "reelrank.eval.peers", None)
    data = write_kuairand(tmp_path / "kr", KUAIRAND_ROWS)
    names = ["pop", "reelrank", "reelrank_ranker", "reelrank_served", "reelrank_served_plain",
             "reelrank_served_learned"]
    report = run_eval_command(f"kuairand:{data}", "2022-05-01", [",".join(names)],
                              tmp_path / "out", None, None, 0, False, replay=False)
    models = report["models"]
    assert list(models) == names
    for name in ("reelrank_served", "reelrank_served_plain", "reelrank_served_learned"):
        served = models[name]["metrics"]["retrieval"]
        assert served["protocol"].startswith("served feed") and served["recall@200"] is None
        assert 0 <= served["recall@50"] <= served["recall@100"] <= 1
    # One training run, read three ways, trained as the server trains (its default config).
    versions = {models[n]["settings"]["model_version"] for n in names[1:]}
    assert len(versions) == 1
    assert models["reelrank"]["settings"]["train_config"]["retrieval"]["validation_users"] > 0
    assert "events" not in models["reelrank"]["settings"]  # impressions kept: a ranker trains
    assert models["reelrank"]["settings"]["train_metrics"]["ranker_epochs"] >= 1
    for n in names[1:]:  # /v1/rank's figures are the same in every view
        assert (models[n]["metrics"]["impressions"]["long_view"]["gauc"]
                == models["reelrank"]["metrics"]["impressions"]["long_view"]["gauc"])
    assert "| reelrank_served |" in (tmp_path / "out" / "report.md").read_text()


def test_next_item_data_are_served_from_plays_only(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "reelrank.eval.peers", None)
    seqs = {f"u{u}": [str((u * 3 + k) % 9) for k in range(4 + u % 3)] for u in range(12)}
    path = write_sequences(tmp_path / "beauty.txt", seqs)
    report = run_eval_command(f"beauty:{path}", None, ["reelrank", "reelrank_served"],
                              tmp_path / "out", None, None, 0, False)
    for name, r in report["models"].items():
        assert r["settings"]["events"].startswith("plays only")
        assert r["settings"]["train_metrics"]["ranker"].startswith("not trained")
        assert r["settings"]["train_metrics"]["implied_examples"] > 0
        assert r["metrics"]["next_item"]["users"] == 12
        assert 0 <= r["metrics"]["next_item"]["hr@10"] <= 1
    assert report["models"]["reelrank_served"]["metrics"]["next_item"]["protocol"].startswith(
        "served feed")
    # One training run read two ways, as on temporal data (not one run per view).
    assert len({r["settings"]["model_version"] for r in report["models"].values()}) == 1


def test_bad_requests_fail_early(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "reelrank.eval.peers", None)  # no slow peer imports
    path = write_sequences(tmp_path / "s.txt", {"a": ["1", "2", "3"]})
    with pytest.raises(ValueError, match="unknown model"):
        run_eval_command(f"sequences:{path}", None, ["nope"], tmp_path / "o", None, None, 0, False)
    with pytest.raises(ValueError, match="cutoff"):
        run_eval_command(f"sequences:{path}", "2022-05-01", ["pop"], tmp_path / "o", None, None,
                         0, False)


def test_available_models_lists_the_baselines_and_the_engine_and_peers_if_any(monkeypatch):
    models = harness.available_models(peers=False)
    assert list(models) == TEMPORAL_MODELS + NEURAL
    assert models["pop"]().name == "pop"
    fake = types.ModuleType("reelrank.eval.peers")
    fake.available_peers = lambda: {"fake_peer": harness.PopularityRecommender,
                                    "pop": harness.PopularityRecommender}
    monkeypatch.setitem(sys.modules, "reelrank.eval.peers", fake)
    assert list(harness.available_models()) == TEMPORAL_MODELS + NEURAL + ["fake_peer"]
    monkeypatch.setitem(sys.modules, "reelrank.eval.peers", None)  # import fails: skipped
    assert list(harness.available_models()) == TEMPORAL_MODELS + NEURAL


class Constant:
    """Scores every item alike: the pessimistic tie policy must give it nothing."""

    name = "constant"

    def fit(self, train):
        self.n_items = train.n_items

    def score_users(self, users):
        return np.zeros((len(users), self.n_items), dtype=np.float32)


def test_ties_never_flatter_retrieval(tmp_path):
    rows = list(KUAIRAND_ROWS)
    split = temporal_split(load_dataset(f"kuairand:{write_kuairand(tmp_path / 'kr', rows)}"),
                           "2022-05-01")
    run = harness.ModelRun("constant")
    model = Constant()
    model.fit(split.train)
    harness._evaluate_temporal(model, split, run, seed=0, progress=False, chunk=2,
                               recall_ks=(2, 6))
    # 6 videos, at most 3 excluded for anyone: each target ties with >= 2 non-targets, which
    # go first; with k = 6 the whole allowed catalog is listed and every target is found.
    assert run.metrics["retrieval"]["recall@2"] == 0.0
    assert run.metrics["retrieval"]["recall@6"] == 1.0
    assert run.metrics["impressions"]["long_view"]["auc"] == 0.5


def test_impression_metrics_by_hand():
    from types import SimpleNamespace

    from reelrank.eval.protocols import ImpressionSet
    from reelrank.join import TASKS

    # One user, one day, 4 impressions. Long views: items 0 and 2; item 3 was hated.
    labels = {t: np.zeros(4, dtype=np.int8) for t in TASKS}
    labels["long_view"][[0, 2]] = 1
    labels["negative"][3] = 1
    test = ImpressionSet(user=np.zeros(4, np.int32), item=np.arange(4, dtype=np.int32),
                         ts=np.arange(4, dtype=np.int64), day=np.zeros(4, np.int64),
                         position=np.arange(1, 5), labels=labels,
                         watch_ms=np.array([30_000, 1_000, 20_000, 0]),
                         watch_ratio=np.array([1.5, 0.1, 1.0, 0.0]))
    scores = np.array([0.9, 0.5, 0.4, 0.1])
    probs = {"long_view": np.array([0.8, 0.1, 0.6, 0.2])}
    m = harness.impression_metrics(SimpleNamespace(test=test), scores, probs)
    # long view pairs (pos, neg): (0.9 > 0.5), (0.9 > 0.1), (0.4 < 0.5), (0.4 > 0.1) -> 3/4
    assert m["long_view"]["auc"] == pytest.approx(0.75) == m["long_view"]["gauc"]
    assert m["long_view"]["head"]["auc"] == 1.0
    assert m["negative"]["auc"] == 1.0  # the hated item scored lowest: reversed score is right
    assert m["like"]["auc"] is None or np.isnan(m["like"]["auc"])
    assert m["like"]["logloss"] is None and m["long_view"]["logloss"] > 0
    # play time in score order 30000, 1000, 20000, 0 vs ideal 30000, 20000, 1000, 0
    dcg = 30_000 + 1_000 / np.log2(3) + 20_000 / 2
    ideal = 30_000 + 20_000 / np.log2(3) + 1_000 / 2
    assert m["watch"]["ndcg10_play_time"] == pytest.approx(dcg / ideal)


class Broken(Constant):
    name = "broken"

    def fit(self, train):
        raise RuntimeError("no luck")


def test_a_failing_model_is_reported_and_the_others_still_run(tmp_path):
    path = write_sequences(tmp_path / "s.txt", {f"u{k}": ["1", "2", str(3 + k)] for k in range(4)})
    from reelrank.eval.protocols import leave_one_out_split

    split = leave_one_out_split(load_dataset(f"sequences:{path}"))
    report, _ = harness.run(split, {"broken": Broken, "pop": harness.PopularityRecommender})
    assert report["models"]["broken"]["error"] == "RuntimeError: no luck"
    assert report["models"]["pop"]["metrics"]["next_item"]["users"] == 4
    md = harness.markdown(report)
    assert "broken: failed: RuntimeError: no luck" in md and "| pop |" in md


def test_the_served_views_sample_of_viewers_is_an_option():
    from pathlib import Path

    from reelrank.eval.command import command_line

    every = harness.available_models(peers=False, ranking_users=None)
    assert every["reelrank_served"]().max_ranking_users is None
    assert every["engine"]().max_ranking_users is None
    default = harness.available_models(peers=False)
    assert default["reelrank_served"]().max_ranking_users == harness.ENGINE_RANKING_USERS
    assert default["reelrank"]().max_ranking_users is None  # retrieval ranks every viewer
    args = dict(dataset="beauty:x", cutoff=None, models=["pop"], out=Path("o"), test_days=None,
                max_users=None, seed=0)
    assert "--ranking-users" not in command_line(**args)
    assert command_line(**args, ranking_users=None).endswith("--ranking-users 0")
