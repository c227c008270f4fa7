"""Training the multi-task ranker from ``RankingRow``s (features.ranking_rows).

Rows are packed once into tensors (``RankingTable``); a batch encodes only the videos it
touches. Every task is a binary cross-entropy on its head's logit; ``watch_time``'s target is
the quantile of the view's watch time among training views in the same duration bucket.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from reelrank.features import DENSE_FEATURES, RankingRow
from reelrank.models.vocabulary import PAD_ROW
from reelrank.models.ranker import CONTEXT_FIELDS, TASKS, RankInputs, Ranker
from reelrank.models.retrieval import (
    FLAGS, HistoryInputs, ItemInputs, N_DURATION_BUCKETS, duration_bucket, gap_bucket,
    view_bucket,
)
from reelrank.train.epochs import EpochReport, run_epochs
from reelrank.types import Item

log = logging.getLogger(__name__)


@dataclass
class RankerConfig:
    dim: int = 32
    experts: int = 4
    expert_dim: int = 64
    history_len: int = 30
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-6
    epochs: int = 1
    time_budget_s: float | None = None
    task_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in TASKS})
    # Weight of a pairwise loss between rows of the same viewer (the feed orders one viewer's
    # candidates). Chosen where a server ranks: with the live state following every event
    # (benchmarks/results/served-days.md). On KuaiRand's four test days, requests carrying
    # their context, a ranker trained one epoch: it lifts the long-view head's GAUC from 0.606
    # to 0.661 and the like head's from 0.605 to 0.634; without it the live state's fresh
    # features make the heads worse than the cut-off's stale ones. Its cost: the heads are no
    # longer calibrated across viewers (AUC 0.69 -> 0.55), and the served feed's Recall@50 of
    # the day's long views falls by 0.004 (0.198 -> 0.195). Ranked from the cut-off's state
    # alone (no test event in the live state, as ``reelrank eval`` ranks) it lowers the heads
    # instead (long view 0.636 -> 0.620, like 0.655 -> 0.624, with context), which is why that
    # protocol, not how a server serves, had it off.
    pairwise_weight: float = 3.0
    # Share of training rows whose each context field (device, region, source) is hidden, as
    # a request that does not send it: the network then knows what "unknown" looks like instead
    # of meeting an all-zero context for the first time at serving (``POST /v1/rank`` with no
    # traffic source, say).
    context_dropout: float = 0.0
    # The video's own learned vector beside its content (else content only). Off: a vector
    # learned for each video over the training days ages over the days served after them. As
    # `reelrank train` trains, with the linear part and the average on, KuaiRand's 3-day split
    # (cut-off 04-28, 3 seeds) gives long-view head 0.6995 -> 0.7047, like 0.6523 -> 0.6597
    # without it; the 2-day split (cut-off 04-29) is even (0.6995 / 0.6968 -> 0.6996 / 0.6942)
    # (benchmarks/results/ranker-wide-average.md).
    item_id: bool = False
    dropout: float = 0.0  # on the network's hidden layers
    # A linear part per task beside the network, over the request's context and the dense
    # counters, and the weights kept being a moving average over the training steps (decay
    # 0.99; over a short run the ramp of ``WeightAverage`` makes it an average of the last
    # few dozen steps). Chosen on KuaiRand's validation split (cut-off 04-29, 3 training seeds,
    # the replay with the live state following the events): like head GAUC 0.675 -> 0.697 with
    # one epoch, 0.691 -> 0.697 as ``reelrank train`` trains; long-view head +0.002 to +0.005;
    # the like head's spread over the seeds 0.64-0.73 -> 0.69-0.70
    # (benchmarks/results/ranker-wide-average.md).
    wide: bool = True
    average: float | None = 0.99
    seed: int = 0
    patience: int = 1  # epochs without a better validation GAUC before training stops

    def model(self) -> Ranker:
        return Ranker(len(DENSE_FEATURES), self.dim, self.experts, self.expert_dim,
                      use_item_id=self.item_id, dropout=self.dropout, wide=self.wide)


class WatchQuantiles:
    """Per duration bucket, the sorted watch times of training views: watch time -> quantile."""

    def __init__(self, durations_ms: np.ndarray, watch_ms: np.ndarray):
        buckets = np.array([duration_bucket(int(d)) for d in durations_ms])
        self.tables = [np.sort(watch_ms[buckets == b]) for b in range(N_DURATION_BUCKETS)]

    def quantile(self, duration_ms: int, watch_ms: float) -> float:
        table = self.tables[duration_bucket(int(duration_ms))]
        if len(table) == 0:
            return 0.5
        lo = np.searchsorted(table, watch_ms, side="left")
        hi = np.searchsorted(table, watch_ms, side="right")
        return float((lo + hi) / 2 / len(table))  # mid-rank: ties share one quantile


@dataclass
class RankingTable:
    """Rows as tensors. ``item``/``hist_item`` index ``items`` (the catalog order)."""

    item: torch.Tensor  # (N,)
    hist_item: torch.Tensor  # (N, L) -1 = padding
    hist_view: torch.Tensor  # (N, L)
    hist_flags: torch.Tensor  # (N, L, F)
    hist_gap: torch.Tensor  # (N, L)
    context: torch.Tensor  # (N, C)
    hour: torch.Tensor  # (N,)
    dense: torch.Tensor  # (N, Fd)
    labels: torch.Tensor  # (N, T) float in [0, 1]
    user_ids: list[str]
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.item)

    def batch(self, idx: torch.Tensor, catalog: ItemInputs, n_items: int) -> RankInputs:
        """Inputs for rows ``idx``; encodes only the items these rows touch."""
        hist = self.hist_item[idx]
        need = torch.unique(torch.cat([self.item[idx], hist[hist >= 0]]))
        where = torch.full((n_items,), -1, dtype=torch.long)
        where[need] = torch.arange(len(need))
        items_local = catalog[need]
        return RankInputs(
            items=catalog[self.item[idx]],
            history=HistoryInputs(torch.where(hist >= 0, where[hist.clamp(min=0)], hist),
                                  self.hist_view[idx], self.hist_flags[idx], self.hist_gap[idx]),
            history_items=items_local, context=self.context[idx], hour=self.hour[idx],
            dense=self.dense[idx])


def build_table(rows: Sequence[RankingRow], model: Ranker, item_index: dict[str, int],
                quantiles: WatchQuantiles, history_len: int) -> RankingTable:
    """Pack rows; context ids are looked up in the model's tables (observe them first)."""
    N, L = len(rows), history_len
    hist_item = np.full((N, L), -1, dtype=np.int64)
    hist_view = np.zeros((N, L), dtype=np.int64)
    hist_flags = np.zeros((N, L, len(FLAGS)), dtype=np.float32)
    hist_gap = np.zeros((N, L), dtype=np.int64)
    labels = np.zeros((N, len(TASKS)), dtype=np.float32)
    for n, r in enumerate(rows):
        toks = [t for t in r.history if t.item_id in item_index][-L:]
        off = L - len(toks)
        prev = None
        for j, t in enumerate(toks):
            hist_item[n, off + j] = item_index[t.item_id]
            kind = "play" if t.event_type == "long_view" else t.event_type
            hist_view[n, off + j] = view_bucket(kind, t.watch_ratio)
            hist_flags[n, off + j] = [getattr(t, f) for f in FLAGS]
            hist_gap[n, off + j] = gap_bucket(t.ts - prev) if prev is not None else 0
            prev = t.ts
        ex = r.example
        labels[n] = [_label(ex, task, quantiles) for task in TASKS]
    context = torch.stack([
        model.context[j].lookup_rows([getattr(r.example, f) for r in rows])
        for j, f in enumerate(CONTEXT_FIELDS)], dim=1) if N else torch.zeros(
            (0, len(CONTEXT_FIELDS)), dtype=torch.long)
    return RankingTable(
        item=torch.tensor([item_index[r.example.item_id] for r in rows], dtype=torch.long),
        hist_item=torch.from_numpy(hist_item), hist_view=torch.from_numpy(hist_view),
        hist_flags=torch.from_numpy(hist_flags), hist_gap=torch.from_numpy(hist_gap),
        context=context, hour=torch.tensor([r.hour for r in rows], dtype=torch.long),
        # A model trained before a feature was appended reads the columns it knows.
        dense=torch.tensor([r.dense for r in rows], dtype=torch.float32).reshape(N, -1)[
            :, :model.dense_norm.num_features],
        labels=torch.from_numpy(labels), user_ids=[r.example.user_id for r in rows],
        ts=np.array([r.example.ts for r in rows], dtype=np.int64))


def _label(ex, task: str, quantiles: WatchQuantiles) -> float:
    if task == "watch_time":
        return quantiles.quantile(ex.duration_ms, ex.watch_ms) if ex.watch_ms > 0 else 0.0
    return float(ex.label(task))


def observe_context(model: Ranker, rows: Sequence[RankingRow]) -> None:
    for j, f in enumerate(CONTEXT_FIELDS):
        model.context[j].observe([getattr(r.example, f) for r in rows], 0.0)


RankerReport = EpochReport  # what train_ranker returns


def train_ranker(model: Ranker, catalog: ItemInputs, table: RankingTable, cfg: RankerConfig, *,
                 progress: bool = True,
                 on_progress: Callable[[float], None] | None = None,
                 evaluate: Callable[[Ranker, int], dict] | None = None,
                 monitor: str | None = None, epochs: int | None = None) -> RankerReport:
    """Train in place for ``epochs`` (default ``cfg.epochs``); with ``evaluate`` and
    ``monitor``, stop early on the validation rows (``run_epochs``)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = torch.tensor([cfg.task_weights.get(t, 1.0) for t in model.tasks])
    user_codes = torch.from_numpy(np.unique(np.array(table.user_ids), return_inverse=True)[1])

    def batches(epoch: int):
        order = _viewer_grouped_order(user_codes, gen)
        return (order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size))

    def loss(idx: torch.Tensor) -> torch.Tensor | None:
        if len(idx) < 2:  # batch norm needs two rows
            return None
        inputs = table.batch(idx, catalog, len(catalog))
        if cfg.context_dropout:
            hide = torch.rand(inputs.context.shape, generator=gen) < cfg.context_dropout
            inputs.context = inputs.context.masked_fill(hide, PAD_ROW)
        logits = model(inputs)  # (B, T)
        labels = table.labels[idx]  # (B, T)
        per_task = F.binary_cross_entropy_with_logits(
            logits, labels, reduction="none").mean(0)  # (T,)
        value = (per_task * weights).sum()
        if cfg.pairwise_weight:
            value = value + cfg.pairwise_weight * pairwise_loss(logits, labels,
                                                                user_codes[idx], weights)
        return value

    epochs = cfg.epochs if epochs is None else epochs
    return run_epochs(model, opt, epochs=epochs,
                      steps_per_epoch=max(1, math.ceil(len(table) / cfg.batch_size)),
                      batches=batches, loss=loss, report=RankerReport(config=asdict(cfg)),
                      time_budget_s=cfg.time_budget_s, name="ranker", progress=progress,
                      on_progress=on_progress, evaluate=evaluate, monitor=monitor,
                      patience=cfg.patience, average=cfg.average)


def _viewer_grouped_order(user_codes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rows in random order of viewers, each viewer's rows together (shuffled among
    themselves), so batches hold many same-viewer pairs for the pairwise loss."""
    viewer_rank = torch.randperm(int(user_codes.max()) + 1, generator=gen)[user_codes]
    jitter = torch.rand(len(user_codes), generator=gen)
    return torch.from_numpy(np.lexsort((jitter.numpy(), viewer_rank.numpy())))


def pairwise_loss(logits: torch.Tensor, labels: torch.Tensor, users: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """Mean logistic loss over same-viewer pairs whose labels differ, per task, weighted:
    softplus(-(s_i - s_j)) for every pair with y_i > y_j."""
    same = users.unsqueeze(0) == users.unsqueeze(1)  # (B, B)
    total = logits.new_zeros(())
    for t in range(logits.shape[1]):
        y, z = labels[:, t], logits[:, t]
        better = (y.unsqueeze(1) > y.unsqueeze(0)) & same  # (B, B): i better than j
        if better.any():
            diff = z.unsqueeze(1) - z.unsqueeze(0)  # (B, B)
            total = total + weights[t] * F.softplus(-diff[better]).mean()
    return total


def predict(model: Ranker, catalog: ItemInputs, table: RankingTable,
            batch_size: int = 4096) -> np.ndarray:
    """(N, T) probabilities for every row, in inference mode."""
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(table), batch_size):
            idx = torch.arange(s, min(s + batch_size, len(table)))
            out.append(torch.sigmoid(model(table.batch(idx, catalog, len(catalog)))).numpy())
    model.train(was)
    return np.concatenate(out) if out else np.zeros((0, len(model.tasks)), dtype=np.float32)


def encode_ranker_catalog(model: Ranker, items: Sequence[Item]) -> ItemInputs:
    model.items.observe(items)
    return model.items.encode_items(items)
