"""The served score's retrieval weight: how the feed changes with the weight ``w`` of the
retrieval term in ``log(value formula) + w x (retrieval logit + popularity prior)``
(``pipeline/neural.py``, ``DEFAULT_RETRIEVAL_WEIGHT``, 1 today).

The weight only matters where a version has a ranker (a log with impressions); next-item data
posted as plays (MovieLens, Beauty) train none, and their feed is the retrieval score alone.
So the two places it shows are KuaiRand's served feed and the synthetic world's new viewers:

    python benchmarks/retrieval_weight.py kuairand --dataset PATH/TO/kuairand-pure --weights 1,0.5,0.25
    python benchmarks/retrieval_weight.py coldstart --weights 1,0.5,0.25,0

Each weight runs in its own process (``reelrank eval`` with ``pop_3d,reelrank_served``, or
``bench_realtime.py coldstart`` with the frozen arm, which is deterministic), with the module
constant set before anything reads it; the table lands in ``--out`` (a folder) as
``summary.md`` beside each run's own report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUN = """
import runpy, sys
import reelrank.pipeline.neural as neural
neural.DEFAULT_RETRIEVAL_WEIGHT = float(sys.argv[1])
mode, target, out = sys.argv[2], sys.argv[3], sys.argv[4]
if mode == "kuairand":
    from reelrank.cli import app
    sys.argv = ["reelrank", "eval", "--dataset", "kuairand:" + target, "--cutoff", "2022-05-01",
                "--models", "pop_3d,reelrank_served", "--out", out, "--seed", "0", "--no-replay"]
    app()
else:
    sys.argv = [target, "coldstart", "--arms", "reelrank_frozen", "--out", out + "/coldstart"]
    runpy.run_path(target, run_name="__main__")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("kuairand", "coldstart"))
    ap.add_argument("--dataset", default=str(HERE.parent.parent / "shared/datasets/kuairand-pure"))
    ap.add_argument("--weights", default="1,0.5,0.25")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "retrieval-weight")
    args = ap.parse_args()
    rows = []
    for w in [float(x) for x in args.weights.split(",")]:
        out = args.out / f"{args.mode}-w{w:g}".replace(".", "p")
        out.mkdir(parents=True, exist_ok=True)
        target = args.dataset if args.mode == "kuairand" else str(HERE / "bench_realtime.py")
        subprocess.run([sys.executable, "-c", RUN, str(w), args.mode, target, str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        if args.mode == "kuairand":
            models = json.loads((out / "report.json").read_text())["models"]
            served = models["reelrank_served"]["metrics"]["retrieval"]["common_users"]
            pop = models["pop_3d"]["metrics"]["retrieval"]["common_users"]
            rows.append(f"| {w:g} | {served['recall@50']:.4f} | {served['recall@100']:.4f} | "
                        f"{pop['recall@50']:.4f} | {served['users']} |")
        else:
            arm = json.loads((out / "coldstart.json").read_text())["arms"]["reelrank_frozen"]
            rows.append(f"| {w:g} | {arm['watch_ratio']['final']:.3f} | "
                        f"{arm['like']['final']:.3f} | {arm['affinity']['final']:.3f} | "
                        f"{arm['top_topics']['final']:.3f} |")
        print(rows[-1], flush=True)
    head = ("| weight | served Recall@50 | Recall@100 | pop_3d Recall@50 | viewers |\n"
            "|---|---|---|---|---|" if args.mode == "kuairand" else
            "| weight | watch ratio | like rate | hidden fit | top-2 topics |\n|---|---|---|---|---|")
    command = "python benchmarks/retrieval_weight.py " + " ".join(sys.argv[1:])
    (args.out / f"summary-{args.mode}.md").write_text(
        f"Command: `{command}`\n\n{head}\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
