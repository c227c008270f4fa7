"""A separate trainer process publishes versions the API swaps in; killing it stops nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world, generate_history
from reelrank.importers import import_into
from reelrank.registry import ModelRegistry
from reelrank.service.app import create_app
from reelrank.train.job import train_from_store
from tests.train.test_training import TINY

ROOT = Path(__file__).resolve().parents[2]


def test_killing_the_trainer_process_never_stops_the_feed(store, tmp_path):
    world = build_world(n_users=30, n_items=120, n_creators=12, seed=5)
    import_into(store, world.items, generate_history(world, 1, 10, seed=5), progress=False)
    registry = ModelRegistry(tmp_path / "data" / "models")
    base = train_from_store(store, registry, TINY, progress=False).version
    engine = Engine(store, registry=registry, index_kind="exact").load()
    engine.watch_models(every_s=0.05)
    client = TestClient(create_app(engine, None))
    trainer = subprocess.Popen(
        [sys.executable, "-m", "reelrank.cli", "trainer", "--data-dir", str(tmp_path / "data"),
         "--publish-every", "0.1", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
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
            assert trainer.poll() is None, "the trainer exited"
            assert time.monotonic() < deadline, "no version published by the trainer"
            assert client.get("/v1/feed", params={"user_id": "u3"}).status_code == 200
            time.sleep(0.05)
        online = engine.models.version
        assert engine.models.current.meta["base_version"] == base
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
        # Dead trainer: the feed answers as before, with the last version it published.
        for k in range(10):
            r = client.get("/v1/feed", params={"user_id": f"u{k}", "n": 5})
            assert r.status_code == 200 and r.json()["model_version"] == online
        # Whatever it was doing when killed, the registry still loads its latest version.
        assert registry.load().version == registry.latest()
    finally:
        if trainer.poll() is None:
            trainer.kill()
        engine.stop_trainer()
