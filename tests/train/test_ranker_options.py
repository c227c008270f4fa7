"""The ranker's training options: context dropout, and a ranker without per-video vectors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world, generate_history
from reelrank.importers import import_into
from reelrank.models.vocabulary import PAD_ROW
from reelrank.models.ranker import Ranker
from reelrank.pipeline.context import FeedRequest
from reelrank.registry import ModelRegistry
from reelrank.train.batch import train_from_store
from tests.train.test_training import TINY


@pytest.fixture
def world_store(store):
    world = build_world(n_users=30, n_items=120, n_creators=12, seed=5)
    import_into(store, world.items, generate_history(world, 2, 10, seed=5), progress=False)
    return store


def _hidden_share(store, monkeypatch, dropout: float) -> float:
    """Share of context fields that the ranker saw as unknown while training."""
    seen = []
    forward = Ranker.forward

    def spy(self, x):
        if self.training and torch.is_grad_enabled():
            seen.append(x.context.clone())
        return forward(self, x)

    monkeypatch.setattr(Ranker, "forward", spy)
    cfg = dataclasses.replace(TINY, ranker=dataclasses.replace(TINY.ranker,
                                                               context_dropout=dropout))
    train_from_store(store, None, cfg, progress=False)
    monkeypatch.undo()
    rows = torch.cat(seen)
    return float((rows == PAD_ROW).float().mean())


def test_context_dropout_hides_that_share_of_the_context(world_store, monkeypatch):
    base = _hidden_share(world_store, monkeypatch, 0.0)
    assert base < 0.9  # the simulated events carry context the ranker can see
    hidden = _hidden_share(world_store, monkeypatch, 0.5)
    expected = base + (1 - base) * 0.5
    assert abs(hidden - expected) < 0.05, (base, hidden, expected)


def test_a_ranker_without_video_vectors_publishes_and_serves(world_store, tmp_path):
    cfg = dataclasses.replace(TINY, ranker=dataclasses.replace(TINY.ranker, item_id=False))
    registry = ModelRegistry(tmp_path / "models")
    result = train_from_store(world_store, registry, cfg, progress=False)
    assert result.version is not None
    engine = Engine(world_store, registry=registry, index_kind="exact").load()
    engine.models.refresh()
    ranker = engine.models.current.bundle.ranker
    assert ranker is not None and not ranker.items.use_id
    feed = engine.feed(FeedRequest("u1", n=5))
    assert feed.model_version == result.version and len(feed.items) == 5
    ranked = engine.rank("u1", [i.item_id for i in feed.items])
    assert 0.0 < ranked.items[0].predictions["long_view"] < 1.0
