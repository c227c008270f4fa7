"""Learned topics (reelrank.learned_topics): agreement with known labels and stability across
retrains.

    python benchmarks/bench_topics.py synthetic   # hidden topics of the synthetic world
    python benchmarks/bench_topics.py kuairand --dataset ../shared/datasets/kuairand-pure

Each trains the retrieval model as ``reelrank train`` does (``train_from_store``, which learns
and stores the topics with the version; the ranker is not trained, topics do not read it),
twice with different seeds on the same data: the second run is a retrain, matched to the first
version in the registry. Figures:

- **NMI** of the first run's topics against the reference labelling (synthetic: the world's
  hidden topic, with hashtags and the ``topic`` attribute removed from the catalog and the
  hashtags removed from the captions; KuaiRand: the video's first tag id, its primary
  category), beside spherical k-means with the same k on random vectors and (KuaiRand) on
  the videos' tag one-hots;
- **stability**: the share of videos whose topic id is the same after the retrain, as
  matched by the system (``unchanged_share``), and, for comparison, when the second run's
  k-means starts cold (no warm start from the first version) and is matched only.

Writes benchmarks/results/topics-<world>.md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from reelrank.importers import import_into  # noqa: E402
from reelrank.clustering import kmeans, nmi, unit  # noqa: E402
from reelrank.learned_topics import TopicConfig, TopicModel, fit_topics  # noqa: E402
from reelrank.models.bundle import ModelBundle  # noqa: E402
from reelrank.registry import ModelRegistry  # noqa: E402
from reelrank.store import open_store  # noqa: E402
from reelrank.train.batch import TrainConfig, train_from_store  # noqa: E402
from reelrank.train.ranker import RankerConfig  # noqa: E402
from reelrank.train.retrieval import RetrievalConfig  # noqa: E402
from reelrank.train.topics import item_vectors  # noqa: E402


def strip_tags(items):
    """The catalog as an app that sends no hashtags and no topic would post it."""
    out = []
    for it in items:
        caption = re.sub(r"\s*#\S+", "", it.caption or "").strip()
        attrs = {k: v for k, v in (it.attributes or {}).items() if k not in ("topic", "topic2")}
        out.append(dataclasses.replace(it, hashtags=(), caption=caption, attributes=attrs))
    return out


def train(store, registry, seed: int, args, topics: TopicConfig | None):
    cfg = TrainConfig(
        retrieval=RetrievalConfig(epochs=args.epochs, validation_users=0,
                                  time_budget_s=args.budget_s, seed=seed),
        ranker=RankerConfig(epochs=0), holdout=0.0, seed=seed, topics=topics)
    started = time.perf_counter()
    result = train_from_store(store, registry, cfg, progress=False)
    m = result.metrics
    return result.version, {"seconds": round(time.perf_counter() - started, 1),
                            "retrieval_epochs": m.get("retrieval_epochs"),
                            "stopped": m.get("retrieval_stopped")}


def labels_of(registry, version, items):
    art = registry.load(version)
    model = TopicModel.from_meta(art.meta["topics"])
    retrieval = ModelBundle.from_state(art.state).retrieval
    vectors = item_vectors(retrieval, items)
    return model, model.labels(vectors, {it.item_id: r for r, it in enumerate(items)}), vectors


def baseline(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    x = unit(x)
    return np.argmax(x @ kmeans(x, k, seed, 25, nredo=3).T, axis=1)


def run(args) -> dict:
    if args.world == "synthetic":
        from reelrank.eval.simulator import build_world, generate_history

        world = build_world(n_users=args.users, n_items=args.items, n_topics=args.topics,
                            seed=args.seed)
        events = list(generate_history(world, n_sessions_per_user=args.sessions,
                                       swipes_per_session=args.swipes, seed=args.seed))
        items = strip_tags(world.items)
        reference = [world.topic_of(it.item_id) for it in world.items]
        tag_onehot = None
    else:
        from reelrank.eval.protocols import load_dataset

        ds = load_dataset(f"kuairand:{args.dataset}")
        items, events = ds.items, ds.events
        reference = [it.hashtags[0] if it.hashtags else "(none)" for it in items]
        vocab = {t: j for j, t in enumerate(sorted({t for it in items for t in it.hashtags}))}
        tag_onehot = np.zeros((len(items), len(vocab)), np.float32)
        for r, it in enumerate(items):
            for t in it.hashtags:
                tag_onehot[r, vocab[t]] = 1.0
        tag_onehot[tag_onehot.sum(1) == 0] = 1.0 / np.sqrt(len(vocab))  # untagged: one blob
    out: dict = {"world": args.world, "items": len(items), "events": len(events),
                 "reference_labels": len(set(reference))}
    topics_cfg = TopicConfig(min_topics=args.min_topics, max_topics=args.max_topics)
    with tempfile.TemporaryDirectory(prefix="reelrank-topics-") as tmp:
        store = open_store(Path(tmp) / "data")
        import_into(store, items, events, progress=False)
        registry = ModelRegistry(Path(tmp) / "models")
        v1, s1 = train(store, registry, args.seeds[0], args, topics_cfg)
        v2 = s2 = None
        if not args.single:
            v2, s2 = train(store, registry, args.seeds[1], args, topics_cfg)  # a retrain
        store.close()
        m1, l1, x1 = labels_of(registry, v1, items)
        m2, l2, x2 = labels_of(registry, v2 or v1, items)
        meta2 = registry.meta(v2)["topics"] if v2 else None
    k = len(m1)
    ref = np.array(reference)
    rng = np.random.default_rng(args.seed)
    out["train"] = [s1, s2] if s2 else [s1]
    if args.save_vectors:
        np.savez_compressed(args.save_vectors, x1=x1, x2=x2, l1=l1, l2=l2, ref=ref)
    out["k"] = [k, len(m2)] if v2 else [k]
    out["silhouette"] = {str(kk): round(v, 4) for kk, v in m1.silhouette.items()}
    out["nmi"] = {
        "learned": round(nmi(ref, l1), 4),
        **({"learned_retrain": round(nmi(ref, l2), 4)} if v2 else {}),
        "kmeans_random_vectors": round(nmi(ref, baseline(
            rng.normal(size=x1.shape).astype(np.float32), k, args.seed)), 4),
    }
    if tag_onehot is not None:
        out["nmi"]["kmeans_tag_onehots"] = round(nmi(ref, baseline(tag_onehot, k, args.seed)), 4)
    if v2 is None:  # --single: one training run, no stability figure
        out["stability"] = None
        out["names"] = {str(t.id): t.name for t in sorted(m1.topics, key=lambda t: -t.size)[:12]}
        out["sizes"] = {str(t.id): t.size for t in sorted(m1.topics, key=lambda t: -t.size)[:12]}
        return out
    out["stability"] = {"unchanged_share": meta2.get("unchanged_share"),
                        "check_unchanged_share": round(float(np.mean(l1 == l2)), 4),
                        "changes": meta2.get("changes")}
    # The same second run's vectors clustered cold and matched only (no warm start).
    cold = TopicConfig(min_topics=args.min_topics, max_topics=args.max_topics,
                       seed=args.seeds[1], warm_start=False, keep_margin=0.0)
    _, matched = fit_topics(x2, items, cold, previous=m1, previous_labels=l1)
    out["stability"]["cold_kmeans_matched_share"] = round(float(np.mean(matched == l1)), 4)
    # The system's own fit of the retrain's vectors without the keep margin: what the margin adds.
    no_margin = TopicConfig(min_topics=args.min_topics, max_topics=args.max_topics,
                            keep_margin=0.0)
    _, nearest = fit_topics(x2, items, no_margin, previous=m1, previous_labels=l1)
    out["stability"]["no_keep_margin_share"] = round(float(np.mean(nearest == l1)), 4)
    out["stability"]["kept_by_margin"] = len(m2.kept)
    out["nmi"]["learned_retrain_no_keep_margin"] = round(nmi(ref, nearest), 4)
    out["names"] = {str(t.id): t.name for t in sorted(m1.topics, key=lambda t: -t.size)[:12]}
    out["sizes"] = {str(t.id): t.size for t in sorted(m1.topics, key=lambda t: -t.size)[:12]}
    return out


def run_coldstart(args) -> dict:
    """``reelrank.eval.coldstart`` twice on the same world and seed: the served engine as it
    is, then with viewer communities (``reelrank.communities``, computed from the background
    viewers' live state when the engine is set up) and their cold-start source added to the
    personalized feed. Only the arms named in ``--arms`` run (default: the served engine with
    online updates, ``reelrank``)."""
    import torch

    from reelrank import communities as comm
    from reelrank.engine import Engine
    from reelrank.eval.coldstart import ColdStartConfig, run_coldstart as run
    from reelrank.pipeline import topics as learned_topics

    torch.set_num_threads(1)
    cfg = ColdStartConfig(items=args.items, new_viewers=args.viewers, swipes=args.cold_swipes,
                          seed=args.seed)
    arms = tuple(args.arms.split(","))
    out: dict = {"world": "coldstart", "arms": list(arms)}
    out["off"] = run(cfg, arms=arms)
    original = Engine.for_offline
    made: list = []

    def with_communities(self):
        engine = original(self)
        topics = learned_topics.install(engine)
        groups = comm.install(engine, topics, comm.CommunityConfig(refresh_s=float("inf")),
                              source=True)
        groups.refresh()  # from the background viewers, before the first new one arrives
        made.append(groups.figures())
        return engine

    Engine.for_offline = with_communities
    try:
        out["on"] = run(cfg, arms=arms)
    finally:
        Engine.for_offline = original
    out["communities"] = made
    out["swipes_to_80_top_topics"] = {
        side: {arm: out[side]["arms"][arm]["top_topics"]["swipes_to_80"] for arm in arms}
        for side in ("off", "on")}
    out["final_top_topics"] = {
        side: {arm: out[side]["arms"][arm]["top_topics"]["final"] for arm in arms}
        for side in ("off", "on")}
    return out


def markdown(r: dict) -> str:
    """The result as the page committed beside its JSON."""
    cold = "off" in r and "on" in r
    title = "Viewer communities: cold start" if cold else f"Learned topics: {r['world']}"
    lines = [f"# {title}", "", f"Command: `{r['command']}`", "",
             f"Machine: {r.get('cpus')} CPUs, shared with other work (wall time "
             f"{r.get('wall_s')} s).", ""]
    if cold:
        lines += ["New viewers on the synthetic world (`reelrank.eval.coldstart`), the served "
                  "engine with online updates, run twice on the same world and seed: as served, "
                  "and with viewer communities and their cold-start source added "
                  "(`reelrank.communities`).", "",
                  "| arm | communities | top-2 topics: swipes to 80% of final | final | "
                  "to 80% of gain | watch ratio final | like rate final | hidden fit final |",
                  "|---|---|---|---|---|---|---|---|"]
        for side in ("off", "on"):
            for arm, e in r[side]["arms"].items():
                t = e["top_topics"]
                lines.append(f"| {arm} | {side} | {t['swipes_to_80']} | {t['final']:.3f} | "
                             f"{t['swipes_to_80_of_gain']} | {e['watch_ratio']['final']:.3f} | "
                             f"{e['like']['final']:.3f} | {e['affinity']['final']:.3f} |")
        lines += ["", "Share of swipes by source: " + "; ".join(
            f"{side}: {r[side]['arms'][arm].get('sources')}" for side in ("off", "on")
            for arm in r[side]["arms"]), "",
            "Communities at the start of the `on` run (from the background viewers' live "
            f"state): {r['communities']}"]
        return "\n".join(lines) + "\n"
    train = r.get("train") or r.get("train_seconds")
    lines += [f"{r['items']:,} videos, {r['events']:,} events; reference labels: "
              f"{r['reference_labels']} ({'hidden topics of the world; hashtags and the topic attribute removed from the catalog, hashtags from the captions' if r['world'] == 'synthetic' else 'first tag id of each video'}).",
              "", f"Training runs (seed 0; with a second, seed 1, as a retrain of it): {train}.", "",
              f"Topics chosen: {r['k']}; mean silhouette by k tried: "
              f"{r['silhouette']}.", "",
              "| labelling | NMI against the reference |", "|---|---|"]
    text = {"learned": "learned topics, first run", "learned_retrain": "learned topics, retrain",
            "kmeans_random_vectors": "k-means (same k) on random vectors",
            "kmeans_tag_onehots": "k-means (same k) on the videos' tag one-hots",
            "learned_retrain_no_keep_margin": "learned topics, retrain, without the keep margin"}
    for k, v in r["nmi"].items():
        lines.append(f"| {text.get(k, k)} | {v} |")
    st = r["stability"]
    if st is None:
        lines += ["", "One training run (`--single`): no stability figure.", "",
                  "Largest topics and their names:", ""]
        for tid, name in r["names"].items():
            lines.append(f"- {tid}: {name} ({r['sizes'][tid]} videos)")
        return "\n".join(lines) + "\n"
    changes = {k: (len(v) if isinstance(v, list) else v) for k, v in (st.get("changes") or {}).items()}
    lines += ["", "Stability, retrain against first run (share of videos whose topic id is "
              "unchanged after matching):", "",
              f"- as the system does it (k-means started from the first run's topics, matched): "
              f"**{st['unchanged_share']}** ({st.get('kept_by_margin', '?')} videos kept their "
              "topic by the keep margin)",
              f"- the same without the keep margin (nearest centroid): "
              f"{st.get('no_keep_margin_share', '-')}",
              f"- k-means started cold (k-means++), matched only: {st['cold_kmeans_matched_share']}",
              f"- changes recorded: {changes}", "",
              "Largest topics of the first run and their names:", ""]
    for tid, name in r["names"].items():
        lines.append(f"- {tid}: {name} ({r['sizes'][tid]} videos)")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("world", choices=("synthetic", "kuairand", "coldstart"))
    ap.add_argument("--viewers", type=int, default=200, help="coldstart: new viewers")
    ap.add_argument("--cold-swipes", type=int, default=40, help="coldstart: swipes each")
    ap.add_argument("--arms", default="reelrank", help="coldstart: eval.coldstart arms")
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/datasets/kuairand-pure")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--topics", type=int, default=24, help="synthetic world's hidden topics")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--swipes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seeds", type=int, nargs=2, default=(0, 1), help="the two training seeds")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=7200.0,
                    help="retrieval training time budget: large, so both runs train the same "
                         "epochs whatever the machine's load")
    ap.add_argument("--min-topics", type=int, default=TopicConfig.min_topics)
    ap.add_argument("--max-topics", type=int, default=TopicConfig.max_topics)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--single", action="store_true",
                    help="one training run only: agreement figures, no stability")
    ap.add_argument("--save-vectors", type=Path, default=None,
                    help="write both runs' item vectors and labels here (.npz)")
    args = ap.parse_args()
    started = time.perf_counter()
    if args.world == "coldstart":
        args.items = args.items if args.items != 3000 else 5000  # eval.coldstart's world
        report = run_coldstart(args)
    else:
        report = run(args)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["command"] = "python benchmarks/bench_topics.py " + " ".join(sys.argv[1:])
    report["cpus"] = os.cpu_count()
    out = args.out or ROOT / "benchmarks" / "results" / f"topics-{args.world}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    out.with_suffix(".md").write_text(markdown(report))
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
