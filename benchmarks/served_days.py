"""The served feed day by day on KuaiRand, with the live state following the test days
(``reelrank/eval/served_days.py``): at the start of each test day one page per viewer, scored
by Recall of that day's long views not shown before, then the day's events go into the live
state. Beside it, the retrieval model alone and two popularity lists at the same moment.

Each variant trains once (the server's default training, with the variant's overrides) and
runs in its own process, so a module constant set for one cannot leak into the next:

    python benchmarks/served_days.py --dataset PATH/TO/kuairand-pure \\
        --variant 'default={}' --variant 'pairwise3={"ranker": {"pairwise_weight": 3}}' \\
        --variant 'retrieval0.5={"retrieval_weight": 0.5}'

A variant's JSON may hold ``ranker`` and ``retrieval`` (fields of ``RankerConfig`` and
``RetrievalConfig``), ``retrieval_weight`` (the served score's weight of the retrieval
term, ``pipeline/neural.py``) and ``online`` (fields of ``OnlineConfig``; present, even as
``{}``, it turns the online arm on: the weights learn from each day's events in event time, as
the server's trainer learns them, and serve the next day's pages). The table lands in
``--out`` (a folder) as ``summary.md``, beside each variant's ``NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from reelrank import metrics

HERE = Path(__file__).resolve().parent

RUN = """
import dataclasses, json, logging, sys
logging.basicConfig(level=logging.WARNING)
import reelrank.pipeline.neural as neural
from reelrank.eval.protocols import load_dataset, temporal_split
from reelrank.eval.served_days import ServedDaysConfig, served_days
from reelrank.train.batch import TrainConfig
over, dataset, cutoff, days, users, page, seed, out = json.loads(sys.argv[1])
if "retrieval_weight" in over:
    neural.DEFAULT_RETRIEVAL_WEIGHT = float(over["retrieval_weight"])
train = TrainConfig(seed=seed)
train.ranker = dataclasses.replace(train.ranker, **over.get("ranker", {}))
train.retrieval = dataclasses.replace(train.retrieval, **over.get("retrieval", {}))
online = None
if "online" in over:  # in event time, a step per full batch or per minute, as the replay runs it
    from reelrank.train.learner import OnlineConfig
    online = OnlineConfig(**{"max_wait_ms": 60_000,
                             "pairwise_weight": train.ranker.pairwise_weight, **over["online"]})
split = temporal_split(load_dataset("kuairand:" + dataset), cutoff, days, None, 0)
report = served_days(split, ServedDaysConfig(train=train, page=page, score_users=users,
                                             online=online))
report["variant"] = over
report["retrieval_weight"] = neural.DEFAULT_RETRIEVAL_WEIGHT
open(out, "w").write(json.dumps(report, indent=1, default=str))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default=str(HERE.parent.parent / "shared/datasets/kuairand-pure"))
    ap.add_argument("--cutoff", default="2022-05-01")
    ap.add_argument("--test-days", type=int, default=4)
    ap.add_argument("--score-users", type=int, default=2000, help="viewers per day (0: all)")
    ap.add_argument("--page", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--variant", action="append", default=[], help="NAME=JSON (repeatable)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "served-days")
    args = ap.parse_args()
    variants = [v.split("=", 1) for v in (args.variant or ["default={}"])]
    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    started = time.time()
    rows, days_rows, paired = [], [], []
    first = None
    for name, spec in variants:
        out = args.out / f"{name}.json"
        payload = [json.loads(spec), args.dataset, args.cutoff, args.test_days,
                   args.score_users or None, args.page, args.seed, str(out)]
        subprocess.run([sys.executable, "-c", RUN, json.dumps(payload)], check=True,
                       stdout=subprocess.DEVNULL)
        r = json.loads(out.read_text())
        o = r["overall"]
        best_pop = max(o["pop"], o["pop_recent"])
        tm = r["train"]["metrics"]
        rows.append(f"| {name} | **{o['served']:.4f}** | {o['retrieval']:.4f} | {o['pop']:.4f} | "
                    f"{o['pop_recent']:.4f} | {o['served'] / best_pop:.2f}x | "
                    f"{o['served'] / o['retrieval']:.2f} | {o['viewer_days']} | "
                    f"{r['train']['seconds']} ({tm.get('retrieval_epochs')} / "
                    f"{tm.get('ranker_epochs_run', tm.get('ranker_epochs'))}) |")
        for day, d in r["days"].items():
            top = ", ".join(f"{k} {v / max(sum(d['served_sources'].values()), 1):.0%}"
                            for k, v in list(d["served_sources"].items())[:4])
            days_rows.append(f"| {name} | {day} | {d['served']:.4f} | {d['retrieval']:.4f} | "
                             f"{d['pop']:.4f} | {d['pop_recent']:.4f} | {d['viewers']} | {top} |")
        per = r["per_viewer_day"]
        if first is None:
            first = (name, per)
        elif per["units"] == first[1]["units"]:  # same viewer-days: a paired comparison
            d = metrics.paired_mean_difference(per["served"], first[1]["served"])
            paired.append(f"| {name} minus {first[0]} | {d['diff']:+.4f} "
                          f"[{d['low']:+.4f}, {d['high']:+.4f}] | {d['n']} |")
        print(rows[-1], flush=True)
    command = "python benchmarks/served_days.py " + " ".join(
        a if a.startswith("--") or " " not in a else repr(a) for a in sys.argv[1:])
    text = [
        "# The served feed day by day on KuaiRand, live state following the test days", "",
        f"Command: `{command}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; load average (1 min) at start {load:.2f}. "
        f"Wall time {time.time() - started:.0f} s.", "",
        f"Cut-off {args.cutoff}, {args.test_days} test days, page of {args.page}, up to "
        f"{args.score_users or 'all'} viewers per day (seeded sample of those with a target), "
        f"training seed {args.seed}. Recall@{args.page} of the day's long views not shown "
        "before that day, averaged over viewer-days; `served` is `GET /v1/feed` as served at "
        "the start of the day, after every earlier test day went into the live state; "
        "`retrieval` is the retrieval model alone at the same moment; `pop` counts every "
        "positive so far, `pop_recent` the last 3 days' first.", "",
        "| variant | served | retrieval alone | pop | pop_recent | served / better pop | "
        "served / retrieval | viewer-days | training s (retrieval epochs / ranker epochs) |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "Served Recall, each variant minus the first on the same viewer-days, with a 95% "
        "bootstrap interval over viewer-days:", "",
        "| comparison | difference | viewer-days |", "|---|---|---|", *paired, "",
        "By day (sources: share of the served items from each candidate source):", "",
        "| variant | day | served | retrieval | pop | pop_recent | viewers | sources |",
        "|---|---|---|---|---|---|---|---|", *days_rows, ""]
    (args.out / "summary.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
