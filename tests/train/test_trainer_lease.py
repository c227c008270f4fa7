"""The trainers' leader lease wired into the online trainer: of two trainers on one deployment
only the lease holder learns and publishes, the other stands by; when the holder dies the
standby takes over and publishes; and a holder that lost the lease cannot publish (the
registry's fence), whatever it believes."""

from __future__ import annotations

import time

import pytest

from reelrank.engine import Engine
from reelrank.errors import ModelError
from reelrank.eval.simulator import Simulator, build_world, generate_history
from reelrank.importers import import_into
from reelrank.registry import open_registry
from reelrank.store import open_store
from reelrank.store.lease import Lease
from reelrank.train.batch import train_from_store
from reelrank.train.learner import OnlineConfig
from reelrank.train.trainer import OnlineTrainer, TrainerConfig
from reelrank.types import FeedRequest
from tests.pg import throwaway_database
from tests.train.test_training import TINY

CFG = TrainerConfig(poll_s=0.01, publish_every_s=0.05, retrieval_every_s=3600, settle_ms=0,
                    lease_poll_s=0.05, backoff_s=(0.05,),
                    online=OnlineConfig(batch_size=16, max_wait_ms=0))


def wait_for(check, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def deployment(tmp_path):
    with throwaway_database() as url:
        world = build_world(n_users=30, n_items=120, n_creators=10, seed=5)
        store = open_store(url)
        import_into(store, world.items, generate_history(world, 2, 10, seed=5), progress=False)
        serving = open_registry(url, tmp_path / "serving")
        train_from_store(store, serving, TINY, progress=False)
        engine = Engine(store, registry=serving, index_kind="exact").load()
        try:
            yield url, world, engine, tmp_path
        finally:
            serving.close()
            store.close()


def trainer_on(url: str, store, root, name: str) -> OnlineTrainer:
    """A trainer as ``reelrank trainer`` makes one: its own registry, fenced by its lease."""
    lease = Lease(url, "trainer", holder=name)
    registry = open_registry(url, root / name)
    registry.fence = lease  # type: ignore[attr-defined]
    return OnlineTrainer(store, registry, CFG, lease=lease)


def test_one_trainer_publishes_and_a_standby_takes_over_when_it_dies(deployment):
    url, world, engine, root = deployment
    a = trainer_on(url, engine.store, root, "a").start()
    wait_for(lambda: a.state == "running", "the first trainer never took the lease")
    b = trainer_on(url, engine.store, root, "b").start()
    sim = Simulator(world)
    try:
        viewer = world.users[3]
        session, ts = sim.new_session(viewer, "lease"), int(time.time() * 1000) - 600_000

        def swipe() -> None:
            nonlocal ts
            for item in engine.feed(FeedRequest(viewer.user_id, n=1)).items:
                events = sim.respond(viewer, item.item_id, ts, session)
                engine.ingest_events(events)
                ts = events[-1].ts + 300

        def publishes(t: OnlineTrainer) -> bool:
            swipe()
            return len(t._published) >= 1

        wait_for(lambda: publishes(a), "the lease holder never published")
        assert b.state == "standby" and not b._published  # it waited, learning nothing

        # The holder dies: its thread stops and its database session (the lease) ends.
        a.stop()
        a.lease.close()
        wait_for(lambda: publishes(b), "the standby never took over")
        assert b.lease.epoch == 2 and b.lease.current_holder() == ("b", 2)
        assert engine.registry.latest() in b._published

        # The old holder, believing itself leader, is fenced off by the registry.
        a.lease.epoch = 1
        artifact = a.registry.load(a.registry.latest())
        with pytest.raises(ModelError, match="lease"):
            a.registry.publish(artifact.state, artifact.meta)
    finally:
        for t in (a, b):
            t.stop()
            t.lease.close()
            t.registry.close()


def test_a_trainer_that_loses_its_lease_stops_publishing_and_stands_by(deployment):
    url, _, engine, root = deployment
    a = trainer_on(url, engine.store, root, "a").start()
    try:
        wait_for(lambda: a.state == "running", "the trainer never took the lease")
        other = Lease(url, "trainer", holder="other")
        # Its session ends behind its back (a cut connection) and another process takes the
        # lease at once (nothing is ingested: the trainer has nothing to publish meanwhile).
        a.lease.close()
        assert other.try_acquire()
        try:
            assert a.still_leading() is False
            assert a.state == "standby" and a.learner is None
            time.sleep(0.3)
            assert a.state == "standby"  # it keeps asking, and learns nothing meanwhile
        finally:
            other.close()
        wait_for(lambda: a.state == "running", "it did not take the lease back once free")
    finally:
        a.stop()
        a.lease.close()
        a.registry.close()


def test_erasures_announced_on_the_stream_reach_a_separate_trainer():
    """``reelrank trainer --live URL``: an erasure made by any API process (a digest on the
    stream) drops the viewer's pending examples in the trainer before its next step."""
    import redis

    from reelrank.cli.training import _trainer_hears_erasures
    from reelrank.store.fanout import Fanout
    from tests.rd import throwaway_prefix

    class Runner:
        def __init__(self) -> None:
            self.forgotten: list[str] = []
            self.reset: list[str] = []

        def held_users(self) -> set[str]:
            return {"kept", "gone-viewer", "reset-viewer"}

        def forget_user(self, user_id: str) -> None:
            self.forgotten.append(user_id)

        def reset_user(self, user_id: str) -> None:
            self.reset.append(user_id)

    with throwaway_prefix() as (url, prefix):
        runner = Runner()
        shared = _trainer_hears_erasures(f"{url}?prefix={prefix}", runner)
        api = redis.Redis.from_url(url)
        try:
            announce = Fanout(api, prefix)  # an API process of the same deployment
            announce.publish_erase("gone-viewer")
            announce.publish_reset("reset-viewer")
            wait_for(lambda: runner.forgotten and runner.reset, "nothing reached the trainer",
                     timeout=10)
            assert runner.forgotten == ["gone-viewer"] and runner.reset == ["reset-viewer"]
        finally:
            shared.stop()
            api.close()


def test_killing_the_publishing_trainer_process_hands_publishing_to_the_standby(deployment):
    """Two ``reelrank trainer`` processes on one deployment, as an operator runs them: the
    first takes the lease and publishes; ``kill -9`` of it, and the standby takes the lease
    over and publishes the next versions. Serving never stops meanwhile."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    url, world, engine, root = deployment
    repo = Path(__file__).resolve().parents[2]

    def start(name: str):
        log = root / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "reelrank.cli", "trainer", "--data-dir", str(root / name),
             "--store", url, "--models", url, "--publish-every", "0.2"],
            cwd=repo, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(repo)})
        return proc, log

    sim, viewer = Simulator(world), world.users[5]
    session, ts = sim.new_session(viewer, "kill"), int(time.time() * 1000) - 600_000

    def swipe_until_published(after: str | None) -> bool:
        nonlocal ts
        for item in engine.feed(FeedRequest(viewer.user_id, n=1)).items:  # serving goes on
            events = sim.respond(viewer, item.item_id, ts, session)
            engine.ingest_events(events)
            ts = events[-1].ts + 300
        return engine.registry.latest() != after

    observer = Lease(url, "trainer", holder="observer")
    a, a_log = start("a")
    b = None
    try:
        wait_for(lambda: "trainer: holds the 'trainer' lease" in a_log.read_text(),
                 "the first trainer never took the lease")
        assert observer.current_holder()[0].endswith(f":{a.pid}")
        b, b_log = start("b")
        wait_for(lambda: "online trainer on" in b_log.read_text(), "the standby never started")
        base = engine.registry.latest()
        wait_for(lambda: swipe_until_published(base), "the first trainer never published")
        assert "trainer: holds the 'trainer' lease" not in b_log.read_text()

        a.send_signal(signal.SIGKILL)
        a.wait(30)
        wait_for(lambda: "trainer: holds the 'trainer' lease" in b_log.read_text(),
                 "the standby never took the lease over")
        holder, epoch = observer.current_holder()
        assert holder.endswith(f":{b.pid}") and epoch == 2
        last = engine.registry.latest()
        wait_for(lambda: swipe_until_published(last), "the standby never published")
    finally:
        observer.close()
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
