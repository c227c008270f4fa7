"""Nearest-neighbour indexes: exact against a plain sort, ANN against exact.

faiss is a core dependency: these tests import it and fail (not skip) without it.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from reelrank.index import AnnIndex, ExactIndex, load_index, make_index

N_ITEMS = 20_000
DIM = 64


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """Builds on a shared 2-core machine are faster without OpenMP barriers between threads."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def structured(n: int, dim: int, n_queries: int, seed: int = 0):
    """Vectors shaped like trained two-tower items: topic clusters in a low-rank subspace,
    log-normal norms; queries mix a few topics (not uniform random, which is unrealistically easy
    for IVF and hard for graphs)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((16, dim)) / 4.0
    centers = rng.standard_normal((256, 16)) @ basis
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    share = 1.0 / np.arange(1, 257) ** 0.8
    share /= share.sum()
    x = centers[rng.choice(256, size=n, p=share)] + 0.45 * rng.standard_normal((n, dim)) / 8.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x *= np.exp(0.35 * rng.standard_normal(n))[:, None]
    topics = rng.choice(256, size=(n_queries, 3), p=share)
    w = rng.dirichlet(np.full(3, 0.5), size=n_queries)
    q = np.einsum("qk,qkd->qd", w, centers[topics])
    q += 0.3 * rng.standard_normal((n_queries, dim)) / 8
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x.astype(np.float32), q.astype(np.float32)


def ids_for(n: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def plain_top(vectors: np.ndarray, ids: list[str], q: np.ndarray, k: int,
              skip: set[str] = frozenset()) -> list[tuple[str, float]]:
    """The obviously correct slow path: score everything, sort everything."""
    scored = sorted(((float(np.dot(v, q)), i) for v, i in zip(vectors, ids) if i not in skip),
                    key=lambda t: -t[0])
    return [(i, s) for s, i in scored[:k]]


def assert_same_ranking(got, want):
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def data():
    return structured(N_ITEMS, DIM, 100)


@pytest.fixture(scope="module")
def exact(data):
    index = ExactIndex()
    index.build(ids_for(N_ITEMS), data[0])
    return index


@pytest.fixture(scope="module")
def ann(data):
    index = AnnIndex()
    index.build(ids_for(N_ITEMS), data[0])
    return index


@pytest.fixture(scope="module")
def small():
    """For tests that change an index: small enough to build in a blink, still on the IVF path."""
    return structured(5000, 16, 10, seed=6)


def recall(found, truth) -> float:
    return float(np.mean([len({i for i, _ in f} & {i for i, _ in t}) / max(1, len(t))
                          for f, t in zip(found, truth)]))


# --- exact against a plain sort ---------------------------------------------------------------

def test_exact_matches_plain_sort_with_exclude_and_removed():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 16)).astype(np.float32)
    ids = ids_for(600)
    index = ExactIndex()
    index.build(ids, x)
    removed = set(ids[::7])
    assert index.remove(removed) == len(removed)
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    batch = index.search(queries, 25, exclude=ids[:40])
    for q, got in zip(queries, batch):
        want = plain_top(x, ids, q, 25, skip=removed | set(ids[:40]))
        assert_same_ranking(got, want)
        assert_same_ranking(index.search(q, 25, exclude=ids[:40])[0], want)


def test_exact_k_larger_than_index_returns_everything_sorted():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 8)).astype(np.float32)
    index = make_index("exact")
    index.build(ids_for(30), x)
    q = rng.standard_normal(8).astype(np.float32)
    assert_same_ranking(index.search(q, 100)[0], plain_top(x, ids_for(30), q, 100))
    got = index.search(q, 100, exclude={"v0", "v1", "missing"})[0]
    assert len(got) == 28 and {"v0", "v1"}.isdisjoint(i for i, _ in got)
    assert index.search(q, 0) == [[]]


def test_empty_and_invalid_inputs():
    for index in (ExactIndex(), AnnIndex()):
        assert len(index) == 0 and index.search(np.zeros(4, np.float32), 5) == [[]]
        index.build(["a", "b"], np.eye(2, 4, dtype=np.float32))
        with pytest.raises(ValueError):
            index.search(np.zeros(3, np.float32), 1)
        with pytest.raises(ValueError):
            index.add(["c"], np.zeros((1, 3), np.float32))
        with pytest.raises(ValueError):
            index.add(["c", "c"], np.zeros((2, 4), np.float32))
        with pytest.raises(ValueError):
            index.add(["c"], np.full((1, 4), np.nan, np.float32))
    with pytest.raises(ValueError):
        make_index("lsh")


# --- ANN against exact ------------------------------------------------------------------------

def test_ann_recall_at_100_against_exact(data, exact, ann):
    _, queries = data
    assert ann.nlist > 1  # the IVF path, not the small-index exact fallback
    truth = exact.search(queries, 100)
    found = ann.search(queries, 100)
    assert all(len(f) == 100 for f in found)
    assert recall(found, truth) >= 0.95
    # Scores are exact inner products (re-ranked), best first.
    vectors = {i: v for i, v in zip(ids_for(N_ITEMS), data[0])}
    for i, s in found[0]:
        assert s == pytest.approx(float(vectors[i] @ queries[0]), rel=1e-5, abs=1e-5)
    assert [s for _, s in found[0]] == sorted((s for _, s in found[0]), reverse=True)


def test_ann_exclude_still_returns_k(data, exact, ann):
    _, queries = data
    for q in queries[:10]:
        top = [i for i, _ in exact.search(q, 100)[0]]
        seen = set(top[:60]) | {f"v{i}" for i in range(0, N_ITEMS, 97)}
        got = ann.search(q, 100, exclude=seen)[0]
        assert len(got) == 100 and seen.isdisjoint(i for i, _ in got)
        assert recall([got], exact.search(q, 100, exclude=seen)) >= 0.85


def test_ann_exclude_almost_everything_falls_back_to_exact():
    x, queries = structured(3000, 16, 3, seed=3)
    ids = ids_for(3000)
    index = AnnIndex(exact_below=1000)
    index.build(ids, x)
    assert index.nlist > 1
    keep = set(ids[1000:1030])
    got = index.search(queries[0], 100, exclude=set(ids) - keep)[0]
    assert_same_ranking(got, plain_top(x[1000:1030], ids[1000:1030], queries[0], 100))


def test_ann_k_larger_than_index_and_small_index():
    x, queries = structured(2000, 16, 2, seed=4)
    ids = ids_for(2000)
    for index in (AnnIndex(exact_below=500), AnnIndex()):  # IVF path and exact-below path
        index.build(ids, x)
        got = index.search(queries[0], 5000)[0]
        assert len(got) == 2000
        assert_same_ranking(got[:50], plain_top(x, ids, queries[0], 50))


def test_add_then_search_finds_new_items(small):
    x, queries = small
    n = len(x)
    for index in (ExactIndex(), AnnIndex(exact_below=1000)):
        index.build(ids_for(n), x)
        assert len(index) == n
        # New uploads pointing the query's way with a large norm: they must come first.
        new = queries[:5] * 4.0
        index.add([f"new{i}" for i in range(5)], new)
        assert len(index) == n + 5 and "new3" in index
        for i in range(5):
            assert index.search(queries[i], 10)[0][0][0] == f"new{i}"
        # Re-adding an id replaces its vector.
        index.add(["new0"], -queries[:1] * 4.0)
        assert len(index) == n + 5
        assert "new0" not in {i for i, _ in index.search(queries[0], 100)[0]}
        np.testing.assert_allclose(index.vector("new0"), -queries[0] * 4.0)


def test_add_to_empty_ann_index_trains_once_large_enough():
    x, queries = structured(3000, 16, 1, seed=5)
    index = AnnIndex(exact_below=2000)
    index.add(ids_for(1500), x[:1500])
    assert index.nlist == 0  # still the exact path
    index.add(ids_for(1500, "w"), x[1500:])
    assert index.nlist > 1 and len(index) == 3000
    assert len(index.search(queries[0], 100)[0]) == 100


@pytest.mark.parametrize("kind", ["exact", "ann"])
def test_remove_hides_items_and_readd_restores(small, kind):
    x, queries = small
    n = len(x)
    index = make_index(kind, **({"exact_below": 1000} if kind == "ann" else {}))
    index.build(ids_for(n), x)
    top = [i for i, _ in index.search(queries[0], 20)[0]]
    assert index.remove(top[:10] + ["missing"]) == 10
    assert len(index) == n - 10 and top[0] not in index
    got = index.search(queries[0], 20)[0]
    assert len(got) == 20 and set(top[:10]).isdisjoint(i for i, _ in got)
    with pytest.raises(KeyError):
        index.vector(top[0])
    index.add([top[0]], x[int(top[0][1:])][None, :])
    assert index.search(queries[0], 1)[0][0][0] == top[0]


@pytest.mark.parametrize("kind", ["exact", "ann"])
def test_save_load_round_trip(tmp_path, small, kind):
    x, queries = small
    index = make_index(kind, **({"exact_below": 1000} if kind == "ann" else {}))
    index.build(ids_for(len(x)), x)
    index.remove(["v1", "v2"])
    path = tmp_path / "items.index"
    index.save(path)
    loaded = load_index(path)
    assert type(loaded) is type(index) and len(loaded) == len(index) and "v1" not in loaded
    assert loaded.search(queries[:5], 50) == index.search(queries[:5], 50)
    loaded.add(["fresh"], queries[:1] * 4.0)
    assert loaded.search(queries[0], 1)[0][0][0] == "fresh"
    assert "fresh" not in index


def test_concurrent_searches_during_updates(small):
    x, queries = small
    index = AnnIndex(exact_below=1000)
    index.build(ids_for(len(x)), x)
    errors: list[BaseException] = []

    def reader():
        try:
            for q in np.tile(queries, (3, 1)):
                assert len(index.search(q, 50)[0]) == 50
        except BaseException as e:  # surfaced below: a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(10):
        index.add([f"u{i}"], x[i][None, :])
        index.remove([f"u{i}"])
    for t in threads:
        t.join()
    assert not errors
