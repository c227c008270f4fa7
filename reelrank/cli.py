"""The ``reelrank`` command line: demo, serve, trainer, import, simulate, train, eval.

Entry points are the only places that read settings and assemble objects; everything below them
takes explicit arguments.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="ReelRank: a real-time 'For You' feed engine for short video.",
    no_args_is_help=True, add_completion=False,
    # Markdown joins a paragraph's hard-wrapped docstring lines, so Rich wraps the text once to
    # the terminal's width; a blank line separates paragraphs.
    rich_markup_mode="markdown",
)

DATA_DIR_HELP = "Directory of the embedded store (SQLite file, keys, models)."
STORE_HELP = ("A store other than DATA_DIR's SQLite file: postgresql://user:password@host/db. "
              "Keys and models stay in DATA_DIR.")
PROGRESS_HELP = "Show progress bars (on stderr)."
MODELS_HELP = ("Where model versions go: a directory (default DATA_DIR/models) or "
               "postgresql://user:password@host/db, which trainers and servers on other hosts "
               "reach (docs/operations.md).")


def _logging(level: str) -> None:
    from reelrank import logs

    logs.setup(level)


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
    trace_budget_mb: float = typer.Option(
        64.0, min=0.0, help="Memory in MB for the feed traces kept for GET /v1/explain; "
                            "past it the least recently served viewers' traces go first."),
    feed_plan_ttl: float = typer.Option(
        30.0, min=0.0, help="Seconds a viewer's next pages may be served from the ranking of "
                            "their last page (re-checked against their filters and live "
                            "state; any event, settings change or new model version ends it "
                            "sooner); 0 turns feed plans off."),
    feed_plan_viewers: int = typer.Option(
        1_000, min=1, help="Viewers holding a feed plan at once (about 140 KB each at "
                           "most); past it the least recently served lose theirs."),
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

    limits = RequestLimits(max_body_bytes=int(max_body_mb * 1024 * 1024),
                           max_in_flight=max_in_flight,
                           max_in_flight_per_token=max_in_flight_per_token)
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


@app.command("import")
def import_(
    dataset: str = typer.Argument(..., help="kuairand | movielens | sequences"),
    path: Path = typer.Argument(..., help="Dataset folder (kuairand, movielens) or file (sequences).",
                                exists=True),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
    store_url: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Import a dataset into the store: items first, then events (idempotent: importing the
    same data twice adds nothing).

    - kuairand: a KuaiRand-Pure folder (`log_standard_*.csv.gz`,
      `video_features_basic_pure.csv`); each log row becomes an impression, a play with its
      play time, and like / follow / comment / share / not_interested events for its flags.
    - movielens: an ml-latest-small style folder; ratings become plays, ratings >= 4 also
      likes.
    - sequences: a file of 'user item' or 'user item1 item2 ...' lines, in time order.

    Where to download each: docs/datasets.md. Import while the server is stopped: a running
    server picks the data up at its next start.
    """
    from reelrank.importers import DATASETS
    from reelrank.store import open_store

    if dataset not in DATASETS:
        raise typer.BadParameter(f"must be one of {sorted(DATASETS)}", param_hint="DATASET")
    store = open_store(store_url or data_dir)
    try:
        report = DATASETS[dataset](path, store, progress=progress)
    finally:
        store.close()
    where = store.url if store_url else data_dir  # the URL without its password
    typer.echo(f"imported {report.items} items, {report.events} events "
               f"({report.duplicates} duplicates skipped) in {report.seconds:.1f} s into {where}")


@app.command()
def simulate(
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    users: int = typer.Option(500, help="Number of synthetic viewers."),
    items: int = typer.Option(3000, help="Number of synthetic videos."),
    creators: int = typer.Option(200, help="Number of synthetic creators."),
    sessions: int = typer.Option(2, help="Background sessions per viewer."),
    swipes: int = typer.Option(20, help="Swipes per background session."),
    seed: int = typer.Option(7, help="Random seed: the same seed builds the same world."),
    progress: bool = typer.Option(True, help=PROGRESS_HELP),
    store_url: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Build a synthetic short-video world (creators, topics, sounds, viewers with hidden tastes)
    and write its catalog and a background history of events into the store.

    For demos, tests and load runs only: quality claims come from the real datasets.
    """
    from reelrank.store import open_store

    store = open_store(store_url or data_dir)
    try:
        n_items, n_events = _write_world(store, users, items, creators, sessions, swipes, seed,
                                         progress=progress)
    finally:
        store.close()
    where = store.url if store_url else data_dir
    typer.echo(f"synthetic world: {n_items} items, {n_events} events written to {where}")


def _write_world(store, users: int, items: int, creators: int, sessions: int, swipes: int,
                 seed: int, start_ts: int | None = None,
                 progress: bool = True) -> tuple[int, int]:
    from reelrank.eval.simulator import build_world, generate_history
    from reelrank.importers import import_into

    extra = {} if start_ts is None else {"start_ts": start_ts}
    world = build_world(n_users=users, n_items=items, n_creators=creators, seed=seed, **extra)
    history = generate_history(world, n_sessions_per_user=sessions,
                               swipes_per_session=swipes, seed=seed)
    report = import_into(store, world.items, history, progress=progress, desc="synthetic")
    return report.items, report.events


@app.command()
def train(
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    retrieval_epochs: Optional[int] = typer.Option(
        None, help="Most epochs of the two-tower retrieval model (default: the server's, "
        "with early stopping)."),
    ranker_epochs: Optional[int] = typer.Option(
        None, help="Most epochs of the multi-task ranker (0: no ranker; default: the "
        "server's, with early stopping)."),
    holdout: float = typer.Option(0.1, help="Share of the time span held out to pick the "
                                  "ranker's epochs."),
    seed: int = typer.Option(0, help="Random seed: the same seed and data train the same model."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    store_url: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    models: Optional[str] = typer.Option(None, help=MODELS_HELP),
) -> None:
    """Train the retrieval model and the ranker on everything in the store and publish them to
    DATA_DIR/models, with the same defaults as POST /v1/admin/train. The ranker's epochs are
    chosen on the last HOLDOUT share of time (its GAUC per task), then it is fitted on every
    row; retrieval stops when NDCG@10 of held-out last positives stops improving. The figures
    are printed and saved with the model. A running server switches to the new version
    without a restart."""
    import json

    from dataclasses import replace

    from reelrank.registry import open_registry
    from reelrank.store import open_store
    from reelrank.train.job import TrainConfig, train_from_store

    _logging("warning")
    # The same defaults as POST /v1/admin/train: the same data trains the same model.
    base = TrainConfig()
    cfg = TrainConfig(
        retrieval=replace(base.retrieval, seed=seed, **(
            {} if retrieval_epochs is None else {"epochs": retrieval_epochs})),
        ranker=replace(base.ranker, seed=seed, **(
            {} if ranker_epochs is None else {"epochs": ranker_epochs})),
        holdout=holdout, seed=seed)
    store = open_store(store_url or data_dir)
    registry = open_registry(models or Path(data_dir) / "models", Path(data_dir) / "models")
    try:
        result = train_from_store(store, registry, cfg, progress=progress)
    finally:
        registry.close()
        store.close()
    typer.echo(json.dumps(result.metrics, indent=2))
    typer.echo(f"published model version {result.version} in {result.seconds:.0f} s")


@app.command("trainer")
def trainer_(
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    publish_every: float = typer.Option(5.0, help="Seconds between published versions."),
    retrieval_every: float = typer.Option(120.0, help="Seconds between versions that carry "
                                                      "new retrieval weights (an index rebuild)."),
    log_level: str = typer.Option("info", help="debug | info | warning | error"),
    store_url: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    max_viewers: int = typer.Option(
        100_000, min=1, help="Viewers held in the trainer's live state; past it the least "
                             "recently active go, rebuilt from the log when they return."),
    late_examples: int = typer.Option(
        10_000, min=0, help="Closed examples kept for a late outcome (a like after the "
                            "view) to correct; past it the oldest go."),
    commands_from_stdin: bool = typer.Option(
        False, "--commands-from-stdin",
        help="Read erasures and resets from standard input as JSON lines "
             "({\"command\": \"erase\"|\"reset\", \"user_id\": ...}), acknowledge each on "
             "standard output, and exit when standard input closes: how `reelrank serve` "
             "runs its trainer."),
    models: Optional[str] = typer.Option(None, help=MODELS_HELP),
    lease: Optional[bool] = typer.Option(
        None, "--lease/--no-lease",
        help="Learn and publish only while holding the trainers' lease in PostgreSQL, "
             "standing by otherwise, so that of several trainers exactly one publishes and "
             "another takes over when it dies (default: on with a postgresql:// --store or "
             "--models)."),
    live: Optional[str] = typer.Option(
        None, help="The API processes' shared live state (redis://...): erasures and resets "
                   "they announce there reach this trainer at once."),
) -> None:
    """Run the online trainer as its own process: tail the event log in DATA_DIR, learn from
    each closed impression in small steps, and publish versions to DATA_DIR/models, which every
    API process (`reelrank serve --trainer off`) swaps in. Starts from the latest published
    version (train one first with `reelrank train`). Stop it with Ctrl-C; killing it at any
    point leaves the registry consistent and serving untouched."""
    from reelrank.registry import open_registry
    from reelrank.store import open_store
    from reelrank.train.supervisor import run_trainer
    from reelrank.train.trainer import OnlineTrainer, TrainerConfig

    _logging(log_level)
    store = open_store(store_url or data_dir)
    cfg = TrainerConfig(publish_every_s=publish_every, retrieval_every_s=retrieval_every,
                        verify_users=True, max_viewers=max_viewers, late_memory=late_examples)
    registry = open_registry(models or Path(data_dir) / "models", Path(data_dir) / "models")
    held, shared = _trainer_lease(lease, store_url, models, registry), None
    runner = OnlineTrainer(store, registry, cfg, lease=held)
    try:
        if live:
            shared = _trainer_hears_erasures(live, runner)
        run_trainer(runner, Path(data_dir), commands_from_stdin, say=typer.echo)
    finally:
        if shared is not None:
            shared.stop()
        if held is not None:
            held.close()
        registry.close()
        store.close()


def _trainer_lease(wanted: Optional[bool], store_url: Optional[str], models: Optional[str],
                   registry):
    """The trainers' lease on the deployment's PostgreSQL (the models' database first), or None;
    a registry in PostgreSQL also refuses a publish from a holder that lost it (its fence)."""
    urls = [u for u in (models, store_url) if u and u.startswith(("postgresql://",
                                                                 "postgres://"))]
    if wanted is None:
        wanted = bool(urls)
    if not wanted:
        return None
    if not urls:
        raise typer.BadParameter("the lease lives in PostgreSQL: give --store or --models "
                                 "postgresql://...", param_hint="--lease")
    from reelrank.store.lease import Lease

    held = Lease(urls[0], "trainer")
    if hasattr(registry, "fence"):
        registry.fence = held
    return held


def _trainer_hears_erasures(live_url: str, runner):
    """Erasures and resets announced on the shared live state's stream (a digest of the id)
    reach ``runner``'s viewers: their pending examples go before the next step."""
    from reelrank.store import new_catalog
    from reelrank.store.shared import SharedLive

    shared = SharedLive(live_url, new_catalog())

    def matching(digest: str) -> list[str]:
        return [u for u in runner.held_users() if shared.digest(u) == digest]

    shared.on_erase(lambda digest: [runner.forget_user(u) for u in matching(digest)])
    shared.on_reset(lambda digest: [runner.reset_user(u) for u in matching(digest)])
    return shared.start()


@app.command("eval")
def eval_(
    dataset: str = typer.Option(
        ..., help="KIND:PATH. kuairand:FOLDER (KuaiRand-Pure; temporal split by local day, "
                  "UTC+8), beauty:FILE or sequences:FILE ('user item' lines in time order; "
                  "leave-one-out), movielens:FOLDER (leave-one-out over the ratings). Where to "
                  "download each: docs/datasets.md."),
    cutoff: str = typer.Option(
        None, help="First test day, YYYY-MM-DD (kuairand only): train on the days before it, "
                   "test on it and the following days. Default: the last 4 days of the log."),
    test_days: int = typer.Option(None, help="How many days to test on (kuairand only)."),
    models: list[str] = typer.Option(
        [], help="Comma-separated model names: random, pop, pop_recent, itemknn, engine "
                 "(the v0 pipeline), reelrank (the trained neural models), and implicit_als, "
                 "implicit_bpr, recbole_sasrec with the peers extra. Default: all built-in."),
    out: Path = typer.Option(Path("eval-report"), help="Folder for report.json, report.md, PNGs."),
    max_users: int = typer.Option(None, help="Evaluate a seeded sample of test users (quick runs)."),
    seed: int = typer.Option(0, help="Seed of the random baseline and of every sample."),
    progress: bool = typer.Option(True, help="Progress bars on stderr."),
    replay: bool = typer.Option(True, help="Also replay the test days through the engine with "
                                           "live updates on and off (kuairand only)."),
    ranking_users: int = typer.Option(
        3000, min=0, help="Viewers the engine and the served views build pages for (a seeded "
                          "sample; 0: every test viewer)."),
) -> None:
    """Evaluate models on a real dataset with its standard protocol, print a table, and write
    report.json, report.md and plots. Every model runs on the same split in the same run:
    KuaiRand by time (AUC, GAUC, LogLoss per task; NDCG@10 of play time; Recall@K of long
    views; real-time replay by session position), next-item files leave-one-out with full
    ranking (HR@10, NDCG@10, MRR), and beyond-accuracy figures for the top-10 lists."""
    from reelrank.eval.command import run_eval_command

    _logging("warning")
    try:
        run_eval_command(dataset, cutoff, models, out, test_days, max_users, seed, progress,
                         replay, ranking_users=ranking_users or None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def audit(
    world: str = typer.Option("synthetic", help="synthetic, or kuairand:FOLDER (a replay of "
                                                "the KuaiRand-Pure test days; where to get it: "
                                                "docs/datasets.md)."),
    settings: str = typer.Option("off,default,strong",
                                 help="Comma-separated: off, v0, default, strong."),
    out: Path = typer.Option(None, help="Folder for report.json and report.md."),
    users: int = typer.Option(300, help="synthetic: viewers."),
    items: int = typer.Option(4000, help="synthetic: videos."),
    days: int = typer.Option(3, help="synthetic: simulated days (one session per viewer a day)."),
    swipes: int = typer.Option(40, help="synthetic: most swipes in a session."),
    cutoff: str = typer.Option("2022-05-01", help="kuairand: first test day."),
    test_days: int = typer.Option(4, help="kuairand: test days replayed."),
    max_users: int = typer.Option(3000, help="kuairand: sampled test viewers (0: all)."),
    seed: int = typer.Option(7, help="World seed (synthetic) or user-sample seed (kuairand)."),
    progress: bool = typer.Option(True, help="Progress bars on stderr."),
) -> None:
    """Fairness and diversity audit: creator exposure Gini, popularity bias, per-viewer topic
    entropy over time, coverage, new-creator exposure and engagement, for each feed setting,
    on a simulator run or a replay of real data."""
    import torch

    from reelrank.eval.audit import run_audit, settings_named

    _logging("warning")
    torch.set_num_threads(1)
    try:
        chosen = settings_named(settings)
        if world == "synthetic":
            options = dict(users=users, items=items, days=days, swipes=swipes, seed=seed)
        else:
            options = dict(cutoff=cutoff, test_days=test_days, max_users=max_users or None,
                           seed=seed)
        _, text = run_audit(world, chosen, out, progress=progress, **options)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(text)


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
    from reelrank.train.job import TrainConfig, train_from_store
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
            _write_world(store, users, items, max(20, items // 15), 2, 20, seed, start_ts=now,
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
        events, last = rebuild_live(store, live, gate=shared.gate())
    finally:
        shared.stop()
        store.close()
    typer.echo(f"rebuilt the live state from {events} events (through seq {last}) over "
               f"{items} items")


if __name__ == "__main__":
    app()
