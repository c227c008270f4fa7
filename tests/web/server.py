"""A real ReelRank server in demo mode over a small synthetic world, on a free loopback port.

Used by the browser tests and by ``python -m tests.web.screenshots``. The world's history ends
a minute before now, so the events the browser sends (stamped with the real clock) continue it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import uvicorn

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world, generate_history
from reelrank.importers import import_into
from reelrank.registry import ModelRegistry
from reelrank.service.app import create_app
from reelrank.service.runtime import Runtime
from reelrank.service.deps import Authenticator
from reelrank.store import open_store
from reelrank.train.batch import TrainConfig
from reelrank.train.ranker import RankerConfig
from reelrank.train.retrieval import RetrievalConfig

log = logging.getLogger(__name__)


@dataclass
class DemoServer:
    base_url: str
    engine: Engine
    admin_token: str

    @property
    def store(self):
        return self.engine.store

    def events_of(self, user_id: str) -> list:
        return [e for _, e in self.store.iter_events(user_id=user_id)]


@contextmanager
def demo_server(data_dir: Path, *, users: int = 40, items: int = 400, creators: int = 24,
                sessions: int = 2, swipes: int = 15, seed: int = 5) -> Iterator[DemoServer]:
    """Serve a fresh world from ``data_dir`` until the block ends."""
    store = open_store(data_dir)
    try:
        now = int(time.time() * 1000)
        world = build_world(n_users=users, n_items=items, n_creators=creators, seed=seed,
                            start_ts=now - 60_000)
        history = generate_history(world, n_sessions_per_user=sessions,
                                   swipes_per_session=swipes, seed=seed)
        import_into(store, world.items, history, progress=False)
        engine = Engine(store, registry=ModelRegistry(Path(data_dir) / "models")).load()
        # The console's "train" button trains on this small world in seconds, not minutes.
        runtime = Runtime(engine, TrainConfig(retrieval=RetrievalConfig(epochs=1, dim=32),
                                              ranker=RankerConfig(epochs=1, dim=16,
                                                                  expert_dim=32)))
        auth = Authenticator(store)
        app = create_app(engine, auth, demo=True, runtime=runtime)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        try:
            yield DemoServer(f"http://127.0.0.1:{port}", engine, auth.mint("admin"))
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
    finally:
        store.close()
