"""Would an ensemble of retrieval models pay for itself? (benchmarks/results/retrieval-options.md)

Trains the retrieval model twice with the server's default training (seeds 0 and 1, no ranker,
no time budget, as ``retrieval_options.py`` does), then reports, on the same KuaiRand split,
Recall@50/100/200 of each model alone and of the sum of their served scores (logit plus the
version's priors). The sum is what serving two towers side by side would give: concatenated
user and item vectors score the sum of the two inner products, so one index could serve it.

    python benchmarks/retrieval_ensemble.py kuairand:PATH/TO/kuairand-pure 2022-04-29 2

The second and third arguments are the cut-off and the number of test days (a validation split
that holds no test day, as above). One JSON line per arm.
"""
import dataclasses
import json
import sys
import time

from reelrank.eval import harness, neural
from reelrank.eval.neural import NeuralRecommender
from reelrank.eval.protocols import load_dataset, temporal_split
from reelrank.train.batch import TrainConfig

SEEDS = (0, 1)


def config(seed: int) -> TrainConfig:
    cfg = TrainConfig(topics=None, seed=seed)
    cfg.ranker = dataclasses.replace(cfg.ranker, epochs=0)  # retrieval alone is measured
    cfg.retrieval = dataclasses.replace(cfg.retrieval, time_budget_s=None)
    return cfg


class Ensemble(NeuralRecommender):
    """Each seed's model trained once (the first fit), then scored as ``arm`` says: "sum" or
    the index of one seed."""

    name = "ensemble"

    def __init__(self) -> None:
        super().__init__(config(SEEDS[0]), view="retrieval")
        self.parts: list[NeuralRecommender] = []
        self.runs: list = []  # the training runs, kept from ``neural``'s one shared slot
        self.arm = "sum"

    def close(self) -> None:  # the parts are scored again for the next arm
        pass

    def fit_events(self, train, items, events) -> None:
        if self.parts:
            return
        for seed in SEEDS:
            part = NeuralRecommender(config(seed), view="retrieval")
            part.ranking_page = self.ranking_page
            part.fit_events(train, items, events)
            self.runs.append(neural._shared.pop("run"))
            self.parts.append(part)
        self.user_ids, self.item_ids = train.user_ids, train.item_ids
        self.item_of, self.engine = self.parts[0].item_of, self.parts[0].engine

    def score_users(self, users):
        if self.arm == "sum":
            return sum(part.score_users(users) for part in self.parts)
        return self.parts[int(self.arm)].score_users(users)


def main() -> None:
    spec, cutoff, days = sys.argv[1], sys.argv[2], int(sys.argv[3])
    started = time.time()
    split = temporal_split(load_dataset(spec), cutoff, days, None, 0)
    model = Ensemble()
    try:
        for arm in ("sum", *map(str, range(len(SEEDS)))):
            model.arm = arm
            result = harness.evaluate("ensemble", lambda: model, split, seed=0).as_dict()
            metrics = result["metrics"].get("retrieval") or {}
            print(json.dumps({"arm": "sum of seeds" if arm == "sum" else f"seed {SEEDS[int(arm)]}",
                              "split": (cutoff, days),
                              **{k: round(v, 4) if isinstance(v, float) else v
                                 for k, v in metrics.items()},
                              "wall_seconds": round(time.time() - started)}), flush=True)
    finally:
        for run in model.runs:
            run.cleanup()


if __name__ == "__main__":
    main()
