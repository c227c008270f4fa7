"""``reelrank import``, ``simulate``, ``eval`` and ``audit``: data in, and the measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reelrank.cli import DATA_DIR_HELP, PROGRESS_HELP, STORE_HELP, _logging, app


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
        n_items, n_events = write_world(store, users, items, creators, sessions, swipes, seed,
                                         progress=progress)
    finally:
        store.close()
    where = store.url if store_url else data_dir
    typer.echo(f"synthetic world: {n_items} items, {n_events} events written to {where}")


def write_world(store, users: int, items: int, creators: int, sessions: int, swipes: int,
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
