"""Several API processes on one port: ``reelrank serve --workers N`` (with ``--store
postgresql://...`` and ``--live redis://...``).

uvicorn's supervisor binds the port once and starts N worker processes (spawned: a fresh
interpreter each, nothing forked from this one) that accept on it; it restarts a worker that
dies and stops them all on SIGINT or SIGTERM. Each worker builds its app with ``worker_app``,
from the options this process passes in its environment: it opens the shared store, the shared
live state and the model registry itself, so any worker serves any viewer, and one that dies
takes no state with it. This process only makes sure the service keys exist first (N workers
generating them at once would race) and then supervises.

Why not one process with more threads: the feed is Python work under one interpreter lock;
processes are what use more cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from reelrank.service.deps import ensure_service_keys
from reelrank.service.guard import RequestLimits
from reelrank.store import open_store

log = logging.getLogger(__name__)

OPTIONS_ENV = "REELRANK_WORKER_OPTIONS"  # how the supervisor hands ``prepare``'s options over


def needs_shared_backends(store_url: str | None, live_url: str | None) -> str | None:
    """Why ``--workers N`` (N > 1) cannot run with these backends, or None when it can."""
    problems = []
    if not (store_url or "").startswith(("postgresql://", "postgres://")):
        problems.append("--store postgresql://... (the embedded SQLite store is one "
                        "process's file)")
    if not (live_url or "").startswith(("redis://", "rediss://", "unix://")):
        problems.append("--live redis://... (the default live state lives in one process's "
                        "memory)")
    if not problems:
        return None
    return "--workers above 1 needs " + " and ".join(problems)


def run_workers(workers: int, host: str, port: int, log_level: str, *, data_dir: Path,
                insecure_no_auth: bool, limits: RequestLimits | None, **options) -> Path | None:
    """Supervise ``workers`` API processes on ``host:port`` until stopped. ``options``:
    ``prepare``'s (JSON-able values only). Returns when the workers are gone."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = None
    if not insecure_no_auth:
        store = open_store(options.get("store_url") or data_dir)
        try:
            keys = ensure_service_keys(store, data_dir)
        finally:
            store.close()
    os.environ[OPTIONS_ENV] = json.dumps({
        **options, "data_dir": str(data_dir), "insecure_no_auth": insecure_no_auth,
        "limits": dataclasses.asdict(limits) if limits is not None else None,
        "log_level": log_level})
    log.info("starting %d API processes on http://%s:%d", workers, host, port)
    # No access log (viewers' IP addresses). uvicorn's own INFO lines say which worker
    # started, died and was replaced.
    config = uvicorn.Config("reelrank.service.workers:worker_app", factory=True, host=host,
                            port=port, workers=workers, access_log=False, log_config=None,
                            log_level="debug" if log_level == "debug" else "info")
    try:
        Multiprocess(config, sockets=[listening_socket(host, port)]).run()
    except KeyboardInterrupt:
        pass
    return keys


def listening_socket(host: str, port: int) -> socket.socket:
    """The port the workers share, made as ``uvicorn.run`` would make it but with its protocol
    named (IPPROTO_TCP): asyncio sets TCP_NODELAY only on connections accepted from such a
    socket, and without it every response waits out Nagle's algorithm against the client's
    delayed ACK (measured: 44 ms per /healthz with two workers, against 0.8 ms)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def worker_app() -> FastAPI:
    """One worker's app (uvicorn calls it in each worker process), built from the options the
    supervisor left in the environment; its lifespan starts the heap keeper and, at the end,
    stops the runtime and the subscriber and closes the store."""
    from reelrank import logs
    from reelrank.service.server import prepare, shutdown

    from reelrank.train.budget import SERVER_MMAP_THRESHOLD, tune_allocator

    # Each worker is a process of its own, bounded as ``reelrank serve`` is.
    tune_allocator(mmap_threshold=SERVER_MMAP_THRESHOLD)
    options = json.loads(os.environ[OPTIONS_ENV])
    logs.setup(options.pop("log_level"))
    limits = options.pop("limits")
    app, _ = prepare(Path(options.pop("data_dir")),
                     limits=RequestLimits(**limits) if limits is not None else None,
                     **options)
    heap = app.state.heap

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        heap.start()
        try:
            yield
        finally:
            heap.stop()
            shutdown(app)

    app.router.lifespan_context = lifespan
    log.info("API process %d ready", os.getpid())
    return app
