"""IdVocabulary on its own: rows handed out and grown, lazy bookkeeping after a load, copies.

Admission, expiry and persistence through a table are tested against a plain-dict reference in
test_embeddings.py; these are what the vocabulary offers its owner beyond that.
"""

from __future__ import annotations

import copy
import random

import pytest

from reelrank.models.vocabulary import PAD_ROW, UNKNOWN_ROW, IdVocabulary

VOCAB = [f"v{i}" for i in range(40)] + list(range(20))


def _busy() -> IdVocabulary:
    vocabulary = IdVocabulary(min_count=2, ttl=30, capacity=4)
    rng = random.Random(3)
    for now in range(100):
        vocabulary.observe([rng.choice(VOCAB) for _ in range(4)], now)
        if now % 10 == 9:
            vocabulary.evict(now)
    return vocabulary


def test_on_admit_hears_each_new_row_in_order_after_capacity_grew():
    vocabulary = IdVocabulary(capacity=3)
    heard = []
    vocabulary.observe(["a", "b", "a", None, "c"], now=0,
                       on_admit=lambda row: heard.append((row, vocabulary.capacity)))
    assert heard == [(2, 3), (3, 6), (4, 6)]
    assert vocabulary.lookup(["a", "b", "c", "d", None]) == [2, 3, 4, UNKNOWN_ROW, PAD_ROW]
    assert vocabulary.version == 4  # three admissions and one growth
    assert vocabulary.next_row == 5 and vocabulary.free_rows() == []


def test_lookups_read_numpy_integers_as_ints_and_reject_other_types():
    np = pytest.importorskip("numpy")
    vocabulary = IdVocabulary()
    vocabulary.observe([5, "5"], now=0)
    assert vocabulary.lookup([np.int64(5), "5"]) == [2, 3]
    with pytest.raises(TypeError):
        vocabulary.lookup([1.5])


def test_bookkeeping_built_on_first_use_matches_the_saved_state():
    """A loaded vocabulary builds last-seen times, pending counts and free rows only when
    training needs them; what it then holds and saves is what was saved."""
    trained = _busy()
    state = trained.state()
    restored = IdVocabulary(min_count=2, ttl=30, capacity=trained.capacity)
    restored.load_state(state)
    assert restored._unbuilt is not None  # lookups alone never build it
    restored.lookup(VOCAB)
    assert restored._unbuilt is not None
    again = restored.state()
    for k, v in state.items():
        assert (v.equal(again[k]) if hasattr(v, "equal") else v == again[k]), k
    assert restored.pending == trained.pending and restored.last_seen == trained.last_seen
    assert restored.free_rows() == trained.free_rows()


def test_a_state_larger_than_the_capacity_is_refused():
    trained = _busy()
    with pytest.raises(ValueError):
        IdVocabulary(capacity=4).load_state(trained.state())


def test_a_deep_copy_is_equal_and_independent():
    original = _busy()
    copied = copy.deepcopy(original)
    assert copied.id_to_row() == original.id_to_row() and copied.version == original.version
    assert copied.pending == original.pending and copied.free_rows() == original.free_rows()
    before = original.id_to_row()
    copied.observe(["new", "new"], now=100)
    copied.evict(1_000)
    assert original.id_to_row() == before and "new" not in original and len(copied) == 0
