"""The impression-outcome join on hand-built streams."""

from __future__ import annotations

import numpy as np

from reelrank.join import Joiner, join_events
from reelrank.types import Event

H = 3_600_000
DUR = {"a": 10_000, "b": 60_000}


def ev(i, user, item, ts, type_, watch=None):
    return Event(f"e{i}", user, item, ts, type_, watch_ms=watch)


def test_outcomes_are_attributed_to_their_impression():
    stream = [ev(1, "u", "a", 0, "impression"), ev(2, "u", "a", 5, "play", 10_000),
              ev(3, "u", "a", 6, "like"), ev(4, "u", "b", 10, "impression"),
              ev(5, "u", "b", 20, "skip", 2_000)]
    out = {x.item_id: x for x in join_events(stream, DUR.get, window_ms=H)}
    assert out["a"].long_view == 1 and out["a"].like == 1 and out["a"].watch_ratio == 1.0
    assert out["b"].long_view == 0 and out["b"].watch_ms == 2_000 and out["b"].like == 0


def test_impression_without_outcome_is_a_negative_when_the_window_closes():
    j = Joiner(DUR.get, window_ms=H)
    assert j.add(ev(1, "u", "a", 0, "impression")) == []
    closed = j.add(ev(2, "v", "b", H + 1, "impression"))  # time passes the window of the first
    assert [(x.user_id, x.item_id, x.long_view, x.outcomes) for x in closed] == [("u", "a", 0, 0)]


def test_late_and_duplicate_events():
    j = Joiner(DUR.get, window_ms=H)
    j.add(ev(1, "u", "a", 0, "impression"))
    j.add(ev(2, "u", "a", 10, "play", 500))
    assert j.add(ev(2, "u", "a", 10, "play", 500)) == []  # same event_id again
    closed = j.add(ev(3, "u", "a", 2 * H, "like"))  # after the window: not attributed
    assert len(closed) == 1 and closed[0].like == 0 and closed[0].watch_ms == 500
    assert j.stats.duplicates == 1 and j.stats.unattributed == 1 and j.stats.attributed == 1


def test_showing_the_same_video_again_closes_the_first_example():
    stream = [ev(1, "u", "a", 0, "impression"), ev(2, "u", "a", 1, "play", 100),
              ev(3, "u", "a", 2, "impression"), ev(4, "u", "a", 3, "play", 10_000)]
    out = list(join_events(stream, DUR.get, window_ms=H))
    assert [(x.ts, x.watch_ms) for x in out] == [(0, 100), (2, 10_000)]


def test_unknown_items_and_erasure():
    j = Joiner(DUR.get, window_ms=H)
    j.add(ev(1, "u", "zzz", 0, "impression"))  # no duration known: not opened
    j.add(ev(2, "u", "a", 0, "impression"))
    j.add(ev(3, "w", "a", 0, "impression"))
    assert j.forget_user("u") == 1
    assert [x.user_id for x in j.flush()] == ["w"]


def test_dense_matrix_equals_dense_features_row_by_row():
    import random

    import numpy as np

    from reelrank.features import DENSE_FEATURES, dense_features, dense_matrix, user_aggregates
    from reelrank.store import new_catalog, new_live_state
    from reelrank.types import Item

    rng = random.Random(4)
    lengths = [4_000, 10_000, 15_000, 50_000, 160_000, 200_000]  # with class boundaries
    items = [Item(f"v{i}", f"c{i % 5}", rng.choice(lengths), i * 1000,
                  hashtags=tuple(f"t{(i + k) % 4}" for k in range(i % 4)),
                  region=(None, "BR", "US")[i % 3]) for i in range(40)]
    catalog = new_catalog()
    catalog.upsert(items)
    live = new_live_state(catalog)
    types = ["impression", "play", "skip", "like", "share", "follow", "not_interested"]
    for n in range(600):
        it = rng.choice(items)
        t = rng.choice(types)
        live.apply(Event(f"e{n}", f"u{n % 3}", it.item_id, 100_000 + n, t,
                         watch_ms=rng.randint(0, 60_000) if t in ("play", "skip") else None))
    same_region = DENSE_FEATURES.index("item_same_region")
    for user, region in ((live.user("u1"), "BR"), (live.user("u1"), None), (None, "US")):
        stats = [live.item_stats(it.item_id) for it in items]
        fast = dense_matrix(user, items, stats, 900_000, user_aggregates(user), region)
        slow = np.array([dense_features(user, it, s, 900_000, user_aggregates(user), region)
                         for it, s in zip(items, stats)], dtype=np.float32)
        assert fast.shape == slow.shape and np.allclose(fast, slow, atol=1e-6)
        # Only videos posted in the request's region (some have none) count as the same.
        assert fast[:, same_region].tolist() == [
            float(region is not None and it.region == region) for it in items]
        assert (region is None) == (fast[:, same_region].sum() == 0)
        lift = fast[:, DENSE_FEATURES.index("user_topic_lift")]
        assert (user is None) == (np.abs(lift).sum() == 0)
        assert all(lift[k] == 0 for k, it in enumerate(items) if not it.hashtags)
    assert np.abs(fast).sum() > 0
    # The creator impression totals kept as events arrive equal the sums over the videos.
    for c in {it.creator_id for it in items}:
        assert live.creator_impressions(c) == sum(
            live.item_stats(it.item_id).impressions for it in items if it.creator_id == c) > 0


def test_topic_lift_follows_a_viewers_first_views():
    """One long view of a cooking video and one skip of a dance video: cooking's other videos
    are lifted, dance's lowered, a topic never watched and a video without one read 0."""
    from reelrank.features import DENSE_FEATURES, TOPIC_PRIOR, dense_matrix, user_aggregates
    from reelrank.store import new_catalog, new_live_state
    from reelrank.store.live import ItemStats
    from reelrank.types import Item

    items = [Item("a", "c1", 10_000, 0, hashtags=("fyp", "cooking")),
             Item("b", "c2", 10_000, 0, hashtags=("dance",)),
             Item("a2", "c3", 10_000, 0, attributes={"topic": "cooking"}),
             Item("b2", "c4", 10_000, 0, hashtags=("dance", "cooking")),
             Item("x", "c5", 10_000, 0, hashtags=("cats",)),
             Item("y", "c6", 10_000, 0)]
    catalog = new_catalog()
    catalog.upsert(items)
    live = new_live_state(catalog)
    live.apply(Event("1", "u", "a", 1, "play", watch_ms=10_000))  # watched to the end
    live.apply(Event("2", "u", "b", 2, "skip", watch_ms=500))
    user = live.user("u")
    assert dict(user.topic_views) == {"cooking": 1, "dance": 1}
    assert dict(user.topic_long_views) == {"cooking": 1}
    overall = user_aggregates(user)[1]
    assert overall == (1 + 1.5) / (2 + 5)  # the length-class counters' smoothed rate
    col = DENSE_FEATURES.index("user_topic_lift")
    lift = dense_matrix(user, items[2:], [ItemStats()] * 4, 10, user_aggregates(user))[:, col]
    up = (1 + TOPIC_PRIOR * overall) / (1 + TOPIC_PRIOR) - overall
    down = (0 + TOPIC_PRIOR * overall) / (1 + TOPIC_PRIOR) - overall
    assert np.allclose(lift, [up, down, 0.0, 0.0], atol=1e-6)
    assert up > 0 > down
    live.reset_interests("u")
    assert not live.user("u").topic_views and not live.user("u").topic_long_views


def test_outcomes_with_no_impression_open_implied_examples_when_asked():
    stream = [ev(1, "u", "a", 0, "play", 10_000), ev(2, "u", "a", 5, "like"),
              ev(3, "u", "b", 10, "skip", 2_000), ev(4, "u", "b", 20, "impression"),
              ev(5, "u", "b", 30, "play", 60_000)]
    plain = Joiner(DUR.get, window_ms=H)
    got = [x for e in stream for x in plain.add(e)] + plain.flush()
    assert [(x.item_id, x.implied) for x in got] == [("b", False)]
    assert plain.stats.unattributed == 3
    j = Joiner(DUR.get, window_ms=H, imply=True)
    got = sorted([x for e in stream for x in j.add(e)] + j.flush(), key=lambda x: x.ts)
    # a: opened by its play, the like joins it; b: opened by the skip, closed by the real
    # impression, which then takes the play.
    assert [(x.item_id, x.implied, x.long_view, x.like, x.watch_ms) for x in got] == [
        ("a", True, 1, 1, 10_000), ("b", True, 0, 0, 2_000), ("b", False, 1, 0, 60_000)]
    assert j.stats.implied == 2 and j.stats.unattributed == 0
