"""The online learner and trainer: steps, new ids, publishing, hot swaps, erasure, failures."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.eval.simulator import Simulator, build_world, generate_history
from reelrank.features import RowStream
from reelrank.importers import import_into
from reelrank.models.bundle import ModelBundle
from reelrank.models.embeddings import DynamicEmbedding
from reelrank.pipeline.context import FeedRequest
from reelrank.registry import ModelRegistry
from reelrank.service.app import create_app
from reelrank.store import open_store
from reelrank.store import new_live_state
from reelrank.train.batch import train_from_store
from reelrank.train.learner import OnlineConfig, OnlineLearner
from reelrank.service.runtime import Runtime
from reelrank.train.trainer import OnlineTrainer, TrainerConfig
from reelrank.types import Event, Item
from tests.train.test_training import TINY

FAST = TrainerConfig(poll_s=0.01, publish_every_s=0.02, retrieval_every_s=0.2, settle_ms=0,
                     backoff_s=(0.05,), online=OnlineConfig(batch_size=16, max_wait_ms=0))


@pytest.fixture(scope="module")
def world():
    return build_world(n_users=40, n_items=150, n_creators=15, seed=3)


@pytest.fixture(scope="module")
def template(world, tmp_path_factory):
    """A store with a background history and a base model trained on it, built once and copied
    into each test's own directory."""
    root = tmp_path_factory.mktemp("online-template")
    store = open_store(root / "data")
    import_into(store, world.items, generate_history(world, 2, 12, seed=3), progress=False)
    train_from_store(store, ModelRegistry(root / "models"), TINY, progress=False)
    store.close()
    return root


@pytest.fixture
def engine(template, tmp_path):
    shutil.copytree(template, tmp_path / "copy")
    store = open_store(tmp_path / "copy" / "data")
    e = Engine(store, registry=ModelRegistry(tmp_path / "copy" / "models"),
               index_kind="exact").load()
    yield e
    store.close()


@pytest.fixture
def runtime(engine):
    r = Runtime(engine)
    yield r
    r.stop()


def swipe(engine, sim, viewer, state, ts, n=1):
    """One page of the real feed, each item swiped by the simulated viewer; returns the time
    after the last swipe."""
    for item in engine.feed(FeedRequest(viewer.user_id, n=n)).items:
        events = sim.respond(viewer, item.item_id, ts, state)
        engine.ingest_events(events)
        ts = events[-1].ts + 300
    return ts


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_step_changes_the_ranker_and_admits_a_new_video(engine, world):
    bundle = engine.models.current.bundle
    learner = OnlineLearner(ModelBundle.from_state(bundle.state()), engine.catalog,
                            OnlineConfig(batch_size=64, ranker_lr=1e-4))
    new = Item("fresh-upload", "new-creator", 12_000, world.start_ts, caption="a new video",
               hashtags=("brandnew",))
    engine.ingest_items([new])
    assert "fresh-upload" not in learner.bundle.ranker.items.item
    rows = RowStream(new_live_state(engine.catalog), window_ms=3_600_000, settle_ms=0)
    sim, viewer = Simulator(world), world.users[1]
    state, ts = sim.new_session(viewer, "t"), world.start_ts
    u = viewer.user_id
    out = rows.add(Event("n1", u, new.item_id, ts, "impression"))
    out += rows.add(Event("n2", u, new.item_id, ts + 12_000, "play", watch_ms=12_000))
    out += rows.add(Event("n3", u, new.item_id, ts + 12_000, "like"))
    for item in [it.item_id for it in world.items[:30]]:
        ts += 20_000
        for e in sim.respond(viewer, item, ts, state):
            out += rows.add(e)
    out += rows.flush(ts + 1)
    learner.add(out, ts)
    before = {k: v.clone() for k, v in learner.bundle.ranker.state_dict().items()
              if torch.is_tensor(v) and v.is_floating_point()}
    report = learner.step()
    assert report.rows == len(out) < 64 and report.ranker_loss == pytest.approx(report.ranker_loss)
    # A partial batch moves only the embedding rows; the shared layers wait for full batches.
    tables, dense = learner._ranker_opt.param_groups
    assert tables["lr"] == pytest.approx(1e-4) and dense["lr"] == 0.0
    after = learner.bundle.ranker.state_dict()
    changed = {k for k in before if k in after and before[k].shape == after[k].shape
               and not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("items.") or k.startswith("context.") for k in changed)
    # The new video, its creator and its tag have their own rows now, learned from its views.
    assert "fresh-upload" in learner.bundle.ranker.items.item
    assert "new-creator" in learner.bundle.ranker.items.creator
    # Running statistics stay those of the batch run.
    assert torch.equal(learner.bundle.ranker.dense_norm.running_mean,
                       bundle.ranker.dense_norm.running_mean)
    assert learner.forget_user(viewer.user_id) == 0 and not learner.queue


def test_the_trainer_learns_from_new_events_and_serving_swaps_them_in(engine, world, runtime):
    trainer = runtime.start_trainer(FAST)
    wait_for(lambda: trainer.state == "running")
    base = engine.models.version
    assert trainer.base_version == base
    sim, viewer = Simulator(world), world.users[2]
    state, ts = sim.new_session(viewer, "live"), int(time.time() * 1000) - 600_000
    for _ in range(12):
        ts = swipe(engine, sim, viewer, state, ts)
    # The view that ended last is in the weights serving uses.
    wait_for(lambda: engine.models.current.meta.get("through_ts", 0) >= ts - 300)
    # Every swipe becomes a trained row (the counter may trail the watermark by a step).
    wait_for(lambda: trainer.status()["rows_trained"] >= 12)
    # Events stamped with the wall clock: a lag is measured for each once its version serves.
    wait_for(lambda: trainer.status()["lag_ms"]["n"] >= 12)
    status = trainer.status()
    assert status["failures"] == 0
    assert engine.models.version != base and engine.models.version.startswith(base)
    # The online versions kept the base's retrieval index (only the ranker changed so far) or
    # rebuilt it for new retrieval weights; either way retrieval serves.
    assert engine.feed(FeedRequest(viewer.user_id, n=5)).trace.source_counts.get("retrieval", 0)
    # Whatever was reused across versions (item encodings, vectors) is what a fresh load of the
    # serving weights computes.
    wait_for(lambda: engine.models.current.meta["retrieval_version"] != base)
    cur = engine.models.current
    items = [engine.catalog.get(i) for i in cur.item_ids]
    with torch.no_grad():
        fresh = cur.bundle.retrieval.item_vectors(cur.bundle.retrieval.items.encode_items(items))
        ranker_fresh = cur.bundle.ranker.items.encode_items(items)
    torch.testing.assert_close(cur.item_vectors, fresh)
    assert torch.equal(cur.ranker_items.item, ranker_fresh.item)
    assert torch.equal(cur.ranker_items.tags, ranker_fresh.tags)


def test_swaps_while_requests_run_fail_no_request(engine, world, runtime):
    trainer = runtime.start_trainer(FAST)
    wait_for(lambda: trainer.state == "running")
    client = TestClient(create_app(engine, None, runtime=runtime))
    errors, versions, stop = [], set(), threading.Event()

    def serve(k):
        while not stop.is_set():
            r = client.get("/v1/feed", params={"user_id": f"u{k}", "n": 5})
            if r.status_code != 200:
                errors.append(r.status_code)
            else:
                versions.add(r.json()["model_version"])
            k += 7

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        sim = Simulator(world)
        ts = int(time.time() * 1000) - 60_000
        for viewer in world.users[5:11]:
            state = sim.new_session(viewer, "swap")
            for _ in range(3):
                ts = swipe(engine, sim, viewer, state, ts)
        wait_for(lambda: trainer.versions_handed >= 3 and len(versions) >= 3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert trainer.failures == 0
    status = client.get("/v1/admin/trainer").json()
    assert status["trainer"]["state"] == "running" and status["trainer"]["steps"] > 0
    runtime.stop()  # no version may arrive between the answer and the comparison
    status = client.get("/v1/admin/trainer").json()
    assert status["serving"]["version"] == engine.models.version
    assert status["serving"]["through_ts"] == engine.models.current.meta["through_ts"]


def test_erasure_drops_the_viewers_pending_examples(engine, world, runtime):
    cfg = TrainerConfig(poll_s=0.01, publish_every_s=0.02, settle_ms=0,
                        online=OnlineConfig(batch_size=10_000, max_wait_ms=10**9))
    trainer = runtime.start_trainer(cfg)  # a step waits for 10,000 rows: rows stay pending
    wait_for(lambda: trainer.state == "running")
    sim, ts = Simulator(world), int(time.time() * 1000)
    for viewer in world.users[20:22]:
        state = sim.new_session(viewer, "erase")
        for _ in range(5):
            ts = swipe(engine, sim, viewer, state, ts)
    gone, kept = world.users[20].user_id, world.users[21].user_id
    wait_for(lambda: {gone, kept} <= {r.example.user_id for _, r in trainer.learner.queue})
    engine.reset_interests(gone)  # the trainer then holds their reset point...
    wait_for(lambda: gone in trainer._reset_floors)
    engine.erase_user(gone, rebuild=False)
    wait_for(lambda: not trainer._erase)
    assert gone not in trainer._reset_floors  # ... and lets it go with the rest of them
    assert not trainer.rows.joiner._seen_ids  # no event id is kept (the log has each once)
    waiting = {r.example.user_id for _, r in trainer.learner.queue}
    assert gone not in waiting and kept in waiting
    assert trainer.rows.live.user(gone) is None
    assert all(k[0] != gone for k in trainer.rows.joiner._open)
    # "Refresh my feed" reaches the trainer's own live state too.
    assert trainer.rows.live.user(kept).tokens
    engine.reset_interests(kept)
    wait_for(lambda: not trainer.rows.live.user(kept).tokens)
    assert not trainer.rows.live.user(kept).hashtag_affinity


def test_a_trainer_started_after_a_reset_does_not_rebuild_the_old_interests(engine, world, runtime):
    trainer = runtime.start_trainer(FAST)
    wait_for(lambda: trainer.state == "running")
    sim, viewer = Simulator(world), world.users[23]
    state, ts = sim.new_session(viewer, "before"), int(time.time() * 1000) - 600_000
    for _ in range(5):
        ts = swipe(engine, sim, viewer, state, ts)
    wait_for(lambda: len(trainer.rows.live.user(viewer.user_id).tokens) >= 5)
    engine.reset_interests(viewer.user_id)
    state = sim.new_session(viewer, "after")
    ts = swipe(engine, sim, viewer, state, ts)
    after = engine.live.user(viewer.user_id).tokens[-1].item_id
    runtime.stop()
    # A new trainer replays the whole log: only the swipe after the reset builds interests.
    runtime.forget_trainer()
    restarted = runtime.start_trainer(FAST)
    wait_for(lambda: restarted.state == "running" and restarted.rows.live.user(viewer.user_id))
    tokens = list(restarted.rows.live.user(viewer.user_id).tokens)
    assert [t.item_id for t in tokens] == [after]
    assert [t.item_id for t in tokens] == [t.item_id for t in engine.live.user(viewer.user_id)
                                           .tokens]


def test_new_retrieval_weights_go_out_on_a_quiet_stream(engine):
    """Retrieval weights learned in the last steps before the stream falls quiet are handed to
    serving once ``retrieval_every_s`` has passed, with no further ranker step to carry them."""
    clock = [1_000.0]
    installed: list[tuple[str, dict]] = []
    cfg = TrainerConfig(publish_every_s=0.0, retrieval_every_s=60.0, persist_every_s=3_600.0,
                        settle_ms=0,
                        online=OnlineConfig(batch_size=4, max_wait_ms=0))
    trainer = OnlineTrainer(engine.store, engine.registry, cfg, catalog=engine.catalog,
                            install=lambda v, b, meta, published=None: installed.append((v, meta)),
                            clock=lambda: clock[0])
    assert trainer._bootstrap()
    base = trainer.base_version
    items = [engine.catalog.get(i) for i in list(engine.catalog.ids())[:6]]
    ts = int(time.time() * 1000) - 600_000
    events = []
    for k, item in enumerate(items):  # six long views: positives with a history before them
        at = ts + k * 60_000
        events += [Event(f"q{k}i", "quiet", item.item_id, at, "impression"),
                   Event(f"q{k}p", "quiet", item.item_id, at + item.duration_ms, "play",
                         item.duration_ms)]
    engine.ingest_events(events)
    try:
        while trainer.cycle():
            pass
        clock[0] += 1.0  # the last view settles as event time moves on
        while trainer.cycle():
            pass
        wait_for(lambda: trainer._handoff is None and installed)
        assert trainer.learner.retrieval_steps > 0
        assert installed[-1][1]["retrieval_version"] == base  # not due yet
        ranker_version = installed[-1][0]
        steps = trainer.learner.steps
        clock[0] += 61.0
        trainer.cycle()  # nothing new to read or learn
        wait_for(lambda: installed[-1][1]["retrieval_version"] != base)
        version, meta = installed[-1]
        assert trainer.learner.steps == steps  # no ranker step carried it
        assert version == f"{ranker_version}r{trainer.learner.retrieval_steps}"
        assert meta["retrieval_version"] == f"{base}+r{trainer.learner.retrieval_steps}"
        n = len(installed)
        trainer.cycle()  # published once, not again
        time.sleep(0.05)
        assert len(installed) == n
    finally:
        trainer.stop()


def test_a_crashing_trainer_never_stops_the_feed_and_starts_over(engine, world, monkeypatch,
                                                                  runtime):
    trainer = runtime.start_trainer(FAST)
    wait_for(lambda: trainer.state == "running")
    client = TestClient(create_app(engine, None, runtime=runtime))
    calls = {"n": 0}
    real_step = type(trainer.learner).step

    def broken(self):
        calls["n"] += 1
        raise RuntimeError("simulated trainer failure")

    monkeypatch.setattr(type(trainer.learner), "step", broken)
    sim, viewer = Simulator(world), world.users[30]
    state, ts = sim.new_session(viewer, "crash"), int(time.time() * 1000)
    for _ in range(5):
        ts = swipe(engine, sim, viewer, state, ts)
        assert client.get("/v1/feed", params={"user_id": viewer.user_id}).status_code == 200
    wait_for(lambda: trainer.failures >= 1)
    assert "simulated" in trainer.status()["last_error"]
    for k in range(5):
        assert client.get("/v1/feed", params={"user_id": f"u{k}"}).status_code == 200
    # Fixed (a new release, a transient fault gone): it starts over from the registry.
    monkeypatch.setattr("reelrank.train.learner.OnlineLearner.step", real_step)
    for _ in range(3):
        ts = swipe(engine, sim, viewer, state, ts)
    wait_for(lambda: trainer.state == "running" and trainer.status()["steps"] > 0)
    assert trainer.alive


def test_serving_keeps_the_newest_weights_and_follows_a_new_batch_version(engine, world, runtime):
    cfg = TrainerConfig(poll_s=0.01, publish_every_s=0.02, persist_every_s=0.3, settle_ms=0,
                        online=OnlineConfig(batch_size=16, max_wait_ms=0))
    trainer = runtime.start_trainer(cfg)
    runtime.watch_models(every_s=0.01)
    wait_for(lambda: trainer.state == "running")
    sim, viewer = Simulator(world), world.users[3]
    state, ts = sim.new_session(viewer, "keep"), int(time.time() * 1000) - 600_000
    for _ in range(8):
        ts = swipe(engine, sim, viewer, state, ts)
        time.sleep(0.1)
    wait_for(lambda: trainer.status()["rows_waiting"] == 0 and trainer.versions_handed > 2)
    time.sleep(0.5)  # the watcher polls the registry meanwhile
    # In-memory versions are newer than the ones written to the registry: never swapped back.
    assert engine.models.version == trainer.serving_version
    # A batch run publishes: serving takes it, and the trainer starts over from it.
    batch = train_from_store(engine.store, engine.registry, TINY, progress=False).version
    wait_for(lambda: trainer.base_version == batch and trainer.state == "running")
    ts = swipe(engine, sim, viewer, state, ts)
    wait_for(lambda: engine.models.current.meta.get("base_version") == batch
             and engine.models.version == trainer.serving_version)


def test_registry_versions_link_unchanged_retrieval_and_load_as_published(engine, world):
    """A trainer in a process of its own hands versions over through the registry: versions
    that changed only the ranker link the base's retrieval file, and serving's cheap swap
    (retrieval kept, vocabularies shared, tensors assigned) serves what a fresh load would."""
    registry = engine.registry
    base = engine.models.version
    cfg = TrainerConfig(poll_s=0.01, publish_every_s=0.02, retrieval_every_s=3600, settle_ms=0,
                        online=OnlineConfig(batch_size=16, max_wait_ms=0))
    trainer = OnlineTrainer(engine.store, registry, cfg).start()
    try:
        wait_for(lambda: trainer.state == "running")
        sim, viewer = Simulator(world), world.users[5]
        state, ts = sim.new_session(viewer, "linked"), int(time.time() * 1000) - 600_000
        for _ in range(8):
            ts = swipe(engine, sim, viewer, state, ts)
            time.sleep(0.05)
        wait_for(lambda: len(trainer._published) >= 2 and trainer.status()["rows_waiting"] == 0)
    finally:
        trainer.stop()
    retrieval_file = registry.root / base / "retrieval.safetensors"
    for version in trainer._published:
        assert (registry.root / version / "retrieval.safetensors").stat().st_ino == \
            retrieval_file.stat().st_ino
    kept = engine.models.current.bundle.retrieval
    assert engine.models.refresh() and engine.models.version == registry.latest()
    served = engine.models.current.bundle
    assert served.retrieval is kept
    fresh = ModelBundle.from_state(registry.load(registry.latest()).state)
    ours, theirs = served.ranker.state_dict(), fresh.ranker.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if torch.is_tensor(value):
            assert torch.equal(ours[key], value), key
    for name, table in fresh.ranker.named_modules():
        if isinstance(table, DynamicEmbedding):
            assert served.ranker.get_submodule(name).id_to_row() == table.id_to_row(), name
    viewer_id = world.users[5].user_id
    ranked = engine.rank(viewer_id, [it.item_id for it in world.items[:20]])
    engine.models.current = dataclasses.replace(engine.models.current, bundle=fresh)
    again = engine.rank(viewer_id, [it.item_id for it in world.items[:20]])
    # The same scores up to float32 rounding (the served set reuses cached tower outputs):
    # compared with a tolerance, not rounded, so a score on a rounding boundary cannot flake.
    first = {s.item_id: s.score for s in ranked.items}
    second = {s.item_id: s.score for s in again.items}
    assert first.keys() == second.keys()
    assert all(abs(first[i] - second[i]) <= 1e-5 for i in first), (first, second)


def test_a_swapped_out_version_is_freed_without_the_cyclic_collector(engine):
    """The server freezes long-lived objects out of the collector's sight (service.heap); that
    is only safe while old model versions hold no reference cycles."""
    import gc
    import weakref

    registry = engine.registry
    old = engine.models.current
    gone = [weakref.ref(old.bundle.ranker), weakref.ref(old)]
    published = registry.publish(registry.load(old.version).state, dict(old.meta))
    del old
    gc.disable()
    try:
        assert engine.models.refresh() and engine.models.version == published
        engine.rank("someone",
                    list(engine.catalog.ids())[:10])
        assert all(ref() is None for ref in gone)
    finally:
        gc.enable()


def test_the_trainer_holds_its_memory_budgets_and_reports_them(engine, world, runtime):
    cfg = dataclasses.replace(FAST, max_viewers=4, late_memory=30, dedupe_memory=50)
    trainer = runtime.start_trainer(cfg)
    wait_for(lambda: trainer.state == "running")
    sim, ts = Simulator(world), int(time.time() * 1000)
    for viewer in world.users[:8]:  # more viewers than the budget, each back once
        state = sim.new_session(viewer, "budget")
        ts = swipe(engine, sim, viewer, state, ts, n=3)
    steps = trainer.learner.steps
    for viewer in world.users[:8]:
        state = sim.new_session(viewer, "again")
        ts = swipe(engine, sim, viewer, state, ts, n=2)
    wait_for(lambda: trainer.learner.steps > steps and trainer.cursor == engine.store.last_seq())
    memory = trainer.status()["memory"]
    assert len(trainer.rows.live.user_ids()) <= 4 and memory["viewers"] <= 4
    assert memory["viewers_evicted"] > 30 and memory["viewers_rebuilt"] >= 8
    assert memory["late_examples"] <= 30 and memory["late_inputs"] <= 30
    assert memory["late_dropped"] > 0 and memory["event_ids"] <= 51
    # A returning viewer's state in the trainer is what serving holds (rebuilt from the log).
    back = trainer.rows.live.user_ids()[-1]
    assert ([t.item_id for t in trainer.rows.live.user(back).tokens]
            == [t.item_id for t in engine.live.user(back).tokens])
    with TestClient(create_app(engine, None, runtime=runtime)) as client:
        budgets = client.get("/v1/stats").json()["memory"]["trainer"]["budgets"]
    assert budgets["max_viewers"] == 4 and budgets["max_late_examples"] == 30
    assert budgets["max_event_ids"] == 50 and budgets["viewers"] <= 4


def _settled_rows(engine, world, n_items=30):
    """Rows of one viewer who watched ``n_items`` videos to the end, one after another."""
    rows = RowStream(new_live_state(engine.catalog), window_ms=3_600_000, settle_ms=0,
                     history_len=50)
    ts, out, u = world.start_ts, [], world.users[2].user_id
    for k, item in enumerate(world.items[:n_items]):
        ts += 60_000
        out += rows.add(Event(f"i{k}", u, item.item_id, ts, "impression"))
        out += rows.add(Event(f"p{k}", u, item.item_id, ts + item.duration_ms, "play",
                              watch_ms=item.duration_ms))
    return out + rows.flush(ts + 3_600_000), ts + 3_600_000


def test_online_retrieval_can_leave_the_shared_content_tables_alone(engine, world):
    """With ``retrieval_shared_lr_scale`` 0, or with every positive from a viewer shorter than
    ``retrieval_shared_min_history``, a step moves only the videos' own rows: a tag or a
    creator is shared by many videos."""
    rows, ts = _settled_rows(engine, world)
    moved = {}
    for name, over in (("all", {}), ("scale 0", {"retrieval_shared_lr_scale": 0.0}),
                       ("short", {"retrieval_shared_min_history": 1000}),
                       ("long", {"retrieval_shared_min_history": 2})):
        bundle = ModelBundle.from_state(engine.models.current.bundle.state())
        learner = OnlineLearner(bundle, engine.catalog,
                                OnlineConfig(batch_size=512, retrieval_lr=1e-2,
                                             train_ranker=False, **over))
        before = {k: v.clone() for k, v in bundle.retrieval.state_dict().items()
                  if torch.is_tensor(v) and v.is_floating_point()}
        learner.add(rows, ts)
        assert learner.step().retrieval_rows > 0
        after = bundle.retrieval.state_dict()
        moved[name] = {k.split(".")[1] for k in before if k.startswith("items.")
                         and before[k].shape == after[k].shape
                         and not torch.equal(before[k], after[k])}
    assert {"item", "tag"} <= moved["all"] and {"item", "tag"} <= moved["long"]
    assert moved["scale 0"] == moved["short"] == {"item"}


def test_online_retrieval_skips_viewers_with_short_histories(engine, world):
    rows, ts = _settled_rows(engine, world, n_items=12)
    trained = {}
    for least in (0, 6, 50):
        bundle = ModelBundle.from_state(engine.models.current.bundle.state())
        learner = OnlineLearner(bundle, engine.catalog,
                                OnlineConfig(batch_size=512, retrieval_min_history=least,
                                             train_ranker=False))
        learner.add(rows, ts)
        trained[least] = learner.step().retrieval_rows
    assert trained[0] > trained[6] > trained[50] == 0


def test_serving_takes_the_average_of_the_learners_weights_when_asked(engine, world):
    """With ``average``, the versions handed to serving hold the moving average of the
    learner's weights: between the weights it started from and its latest ones."""
    rows, ts = _settled_rows(engine, world)
    bundle = ModelBundle.from_state(engine.models.current.bundle.state())
    start = {k: v.clone() for k, v in bundle.retrieval.state_dict().items()
             if torch.is_tensor(v) and v.is_floating_point()}
    learner = OnlineLearner(bundle, engine.catalog,
                            OnlineConfig(batch_size=512, retrieval_lr=1e-2, average=0.9))
    for _ in range(3):
        learner.add(rows, ts)
        assert learner.step().retrieval_rows > 0
    latest = bundle.retrieval.state_dict()
    served = learner.retrieval_snapshot().state_dict()
    moved = [k for k in start if start[k].shape == latest[k].shape
             and not torch.equal(start[k], latest[k])]
    assert moved
    for k in moved:
        assert not torch.equal(served[k], latest[k])  # not the latest weights ...
        gap = (latest[k] - start[k]).abs().sum()
        assert (served[k] - start[k]).abs().sum() < gap  # ... nearer where it started
        assert (latest[k] - served[k]).abs().sum() < gap
    ranker = learner.serving_bundle().ranker.state_dict()
    assert any(not torch.equal(ranker[k], v) for k, v in bundle.ranker.state_dict().items()
               if torch.is_tensor(v) and v.is_floating_point())
