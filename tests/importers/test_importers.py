"""Importers on small files written in each dataset's real format."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

import pytest

from reelrank.errors import ReelRankError
from reelrank.importers import DATASETS, ImportReport, import_into
from reelrank.importers import kuairand, movielens, sequences
from reelrank.types import Event, Item

# -- KuaiRand --------------------------------------------------------------------------------------

LOG_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,"
    "is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,"
    "is_profile_enter,is_rand,tab"
)
LOG_ROWS = [
    # user, video, time_ms, like, follow, comment, forward, hate, play_ms, duration_ms, profile, tab
    "1,10,20220425,0,1000,1,1,0,0,0,0,1,5000,8000,0,0,0,0,1",
    "2,11,20220425,0,3000,0,0,0,0,0,1,0,0,12000,0,0,0,0,4",   # a hate, out of time order
    "1,11,20220425,0,2000,1,0,1,1,1,0,0,3000,12000,0,0,1,0,1",
    "1,10,20220425,0,1000,1,1,0,0,0,0,1,5000,8000,0,0,0,0,1",  # repeats the first row
    "3,99,20220425,0,3000,1,0,0,0,0,0,0,700,7000,0,0,0,0,0",    # video missing from features
    "3,12,20220425,0,4000,0,0,0,0,0,0,0,900,0,0,0,0,0,1",       # a picture post: no duration
]
FEATURES = """video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,\
server_width,server_height,music_id,music_type,tag
10,500,NORMAL,2022-04-10,Web,0.0,8000.0,720.0,1280.0,777,9.0,"20,43"
11,501,AD,2022-04-11,Kmovie,0.0,,720.0,1280.0,0,,
12,500,NORMAL,2022-04-12,LongPicture,0.0,,720.0,1280.0,778,4.0,7
13,502,NORMAL,2022-04-12,Web,1.0,15000.0,720.0,1280.0,779,9.0,7
"""


@pytest.fixture
def kuairand_dir(tmp_path):
    folder = tmp_path / "kuairand"
    folder.mkdir()
    with gzip.open(folder / "log_standard_2022-04-25_to_2022-05-04.csv.gz", "wt") as f:
        f.write("\n".join([LOG_HEADER, *LOG_ROWS]) + "\n")
    (folder / "video_features_basic_pure.csv").write_text(FEATURES)
    return folder


def test_kuairand_one_row_becomes_impression_play_and_flags(kuairand_dir):
    events = [e for e in kuairand.read_events(kuairand_dir) if e.ts == 2000]
    p = "kr:1:11:2000:"
    assert events == [
        Event(p + "impression", "1", "11", 2000, "impression", source="tab1"),
        Event(p + "play", "1", "11", 2000, "play", watch_ms=3000, source="tab1"),
        Event(p + "follow", "1", "11", 2000, "follow", source="tab1"),
        Event(p + "comment", "1", "11", 2000, "comment", source="tab1"),
        Event(p + "share", "1", "11", 2000, "share", source="tab1"),
        Event(p + "profile_visit", "1", "11", 2000, "profile_visit", source="tab1"),
    ]
    hate = [e.type for e in kuairand.read_events(kuairand_dir) if e.user_id == "2"]
    assert hate == ["impression", "play", "not_interested"]


def test_kuairand_events_in_time_order_ties_in_file_order(kuairand_dir):
    events = list(kuairand.read_events(kuairand_dir))
    ts = [e.ts for e in events]
    assert ts == sorted(ts)
    # Both rows at 3000: user 2 comes first in the file, then user 3.
    assert [e.user_id for e in events if e.ts == 3000] == ["2"] * 3 + ["3"] * 2


def test_kuairand_items(kuairand_dir):
    items = {i.item_id: i for i in kuairand.read_items(kuairand_dir)}
    assert list(items) == ["10", "11", "12", "13", "99"]
    day = int(datetime(2022, 4, 10, tzinfo=timezone.utc).timestamp() * 1000)
    assert items["10"] == Item(
        item_id="10", creator_id="500", duration_ms=8000, created_at=day,
        hashtags=("tag:20", "tag:43"), sound_id="777", visible=True,
        attributes={"video_type": "NORMAL", "upload_type": "Web", "music_type": 9},
    )
    assert items["11"].duration_ms == 12000  # missing in features: the log's duration
    assert items["11"].sound_id is None and items["11"].hashtags == ()
    assert items["11"].attributes == {"video_type": "AD", "upload_type": "Kmovie"}
    assert items["12"].duration_ms == kuairand.NO_DURATION_MS  # no duration anywhere
    assert items["12"].attributes["duration_estimated"] == 1
    assert items["13"].visible is False
    assert items["99"].creator_id == kuairand.UNKNOWN_CREATOR
    assert items["99"].duration_ms == 7000


def test_kuairand_import_counts_duplicates_and_is_idempotent(kuairand_dir, store):
    report = kuairand.import_kuairand(kuairand_dir, store, progress=False)
    # 6 rows -> 12 impressions/plays + 7 flags (like, its repeat, follow, comment, share,
    # profile visit, hate) = 19 events, of which the repeated row's 3 are duplicates.
    assert (report.items, report.events, report.duplicates) == (5, 16, 3)
    assert store.count_items() == 5 and store.count_events() == 16
    again = kuairand.import_kuairand(kuairand_dir, store, progress=False)
    assert (again.items, again.events, again.duplicates) == (5, 0, 19)
    assert store.count_events() == 16


def test_kuairand_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="log_standard"):
        list(kuairand.read_events(tmp_path))


# -- MovieLens -------------------------------------------------------------------------------------

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,"Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) (1966)",Action|Western
3,Babylon 5,(no genres listed)
"""
RATINGS = """userId,movieId,rating,timestamp
1,1,4.0,300
1,2,3.5,100
2,1,5.0,200
2,3,0.5,200
"""
TAGS = """userId,movieId,tag,timestamp
1,1,Pixar,10
2,1,  pixar ,11
2,1,Tom  Hanks,12
1,3,space,13
"""


@pytest.fixture
def movielens_dir(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "movies.csv").write_text(MOVIES)
    (folder / "ratings.csv").write_text(RATINGS)
    (folder / "tags.csv").write_text(TAGS)
    return folder


def test_movielens_items(movielens_dir):
    items = {i.item_id: i for i in movielens.read_items(movielens_dir)}
    toy = items["1"]
    assert toy.creator_id == "ml:movie:1" and toy.caption == "Toy Story (1995)"
    assert toy.hashtags == ("adventure", "animation", "children", "pixar", "tom hanks")
    assert toy.duration_ms == movielens.MOVIE_DURATION_MS
    assert toy.created_at == int(datetime(1995, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    assert items["2"].created_at < 0 and items["2"].caption.startswith("Good, the Bad")
    assert items["3"].created_at == 0 and items["3"].hashtags == ("space",)


def test_movielens_events_like_threshold_and_time_order(movielens_dir):
    events = list(movielens.read_events(movielens_dir))
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    by_rating = {}
    for e in events:
        by_rating.setdefault((e.user_id, e.item_id), []).append(e)
    assert [e.type for e in by_rating[("1", "1")]] == ["impression", "play", "like"]  # 4.0
    assert [e.type for e in by_rating[("1", "2")]] == ["impression", "play"]  # 3.5
    assert [e.type for e in by_rating[("2", "3")]] == ["impression", "play"]  # 0.5
    play = by_rating[("1", "2")][1]
    assert play.watch_ms == round(movielens.MOVIE_DURATION_MS * 3.5 / 5)
    assert play.ts == 100_000 and play.event_id == "ml:1:2:100000:play"
    # Ties (both at 200 s) stay in file order.
    assert [e.item_id for e in events if e.ts == 200_000][:1] == ["1"]


def test_movielens_import_is_idempotent(movielens_dir, store):
    report = movielens.import_movielens(movielens_dir, store, progress=False)
    assert (report.items, report.events, report.duplicates) == (3, 10, 0)
    again = movielens.import_movielens(movielens_dir, store, progress=False)
    assert (again.events, again.duplicates) == (0, 10)


# -- sequences -------------------------------------------------------------------------------------

def test_sequences_pairs_and_lists_give_the_same_events(tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# user item\nu1 a\nu1 b\n\nu2 b\nu2 c\nu2 a\n")
    lists = tmp_path / "lists.txt"
    lists.write_text("u1 a b\nu2 b c a\n")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("u1 a\nu1 b\nu2 b c a\n")
    assert list(sequences.read_events(pairs)) == list(sequences.read_events(lists))
    assert list(sequences.read_events(mixed)) == list(sequences.read_events(lists))
    events = list(sequences.read_events(pairs))
    plays = [e for e in events if e.type == "play"]
    assert [(e.user_id, e.item_id) for e in plays] == [
        ("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u2", "a")]
    assert [e.ts for e in plays] == [sequences.START_MS + k * sequences.STEP_MS for k in range(5)]
    assert [e.type for e in events[:2]] == ["impression", "play"]
    assert events[0].ts == events[1].ts
    assert plays[4].event_id == "seq:u2:2:play" and plays[4].watch_ms == sequences.ITEM_DURATION_MS
    items = list(sequences.read_items(pairs))
    assert [i.item_id for i in items] == ["a", "b", "c"]
    assert items[0] == Item(item_id="a", creator_id="a", duration_ms=sequences.ITEM_DURATION_MS,
                            created_at=0)


def test_sequences_malformed_line_names_its_number(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("u1 a\n\nu2\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3:") as info:
        list(sequences.read_events(path))
    assert isinstance(info.value, ReelRankError)


def test_sequences_import_is_idempotent(tmp_path, store):
    path = tmp_path / "seq.txt"
    path.write_text("u1 a\nu1 b\nu2 a\n")
    report = sequences.import_sequences(path, store, progress=False)
    assert (report.items, report.events, report.duplicates) == (2, 6, 0)
    assert [e.type for _, e in store.iter_events(user_id="u1")] == ["impression", "play"] * 2
    again = sequences.import_sequences(path, store, progress=False)
    assert (again.events, again.duplicates) == (0, 6)


# -- shared ----------------------------------------------------------------------------------------

def test_import_into_batches_and_counts(store):
    items = [Item(item_id=str(i), creator_id="c", duration_ms=1000, created_at=0) for i in range(3)]
    events = (Event(event_id=f"e{i % 4}", user_id="u", item_id="0", ts=i, type="play", watch_ms=1)
              for i in range(7))  # a generator; ids e0..e3 then three repeats
    report = import_into(store, items, events, progress=False, batch_size=2)
    assert isinstance(report, ImportReport)
    assert (report.items, report.events, report.duplicates) == (3, 4, 3)
    assert report.seconds >= 0
    assert [e.ts for _, e in store.iter_events()] == [0, 1, 2, 3]


def test_datasets_map():
    assert DATASETS == {"kuairand": kuairand.import_kuairand,
                        "movielens": movielens.import_movielens,
                        "sequences": sequences.import_sequences}
