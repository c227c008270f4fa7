"""Serving's item encodings across model versions: a version whose vocabularies only gained ids
re-encodes only the videos that read one of them, and matches encoding everything again."""

from __future__ import annotations

import copy

import torch

from reelrank.models.retrieval import ItemTower
from reelrank.pipeline.serving_models import _admitted_only
from reelrank.types import Item


def _items() -> list[Item]:
    return [Item(f"v{i}", f"c{i % 7}", 10_000 + 1000 * i, 0, f"clip number{i % 5} word{i % 11}",
                 (f"t{i % 6}", f"t{(i + 1) % 9}"), f"s{i % 4}" if i % 3 else None)
            for i in range(60)]


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f))
               for f in ("item", "creator", "sound", "tags", "duration", "words"))


def test_a_vocabulary_that_only_gained_ids_reencodes_just_the_videos_that_read_them():
    items = _items()
    old = ItemTower(4, min_count=2)
    old.observe(items[:30] * 2)  # the first half admitted; the rest reads the unknown rows
    encoded = old.encode_items(items)
    new = copy.deepcopy(old)
    new.observe([items[40], items[40], items[45], items[45]])  # ids, a creator, tags, words
    assert len(new.item) > len(old.item)
    refreshed = _admitted_only(encoded, old, new, items)
    assert _same(refreshed, new.encode_items(items))
    assert not _same(refreshed, encoded)
    # Nothing admitted: the same encodings, not even copied.
    assert _admitted_only(encoded, old, copy.deepcopy(old), items) is encoded


def test_a_vocabulary_that_moved_a_known_id_is_encoded_again():
    items = _items()
    old = ItemTower(4)
    old.observe(items[:30])
    moved = copy.deepcopy(old)
    table = moved.item
    table.vocabulary.ttl = 10
    table.observe([it.item_id for it in items[:30] if it.item_id not in ("v3", "v5")], now=10)
    assert table.evict(10) == 2  # v3 and v5 lose their rows ...
    table.observe(["v5", "v3"], now=10)  # ... and come back in the other order: they swap
    assert table.rows["v3"] == old.item.rows["v5"] and table.rows["v5"] == old.item.rows["v3"]
    assert _admitted_only(old.encode_items(items), old, moved, items) is None
