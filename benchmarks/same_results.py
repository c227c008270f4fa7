"""Do two revisions give the same results? A small deterministic run through what serves feeds,
printed as one digest per part, to compare across a refactoring that must change no figure.

1. the fairness audit of a seeded synthetic world (``off``, ``default`` and ``strong``): the
   engine, the pipeline, live state and its top lists, the exposure ledger, the simulator;
2. small models trained on another seeded world, then pages served with them offline and one
   explanation: training, the registry, the neural scorer and retrieval source, the traces.

Run it on each revision's package, with the same interpreter::

    git archive REV reelrank | tar -x -C /tmp/rev
    PYTHONPATH=/tmp/rev python benchmarks/same_results.py

Timings are left out; everything else is hashed (``--full`` prints the figures themselves).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import tempfile
from pathlib import Path

import torch


def audit() -> dict:
    try:
        module = importlib.import_module("reelrank.eval.audit")
    except ModuleNotFoundError:  # before audit.py moved into eval/
        module = importlib.import_module("reelrank.audit")
    out = {}
    for name in ("off", "default", "strong"):
        setting = module.settings_named(name)[0]
        r = module.audit_simulation(setting, users=60, items=600, days=2, swipes=15, seed=7)
        out[name] = {k: v for k, v in r.items() if "second" not in k}
    return out


def trained() -> dict:
    from reelrank.engine import Engine
    from reelrank.eval.simulator import build_world, generate_history
    from reelrank.importers import import_into
    from reelrank.pipeline.context import FeedRequest
    from reelrank.registry import ModelRegistry
    from reelrank.store import open_store
    try:
        from reelrank.train.batch import TrainConfig, train_from_store
    except ImportError:  # trees before train/job.py was renamed
        from reelrank.train.job import TrainConfig, train_from_store  # type: ignore[no-redef]
    from reelrank.train.ranker import RankerConfig
    from reelrank.train.retrieval import RetrievalConfig

    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(n_users=80, n_items=500, n_creators=30, seed=3)
        store = open_store(Path(tmp) / "data")
        import_into(store, world.items, generate_history(world, 2, 12, seed=3), progress=False)
        registry = ModelRegistry(Path(tmp) / "models")
        cfg = TrainConfig(
            retrieval=RetrievalConfig(epochs=2, dim=32),
            ranker=RankerConfig(epochs=1, dim=16, expert_dim=32),
        )
        result = train_from_store(store, registry, cfg, progress=False)
        metrics = {k: v for k, v in result.metrics.items() if "second" not in k}
        engine = Engine(store, registry=registry, index_kind="exact").load().for_offline()
        pages = {}
        for k in range(0, 80, 4):
            r = engine.feed(FeedRequest(f"u{k}", n=8))
            pages[f"u{k}"] = [(i.item_id, round(i.score, 5), i.source) for i in r.items]
        explained = engine.explain("u0", pages["u0"][0][0])
        store.close()
    return {"metrics": metrics, "pages": pages, "explain_score": explained.get("score")}


def main() -> None:
    torch.set_num_threads(1)
    parts = {"audit": audit(), "trained": trained()}
    if "--full" in sys.argv:
        print(json.dumps(parts, sort_keys=True, default=str, indent=1))
        return
    for name, value in parts.items():
        text = json.dumps(value, sort_keys=True, default=str)
        print(name, hashlib.sha256(text.encode()).hexdigest()[:16])


if __name__ == "__main__":
    main()
