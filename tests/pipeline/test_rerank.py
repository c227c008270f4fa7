"""The diversity re-ranker on hand-built scored lists."""

from __future__ import annotations

import pytest

from reelrank.engine import Engine
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.explore import NEW_CREATOR_REASON, NEW_VIDEO_REASON
from reelrank.pipeline.rank import Scored
from reelrank.pipeline.rerank import DiversityReranker
from reelrank.types import Candidate, Event, Item

T0 = 1_700_000_000_000


def item(i: int, creator: str, topic: str = "misc", sound: str | None = None) -> Item:
    return Item(f"v{i}", creator, 10_000, T0 - i, hashtags=(topic,), sound_id=sound)


@pytest.fixture
def engine(store):
    e = Engine(store).load()
    # v0..v9: ten creators, all #cats; v10..v19: ten creators, #dogs; v20..v29: sound s1,
    # each its own creator and topic; v30..v34: new creators' videos.
    e.ingest_items([item(i, f"c{i}", "cats") for i in range(10)]
                   + [item(i, f"c{i}", "dogs") for i in range(10, 20)]
                   + [item(i, f"c{i}", f"t{i}", sound="s1") for i in range(20, 30)]
                   + [item(i, f"new{i}", f"t{i}") for i in range(30, 35)])
    return e


def ctx(engine, user: str = "u", mode: str = "personalized"):
    return engine.context(FeedRequest(user, n=10, mode=mode))


def scored(ids: list[int], reasons: dict[int, tuple] | None = None) -> list[Scored]:
    reasons = reasons or {}
    return [Scored(Candidate(f"v{i}", "t", 0.0, reasons.get(i, ())), score=100.0 - k)
            for k, i in enumerate(ids)]


def topics_of(engine, page) -> list[str]:
    return [engine.catalog.get(s.item_id).hashtags[0] for s in page.items]


def test_topic_share_holds_in_every_window(engine):
    rr = DiversityReranker(max_creator_run=1, max_sound_run=None, topic_window=5,
                           max_topic_share=0.4, exploration_share=0.0)
    # The scorer loves cats, then dogs, then the one-off topics.
    page = rr.rerank(ctx(engine), scored(list(range(30))), 10)
    topics = topics_of(engine, page)
    assert len(topics) == 10
    assert topics[:3] == ["cats", "cats", "dogs"]
    for k in range(len(topics) - 4):
        window = topics[k:k + 5]
        assert max(window.count(t) for t in window) <= 2, topics
    assert not any("nothing else fit" in n for ns in page.notes.values() for n in ns)
    assert "moved down: #cats already fills 2 of the last 5 slots" in page.notes["v2"]


def test_topic_rule_off_keeps_the_score_order(engine):
    rr = DiversityReranker(None, None, 0, 1.0, 0.0)
    page = rr.rerank(ctx(engine), scored(list(range(20))), 10)
    assert [s.item_id for s in page.items] == [f"v{i}" for i in range(10)]
    assert page.notes == {}


def test_soft_rules_relax_when_nothing_else_fits(engine):
    rr = DiversityReranker(max_creator_run=1, max_sound_run=1, topic_window=5,
                           max_topic_share=0.4, exploration_share=0.0)
    page = rr.rerank(ctx(engine), scored(list(range(10))), 6)  # cats only
    assert len(page.items) == 6
    assert any("nothing else fit" in n for n in page.notes["v2"])


def test_same_sound_is_spaced(engine):
    rr = DiversityReranker(max_creator_run=None, max_sound_run=1, topic_window=0,
                           exploration_share=0.0)
    page = rr.rerank(ctx(engine), scored([20, 21, 22, 10, 11]), 5)
    sounds = [engine.catalog.get(s.item_id).sound_id for s in page.items]
    assert all(not (a == b == "s1") for a, b in zip(sounds, sounds[1:])), sounds
    assert [s.item_id for s in page.items][:2] == ["v20", "v10"]
    assert page.notes["v21"] == ["moved down: same sound as the 1 item(s) before it"]


def test_exploration_slot_is_guaranteed_and_noted(engine):
    rr = DiversityReranker(None, None, 0, 1.0, exploration_share=0.1)
    reasons = {30: (NEW_CREATOR_REASON,)}
    ids = list(range(10, 20)) + [30]  # the new creator's video is scored last
    page = rr.rerank(ctx(engine), scored(ids, reasons), 10)
    order = [s.item_id for s in page.items]
    assert order.index("v30") == 4  # slot 5: round(5 * 0.1) = 1 exploration item by then
    assert page.notes["v30"] == ["moved up: an exploration slot (a new creator we are trying out)"]
    none = DiversityReranker(None, None, 0, 1.0, exploration_share=0.0)
    assert "v30" not in [s.item_id for s in none.rerank(ctx(engine), scored(ids, reasons), 10).items]


def test_new_creators_get_their_share_of_exploration(engine):
    rr = DiversityReranker(None, None, 0, 1.0, exploration_share=0.2, new_creator_share=0.5)
    reasons = {19: (NEW_VIDEO_REASON,), 30: (NEW_CREATOR_REASON,)}
    page = rr.rerank(ctx(engine), scored(list(range(10, 20)) + [30], reasons), 10)
    order = [s.item_id for s in page.items]
    # The first exploration slot (slot 3) goes to the new creator although the other new video
    # scores higher; the second (slot 8) to the other new video.
    assert order[2] == "v30" and order[7] == "v19"


def test_runs_continue_across_pages(engine):
    engine.live.record_served("u", ["v1"])  # page 1 ended with creator c1
    rr = DiversityReranker(max_creator_run=1, max_sound_run=None, topic_window=0,
                           exploration_share=0.0)
    page = rr.rerank(ctx(engine), scored([1, 2]), 2)
    # v1 itself would never be re-served (the seen filter), but a second item of c1 would be
    # spaced the same way: here the only c1 item goes second.
    assert [s.item_id for s in page.items] == ["v2", "v1"]


def test_following_feed_keeps_its_order(engine):
    engine.ingest_events([Event("f", "fan", "v0", T0, "follow")])
    rr = DiversityReranker(1, 1, 5, 0.2, 0.5)
    page = rr.rerank(ctx(engine, "fan", "following"), scored([0, 1, 2, 3]), 4)
    assert [s.item_id for s in page.items] == ["v0", "v1", "v2", "v3"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        DiversityReranker(max_creator_run=0)
    with pytest.raises(ValueError):
        DiversityReranker(max_topic_share=0.0)
    with pytest.raises(ValueError):
        DiversityReranker(exploration_share=1.5)


def test_moves_show_in_explain(engine):
    from reelrank.engine import default_pipeline

    engine.pipeline = default_pipeline(engine.models, reranker=DiversityReranker(
        1, 1, 5, 0.4, 0.0), exploration=False)
    # Everyone watches cats to the end: cats trend, and the feed must still mix.
    for u in range(5):
        engine.ingest_events([Event(f"w{u}-{i}", f"w{u}", f"v{i}", T0 + i, "play", watch_ms=10_000)
                              for i in range(10)])
    res = engine.feed(FeedRequest("viewer", n=10))
    moved = [i for i, notes in res.trace.rerank_notes.items()
             if any(n.startswith("moved down: #cats") for n in notes)]
    assert moved
    why = engine.explain("viewer", moved[0])
    assert any("#cats already fills" in n for n in why["rerank"])


def test_the_price_counts_slots_the_scorer_alone_would_not_have_filled():
    from reelrank.pipeline.feed import RerankPrice
    from reelrank.pipeline.rank import Scored
    from reelrank.pipeline.rerank import NEW_VIDEO
    from reelrank.types import Candidate, Reason

    def s(i, score, explore=False):
        reasons = (Reason(NEW_VIDEO, "new"),) if explore else ()
        return Scored(Candidate(i, "x", 0.0, reasons), score)

    scored = [s("a", 5), s("b", 4), s("c", 3), s("d", 2), s("e", 1, explore=True)]
    price = RerankPrice()
    # top 3 by score: a, b, c; the page swaps c for d (diversity) and b for e (exploration)
    price.observe(scored, [scored[0], scored[3], scored[4]], 3)
    price.observe(scored, scored[:3], 3)  # a page the rules left alone
    assert price.summary() == {"pages": 2, "slots": 6, "replaced_share": round(2 / 6, 4),
                               "exploration_share": round(1 / 6, 4),
                               "diversity_share": round(1 / 6, 4)}
