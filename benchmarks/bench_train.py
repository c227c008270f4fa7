"""How long `reelrank train` takes on KuaiRand's training days, on this machine.

Loads KuaiRand-Pure, keeps the events before local midnight of the cut-off (2022-05-01 by
default: the harness's training days 04-24..04-30), writes them to a temporary store, and runs
the same ``train_from_store`` as ``reelrank train`` and ``POST /v1/admin/train`` with the default
configuration, timing each phase. Runs it ``--repeats`` times and reports the median.

    python benchmarks/bench_train.py --dataset ../shared/datasets/kuairand-pure

Writes benchmarks/results/train-kuairand.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from reelrank.eval.protocols import day_start_ms, load_dataset  # noqa: E402
from reelrank.importers import import_into  # noqa: E402
from reelrank.registry import ModelRegistry  # noqa: E402
from reelrank.store import open_store  # noqa: E402
from reelrank.train.batch import TrainConfig, train_from_store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/datasets/kuairand-pure")
    ap.add_argument("--cutoff", default="2022-05-01")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's own choice)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train-kuairand")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset(f"kuairand:{args.dataset}")
    cutoff_ms = day_start_ms(args.cutoff, ds.tz_hours)
    events = [e for e in ds.events if e.ts < cutoff_ms]
    runs = []
    cfg = TrainConfig()
    with tempfile.TemporaryDirectory(prefix="reelrank-train-") as tmp:
        store = open_store(Path(tmp) / "data")
        import_into(store, ds.items, events, progress=False)
        for k in range(args.repeats):
            registry = ModelRegistry(Path(tmp) / f"models{k}")
            started = time.perf_counter()
            result = train_from_store(store, registry, cfg, progress=False)
            wall = time.perf_counter() - started
            m = result.metrics
            runs.append({"wall_s": round(wall, 1),
                         "retrieval_s": m.get("retrieval_train_seconds"),
                         "ranker_s": m.get("ranker_train_seconds"),
                         "retrieval_epochs": m.get("retrieval_epochs"),
                         "retrieval_best_epoch": m.get("retrieval_best_epoch"),
                         "ranker_epochs_run": m.get("ranker_epochs_run"),
                         "ranker_epochs": m.get("ranker_epochs"),
                         "rows_train": m.get("rows_train"), "rows_holdout": m.get("rows_holdout"),
                         "ranker_holdout": m.get("ranker_holdout"),
                         "retrieval_holdout": m.get("retrieval_holdout")})
            print(json.dumps(runs[-1]), flush=True)
        store.close()
    median = statistics.median(r["wall_s"] for r in runs)
    cmd = "python benchmarks/bench_train.py " + " ".join(sys.argv[1:])
    report = {"command": cmd, "events": len(events), "items": len(ds.items),
              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "runs": runs,
              "median_wall_s": median, "config": "TrainConfig() defaults"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Training time on KuaiRand's training days",
        "",
        f"Command: `{cmd}`",
        "",
        f"{len(events):,} events and {len(ds.items):,} videos before {args.cutoff} (local "
        f"midnight, UTC+{ds.tz_hours}); default `TrainConfig`: each model stops early on what "
        f"it holds out (retrieval: {cfg.retrieval.validation_users:,} viewers' last positive, "
        f"at most {cfg.retrieval.epochs} epochs; ranker: the last {cfg.holdout:.0%} of the time "
        f"span, at most {cfg.ranker.epochs} epochs, then fitted again on every row); "
        f"{report['cpus']} CPUs, torch threads {report['torch_threads']}.",
        "",
        "Epochs: run, then the one kept (retrieval keeps its best epoch's weights; the ranker is",
        "fitted again on every row for as many epochs as its best).",
        "",
        "| run | wall s | retrieval s (epochs run, kept) | ranker s (epochs run, kept) | "
        "ranker rows train / holdout |",
        "|---|---|---|---|---|",
    ]
    for k, r in enumerate(runs, 1):
        lines.append(f"| {k} | {r['wall_s']} | {r['retrieval_s']} ({r['retrieval_epochs']}, "
                     f"{r['retrieval_best_epoch']}) | {r['ranker_s']} "
                     f"({r['ranker_epochs_run']}, {r['ranker_epochs']}) | "
                     f"{r['rows_train']} / {r['rows_holdout']} |")
    lines += ["", f"Median wall time: **{median} s** (target: under 180 s).", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
