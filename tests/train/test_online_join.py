"""The online join: examples close soon after the view ends; late and duplicate events."""

from __future__ import annotations

from reelrank.features import RowStream
from reelrank.join import Joiner
from reelrank.store import new_catalog, new_live_state
from reelrank.types import Event, Item

H = 3_600_000
DUR = {"a": 10_000, "b": 60_000}


def ev(i, user, item, ts, type_, watch=None):
    return Event(f"e{i}", user, item, ts, type_, watch_ms=watch)


def test_a_settled_view_closes_long_before_the_window():
    j = Joiner(DUR.get, window_ms=H, settle_ms=1_000)
    j.add(ev(1, "u", "a", 0, "impression"))
    j.add(ev(2, "u", "a", 10_000, "play", 10_000))
    j.add(ev(3, "u", "a", 10_000, "like"))  # arrives with the play: inside the settle time
    j.add(ev(4, "v", "b", 8_500, "impression"))  # v shown b, no outcome yet
    assert j.flush(11_000) == []  # 1 s after the view ended: still settling
    closed = j.flush(11_001)
    assert [(x.user_id, x.like, x.long_view, x.ended_ts, x.revision) for x in closed] == \
        [("u", 1, 1, 10_000, 0)]
    # No action yet: v's impression waits for the whole window before it is a negative.
    assert j.flush(H) == []
    assert [(x.user_id, x.outcomes) for x in j.flush(8_500 + H + 1)] == [("v", 0)]


def test_a_late_outcome_inside_the_window_corrects_the_example():
    j = Joiner(DUR.get, window_ms=H, settle_ms=1_000)
    j.add(ev(1, "u", "a", 0, "impression"))
    j.add(ev(2, "u", "a", 2_000, "skip", 2_000))
    (first,) = j.flush(5_000)
    assert first.like == 0 and first.revision == 0
    (fixed,) = j.add(ev(3, "u", "a", 60_000, "like"))  # liked later, from the profile page
    assert fixed.like == 1 and fixed.revision == 1 and fixed.watch_ms == 2_000
    assert first.like == 0  # what was emitted before is not changed under the caller
    assert j.add(ev(3, "u", "a", 60_000, "like")) == []  # the same event again: a duplicate
    assert j.add(ev(4, "u", "a", 61_000, "play", 1_000)) == []  # late, but changes no label
    assert j.add(ev(5, "u", "a", 2 * H, "share")) == []  # beyond the window: not attributed
    s = j.stats
    assert (s.late, s.corrections, s.duplicates, s.unattributed) == (2, 1, 1, 1)


def test_duplicates_and_erasure_while_settling():
    j = Joiner(DUR.get, window_ms=H, settle_ms=500)
    j.add(ev(1, "u", "a", 0, "impression"))
    j.add(ev(2, "u", "a", 100, "play", 9_000))
    assert j.add(ev(2, "u", "a", 100, "play", 9_000)) == []
    j.add(ev(3, "w", "a", 0, "impression"))
    j.add(ev(4, "w", "a", 100, "play", 1_000))
    assert j.forget_user("u") == 1
    assert [x.user_id for x in j.flush(1_000)] == ["w"]
    assert j.add(ev(5, "u", "a", 2_000, "like")) == []  # nothing of u left to correct
    assert j.stats.duplicates == 1


def test_row_stream_captures_features_before_the_impression_and_reuses_them_for_corrections():
    catalog = new_catalog()
    catalog.upsert([Item("a", "c1", 10_000, 0, hashtags=("cats",)),
                    Item("b", "c1", 10_000, 0, hashtags=("cats",))])
    rows = RowStream(new_live_state(catalog), history_len=5, window_ms=H, settle_ms=0)
    out = []
    for e in [ev(1, "u", "a", 0, "impression"), ev(2, "u", "a", 10_000, "play", 10_000),
              ev(3, "u", "b", 11_000, "impression"), ev(4, "u", "b", 20_000, "play", 9_000)]:
        out += rows.add(e)
    out += rows.flush(30_000)
    first, second = out
    assert first.history == () and first.example.long_view == 1
    # b's row was captured before b was shown: it sees a's long view, not b's own.
    assert [t.item_id for t in second.history] == ["a"]
    assert second.dense[0] > 0  # user_creator_long_views: c1 once, from a
    (fixed,) = rows.add(ev(5, "u", "b", 40_000, "like"))
    assert fixed.example.like == 1 and fixed.example.revision == 1
    assert fixed.dense == second.dense and fixed.history == second.history
    assert type(fixed.dense) is list  # kept compact in between, handed out as it was
