"""DynamicEmbedding against a plain-dict reference; growth, eviction, training, persistence."""

from __future__ import annotations

import io
import itertools
import random

import numpy as np
import pytest
import torch
from torch import nn

from reelrank.models.embeddings import DynamicEmbedding
from reelrank.models.vocabulary import PAD_ROW, UNKNOWN_ROW


class ReferenceTable:
    """The obviously correct slow path: dicts, and the lowest unused row for each admission."""

    def __init__(self, min_count: int, ttl: float | None) -> None:
        self.min_count = min_count
        self.ttl = ttl
        self.rows: dict = {}
        self.counts: dict = {}
        self.last_seen: dict = {}

    def observe(self, ids, now) -> None:
        for id_ in ids:
            if id_ is None:
                continue
            self.last_seen[id_] = max(self.last_seen.get(id_, now), now)
            if id_ in self.rows:
                continue
            self.counts[id_] = self.counts.get(id_, 0) + 1
            if self.counts[id_] >= self.min_count:
                del self.counts[id_]
                used = set(self.rows.values())
                self.rows[id_] = next(r for r in itertools.count(2) if r not in used)

    def evict(self, now) -> int:
        if self.ttl is None:
            return 0
        evicted = 0
        for id_ in [i for i, t in self.last_seen.items() if now - t >= self.ttl]:
            del self.last_seen[id_]
            if id_ in self.rows:
                del self.rows[id_]
                evicted += 1
            else:
                self.counts.pop(id_, None)
        return evicted

    def row(self, id_) -> int:
        return PAD_ROW if id_ is None else self.rows.get(id_, UNKNOWN_ROW)


VOCAB = [f"v{i}" for i in range(40)] + list(range(20))  # str and int ids; "5" and 5 differ


@pytest.mark.parametrize(("min_count", "ttl", "seed"), [(1, None, 0), (3, 40.0, 1), (2, 15.0, 2)])
def test_random_stream_matches_reference(min_count, ttl, seed):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    table = DynamicEmbedding(4, min_count=min_count, ttl=ttl, initial_capacity=4)
    ref = ReferenceTable(min_count, ttl)
    probe = VOCAB + ["never-seen", None]
    now = 0.0
    vectors_before: dict = {}
    for _ in range(300):
        now += rng.choice([0.0, 1.0, 2.0, 5.0])
        if rng.random() < 0.2:
            assert table.evict(now) == ref.evict(now)
        else:
            # Skewed popularity, duplicates within a batch, padding, and slightly late events.
            pool = VOCAB[:10] if rng.random() < 0.6 else VOCAB
            ids = [rng.choice(pool) for _ in range(rng.randint(1, 6))]
            ids.append(None)
            event_time = now - rng.choice([0.0, 0.0, 0.0, 3.0])
            table.observe(ids, event_time)
            ref.observe(ids, event_time)
        assert table.id_to_row() == ref.rows
        assert len(table) == len(ref.rows)
        assert table.lookup_rows(probe).tolist() == [ref.row(i) for i in probe]
        rows = list(ref.rows.values())
        assert len(set(rows)) == len(rows)  # two ids never share a row
        assert all(2 <= r < table.capacity for r in rows)
        # An id that kept its row kept its vector, through admissions of others and growth.
        weight = table.weight.detach()
        for id_, (row, vector) in vectors_before.items():
            if ref.rows.get(id_) == row:
                assert torch.equal(weight[row], vector)
        vectors_before = {i: (r, weight[r].clone()) for i, r in ref.rows.items()}
    assert table.capacity > 4  # the stream forced growth


def test_admission_threshold_counts_every_occurrence():
    table = DynamicEmbedding(3, min_count=3)
    table.observe(["a", "a"], now=0)
    assert "a" not in table and table.lookup_rows(["a"]).item() == UNKNOWN_ROW
    table.observe(["a"], now=1)
    assert "a" in table and table.lookup_rows(["a"]).item() == 2
    table.observe(["b", "b", "b"], now=1)  # duplicates in one batch count
    assert table.lookup_rows(["b"]).item() == 3
    assert len(table) == 2


def test_unknown_and_padding_rows():
    table = DynamicEmbedding(5, min_count=2)
    table.observe(["seen-once"], now=0)
    rows = table.lookup_rows(["never", "seen-once", None]).view(1, 3)
    assert rows.tolist() == [[UNKNOWN_ROW, UNKNOWN_ROW, PAD_ROW]]
    out = table(rows)  # (1, 3) -> (1, 3, 5)
    assert out.shape == (1, 3, 5)
    assert torch.equal(out[0, 0], table.weight[UNKNOWN_ROW]) and torch.equal(out[0, 1], out[0, 0])
    assert torch.count_nonzero(out[0, 0]) > 0  # the unknown row is learned, not zero
    assert torch.equal(out[0, 2], torch.zeros(5))
    out.sum().backward()
    assert torch.count_nonzero(table.weight.grad[UNKNOWN_ROW]) == 5
    assert torch.count_nonzero(table.weight.grad[PAD_ROW]) == 0


def test_lookups_have_no_side_effects():
    table = DynamicEmbedding(2, min_count=2, ttl=10)
    table.observe(["a", "b", "b"], now=0)
    before = (_plain(table.get_extra_state()), table.version, table.weight.detach().clone())
    for _ in range(5):
        table.lookup_rows(["a", "b", "c", None])
        table(table.lookup_rows(["a", "b", "c"]))
    assert (_plain(table.get_extra_state()), table.version) == before[:2]
    assert torch.equal(table.weight.detach(), before[2])
    table.observe(["a"], now=1)  # lookups did not count toward admission
    assert "a" in table and "c" not in table


def test_ttl_eviction_recycles_and_reinitialises_rows():
    table = DynamicEmbedding(3, ttl=10, initial_capacity=8)
    table.observe(["a"], now=0)
    table.observe(["b"], now=5)
    assert table.evict(9) == 0
    with torch.no_grad():
        table.weight[2].fill_(7.0)  # mark a's row
    assert table.evict(10) == 1  # now - last_seen >= ttl
    assert "a" not in table and table.lookup_rows(["a", "b"]).tolist() == [UNKNOWN_ROW, 3]
    table.observe(["c"], now=10)
    assert table.lookup_rows(["c"]).item() == 2  # lowest free row is reused
    assert not torch.any(table.weight[2] == 7.0)  # and re-initialised for its new id
    table.observe(["b"], now=12)  # observing refreshes the deadline
    assert table.evict(21) == 1 and "b" in table and "c" not in table
    assert table.evict(22) == 1 and len(table) == 0


def test_pending_ids_expire_and_restart_their_count():
    table = DynamicEmbedding(2, min_count=2, ttl=10)
    table.observe(["x"], now=0)
    assert table.evict(10) == 0  # no admitted id lost a row, but x's count is gone
    table.observe(["x"], now=11)
    assert "x" not in table
    table.observe(["x"], now=12)
    assert "x" in table


def test_ttl_none_never_evicts():
    table = DynamicEmbedding(2)
    table.observe(["a"], now=0)
    assert table.evict(1e12) == 0 and "a" in table


def _fit_step(table, optimizer, ids, targets):
    optimizer.zero_grad()
    loss = ((table(table.lookup_rows(ids)) - targets) ** 2).sum()  # (N,) -> (N, D)
    loss.backward()
    optimizer.step()
    return loss.item()


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # from torch's sparse Adagrad
@pytest.mark.parametrize(
    ("sparse", "make_optimizer"),
    [
        (False, lambda p: torch.optim.Adam(p, lr=0.05)),
        (False, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        (True, lambda p: torch.optim.SparseAdam(p, lr=0.05)),
        (True, lambda p: torch.optim.Adagrad(p, lr=0.5)),
    ],
    ids=["adam", "sgd-momentum", "sparse-adam", "sparse-adagrad"],
)
def test_growth_keeps_rows_and_training_continues(sparse, make_optimizer):
    torch.manual_seed(0)
    table = DynamicEmbedding(4, initial_capacity=4, sparse=sparse)
    optimizer = make_optimizer(table.parameters())
    table.observe(["a", "b"], now=0)
    targets = torch.ones(2, 4)
    for _ in range(3):
        _fit_step(table, optimizer, ["a", "b"], targets)
    before = table.weight.detach().clone()
    parameter = table.weight
    table.observe(["c"], now=1)  # no free row: capacity 4 -> 8
    assert table.capacity == 8 and table.weight is parameter
    assert torch.equal(table.weight.detach()[:4], before)  # bit-identical old rows
    table.sync_optimizer(optimizer)
    ids, targets = ["a", "b", "c"], torch.ones(3, 4)
    losses = [_fit_step(table, optimizer, ids, targets) for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0]
    for value in optimizer.state[table.weight].values():
        if torch.is_tensor(value) and value.dim() == 2:
            assert value.shape == (8, 4)


def test_step_without_sync_after_growth_fails_loudly():
    table = DynamicEmbedding(2, initial_capacity=3)
    optimizer = torch.optim.Adam(table.parameters(), lr=0.1)
    table.observe(["a"], now=0)
    _fit_step(table, optimizer, ["a"], torch.ones(1, 2))
    table.observe(["b"], now=0)
    with pytest.raises(RuntimeError):
        _fit_step(table, optimizer, ["a", "b"], torch.ones(2, 2))


def test_sync_resets_optimizer_state_of_recycled_rows():
    table = DynamicEmbedding(2, ttl=5, initial_capacity=8)
    optimizer = torch.optim.Adam(table.parameters(), lr=0.1)
    table.observe(["a", "b"], now=0)
    table.sync_optimizer(optimizer)
    _fit_step(table, optimizer, ["a", "b"], torch.ones(2, 2))
    table.observe(["b"], now=4)
    table.evict(5)
    table.observe(["c"], now=5)  # takes a's row 2
    table.sync_optimizer(optimizer)
    state = optimizer.state[table.weight]
    assert torch.count_nonzero(state["exp_avg"][2]) == 0
    assert torch.count_nonzero(state["exp_avg"][3]) > 0  # b's history is kept


def test_gradient_accumulated_before_growth_survives():
    table = DynamicEmbedding(2, initial_capacity=3)
    table.observe(["a"], now=0)
    table(table.lookup_rows(["a"])).sum().backward()
    grad = table.weight.grad.clone()
    table.observe(["b"], now=0)
    assert table.weight.grad.shape == (6, 2)
    assert torch.equal(table.weight.grad[:3], grad)


def _busy_table() -> DynamicEmbedding:
    torch.manual_seed(3)
    table = DynamicEmbedding(4, min_count=2, ttl=30, initial_capacity=4)
    rng = random.Random(3)
    for now in range(100):
        table.observe([rng.choice(VOCAB) for _ in range(4)], now)
        if now % 10 == 9:
            table.evict(now)
    return table


def test_state_dict_round_trip_restores_lookups_exactly():
    table = _busy_table()
    vocabulary = table.vocabulary
    # growth, pending ids, free rows
    assert table.capacity > 4 and vocabulary.pending and vocabulary.free_rows()
    buffer = io.BytesIO()
    torch.save(table.state_dict(), buffer)
    buffer.seek(0)
    restored = DynamicEmbedding(4, min_count=2, ttl=30, initial_capacity=16)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    probe = VOCAB + ["never", None]
    assert restored.capacity == table.capacity
    assert torch.equal(restored.lookup_rows(probe), table.lookup_rows(probe))
    assert torch.equal(restored(restored.lookup_rows(probe)), table(table.lookup_rows(probe)))
    # Counts, deadlines and the free list came along: both tables evolve identically.
    for now in range(100, 140):
        for t in (table, restored):
            t.observe(VOCAB[now % len(VOCAB) :][:3], now)
            t.evict(now)
        assert restored.id_to_row() == table.id_to_row()


def test_state_dict_round_trip_inside_a_parent_module():
    parent = nn.ModuleDict({"item_ids": _busy_table()})
    restored = nn.ModuleDict({"item_ids": DynamicEmbedding(4, min_count=2, ttl=30)})
    restored.load_state_dict(parent.state_dict())
    assert restored["item_ids"].id_to_row() == parent["item_ids"].id_to_row()
    assert torch.equal(restored["item_ids"].weight, parent["item_ids"].weight)


def _plain(state: dict) -> dict:
    return {k: v.tolist() if torch.is_tensor(v) else v for k, v in state.items()}


def test_state_round_trip_keeps_id_types_and_any_text():
    table = DynamicEmbedding(2)
    ids = [5, "5", "vidéo", "視頻", "", "a\x00b", -3]
    table.observe(ids, now=7)
    buffer = io.BytesIO()
    torch.save(table.state_dict(), buffer)
    buffer.seek(0)
    restored = DynamicEmbedding(2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.id_to_row() == table.id_to_row()
    assert {type(i) for i in restored.id_to_row()} == {int, str}


def test_state_published_in_the_list_format_still_loads():
    """Versions in a registry from before the tensor format hold plain lists."""
    table = _busy_table()
    vocabulary = table.vocabulary
    rows, counts, seen = vocabulary.rows, vocabulary.pending, vocabulary.last_seen
    admitted, pending = list(rows), list(counts)
    old = {"format": 1, "ids": admitted, "rows": [rows[i] for i in admitted],
           "last_seen": [seen[i] for i in admitted], "pending_ids": pending,
           "pending_counts": [counts[i] for i in pending],
           "pending_last_seen": [seen[i] for i in pending],
           "next_row": vocabulary.next_row}
    restored = DynamicEmbedding(4, min_count=2, ttl=30, initial_capacity=table.capacity)
    restored.set_extra_state(old)
    assert restored.id_to_row() == table.id_to_row()
    assert restored.vocabulary.pending == counts and restored.vocabulary.last_seen == seen


def test_id_types():
    table = DynamicEmbedding(2)
    table.observe([5, "5"], now=0)
    assert table.lookup_rows([5, "5", np.int64(5)]).tolist() == [2, 3, 2]
    with pytest.raises(TypeError):
        table.observe([1.5], now=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 0},
        {"dim": 2, "min_count": 0},
        {"dim": 2, "ttl": 0},
        {"dim": 2, "initial_capacity": 1},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        DynamicEmbedding(**kwargs)


def _loaded(state: dict, like: DynamicEmbedding | None = None) -> DynamicEmbedding:
    table = DynamicEmbedding(4, min_count=2, ttl=30)
    table.reuse_vocabulary_of(like)
    table.load_state_dict(state)
    return table


def test_a_newer_state_of_the_same_vocabulary_shares_the_mapping_until_one_side_changes():
    trained = _busy_table()
    first = _loaded(trained.state_dict())
    with torch.no_grad():
        trained.weight.add_(1.0)  # new weights, same ids and rows: an online step
    second = _loaded(trained.state_dict(), like=first)
    assert second.rows is first.rows  # nothing rebuilt
    probe = VOCAB + ["never", None]
    assert torch.equal(second(second.lookup_rows(probe)), trained(trained.lookup_rows(probe)))
    before = first.id_to_row()
    new_id = next(f"fresh{k}" for k in range(100) if f"fresh{k}" not in before)
    second.observe([new_id, new_id], now=200)  # admitted (min_count 2): second's copy changes
    assert new_id in second and new_id not in first and first.id_to_row() == before
    # ... and a table that changed is not used as a model for the next one.
    third = _loaded(second.state_dict(), like=second)
    assert third.rows is not second.rows and third.id_to_row() == second.id_to_row()


def test_a_state_with_other_ids_or_rows_builds_its_own_mapping():
    trained = _busy_table()
    first = _loaded(trained.state_dict())
    trained.observe(["other", "other"], now=100)
    second = _loaded(trained.state_dict(), like=first)
    assert second.rows is not first.rows
    assert second.id_to_row() == trained.id_to_row() and "other" not in first
