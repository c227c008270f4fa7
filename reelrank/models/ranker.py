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
    context: torch.Tensor  # (N, len(CONTEXT_FIELDS)) rows of the context tables, or (1, ...)
    hour: torch.Tensor  # (N,) 0..23, or (1,) when the whole batch is one request
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
        h = x.history  # (N, L), or (1, L) when every row shares one viewer's history
        pad = h.items < 0  # (B, L)
        tok = hist_vecs[h.items.clamp(min=0)]  # (B, L, D)
        tok = tok + self.view(h.view) + self.flags(h.flags) + self.gap(h.gap)  # (B, L, D)
        w = self._attention_logits(cand, tok)  # (N, L)
        # A finite fill and a multiply, not -inf: a row of only padding must give zero weights
        # without a NaN anywhere, forward or backward.
        w = torch.softmax(w.masked_fill(pad, -1e9), dim=-1) * (~pad).to(w.dtype)  # (N, L)
        if tok.shape[0] == 1:
            attended = w @ tok[0]  # (N, D)
        else:
            attended = (w.unsqueeze(-1) * tok).sum(1)  # (N, D)
        ctx = [emb(x.context[:, j]) for j, emb in enumerate(self.context)]  # each (B, D)
        shared = torch.cat([*ctx, self.hour(x.hour)], dim=-1)  # (B, 4D), B in (1, N)
        rows = [cand, attended, cand * attended]
        dense = self.dense_norm(x.dense)  # (N, F)
        if not torch.is_grad_enabled() and not (self.training and self.dropout.p):
            return self._mmoe_batched(torch.cat(rows, dim=-1), shared, dense)
        N = cand.shape[0]
        features = torch.cat([*rows, shared.expand(N, -1), dense], dim=-1)  # (N, width)
        features = self.dropout(features)
        expert_out = torch.stack([e(features) for e in self.experts], dim=1)  # (N, E, H)
        logits = []
        for gate, tower in zip(self.gates, self.towers):
            g = torch.softmax(gate(features), dim=-1).unsqueeze(-1)  # (N, E, 1)
            logits.append(tower((g * expert_out).sum(1)))  # (N, 1)
        return torch.cat(logits, dim=-1)  # (N, T)

    def _mmoe_batched(self, rows: torch.Tensor, shared: torch.Tensor,
                      dense: torch.Tensor) -> torch.Tensor:
        """The experts, gates and towers above as a handful of batched products instead of
        ~40 small layer calls (the same arithmetic; used when no gradient is needed).

        The first layers read [rows (N, 3D), shared (B, 4D), dense (N, F)]; with one request's
        context (B = 1) the shared columns' product is computed once and acts as a bias,
        which removes about half of the largest product."""
        N, E, T = rows.shape[0], len(self.experts), len(self.tasks)
        R, S = rows.shape[1], shared.shape[1]
        act = self.experts[0][1]

        def first_layer(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            out = rows @ weight[:, :R].T + dense @ weight[:, R + S:].T  # (N, out)
            return out + (shared @ weight[:, R:R + S].T + bias)  # (B, out) broadcast

        w1 = torch.cat([e[0].weight for e in self.experts])  # (E*H1, W)
        b1 = torch.cat([e[0].bias for e in self.experts])
        hidden = act(first_layer(w1, b1))  # (N, E*H1)
        hidden = hidden.view(N, E, -1).transpose(0, 1)  # (E, N, H1)
        w2 = torch.stack([e[2].weight.T for e in self.experts])  # (E, H1, H)
        b2 = torch.stack([e[2].bias for e in self.experts]).unsqueeze(1)  # (E, 1, H)
        expert_out = act(torch.baddbmm(b2, hidden, w2)).transpose(0, 1)  # (N, E, H)
        gw = torch.cat([g.weight for g in self.gates])  # (T*E, W)
        gb = torch.cat([g.bias for g in self.gates])
        gates = torch.softmax(first_layer(gw, gb).view(N, T, E), dim=-1)
        mixed = torch.bmm(gates, expert_out).transpose(0, 1)  # (T, N, H)
        t1 = torch.stack([t[0].weight.T for t in self.towers])  # (T, H, H2)
        tb1 = torch.stack([t[0].bias for t in self.towers]).unsqueeze(1)  # (T, 1, H2)
        t2 = torch.stack([t[2].weight.T for t in self.towers])  # (T, H2, 1)
        tb2 = torch.stack([t[2].bias for t in self.towers]).unsqueeze(1)  # (T, 1, 1)
        top = self.towers[0][1](torch.baddbmm(tb1, mixed, t1))  # (T, N, H2)
        return torch.baddbmm(tb2, top, t2).squeeze(-1).T  # (N, T)

    def _attention_logits(self, cand: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        """The attention MLP's score of each history token for each candidate: (N, D) and
        (B, L, D) with B in (1, N) -> (N, L).

        The MLP's first layer reads [q, t, q*t, q-t]; it is linear, so it splits into a
        per-candidate term, a per-token term and a bilinear term, computed without building
        the (N, L, 4D) input. With one shared history (serving: one viewer, many candidates)
        the bilinear term is a single (N, D) x (D, L*H) product."""
        first, act, last = self.attention[0], self.attention[1], self.attention[2]
        D = cand.shape[-1]
        wq, wt, wp, wd = first.weight.split(D, dim=1)  # each (H, D)
        per_cand = cand @ (wq + wd).T  # (N, H)
        per_tok = tok @ (wt - wd).T  # (B, L, H)
        if tok.shape[0] == 1 and cand.shape[0] > 1:
            L, H = tok.shape[1], wp.shape[0]
            mixed = tok[0].T.unsqueeze(-1) * wp.T.unsqueeze(1)  # (D, L, H)
            bilinear = (cand @ mixed.reshape(D, L * H)).view(-1, L, H)  # (N, L, H)
        else:
            bilinear = (cand.unsqueeze(1) * tok) @ wp.T  # (N, L, H)
        hidden = act(per_cand.unsqueeze(1) + per_tok + bilinear + first.bias)  # (N, L, H)
        return last(hidden).squeeze(-1)  # (N, L)


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
