"""``reelrank eval``: one command from a dataset to a report.

``run_eval_command`` is what the CLI calls; its docstring holds the option help texts.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from reelrank.eval import harness
from reelrank.eval.protocols import (
    DATASET_KINDS, leave_one_out_split, load_dataset, parse_spec, temporal_split,
)

DEFAULT_MODELS = {
    "temporal": ["random", "pop", "pop_recent", "itemknn", "engine", "reelrank"],
    "leave_one_out": ["random", "pop", "itemknn", "reelrank"],
}


def command_line(dataset: str, cutoff: str | None, models: list[str], out: Path,
                 test_days: int | None, max_users: int | None, seed: int,
                 replay: bool = True,
                 ranking_users: int | None = harness.DEFAULT_SAMPLE) -> str:
    """The ``reelrank eval`` invocation that reproduces a run."""
    parts = ["reelrank", "eval", "--dataset", dataset]
    if cutoff:
        parts += ["--cutoff", cutoff]
    if test_days is not None:
        parts += ["--test-days", str(test_days)]
    parts += ["--models", ",".join(models), "--out", str(out)]
    if max_users is not None:
        parts += ["--max-users", str(max_users)]
    parts += ["--seed", str(seed)]
    if not replay:
        parts.append("--no-replay")
    if ranking_users not in (harness.DEFAULT_SAMPLE, harness.ENGINE_RANKING_USERS):
        parts += ["--ranking-users", str(ranking_users or 0)]
    return shlex.join(parts)


def _model_names(models: list[str]) -> list[str]:
    names = [m.strip() for part in models for m in part.split(",") if m.strip()]
    return list(dict.fromkeys(names))


def run_eval_command(dataset: str, cutoff: str | None, models: list[str], out: Path,
                     test_days: int | None, max_users: int | None, seed: int, progress: bool,
                     replay: bool = True,
                     ranking_users: int | None = harness.DEFAULT_SAMPLE) -> dict:
    """Evaluate models on a real dataset with its standard protocol; write a report.

    Arguments (CLI help texts):

    DATASET      KIND:PATH. kuairand:FOLDER (KuaiRand-Pure; temporal split by local day, UTC+8),
                 beauty:FILE or sequences:FILE ('user item' lines in time order; leave-one-out),
                 movielens:FOLDER (ml-latest-small; leave-one-out over the ratings).
    --cutoff     First test day, YYYY-MM-DD (kuairand only): train on the days before it, test
                 on it and the following days. Default: the last 4 days of the log.
    --test-days  How many days to test on from the cut-off (kuairand only). Default: every
                 day to the end of the log.
    --models     Comma-separated model names (see `available_models()`): random, pop,
                 pop_recent, itemknn, engine, and implicit_als, implicit_bpr, recbole_sasrec when
                 the peers extra is installed. Default: random,pop,pop_recent,itemknn,engine
                 (kuairand) or random,pop,itemknn (leave-one-out).
    --out        Folder for report.json, report.md and the PNG plots (created if missing).
    --max-users  Evaluate a seeded sample of at most this many test users (training data is
                 never reduced; the replay then only replays those users). For quick runs.
    --seed       Seed of the random baseline and of every sample.
    --progress / --no-progress   Progress bars on stderr.
    --replay / --no-replay       Also replay the test days through the engine with live
                 updates on and off (kuairand only; about a minute).
    --ranking-users  How many test viewers (a seeded sample) the engine and the served views
                 build pages for; 0 or None: every one. Default 3,000.

    Returns the report (as written to report.json) and prints its tables to stdout.
    """
    if ranking_users == harness.DEFAULT_SAMPLE:
        ranking_users = harness.ENGINE_RANKING_USERS
    kind, _ = parse_spec(dataset)
    protocol = DATASET_KINDS[kind][1]
    if protocol != "temporal" and (cutoff is not None or test_days is not None):
        raise ValueError(f"--cutoff and --test-days apply to kuairand; {kind} is evaluated "
                         f"leave-one-out")
    names = _model_names(models) or DEFAULT_MODELS[protocol]
    builtin = harness.available_models(seed=seed, progress=progress, peers=False,
                                       ranking_users=ranking_users)
    registry = (builtin if all(n in builtin for n in names)
                else harness.available_models(seed=seed, progress=progress,
                                              ranking_users=ranking_users))
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; available: "
                         f"{', '.join(registry)}")
    started = time.perf_counter()
    ds = load_dataset(dataset)
    if protocol == "temporal":
        split = temporal_split(ds, cutoff, test_days, max_users, seed)
    else:
        split = leave_one_out_split(ds, max_users, seed)
    command = command_line(dataset, cutoff, names, out, test_days, max_users, seed, replay,
                           ranking_users)
    report, lorenz = harness.run(
        split, {n: registry[n] for n in names}, replay=replay and protocol == "temporal",
        seed=seed, progress=progress, command=command,
        settings={"cutoff": cutoff, "test_days": test_days, "max_users": max_users,
                  "ranking_users": ranking_users})
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    written = harness.write_report(report, Path(out), lorenz)
    _print(report, written)
    return harness.clean(report)


def _print(report: dict, written: list[Path]) -> None:
    from rich.console import Console

    console = Console()
    for table in harness.rich_tables(report):
        console.print(table)
    console.print(f"wrote {', '.join(str(p) for p in written)}")
