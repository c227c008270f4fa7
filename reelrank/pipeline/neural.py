"""The trained models in the serving path: the retrieval source and the neural scorer, both
reading the model set that ``pipeline/serving_models.py`` loads and swaps in.

Both stages fall back gracefully: with no model published (or for a viewer with no history) the
retrieval source proposes nothing and the v0 sources carry the feed; the scorer falls back to
the heuristic scorer.
"""

from __future__ import annotations

import logging
from itertools import repeat

import numpy as np
import torch

from reelrank.features import dense_matrix, user_aggregates
from reelrank.models.ranker import CONTEXT_FIELDS, RankInputs
from reelrank.models.retrieval import ItemInputs, encode_histories
from reelrank.pipeline.context import FeedContext
from reelrank.pipeline.rank import HeuristicScorer, Scored
# The model set these stages read; ServingModels and LoadedModels are also imported from here.
from reelrank.pipeline.serving_models import LoadedModels, ServingModels
from reelrank.store.live import CO_ENGAGEMENT_CAP, CO_ENGAGEMENT_SEEDS
from reelrank.types import Candidate, Item, Reason

log = logging.getLogger(__name__)

# Weight of the retrieval logit beside log(value formula), when a version's value weights name
# none; and the floor of the value formula under the log (its negative term can push it below 0).
DEFAULT_RETRIEVAL_WEIGHT = 1.0
VALUE_FLOOR = 1e-3


class RetrievalSource:
    """The main candidate source: the two-tower model over the viewer's live history."""

    name = "retrieval"

    def __init__(self, models: ServingModels):
        self.models = models

    def generate(self, ctx: FeedContext, n: int) -> list[Candidate]:
        m = self.models.current
        if m is None or m.index is None:
            return []
        user = user_vector(m, ctx)
        if user is None:
            return []
        u = ctx.user
        exclude = (set(u.seen) | set(u.served) | set(u.not_interested)) if u is not None else set()
        hits = m.index.search(user, n, exclude=exclude)[0]
        if not hits:
            return []
        top = hits[0][1]
        low = hits[-1][1]
        span = (top - low) or 1.0
        reason = (Reason("for_you", "picked for you from what you watched recently")
                  if u is not None and u.tokens else
                  Reason("for_you", "what viewers new here tend to enjoy"))
        return [Candidate(i, self.name, 0.5 + 0.5 * (s - low) / span, (reason,)) for i, s in hits]


def user_vector(m: LoadedModels, ctx: FeedContext):
    """The retrieval model's vector of the viewer after their live history, (D,) numpy, once
    per request (the source and the scorer share it); None without a retrieval model. A viewer
    with no history the model can read gets the vector of an empty history: what the model
    learned to expect of anyone (the feed of a viewer not seen before, or of one whose every
    video is new, is still ordered by the model and its popularity prior, not by the ranker's
    value alone, which says what a video is worth once shown, not which video to show)."""
    if "retrieval_user" in ctx.cache:
        return ctx.cache["retrieval_user"]
    vector = None
    if m.bundle.retrieval is not None and m.item_vectors is not None:
        retrieval = m.bundle.retrieval
        tokens = list(ctx.user.tokens) if ctx.user is not None else []
        h = encode_histories([tokens], m.item_index, retrieval.users.max_len)
        with torch.no_grad():
            vector = retrieval.user_vectors(h, m.item_vectors)[0].numpy()  # (D,)
    ctx.cache["retrieval_user"] = vector
    return vector


def retrieval_scores(m: LoadedModels, ctx: FeedContext, ids: list[str],
                     items: list[Item]) -> torch.Tensor | None:
    """(N,) the retrieval model's score of each candidate for this viewer: the logit of its
    softmax over the catalog plus three priors, each weighted by the version's weight for the
    page asked for (``page_weight``, chosen on held-out viewers when it was trained,
    ``train/validation.py``): log(1 + the video's long views and likes so far), log(1 + how
    often other viewers enjoyed it together with this viewer's last positives), and log(1 +
    its positive engagement in the live state's trending window). None without a retrieval
    model."""
    user = user_vector(m, ctx)
    if user is None:
        return None
    weights = m.bundle.value_weights
    prior = page_weight(weights, ctx.request.n, "popularity")
    co = page_weight(weights, ctx.request.n, "co_engagement")
    trend = page_weight(weights, ctx.request.n, "trending")
    rows = torch.as_tensor(list(map(m.item_index.get, ids, repeat(-1))), dtype=torch.long)
    if bool((rows >= 0).all()):
        vectors = m.item_vectors[rows]  # one gather: indexing with a Python list is slow
    else:  # uploads since the version was loaded: vectors from content
        vectors = torch.empty((len(ids), m.item_vectors.shape[1]))
        known = rows >= 0
        vectors[known] = m.item_vectors[rows[known]]
        new = torch.nonzero(~known).flatten().tolist()
        retrieval = m.bundle.retrieval
        with torch.no_grad():
            vectors[new] = retrieval.item_vectors(
                retrieval.items.encode_items([items[k] for k in new]))
    scores = vectors @ torch.from_numpy(user)
    if prior:
        scores = scores + prior * torch.from_numpy(log_popularity(ctx.live, ids))
    if co:
        scores = scores + co * torch.from_numpy(log_co_engagement(ctx, ids))
    if trend:
        scores = scores + trend * torch.from_numpy(log_trending(ctx.live, ids))
    return scores


def page_weight(value_weights: dict, n: int, name: str) -> float:
    """A served prior's weight (``name``: "popularity", "co_engagement", "trending") for a page of
    ``n``: a version trained with held-out positives has one chosen on their NDCG@10 (the next
    video near the top) and, for pages of 50 or more, one chosen on their Recall@50 (what a
    long page holds over the coming days). 0 when the version names none."""
    if n >= 50 and f"{name}@50" in value_weights:
        return value_weights[f"{name}@50"]
    return value_weights.get(name, 0.0)


def log_co_engagement(ctx: FeedContext, ids: list[str]) -> np.ndarray:
    """(N,) float32 log(1 + the co-engagement of each video with the viewer's last
    ``CO_ENGAGEMENT_SEEDS`` positives): the live state's item-to-item counts of each seed, summed with
    weight 1 / (1 + k) for the k-th latest seed (the sum is made once per request)."""
    acc = ctx.cache.get("co_engagement")
    if acc is None:
        acc = {}
        seeds = list(ctx.user.positives)[-CO_ENGAGEMENT_SEEDS:] if ctx.user is not None else []
        for rank, seed in enumerate(reversed(seeds)):
            for other, count in ctx.live.co_engaged(seed, CO_ENGAGEMENT_CAP):
                acc[other] = acc.get(other, 0.0) + count / (1 + rank)
        ctx.cache["co_engagement"] = acc
    return np.log1p(np.fromiter((acc.get(i, 0.0) for i in ids), np.float32, len(ids)))


def log_popularity(live, ids: list[str]) -> np.ndarray:
    """(N,) float32 log(1 + long views and likes) of each video: the popularity prior's scale."""
    stats = live.item_stats_many(ids)
    return np.log1p(np.fromiter((s.long_views + s.likes for s in stats), np.float32, len(ids)))


def log_trending(live, ids: list[str]) -> np.ndarray:
    """(N,) float32 log(1 + positive engagement in the trending window) of each video."""
    return np.log1p(np.asarray(live.trending_many(ids), dtype=np.float32))


class NeuralScorer:
    """Scores candidates with the retrieval model's score and the multi-task ranker's value
    formula; the heuristic scorer's signals still supply the human-readable reasons.

    Every candidate, whatever source proposed it, gets both scores, so a trending video
    competes with a retrieved one on the same scale: the score is log(value formula) plus the
    retrieval score (``retrieval_scores``) weighted by the value weights' ``retrieval`` entry.
    A published set without a ranker (trained on a log with nothing to rank: plays only, or
    next-item data) orders by retrieval alone; with neither model, the heuristic scorer
    serves."""

    def __init__(self, models: ServingModels, fallback: HeuristicScorer | None = None,
                 history_len: int = 30, reasons_for_top: int = 100):
        self.models = models
        self.fallback = fallback or HeuristicScorer()
        self.history_len = history_len
        self.reasons_for_top = reasons_for_top

    @property
    def version(self) -> str:
        return self.models.version or self.fallback.version

    def score(self, ctx: FeedContext, candidates: list[Candidate]) -> list[Scored]:
        return self.score_groups(ctx, [candidates])[0]

    def score_groups(self, ctx: FeedContext,
                     groups: list[list[Candidate]]) -> list[list[Scored]]:
        """Several candidate lists for one request, each scored as ``score`` would score it
        alone, through one pass of the models over their items: an item's score and
        predictions do not depend on what else is scored beside it, and each list's reasons go
        to its own top ``reasons_for_top``. (A feed plan scores the exploration draws of its
        next pages this way.)"""
        m = self.models.current
        if m is None or (m.ranker_items is None and m.item_vectors is None):
            return [self.fallback.score(ctx, g) for g in groups]
        if len(groups) == 1:
            candidates = groups[0]
        else:  # each item once, in the order first proposed
            candidates = list({c.item_id: c for g in groups for c in g}.values())
        if not candidates:
            return [[] for _ in groups]
        ids = [c.item_id for c in candidates]
        items = ctx.catalog.get_many(ids)
        if None in items:  # gone from the catalog since a source proposed them
            kept = [k for k, it in enumerate(items) if it is not None]
            candidates = [candidates[k] for k in kept]
            ids, items = [ids[k] for k in kept], [items[k] for k in kept]
        if not items:
            return [[] for _ in groups]
        weights = m.bundle.value_weights
        retrieval = retrieval_scores(m, ctx, ids, items) if ctx.personalized else None
        if m.bundle.ranker is not None and m.ranker_items is not None:
            probs = self._predict(m, ctx, ids, items)  # (N, T)
            tasks = m.bundle.ranker.tasks
            w = torch.tensor([weights.get(t, 0.0) for t in tasks], dtype=probs.dtype)
            scores = probs @ w  # the value formula, (N,)
            predictions = [dict(zip(tasks, row)) for row in probs.tolist()]
            if retrieval is not None:
                # log(value) + w x the retrieval logit: the value of the video if shown, times
                # (to the power w) how likely the retrieval model finds this viewer choosing
                # it. Per item, not relative to the other candidates: /v1/rank of one video
                # scores it as a page of many does.
                scores = torch.log(scores.clamp(min=VALUE_FLOOR)) + weights.get(
                    "retrieval", DEFAULT_RETRIEVAL_WEIGHT) * retrieval
        elif retrieval is not None:
            scores, predictions = retrieval, [{} for _ in ids]
        else:
            return [self.fallback.score(ctx, g) for g in groups]
        if len(groups) == 1:
            return [self._scored(ctx, candidates, items, scores, predictions)]
        row = {i: k for k, i in enumerate(ids)}
        out = []
        for g in groups:
            mine = [c for c in g if c.item_id in row]
            at = [row[c.item_id] for c in mine]
            out.append(self._scored(ctx, mine, [items[k] for k in at],
                                    scores[torch.tensor(at, dtype=torch.long)],
                                    [predictions[k] for k in at]))
        return out

    def _scored(self, ctx: FeedContext, candidates: list[Candidate], items: list[Item],
                scores: torch.Tensor, predictions: list[dict]) -> list[Scored]:
        out = [Scored(cand, value, preds, cand.reasons)
               for cand, preds, value in zip(candidates, predictions, scores.tolist())]
        if ctx.personalized and out:
            # The viewer's signals behind an item ("you watched 3 #cooking videos to the end")
            # are worded only for the items that can make the page, not all 500 candidates.
            top = min(self.reasons_for_top, len(out))
            for k in torch.topk(scores, top, sorted=False).indices.tolist():
                out[k].reasons = self.fallback.signals(ctx, items[k]) + out[k].reasons
        return out

    def _predict(self, m: LoadedModels, ctx: FeedContext, ids: list[str],
                 items: list[Item]) -> torch.Tensor:
        ranker = m.bundle.ranker
        cand_inputs, cand_vectors = _tower_inputs(m, ids, items)
        tokens = list(ctx.user.tokens)[-self.history_len:] if ctx.user is not None else []
        hist_items = list(dict.fromkeys(t.item_id for t in tokens if t.item_id in ctx.catalog))
        local = {i: k for k, i in enumerate(hist_items)}
        # One history, shared by the N candidate rows (the ranker broadcasts it).
        history = encode_histories([tokens], local, self.history_len)
        hist_inputs, hist_vectors = _tower_inputs(
            m, hist_items, ctx.catalog.get_many(hist_items))
        req = ctx.request
        device = req.device or (ctx.user.device if ctx.user else None)
        values = {"device": device, "region": ctx.region, "source": req.source}
        context = torch.stack([
            ranker.context[j].lookup_rows([values[f]]) for j, f in enumerate(CONTEXT_FIELDS)
        ], dim=1)  # (1, C): one request's context, broadcast over the N rows
        agg = user_aggregates(ctx.user)
        # (N, F): a model trained before a feature was added reads the columns it knows (new
        # features are appended)
        dense = torch.from_numpy(dense_matrix(
            ctx.user, items, ctx.live.item_stats_many(ids), ctx.now, agg,
            ctx.region)[:, :ranker.dense_norm.num_features])
        hour = torch.full((1,), (ctx.now // 3_600_000) % 24, dtype=torch.long)
        with torch.inference_mode():
            logits = ranker(RankInputs(cand_inputs, history, hist_inputs, context, hour, dense,
                                       cand_vectors, hist_vectors))
        return torch.sigmoid(logits)


def _tower_inputs(m: LoadedModels, ids: list[str],
                  items: list[Item]) -> tuple[ItemInputs | None, torch.Tensor | None]:
    """What the ranker reads for these items: the cached tower output when every one is a row
    of the loaded catalog, else (uploads since the version was loaded) their encodings, for
    the tower to run on."""
    rows = list(map(m.item_index.get, ids, repeat(-1)))
    if not rows or min(rows) >= 0:
        return None, m.ranker_item_vectors(torch.tensor(rows, dtype=torch.long))
    return m.bundle.ranker.items.encode_items(items), None
