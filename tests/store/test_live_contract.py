"""The live-state contract: every backend of ``store/live.py`` must pass this suite unchanged.

Backends are listed in ``BACKENDS``; each gives a factory of (catalog, live state) with the
options the suite asks for. A backend whose server is not reachable (Redis) is skipped with the
reason, never silently passed (and fails under ``CI``: tests/rd.py).
"""

from __future__ import annotations

import contextlib

import pytest

from reelrank.store import new_catalog, new_live_state
from reelrank.store.live import CO_ENGAGEMENT_CAP, Catalog, CatalogView, LiveState, UserState
from reelrank.types import DAY_MS, HOUR_MS, Event, Item
from tests.rd import throwaway_prefix

BACKENDS = ["memory", "redis"]
T0 = 1_700_000_000_000


@pytest.fixture(params=BACKENDS)
def make(request):
    """``make(**options)`` -> a live state over a catalog of 6 items (v0..v5; creator c0 made
    the even ones, c1 the odd ones). Each state a test makes is empty: on Redis each gets its
    own key prefix, deleted after the test."""
    with contextlib.ExitStack() as stack:

        def build(**options) -> LiveState:
            catalog = new_catalog()
            if request.param == "memory":
                live = new_live_state(catalog, **options)
            elif request.param == "redis":
                url, prefix = stack.enter_context(throwaway_prefix())
                live = new_live_state(catalog, url=f"{url}?prefix={prefix}", **options)
            else:  # pragma: no cover - a backend listed without a factory
                raise AssertionError(f"no factory for {request.param}")
            catalog.upsert([item(i) for i in range(6)])
            return live

        yield build


def item(i: int, **kw) -> Item:
    base = dict(
        item_id=f"v{i}",
        creator_id=f"c{i % 2}",
        duration_ms=20_000,
        created_at=T0 - 10_000 + i,
        hashtags=(f"t{i % 3}",),
    )
    base.update(kw)
    return Item(**base)


def ev(k: int | str, user: str, item_id: str, type_: str, ts: int = T0, **kw) -> Event:
    return Event(f"e{k}", user, item_id, ts, type_, **kw)


def test_implements_the_protocols(make):
    live = make()
    assert isinstance(live, LiveState)
    assert isinstance(live.catalog, Catalog) and isinstance(live.catalog, CatalogView)


def test_catalog_reads_and_upsert(make):
    catalog = make().catalog
    assert len(catalog) == 6 and "v3" in catalog and "nope" not in catalog
    assert sorted(catalog.ids()) == [f"v{i}" for i in range(6)]
    assert catalog.get("v2") == item(2) and catalog.get("nope") is None
    assert catalog.get_many(["v1", "nope"]) == [item(1), None]
    assert [i.item_id for i in catalog.newest(3)] == ["v5", "v4", "v3"]
    assert [i.item_id for i in catalog.newest(9, created_after=T0 - 10_000 + 3)] == ["v5", "v4"]
    assert catalog.by_creator("c0") == {"v0", "v2", "v4"}
    before = catalog.version
    catalog.upsert([item(4, creator_id="c9", created_at=T0)])  # a replaced item moves
    assert catalog.version > before
    assert catalog.by_creator("c0") == {"v0", "v2"} and catalog.by_creator("c9") == {"v4"}
    assert catalog.newest(1)[0].item_id == "v4" and len(catalog) == 6


def test_events_update_the_viewer_the_item_and_the_clock(make):
    live = make()
    v0 = live.version
    live.apply(ev(1, "u", "v1", "impression"))
    live.apply(ev(2, "u", "v1", "play", T0 + 5, watch_ms=19_000))  # a long view
    live.apply(ev(3, "u", "v1", "like", T0 + 6))
    live.apply(ev(4, "u", "nope", "like", T0 + 99))  # unknown item: ignored
    assert live.version > v0
    assert live.clock == T0 + 6
    u = live.user("u")
    assert isinstance(u, UserState)
    assert "v1" in u.seen and [h.type for h in u.history] == ["play", "like"]
    assert u.counts["long_view"] == 1 and u.creator_affinity["c1"] > 0
    s = live.item_stats("v1")
    assert (s.impressions, s.views, s.long_views, s.likes) == (1, 1, 1, 1)
    assert live.creator_impressions("c1") == 1 and live.creator_impressions("c0") == 0
    assert [x.likes for x in live.item_stats_many(["v1", "v2"])] == [1, 0]
    assert live.user_ids() == ["u"] and live.viewer_count() == 1
    live.apply(ev(5, "u", "v1", "unlike", T0 + 7))
    assert live.item_stats("v1").likes == 0


def test_explicit_signals(make):
    live = make()
    live.apply(ev(1, "u", "v3", "follow"))
    live.apply(ev(2, "u", "v2", "not_interested"))
    u = live.user("u")
    assert u.following == {"c1"} and "v2" in u.not_interested
    assert live.item_stats("v2").negatives == 1
    live.apply(ev(3, "u", "v5", "unfollow"))
    assert live.user("u").following == set()


def test_events_before_a_reset_keep_no_interests(make):
    live = make()
    live.apply(ev(1, "u", "v1", "play", watch_ms=19_000), interests=False)
    u = live.user("u")
    assert "v1" in u.seen and not u.history and not u.tokens
    assert live.item_stats("v1").long_views == 1  # the item's counters still count it


def test_reset_interests_keeps_what_the_viewer_did_explicitly(make):
    live = make()
    live.apply(ev(1, "u", "v1", "like"))
    live.apply(ev(2, "u", "v3", "follow", T0 + 1))
    live.reset_interests("u")
    u = live.user("u")
    assert not u.history and not u.creator_affinity and not u.positives
    assert u.following == {"c1"}
    live.reset_interests("nobody")  # no error for an unknown viewer


def test_snapshots_do_not_change_with_later_events(make):
    live = make()
    live.apply(ev(1, "u", "v1", "like"))
    snap = live.user_snapshot("u")
    live.apply(ev(2, "u", "v2", "like", T0 + 1))
    assert [h.item_id for h in snap.history] == ["v1"]
    assert [h.item_id for h in live.user("u").history] == ["v1", "v2"]
    assert live.user_snapshot("nobody") is None


def test_served_items_and_the_bound_on_feed_only_viewers(make):
    live = make(max_feed_only_viewers=2)
    live.apply(ev(1, "u", "v1", "like"))
    live.record_served("u", ["v2", "v3"])
    assert list(live.user("u").served) == ["v2", "v3"]
    for k in range(3):
        live.record_served(f"f{k}", ["v1"])
    assert live.feed_only_viewers() == 2 and live.feed_only_evicted == 1
    assert live.user("f0") is None and live.user("f2") is not None
    assert live.user("u") is not None  # a viewer with events is never evicted for this


def test_forget_and_put_user(make):
    live = make()
    live.apply(ev(1, "u", "v1", "like"))
    state = live.user_snapshot("u")
    live.forget_user("u")
    assert live.user("u") is None and "u" not in live.user_ids()
    assert live.viewer_count() == 0
    live.put_user(state)
    assert [h.item_id for h in live.user("u").history] == ["v1"]


def test_a_state_rebuilt_from_the_log_replaces_the_contents(make):
    live = make()
    live.apply(ev(1, "u", "v1", "like"))
    live.apply(ev(2, "gone", "v2", "like"))
    live.record_served("u", ["v4"])
    fresh = live.empty_like()
    assert fresh.catalog is live.catalog and fresh.user_ids() == []
    fresh.apply(ev(1, "u", "v1", "like"))  # the log without the erased viewer's events
    live.replace_with(fresh)
    assert live.user("gone") is None and live.item_stats("v2").likes == 0
    assert list(live.user("u").served) == ["v4"]  # what feeds sent is carried over
    assert [i for i, _ in live.popular(5)] == ["v1"]


def test_trending_popular_and_regional_top_lists(make):
    live = make(trending_window_ms=2 * HOUR_MS, trending_refresh_events=1)
    live.apply(ev(1, "a", "v0", "like", region="BR"))
    live.apply(ev(2, "b", "v1", "share", T0 + 1))
    assert [i for i, _ in live.trending(5)] == ["v1", "v0"]
    # Each item's window sum, as the list scores it (a share 3, a like 2); 0 for none.
    assert live.trending_many(["v1", "v0", "v5"]) == [3.0, 2.0, 0.0]
    live.apply(ev(3, "c", "v2", "like", T0 + 5 * HOUR_MS))
    assert [i for i, _ in live.trending(5)] == ["v2"]  # the window moved past the others
    assert live.trending_many(["v0", "v1", "v2"]) == [0.0, 0.0, 2.0]
    assert [i for i, _ in live.popular(5)] == ["v1", "v0", "v2"]
    assert [i for i, _ in live.popular_in_region("BR", 5)] == ["v0"]
    assert live.popular_in_region("XX", 5) == []
    assert live.trending(1) == live.trending(5)[:1]


def test_top_lists_follow_events_when_the_clock_stands_still(make):
    live = make(trending_refresh_events=2, trending_refresh_seconds=float("inf"))
    live.apply(ev(1, "a", "v0", "like"))
    assert [i for i, _ in live.popular(3)] == ["v0"]
    for k in range(3):
        live.apply(ev(10 + k, f"b{k}", "v5", "share", T0 + k))
    assert live.popular(3)[0][0] == "v5"


def test_co_engagement(make):
    live = make()
    live.apply(ev(1, "u", "v1", "like"))
    live.apply(ev(2, "u", "v2", "like", T0 + 1))
    assert [i for i, _ in live.co_engaged("v1", 5)] == ["v2"]
    assert [i for i, _ in live.co_engaged("v2", 5)] == ["v1"]
    assert live.co_engaged("v5", 5) == []
    lean = make(co_engagement=False)  # the trainer's state: the same viewers, no graph
    lean.apply(ev(1, "u", "v1", "like"))
    lean.apply(ev(2, "u", "v2", "like", T0 + 1))
    assert lean.co_engaged("v1", 5) == []
    assert list(lean.user("u").positives) == list(live.user("u").positives)


def _neighbours_kept(live, item_id: str) -> int:
    """How many neighbours the backend holds for the item: the size bound is not visible
    through ``co_engaged``, whose reads a backend may cut shorter (Redis: 50 at most)."""
    if hasattr(live, "client"):
        return live.client.zcard(live.prefix + "co:" + item_id)
    return len(live._co.get(item_id, ()))


def test_co_engagement_keeps_a_bounded_number_of_the_strongest_neighbours(make):
    live = make()
    n = 2 * CO_ENGAGEMENT_CAP + 1  # one past the trim's threshold
    live.catalog.upsert([item(100 + k) for k in range(n)])
    # Viewer j likes v0, then a video of their own: v0 gains a neighbour per viewer. v100 and
    # v101 come first and more often (6 and 3 viewers); every later one has a count of 1.
    others = [100] * 6 + [101] * 3 + [102 + k for k in range(n - 2)]
    for j, other in enumerate(others):
        live.apply(ev(f"{j}a", f"w{j}", "v0", "like", T0 + 2 * j))
        live.apply(ev(f"{j}b", f"w{j}", f"v{other}", "like", T0 + 2 * j + 1))
    assert CO_ENGAGEMENT_CAP <= _neighbours_kept(live, "v0") <= 2 * CO_ENGAGEMENT_CAP
    kept = live.co_engaged("v0", 20)
    assert kept[:2] == [("v100", 6), ("v101", 3)]
    assert all(count == 1 for _, count in kept[2:])
    assert live.co_engaged("v150", 5) == [("v0", 1)]  # a neighbour's own list is its own


def test_watch_time_by_day(make):
    live = make()
    live.apply(ev(1, "u", "v1", "play", T0, watch_ms=5_000))
    live.apply(ev(2, "u", "v2", "play", T0 + 1, watch_ms=3_000))
    assert live.user("u").watch_ms_on(T0 // DAY_MS) == 8_000


def test_a_rebuild_keeps_viewers_known_only_from_feeds(make):
    live = make()
    live.apply(ev(1, "u", "v1", "like"))
    live.record_served("feed-only", ["v2", "v3"])
    fresh = live.empty_like()
    fresh.apply(ev(1, "u", "v1", "like"))
    live.replace_with(fresh)
    assert list(live.user("feed-only").served) == ["v2", "v3"]
    assert live.feed_only_viewers() == 1
    # A feed-only viewer reads as one with no history; their first event starts it.
    snap = live.user_snapshot("feed-only")
    assert list(snap.history) == [] and list(snap.tokens) == [] and list(snap.positives) == []
    live.apply(ev(2, "feed-only", "v2", "like"))
    after = live.user("feed-only")
    assert [h.item_id for h in after.history] == ["v2"] and list(after.positives) == ["v2"]
    assert after.history.maxlen == 200 and list(after.served) == ["v2", "v3"]
    assert live.item_stats("nope").views == 0  # an item never seen has empty counters
