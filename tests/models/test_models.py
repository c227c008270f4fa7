"""Shapes and invariants of the retrieval model, the ranker, the losses and the bundle."""

from __future__ import annotations

import math

import pytest
import torch

from reelrank.features import DENSE_FEATURES
from reelrank.models.bundle import ModelBundle
from reelrank.models.losses import full_softmax_loss, sampled_softmax_loss
from reelrank.models.ranker import CONTEXT_FIELDS, TASKS, RankInputs, Ranker, value
from reelrank.models.retrieval import (
    FLAGS, HistoryInputs, TwoTower, duration_bucket, encode_histories, gap_bucket,
)
from reelrank.types import Item, Token

ITEMS = [Item(f"v{i}", f"c{i % 3}", 5_000 + 1000 * i, 0, caption=f"clip number {i}",
              hashtags=(f"t{i % 4}", "all"), sound_id=f"s{i % 2}") for i in range(12)]


def history(B: int, L: int, n_items: int) -> HistoryInputs:
    items = torch.randint(0, n_items, (B, L))
    items[:, :2] = -1  # left padding
    return HistoryInputs(items, torch.randint(0, 6, (B, L)), torch.rand(B, L, len(FLAGS)),
                         torch.randint(0, 24, (B, L)))


def test_towers_shapes_and_padding():
    torch.manual_seed(0)
    model = TwoTower(dim=16, max_len=8, layers=1, heads=2, dropout=0.0).eval()
    model.items.observe(ITEMS)
    inputs = model.items.encode_items(ITEMS)
    assert inputs.tags.shape == (12, 8) and inputs.words.shape == (12, 8)
    vectors = model.item_vectors(inputs)
    assert vectors.shape == (12, 16)
    h = history(3, 8, 12)
    seq = model.users(h, vectors)
    assert seq.shape == (3, 8, 16)
    assert model.user_vectors(h, vectors).shape == (3, 16)
    assert torch.isfinite(seq).all()


def test_user_vector_does_not_depend_on_padding_width():
    torch.manual_seed(0)
    model = TwoTower(dim=16, max_len=10, layers=1, heads=2, dropout=0.0).eval()
    model.items.observe(ITEMS)
    vectors = model.item_vectors(model.items.encode_items(ITEMS))
    toks = [Token(f"v{i}", 1000 * i, "long_view", 1.0) for i in (1, 4, 2)]
    index = {it.item_id: k for k, it in enumerate(ITEMS)}
    narrow = model.user_vectors(encode_histories([toks], index, 4), vectors)
    wide = model.user_vectors(encode_histories([toks], index, 10), vectors)
    assert torch.allclose(narrow, wide, atol=1e-5)


def test_unknown_item_still_gets_a_content_vector():
    model = TwoTower(dim=16, max_len=4, layers=1, heads=2)
    model.items.observe(ITEMS)
    new = Item("brand-new", "c1", 7000, 0, caption="clip", hashtags=("t1",), sound_id="s1")
    a = model.item_vectors(model.items.encode_items([new]))
    stranger = Item("other-new", "c9", 200_000, 0)
    b = model.item_vectors(model.items.encode_items([stranger]))
    assert not torch.allclose(a, b)  # creator, sound, tags and duration tell them apart


def test_buckets_are_monotone():
    assert [duration_bucket(ms) for ms in (0, 1000, 10_000, 600_000, 10**9)] == sorted(
        duration_bucket(ms) for ms in (0, 1000, 10_000, 600_000, 10**9))
    assert gap_bucket(0) == 0 and gap_bucket(10**12) == 23


def test_sampled_softmax_equals_full_softmax_with_every_item_and_uniform_q():
    torch.manual_seed(1)
    items, user = torch.randn(30, 8), torch.randn(5, 8)
    target = torch.randint(0, 30, (5,))
    uniform = torch.full((30,), -math.log(30))
    got = sampled_softmax_loss(user, target, items, torch.arange(30), uniform)
    assert torch.allclose(got, full_softmax_loss(user, items, target))


def test_log_q_correction_and_accidental_hits():
    user = torch.tensor([[1.0, 0.0]])
    cands = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ids = torch.tensor([7, 7, 3])  # candidate 1 is the same item as the positive: masked
    log_q = torch.log(torch.tensor([0.5, 0.5, 0.1]))
    got = sampled_softmax_loss(user, torch.tensor([0]), cands, ids, log_q)
    # by hand: logits - log q = [1 - ln .5, -inf, 0 - ln .1]
    a, c = 1 - math.log(0.5), -math.log(0.1)
    expected = -(a - math.log(math.exp(a) + math.exp(c)))
    assert abs(got.item() - expected) < 1e-5


def rank_inputs(model: Ranker, N: int) -> RankInputs:
    model.items.observe(ITEMS)
    cat = model.items.encode_items(ITEMS)
    idx = torch.randint(0, 12, (N,))
    return RankInputs(cat[idx], history(N, 6, 12), cat, torch.zeros(N, len(CONTEXT_FIELDS),
                      dtype=torch.long), torch.randint(0, 24, (N,)),
                      torch.randn(N, len(DENSE_FEATURES)))


def test_ranker_shapes_and_value_formula():
    torch.manual_seed(0)
    model = Ranker(len(DENSE_FEATURES), dim=8, experts=3, expert_dim=16).eval()
    logits = model(rank_inputs(model, 7))
    assert logits.shape == (7, len(TASKS)) and torch.isfinite(logits).all()
    probs = {t: torch.sigmoid(logits[:, j]) for j, t in enumerate(TASKS)}
    v = value(probs, {"like": 2.0, "negative": -1.0})
    assert torch.allclose(v, 2 * probs["like"] - probs["negative"])


def test_factored_attention_equals_the_mlp_over_the_concatenation():
    torch.manual_seed(0)
    model = Ranker(len(DENSE_FEATURES), dim=8, experts=2, expert_dim=8)
    cand, tok = torch.randn(5, 8), torch.randn(5, 6, 8)
    for t in (tok, tok[:1]):  # one history per row, and one history shared by all rows
        full = t.expand(5, -1, -1)
        q = cand.unsqueeze(1).expand_as(full)
        slow = model.attention(torch.cat([q, full, q * full, q - full], dim=-1)).squeeze(-1)
        assert torch.allclose(model._attention_logits(cand, t), slow, atol=1e-5)


@pytest.mark.parametrize("wide", [False, True])
def test_batched_experts_at_inference_equal_the_layer_by_layer_path(wide):
    torch.manual_seed(0)
    model = Ranker(len(DENSE_FEATURES), dim=8, experts=3, expert_dim=16, wide=wide).eval()
    if wide:  # it starts at zero; a trained one is not
        torch.nn.init.normal_(model.wide.weight)
        torch.nn.init.normal_(model.wide.bias)
    x = rank_inputs(model, 9)
    with torch.no_grad():
        fast = model(x)
    slow = model(x)  # gradients on: the per-layer path used in training
    assert torch.allclose(fast, slow.detach(), atol=1e-5)
    # One request's context given once (serving) scores like the same context on every row.
    x.context[:] = torch.tensor([1, 0, 2])[:len(CONTEXT_FIELDS)]
    x.hour[:] = 7
    one = RankInputs(x.items, x.history, x.history_items, x.context[:1], x.hour[:1], x.dense)
    with torch.no_grad():
        assert torch.allclose(model(one), model(x), atol=1e-5)
    assert torch.allclose(model(one), model(x), atol=1e-5)


def test_batched_experts_follow_an_optimizer_step():
    """The stacked weights the inference path keeps are rebuilt once a parameter changes."""
    torch.manual_seed(0)
    model = Ranker(len(DENSE_FEATURES), dim=8, experts=3, expert_dim=16).eval()
    x = rank_inputs(model, 9)
    with torch.no_grad():
        before = model(x)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x).sum().backward()
    opt.step()
    with torch.no_grad():
        after = model(x)
    slow = model(x).detach()
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, slow, atol=1e-5)


def test_a_shared_history_scores_like_the_same_history_repeated():
    torch.manual_seed(0)
    model = Ranker(len(DENSE_FEATURES), dim=8, experts=2, expert_dim=8).eval()
    x = rank_inputs(model, 6)
    h = x.history
    one = HistoryInputs(h.items[:1], h.view[:1], h.flags[:1], h.gap[:1])
    repeated = HistoryInputs(one.items.expand(6, -1), one.view.expand(6, -1),
                             one.flags.expand(6, -1, -1), one.gap.expand(6, -1))
    a = model(RankInputs(x.items, one, x.history_items, x.context, x.hour, x.dense))
    b = model(RankInputs(x.items, repeated, x.history_items, x.context, x.hour, x.dense))
    assert torch.allclose(a, b, atol=1e-5)


def test_ranker_with_empty_history_rows():
    model = Ranker(len(DENSE_FEATURES), dim=8, experts=2, expert_dim=8).eval()
    x = rank_inputs(model, 4)
    x.history.items[:] = -1
    assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("wide", [False, True])
def test_bundle_round_trip_restores_predictions(wide):
    torch.manual_seed(0)
    retrieval = TwoTower(dim=8, max_len=4, layers=1, heads=2, dropout=0.0)
    retrieval.items.observe(ITEMS)
    ranker = Ranker(len(DENSE_FEATURES), dim=8, experts=2, expert_dim=8, wide=wide)
    if wide:
        torch.nn.init.normal_(ranker.wide.weight)
    x = rank_inputs(ranker, 5)
    bundle = ModelBundle(retrieval, {"dim": 8, "max_len": 4, "layers": 1, "heads": 2,
                                     "dropout": 0.0},
                         ranker, {"n_dense": len(DENSE_FEATURES), "dim": 8, "experts": 2,
                                  "expert_dim": 8, "wide": wide})
    ranker.eval()
    before = ranker(x)
    again = ModelBundle.from_state(bundle.state())
    assert torch.allclose(again.ranker(x), before)
    enc = again.retrieval.items.encode_items(ITEMS)
    assert torch.equal(enc.item, retrieval.items.encode_items(ITEMS).item)


def test_a_temperature_makes_scores_cosines_over_it():
    torch.manual_seed(0)
    model = TwoTower(dim=16, max_len=8, layers=1, heads=2, dropout=0.0, temperature=0.1).eval()
    model.items.observe(ITEMS)
    with torch.no_grad():
        raw = model.items(model.items.encode_items(ITEMS))
        vectors = model.item_vectors(model.items.encode_items(ITEMS))
        users = model.user_vectors(history(3, 8, 12), vectors)
    assert torch.allclose(vectors.norm(dim=1), torch.full((12,), 10 ** 0.5), atol=1e-4)
    assert torch.allclose(users.norm(dim=1), torch.full((3,), 10 ** 0.5), atol=1e-4)
    cosine = torch.nn.functional.cosine_similarity(raw[0], raw[1], dim=0)
    assert math.isclose(float(vectors[0] @ vectors[1]), float(cosine) / 0.1, rel_tol=1e-4)
    again = ModelBundle.from_state(ModelBundle(model, {
        "dim": 16, "max_len": 8, "layers": 1, "heads": 2, "dropout": 0.0,
        "temperature": 0.1}).state())
    assert again.retrieval.temperature == 0.1
    with pytest.raises(ValueError):
        TwoTower(dim=16, temperature=0.0)
