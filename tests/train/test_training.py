"""Training from the store, publishing, and switching serving to a new model while it serves."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world, generate_history
from reelrank.importers import import_into
from reelrank.pipeline.context import FeedRequest
from reelrank.registry import ModelRegistry
from reelrank.train.batch import TrainConfig, train_from_store
from reelrank.train.ranker import RankerConfig
from reelrank.train.retrieval import RetrievalConfig

TINY = TrainConfig(
    retrieval=RetrievalConfig(dim=16, max_len=10, layers=1, heads=2, epochs=1, negatives=64,
                              batch_size=64),
    ranker=RankerConfig(dim=8, experts=2, expert_dim=16, history_len=8, epochs=1,
                        batch_size=256),
    holdout=0.2,
)


@pytest.fixture
def world_store(store):
    world = build_world(n_users=40, n_items=150, n_creators=15, seed=3)
    import_into(store, world.items, generate_history(world, 2, 12, seed=3), progress=False)
    return store


def test_training_is_deterministic_and_publishes(world_store, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    a = train_from_store(world_store, registry, TINY, progress=False)
    b = train_from_store(world_store, None, TINY, progress=False)
    assert a.version == registry.latest()
    assert a.metrics["ranker_holdout"]["long_view"] == b.metrics["ranker_holdout"]["long_view"]
    assert a.metrics["rows_holdout"] > 0 and a.metrics["rows_train"] > a.metrics["rows_holdout"]
    # Epochs run on the held-out fit, and kept for the refit on every row (one epoch here).
    assert a.metrics["ranker_epochs_run"] == a.metrics["ranker_epochs"] == 1
    # The held-out GAUC of every epoch run, the kept one's as ``ranker_holdout`` says.
    (first,) = a.metrics["ranker_holdout_by_epoch"]
    assert first["epoch"] == 1
    assert first["long_view"] == a.metrics["ranker_holdout"]["long_view"]["gauc"]
    meta = registry.meta(a.version)
    assert meta["metrics"]["events"] == world_store.count_events()


def test_serving_uses_the_published_model(world_store, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    engine = Engine(world_store, registry=registry, index_kind="exact").load()
    assert engine.models.version is None
    before = engine.feed(FeedRequest("u1", n=5))
    assert before.model_version == "heuristic-v0"
    version = train_from_store(world_store, registry, TINY, progress=False).version
    assert engine.models.refresh()
    res = engine.feed(FeedRequest("u1", n=5))
    assert res.model_version == version and len(res.items) == 5
    assert res.trace.source_counts.get("retrieval", 0) > 0
    ranked = engine.rank("u1", [i.item_id for i in res.items])
    assert set(ranked.items[0].predictions) >= {"long_view", "like", "watch_time", "negative"}


def test_cached_item_vectors_score_like_the_item_tower(world_store, tmp_path):
    """Serving keeps the ranker's item-tower output per catalog row; its predictions must equal
    the ones with the tower run on the items (the path a new upload takes)."""
    from reelrank.types import Candidate, Item

    registry = ModelRegistry(tmp_path / "models")
    train_from_store(world_store, registry, TINY, progress=False)
    engine = Engine(world_store, registry=registry, index_kind="exact").load()
    scorer, m = engine.pipeline.scorer, engine.models.current
    ids = m.item_ids[:60]
    ctx = engine.context(FeedRequest("u3", n=10))

    def predictions(batch):
        return {s.item_id: s.predictions for s in scorer.score(ctx, [Candidate(i, "t")
                                                                      for i in batch])}

    first = predictions(ids[:30])  # cold rows, computed and kept (and the history's)
    history = {m.item_index[t.item_id] for t in list(ctx.user.tokens)[-scorer.history_len:]
               if t.item_id in m.item_index}
    assert set(m.ranker_ready.nonzero().flatten().tolist()) == set(range(30)) | history
    mixed = predictions(ids)  # half from the cache, half computed
    assert bool(m.ranker_ready[:60].all())
    engine.catalog.upsert([Item("fresh", "c1", 9_000, 0, caption="a new upload")])
    uncached = predictions(ids + ["fresh"])  # an unknown row: every item through the tower
    assert set(uncached) == set(ids) | {"fresh"}
    for i in ids:
        for task, p in uncached[i].items():
            assert mixed[i][task] == pytest.approx(p, abs=1e-6)
            if i in first:
                assert first[i][task] == pytest.approx(p, abs=1e-6)


def test_hot_swap_while_serving_fails_no_request(world_store, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    train_from_store(world_store, registry, TINY, progress=False)
    engine = Engine(world_store, registry=registry, index_kind="exact").load()
    first = engine.models.version
    errors: list[Exception] = []
    versions: set[str] = set()
    stop = threading.Event()

    def serve():
        k = 0
        while not stop.is_set():
            try:
                versions.add(engine.feed(FeedRequest(f"u{k % 40}", n=5)).model_version)
            except Exception as exc:  # pragma: no cover - what the test guards against
                errors.append(exc)
            k += 1

    threads = [threading.Thread(target=serve) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        second = train_from_store(world_store, registry, TINY, progress=False).version
        assert engine.models.refresh()
        deadline = time.monotonic() + 10
        while second not in versions and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert engine.models.version == second != first
    assert second in versions


def test_admin_train_endpoint_publishes_and_serving_switches(world_store, tmp_path):
    from fastapi.testclient import TestClient

    from reelrank.service.app import create_app
    from reelrank.service.runtime import Runtime

    engine = Engine(world_store, registry=ModelRegistry(tmp_path / "models"),
                    index_kind="exact").load()
    client = TestClient(create_app(engine, None, runtime=Runtime(engine, TINY)))
    assert client.get("/v1/feed", params={"user_id": "u1"}).json()["model_version"] == \
        "heuristic-v0"
    r = client.post("/v1/admin/train")
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/admin/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert job["status"] == "done", job
    assert job["progress"] == 1.0
    feed = client.get("/v1/feed", params={"user_id": "u1"}).json()
    assert feed["model_version"] == job["model_version"]
    assert client.get("/v1/admin/jobs/nope").status_code == 404


def test_a_failing_training_job_never_stops_the_feed(store, tmp_path):
    from fastapi.testclient import TestClient

    from reelrank.service.app import create_app

    engine = Engine(store, registry=ModelRegistry(tmp_path / "models")).load()  # empty store
    client = TestClient(create_app(engine, None))
    job_id = client.post("/v1/admin/train").json()["job_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/admin/jobs/{job_id}").json()["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = client.get(f"/v1/admin/jobs/{job_id}").json()
    assert job["status"] == "failed" and "empty" in job["error"]
    assert client.get("/v1/feed", params={"user_id": "x"}).status_code == 200


def test_a_model_trained_before_a_dense_feature_was_added_still_serves(world_store, tmp_path):
    """New dense features are appended; a published model that knows fewer reads its columns."""
    from reelrank.features import DENSE_FEATURES
    from reelrank.models.bundle import ModelBundle
    from reelrank.models.ranker import Ranker

    registry = ModelRegistry(tmp_path / "models")
    train_from_store(world_store, registry, TINY, progress=False)
    engine = Engine(world_store, registry=registry, index_kind="exact").load()
    current = engine.models.current.bundle
    older = Ranker(len(DENSE_FEATURES) - 1, dim=TINY.ranker.dim, experts=TINY.ranker.experts,
                   expert_dim=TINY.ranker.expert_dim).eval()
    engine.models.install("older", ModelBundle(current.retrieval, current.retrieval_kwargs, older,
                                               {}), {})
    res = engine.feed(FeedRequest("u1", n=5))
    assert res.model_version == "older" and len(res.items) == 5
    ranked = engine.rank("u1", [i.item_id for i in res.items])
    assert all(0.0 <= p <= 1.0 for s in ranked.items for p in s.predictions.values())


def test_a_ranker_only_version_reuses_the_catalog_work_until_the_catalog_changes(
        world_store, tmp_path):
    import copy

    from reelrank.models.bundle import ModelBundle
    from reelrank.types import Item

    registry = ModelRegistry(tmp_path / "models")
    train_from_store(world_store, registry, TINY, progress=False)
    engine = Engine(world_store, registry=registry, index_kind="exact").load()
    base = engine.models.current
    tags = {"retrieval_version": "r1", "ranker_items_version": "k1"}

    def install(version):
        b = base.bundle
        engine.models.install(version, ModelBundle(b.retrieval, b.retrieval_kwargs,
                                                   copy.deepcopy(b.ranker), b.ranker_kwargs),
                              dict(base.meta, **tags))
        return engine.models.current

    first = install("a")
    second = install("b")  # only the ranker changed, nothing uploaded: no pass over the catalog
    assert second.item_ids is first.item_ids and second.index is first.index
    assert second.ranker_items is first.ranker_items
    assert not bool(second.ranker_ready.any())  # its own tower cache: its own weights
    engine.ingest_items([Item("late", "c1", 8_000, 0, caption="uploaded after")])
    third = install("c")
    assert third.item_ids is not first.item_ids and "late" in third.item_index
    ranked = engine.rank("u1", ["late", first.item_ids[0]])
    assert {s.item_id for s in ranked.items} == {"late", first.item_ids[0]}


def test_a_retrieval_temperature_is_published_with_the_version(world_store, tmp_path):
    from dataclasses import replace

    from reelrank.models.bundle import ModelBundle

    registry = ModelRegistry(tmp_path / "models")
    cfg = replace(TINY, retrieval=replace(TINY.retrieval, temperature=0.1), topics=None)
    version = train_from_store(world_store, registry, cfg, progress=False).version
    bundle = ModelBundle.from_state(registry.load(version).state)
    assert bundle.retrieval.temperature == 0.1
    engine = Engine(world_store, registry=registry, index_kind="exact").load()
    vectors = engine.models.current.item_vectors
    assert torch.allclose(vectors.norm(dim=1), torch.full((len(vectors),), 10 ** 0.5), atol=1e-3)
    # A version trained without one says nothing of it: older builds read it as before.
    plain = train_from_store(world_store, registry, replace(TINY, topics=None), progress=False)
    assert "temperature" not in registry.load(plain.version).state["retrieval_kwargs"]
