"""The model registry in PostgreSQL: two registry objects on one database stand for two hosts
that share no directory. What one publishes the other lists, reads and loads, tensor for
tensor; a version is visible whole or not at all."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import torch

from reelrank.errors import ModelError
from reelrank.registry import ModelRegistry, open_registry, topics_of
from tests.pg import throwaway_database
from tests.test_registry import _same, _state


@pytest.fixture
def url():
    with throwaway_database() as u:
        yield u


@pytest.fixture
def hosts(url, tmp_path):
    """Two registries on the same database, each with a local root of its own."""
    made = [open_registry(url, tmp_path / name) for name in ("a", "b")]
    yield made
    for r in made:
        r.close()


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_version_published_on_one_host_loads_on_another(hosts, tmp_path):
    a, b = hosts
    assert b.latest() is None and b.versions() == []
    with pytest.raises(ModelError):
        b.load()
    state = _state(0)
    first = a.publish(state, {"metrics": {"gauc": 0.61}, "through_seq": 42})
    assert b.latest() == first and b.versions() == [first]
    artifact = b.load()
    assert artifact.version == first and _same(state, artifact.state)
    assert artifact.meta == a.meta(first) == b.meta(first)
    assert artifact.meta["metrics"] == {"gauc": 0.61} and artifact.meta["through_seq"] == 42
    assert artifact.meta["version"] == first and artifact.meta["published_at"] > 0
    assert b.has_part(first, "ranker") and not b.has_part(first, "nothing")
    assert b.load(first, skip=("retrieval",)).state["retrieval"] is None
    assert not any((tmp_path / "b").iterdir())  # nothing of the model in b's directory

    second = a.publish(_state(1), {"base_version": first})
    assert second != first and b.latest() == second and b.versions() == [first, second]
    assert _same(b.load().state["ranker"], _state(1)["ranker"])
    assert _same(b.load(first).state, state)  # the earlier version is still there


def test_a_reused_part_is_one_blob_and_outlives_its_version(url, hosts):
    a, b = hosts
    first = a.publish(_state(0), {})
    assert _count(url, "model_blobs") == 2
    light = _state(1)
    light["retrieval"] = None  # the publisher does not even serialise it
    second = a.publish(light, {}, reuse={"retrieval": first})
    assert _count(url, "model_blobs") == 3  # only the new ranker's bytes
    assert b.has_part(second, "retrieval")
    assert b.prune(keep=0) == [first]
    assert a.versions() == [second] and _count(url, "model_blobs") == 2
    loaded = a.load(second).state
    assert _same(loaded["retrieval"], _state(0)["retrieval"])
    assert _same(loaded["ranker"], _state(1)["ranker"])
    with pytest.raises(ModelError):
        b.load(first)


def test_a_publish_that_fails_half_way_leaves_nothing(url, hosts):
    a, b = hosts
    state = _state(0)
    state["ranker"] = None
    first = a.publish(state, {})
    blobs = _count(url, "model_blobs")
    # The retrieval part and the version row are written before the ranker's reuse fails.
    with pytest.raises(ModelError):
        a.publish(_state(1), {}, reuse={"ranker": first})
    assert b.versions() == [first] and b.latest() == first
    assert _count(url, "model_blobs") == blobs and _count(url, "model_parts") == 1


def test_a_version_being_written_is_invisible_until_it_commits(url, hosts):
    a, b = hosts
    first = a.publish(_state(0), {})
    done: list[str] = []
    with psycopg.connect(url) as blocker, psycopg.connect(url, autocommit=True) as watcher:
        # Hold the latest row: the publisher writes its blobs, parts and version, then waits.
        blocker.execute("SELECT version FROM model_latest FOR UPDATE")
        thread = threading.Thread(target=lambda: done.append(a.publish(_state(1), {})))
        thread.start()
        deadline = time.monotonic() + 30
        while True:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'INSERT INTO model_latest%'").fetchone()[0]
            if waiting or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert waiting == 1, "the publisher never reached its last statement"
        assert _count(url, "model_blobs") == 2  # its new blob is not visible either
        assert b.versions() == [first] and b.latest() == first
        assert _same(b.load().state, _state(0))
        blocker.rollback()
    thread.join(30)
    assert done and b.latest() == done[0] and b.versions() == [first, done[0]]
    assert _same(b.load().state, _state(1))


def test_two_hosts_publishing_at_once_get_distinct_versions(hosts):
    a, b = hosts
    names: list[str] = []
    errors: list[BaseException] = []

    def publish(r, seed):
        try:
            for _ in range(3):
                names.append(r.publish(_state(seed), {"seed": seed}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(r, i)) for i, r in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(set(names)) == 6
    assert sorted(a.versions()) == sorted(names) and a.latest() in names


def test_open_registry_picks_the_backend(url, tmp_path):
    assert type(open_registry(tmp_path / "models")) is ModelRegistry
    with pytest.raises(ValueError):
        open_registry(url)  # a database registry needs a local root as well
    with pytest.raises(ModelError):
        open_registry("s3://bucket/models", tmp_path)
    r = open_registry(url, tmp_path / "local")
    try:
        assert type(r).__name__ == "PostgresRegistry" and isinstance(r, ModelRegistry)
        assert r.root == tmp_path / "local" and r.latest() is None
    finally:
        r.close()


def test_reelrank_train_publishes_to_the_database_and_another_host_serves_it(url, tmp_path):
    """``reelrank train --models postgresql://...`` on one host; an engine on another host
    (another local directory) loads that version, serves a feed with it and swaps in the
    next one published."""
    from typer.testing import CliRunner

    from reelrank.cli import app
    from reelrank.engine import Engine
    from reelrank.store import open_store
    from reelrank.types import FeedRequest

    data = tmp_path / "trainer-host"
    runner = CliRunner()
    done = runner.invoke(app, ["simulate", "--data-dir", str(data), "--users", "20",
                               "--items", "120", "--creators", "6", "--sessions", "2",
                               "--swipes", "8", "--seed", "3", "--no-progress"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["train", "--data-dir", str(data), "--models", url,
                               "--retrieval-epochs", "1", "--ranker-epochs", "1",
                               "--no-progress"])
    assert done.exit_code == 0, done.output
    assert not any(p.is_dir() for p in (data / "models").iterdir())  # no version on disk

    serving = open_registry(url, tmp_path / "serving-host" / "models")
    publisher = open_registry(url, tmp_path / "publisher-host" / "models")
    store = open_store(data)
    try:
        first = serving.latest()
        assert first is not None and f"published model version {first}" in done.output
        engine = Engine(store, registry=serving).load()
        assert engine.models.version == first
        page = engine.feed(FeedRequest(user_id="u1", n=5))
        assert page.model_version == first and len(page.items) == 5
        artifact = publisher.load(first)
        second = publisher.publish(artifact.state, {**artifact.meta, "note": "again"})
        assert engine.models.refresh() and engine.models.version == second
        assert serving.meta(second)["version"] == second and serving.meta(second)["note"]
        assert engine.feed(FeedRequest(user_id="u1", n=5)).model_version == second
    finally:
        store.close()
        serving.close()
        publisher.close()


def test_a_fenced_publisher_that_lost_its_lease_cannot_publish(url, tmp_path):
    from reelrank.registry_pg import PostgresRegistry
    from reelrank.store.lease import Lease

    with Lease(url, "trainer", "old") as old_lease, Lease(url, "trainer", "new") as new_lease:
        old = PostgresRegistry(url, tmp_path / "old", fence=old_lease)
        new = PostgresRegistry(url, tmp_path / "new", fence=new_lease)
        try:
            with pytest.raises(ModelError):
                old.publish(_state(0), {})  # not acquired yet
            assert old_lease.try_acquire()
            first = old.publish(_state(0), {})
            # The old holder's session is cut; it does not look, and a standby takes over.
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'reelrank-lease-trainer'")
            assert new_lease.acquire(timeout_s=10, poll_s=0.05)
            with pytest.raises(ModelError, match="newer holder"):
                old.publish(_state(1), {})
            assert new.versions() == [first]
            second = new.publish(_state(1), {})
            assert old.latest() == second  # reading needs no lease
        finally:
            old.close()
            new.close()


def test_a_registry_reconnects_after_its_connections_are_cut(url, hosts):
    a, b = hosts
    first = a.publish(_state(0), {})
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE pid <> pg_backend_pid() AND datname = current_database()")
    # The pool checks a connection before lending it: no failed read after a server blip.
    assert b.latest() == first and _same(b.load().state, _state(0))
    assert a.publish(_state(1), {}) != first


def test_the_online_trainer_publishes_through_the_database_to_another_hosts_engine(url, tmp_path):
    """The trainer on "host A" publishes ranker-only versions that share the base version's
    retrieval blob; the engine on "host B" swaps each in while feeds run, none failing, and
    serves what a fresh load of the latest version holds."""
    from reelrank.engine import Engine
    from reelrank.eval.simulator import Simulator, build_world, generate_history
    from reelrank.importers import import_into
    from reelrank.store import open_store
    from reelrank.train.batch import train_from_store
    from reelrank.train.learner import OnlineConfig
    from reelrank.train.trainer import OnlineTrainer, TrainerConfig
    from reelrank.types import FeedRequest
    from tests.train.test_training import TINY

    world = build_world(n_users=30, n_items=120, n_creators=10, seed=5)
    store = open_store(tmp_path / "data")
    import_into(store, world.items, generate_history(world, 2, 10, seed=5), progress=False)
    trainer_side = open_registry(url, tmp_path / "a" / "models")
    serving_side = open_registry(url, tmp_path / "b" / "models")
    train_from_store(store, trainer_side, TINY, progress=False)
    base = serving_side.latest()
    engine = Engine(store, registry=serving_side, index_kind="exact").load()
    assert engine.models.version == base
    cfg = TrainerConfig(poll_s=0.01, publish_every_s=0.05, retrieval_every_s=3600, settle_ms=0,
                        online=OnlineConfig(batch_size=16, max_wait_ms=0))
    trainer = OnlineTrainer(store, trainer_side, cfg).start()
    failures: list[BaseException] = []
    swapped: set[str] = set()
    stop = threading.Event()

    def serve() -> None:  # another request thread of host B, swapping in versions as it goes
        n = 0
        while not stop.is_set():
            n += 1
            try:
                engine.models.refresh()
                page = engine.feed(FeedRequest(f"visitor-{n}", n=5))  # never runs out
                assert len(page.items) == 5
                swapped.add(page.model_version)
            except BaseException as exc:  # noqa: BLE001 - asserted below
                failures.append(exc)
                return

    server = threading.Thread(target=serve)
    server.start()
    try:
        deadline = time.monotonic() + 120
        while trainer.state != "running":
            assert time.monotonic() < deadline, "the trainer did not start"
            time.sleep(0.05)
        sim, viewer = Simulator(world), world.users[4]
        state, ts = sim.new_session(viewer, "pg"), int(time.time() * 1000) - 600_000
        while len(trainer._published) < 2 or trainer.status()["rows_waiting"]:
            assert time.monotonic() < deadline, "the trainer published too little"
            for item in engine.feed(FeedRequest(viewer.user_id, n=1)).items:
                events = sim.respond(viewer, item.item_id, ts, state)
                engine.ingest_events(events)
                ts = events[-1].ts + 300
            time.sleep(0.05)
    finally:
        trainer.stop()
        stop.set()
        server.join(60)
    try:
        assert not failures, failures[:1]
        assert len(swapped) >= 2  # host B served more than one version while it ran
        with psycopg.connect(url) as conn:
            blobs = {v: conn.execute(
                "SELECT blob_id FROM model_parts WHERE version = %s AND part = 'retrieval'",
                (v,)).fetchone()[0] for v in [base, *trainer._published]}
        assert len(set(blobs.values())) == 1  # the base's retrieval bytes, stored once
        engine.models.refresh()
        latest = serving_side.latest()
        assert engine.models.version == latest == trainer._published[-1]
        fresh = serving_side.load(latest).state["ranker"]
        served = engine.models.current.bundle.ranker.state_dict()
        for key, value in fresh.items():
            if torch.is_tensor(value):
                assert torch.equal(served[key], value), key
    finally:
        store.close()
        trainer_side.close()
        serving_side.close()


def test_a_process_that_starts_does_not_wait_for_a_publish_in_flight(url, hosts, tmp_path):
    """Opening a registry on a database that has its tables takes no table lock: it neither
    waits for a publish or load in flight nor makes the ones after it wait."""
    a, _ = hosts
    a.publish(_state(0), {})
    opened: list = []
    with psycopg.connect(url) as busy:
        busy.execute("LOCK TABLE model_blobs, model_parts, model_versions, model_latest "
                     "IN ROW EXCLUSIVE MODE")  # what a publish holds until it commits
        thread = threading.Thread(target=lambda: opened.append(
            open_registry(url, tmp_path / "starting")))
        thread.start()
        thread.join(15)
        assert opened, "opening the registry waited for the transaction in flight"
        busy.rollback()
    thread.join(30)
    assert opened[0].versions() == a.versions()
    opened[0].close()


def test_a_name_freed_by_pruning_in_the_same_second_is_not_given_twice(hosts, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, t=None: "20261206-120000")
    a, b = hosts
    first = a.publish(_state(0), {})
    second = a.publish(_state(1), {})
    assert b.prune(keep=0) == [first]
    third = a.publish(_state(2), {})
    assert len({first, second, third}) == 3 and b.versions() == [second, third]
    assert b.latest() == third and _same(b.load().state, _state(2))


def test_serve_reads_versions_from_the_database_given_by_models(url, tmp_path):
    """``reelrank serve --models URL``: the server's engine reads the registry in the database
    (a version another host published there is the one it serves), and a child trainer, which
    would publish to the data directory, is refused."""
    from reelrank.service.server import prepare

    app, _keys = prepare(tmp_path / "serve", insecure_no_auth=True, trainer="off",
                         models_url=url)
    publisher = open_registry(url, tmp_path / "trainer-host")
    try:
        registry = app.state.engine.registry
        assert type(registry).__name__ == "PostgresRegistry"
        assert registry.latest() is None
        version = publisher.publish(_state(3), {"note": "from another host"})
        assert registry.latest() == version
    finally:
        app.state.runtime.stop()
        app.state.engine.store.close()
        registry.close()
        publisher.close()
    with pytest.raises(ValueError, match="--models"):
        prepare(tmp_path / "serve2", insecure_no_auth=True, trainer="process", models_url=url)


def test_a_prune_keeps_the_base_of_a_version_that_stays(hosts):
    a, b = hosts
    base = a.publish(_state(0), {"topics": {"topics": [{"id": 1}]}})
    online = a.publish(_state(1), {"base_version": base})
    latest = a.publish(_state(2), {"base_version": base})
    assert b.prune(keep=0) == [online]
    assert a.versions() == [base, latest]
    assert topics_of(a.meta(latest), a) == {"topics": [{"id": 1}]}
