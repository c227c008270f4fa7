"""``reelrank serve``, ``reelrank demo`` and ``reelrank rebuild-live``: the commands that run
the HTTP API or prepare what it serves from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from reelrank.cli import DATA_DIR_HELP, MODELS_HELP, PROGRESS_HELP, STORE_HELP, _logging, app
from reelrank.pipeline.plans import DEFAULT_PLAN_VIEWERS


@app.command()
def serve(
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="Accept requests without tokens. Local trials only."),
    log_level: str = typer.Option("info", help="debug | info | warning | error"),
    trainer: Optional[str] = typer.Option(
        None, help="The online trainer: 'process' (a child process this server runs "
                   "and restarts; the default), 'thread' (inside this process: weights handed "
                   "over in memory, but it slows requests while it learns) or 'off' (a "
                   "separate `reelrank trainer` runs; the default with --store)."),
    no_trainer: bool = typer.Option(False, "--no-trainer", help="Same as --trainer off."),
    retention_days: Optional[int] = typer.Option(
        None, min=1, help="Delete events older than this many days (checked hourly); "
                          "live state and exports follow."),
    max_body_mb: float = typer.Option(
        8.0, min=0.01, help="Largest request body in MB, refused (413) before it is read; "
                            "a batch of 10,000 events is about 2 MB."),
    max_in_flight: int = typer.Option(
        128, min=1, help="Requests served at once; past it a request gets 503 with "
                         "Retry-After."),
    max_in_flight_per_token: int = typer.Option(
        64, min=1, help="Requests served at once for one token; past it 429 with "
                        "Retry-After."),
    feed_threads: int = typer.Option(
        2, min=1, help="Feeds (and /v1/rank, /v1/explain) computed at once; the rest wait "
                       "their turn. The feed is Python under one interpreter lock: more "
                       "at once only take turns on it."),
    trace_budget_mb: float = typer.Option(
        64.0, min=0.0, help="Memory in MB for the feed traces kept for GET /v1/explain; "
                            "past it the least recently served viewers' traces go first."),
    feed_plan_ttl: float = typer.Option(
        30.0, min=0.0, help="Seconds a viewer's next pages may be served from the ranking of "
                            "their last page (re-checked against their filters and live "
                            "state; any event, settings change or new model version ends it "
                            "sooner); 0 turns feed plans off."),
    feed_plan_viewers: int = typer.Option(
        DEFAULT_PLAN_VIEWERS, min=1, help="Viewers holding a feed plan at once (about 200 KB "
                                          "of memory each); past it the least recently "
                                          "served lose theirs."),
    feed_plan_items: int = typer.Option(
        50, min=1, help="Items served from one feed plan, its first page included, before "
                        "the pipeline ranks afresh."),
    max_feed_only_viewers: int = typer.Option(
        10_000, min=1, help="Viewers held in live state who were served a feed but sent no "
                            "event (about 5 KB each); past it the least recently served go."),
    max_viewers: int = typer.Option(
        100_000, min=1, help="Viewers with events held in live state; past it the least "
                             "recently active go, rebuilt from their events in the log when "
                             "they return."),
    trainer_max_viewers: Optional[int] = typer.Option(
        None, min=1, help="The online trainer's --max-viewers (default 100,000)."),
    trainer_late_examples: Optional[int] = typer.Option(
        None, min=0, help="The online trainer's --late-examples (default 10,000)."),
    store: Optional[str] = typer.Option(
        None, "--store", help=STORE_HELP),
    models: Optional[str] = typer.Option(None, help=MODELS_HELP),
    live: Optional[str] = typer.Option(
        None, help="A live state shared by every API process: redis://host:port/db?prefix=name: "
                   "(docs/operations.md). Not replayed at start; rebuilt from the log only "
                   "when empty."),
    workers: int = typer.Option(
        1, min=1, help="API processes on the port (needs --store postgresql://... and --live "
                       "redis://...; the trainer runs apart: `reelrank trainer`)."),
) -> None:
    """Serve the HTTP API (docs/api.md; /docs on the server) on the store in DATA_DIR.

    On first start, generates one token per scope (ingest, serve, admin) and writes them to
    DATA_DIR/keys.json; the store keeps only their hashes. Live state is rebuilt from the event
    log before the port opens. Each model version published to DATA_DIR/models is swapped in
    without a restart; the online trainer learns from new events within seconds.
    """
    from reelrank.service.server import LOOPBACK, TRAINER_MODES, prepare, run

    _logging(log_level)

    if trainer is None:
        # The child trainer would open DATA_DIR's SQLite file, not the --store database.
        trainer = "off" if store else "process"
        if store and not no_trainer:
            typer.echo("with --store the online trainer does not run here: run `reelrank "
                       "trainer --store URL --data-dir DIR` beside it (or --trainer thread)",
                       err=True)
    if trainer == "process" and store and not no_trainer:
        raise typer.BadParameter("the child trainer cannot use --store; use thread or off",
                                 param_hint="--trainer")
    if trainer not in TRAINER_MODES:
        raise typer.BadParameter(f"one of {', '.join(TRAINER_MODES)}", param_hint="--trainer")
    if workers > 1:
        from reelrank.service.workers import needs_shared_backends

        why = needs_shared_backends(store, live)
        if why is not None:
            raise typer.BadParameter(why, param_hint="--workers")
        if trainer != "off" and not no_trainer:
            raise typer.BadParameter("with several API processes the online trainer runs "
                                     "apart: --trainer off, and `reelrank trainer --store URL "
                                     "--models URL` beside them", param_hint="--trainer")
    from reelrank.service.guard import RequestLimits
    from reelrank.train.budget import SERVER_MMAP_THRESHOLD, tune_allocator

    # Before the server's threads: fewer C-heap arenas, and the largest blocks in mappings of
    # their own, handed back when freed (benchmarks/results/soak.md).
    tune_allocator(mmap_threshold=SERVER_MMAP_THRESHOLD)

    limits = RequestLimits(max_body_bytes=int(max_body_mb * 1024 * 1024),
                           max_in_flight=max_in_flight,
                           max_in_flight_per_token=max_in_flight_per_token,
                           feed_threads=feed_threads)
    options = dict(trainer="off" if no_trainer else trainer,
                   retention_days=retention_days,
                   trace_budget_bytes=int(trace_budget_mb * 1024 * 1024),
                   max_feed_only_viewers=max_feed_only_viewers, max_viewers=max_viewers,
                   trainer_budgets={"max_viewers": trainer_max_viewers,
                                    "late_examples": trainer_late_examples},
                   store_url=store, models_url=models, live_url=live,
                   feed_plan_ttl_s=feed_plan_ttl, feed_plan_viewers=feed_plan_viewers,
                   feed_plan_items=feed_plan_items)
    if workers > 1:
        from reelrank.service.workers import run_workers

        _say_auth(insecure_no_auth, host, data_dir / "keys.json")
        run_workers(workers, host, port, log_level, data_dir=data_dir,
                    insecure_no_auth=insecure_no_auth, limits=limits, **options)
        return
    app_, keys_path = prepare(data_dir, insecure_no_auth=insecure_no_auth, limits=limits,
                              **options)
    if keys_path is not None:
        typer.echo(f"API tokens (ingest, serve, admin): {keys_path}")
    else:
        typer.echo("WARNING: authentication is off (--insecure-no-auth). Local trials only.")
        if host not in LOOPBACK:
            typer.echo(f"WARNING: and the service listens on {host}, beyond this machine: "
                       "anyone who can reach it acts as admin.")
    run(app_, host=host, port=port, log_level=log_level)


def _say_auth(insecure_no_auth: bool, host: str, keys_path: Path) -> None:
    from reelrank.service.server import LOOPBACK

    if not insecure_no_auth:
        typer.echo(f"API tokens (ingest, serve, admin): {keys_path}")
        return
    typer.echo("WARNING: authentication is off (--insecure-no-auth). Local trials only.")
    if host not in LOOPBACK:
        typer.echo(f"WARNING: and the service listens on {host}, beyond this machine: "
                   "anyone who can reach it acts as admin.")


@app.command()
def demo(
    data_dir: Path = typer.Option(Path("demo-data"), help=DATA_DIR_HELP),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    users: int = typer.Option(300, help="Synthetic viewers in the demo world."),
    items: int = typer.Option(2000, help="Synthetic videos in the demo world."),
    seed: int = typer.Option(7, help="Random seed of the demo world (used when it is built)."),
    progress: bool = typer.Option(True, help=PROGRESS_HELP),
) -> None:
    """Build a synthetic world and train the neural models on it (once), then serve it with
    authentication on, printing the URL and the tokens to use."""
    import json

    from reelrank.registry import ModelRegistry
    from reelrank.service.server import prepare, run
    from reelrank.store import open_store
    from reelrank.train.batch import TrainConfig, train_from_store
    from reelrank.train.ranker import RankerConfig
    from reelrank.train.retrieval import RetrievalConfig

    _logging("info")
    store = open_store(data_dir)
    try:
        if store.count_items() == 0:
            typer.echo("building the synthetic demo world ...")
            # The world's history ends now: the web app stamps events with the real time, and a
            # world dated in the past would make every video look years old on the first swipe.
            now = int(time.time() * 1000) // 3_600_000 * 3_600_000
            from reelrank.cli.data import write_world

            write_world(store, users, items, max(20, items // 15), 2, 20, seed, start_ts=now,
                         progress=progress)
        registry = ModelRegistry(Path(data_dir) / "models")
        if registry.latest() is None:
            typer.echo("training the neural models on the demo world (once) ...")
            cfg = TrainConfig(retrieval=RetrievalConfig(epochs=3), ranker=RankerConfig(epochs=1))
            result = train_from_store(store, registry, cfg, progress=progress)
            typer.echo(f"published model version {result.version}")
    finally:
        store.close()
    app_, keys_path = prepare(data_dir, insecure_no_auth=False, demo=True)
    base = f"http://{host}:{port}"
    keys = json.loads(Path(keys_path).read_text())
    typer.echo("")
    typer.echo(f"ReelRank demo on {base}")
    typer.echo(f"web app: {base}/app/  (demo sign-in: anyone who can reach this port can "
               "act as any viewer and as the operator)")
    typer.echo(f"tokens (also in {keys_path}):")
    for scope, token in keys.items():
        typer.echo(f"  {scope:7s} {token}")
    typer.echo(f"try: curl -H 'Authorization: Bearer {keys['serve']}' "
               f"'{base}/v1/feed?user_id=u1&n=5'")
    typer.echo("")
    run(app_, host=host, port=port, log_level="info")


@app.command("rebuild-live")
def rebuild_live_(
    live_url: str = typer.Option(..., "--live", help="The shared live state to rebuild: "
                                 "redis://host:port/db?prefix=name: (prefix reelrank: if "
                                 "none)."),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    store_url: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    flush: bool = typer.Option(False, "--flush", help="Delete every key of the prefix first, "
                               "what feeds sent included (else that is kept)."),
    log_level: str = typer.Option("info", help="debug | info | warning | error"),
) -> None:
    """Rebuild what the shared live state holds (viewers' histories, seen sets, counters, item
    counters, top lists, co-engagement) from the store's event log, so that losing Redis loses
    nothing durable. The rebuilt state is written beside the old one and swapped in, so feeds
    keep being served meanwhile; events the API processes accept while it runs are caught up
    before the swap, which holds their writes back for its moment. After a Redis restart
    without persistence, run it before the API processes accept events again: until then
    they serve from an empty state."""
    from reelrank.store import new_catalog, open_store
    from reelrank.store.rebuild import load_catalog, rebuild_live
    from reelrank.store.shared import SharedLive

    _logging(log_level)
    store = open_store(store_url or data_dir)
    # As the API processes see it: the swap waits for their writes in flight and holds new
    # ones back (its gate), and tells them to drop what they cached (the fan-out).
    shared = SharedLive(live_url, new_catalog())
    try:
        live = shared.live
        if flush:
            live.clear()
        items = load_catalog(store, live)
        events, last = rebuild_live(store, live, swapping=shared.gate().swapping)
    finally:
        shared.stop()
        store.close()
    typer.echo(f"rebuilt the live state from {events} events (through seq {last}) over "
               f"{items} items")
