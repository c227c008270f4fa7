"""The ranker's training options on KuaiRand (benchmarks/results/kuairand-ranker-options.md):
trains with the server's default training, but one retrieval epoch (the ranker does not read
the retrieval model) and the given RankerConfig overrides, then reports the GAUC of the
long-view and like heads of ``engine.rank`` (what ``POST /v1/rank`` answers, state frozen at
the cut-off) on the test days' impressions, without a request context and with each
impression's logged one.

    python benchmarks/ranker_options.py KUAIRAND_DIR '{"context_dropout": 0.2}'
    python benchmarks/ranker_options.py KUAIRAND_DIR '{}' 2022-04-29 2   # a validation split
"""
import dataclasses
import json
import sys
import time

from reelrank.eval import harness
from reelrank.eval.neural import NeuralRecommender, drop_shared
from reelrank.eval.protocols import load_dataset, temporal_split
from reelrank.train.batch import TrainConfig

folder = sys.argv[1]
over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
cfg = TrainConfig()
cfg.retrieval = dataclasses.replace(cfg.retrieval, epochs=1, validation_users=0)
cfg.ranker = dataclasses.replace(cfg.ranker, **over)
t = time.time()
cutoff = sys.argv[3] if len(sys.argv) > 3 else "2022-05-01"
days = int(sys.argv[4]) if len(sys.argv) > 4 else None
split = temporal_split(load_dataset(f"kuairand:{folder}"), cutoff, days, None, 0)
rec = NeuralRecommender(config=cfg, view="retrieval")
harness.fit(rec, split)
tm = rec.settings["train_metrics"]
scores, probs = harness._pair_outputs(rec, split.test.user, split.test.item, 256, False, "rank")
m = harness.impression_metrics(split, scores, probs)
# The same impressions with each one's logged context (its traffic source) in the rank request.
scores, probs = harness._pair_outputs(rec, split.test.user, split.test.item, 256, False, "rank",
                                      split.test.context)
mc = harness.impression_metrics(split, scores, probs)
print(json.dumps({
    "over": over, "epochs": tm.get("ranker_epochs"),
    "holdout_gauc": {k: v.get("gauc") for k, v in tm.get("ranker_holdout", {}).items()},
    "test_head": {t: m[t].get("head") for t in ("long_view", "like")},
    "test_head_context": {t: mc[t].get("head") for t in ("long_view", "like")},
    "logloss_long_view": m["long_view"]["logloss"], "seconds": round(time.time() - t)}))
drop_shared()
