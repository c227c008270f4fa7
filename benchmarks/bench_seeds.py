"""ReelRank's KuaiRand GAUC over several training seeds, against another commit in the same run.

The evaluation's ``--seed`` samples users; it does not change how the models are initialised,
and a change to the ranker's inputs (a new dense column, say) changes every initial weight
after it. One run per side cannot tell such a change from a different draw: this trains the
``reelrank`` model of the evaluation harness with ``--seeds`` (retrieval and ranker alike) on
the temporal split, for the working tree and for ``--baseline`` (a commit, checked out into a
temporary worktree), and reports long-view GAUC by the value formula and by the long-view head,
per seed and the median.

    python benchmarks/bench_seeds.py --baseline HEAD~1 --out benchmarks/results/kuairand-seeds

Writes ``--out``.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The code measured: this checkout, or the baseline worktree when the script calls itself.
sys.path.insert(0, os.environ.get("REELRANK_CODE", str(ROOT)))


def measure(dataset: str, cutoff: str, seeds: list[int]) -> list[dict]:
    import torch

    from reelrank.eval import harness
    from reelrank.eval.neural import NeuralRecommender
    from reelrank.eval.protocols import load_dataset, temporal_split
    from reelrank.train.batch import TrainConfig

    torch.set_num_threads(2)
    split = temporal_split(load_dataset(dataset), cutoff)
    rows = []
    for seed in seeds:
        base = TrainConfig(holdout=0.0)
        base.retrieval.seed = seed
        base.ranker.seed = seed

        def factory(cfg=base):
            model = NeuralRecommender(cfg)
            model.max_ranking_users = None
            return model

        run = harness.evaluate("reelrank", factory, split, seed=0)
        lv = run.metrics["impressions"]["long_view"]
        rows.append({"seed": seed, "value_gauc": lv["gauc"], "head_gauc": lv["head"]["gauc"],
                     "fit_seconds": round(run.fit_seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def _baseline(rev: str, args) -> tuple[str, list[dict]]:
    commit = _git("rev-parse", rev)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        _git("worktree", "add", "--detach", str(tree), commit)
        try:
            out = Path(tmp) / "rows.json"
            subprocess.run([sys.executable, __file__, "--dataset", args.dataset, "--cutoff",
                            args.cutoff, "--seeds", args.seeds, "--rows-to", str(out)],
                           env={**os.environ, "REELRANK_CODE": str(tree)}, check=True)
            return commit, json.loads(out.read_text())
        finally:
            _git("worktree", "remove", "--force", str(tree))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="kuairand:../shared/datasets/kuairand-pure")
    ap.add_argument("--cutoff", default="2022-05-01")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--baseline", default=None, help="a commit to measure the same way")
    ap.add_argument("--rows-to", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/kuairand-seeds")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.rows_to is not None:  # the baseline side, called by the run below
        args.rows_to.write_text(json.dumps(measure(args.dataset, args.cutoff, seeds)))
        return
    started = time.perf_counter()
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    sides = [(f"working tree at {_git('rev-parse', '--short', 'HEAD')}"
              + (" (with uncommitted changes)" if dirty else ""),
              measure(args.dataset, args.cutoff, seeds))]
    if args.baseline:
        commit, rows = _baseline(args.baseline, args)
        sides.append((f"baseline {commit[:10]} ({args.baseline})", rows))
    lines = ["# ReelRank on KuaiRand over training seeds", "",
             f"Command: `{' '.join(['python', *sys.argv])}`", "",
             f"Split: temporal at {args.cutoff} (the evaluation's); model: the harness's "
             "`reelrank` (retrieval and ranker trained with each seed); every test impression "
             "scored. Long-view GAUC by the value formula the feed orders by, and by the "
             "long-view head alone.", "",
             "| code | " + " | ".join(f"seed {s}: value / head" for s in seeds)
             + " | median value | median head |",
             "|---|" + "---|" * (len(seeds) + 2)]
    for name, rows in sides:
        cells = [f"{r['value_gauc']:.4f} / {r['head_gauc']:.4f}" for r in rows]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {statistics.median(r['value_gauc'] for r in rows):.4f}"
                     + f" | {statistics.median(r['head_gauc'] for r in rows):.4f} |")
    lines += ["", f"Wall time: {time.perf_counter() - started:.0f} s.", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"command": " ".join(["python", *sys.argv]), "sides": dict(sides)}, indent=2))
    print(f"wrote {args.out}.md", flush=True)


if __name__ == "__main__":
    main()
