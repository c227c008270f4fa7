"""Learned topics: the number of topics, names, ids across versions, topics at upload."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reelrank.clustering import choose_k, nmi, silhouette
from reelrank.learned_topics import TopicConfig, TopicModel, ctfidf, fit_topics, item_terms
from reelrank.types import Item

CFG = TopicConfig(min_topics=2, max_topics=16, sample=1000)


def planted(k: int = 6, n: int = 600, dim: int = 16, noise: float = 0.25, seed: int = 0):
    """Vectors around ``k`` random directions, and items whose captions carry their cluster's
    words (plus filler and a generic tag every video has)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim))
    labels = np.arange(n) % k
    x = centers[labels] + noise * rng.normal(size=(n, dim))
    items = [Item(f"v{i}", f"c{i % 40}", 10_000, 0,
                  f"the w{labels[i]}a w{labels[i]}b #fyp filler{i % 7}", ("fyp", f"tag{labels[i]}"))
             for i in range(n)]
    return x.astype(np.float32), items, labels, centers


def rotate(x: np.ndarray, seed: int) -> np.ndarray:
    """The same geometry in another basis: what a retrain with another seed looks like."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(x.shape[1], x.shape[1])))
    return (x @ q).astype(np.float32)


def test_nmi_hand_computed():
    assert nmi([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    # a = [0,0,1,1], b = [0,0,0,1]: I = 0.5 ln 2 + 0.25 ln(1/3 * 4 / 2 * 2) ...
    p = np.array([[0.5, 0.0], [0.25, 0.25]])
    pa, pb = p.sum(1), p.sum(0)
    mi = sum(p[i, j] * math.log(p[i, j] / (pa[i] * pb[j])) for i in range(2) for j in range(2)
             if p[i, j] > 0)
    h = lambda q: -sum(v * math.log(v) for v in q if v > 0)  # noqa: E731
    assert nmi([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(mi / ((h(pa) + h(pb)) / 2))


def test_silhouette_of_two_tight_clusters():
    x = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.141, 0.99]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert silhouette(x, np.array([0, 0, 1, 1])) > 0.9
    assert silhouette(x, np.array([0, 1, 0, 1])) < 0


def test_number_of_topics_is_found_within_bounds():
    x, _, _, _ = planted(k=6)
    k, scores = choose_k(x / np.linalg.norm(x, axis=1, keepdims=True), CFG)
    assert k == 6 and set(scores) >= {2, 16}
    k, _ = choose_k(x, TopicConfig(min_topics=2, max_topics=4, sample=1000))
    assert k <= 4  # the configured bound holds even when the data has more


def test_ctfidf_ranks_a_topics_own_words_first():
    docs = [{"pasta", "dinner"}, {"pasta", "garlic"}, {"goal", "dinner"}, {"goal", "striker"}]
    terms, w = ctfidf(np.array([0, 0, 1, 1]), docs, 2)
    # "pasta" is all of topic 0's and none of topic 1's; "dinner" is in both, so ranks lower.
    assert w[0, terms.index("pasta")] > w[0, terms.index("dinner")] > 0
    assert w[1, terms.index("goal")] > w[1, terms.index("dinner")]
    assert w[0, terms.index("goal")] == 0


def test_names_come_from_members_words_not_generic_tags_or_filler():
    assert item_terms(Item("v", "c", 1, 0, "the Pasta #fyp 2024", ("#FYP", "Cooking"))) == {
        "pasta", "cooking"}
    x, items, labels, _ = planted(k=5)
    model, ids = fit_topics(x, items, CFG)
    assert len(model) == 5 and nmi(labels, ids) == pytest.approx(1.0)
    for t in model.topics:
        planted_label = labels[ids == t.id][0]
        words = t.name.split(" · ")
        assert 1 <= len(words) <= CFG.terms_per_name
        assert set(words) <= {f"w{planted_label}a", f"w{planted_label}b", f"tag{planted_label}"}
        assert t.size == int((ids == t.id).sum())
    assert len({t.name for t in model.topics}) == len(model)


def test_ids_and_names_persist_across_a_retrain():
    x, items, labels, _ = planted(k=6)
    first, ids1 = fit_topics(x, items, CFG)
    # Another model's vectors of the same videos: another basis, other noise, other seed.
    x2, _, _, _ = planted(k=6, seed=0, noise=0.3)
    second, ids2 = fit_topics(rotate(x2, 5), items, TopicConfig(**{**CFG.__dict__, "seed": 3}),
                              previous=first, previous_labels=ids1)
    assert np.mean(ids1 == ids2) > 0.98
    assert {t.id: t.name for t in second.topics} == {t.id: t.name for t in first.topics}
    assert sorted(second.changes["kept"]) == sorted(t.id for t in first.topics)
    assert not (second.changes["split"] or second.changes["merged"]
                or second.changes["appeared"] or second.changes["faded"])


def test_a_video_near_a_border_keeps_its_topic_across_a_retrain():
    x, items, _, _ = planted(k=4, n=400)
    first, ids1 = fit_topics(x, items, CFG)
    a, b = first.centroids[0], first.centroids[1]
    j = int(np.flatnonzero(ids1 == first.topics[0].id)[0])
    x2 = x.copy()
    # The retrain sees video j just across the border: a little nearer b than a (cosine
    # gap about 0.015, within the default margin).
    x2[j] = (0.497 * a + 0.503 * b) * np.linalg.norm(x[j]) / np.linalg.norm(0.497 * a + 0.503 * b)
    sticky, ids2 = fit_topics(x2, items, CFG, previous=first, previous_labels=ids1)
    plain, ids3 = fit_topics(x2, items, TopicConfig(**{**CFG.__dict__, "keep_margin": 0.0}),
                             previous=first, previous_labels=ids1)
    assert ids3[j] == first.topics[1].id != ids1[j]  # nearest centroid: it moves
    assert ids2[j] == ids1[j]  # within the margin: it stays
    assert sticky.kept == {items[j].item_id: int(ids1[j])} and plain.kept == {}
    assert np.array_equal(np.delete(ids2, j), np.delete(ids3, j))
    # What serving and the next retrain read: the centroids, then the kept videos.
    again = TopicModel.from_meta(sticky.to_meta())
    assert np.array_equal(again.labels(x2, {it.item_id: r for r, it in enumerate(items)}), ids2)
    assert again.assign(x2)[j] == first.topics[1].id


def test_split_merge_appear_and_fade_are_recorded():
    x, items, labels, _ = planted(k=6, n=720)
    # The previous version saw topics 0 and 1 as one (id 10), topic 2 as two halves (20, 21),
    # topic 3 as id 30; topic 4's videos are new, topic 5's previous id 50 has no video left.
    prev_labels = np.select(
        [labels <= 1, (labels == 2) & ((np.arange(720) // 6) % 2 == 0), labels == 2, labels == 3],
        [10, 20, 21, 30], -1)
    keep = labels != 5
    previous = TopicModel.from_meta({
        "next_id": 51, "centroids": np.eye(6, 16).tolist(),
        "topics": [{"id": i, "name": f"old {i}", "terms": [f"old{i}"], "size": 10}
                   for i in (10, 20, 21, 30, 40, 50)]})
    model, ids = fit_topics(x[keep], [it for it, k in zip(items, keep) if k], CFG,
                            previous=previous, previous_labels=prev_labels[keep])
    ch = model.changes
    assert len(model) == 5
    assert [s["from"] for s in ch["split"]] == [10]  # 0 and 1 are now apart
    assert len(ch["split"][0]["into"]) == 2 and 10 in ch["split"][0]["into"]
    assert [sorted(m["from"]) for m in ch["merged"]] == [[20, 21]]
    assert ch["faded"] == [40, 50]  # 40 had no member; 50's videos are gone
    # topic 4's videos were new: a new id, above every id used before
    new_ids = set(ids[labels[keep] == 4])
    assert len(new_ids) == 1 and new_ids.pop() in ch["appeared"]
    assert min(ch["appeared"]) >= 51
    # 30 keeps its id; its old name's words are not among its members' any more: renamed
    assert set(ids[labels[keep] == 3]) == {30} and ch["kept"] == []
    assert {r["id"] for r in ch["renamed"]} == {10, 21, 30}
    assert model.get(30).name != "old 30"


def test_meta_round_trip_and_assignment():
    x, items, labels, _ = planted(k=4)
    model, ids = fit_topics(x, items, CFG)
    again = TopicModel.from_meta(model.to_meta())
    assert [t.name for t in again.topics] == [t.name for t in model.topics]
    assert np.array_equal(again.assign(x), ids)
    assert np.array_equal(again.assign(x * 7.0), ids)  # the norm does not matter
    assert again.assign(np.zeros((0, x.shape[1]))).shape == (0,)


def test_topic_at_upload_from_a_trained_item_tower(tmp_path, store):
    """A video nobody has watched gets the topic of the videos its content resembles."""
    from reelrank.eval.simulator import build_world, generate_history
    from reelrank.importers import import_into
    from reelrank.registry import ModelRegistry
    from reelrank.train.batch import TrainConfig, train_from_store
    from reelrank.train.ranker import RankerConfig
    from reelrank.train.retrieval import RetrievalConfig
    from reelrank.train.topics import item_vectors
    from reelrank.models.bundle import ModelBundle

    world = build_world(n_users=60, n_items=240, n_creators=24, n_topics=4, seed=5)
    import_into(store, world.items, generate_history(world, 2, 12, seed=5), progress=False)
    registry = ModelRegistry(tmp_path / "models")
    cfg = TrainConfig(retrieval=RetrievalConfig(dim=16, max_len=10, layers=1, heads=2, epochs=3,
                                                negatives=64, batch_size=64),
                      ranker=RankerConfig(epochs=0), holdout=0.0,
                      topics=TopicConfig(min_topics=4, max_topics=4))
    version = train_from_store(store, registry, cfg, progress=False).version
    art = registry.load(version)
    model = TopicModel.from_meta(art.meta["topics"])
    retrieval = ModelBundle.from_state(art.state).retrieval
    ids = model.assign(item_vectors(retrieval, world.items))
    assert nmi([world.topic_of(it.item_id) for it in world.items], ids) > 0.3  # random: ~0.01
    # Uploads after training: new ids, new creator, the caption and tags of one topic.
    hits = 0
    for k, topic in enumerate(world.topics):
        members = [it for it in world.items if world.topic_of(it.item_id) == topic]
        usual = np.bincount(ids[[world.items.index(m) for m in members]]).argmax()
        new = [Item(f"new{k}-{j}", "brand-new-creator", 20_000, 0, m.caption, m.hashtags)
               for j, m in enumerate(members[:5])]
        hits += int((model.assign(item_vectors(retrieval, new)) == usual).sum())
    # A tiny model after 3 epochs: well above the 1 in 4 of chance, not perfect.
    assert hits >= 0.5 * 5 * len(world.topics)
    # A retrain is matched to it: ids carry over.
    second = train_from_store(store, registry, cfg, progress=False).version
    meta = registry.meta(second)["topics"]
    assert meta["previous_version"] == version and meta["unchanged_share"] >= 0.8
