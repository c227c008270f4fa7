"""Would a trending prior help? (benchmarks/results/trending-prior.md, first table.)

Trains the engine as the server does (the default training, seed 0) on KuaiRand's days before
the cut-off, then at the start of each test day ranks the whole catalog for 2,000 seeded
viewers with a new long view that day by the retrieval logit plus

    a x log(1 + long views and likes so far) + b x log(1 + trending count) + c x co-engagement

(the co-engagement weight c as the version chose it for pages of 50) for a grid of a and b,
scores Recall@50 of the day's long views not shown before, and lets the day's events into the
live state, as ``benchmarks/served_days.py`` does. This is an exploration on the test days,
made to decide whether to build the prior; the weights the engine serves are chosen by
training on its own held-out viewers (``reelrank/train/validation.py``), never on these.

    python benchmarks/prior/trending.py PATH/TO/kuairand-pure
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from reelrank import metrics
from reelrank.eval.baselines import build_engine, scratch_dir
from reelrank.eval.protocols import day_name, load_dataset, local_day, temporal_split
from reelrank.eval.served_days import _shown_before, day_targets
from reelrank.models.retrieval import encode_histories
from reelrank.pipeline.neural import log_popularity, page_weight
from reelrank.registry import ModelRegistry
from reelrank.store.live import CO_ENGAGEMENT_CAP, CO_ENGAGEMENT_SEEDS
from reelrank.train.batch import TrainConfig, train_from_store

POPULARITY = (0, 0.25, 0.5, 1, 2)
TRENDING = (0, 0.25, 0.5, 1, 2)


def main(folder: str, cutoff: str = "2022-05-01", days: int = 4, per_day: int = 2000) -> None:
    split = temporal_split(load_dataset("kuairand:" + folder), cutoff, days, None, 0)
    index = split.index
    targets = day_targets(split)
    event_days = local_day(np.array([e.ts for e in split.test_events], dtype=np.int64),
                           split.dataset.tz_hours)
    rng = np.random.default_rng(0)
    recall: dict = {}
    with scratch_dir() as tmp:
        root = Path(tmp)
        engine = build_engine(split.dataset.items, split.train_events, root / "store", False)
        registry = ModelRegistry(root / "models")
        train_from_store(engine.store, registry, TrainConfig(seed=0))
        engine.registry = engine.models.registry = registry
        engine.models.refresh()
        m = engine.models.current
        co = page_weight(m.bundle.value_weights, 50, "co_engagement")
        cols = np.array([index.item_of.get(i, -1) for i in m.item_ids])
        for d, per_user in targets.items():
            users = np.sort(rng.choice(np.array(sorted(per_user)), per_day, replace=False))
            pop = log_popularity(engine.live, m.item_ids)
            trend = np.log1p(np.asarray(engine.live.trending_many(m.item_ids), dtype=np.float32))
            ids = [str(index.user_ids[u]) for u in users]
            states = [engine.live.user(u) for u in ids]
            h = encode_histories([list(s.tokens) if s else [] for s in states], m.item_index,
                                 m.bundle.retrieval.users.max_len)
            with torch.no_grad():
                vectors = m.bundle.retrieval.user_vectors(h, m.item_vectors)
                logits = (vectors @ m.item_vectors.T).numpy()
            for row, (u, uid, state) in enumerate(zip(users.tolist(), ids, states)):
                acc: dict = {}
                seeds = list(state.positives)[-CO_ENGAGEMENT_SEEDS:] if state else []
                for k, seed in enumerate(reversed(seeds)):
                    for other, count in engine.live.co_engaged(seed, CO_ENGAGEMENT_CAP):
                        acc[other] = acc.get(other, 0.0) + count / (1 + k)
                co_term = np.log1p(np.array([acc.get(i, 0.0) for i in m.item_ids], np.float32))
                bad = (cols < 0) | np.isin(cols, list(_shown_before(engine, uid, index)))
                for a in POPULARITY:
                    for b in TRENDING:
                        s = np.where(bad, -np.inf, logits[row] + a * pop + b * trend + co * co_term)
                        top = np.argpartition(-s, 50)[:50]
                        recall.setdefault(f"{a},{b}", []).append(metrics.recall_at_k(
                            [int(cols[c]) for c in top], per_user[u].tolist(), 50))
            print(day_name(d), flush=True)
            batch = [e for e, ed in zip(split.test_events, event_days) if ed == d]
            for k in range(0, len(batch), 20_000):
                engine.ingest_events(batch[k:k + 20_000])
        engine.store.close()
    print(json.dumps({"co_engagement@50": co, "recall@50": {
        k: round(float(np.mean(v)), 4) for k, v in recall.items()}}))


if __name__ == "__main__":
    main(*sys.argv[1:2])
