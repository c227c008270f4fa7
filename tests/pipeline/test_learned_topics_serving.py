"""Learned topics in serving: the reader, its precedence setting, uploads, the re-ranker's topic
rule, the wellbeing rules, and the operators' routes."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world, generate_history
from reelrank.importers import import_into
from reelrank.learned_topics import LEARNED_PREFIX, TopicConfig
from reelrank.pipeline import topics as learned
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.rank import Scored
from reelrank.pipeline.rerank import DiversityReranker
from reelrank.pipeline.topics import LearnedTopics, TopicSettings, served_figures
from reelrank.registry import ModelRegistry
from reelrank.service import create_app
from reelrank.store import open_store
from reelrank.topics import ATTRIBUTE_TOPICS
from reelrank.train.batch import TrainConfig, train_from_store
from reelrank.train.ranker import RankerConfig
from reelrank.train.retrieval import RetrievalConfig
from reelrank.types import Candidate, Item

CFG = TrainConfig(
    retrieval=RetrievalConfig(dim=16, max_len=10, layers=1, heads=2, epochs=2, negatives=64,
                              batch_size=64),
    ranker=RankerConfig(epochs=0), holdout=0.0, topics=TopicConfig(min_topics=4, max_topics=4))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store whose catalog declares no topic (no topic attribute, no hashtags: an app that
    sends neither), and a published version with learned topics."""
    root = tmp_path_factory.mktemp("learned")
    world = build_world(n_users=50, n_items=160, n_creators=16, n_topics=4, seed=9)
    items = [dataclasses.replace(it, attributes={}, hashtags=()) for it in world.items]
    store = open_store(root / "data")
    import_into(store, items, generate_history(world, 2, 10, seed=9), progress=False)
    registry = ModelRegistry(root / "models")
    train_from_store(store, registry, CFG, progress=False)
    store.close()
    return root


@pytest.fixture
def engine(trained, tmp_path):
    import shutil

    shutil.copytree(trained, tmp_path / "copy")
    store = open_store(tmp_path / "copy" / "data")
    e = Engine(store, registry=ModelRegistry(tmp_path / "copy" / "models"),
               index_kind="exact").load()
    yield e
    store.close()


def test_the_reader_gives_learned_topics_and_names(engine):
    topics = learned.install(engine)
    model = topics.model()
    assert model is not None and len(model) == 4
    assert engine.pipeline.reranker.topics is topics and engine.pipeline.wellbeing.topics is topics
    item = engine.catalog.get("v0")
    key = topics.of(item)
    assert key.startswith(LEARNED_PREFIX)
    topic = model.get(int(key[len(LEARNED_PREFIX):]))
    assert topics.label(key) == topic.name and topics.name_of(item) == topic.name
    assert " · " in topic.name or topic.name.startswith("topic ")
    # Plain topics still read as before.
    assert topics.label("cooking") == ATTRIBUTE_TOPICS.label("cooking") == "#cooking"


def test_precedence_of_an_explicit_topic_attribute(engine, tmp_path):
    topics = LearnedTopics(engine.models, engine.registry, settings_path=tmp_path / "s.json")
    item = dataclasses.replace(engine.catalog.get("v1"), attributes={"topic": "cooking"})
    assert topics.of(item) == "cooking"  # default ("declared"): the app's own labelling wins
    topics.set_settings(precedence="learned")
    assert topics.of(item).startswith(LEARNED_PREFIX)
    # "declared": a first hashtag also wins over the learned topic.
    tagged = dataclasses.replace(item, attributes={}, hashtags=("fyp", "pasta"))
    assert topics.of(tagged).startswith(LEARNED_PREFIX)
    topics.set_settings(precedence="declared")
    assert topics.of(tagged) == "pasta" and topics.of(item) == "cooking"
    untagged = dataclasses.replace(item, attributes={}, hashtags=())
    assert topics.of(untagged).startswith(LEARNED_PREFIX)
    topics.set_settings(precedence="learned")
    # Saved beside the models: a restart reads it back.
    again = LearnedTopics(engine.models, engine.registry, settings_path=tmp_path / "s.json")
    assert again.settings.precedence == "learned"
    with pytest.raises(ValueError):
        TopicSettings("whatever")


def test_installed_on_another_pipeline_with_settings_of_its_own(engine):
    from reelrank.pipeline.served import default_pipeline

    own = engine.pipeline.reranker.topics
    variant = default_pipeline(engine.models)
    topics = learned.install(engine, pipeline=variant, settings=TopicSettings("learned"))
    assert variant.reranker.topics is topics and variant.wellbeing.topics is topics
    assert engine.pipeline.reranker.topics is own  # the engine's own pipeline is left alone
    assert topics.settings_path is None  # nothing read from or saved beside the models
    tagged = dataclasses.replace(engine.catalog.get("v2"), hashtags=("fyp", "pasta"))
    assert topics.of(tagged).startswith(LEARNED_PREFIX)  # learned wins over a hashtag


def test_an_upload_gets_a_learned_topic_before_any_view(engine):
    topics = learned.install(engine)
    known = engine.catalog.get("v3")
    new = Item("fresh-upload", "brand-new-creator", known.duration_ms, known.created_at,
               known.caption, known.hashtags)
    engine.ingest_items([new])
    assert engine.models.current.item_index.get("fresh-upload") is None  # not in the version
    key = topics.of(engine.catalog.get("fresh-upload"))
    assert key is not None and key.startswith(LEARNED_PREFIX)
    # The same answer from the cache the second time.
    assert topics.of(engine.catalog.get("fresh-upload")) == key


def test_no_model_falls_back_to_todays_topic(store):
    e = Engine(store).load()
    topics = learned.install(e)
    item = Item("v", "c", 10_000, 0, "", ("fyp", "cooking"))
    assert topics.model() is None and topics.of(item) == "cooking"
    assert topics.view()["topics"] == []


def test_the_rerankers_topic_rule_reads_learned_topics(engine):
    topics = learned.install(engine)
    m = engine.models.current
    by_topic: dict[str, list[str]] = {}
    for item_id in m.item_ids:
        by_topic.setdefault(topics.of(engine.catalog.get(item_id)), []).append(item_id)
    key, ids = max(by_topic.items(), key=lambda kv: len(kv[1]))
    creators = {}
    same = [i for i in ids if creators.setdefault(engine.catalog.get(i).creator_id, i) == i][:4]
    assert len(same) == 4
    other = next(i for k, v in by_topic.items() if k != key for i in v)
    scored = [Scored(Candidate(i, "test"), 10.0 - k, {}, ()) for k, i in enumerate(same)]
    scored.append(Scored(Candidate(other, "test"), 1.0, {}, ()))
    ctx = engine.context(FeedRequest("nobody", n=5))
    rr = DiversityReranker(max_creator_run=None, max_sound_run=None, topic_window=5,
                           max_topic_share=0.6, exploration_share=0.0, topics=topics)
    out = rr.rerank(ctx, scored, 5)
    assert [s.item_id for s in out.items][3] == other  # three of one topic, then another
    assert any(topics.label(key) in note for note in out.notes[same[3]])


def test_an_operator_can_mark_a_learned_topic_sensitive(engine):
    topics = learned.install(engine)
    item = engine.catalog.get("v5")
    wellbeing = engine.pipeline.wellbeing
    assert not wellbeing.is_sensitive(item)
    tid = int(topics.of(item)[len(LEARNED_PREFIX):])
    topics.set_settings(sensitive=[tid])
    assert wellbeing.is_sensitive(item)
    others = [engine.catalog.get(i) for i in engine.models.current.item_ids]
    assert not all(wellbeing.is_sensitive(o) for o in others)


def test_operators_routes_and_stats(engine):
    with TestClient(create_app(engine, None)) as client:
        view = client.get("/v1/admin/topics").json()
        assert len(view["topics"]) == 4 and view["settings"]["precedence"] == "declared"
        assert sum(t["videos"] for t in view["topics"]) == len(engine.models.current.item_ids)
        assert view["changes"]["appeared"] == sorted(t["id"] for t in view["topics"])
        tid = view["topics"][0]["id"]
        r = client.put("/v1/admin/topics/settings", json={"sensitive": [tid]})
        assert r.status_code == 200 and r.json() == {"precedence": "declared",
                                                     "sensitive": [tid]}
        assert client.get("/v1/admin/topics").json()["topics"][0]["sensitive"] is True
        bad = client.put("/v1/admin/topics/settings", json={"precedence": "newest"})
        assert bad.status_code == 422
        for u in ("u1", "u2", "u3"):
            assert client.get("/v1/feed", params={"user_id": u, "n": 8}).status_code == 200
        figures = client.get("/v1/stats").json()["topics"]
        assert figures["learned"] is True and figures["topics"] == 4
        assert figures["viewers"] >= 3 and 0 < figures["served_topic_entropy_bits"] <= 2.0
        assert figures["catalog_topic_entropy_bits"] <= 2.0
        app = client.app
        app.state.communities.refresh()
        groups = client.get("/v1/stats").json()["communities"]
        assert groups["communities"] == len(app.state.communities.communities) > 0
        assert groups["min_viewers"] == 20
        for g in groups["sizes"]:  # under the floor, no size is shown
            assert g["viewers"] is None or (g["viewers"] >= 20 and g["viewers"] % 5 == 0)


def test_served_figures_hand_computed(engine):
    topics = learned.install(engine)
    m = engine.models.current
    labels = {i: topics.of(engine.catalog.get(i)) for i in m.item_ids}
    first = m.item_ids[0]
    second = next(i for i in m.item_ids if labels[i] != labels[first])
    engine.live.record_served("a", [first, first, second, second])  # 1 bit
    engine.live.record_served("b", [first])  # 0 bits
    f = served_figures(topics, engine.catalog, engine.live)
    assert f["per_viewer_topic_entropy_bits"] == pytest.approx(0.5)


def test_reasons_name_the_learned_topic_the_viewer_watched(engine):
    from reelrank.types import Event

    topics = learned.install(engine)
    m = engine.models.current
    key = topics.of(engine.catalog.get(m.item_ids[0]))
    same = [i for i in m.item_ids if topics.of(engine.catalog.get(i)) == key]
    assert len(same) >= 4
    t0 = engine.live.clock + 1_000
    events = [Event(f"rz-{k}", "reason-viewer", i, t0 + k * 1_000, "play",
                    watch_ms=engine.catalog.get(i).duration_ms) for k, i in enumerate(same[:3])]
    engine.ingest_events(events)
    ctx = engine.context(FeedRequest("reason-viewer", n=5))
    reasons = engine.pipeline.scorer.fallback.signals(ctx, engine.catalog.get(same[3]))
    assert reasons[0].code == "topic_affinity"
    assert reasons[0].text == f"you watched 3 videos in {topics.label(key)} to the end"
    # The explanation of that video carries it too.
    why = engine.explain("reason-viewer", same[3])
    assert any(r["code"] == "topic_affinity" for r in why["reasons"])


def test_online_versions_carry_their_base_versions_topics(engine):
    topics = learned.install(engine)
    base = engine.models.current
    before = topics.state()
    assert before.carried_by == base.version
    # An online trainer's version: no topics in its meta, its base named.
    engine.models.install(f"{base.version}+1", base.bundle,
                          {"base_version": base.version, "retrieval_version": base.version})
    after = topics.state()
    assert after.version == f"{base.version}+1" and after.carried_by == base.version
    assert after.model is before.model
    assert topics.of(engine.catalog.get("v0")) == f"{LEARNED_PREFIX}{after.labels[0]}"
    # Its base pruned and never read before: the topics last seen stay in use.
    fresh = LearnedTopics(engine.models, None)
    fresh._last = (before.carried_by, before.model, before.meta)
    engine.models.install(f"{base.version}+2", base.bundle, {"base_version": "gone"})
    assert fresh.state().model is before.model
