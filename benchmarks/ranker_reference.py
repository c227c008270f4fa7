"""Reference models for the ranker on KuaiRand (benchmarks/results/kuairand-ranker-options.md):
a logistic regression and gradient-boosted trees (scikit-learn) on exactly the ranker's dense
counters (``features.DENSE_FEATURES``, computed as training computes them: each impression's
counters before it is applied) plus a one-hot of the traffic source, trained on the training
days' impressions and asked for the test days' impressions from the state frozen at the
cut-off, without and with each impression's logged source. Their GAUC says what the counters
and the context alone are worth, beside the ranker's heads.

    python benchmarks/ranker_reference.py PATH/TO/kuairand-pure
"""
import json
import sys

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from reelrank import metrics
from reelrank.eval.protocols import load_dataset, temporal_split
from reelrank.features import dense_features, ranking_rows
from reelrank.store import new_catalog, new_live_state

split = temporal_split(load_dataset("kuairand:" + sys.argv[1]), "2022-05-01", None, None, 0)
catalog = new_catalog()
catalog.upsert(list(split.dataset.items))
live = new_live_state(catalog)
rows = [r for r in ranking_rows(split.train_events, live, history_len=30) if r.dense is not None]
sources = sorted({r.example.source for r in rows} - {None})


def onehot(source) -> list[float]:
    return [1.0 if source == s else 0.0 for s in sources]


X = np.array([r.dense + onehot(r.example.source) for r in rows], dtype=np.float32)
test = split.test
no_ctx, ctx = [], []
for k in range(len(test)):
    user_id = str(split.train.user_ids[test.user[k]])
    item_id = str(split.train.item_ids[test.item[k]])
    d = dense_features(live.user(user_id), catalog.get(item_id), live.item_stats(item_id),
                       split.cutoff_ms)
    no_ctx.append(d + [0.0] * len(sources))
    ctx.append(d + onehot(test.context[k][2]))
tests = {"no context": np.array(no_ctx, np.float32), "logged context": np.array(ctx, np.float32)}
scale = StandardScaler().fit(X)
out = {"train_rows": len(X), "test_rows": len(test), "sources": sources}
for task in ("long_view", "like"):
    y = np.array([r.example.label(task) for r in rows])
    for name, model in (("logistic regression", LogisticRegression(max_iter=500)),
                        ("boosted trees", HistGradientBoostingClassifier(
                            max_iter=200, learning_rate=0.05, random_state=0))):
        model.fit(scale.transform(X), y)
        for how, Xt in tests.items():
            p = model.predict_proba(scale.transform(Xt))[:, 1]
            out[f"{task} | {name} | {how}"] = round(metrics.gauc(test.user, test.labels[task], p), 4)
print(json.dumps(out, indent=1))
