"""Multi-task ranker: one network predicts, for a viewer, a video and the context, every outcome
the value formula needs.

Inputs per candidate: the video (its own ``ItemTower``: ID + content), the context (device,
hour, region, traffic source), the viewer's recent history read through target attention (the
candidate attends over the history tokens, so "what in this viewer's past resembles this
video" is learned, DIN-style), and dense counters (viewer-creator affinity, the video's recent
engagement rates, the viewer's activity; see ``reelrank.features.DENSE_FEATURES``).

A multi-gate mixture of experts (MMoE) shares experts between tasks; each task has its own
gate and tower. Heads give logits; ``watch_time`` is the quantile of the watch time among views
of videos in the same duration bucket (so long videos are not favoured just for being long),
trained with a cross-entropy against that quantile. Pure module: no I/O, no device moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from reelrank.models.embeddings import DynamicEmbedding
from reelrank.models.retrieval import (
    FLAGS, N_GAP_BUCKETS, N_VIEW_BUCKETS, HistoryInputs, ItemInputs, ItemTower,
)

TASKS = ("long_view", "watch_time", "like", "share", "comment", "follow", "negative")
CONTEXT_FIELDS = ("device", "region", "source")


@dataclass
class RankInputs:
    """A batch of N (viewer, candidate, context) rows."""

    items: ItemInputs  # N candidates
    history: HistoryInputs  # (N, L) tokens; ``items`` index ``history_items``
    history_items: ItemInputs  # the items the history tokens refer to
    context: torch.Tensor  # (N, len(CONTEXT_FIELDS)) rows of the context tables
    hour: torch.Tensor  # (N,) 0..23
    dense: torch.Tensor  # (N, F) float


class Ranker(nn.Module):
    def __init__(self, n_dense: int, dim: int = 32, experts: int = 4, expert_dim: int = 64,
                 tasks: Sequence[str] = TASKS, min_count: int = 1,
                 content_fields: Sequence[str] = ("creator", "sound", "tags", "duration", "words"),
                 use_item_id: bool = True, dropout: float = 0.0):
        super().__init__()
        self.tasks = tuple(tasks)
        self.dim = dim
        self.items = ItemTower(dim, min_count=min_count, content_fields=content_fields,
                               use_id=use_item_id)
        self.dropout = nn.Dropout(dropout)
        self.context = nn.ModuleList([DynamicEmbedding(dim, min_count=min_count)
                                      for _ in CONTEXT_FIELDS])
        self.hour = nn.Embedding(24, dim)
        self.view = nn.Embedding(N_VIEW_BUCKETS, dim)
        self.flags = nn.Linear(len(FLAGS), dim, bias=False)
        self.gap = nn.Embedding(N_GAP_BUCKETS, dim)
        self.attention = nn.Sequential(nn.Linear(4 * dim, 32), nn.GELU(), nn.Linear(32, 1))
        self.dense_norm = nn.BatchNorm1d(n_dense)
        width = dim * (3 + len(CONTEXT_FIELDS) + 1) + n_dense  # item, attended, item*attended, ctx, hour
        self.experts = nn.ModuleList([
            nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, expert_dim), nn.GELU())
            for _ in range(experts)])
        self.gates = nn.ModuleList([nn.Linear(width, experts) for _ in self.tasks])
        self.towers = nn.ModuleList([
            nn.Sequential(nn.Linear(expert_dim, 32), nn.GELU(), nn.Linear(32, 1))
            for _ in self.tasks])

    def forward(self, x: RankInputs) -> torch.Tensor:
        """-> (N, T) logits, one column per task in ``self.tasks``."""
        cand = self.items(x.items)  # (N, D)
        hist_vecs = self.items(x.history_items)  # (H, D)
        if hist_vecs.shape[0] == 0:  # nobody in the batch has a history: all padding
            hist_vecs = cand.new_zeros((1, cand.shape[1]))
        h = x.history
        pad = h.items < 0  # (N, L)
        tok = hist_vecs[h.items.clamp(min=0)]  # (N, L, D)
        tok = tok + self.view(h.view) + self.flags(h.flags) + self.gap(h.gap)  # (N, L, D)
        q = cand.unsqueeze(1).expand_as(tok)  # (N, L, D)
        w = self.attention(torch.cat([q, tok, q * tok, q - tok], dim=-1)).squeeze(-1)  # (N, L)
        # A finite fill and a multiply, not -inf: a row of only padding must give zero weights
        # without a NaN anywhere, forward or backward.
        w = torch.softmax(w.masked_fill(pad, -1e9), dim=-1) * (~pad).to(w.dtype)  # (N, L)
        attended = (w.unsqueeze(-1) * tok).sum(1)  # (N, D)
        ctx = [emb(x.context[:, j]) for j, emb in enumerate(self.context)]  # each (N, D)
        features = torch.cat(
            [cand, attended, cand * attended, *ctx, self.hour(x.hour), self.dense_norm(x.dense)],
            dim=-1)  # (N, width)
        features = self.dropout(features)
        expert_out = torch.stack([e(features) for e in self.experts], dim=1)  # (N, E, H)
        logits = []
        for gate, tower in zip(self.gates, self.towers):
            g = torch.softmax(gate(features), dim=-1).unsqueeze(-1)  # (N, E, 1)
            logits.append(tower((g * expert_out).sum(1)))  # (N, 1)
        return torch.cat(logits, dim=-1)  # (N, T)


DEFAULT_VALUE_WEIGHTS: dict[str, float] = {
    "long_view": 1.0, "watch_time": 1.0, "like": 2.0, "share": 3.0, "comment": 1.5,
    "follow": 3.0, "negative": -5.0,
}


def value(predictions: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The value formula: a weighted sum of predicted probabilities (configuration, not learned)."""
    total = None
    for task, w in weights.items():
        if task in predictions:
            term = w * predictions[task]
            total = term if total is None else total + term
    if total is None:
        raise ValueError("no weighted task among the predictions")
    return total
