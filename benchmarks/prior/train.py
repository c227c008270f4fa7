"""Step 1 of the popularity-prior study on KuaiRand (benchmarks/results/kuairand-prior.md).

Trains ReelRank once on the evaluation's KuaiRand split with the server's default training
(the same path as ``reelrank eval``'s ``reelrank`` model) and saves, for every test viewer of the
retrieval protocol, the retrieval model's raw logits over the catalog (no prior), with the
split's targets, seen items and training events, so step 2 can try priors without training again.

    python benchmarks/prior/train.py KUAIRAND_DIR OUT_PREFIX
"""
import pickle
import sys
import time

import numpy as np

from reelrank.eval import harness
from reelrank.eval.neural import NeuralRecommender
from reelrank.eval.protocols import load_dataset, temporal_split

folder, prefix = sys.argv[1], sys.argv[2]
t = time.time()
ds = load_dataset(f"kuairand:{folder}")
split = temporal_split(ds, "2022-05-01", None, None, 0)
rec = NeuralRecommender(view="retrieval")
harness.fit(rec, split)
print("fit", round(time.time() - t), rec.settings.get("train_metrics", {}).get(
    "retrieval_popularity"), flush=True)
users = split.retrieval_users
m = rec.engine.models.current
prior = m.bundle.value_weights.get("popularity", 0.0)
m.bundle.value_weights["popularity"] = 0.0  # raw logits; step 2 adds the priors
out = np.concatenate([rec.score_users(users[s:s + 1000])
                      for s in range(0, len(users), 1000)]).astype(np.float32)
np.save(prefix + "_logits.npy", out)
with open(prefix + "_split.pkl", "wb") as f:
    pickle.dump(dict(users=users, targets=split.retrieval_targets,
                     seen=[split.train_seen[u] for u in users],
                     item_ids=split.train.item_ids, user_ids=split.train.user_ids,
                     train_events=[(e.user_id, e.item_id, e.type, e.ts, e.watch_ms)
                                   for e in split.train_events],
                     cutoff=split.cutoff_ms, prior=prior), f)
print("done", round(time.time() - t), flush=True)
