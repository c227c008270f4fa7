"""The synthetic world: determinism, well-formed event streams, the behaviour it should have."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from reelrank.eval.simulator import (
    Simulator,
    World,
    build_world,
    generate_history,
    popular_policy,
    random_policy,
)
from reelrank.types import EVENT_TYPES, VIEW_TYPES, Event, Item


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(n_users=60, n_items=1_500, n_topics=12, seed=7)


def _history(world: World, seed: int = 0) -> list[Event]:
    return list(generate_history(world, n_sessions_per_user=2, swipes_per_session=15, seed=seed))


def _ratio(world: World, events: list[Event]) -> float:
    """Mean watch ratio over the play and skip events."""
    views = [e for e in events if e.type in ("play", "skip")]
    return float(np.mean([e.watch_ms / world.item(e.item_id).duration_ms for e in views]))


def test_same_seed_same_world_and_events():
    a = build_world(n_users=20, n_items=300, seed=3)
    b = build_world(n_users=20, n_items=300, seed=3)
    assert a.items == b.items
    assert all(np.array_equal(u.taste, v.taste) for u, v in zip(a.users, b.users))
    assert _history(a) == _history(b)
    pa, pb = random_policy(a, seed=1), random_policy(b, seed=1)
    ra = Simulator(a).run_session(a.users[0], pa, 25, a.start_ts, "s")
    rb = Simulator(b).run_session(b.users[0], pb, 25, b.start_ts, "s")
    assert ra == rb


def test_different_seed_different_world_and_events():
    a = build_world(n_users=20, n_items=300, seed=3)
    b = build_world(n_users=20, n_items=300, seed=4)
    assert a.items != b.items
    assert _history(a, seed=0) != _history(a, seed=1)


def test_items_are_well_formed(world):
    assert len(world.items) == 1_500 and len(world.users) == 60
    assert len({i.item_id for i in world.items}) == len(world.items)
    for item in world.items:
        assert isinstance(item, Item)
        assert 5_000 <= item.duration_ms <= 180_000
        assert item.created_at <= world.start_ts
        assert item.attributes["topic"] in world.topics and item.hashtags
        assert all(f"#{h}" in item.caption for h in item.hashtags)
    assert len({i.language for i in world.items}) > 2 and len({i.region for i in world.items}) > 2
    assert len({i.sound_id for i in world.items if i.sound_id}) > 5


def test_creators_stick_to_few_topics(world):
    topics = defaultdict(list)
    for item in world.items:
        topics[item.creator_id].append(item.attributes["topic"])
    prolific = [t for t in topics.values() if len(t) >= 10]
    assert prolific
    top2_share = [sum(sorted(map(t.count, set(t)), reverse=True)[:2]) / len(t) for t in prolific]
    assert np.mean(top2_share) > 0.85


def test_event_types_and_watch_times(world):
    events = _history(world)
    assert {e.type for e in events} <= EVENT_TYPES
    assert {"impression", "play", "skip", "like"} <= {e.type for e in events}
    for e in events:
        if e.type in VIEW_TYPES:
            assert e.watch_ms is not None and e.watch_ms >= 0
        assert e.device in ("ios", "android", "web") and e.source == "feed" and e.session_id


def test_each_impression_has_exactly_one_play_or_skip(world):
    sim = Simulator(world)
    session = sim.run_session(world.users[1], random_policy(world), 40, world.start_ts, "x")
    streams = [_history(world), session]
    for events in streams:
        swipes = defaultdict(list)
        for e in events:
            swipes[e.event_id.rsplit(":", 1)[0]].append(e.type)
        for types in swipes.values():
            assert types.count("impression") == 1
            assert types.count("play") + types.count("skip") == 1


def test_event_ids_unique_and_deterministic(world):
    events = _history(world)
    assert len({e.event_id for e in events}) == len(events)
    assert all(e.event_id.startswith(f"sim:{e.user_id}:{e.session_id}:") for e in events)


def test_history_is_time_ordered_and_only_shows_posted_items(world):
    events = _history(world)
    ts = [e.ts for e in events]
    assert ts == sorted(ts)
    assert all(world.item(e.item_id).created_at <= e.ts for e in events)
    assert ts[-1] < world.start_ts + 86_400_000


def test_history_with_a_policy_is_time_ordered(world):
    events = list(generate_history(world, 2, 5, seed=0, policy=popular_policy(world)))
    assert len([e for e in events if e.type == "impression"]) == 2 * 5 * len(world.users)
    assert [e.ts for e in events] == sorted(e.ts for e in events)


def test_strong_topics_are_watched_longer(world):
    sim = Simulator(world, fatigue_per_swipe=0.0)
    strong, weak = [], []
    for viewer in world.users[:10]:
        top = world.strong_topics(viewer.user_id, k=1)[0]
        weakest = world.topics[int(np.argmin(viewer.taste))]
        state = sim.new_session(viewer, "t")
        for item_id in world.item_ids_of_topic(top)[:20]:
            strong += sim.respond(viewer, item_id, world.start_ts, state)
        for item_id in world.item_ids_of_topic(weakest)[:20]:
            weak += sim.respond(viewer, item_id, world.start_ts, state)
    assert _ratio(world, strong) > _ratio(world, weak) + 0.2
    likes = [sum(e.type == "like" for e in ev) for ev in (strong, weak)]
    assert likes[0] > likes[1]


def test_true_affinity_ranks_strong_topics_higher(world):
    viewer = world.users[0]
    top = world.strong_topics(viewer.user_id, k=1)[0]
    weakest = world.topics[int(np.argmin(viewer.taste))]
    def mean_affinity(topic):
        ids = world.item_ids_of_topic(topic)[:50]
        return np.mean([world.true_affinity(viewer.user_id, i) for i in ids])

    assert mean_affinity(top) > mean_affinity(weakest) + 1.0
    assert world.topic_of(world.item_ids_of_topic(top)[0]) == top


def test_fatigue_lowers_watch_ratio(world):
    sim = Simulator(world)
    fresh, tired = [], []
    for viewer in world.users[:20]:
        ids = world.item_ids_of_topic(world.strong_topics(viewer.user_id, k=1)[0])[:15]
        state = sim.new_session(viewer, "f")
        for item_id in ids:
            state.swipes = 0
            fresh += sim.respond(viewer, item_id, world.start_ts, state)
        for item_id in ids:
            state.swipes = 60
            tired += sim.respond(viewer, item_id, world.start_ts, state)
    assert _ratio(world, fresh) > _ratio(world, tired) + 0.1


def test_run_session_respects_n_swipes_and_pages(world):
    calls = []
    inner = random_policy(world, seed=2)

    def policy(user_id, n, context):
        calls.append(context)
        return inner(user_id, n, context)

    viewer = world.users[2]
    sim = Simulator(world, allow_leave=False, page_size=10)
    events = sim.run_session(viewer, policy, 25, world.start_ts, "p")
    impressions = [e for e in events if e.type == "impression"]
    assert len(impressions) == 25 and len(calls) == 3
    assert [e.position for e in impressions[:11]] == list(range(10)) + [0]
    assert {e.request_id for e in impressions} == {c["request_id"] for c in calls}
    assert calls[1]["ts"] > calls[0]["ts"] and calls[0]["session_id"] == "p"
    assert [e.ts for e in events] == sorted(e.ts for e in events)


def test_run_session_takes_the_request_id_the_policy_sets(world):
    def policy(user_id, n, context):
        context["request_id"] = "feed-42"
        return [world.items[0].item_id, world.items[1].item_id]

    events = Simulator(world).run_session(world.users[4], policy, 2, world.start_ts, "q")
    assert {e.request_id for e in events} == {"feed-42"}


def test_run_session_stops_on_empty_page_and_tired_viewers_leave(world):
    sim = Simulator(world, fatigue_per_swipe=0.5)
    assert sim.run_session(world.users[3], lambda u, n, c: [], 10, world.start_ts, "e") == []
    sessions = [sim.run_session(v, random_policy(world), 200, world.start_ts, "l")
                for v in world.users[:10]]
    lengths = [sum(e.type == "impression" for e in events) for events in sessions]
    assert max(lengths) < 200
    bulk = list(generate_history(world, 1, 100, seed=0, allow_leave=True))
    per_user = defaultdict(int)
    for e in bulk:
        per_user[e.user_id] += e.type == "impression"
    assert min(per_user.values()) >= 1 and max(per_user.values()) <= 100
    assert sum(per_user.values()) < 100 * len(world.users) * 0.8


def test_follows_are_not_repeated(world):
    sim = Simulator(world, fatigue_per_swipe=0.0, allow_leave=False)
    viewer = max(world.users, key=lambda v: v.loyalty)
    creator = world.items[0].creator_id
    ids = [i.item_id for i in world.items if i.creator_id == creator] * 20
    events = []
    for s in range(3):
        state = sim.new_session(viewer, f"s{s}")
        for item_id in ids[:40]:
            events += sim.respond(viewer, item_id, world.start_ts, state)
    assert sum(e.type == "follow" for e in events) <= 1
    follows = [(e.user_id, world.item(e.item_id).creator_id) for e in _history(world)
               if e.type == "follow"]
    assert follows and len(follows) == len(set(follows))


def test_bulk_history_matches_the_session_driver():
    """The vectorised history and the one-swipe-at-a-time driver share one behaviour model."""
    w = build_world(n_users=150, n_items=800, seed=11)
    bulk = list(generate_history(w, 1, 20, seed=0, topic_bias=0.0))
    slow = list(generate_history(w, 1, 20, seed=0, policy=random_policy(w, seed=5)))
    play_rate = [sum(e.type == "play" for e in ev) / sum(e.type == "impression" for e in ev)
                 for ev in (bulk, slow)]
    assert abs(play_rate[0] - play_rate[1]) < 0.05
    assert abs(_ratio(w, bulk) - _ratio(w, slow)) < 0.05


def test_new_viewer_is_deterministic_and_known(world):
    a = world.new_viewer("newbie", seed=5)
    b = build_world(n_users=60, n_items=1_500, n_topics=12, seed=7).new_viewer("newbie", seed=5)
    assert np.array_equal(a.taste, b.taste) and a.region == b.region
    assert world.viewer("newbie") is a
    assert isinstance(world.true_affinity("newbie", world.items[0].item_id), float)
    events = Simulator(world).run_session(a, random_policy(world), 5, world.start_ts, "cold")
    assert events and all(e.user_id == "newbie" for e in events)


def test_bad_arguments():
    with pytest.raises(ValueError):
        build_world(n_topics=0)
    with pytest.raises(ValueError):
        build_world(n_items=0)
