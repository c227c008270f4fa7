"""Splits on tiny datasets written by the tests: which side of the cut-off, which targets."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from reelrank.eval.protocols import (
    day_start_ms, leave_one_out_split, load_dataset, parse_spec, temporal_split,
)

BEIJING = timezone(timedelta(hours=8))
LOG_HEADER = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
              "is_follow", "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms",
              "duration_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter",
              "is_rand", "tab"]
VIDEO_HEADER = ["video_id", "author_id", "video_type", "upload_dt", "upload_type",
                "visible_status", "video_duration", "server_width", "server_height", "music_id",
                "music_type", "tag"]
# video -> (author, tags); every video lasts 20 s
VIDEOS = {"1": ("a1", "1,2"), "2": ("a1", "2"), "3": ("a2", "3"), "4": ("a2", "3,4"),
          "5": ("a3", "5"), "6": ("a3", "5,6")}


def bj(day: str, hh: int = 12, mm: int = 0) -> int:
    """Epoch ms of ``day`` hh:mm in Beijing time."""
    d = datetime.fromisoformat(day).replace(hour=hh, minute=mm, tzinfo=BEIJING)
    return int(d.timestamp() * 1000)


def write_kuairand(folder: Path, rows: list[tuple]) -> Path:
    """rows: (user, video, time_ms, play_ms[, flags]) with flags a set of 'like', 'hate', ..."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "video_features_basic_pure.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(VIDEO_HEADER)
        for vid, (author, tags) in VIDEOS.items():
            w.writerow([vid, author, "NORMAL", "2022-04-01", "Short", 0, 20_000, 720, 1280,
                        0, "", tags])
    with open(folder / "log_standard_2022-04-25_to_2022-05-04.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LOG_HEADER)
        for row in rows:
            user, video, ts, play = row[:4]
            flags = row[4] if len(row) > 4 else set()
            local = datetime.fromtimestamp(ts / 1000, BEIJING)
            w.writerow([user, video, local.strftime("%Y%m%d"), local.hour * 100, ts, 1,
                        int("like" in flags), int("follow" in flags), int("comment" in flags),
                        int("share" in flags), int("hate" in flags), int(play >= 18_000), play,
                        20_000, 0, 0, 0, 0, 1])
    return folder


def write_sequences(path: Path, sequences: dict[str, list[str]]) -> Path:
    path.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in sequences.items()))
    return path


# A small KuaiRand world: train days 04-29..04-30, test days 05-01..05-02.
KUAIRAND_ROWS = [
    ("u1", "1", bj("2022-04-29"), 20_000, {"like"}),
    ("u1", "3", bj("2022-04-29", 13), 1_000),
    ("u1", "2", bj("2022-04-30", 23, 59), 19_000),   # 15:59 UTC on 04-30: train
    ("u2", "1", bj("2022-04-30", 10), 20_000),
    ("u2", "4", bj("2022-04-30", 11), 500, {"hate"}),
    ("u1", "5", bj("2022-05-01", 0, 0), 20_000),     # still 04-30 in UTC, but test day 1
    ("u1", "2", bj("2022-05-01", 0, 5), 20_000),     # seen in train: not a retrieval target
    ("u1", "6", bj("2022-05-01", 9), 2_000),
    ("u2", "3", bj("2022-05-01", 9), 20_000),
    ("u3", "6", bj("2022-05-02", 8), 3_000),
    ("u3", "5", bj("2022-05-03", 8), 20_000),        # after a 2-day test window
]


@pytest.fixture
def kuairand_dir(tmp_path):
    return write_kuairand(tmp_path / "kr", KUAIRAND_ROWS)


def test_parse_spec():
    assert parse_spec("beauty:/x/beauty.txt") == ("beauty", Path("/x/beauty.txt"))
    for bad in ("kuairand", "nope:/x", "kuairand:"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_temporal_split_uses_beijing_days(kuairand_dir):
    ds = load_dataset(f"kuairand:{kuairand_dir}")
    split = temporal_split(ds, "2022-05-01", test_days=2)
    assert split.cutoff_ms == day_start_ms("2022-05-01", 8) == bj("2022-05-01", 0, 0)
    ids = split.index
    train = {(ids.user_ids[u], ids.item_ids[i]) for u, i in zip(split.train.user, split.train.item)}
    # positives of the train days only: long views and likes, not the hated or skipped ones
    assert train == {("u1", "1"), ("u1", "2"), ("u2", "1")}
    test = sorted((ids.user_ids[u], ids.item_ids[i], int(t))
                  for u, i, t in zip(split.test.user, split.test.item, split.test.ts))
    assert test == sorted((r[0], r[1], r[2]) for r in KUAIRAND_ROWS[5:10])
    assert all(t >= split.cutoff_ms for t in split.test.ts)
    assert all(e.ts < split.cutoff_ms for e in split.train_events)
    assert max(e.ts for e in split.test_events) == bj("2022-05-02", 8)
    assert split.describe()["test_days"] == "2022-05-01..2022-05-02"


def test_temporal_split_labels_positions_and_retrieval_targets(kuairand_dir):
    split = temporal_split(load_dataset(f"kuairand:{kuairand_dir}"), "2022-05-01", None)
    ids, test = split.index, split.test
    assert split.test_days == 3  # to the end of the log
    row = {(ids.user_ids[u], ids.item_ids[i]): k
           for k, (u, i) in enumerate(zip(test.user, test.item))}
    k = row[("u1", "6")]
    assert test.labels["long_view"][k] == 0 and test.watch_ms[k] == 2_000
    assert test.watch_ratio[k] == pytest.approx(0.1)
    assert test.position[row[("u1", "5")]] == 1 and test.position[row[("u1", "6")]] == 3
    assert test.position[row[("u3", "5")]] == 1  # a new day, a new session
    targets = {ids.user_ids[u]: sorted(ids.item_ids[t]) for u, t in
               zip(split.retrieval_users, split.retrieval_targets)}
    # u1's long view of video 2 repeats a train impression: dropped; u3 has no long view
    assert targets == {"u1": ["5"], "u2": ["3"], "u3": ["5"]}
    assert split.stats["targets_seen_in_train"] == 1
    seen = {ids.user_ids[u]: sorted(ids.item_ids[x] for x in s)
            for u, s in enumerate(split.train_seen) if len(s)}
    assert seen == {"u1": ["1", "2", "3"], "u2": ["1", "4"]}


def test_default_cutoff_leaves_the_last_days(kuairand_dir):
    split = temporal_split(load_dataset(f"kuairand:{kuairand_dir}"), None, test_days=2)
    assert split.describe()["test_days"] == "2022-05-02..2022-05-03"


def test_leave_one_out_targets_are_last_items_and_never_excluded(tmp_path):
    path = write_sequences(tmp_path / "seq.txt", {
        "a": ["1", "2", "3", "4"], "b": ["5", "1", "5"], "c": ["1", "2"], "d": ["3", "4", "2"]})
    split = leave_one_out_split(load_dataset(f"beauty:{path}"))
    ids = split.index
    got = {ids.user_ids[u]: ids.item_ids[t] for u, t in zip(split.users, split.targets)}
    assert got == {"a": "4", "b": "5", "d": "2"}  # c has 2 interactions: training only
    excluded = {ids.user_ids[u]: sorted(ids.item_ids[x])
                for u, x in zip(split.users, split.exclude)}
    assert excluded == {"a": ["1", "2", "3"], "b": ["1"], "d": ["3", "4"]}  # b's 5 is the target
    train = sorted((ids.user_ids[u], ids.item_ids[i])
                   for u, i in zip(split.train.user, split.train.item))
    assert train == sorted([("a", "1"), ("a", "2"), ("a", "3"), ("b", "5"), ("b", "1"),
                            ("c", "1"), ("c", "2"), ("d", "3"), ("d", "4")])
    assert split.stats["users_train_only"] == 1 and split.stats["targets_repeating_history"] == 1
    held = {(e.user_id, e.item_id) for e in split.dataset.events} - \
        {(e.user_id, e.item_id) for e in split.train_events()}
    assert held == {("a", "4"), ("d", "2")}  # b's 5 also occurs earlier, which stays


def test_max_users_samples_test_users_only(kuairand_dir):
    ds = load_dataset(f"kuairand:{kuairand_dir}")
    full = temporal_split(ds, "2022-05-01")
    small = temporal_split(ds, "2022-05-01", max_users=1, seed=3)
    assert len(np.unique(small.test.user)) == 1
    assert len(small.train) == len(full.train)
