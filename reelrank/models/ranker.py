"""Multi-task ranker: one network predicts, for a viewer, a video and the context, every outcome
the value formula needs.

Inputs per candidate: the video (its own ``ItemTower``: ID + content), the context (device,
hour, region, traffic source), the viewer's recent history read through target attention (the
candidate attends over the history tokens, so "what in this viewer's past resembles this
video" is learned, DIN-style), and dense counters (viewer-creator affinity, the video's recent
engagement rates, the viewer's long-view rate on its topic, whether it was posted in the
request's region; see ``reelrank.features.DENSE_FEATURES``).

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
from reelrank.types import RANKER_TASKS

TASKS = RANKER_TASKS  # the heads, in order (types.py holds every task list)
CONTEXT_FIELDS = ("device", "region", "source")


@dataclass
class RankInputs:
    """A batch of N (viewer, candidate, context) rows."""

    items: ItemInputs | None  # N candidates (None when ``item_vectors`` is given)
    history: HistoryInputs  # (N, L) tokens; ``items`` index ``history_items``
    history_items: ItemInputs | None  # the items the history tokens refer to
    context: torch.Tensor  # (N, len(CONTEXT_FIELDS)) rows of the context tables, or (1, ...)
    hour: torch.Tensor  # (N,) 0..23, or (1,) when the whole batch is one request
    dense: torch.Tensor  # (N, F) float
    # (N, D) the item tower's output for ``items`` when the caller has it already (serving
    # caches it per model version); None: computed here.
    item_vectors: torch.Tensor | None = None
    history_vectors: torch.Tensor | None = None  # (H, D) the same for ``history_items``


class Ranker(nn.Module):
    def __init__(self, n_dense: int, dim: int = 32, experts: int = 4, expert_dim: int = 64,
                 tasks: Sequence[str] = TASKS, min_count: int = 1,
                 content_fields: Sequence[str] = ("creator", "sound", "tags", "duration", "words"),
                 use_item_id: bool = True, dropout: float = 0.0, wide: bool = False):
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
        # A linear part beside the network, per task, over the request's context and hour and
        # the dense counters: a video's own like rate reaches the like head's logit directly
        # instead of through the experts (starts at zero: the network alone).
        self.wide = None
        if wide:
            self.wide = nn.Linear(dim * (len(CONTEXT_FIELDS) + 1) + n_dense, len(self.tasks))
            nn.init.zeros_(self.wide.weight)
            nn.init.zeros_(self.wide.bias)

    def forward(self, x: RankInputs) -> torch.Tensor:
        """-> (N, T) logits, one column per task in ``self.tasks``."""
        cand = self.items(x.items) if x.item_vectors is None else x.item_vectors  # (N, D)
        hist_vecs = (self.items(x.history_items) if x.history_vectors is None
                     else x.history_vectors)  # (H, D)
        if hist_vecs.shape[0] == 0:  # nobody in the batch has a history: all padding
            hist_vecs = cand.new_zeros((1, cand.shape[1]))
        h = x.history  # (N, L), or (1, L) when every row shares one viewer's history
        pad = h.items < 0  # (B, L)
        if h.items.shape[0] == 1 and pad.any() and not pad.all():
            # One shared history: its padding positions get zero weight, so they are dropped
            # rather than computed (a viewer with 8 tokens costs 8 positions, not L).
            keep = ~pad[0]
            h = HistoryInputs(h.items[:, keep], h.view[:, keep], h.flags[:, keep], h.gap[:, keep])
            pad = pad[:, keep]
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
            return self._mmoe_batched(torch.cat(rows, dim=-1), shared, dense) + self._wide(
                shared, dense)
        N = cand.shape[0]
        features = torch.cat([*rows, shared.expand(N, -1), dense], dim=-1)  # (N, width)
        features = self.dropout(features)
        expert_out = torch.stack([e(features) for e in self.experts], dim=1)  # (N, E, H)
        logits = []
        for gate, tower in zip(self.gates, self.towers):
            g = torch.softmax(gate(features), dim=-1).unsqueeze(-1)  # (N, E, 1)
            logits.append(tower((g * expert_out).sum(1)))  # (N, 1)
        return torch.cat(logits, dim=-1) + self._wide(shared, dense)  # (N, T)

    def _wide(self, shared: torch.Tensor, dense: torch.Tensor) -> torch.Tensor | float:
        """The linear part's (N, T) logits, or 0 without one; the context's columns are
        computed once when the batch shares one request's context."""
        if self.wide is None:
            return 0.0
        S = shared.shape[1]
        w = self.wide.weight
        return torch.addmm(shared @ w[:, :S].T + self.wide.bias, dense, w[:, S:].T)

    def _mmoe_batched(self, rows: torch.Tensor, shared: torch.Tensor,
                      dense: torch.Tensor) -> torch.Tensor:
        """The experts, gates and towers above as a handful of batched products instead of
        ~40 small layer calls (the same arithmetic; used when no gradient is needed).

        The experts' and the gates' first layers read the same [rows (N, 3D), shared (B, 4D),
        dense (N, F)], so they are one product. With one request's context (B = 1) the shared
        columns' product is computed once and acts as a bias, which removes about half of the
        largest product. The stacked weights are kept until a parameter changes."""
        N, E, T = rows.shape[0], len(self.experts), len(self.tasks)
        f = self._fused_weights()
        act = self.experts[0][1]
        local = torch.cat([rows, dense], dim=-1)  # (N, 3D + F)
        bias = shared @ f["w_shared"] + f["b_first"]  # (B, E*H1 + T*E)
        if bias.shape[0] == 1:
            pre = torch.addmm(bias[0], local, f["w_local"])  # (N, E*H1 + T*E)
        else:
            pre = local @ f["w_local"] + bias
        split = f["expert_width"]
        hidden = act(pre[:, :split]).view(N, E, -1).transpose(0, 1)  # (E, N, H1)
        expert_out = act(torch.baddbmm(f["b2"], hidden, f["w2"])).transpose(0, 1)  # (N, E, H)
        # The gates' softmax over E by hand: torch.softmax over a last dimension of 4 is an
        # order of magnitude slower than these four element-wise passes.
        g = pre[:, split:].reshape(N, T, E)
        g = (g - g.amax(-1, keepdim=True)).exp_()
        gates = g.div_(g.sum(-1, keepdim=True))  # (N, T, E)
        mixed = torch.bmm(gates, expert_out).transpose(0, 1)  # (T, N, H)
        top = self.towers[0][1](torch.baddbmm(f["tb1"], mixed, f["t1"]))  # (T, N, H2)
        return torch.baddbmm(f["tb2"], top, f["t2"]).squeeze(-1).T  # (N, T)

    def _fused_weights(self) -> dict:
        """The MMoE's weights stacked for ``_mmoe_batched``, rebuilt when any of them changed
        (an optimizer step bumps a tensor's version counter)."""
        params = getattr(self, "_fused_params", None)
        if params is None:  # walking the module tree costs more than the check itself
            params = [p for m in (self.experts, self.gates, self.towers) for p in m.parameters()]
            self._fused_params = params
        key = tuple((id(p), p._version) for p in params)
        cached = getattr(self, "_fused_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        R = 3 * self.dim
        S = self.dim * (len(CONTEXT_FIELDS) + 1)
        first = torch.cat([e[0].weight for e in self.experts]
                          + [g.weight for g in self.gates]).detach()  # (E*H1 + T*E, W)
        f = {
            "expert_width": sum(e[0].out_features for e in self.experts),
            "w_local": torch.cat([first[:, :R], first[:, R + S:]], dim=1).T.contiguous(),
            "w_shared": first[:, R:R + S].T.contiguous(),  # (S, E*H1 + T*E)
            "b_first": torch.cat([e[0].bias for e in self.experts]
                                 + [g.bias for g in self.gates]).detach(),
            "w2": torch.stack([e[2].weight.T for e in self.experts]).detach(),  # (E, H1, H)
            "b2": torch.stack([e[2].bias for e in self.experts]).unsqueeze(1).detach(),
            "t1": torch.stack([t[0].weight.T for t in self.towers]).detach(),  # (T, H, H2)
            "tb1": torch.stack([t[0].bias for t in self.towers]).unsqueeze(1).detach(),
            "t2": torch.stack([t[2].weight.T for t in self.towers]).detach(),  # (T, H2, 1)
            "tb2": torch.stack([t[2].bias for t in self.towers]).unsqueeze(1).detach(),
        }
        self._fused_cache = (key, f)
        return f

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
        per_tok = tok @ (wt - wd).T  # (B, L, H)
        if tok.shape[0] == 1 and cand.shape[0] > 1:
            # Every term is linear in the candidate once the history is fixed, so the whole
            # first layer is one product and a bias: cand (N, D) x (D, L*H) + (L*H,).
            L, H = tok.shape[1], wp.shape[0]
            mixed = tok[0].T.unsqueeze(-1) * wp.T.unsqueeze(1) + (wq + wd).T.unsqueeze(1)
            bias = (per_tok[0] + first.bias).reshape(L * H)  # (L*H,)
            pre = torch.addmm(bias, cand, mixed.reshape(D, L * H)).view(-1, L, H)  # (N, L, H)
        else:
            per_cand = cand @ (wq + wd).T  # (N, H)
            bilinear = (cand.unsqueeze(1) * tok) @ wp.T  # (N, L, H)
            pre = per_cand.unsqueeze(1) + per_tok + bilinear + first.bias  # (N, L, H)
        return last(act(pre)).squeeze(-1)  # (N, L)


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
