"""Peer libraries behind ``Recommender`` (optional extra ``.[peers]``: skipped without it)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytest.importorskip("implicit")
pytest.importorskip("recbole")

import torch  # noqa: E402

from reelrank.eval.data import Interactions, Recommender  # noqa: E402
from reelrank.eval.peers import (  # noqa: E402
    ImplicitALS,
    ImplicitBPR,
    RecBoleSASRec,
    available_peers,
    user_item_matrix,
)

N_CLUSTERS, CLUSTER_SIZE, PER_USER, N_USERS = 3, 10, 6, 150
N_EXTRA_ITEMS = 4  # catalog items nobody interacts with


def _interactions(sequences: list[list[int]], n_items: int) -> Interactions:
    users = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences]).astype(np.int32)
    items = np.concatenate([np.asarray(s, dtype=np.int32) for s in sequences if len(s)])
    ts = np.concatenate([1_000 * np.arange(len(s), dtype=np.int64) for s in sequences if len(s)])
    return Interactions(
        user_ids=np.array([f"u{u}" for u in range(len(sequences))], dtype=object),
        item_ids=np.array([f"i{j}" for j in range(n_items)], dtype=object),
        user=users,
        item=items,
        ts=ts,
    )


@pytest.fixture(scope="module")
def clusters() -> tuple[Interactions, np.ndarray]:
    """Users each watch PER_USER items of one cluster; item indices are shuffled across clusters.

    Returns the training table and the (n_users, n_items) cluster-membership mask of each user.
    """
    rng = np.random.default_rng(7)
    n_items = N_CLUSTERS * CLUSTER_SIZE + N_EXTRA_ITEMS
    perm = rng.permutation(n_items)  # cluster c holds items perm[c*S:(c+1)*S]
    sequences, in_cluster = [], np.zeros((N_USERS, n_items), dtype=bool)
    for u in range(N_USERS):
        members = perm[(u % N_CLUSTERS) * CLUSTER_SIZE : (u % N_CLUSTERS + 1) * CLUSTER_SIZE]
        sequences.append(rng.choice(members, size=PER_USER, replace=False).tolist())
        in_cluster[u, members] = True
    return _interactions(sequences, n_items), in_cluster


def _in_cluster_auc(model: Recommender, train: Interactions, in_cluster: np.ndarray) -> float:
    """Share of (unseen in-cluster item, out-of-cluster item) pairs a user's scores order right."""
    users = np.arange(train.n_users)
    scores = model.score_users(users)
    assert scores.shape == (train.n_users, train.n_items)
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    seen = np.zeros_like(in_cluster)
    seen[train.user, train.item] = True
    wins = []
    for u in users:
        pos = scores[u, in_cluster[u] & ~seen[u]]
        neg = scores[u, ~in_cluster[u]]
        wins.append(np.mean(pos[:, None] > neg[None, :]))
    return float(np.mean(wins))


def test_user_item_matrix_binary_or_counts() -> None:
    train = _interactions([[2, 0, 2], [], [1]], n_items=4)
    binary = user_item_matrix(train).toarray()
    counts = user_item_matrix(train, "count").toarray()
    assert binary.shape == (3, 4) and binary.dtype == np.float32
    np.testing.assert_array_equal(binary, [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(counts, [[1, 0, 2, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    with pytest.raises(ValueError):
        user_item_matrix(train, "tfidf")


def test_available_peers_lists_every_peer() -> None:
    peers = available_peers()
    assert set(peers) == {"implicit_als", "implicit_bpr", "recbole_sasrec"}
    for name, factory in peers.items():
        model = factory()
        assert isinstance(model, Recommender)
        assert model.name == name
        assert isinstance(model.settings, dict) and model.settings["library"]


def test_available_peers_leaves_out_a_library_that_does_not_import(monkeypatch, caplog) -> None:
    from reelrank.eval import peers

    monkeypatch.setattr(
        peers, "_import_error", lambda module: "ImportError: nope" if module == "recbole" else None
    )
    with caplog.at_level("INFO", logger="reelrank.eval.peers"):
        found = peers.available_peers()
    assert set(found) == {"implicit_als", "implicit_bpr"}
    assert "recbole_sasrec" in caplog.text and "nope" in caplog.text


@pytest.mark.parametrize(
    "model",
    [
        ImplicitALS(factors=16, iterations=10, seed=1),
        ImplicitBPR(factors=16, iterations=200, learning_rate=0.05, num_threads=1, seed=1),
    ],
    ids=["als", "bpr"],
)
def test_implicit_ranks_unseen_in_cluster_items_first(
    model: Recommender, clusters: tuple[Interactions, np.ndarray]
) -> None:
    train, in_cluster = clusters
    model.fit(train)
    assert _in_cluster_auc(model, train, in_cluster) > 0.9
    assert model.settings["implicit_version"] and model.settings["fit_seconds"] >= 0


def _small_sasrec(**kwargs: object) -> RecBoleSASRec:
    params: dict[str, object] = dict(
        max_seq_length=8,
        hidden_size=32,
        n_layers=1,
        n_heads=1,
        inner_size=64,
        hidden_dropout_prob=0.1,
        attn_dropout_prob=0.1,
        learning_rate=0.01,
        train_batch_size=64,
        num_threads=1,
        seed=3,
    )
    params.update(kwargs)
    return RecBoleSASRec(**params)  # type: ignore[arg-type]


def test_recbole_sasrec_ranks_unseen_in_cluster_items_first(
    clusters: tuple[Interactions, np.ndarray], tmp_path, monkeypatch
) -> None:
    train, in_cluster = clusters
    monkeypatch.chdir(tmp_path)  # RecBole must not write logs/checkpoints where it runs
    argv, cuda = list(sys.argv), os.environ.get("CUDA_VISIBLE_DEVICES")
    rng_before = np.random.get_state()[1].copy()

    model = _small_sasrec(epochs=12, stopping_step=3)
    model.fit(train)

    assert _in_cluster_auc(model, train, in_cluster) > 0.8
    s = model.settings
    # RecBole kept our split: every prefix -> next pair, the last one per user held out.
    assert s["n_valid_pairs"] == N_USERS
    assert s["n_train_pairs"] == N_USERS * (PER_USER - 2)
    assert 1 <= s["best_epoch"] <= s["epochs_run"] <= 12
    assert s["loss_type"] == "CE" and s["recbole_version"] == "1.2.1"
    # the runtime shims leave no trace in the process or the working directory
    assert not hasattr(np, "float") and not hasattr(np, "unicode")
    assert not torch.is_anomaly_enabled()  # RecBole's model zoo switches it on when imported
    assert sys.argv == argv and os.environ.get("CUDA_VISIBLE_DEVICES") == cuda
    np.testing.assert_array_equal(np.random.get_state()[1], rng_before)
    assert list(tmp_path.iterdir()) == []


def test_recbole_sasrec_maps_item_ids_back_to_our_columns() -> None:
    """A -> B learned strongly gives B the top score after A, for several scrambled pairs."""
    rng = np.random.default_rng(11)
    n_items = 40
    perm = rng.permutation(n_items)
    pairs = [(int(perm[2 * k]), int(perm[2 * k + 1])) for k in range(5)]  # A_k -> B_k
    noise = perm[10:36]  # filler items; perm[36:] never occur
    sequences: list[list[int]] = []
    for rep in range(40):
        for a, b in pairs:
            x, y = rng.choice(noise, size=2, replace=False)
            sequences.append([int(x), int(y), a, b])
    queries = []
    for a, _ in pairs:  # users whose history ends with A: their next item should be B
        x, y = rng.choice(noise, size=2, replace=False)
        queries.append(len(sequences))
        sequences.append([int(x), int(y), a])
    sequences.append([])  # a user without training interactions
    train = _interactions(sequences, n_items)

    model = _small_sasrec(epochs=15, validation=False)
    model.fit(train)
    # RecBole's own ids are not ours (first-appearance order), so this exercises the mapping.
    assert not np.array_equal(model._rb_of_ours, np.arange(1, n_items + 1))
    assert model.settings["n_train_pairs"] == sum(max(len(s) - 1, 0) for s in sequences)
    assert model.settings["epochs_run"] == 15

    scores = model.score_users(np.array(queries + [len(sequences) - 1]))
    assert scores.shape == (len(queries) + 1, n_items) and scores.dtype == np.float32
    top = scores[:-1].argmax(axis=1)
    assert top.tolist() == [b for _, b in pairs]
    np.testing.assert_array_equal(scores[-1], 0.0)  # empty history: no opinion

    with pytest.raises(IndexError):
        model.score_users(np.array([len(sequences)]))


def test_score_before_fit_raises() -> None:
    for model in (ImplicitALS(), ImplicitBPR(), RecBoleSASRec()):
        with pytest.raises(RuntimeError):
            model.score_users(np.array([0]))
