"""The popularity prior's weight chosen on a held-out tail (benchmarks/results/kuairand-prior.md).

Trains the retrieval model with the server's default training except ``validation_tail`` (each
validation viewer's last fraction of history held out, not only their last positive) and one
ranker epoch (the ranker does not read retrieval), prints every tried weight's validation
figures, then the test days' Recall@50/100 of the retrieval logits plus each weight times the
served prior (``log_popularity`` of the live state at the cut-off), over every test viewer.

    python benchmarks/prior/tail.py DATASET CUTOFF TAIL
    python benchmarks/prior/tail.py kuairand:PATH/TO/kuairand-pure 2022-05-01 0.2
"""
import dataclasses
import json
import sys
import time

import numpy as np

from reelrank.eval import harness
from reelrank.eval.neural import NeuralRecommender, drop_shared
from reelrank.eval.protocols import load_dataset, temporal_split
from reelrank.pipeline.neural import log_popularity
from reelrank.train.batch import TrainConfig
from reelrank.train.retrieval import POPULARITY_WEIGHTS

spec, cutoff, tail = sys.argv[1], sys.argv[2], float(sys.argv[3])
t0 = time.time()
cfg = TrainConfig()
cfg.retrieval = dataclasses.replace(cfg.retrieval, validation_tail=tail)
cfg.ranker = dataclasses.replace(cfg.ranker, epochs=1)
split = temporal_split(load_dataset(spec), cutoff, None, None, 0)
rec = NeuralRecommender(config=cfg, view="retrieval")
harness.fit(rec, split)
tm = rec.settings["train_metrics"]
print(json.dumps({"tail": tail, "fit_s": round(time.time() - t0),
                  "chosen": tm["retrieval_popularity"]["weight"],
                  "tried": tm["retrieval_popularity"]["tried"]}), flush=True)
m = rec.engine.models.current
m.bundle.value_weights["popularity"] = 0.0
users = split.retrieval_users
logits = np.concatenate([rec.score_users(users[s:s + 1000]) for s in range(0, len(users), 1000)])
logits = np.where(np.isfinite(logits), logits, -1e9)
prior = log_popularity(rec.engine.live, [str(i) for i in rec.item_ids])  # the split's order
seen, targets = [split.train_seen[u] for u in users], split.retrieval_targets
for w in sorted(set(POPULARITY_WEIGHTS) | {1.5, 3.0}):
    got = {50: [], 100: []}
    for r in range(len(users)):
        s = logits[r] + w * prior
        s[seen[r]] = -np.inf
        top = np.argpartition(-s, 100)[:100]
        top = top[np.argsort(-s[top])]
        for k in got:
            got[k].append(len(np.intersect1d(top[:k], targets[r])) / len(targets[r]))
    print(json.dumps({"weight": w, "test_R@50": round(float(np.mean(got[50])), 4),
                      "test_R@100": round(float(np.mean(got[100])), 4)}), flush=True)
print(json.dumps({"seconds": round(time.time() - t0)}))
drop_shared()
