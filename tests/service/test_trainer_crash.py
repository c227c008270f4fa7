"""The trainer as a child process of the server (the default): it publishes versions the API
swaps in, killing it stops nothing, the server starts it again, and erasures and resets reach
it."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world, generate_history
from reelrank.importers import import_into
from reelrank.registry import ModelRegistry
from reelrank.service.app import create_app
from reelrank.service.runtime import Runtime
from reelrank.train.batch import train_from_store
from reelrank.train.supervisor import TrainerProcess
from tests.train.test_training import TINY

ROOT = Path(__file__).resolve().parents[2]


def test_killing_the_trainer_process_never_stops_the_feed(store, tmp_path):
    world = build_world(n_users=30, n_items=120, n_creators=12, seed=5)
    import_into(store, world.items, generate_history(world, 1, 10, seed=5), progress=False)
    registry = ModelRegistry(tmp_path / "data" / "models")
    base = train_from_store(store, registry, TINY, progress=False).version
    engine = Engine(store, registry=registry, index_kind="exact").load()
    runtime = Runtime(engine)
    runtime.watch_models(every_s=0.05)
    client = TestClient(create_app(engine, None, runtime=runtime))
    # What `reelrank serve` does by default: the trainer as a child process it supervises.
    supervisor = runtime.start_trainer_process(tmp_path / "data", publish_every_s=0.1,
                                               backoff_s=(0.1,))
    try:
        now = int(time.time() * 1000)
        events = []
        for k, item in enumerate(world.items[:20]):
            ts = now - 60_000 + 2_000 * k
            events += [
                {"event_id": f"x{k}i", "user_id": "u3", "item_id": item.item_id, "ts": ts,
                 "type": "impression"},
                {"event_id": f"x{k}p", "user_id": "u3", "item_id": item.item_id, "ts": ts + 500,
                 "type": "play", "watch_ms": item.duration_ms}]
        assert client.post("/v1/events", json={"events": events}).status_code == 200
        # The trainer learns from them and publishes; the API process swaps the version in.
        deadline = time.monotonic() + 60
        while engine.models.version == base:
            assert supervisor.restarts == 0, "the trainer exited"
            assert time.monotonic() < deadline, "no version published by the trainer"
            assert client.get("/v1/feed", params={"user_id": "u3"}).status_code == 200
            time.sleep(0.05)
        online = engine.models.version
        assert engine.models.current.meta["base_version"] == base
        # The child's own figures reach the admin endpoint through its status file.
        deadline = time.monotonic() + 30
        while True:
            status = client.get("/v1/admin/trainer").json()["trainer"]
            if status.get("state") == "running" and status.get("rows_trained", 0) >= 20:
                break
            assert time.monotonic() < deadline, f"no running status from the child: {status}"
            time.sleep(0.1)
        assert status["mode"] == "process" and status["alive"] and status["failures"] == 0
        first = supervisor.pid
        os.kill(first, signal.SIGKILL)
        # Dead trainer: the feed answers as before, with the last version it published (it may
        # have published more after ``online`` while it learned the rest of the rows).
        last = registry.latest()
        deadline = time.monotonic() + 10
        while engine.models.version != last:
            assert time.monotonic() < deadline, "serving did not swap in the last version"
            time.sleep(0.05)
        assert last >= online
        for k in range(10):
            r = client.get("/v1/feed", params={"user_id": f"u{k}", "n": 5})
            assert r.status_code == 200 and r.json()["model_version"] == last
        # Whatever it was doing when killed, the registry still loads its latest version.
        assert registry.load().version == registry.latest()
        # ... and the server starts a new one.
        deadline = time.monotonic() + 30
        while not (supervisor.restarts == 1 and supervisor.alive and supervisor.pid != first):
            assert time.monotonic() < deadline, "the trainer was not restarted"
            time.sleep(0.05)
    finally:
        runtime.stop()
    assert not supervisor.alive


class _Recorder(TrainerProcess):
    """The supervisor around a stand-in child that writes what it reads to a file."""

    def __init__(self, out: Path):
        super().__init__(out.parent, backoff_s=(0.05,))
        self.out = out

    def _command(self) -> list[str]:
        script = ("import sys\n"
                  f"with open({str(self.out)!r}, 'a') as f:\n"
                  "    for line in sys.stdin:\n"
                  "        f.write(line); f.flush()\n")
        return [sys.executable, "-c", script]


def test_erasures_and_resets_reach_the_trainer_process(store, tmp_path):
    out = tmp_path / "commands.txt"
    engine = Engine(store).load()
    supervisor = _Recorder(out)
    Runtime(engine).attach(supervisor)  # erasures and resets reach it from now on
    supervisor.start()
    try:
        deadline = time.monotonic() + 10
        while not supervisor.alive:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        engine.erase_user("u1")
        engine.reset_interests("u2")
        deadline = time.monotonic() + 10
        while not out.exists() or out.read_text().count("\n") < 2:
            assert time.monotonic() < deadline, "the commands did not arrive"
            time.sleep(0.01)
        assert [json.loads(line) for line in out.read_text().splitlines()] == [
            {"command": "erase", "user_id": "u1"}, {"command": "reset", "user_id": "u2"}]
    finally:
        supervisor.stop()
    assert not supervisor.alive  # closing its stdin ends it
