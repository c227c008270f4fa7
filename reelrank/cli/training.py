"""``reelrank train`` (one batch run) and ``reelrank trainer`` (the online trainer on its own,
beside API processes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reelrank.cli import DATA_DIR_HELP, MODELS_HELP, STORE_HELP, _logging, app


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
    from reelrank.train.batch import TrainConfig, train_from_store

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
    from reelrank.train.budget import tune_allocator

    tune_allocator()  # before the trainer's threads: see its docstring
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
