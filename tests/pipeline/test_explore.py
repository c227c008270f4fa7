"""Exploration of new videos: audience pools, graduation, Thompson sampling, new creators."""

from __future__ import annotations

from collections import Counter

import pytest

from reelrank.engine import Engine, default_pipeline
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.explore import ExploreSource
from reelrank.pipeline.rerank import DiversityReranker
from reelrank.types import DAY_MS, Event, Item

T0 = 1_700_000_000_000


def catalog() -> list[Item]:
    old = [Item(f"old{i}", f"est{i % 3}", 10_000, T0 - 30 * DAY_MS + i, hashtags=(f"t{i % 4}",))
           for i in range(12)]
    new_by_established = [Item(f"nv{i}", f"est{i % 3}", 10_000, T0 - DAY_MS + i,
                               hashtags=(f"t{i % 4}",)) for i in range(4)]
    new_creators = [Item(f"nc{i}", f"fresh{i}", 10_000, T0 - 2 * DAY_MS + i, hashtags=("t9",))
                    for i in range(2)]
    return old + new_by_established + new_creators


@pytest.fixture
def engine(store):
    e = Engine(store).load()
    e.ingest_items(catalog())
    e.ingest_events([Event("clock", "someone", "old0", T0, "like")])  # the clock is T0
    return e


def views(engine, item_id: str, n: int, long: int, prefix: str = "v") -> None:
    """``n`` viewers each see the item; the first ``long`` of them watch it to the end."""
    evs = []
    for k in range(n):
        u = f"{prefix}-{item_id}-{k}"
        evs += [Event(f"{u}-i", u, item_id, T0 + k, "impression"),
                Event(f"{u}-p", u, item_id, T0 + k, "play",
                      watch_ms=10_000 if k < long else 1_000)]
    engine.ingest_events(evs)


def ctx(engine, user: str = "viewer"):
    return engine.context(FeedRequest(user, n=10))


def test_recent_uploads_are_proposed_with_their_reason(engine):
    cands = ExploreSource().generate(ctx(engine), 50)
    got = {c.item_id: c.reasons[0] for c in cands}
    assert set(got) == {"nv0", "nv1", "nv2", "nv3", "nc0", "nc1"}  # nothing 30 days old
    assert got["nc0"].code == "new_creator" and got["nc0"].text == "a new creator we are trying out"
    assert got["nv0"].code == "new_video" and got["nv0"].text == "a new video we are trying out"
    assert all(c.source == "explore" for c in cands)


def test_pools_graduation_and_stopping(engine):
    src = ExploreSource(pools=(10, 50), baseline=0.5, prior_strength=2.0)
    views(engine, "nv0", 10, long=9)  # used pool 0, watched through: on to pool 1
    views(engine, "nv1", 10, long=1)  # used pool 0, skipped: stops
    views(engine, "nv2", 50, long=40)  # used every pool: graduated, left exploration
    views(engine, "nv3", 3, long=0)  # still inside its first budget
    stand = {i: src.standing(i, engine.live.item_stats(i), 0.5) for i in ("nv0", "nv1", "nv2", "nv3")}
    assert (stand["nv0"].pool, stand["nv0"].state) == (1, "exploring")
    assert stand["nv1"].state == "stopped"
    assert (stand["nv2"].pool, stand["nv2"].state) == (2, "graduated")
    assert (stand["nv3"].pool, stand["nv3"].state) == (0, "exploring")
    proposed = {c.item_id for c in src.generate(ctx(engine), 50)}
    assert proposed == {"nv0", "nv3", "nc0", "nc1"}


def test_standing_comes_from_the_log_alone(engine, store):
    src = ExploreSource(pools=(10, 50), baseline=0.5)
    views(engine, "nv0", 12, long=10)
    before = src.standing("nv0", engine.live.item_stats("nv0"), 0.5)
    restarted = Engine(store).load()
    assert src.standing("nv0", restarted.live.item_stats("nv0"), 0.5) == before


def test_thompson_sampling_favours_a_good_start_and_still_tries_the_unknown(engine):
    src = ExploreSource(pools=(1_000,), prior_strength=4.0, new_creator_quota=0.0, seed=3)
    views(engine, "nv0", 20, long=16)  # a strong start
    views(engine, "nv1", 20, long=2)  # a weak one
    # nv2, nv3, nc0, nc1 have no views yet
    firsts = Counter(src.generate(ctx(engine), 1)[0].item_id for _ in range(400))
    assert firsts["nv0"] > 200
    unseen = sum(firsts[i] for i in ("nv2", "nv3", "nc0", "nc1"))
    assert unseen > 20  # the unknown still get tried
    assert firsts["nv1"] < firsts["nv0"] / 10


def test_draws_for_several_pages_are_those_of_as_many_calls(engine):
    """``generate_pages`` (a feed plan's coming pages): the draws that as many calls of
    ``generate`` make, from a generator left in the same state."""
    views(engine, "nv0", 20, long=16)
    views(engine, "nv1", 20, long=2)
    one, many = ExploreSource(seed=4), ExploreSource(seed=4)
    calls = [one.generate(ctx(engine), 3) for _ in range(5)]
    pages = many.generate_pages(ctx(engine), 3, 5)
    assert pages == calls
    assert len({tuple(c.item_id for c in p) for p in pages}) > 1
    assert one._rng.bit_generator.state == many._rng.bit_generator.state
    assert many.generate_pages(ctx(engine), 3, 0) == []


def test_new_creators_get_their_quota_of_proposals(engine):
    src = ExploreSource(pools=(1_000,), new_creator_quota=0.5, seed=1)
    for i in range(4):
        views(engine, f"nv{i}", 20, long=20)  # the established creators' new videos shine
    views(engine, "nc0", 20, long=2)
    views(engine, "nc1", 20, long=2)
    for _ in range(20):
        cands = src.generate(ctx(engine), 2)
        assert sum(c.reasons[0].code == "new_creator" for c in cands) >= 1


def test_a_new_creator_reaches_new_viewers_through_the_feed(engine):
    # The established videos are popular; the new creator's video has no views at all.
    for i in range(12):
        views(engine, f"old{i}", 6, long=6, prefix="fan")
    engine.pipeline = default_pipeline(
        engine.models, reranker=DiversityReranker(exploration_share=0.1),
        explore=ExploreSource(pools=(100,), seed=0))
    for k in range(5):
        res = engine.feed(FeedRequest(f"newcomer{k}", n=10))
        by_id = {i.item_id: i for i in res.items}
        fresh = [i for i in res.items if i.item_id in ("nc0", "nc1")]
        assert fresh, list(by_id)
        assert any(r.text == "a new creator we are trying out" for r in fresh[0].reasons)


def test_a_video_that_fails_its_first_audience_is_no_longer_explored(engine):
    for i in range(12):  # enough popular videos that the catalog fallback stays out of it
        views(engine, f"old{i}", 3, long=3, prefix="fan")
    engine.pipeline = default_pipeline(
        engine.models, reranker=DiversityReranker(exploration_share=0.5),
        explore=ExploreSource(pools=(5, 50), seed=0))
    views(engine, "nc0", 5, long=0)  # five viewers skipped it
    views(engine, "nc1", 5, long=5)  # five watched it to the end
    served = Counter()
    for k in range(8):
        res = engine.feed(FeedRequest(f"later{k}", n=10))
        assert "nc0" not in res.trace.proposals  # no source proposes it any more
        served.update(it.item_id for it in res.items)
    assert served["nc0"] == 0
    assert served["nc1"] == 8  # graduated to the next pool: every page has it


def test_the_pool_is_reused_between_requests_and_refreshed_after_enough_events(engine):
    src = ExploreSource(pools=(10, 100), baseline=0.5, refresh_events=50, refresh_seconds=60,
                        background_refresh=False)
    assert "nv0" in {c.item_id for c in src.generate(ctx(engine), 50)}
    views(engine, "nv0", 10, long=0)  # 20 events: nv0 failed its first pool, but not seen yet
    assert "nv0" in {c.item_id for c in src.generate(ctx(engine), 50)}
    views(engine, "nv1", 20, long=20)  # 40 more events: past refresh_events, recomputed
    assert "nv0" not in {c.item_id for c in src.generate(ctx(engine), 50)}
    # The cached pool gives the same proposals as a source that scans every time.
    fresh = ExploreSource(pools=(10, 100), baseline=0.5, refresh_events=0)
    assert ({c.item_id for c in src.generate(ctx(engine), 50)}
            == {c.item_id for c in fresh.generate(ctx(engine), 50)})


def test_a_stale_pool_is_refreshed_in_the_background(engine):
    src = ExploreSource(pools=(10, 100), baseline=0.5, refresh_events=1, refresh_seconds=60)
    assert "nv0" in {c.item_id for c in src.generate(ctx(engine), 50)}
    views(engine, "nv0", 10, long=0)
    # This request is served from the stale pool while the refresh runs beside it.
    assert "nv0" in {c.item_id for c in src.generate(ctx(engine), 50)}
    with src._refreshing:  # waits for the refresh to finish
        pass
    assert "nv0" not in {c.item_id for c in src.generate(ctx(engine), 50)}
