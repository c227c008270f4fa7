"""Feed plans (``pipeline/plans.py``): a viewer's next pages cut from the ranking of their last
one must be the pages the whole pipeline would have served.

Two engines on two copies of one small world with one trained model: one keeps plans, one runs
the whole pipeline for every page (the reference). The catalog is smaller than what each source
is asked for, so the reference's next page draws on the same pool as the plan; exploration is
off in both (its sampling would draw differently in two engines asked a different number of
times). Then everything that must end a plan ends it: an event (posted here, or applied to the
live state by another process), settings, another context, a new model version, a reset, an
erasure, its age and its budget; and the plans held stay within their bound.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from fastapi.testclient import TestClient

from reelrank.engine import Engine
from reelrank.eval.simulator import build_world, generate_history
from reelrank.importers import import_into
from reelrank.pipeline.context import FeedRequest
from reelrank.pipeline.explore import ExploreSource
from reelrank.pipeline.plans import FeedPlans
from reelrank.pipeline.served import default_pipeline
from reelrank.registry import ModelRegistry
from reelrank.service import create_app
from reelrank.store import open_store
from reelrank.train.batch import train_from_store
from reelrank.types import EXPLORATION_CODES, Candidate, Event
from tests.train.test_training import TINY

N = 5


def _engine(store, registry, plans: FeedPlans | None, exploration: bool = False) -> Engine:
    engine = Engine(store, registry=registry, index_kind="exact").load()
    engine.pipeline = default_pipeline(
        engine.models, exploration=exploration,
        explore=ExploreSource(refresh_events=0, background_refresh=False), plans=plans)
    engine.live.trending_refresh_seconds = float("inf")  # top lists move with events only
    return engine


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The world and its model, made once (each test copies the model directory)."""
    world = build_world(n_users=30, n_items=45, n_creators=9, seed=5)
    history = list(generate_history(world, 1, 8, seed=5))
    root = tmp_path_factory.mktemp("plans-world")
    store = open_store(root / "store")
    import_into(store, world.items, history, progress=False)
    train_from_store(store, ModelRegistry(root / "models"), TINY, progress=False)
    store.close()
    return world, history, root / "models"


@pytest.fixture
def twins(tmp_path, trained):
    world, history, models = trained
    stores = [open_store(tmp_path / name) for name in ("plans", "reference")]
    for store in stores:
        import_into(store, world.items, history, progress=False)
    shutil.copytree(models, tmp_path / "models")
    registry = ModelRegistry(tmp_path / "models")
    on = _engine(stores[0], registry, FeedPlans(ttl_s=600.0, max_viewers=100, max_items=40))
    off = _engine(stores[1], registry, None)
    yield on, off, registry, stores[0]
    for store in stores:
        store.close()


def _page(result, exact: bool) -> list[tuple]:
    """The page as the viewer gets it. Built afresh (``exact``), everything down to the
    source credited and the order of the reasons; cut from a plan, the items, their order and
    scores and the reasons, whose order and credited source follow the sources' own scores,
    which each request scales to its own list (the retrieval source's min-max): a plan keeps
    those of the request that built it. Scores are compared apart (``_scores``)."""
    if exact:
        return [(i.item_id, i.source, tuple((r.code, r.text) for r in i.reasons))
                for i in result.items]
    return [(i.item_id, frozenset((r.code, r.text) for r in i.reasons)) for i in result.items]


def _scores(result) -> list[float]:
    return [i.score for i in result.items]


def _both(on, off, user_id: str, n: int = N, **context):
    plans = on.pipeline.plans
    hits = plans.hits
    a = on.feed(FeedRequest(user_id=user_id, n=n, **context))
    b = off.feed(FeedRequest(user_id=user_id, n=n, **context))
    assert a.model_version == b.model_version
    assert [n for n in a.notices] == [n for n in b.notices]
    exact = plans.hits == hits  # built afresh
    assert _page(a, exact) == _page(b, exact), f"pages differ for {user_id}"
    # The same models on the same inputs, but a plan scores its candidates in other batches
    # than a page built afresh, and a float32 sum can then differ in its last bit.
    assert _scores(a) == pytest.approx(_scores(b), rel=1e-6, abs=1e-7), user_id
    return a


def _viewers(engine) -> list[str]:
    return sorted(engine.live.user_ids())[:6]


def test_first_pages_are_the_reference_pages(twins):
    on, off, _, _ = twins
    for user in [*_viewers(on), "never-seen-before"]:
        _both(on, off, user)
    assert on.pipeline.plans.hits == 0
    assert len(on.pipeline.plans) == len(_viewers(on)) + 1


def test_next_pages_from_the_plan_are_the_reference_pages(twins):
    on, off, _, _ = twins
    plans = on.pipeline.plans
    for user in [*_viewers(on), "never-seen-before"]:
        for _ in range(4):
            _both(on, off, user)
    assert plans.hits == 3 * (len(_viewers(on)) + 1)
    assert plans.misses["none"] == len(_viewers(on)) + 1


def test_exploration_is_drawn_for_every_page_from_a_plan(twins):
    """With the exploration source on, each page cut from a plan has its own draw. The plan's
    second page draws for itself and the next page at once (then for more) and scores the
    draws in one pass; a viewer who asks for the pages the plan holds gets the pages the
    reference serves, drawing page by page (as many draws, in the same order)."""
    on, off, _, _ = twins
    for engine in (on, off):
        plans = engine.pipeline.plans
        engine.pipeline = default_pipeline(
            engine.models, explore=ExploreSource(refresh_events=0, background_refresh=False))
        engine.pipeline.plans = plans
    pages = 5  # the page that builds the plan, then the four a plan of 25 items still holds
    on.pipeline.plans.max_items = pages * N
    explored, drafted, samples = 0, [], []
    for user in [*_viewers(on), "never-seen-before"]:
        for page_no in range(pages):
            page = _both(on, off, user)
            explored += sum(r.code in EXPLORATION_CODES for i in page.items for r in i.reasons)
            plan = on.pipeline.plans._plans.get(user)
            if page_no in (1, 3):  # drew for this page and the next: the next one's is kept
                assert plan is not None and len(plan.ahead) == 1
                assert plan.draw_passes == (page_no + 1) // 2
                samples.append(frozenset((i, c.score) for i, cs in page.trace.proposals.items()
                                         for c in cs if c.source == "explore"))
                samples.append(frozenset((i, cs[0].score)
                                         for i, cs in plan.ahead[0].proposals.items()))
        drafted.append(samples)
        samples = []
    assert on.pipeline.plans.hits == (pages - 1) * (len(_viewers(on)) + 1)
    assert explored > 0
    # Independent draws: the pages drawn in one pass do not share one sample.
    assert all(len(d) == 4 for d in drafted)
    assert any(d[0] != d[1] and d[2] != d[3] for d in drafted)
    # Drawn as often as the reference draws: the samples' generators are in the same state.
    drawers = [next(s for s in e.pipeline.sources["personalized"]
                    if isinstance(s, ExploreSource)) for e in (on, off)]
    assert drawers[0]._rng.bit_generator.state == drawers[1]._rng.bit_generator.state


def test_a_swipe_ends_the_plan_and_the_next_page_reflects_it(twins):
    on, off, _, _ = twins
    plans = on.pipeline.plans
    user = _viewers(on)[0]
    first = _both(on, off, user)
    ts = on.live.clock + 1_000
    event = Event(event_id="swipe-1", user_id=user, item_id=first.items[0].item_id,
                  type="skip", ts=ts, watch_ms=500)
    for engine in (on, off):
        engine.ingest_events([event])
    hits = plans.hits
    _both(on, off, user)  # built afresh: the same page the reference serves after the swipe
    assert plans.hits == hits and plans.misses["viewer_changed"] == 1
    _both(on, off, user)
    assert plans.hits == hits + 1


def test_an_event_applied_by_another_process_ends_the_plan(twins):
    """A shared live state: another process applies the viewer's event to it, and this
    process runs no callback for it. The plan is stale by what the live state says."""
    on, _, _, _ = twins
    plans = on.pipeline.plans
    user = _viewers(on)[1]
    first = on.feed(FeedRequest(user_id=user, n=N))
    on.live.apply(Event(event_id="elsewhere", user_id=user, item_id=first.items[0].item_id,
                        type="like", ts=on.live.clock + 1))
    on.feed(FeedRequest(user_id=user, n=N))
    assert plans.hits == 0 and plans.misses["viewer_changed"] == 1


def test_not_interested_posted_between_pages_is_honoured(twins):
    """An item of the plan marked not interested: the plan is rebuilt and the item is gone."""
    on, off, _, _ = twins
    user = _viewers(on)[2]
    _both(on, off, user)
    left = [s.item_id for s in on.pipeline.plans._plans[user].scored]
    event = Event(event_id="ni-1", user_id=user, item_id=left[0], type="not_interested",
                  ts=on.live.clock + 1)
    for engine in (on, off):
        engine.ingest_events([event])
    page = _both(on, off, user)
    assert left[0] not in [i.item_id for i in page.items]


def test_settings_context_and_a_new_version_end_the_plan(twins):
    on, off, registry, store = twins
    plans = on.pipeline.plans
    user = _viewers(on)[3]
    _both(on, off, user)
    # The viewer's controls: a hidden creator.
    creator = on.catalog.get(on.pipeline.plans._plans[user].scored[0].item_id).creator_id
    for engine in (on, off):
        engine.put_settings(dataclasses.replace(engine.settings(user),
                                                hidden_creators=(creator,)))
    page = _both(on, off, user)
    assert plans.misses["context_changed"] == 1
    assert all(on.catalog.get(i.item_id).creator_id != creator for i in page.items)
    # Another device: not the plan built for the last one (keyed by the context).
    _both(on, off, user, device="tablet")
    assert plans.misses["context_changed"] == 2
    # A new model version.
    train_from_store(store, registry, TINY, progress=False)
    for engine in (on, off):
        assert engine.models.refresh()
    hits = plans.hits
    _both(on, off, user, device="tablet")
    assert plans.hits == hits and plans.misses["context_changed"] == 3


def test_reset_and_erasure_drop_the_plan(twins):
    on, _, _, _ = twins
    plans = on.pipeline.plans
    a, b = _viewers(on)[:2]
    for user in (a, b):
        on.feed(FeedRequest(user_id=user, n=N))
    on.reset_interests(a)
    assert a not in plans.user_ids()
    on.erase_user(b)
    assert b not in plans.user_ids()
    # Erased by another process: only a digest of the id arrives.
    on.feed(FeedRequest(user_id=a, n=N))
    assert a in plans.user_ids()
    assert on.forget_held(lambda u: u == a) == [a]
    assert a not in plans.user_ids()


def test_a_plan_expires_and_is_used_up(twins):
    on, _, _, _ = twins
    plans = on.pipeline.plans
    user = _viewers(on)[4]
    on.feed(FeedRequest(user_id=user, n=N))
    plans.ttl_s = 1e-9
    on.feed(FeedRequest(user_id=user, n=N))
    assert plans.misses["expired"] == 1
    plans.ttl_s = 600.0
    plans.max_items = 2 * N  # the page that built it and one more
    # A hit (10 served), then a page past the budget: built afresh; then a hit again.
    served = [on.feed(FeedRequest(user_id=user, n=N)) for _ in range(3)]
    assert plans.hits == 2 and plans.misses["used_up"] == 1
    # A larger page than the plan's pool was built for is ranked afresh.
    plans.max_items = 40
    on.feed(FeedRequest(user_id=user, n=12))
    assert plans.hits == 2 and plans.misses["used_up"] == 2
    ids = [i.item_id for r in served for i in r.items]
    assert len(ids) == len(set(ids))  # nothing served twice


def test_plans_are_bounded(twins):
    on, _, _, _ = twins
    on.pipeline.plans = plans = FeedPlans(ttl_s=600.0, max_viewers=3)
    viewers = _viewers(on)
    for user in viewers:
        on.feed(FeedRequest(user_id=user, n=N))
    assert plans.user_ids() == viewers[-3:]
    assert plans.evicted == len(viewers) - 3
    assert plans.usage()["viewers"] == 3


def test_explain_works_for_an_item_served_from_a_plan(twins):
    on, _, _, _ = twins
    user = _viewers(on)[5]
    on.feed(FeedRequest(user_id=user, n=N))
    second = on.feed(FeedRequest(user_id=user, n=N))
    assert on.pipeline.plans.hits == 1
    item = second.items[2]
    why = on.explain(user, item.item_id)
    assert why["shown"] is True and why["request_id"] == second.request_id
    assert why["position"] == 3
    assert why["source"] == item.source and why["score"] == pytest.approx(item.score)
    assert why["predictions"] and why["sources"]
    assert [r["code"] for r in why["reasons"]] == [r.code for r in item.reasons]


def test_stats_report_the_plans(twins):
    on, _, _, _ = twins
    user = _viewers(on)[0]
    for _ in range(3):
        on.feed(FeedRequest(user_id=user, n=N))
    with TestClient(create_app(on, None)) as client:
        got = client.get("/v1/stats").json()["memory"]["feed_plans"]
    assert got["enabled"] is True and got["viewers"] == 1
    assert got["hits"] == 2 and got["misses"] == 1 and got["max_viewers"] == 100


def test_lists_scored_in_one_pass_score_as_each_alone(twins):
    """``score_groups`` (a plan's exploration draws): each list gets the items, scores,
    predictions and reasons that scoring it alone gives, overlapping lists included."""
    _, off, _, _ = twins
    scorer = off.pipeline.scorer
    ids = sorted(off.catalog.ids())[:30]
    groups = [[Candidate(i, "explore", 0.5) for i in ids[a:b]]
              for a, b in ((0, 12), (8, 20), (20, 30), (0, 0))]
    for user in [*_viewers(off)[:2], "never-seen-before"]:
        ctx = off.context(FeedRequest(user_id=user, n=N))
        together = scorer.score_groups(ctx, groups)
        assert len(together) == len(groups)
        for group, got in zip(groups, together):
            alone = scorer.score(off.context(FeedRequest(user_id=user, n=N)), group)
            assert [s.item_id for s in got] == [s.item_id for s in alone]
            assert [s.score for s in got] == pytest.approx([s.score for s in alone], rel=1e-5)
            assert [s.reasons for s in got] == [s.reasons for s in alone]
            for a, b in zip(got, alone):
                assert a.predictions == pytest.approx(b.predictions, rel=1e-5)
