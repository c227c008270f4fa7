"""Run the service: open the store, load the engine, make sure keys exist, start uvicorn.

``prepare`` builds the app without running it (so the CLI can print where the keys are first);
``run`` starts uvicorn on it. ``reelrank serve`` (``cli/serving.py``) is the one command line; this
module runs it too, for tools that start the server by module name::

    python -m reelrank.service.server --data-dir DIR [--host H] [--port P] [--insecure-no-auth]

One uvicorn worker here: with the default in-memory live state, the engine's state lives in
this process. Several API processes on one port (``--workers N``, over PostgreSQL and a Redis
live state) are ``service/workers.py``'s.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from reelrank.engine import DEFAULT_TRACE_BUDGET_BYTES, Engine
from reelrank.pipeline.plans import (
    DEFAULT_PLAN_ITEMS, DEFAULT_PLAN_TTL_S, DEFAULT_PLAN_VIEWERS, FeedPlans,
)
from reelrank.registry import open_registry
from reelrank.service.app import create_app
from reelrank.service.deps import Authenticator, ensure_service_keys
from reelrank.service.guard import RequestLimits
from reelrank.service.heap import HeapKeeper
from reelrank.service.runtime import Runtime
from reelrank.store import new_catalog, new_live_state, open_store

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


TRAINER_MODES = ("process", "thread", "off")


def prepare(data_dir: Path, insecure_no_auth: bool = False,
            demo: bool = False, trainer: bool | str = "process",
            retention_days: int | None = None, limits: RequestLimits | None = None,
            trace_budget_bytes: int = DEFAULT_TRACE_BUDGET_BYTES,
            store_url: str | None = None,
            max_feed_only_viewers: int = 10_000,
            max_viewers: int | None = 100_000,
            trainer_budgets: dict | None = None,
            models_url: str | None = None,
            live_url: str | None = None,
            feed_plan_ttl_s: float = DEFAULT_PLAN_TTL_S,
            feed_plan_viewers: int = DEFAULT_PLAN_VIEWERS,
            feed_plan_items: int = DEFAULT_PLAN_ITEMS,
            ) -> tuple[FastAPI, Path | None]:
    """The app on the store in ``data_dir`` (created if missing), and the keys file (None
    when auth is off). The caller owns the store and the runtime's trainer:
    ``app.state.runtime.stop()``, then ``app.state.engine.store.close()``.
    ``demo`` turns on the web app's demo sign-in (``reelrank demo`` only). ``trainer``: how
    the online trainer runs. ``"process"`` (default): a child process this server supervises,
    so that learning never competes with requests for the interpreter lock; ``"thread"``: a
    thread of this process, handing weights over in memory (a shorter event-to-weights lag,
    a longer feed p99 while it learns); ``"off"``: none here (a ``reelrank trainer`` process
    runs elsewhere). Either way the engine swaps in each version published to the registry.
    ``limits``: the request guard's caps (body size, requests in flight); ``trace_budget_bytes``:
    the memory the feed traces kept for explanations may hold; ``max_viewers``: viewers with
    events held in live state (None: every one), the least recently active let go and
    rebuilt from the log when they return. ``store_url``: a store other
    than the SQLite file in ``data_dir`` (``postgresql://...``); ``data_dir`` still holds the
    keys and the models. The child trainer opens ``data_dir``'s store, so it is refused with
    another store (run ``reelrank trainer --store URL`` beside it, or a thread).
    ``live_url``: a live state shared with other API processes (``redis://...``,
    ``store/shared.py``): not replayed at start (rebuilt from the log only when empty), and
    erasures, resets and catalog upserts reach the other processes through its stream.
    ``feed_plan_ttl_s``, ``feed_plan_viewers``, ``feed_plan_items``: a viewer's next pages are
    served from the ranking of their last one for this many seconds at most, for at most this
    many viewers, this many items per plan (``pipeline/plans.py``); a TTL of 0 turns plans
    off (every page runs the whole pipeline)."""
    if trainer is True:
        trainer = "process"
    elif trainer is False:
        trainer = "off"
    if trainer not in TRAINER_MODES:
        raise ValueError(f"trainer must be one of {', '.join(TRAINER_MODES)}, not {trainer!r}")
    if store_url is not None and trainer == "process":
        raise ValueError("the trainer child process opens the store in the data directory; "
                         "with another store use --trainer thread, or --trainer off and "
                         "`reelrank trainer --store URL` beside the server")
    if models_url is not None and trainer == "process":
        raise ValueError("the trainer child process publishes to the data directory; with "
                         "--models URL run `reelrank trainer --models URL` beside the server")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    store = open_store(store_url or data_dir)
    log.info("store opened in %s", data_dir if store_url is None else store.url)
    shared = None
    try:
        # Stale trending and popular lists are served while a thread ranks them again, rather
        # than ranked inside the request that found them stale (tens of ms at 100k videos).
        # Ids a feed was served to that sent no event are bounded (see ``MemoryLiveState``).
        options: dict[str, Any] = dict(background_refresh=True,
                                       max_feed_only_viewers=max_feed_only_viewers)
        if live_url is None:
            live = new_live_state(None, max_viewers=max_viewers, **options)
        else:
            from reelrank.store.shared import SharedLive

            shared = SharedLive(live_url, new_catalog(), **options)
            live = shared.live
        # ``models_url``: versions in a database every host reaches (registry_pg.py), else
        # the directory beside the store.
        registry = open_registry(models_url or data_dir / "models", data_dir / "models")
        plans = (FeedPlans(feed_plan_ttl_s, feed_plan_viewers, feed_plan_items)
                 if feed_plan_ttl_s > 0 else None)
        engine = Engine(store, live=live, registry=registry,
                        trace_budget_bytes=trace_budget_bytes, feed_plans=plans)
        if shared is None:
            engine.load()
        else:
            # Reading the others' messages first: an item posted while the catalog loads is
            # taken from the stream if the store read missed it.
            shared.start()
            engine.load(replay=False)
            shared.ensure_built(store)
            engine.gate = shared.gate()
            _forget_what_others_erase(shared, engine)
        # The catalog, live state and models loaded above (and, once ``run`` starts the
        # keeper, what the server keeps from then on) are frozen out of the cyclic
        # collector's full passes: each one stalls every request in flight while it scans.
        heap = HeapKeeper()
        heap.full()
        runtime = Runtime(engine, rebuild_lock=None if shared is None else
                          lambda: shared.lock("rebuild"))
        runtime.watch_models()
        if shared is not None:
            runtime.start_live_catch_up()
        # The trainer's memory budgets: {"max_viewers": n, "late_examples": n}, either or none.
        budgets = {k: v for k, v in (trainer_budgets or {}).items() if v is not None}
        if trainer == "process":
            runtime.start_trainer_process(data_dir, **budgets)
        elif trainer == "thread":
            from reelrank.train.trainer import TrainerConfig

            names = {"max_viewers": "max_viewers", "late_examples": "late_memory"}
            runtime.start_trainer(TrainerConfig(**{names[k]: v for k, v in budgets.items()}))
        if retention_days is not None:
            runtime.start_retention(retention_days)
        if insecure_no_auth:
            keys = None
            app = create_app(engine, None, demo=demo, limits=limits, runtime=runtime)
        else:
            keys = ensure_service_keys(store, data_dir)
            app = create_app(engine, Authenticator(store), demo=demo, limits=limits,
                             runtime=runtime)
        app.state.heap = heap
        app.state.started = started
        app.state.shared = shared
        return app, keys
    except BaseException:
        if shared is not None:
            shared.stop()
        store.close()
        raise


def _forget_what_others_erase(shared, engine: Engine) -> None:
    """An erasure or reset made by another process arrives as a digest of the viewer's id:
    the viewers this process holds something of are matched against it."""
    def matching(digest: str):
        return lambda user_id: shared.digest(user_id) == digest

    shared.on_erase(lambda digest: engine.forget_held(matching(digest)))
    shared.on_reset(lambda digest: engine.forget_held(matching(digest), reset=True))


def run(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until stopped, then close its store."""
    # No access log: it would write every client's IP address, which the service promises
    # not to keep; request counts and latencies are in /metrics.
    # uvicorn's own start and stop lines are left to --log-level debug; _Server says the one
    # that matters (where it listens) in the same format as every other line.
    config = uvicorn.Config(app, host=host, port=port, workers=1, access_log=False,
                            log_level="debug" if log_level == "debug" else "warning",
                            log_config=None)
    heap = getattr(app.state, "heap", None)
    if heap is not None:
        heap.start()
    try:
        _Server(config, getattr(app.state, "started", None)).run()
    finally:
        if heap is not None:
            heap.stop()
        shutdown(app)


def shutdown(app: FastAPI) -> None:
    """Stop what ``prepare`` started and close the store."""
    app.state.runtime.stop()
    shared = getattr(app.state, "shared", None)
    if shared is not None:
        shared.stop()
    app.state.engine.store.close()


class _Server(uvicorn.Server):
    """uvicorn's server, logging one line once its sockets listen."""

    def __init__(self, config: uvicorn.Config, started: float | None):
        super().__init__(config)
        self._started = started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            c = self.config
            took = "" if self._started is None else \
                f" (ready {time.monotonic() - self._started:.1f} s after start)"
            log.info("listening on http://%s:%d%s", c.host, c.port, took)


def main(argv: list[str] | None = None) -> None:
    """``python -m reelrank.service.server ARGS`` is ``reelrank serve ARGS``: one command line,
    defined in ``cli/serving.py``."""
    from reelrank.cli import app

    app(["serve", *(sys.argv[1:] if argv is None else argv)],
        prog_name="python -m reelrank.service.server")


if __name__ == "__main__":
    main()
