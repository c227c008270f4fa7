"""Viewer communities: clustering by topic mix, ids across refreshes, the cold-start source, and
the k-anonymity floor of what is shown about them."""

from __future__ import annotations

import pytest

from reelrank.communities import Communities, CommunityConfig, CommunitySource
from reelrank.engine import Engine
from reelrank.insights import CreatorInsights
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.side_effects import Calls
from reelrank.types import Event, Item

T0 = 1_700_000_000_000
TOPICS = ("cats", "cooking", "football", "music")
CFG = CommunityConfig(min_communities=2, max_communities=6, min_viewers=5)


def make_items() -> list[Item]:
    # 10 videos per topic, creator c<topic>-<k % 3>
    return [Item(f"{t}{k}", f"c{t}-{k % 3}", 10_000, T0, f"clip {k} #{t}", (t,))
            for t in TOPICS for k in range(10)]


def watch(engine, user: str, item_ids: list[str], ts: int, long: bool = True) -> int:
    events = []
    for k, i in enumerate(item_ids):
        events.append(Event(f"{user}-{i}-{ts}", user, i, ts + k, "play",
                            watch_ms=10_000 if long else 300))
    engine.ingest_events(events)
    return ts + len(item_ids)


@pytest.fixture
def engine(store):
    e = Engine(store).load()
    e.ingest_items(make_items())
    return e


def populate(engine, groups: dict[tuple[str, ...], int],
             prefix: str = "g") -> dict[str, tuple[str, ...]]:
    """``groups``: topics -> number of viewers who watch 6 videos of each to the end."""
    ts, who = T0 + (0 if prefix == "g" else 10**7), {}
    for g, (topics, n) in enumerate(groups.items()):
        for v in range(n):
            user = f"{prefix}{g}-{v}"
            ids = [f"{t}{(v + j) % 10}" for t in topics for j in range(6)]
            ts = watch(engine, user, ids, ts)
            who[user] = topics
    return who


def test_communities_follow_the_topic_mix(engine):
    who = populate(engine, {("cats",): 12, ("cooking", "football"): 12, ("music",): 12})
    c = Communities(engine.catalog, engine.live, cfg=CFG)
    found = c.refresh()
    assert len(found) == 3 and sorted(x.viewers for x in found) == [12, 12, 12]
    # Viewers with the same mix share a community; the name says its topics.
    by_group: dict[tuple, set[int]] = {}
    for user, topics in who.items():
        by_group.setdefault(topics, set()).add(c._assignment[user])
    assert all(len(ids) == 1 for ids in by_group.values())
    names = {c.get(next(iter(ids))).name for ids in by_group.values()}
    assert "#cats" in names and "#music" in names
    assert any(set(n.split(" + ")) == {"#cooking", "#football"} for n in names)
    # A refresh keeps ids and reports growth.
    before = {frozenset(x.topics): x.id for x in found}
    populate(engine, {("music",): 5}, prefix="late")  # 5 more music fans
    again = c.refresh()
    assert {frozenset(x.topics): x.id for x in again} == before
    music = next(x for x in again if x.topics == ["music"])
    assert music.growth == 5 and music.viewers == 17


def test_cold_start_source_proposes_the_communitys_favourites(engine):
    populate(engine, {("cats",): 12, ("cooking",): 12})
    c = Communities(engine.catalog, engine.live, cfg=CFG)
    c.refresh()
    watch(engine, "newbie", ["cooking0", "cooking1", "cooking2"], T0 + 10**6)
    ctx = engine.context(FeedRequest("newbie", n=5))
    assert c.of_viewer(ctx.user).topics == ["cooking"]
    cands = CommunitySource(c, max_long_views=10).generate(ctx, 5)
    assert cands and all(x.item_id.startswith("cooking") for x in cands)
    assert not {"cooking0", "cooking1", "cooking2"} & {x.item_id for x in cands}  # seen
    assert "cooking" in cands[0].reasons[0].text
    # Past the cold start it steps aside.
    assert CommunitySource(c, max_long_views=2).generate(ctx, 5) == []
    # A viewer with no history gets nothing from it.
    assert CommunitySource(c).generate(engine.context(FeedRequest("nobody", n=5)), 5) == []


def test_the_k_anonymity_floor_holds_for_stats_and_creator_insights(engine):
    # 25 cats fans, 6 cooking fans: with a floor of 20 only the cats community is shown.
    populate(engine, {("cats",): 25, ("cooking",): 6})
    floor = 20
    c = Communities(engine.catalog, engine.live,
                    cfg=CommunityConfig(min_communities=2, max_communities=4, min_viewers=floor))
    c.refresh()
    sizes = {tuple(x["name"].split(" + ")): x for x in c.figures()["sizes"]}
    assert sizes[("#cats",)]["viewers"] == 25 and sizes[("#cooking",)]["viewers"] is None
    assert sizes[("#cooking",)]["growth"] is None
    # Creator insights: every viewer watched creators c<topic>-0..2; the cats creator's
    # audience is all in one community, the cooking creator's under the floor.
    insights = CreatorInsights(engine.catalog, engine.live, engine.store.get_settings,
                               min_viewers=floor, communities=c)
    cats = insights.for_creator("ccats-0")["audience"]
    assert cats["communities"] == [{"community": "#cats", "id": c.of_viewer(
        engine.live.user("g0-0")).id, "share": 1.0, "viewers": 25}]
    cooking = insights.for_creator("ccooking-0")["audience"]
    assert cooking["suppressed"] is True and "communities" not in cooking
    # A mixed audience: the share of a group under the floor is not shown.
    assert c.audience([f"g0-{k}" for k in range(19)] + ["g1-0"], floor=floor) == []
    got = c.audience([f"g0-{k}" for k in range(20)] + ["g1-0", "g1-1"], floor=floor)
    assert [(x["community"], x["viewers"]) for x in got] == [("#cats", 20)]
    assert got[0]["share"] == pytest.approx(20 / 22, abs=1e-4)


def test_an_erased_viewer_leaves_the_assignment(engine):
    populate(engine, {("cats",): 8, ("music",): 8})
    c = Communities(engine.catalog, engine.live, cfg=CFG)
    engine.effects.add(Calls("communities", erase=c.forget_user))
    c.refresh()
    assert "g0-0" in c._assignment
    engine.erase_user("g0-0", rebuild=False)
    assert "g0-0" not in c._assignment
    assert all("g0-0" not in m for m in c._members.values())
