"""``reelrank audit`` and the simulation audit behind it, on tiny worlds."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from reelrank.eval.audit import SETTINGS, audit_simulation, settings_named
from reelrank.cli import app

TINY = dict(users=30, items=600, days=2, swipes=15, seed=3)


@pytest.fixture(scope="module")
def runs() -> dict[str, dict]:
    return {name: audit_simulation(SETTINGS[name], **TINY) for name in ("off", "strong")}


def test_the_figures_add_up(runs):
    for r in runs.values():
        assert 0 < r["slots"] <= 10 * r["pages"]
        assert r["swipes"] <= r["slots"]  # viewers leave before the end of a page
        assert 0.0 <= r["creator_exposure_gini"] <= 1.0
        assert 0.0 < r["catalog_coverage"] <= 1.0
        assert [b["start_ms"] for b in r["over_time"]] == sorted(b["start_ms"] for b in r["over_time"])
        assert len(r["over_time"]) == TINY["days"]
        assert r["new_creators"] == runs["off"]["new_creators"]  # one world for every setting


def test_off_never_explores_and_strong_diversifies(runs):
    off, strong = runs["off"], runs["strong"]
    assert off["exploration_share"] == 0.0
    assert strong["exploration_share"] >= 0.19  # 20% of slots guaranteed, when there is a candidate
    assert strong["per_user_topic_entropy_bits"] > off["per_user_topic_entropy_bits"]
    assert strong["new_creator_exposure_share"] > off["new_creator_exposure_share"]


def test_settings_are_looked_up_by_name():
    assert [s.name for s in settings_named("off, default")] == ["off", "default"]
    with pytest.raises(ValueError, match="unknown settings"):
        settings_named("off,loud")


def test_the_audit_command_writes_its_report(tmp_path):
    out = tmp_path / "audit"
    result = CliRunner().invoke(app, ["audit", "--users", "12", "--items", "300", "--days", "1",
                                      "--swipes", "8", "--settings", "off,default", "--out",
                                      str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "| off |" in result.output and "| default |" in result.output
    rows = json.loads((out / "report.json").read_text())
    assert [r["setting"] for r in rows] == ["off", "default"]
    assert all(not (isinstance(v, float) and math.isnan(v)) for r in rows for v in r.values())
    assert "creator Gini" in (out / "report.md").read_text()


def test_the_audit_command_names_a_bad_setting():
    result = CliRunner().invoke(app, ["audit", "--settings", "loud", "--no-progress"])
    assert result.exit_code == 2 and "loud" in result.output


def test_the_kuairand_replay_audit(tmp_path):
    from reelrank.eval.fairness_replay import audit_replay
    from tests.eval.test_protocols import KUAIRAND_ROWS, bj, write_kuairand

    # u8 is shown every video on the first test day: a slate to re-rank.
    rows = list(KUAIRAND_ROWS) + [("u8", str(v), bj("2022-05-01", 10, v), 20_000 if v % 2 else 900)
                                  for v in range(1, 7)]
    folder = write_kuairand(tmp_path / "kr", rows)
    got = audit_replay(folder, settings_named("off,strong"), cutoff="2022-05-01", test_days=2,
                       max_users=None, pools=(2, 4), new_creator_impressions=2)
    off, strong = got
    assert off["gauc_long_view"] == strong["gauc_long_view"]  # re-ranking leaves scores alone
    assert off["slates"] == strong["slates"] == 1  # only u8 saw at least 5 test videos
    assert 0.0 < off["slate_ndcg10_long_view"] <= 1.0
    assert off["pages"] == strong["pages"] > 0  # one feed per viewer and active local day
    assert off["exploration_share"] == 0.0
    assert off["replay"]["test_events_replayed"] == strong["replay"]["test_events_replayed"] > 0
