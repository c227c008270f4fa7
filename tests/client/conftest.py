"""A real ReelRank server on a free loopback port, for the client's tests.

The app is wrapped in ``Faults``, which can make the next requests to a path fail *after* the
server has acted on them (the answer is replaced by a 503): the case where a client cannot know
whether its batch was stored, which is what retries with stable event ids are for.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

from reelrank.engine import Engine
from reelrank.registry import ModelRegistry
from reelrank.service import Authenticator, create_app, ensure_service_keys
from reelrank.service.runtime import Runtime
from reelrank.train.batch import TrainConfig
from reelrank.train.ranker import RankerConfig
from reelrank.train.retrieval import RetrievalConfig
from reelrank.types import Item

T0 = 1_700_000_000_000
TOPICS = ("cats", "cooking", "football", "music")


def make_item(i: int) -> Item:
    return Item(item_id=f"v{i}", creator_id=f"c{i % 6}", duration_ms=15_000,
                created_at=T0 - i * 60_000, caption=f"video {i} about {TOPICS[i % 4]}",
                hashtags=(TOPICS[i % 4],), sound_id=f"s{i % 5}", language="en", region="US")


@dataclass
class Faults:
    """Per path, how many of the next requests get a 503 after the app has answered them."""

    app: object
    fail_after: dict[str, int] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        self.seen[path] = self.seen.get(path, 0) + 1
        if self.fail_after.get(path, 0) <= 0:
            return await self.app(scope, receive, send)
        self.fail_after[path] -= 1

        async def swallow(message):
            pass  # the app's real answer is lost on the way back

        await self.app(scope, receive, swallow)
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(
            {"error": {"code": "service_unavailable", "message": "injected", "details": []}}
        ).encode()})


@dataclass
class LiveServer:
    base_url: str
    engine: Engine
    keys: dict[str, str]
    faults: Faults


@pytest.fixture
def live_server(store, tmp_path: Path) -> Iterator[LiveServer]:
    engine = Engine(store, registry=ModelRegistry(tmp_path / "models")).load()
    engine.ingest_items([make_item(i) for i in range(30)])
    # Small models, so that the training job of the tests takes seconds.
    runtime = Runtime(engine, TrainConfig(retrieval=RetrievalConfig(epochs=1, dim=16),
                                          ranker=RankerConfig(epochs=1, dim=8, expert_dim=16)))
    keys = json.loads(ensure_service_keys(store, tmp_path / "keys").read_text())
    faults = Faults(create_app(engine, Authenticator(store), runtime=runtime))
    try:
        with serving(faults) as base_url:
            yield LiveServer(base_url, engine, keys, faults)
    finally:
        runtime.stop()


@contextmanager
def serving(app) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
