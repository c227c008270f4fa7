"""Would a co-engagement prior help? (benchmarks/results/co-engagement-prior.md, first table.)

Trains the retrieval model as the server does (no ranker, no time budget) on a leave-one-out
next-item file, then ranks every test viewer's whole catalog by retrieval alone plus
w x a co-engagement term read from the trained engine's live state (its item-to-item graph of
the training events), for a few weights and three forms of the term:

- ``sum10``: log(1 + the counts of the viewer's last 10 positives' rows, the k-th latest
  weighted 1 / (1 + k)): the form the served score took;
- ``last1``: log(1 + the last positive's row alone);
- ``sum10_norm``: the ``sum10`` mass as a share of the viewer's total, log(1 + 100 x share).

This is an exploration on the test targets, made to decide whether to build the prior; the
weight the engine serves is chosen by training on its own held-out viewers
(``reelrank/train/validation.py``), never on these.

    python benchmarks/prior/co_engagement.py beauty:PATH/TO/beauty.txt
"""

import dataclasses
import json
import sys
import time
from collections import Counter

import numpy as np

from reelrank import metrics
from reelrank.eval import harness
from reelrank.eval.neural import NeuralRecommender
from reelrank.eval.protocols import leave_one_out_split, load_dataset
from reelrank.train.batch import TrainConfig

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
FORMS = ("sum10", "last1", "sum10_norm")

cfg = TrainConfig(topics=None)
cfg.ranker = dataclasses.replace(cfg.ranker, epochs=0)
cfg.retrieval = dataclasses.replace(cfg.retrieval, time_budget_s=None, co_engagement=False)
started = time.time()
split = leave_one_out_split(load_dataset(sys.argv[1]), None, 0)
model = NeuralRecommender(cfg, view="retrieval")
harness.fit(model, split)
live = model.engine.live
where = {int(u): k for k, u in enumerate(split.users)}
ranks: dict = {(f, w): [] for f in FORMS for w in WEIGHTS}
for start in range(0, len(split.users), 256):
    part = split.users[start:start + 256]
    rows = [where[int(u)] for u in part]
    scores = np.array(model.score_users(part), dtype=np.float64)
    exclude = [split.exclude[r] for r in rows]
    term = {f: np.zeros_like(scores) for f in FORMS}
    for row, u in enumerate(part):
        state = live.user(str(model.user_ids[u]))
        if state is None:
            continue
        summed: Counter = Counter()
        last: Counter = Counter()
        for k, seed in enumerate(reversed(list(state.positives)[-10:])):
            for other, count in live.co_engaged(seed, 1000):
                summed[other] += count / (1 + k)
                if k == 0:
                    last[other] += count
        for form, counts in (("sum10", summed), ("last1", last), ("sum10_norm", summed)):
            for other, c in counts.items():
                col = model.item_of.get(other)
                if col is not None:
                    term[form][row, col] = c if form == "sum10_norm" else np.log1p(c)
    total = term["sum10_norm"].sum(1, keepdims=True)
    term["sum10_norm"] = np.log1p(100 * term["sum10_norm"] / np.maximum(total, 1e-9))
    for form in FORMS:
        for w in WEIGHTS:
            ranks[(form, w)].append(metrics.target_ranks(scores + w * term[form],
                                                         split.targets[rows], exclude))
out = {}
for (form, w), parts in ranks.items():
    r = np.concatenate(parts)
    out[f"{form}@{w}"] = {"ndcg@10": round(metrics.ndcg_at_k_single(r, 10), 4),
                          "hr@10": round(metrics.hit_rate_at_k(r, 10), 4)}
print(json.dumps({"results": out, "wall_seconds": round(time.time() - started)}, indent=1))
