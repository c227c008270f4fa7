"""The model registry: versions with their large parts in files of their own, parts linked
from an earlier version, loads that skip a part, and versions from before parts had files."""

from __future__ import annotations

import os

import pytest
import torch

from reelrank.errors import ModelError
from reelrank.models.embeddings import DynamicEmbedding
from reelrank.registry import ModelRegistry


def _state(seed: int) -> dict:
    torch.manual_seed(seed)
    table = DynamicEmbedding(3)
    table.observe(["a", 5, "vidéo"], now=1)
    return {
        "format": 1,
        "retrieval": {"tower.weight": torch.randn(4, 3), "ids": table.state_dict()},
        "ranker": {"w": torch.randn(2, 2), "steps": torch.tensor(7),
                   "mask": torch.tensor([True, False]), "counts": torch.arange(3)},
        "ranker_kwargs": {"dim": 3, "heads": ["like", "long_view"]},
        "value_weights": {"like": 1.5},
    }


def _same(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_a_version_loads_as_it_was_published(tmp_path):
    registry = ModelRegistry(tmp_path)
    state = _state(0)
    version = registry.publish(state, {"note": "x"})
    files = {p.name for p in (tmp_path / version).iterdir()}
    assert files == {"model.pt", "meta.json", "retrieval.safetensors", "ranker.safetensors"}
    artifact = registry.load(version)
    assert _same(state, artifact.state) and artifact.meta["note"] == "x"
    # The extra state of an embedding table (tensors, ints) loads into a table again.
    table = DynamicEmbedding(3)
    table.load_state_dict(artifact.state["retrieval"]["ids"])
    assert table.id_to_row() == {"a": 2, 5: 3, "vidéo": 4}
    assert registry.load(version, skip=("retrieval",)).state["retrieval"] is None


def test_an_unchanged_part_is_linked_and_outlives_the_version_it_came_from(tmp_path):
    registry = ModelRegistry(tmp_path)
    first = registry.publish(_state(0), {})
    second_state = _state(1)
    second_state["retrieval"] = None  # the publisher does not even serialise it
    second = registry.publish(second_state, {}, reuse={"retrieval": first})
    a, b = (tmp_path / v / "retrieval.safetensors" for v in (first, second))
    assert os.stat(a).st_ino == os.stat(b).st_ino  # one file on disk
    assert registry.has_part(second, "retrieval")
    registry.prune(keep=0)  # keeps only the latest: the second
    assert registry.versions() == [second]
    loaded = registry.load(second).state
    assert _same(loaded["retrieval"], _state(0)["retrieval"])
    assert _same(loaded["ranker"], _state(1)["ranker"])


def test_reusing_a_part_the_version_lacks_is_an_error(tmp_path):
    registry = ModelRegistry(tmp_path)
    state = _state(0)
    state["retrieval"] = None
    first = registry.publish(state, {})
    assert not registry.has_part(first, "retrieval")
    with pytest.raises(ModelError):
        registry.publish(_state(1), {}, reuse={"retrieval": first})
    assert registry.versions() == [first]  # nothing half-published


def test_a_version_saved_as_one_file_still_loads(tmp_path):
    """Versions published before the large parts had files of their own."""
    registry = ModelRegistry(tmp_path)
    version = "20260101-000000-0001"
    (tmp_path / version).mkdir()
    state = _state(2)
    torch.save(state, tmp_path / version / "model.pt")
    (tmp_path / version / "meta.json").write_text("{}")
    assert _same(registry.load(version).state, state)
    assert registry.load(version, skip=("retrieval",)).state["retrieval"] is not None


def test_a_meta_copied_from_an_earlier_version_names_the_new_one(tmp_path):
    registry = ModelRegistry(tmp_path)
    first = registry.publish(_state(0), {"note": "x"})
    old = registry.meta(first)
    second = registry.publish(_state(0), {**old, "base_version": first})
    meta = registry.meta(second)
    assert second != first and meta["version"] == second and meta["base_version"] == first
    assert meta["published_at"] >= old["published_at"] and meta["note"] == "x"


def test_a_name_freed_by_pruning_in_the_same_second_is_not_given_twice(tmp_path, monkeypatch):
    """Versions are numbered within their second: after a prune in that second, the next
    number follows the highest left, not the count left (which names a version that exists)."""
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt, t=None: "20261206-120000")
    registry = ModelRegistry(tmp_path)
    first = registry.publish(_state(0), {})
    second = registry.publish(_state(1), {})
    assert registry.prune(keep=0) == [first]
    third = registry.publish(_state(2), {})
    assert len({first, second, third}) == 3 and registry.versions() == [second, third]
    assert registry.latest() == third and _same(registry.load().state, _state(2))


def test_a_prune_keeps_the_base_of_a_version_that_stays(tmp_path):
    """Online versions carry their base version's learned topics (``topics_of``): pruning the
    base would leave the latest version, and a server restarted on it, without topics."""
    from reelrank.registry import topics_of

    registry = ModelRegistry(tmp_path)
    base = registry.publish(_state(0), {"topics": {"topics": [{"id": 1}]}})
    online = [registry.publish(_state(k), {"base_version": base}) for k in (1, 2, 3)]
    other = registry.publish(_state(4), {})  # a batch version with no base: its own
    latest = registry.publish(_state(5), {"base_version": base})
    assert registry.prune(keep=1) == online  # the base stays: the latest names it
    assert registry.versions() == [base, other, latest]
    assert topics_of(registry.meta(latest), registry) == {"topics": [{"id": 1}]}
    assert registry.prune(keep=0) == [other]
    assert registry.versions() == [base, latest]


def test_a_prune_keeping_more_than_there_are_deletes_nothing(tmp_path):
    registry = ModelRegistry(tmp_path)
    versions = [registry.publish(_state(0), {}) for _ in range(9)]
    for keep in (8, 9, 10, 50):
        assert registry.prune(keep=keep) == []
    assert registry.versions() == versions
    assert registry.prune(keep=7) == versions[:1]
