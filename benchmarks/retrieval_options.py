"""The retrieval model's training options (benchmarks/results/retrieval-options.md): trains with
the server's default training (no ranker: it is not measured here) and the given RetrievalConfig
overrides, without its time budget (so that a busy machine changes the wall time, not the model;
early stopping on the held-out last positives still decides the epochs), then reports what
``reelrank eval``'s ``reelrank`` row reports for the retrieval model alone: on a next-item file
HR@10 / NDCG@10, leave-one-out with full ranking; on KuaiRand (cut-off 2022-05-01) Recall@50/100
of the test days' long views over the catalog minus what the viewer was shown. One JSON line per
run.

    python benchmarks/retrieval_options.py beauty:PATH/TO/beauty.txt '{"dropout": 0.5}'
    python benchmarks/retrieval_options.py kuairand:PATH/TO/kuairand-pure '{"dropout": 0.5}'

A third and fourth argument set KuaiRand's cut-off and test days (a validation split that holds
no test day: ``... '{}' 2022-04-29 2``).
"""
import dataclasses
import json
import sys
import time

from reelrank.eval import harness
from reelrank.eval.neural import NeuralRecommender
from reelrank.eval.protocols import leave_one_out_split, load_dataset, temporal_split
from reelrank.train.batch import TrainConfig

spec = sys.argv[1]
over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
cfg = TrainConfig(topics=None)
cfg.ranker = dataclasses.replace(cfg.ranker, epochs=0)  # retrieval alone is measured
cfg.retrieval = dataclasses.replace(cfg.retrieval, time_budget_s=None, **over)
t = time.time()
ds = load_dataset(spec)
cutoff = sys.argv[3] if len(sys.argv) > 3 else "2022-05-01"
test_days = int(sys.argv[4]) if len(sys.argv) > 4 else None
split = (temporal_split(ds, cutoff, test_days, None, 0) if spec.startswith("kuairand:")
         else leave_one_out_split(ds, None, 0))
result = harness.evaluate("reelrank", lambda: NeuralRecommender(cfg, view="retrieval"), split,
                          seed=0).as_dict()
tm = result["settings"]["train_metrics"]
print(json.dumps({
    "over": over, "split": (cutoff, test_days) if spec.startswith("kuairand:") else "loo",
    **{k: round(v, 4) if isinstance(v, float) else v
                     for k, v in (result["metrics"].get("next_item")
                                  or result["metrics"].get("retrieval") or {}).items()},
    "train_seconds": result["fit_seconds"], "epochs": tm.get("retrieval_epochs"),
    "best_epoch": tm.get("retrieval_best_epoch"), "holdout": tm.get("retrieval_holdout"),
    "popularity_weight": (tm.get("retrieval_popularity") or {}).get("weight"),
    "wall_seconds": round(time.time() - t),
}), flush=True)
