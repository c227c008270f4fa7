"""The filters' and sources' fast paths against their obvious versions: each filter's own
``apply`` removes what ``reason_for`` one candidate at a time removes, with the same reasons, in
the same order; a source reusing its candidates answers what a fresh source answers, before and
after its top list moves."""

from __future__ import annotations

import dataclasses
import random

import pytest

from reelrank.engine import Engine
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.filters import _PredicateFilter, default_filters
from reelrank.pipeline.sources import (
    FollowingSource, PopularSource, RegionalPopularSource, TrendingSource,
)
from reelrank.types import Candidate, Event, Item, UserSettings

T0 = 1_700_000_000_000


def _items(n: int) -> list[Item]:
    rng = random.Random(1)
    return [Item(f"v{i}", f"c{i % 7}", 10_000, T0 - i * 1000,
                 caption=rng.choice(["my cat video", "cooking pasta", "education talk", ""]),
                 hashtags=tuple(rng.sample(["cat", "food", "fyp", "news", "dog"], 2)),
                 sound_id=f"s{i % 5}" if i % 3 else None, region=rng.choice(["us", "br", None]),
                 language=rng.choice(["en", "pt", None]), visible=i % 11 != 0)
            for i in range(80)]


@pytest.fixture
def engine(store):
    e = Engine(store).load()
    e.ingest_items(_items(80))
    events = []
    for k in range(60):
        user, item = f"u{k % 6}", f"v{(k * 7) % 80}"
        kind = ["impression", "play", "like", "not_interested", "follow", "play"][k % 6]
        events.append(Event(f"e{k}", user, item, T0 + k, kind,
                            watch_ms=9_000 if kind == "play" else None, region="us"))
    e.ingest_events(events)
    return e


def _reference(f, ctx, cands):
    return _PredicateFilter.apply(f, ctx, cands)


@pytest.mark.parametrize("settings", [
    UserSettings("u1"),
    UserSettings("u1", muted_keywords=("cat", "cooking pasta", "")),
    UserSettings("u1", hidden_creators=frozenset({"c1", "c3"}), hidden_sounds=frozenset({"s2"})),
    UserSettings("u1", muted_keywords=("   ",)),
])
@pytest.mark.parametrize("user_id", ["u1", "u3", "never-seen"])
def test_each_filter_removes_what_its_reason_for_removes(engine, settings, user_id):
    engine.live.record_served(user_id, ["v2", "v5", "v8"])
    ctx = engine.context(FeedRequest(user_id))
    ctx.settings = dataclasses.replace(settings, user_id=user_id)
    cands = [Candidate(f"v{i}", "test", 1.0) for i in range(80)] + [Candidate("gone", "test")]
    random.Random(2).shuffle(cands)
    for f in default_filters():
        fast, slow = f.apply(ctx, cands), _reference(f, ctx, cands)
        assert fast.kept == slow.kept, f.name
        assert fast.removed == slow.removed, f.name


def test_sources_reusing_candidates_answer_what_fresh_sources_answer(engine):
    ctx = engine.context(FeedRequest("u1", region="us", language="en"))
    kept = [TrendingSource(), PopularSource(), RegionalPopularSource(), FollowingSource()]
    for round_ in range(3):
        for source in kept:
            fresh = type(source)()
            for n in (5, 50):
                assert source.generate(ctx, n) == fresh.generate(ctx, n), (source.name, n)
        # Live state moves: the top lists are recomputed and the sources must follow.
        engine.ingest_events([Event(f"x{round_}-{k}", f"w{k}", f"v{40 + k + round_}",
                                    T0 + 10_000 + k, "like", region="us") for k in range(30)])
        engine.live.trending_refresh_events = 0
        ctx = engine.context(FeedRequest("u1", region="us", language="en"))
