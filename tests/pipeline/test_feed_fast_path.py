"""The feed's fast path serves the same pages as the reference path: two engines on two copies
of one small world with one trained model, one keeping viewers' retrieval vectors between
requests (``FeedPipeline.viewer_vectors``, the default) and one running the user tower on every
request, get the same requests and the same events, and must answer every page alike (ids,
scores, sources, reasons), before and after swipes, for a viewer never seen before, and across a
new model version."""

from __future__ import annotations

import random

import pytest

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world, generate_history
from reelrank.importers import import_into
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.feed import ViewerVectors
from reelrank.registry import ModelRegistry
from reelrank.store import open_store
from reelrank.train.batch import train_from_store
from reelrank.types import Event
from tests.train.test_training import TINY


@pytest.fixture
def twins(tmp_path):
    world = build_world(n_users=40, n_items=150, n_creators=15, seed=11)
    history = list(generate_history(world, 2, 12, seed=11))
    stores = [open_store(tmp_path / name) for name in ("fast", "slow")]
    for store in stores:
        import_into(store, world.items, history, progress=False)
    registry = ModelRegistry(tmp_path / "models")
    train_from_store(stores[0], registry, TINY, progress=False)
    fast, slow = (Engine(s, registry=registry, index_kind="exact").load().for_offline()
                  for s in stores)
    slow.pipeline.viewer_vectors = None  # the reference: the user tower on every request
    yield fast, slow, registry, stores[0]
    for store in stores:
        store.close()


def _page(result) -> list[tuple]:
    return [(i.item_id, i.score, i.source, tuple((r.code, r.text) for r in i.reasons))
            for i in result.items]


def _both(fast, slow, user_id: str, n: int = 10) -> list[tuple]:
    a = fast.feed(FeedRequest(user_id=user_id, n=n))
    b = slow.feed(FeedRequest(user_id=user_id, n=n))
    assert a.model_version == b.model_version
    assert _page(a) == _page(b), f"pages differ for {user_id}"
    return _page(a)


def test_fast_path_serves_the_reference_pages(twins):
    fast, slow, registry, store = twins
    cache = fast.pipeline.viewer_vectors
    assert isinstance(cache, ViewerVectors)
    viewers = sorted(fast.live.user_ids())[:8] + ["never-seen-before"]
    rng = random.Random(3)
    ts = fast.live.clock + 1_000
    for step in range(60):
        user = rng.choice(viewers)
        page = _both(fast, slow, user)
        if page and rng.random() < 0.4:
            # A swipe on the page's first video, posted to both: the next page must reflect it.
            ts += 1_000
            kind = rng.choice(["play", "skip", "like"])
            event = Event(event_id=f"e{step}", user_id=user, item_id=page[0][0], type=kind,
                          ts=ts, watch_ms=20_000 if kind != "like" else None)
            for engine in (fast, slow):
                engine.ingest_events([event])
            misses = cache.misses
            _both(fast, slow, user)
            if kind != "like" or fast.live.user(user) is not None:
                assert cache.misses == misses + 1  # the swipe changed the key: computed afresh
    assert cache.hits > 0 and cache.misses > 0

    # A new version: every kept vector is stale, and both engines serve the new one alike.
    train_from_store(store, registry, TINY, progress=False)
    for engine in (fast, slow):
        assert engine.models.refresh()
    hits = cache.hits
    for user in viewers:
        _both(fast, slow, user)
    assert cache.hits == hits


def test_kept_vectors_expire_and_are_bounded():
    cache = ViewerVectors(max_viewers=2, ttl_s=60.0)
    model = object()
    for user in ("a", "b", "c"):
        cache.put(user, model, (), None)
    assert cache.get("a", model, ()) == (False, None)  # the oldest went past the bound
    assert cache.get("c", model, ()) == (True, None)
    assert cache.get("c", object(), ())[0] is False  # another version
    assert cache.get("c", model, ("t",))[0] is False  # other tokens
    cache.forget("c")
    assert cache.get("c", model, ())[0] is False
    cache.ttl_s = -1.0
    assert cache.get("b", model, ())[0] is False  # past its time


def test_erasing_a_viewer_drops_their_kept_vector(twins):
    fast, _slow, _registry, _store = twins
    fast.feed(FeedRequest(user_id="u1", n=5))
    kept = fast.pipeline.viewer_vectors
    assert "u1" in kept._entries
    fast.erase_user("u1")
    assert "u1" not in kept._entries
