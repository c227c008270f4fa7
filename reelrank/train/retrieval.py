"""Training the two-tower retrieval model from viewers' token histories.

Every position of every history is a training target at once (the next positive video). An
epoch covers every token: a history longer than ``max_len`` is cut into consecutive windows,
each one training example. When the catalog is small enough for the batch's logits to fit
(``full_softmax_logits``), each target is scored against the whole catalog (plain
cross-entropy, which learns popularity as well as taste); otherwise against the batch's own
positives plus shared negatives sampled by popularity, with log-Q correction
(models/losses.py). Histories are packed once into flat arrays (``SequenceTable``) so that a
batch is a few numpy slices, not Python loops over events.

With ``validation_users`` > 0, the last positive of that many viewers is held out, Recall@100
and NDCG@10 of it are measured after each epoch (the whole catalog minus what the viewer saw
ranked), and training stops when NDCG@10 has not improved for ``patience`` epochs, keeping
the best epoch's weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from reelrank.types import Token
from reelrank.models.losses import full_softmax_loss, sampled_softmax_loss
from reelrank.models.retrieval import (
    FLAGS, HistoryInputs, ItemInputs, TwoTower, gap_bucket, view_bucket,
)
from reelrank.train.epochs import EpochReport, run_epochs
# The held-out split and what is chosen on it live in train/validation.py; importable from here.
from reelrank.train.validation import (  # noqa: F401
    POPULARITY_WEIGHTS, CoEngagementGraph, RecentEngagement, held_positives, hold_out_last_positives,
    prior_weights, validation_metrics,
)
from reelrank.types import Item

log = logging.getLogger(__name__)


@dataclass
class RetrievalConfig:
    dim: int = 64
    max_len: int = 50
    layers: int = 2
    heads: int = 2
    dropout: float = 0.3
    use_content: bool = True
    content_fields: tuple[str, ...] = ("creator", "sound", "tags", "duration", "words")
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    negatives: int = 2048
    negative_power: float = 0.75  # negatives ~ count^power
    epochs: int = 20
    time_budget_s: float | None = None
    seed: int = 0
    # Score each target against the whole catalog when (targets in the batch) x (catalog)
    # stays under this many logits; 0 always samples.
    full_softmax_logits: int = 40_000_000
    # ... and the catalog is at most this large: on 2 cores the whole-catalog product of the
    # 54,542-item Amazon Beauty catalog made an epoch take 9 minutes instead of 20 s sampled,
    # so the time budget stopped training after 2 epochs (benchmarks/results/eval-beauty-full).
    full_softmax_items: int = 20_000
    validation_users: int = 0  # viewers whose last positive is held out for early stopping
    patience: int = 2
    average: float | None = None  # decay of a moving average of the weights over the steps
    # With > 0, each validation viewer's last ``validation_tail`` of tokens (at least their last
    # positive) is held out, not only the last positive: early stopping still watches the
    # first held-out positive; the held-out positives as a set measure what a feed built at
    # the cut must hold over the viewer's coming sessions (``tail_recall@50``).
    validation_tail: float = 0.0
    # Each position learns to predict a positive drawn from the next ``future_targets`` tokens
    # (1: the next token only). A feed is judged over the viewer's coming sessions, not their
    # very next video: a wider window trains for that horizon (a "dense all-action" target).
    future_targets: int = 1
    # Cosine scores over a temperature (``TwoTower``); None: the plain inner product.
    temperature: float | None = None
    # What the popularity prior's weight is chosen on: "ndcg@10" (the next video near the top)
    # or "tail_recall@50"; pages of 50+ have their own weight, chosen on "tail_recall@50".
    popularity_criterion: str = "ndcg@10"
    # Choose the served score's co-engagement and trending weights on the held-out viewers too
    # (0 where a prior does not help them; train/validation.py).
    co_engagement: bool = True
    trending: bool = True

    def model_kwargs(self) -> dict:
        """The model's arguments, as a published version records them."""
        kwargs = {"dim": self.dim, "max_len": self.max_len, "layers": self.layers,
                  "heads": self.heads, "dropout": self.dropout, "use_content": self.use_content,
                  "content_fields": list(self.content_fields)}
        if self.temperature is not None:  # absent otherwise: versions stay readable by older builds
            kwargs["temperature"] = self.temperature
        return kwargs

    def model(self) -> TwoTower:
        return TwoTower(**self.model_kwargs())


@dataclass
class SequenceTable:
    """All histories as flat arrays: user u's tokens are ``[offsets[u], offsets[u+1])``."""

    user_ids: list[str]
    offsets: np.ndarray  # (U+1,) int64
    item: np.ndarray  # (T,) int64 catalog index
    view: np.ndarray  # (T,) int64
    flags: np.ndarray  # (T, F) float32
    gap: np.ndarray  # (T,) int64
    positive: np.ndarray  # (T,) bool
    ts: np.ndarray  # (T,) int64 ms: when each token happened

    @classmethod
    def from_tokens(cls, histories: Mapping[str, Sequence[Token]],
                    item_index: Mapping[str, int]) -> "SequenceTable":
        user_ids, offsets = [], [0]
        item, view, flags, gap, positive, ts = [], [], [], [], [], []
        for user, toks in histories.items():
            prev = None
            kept = 0
            for t in toks:
                idx = item_index.get(t.item_id)
                if idx is None:
                    continue
                item.append(idx)
                kind = "play" if t.event_type == "long_view" else t.event_type
                view.append(view_bucket(kind, t.watch_ratio))
                flags.append([getattr(t, f) for f in FLAGS])
                gap.append(gap_bucket(t.ts - prev) if prev is not None else 0)
                positive.append(t.positive)
                ts.append(t.ts)
                prev = t.ts
                kept += 1
            user_ids.append(user)
            offsets.append(offsets[-1] + kept)
        return cls(user_ids, np.asarray(offsets, dtype=np.int64),
                   np.asarray(item, dtype=np.int64), np.asarray(view, dtype=np.int64),
                   np.asarray(flags, dtype=np.float32).reshape(-1, len(FLAGS)),
                   np.asarray(gap, dtype=np.int64), np.asarray(positive, dtype=bool),
                   np.asarray(ts, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.user_ids)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def _future_targets(self, s: int, end: int, last: int, future: int,
                        rng: np.random.Generator) -> np.ndarray:
        """For each input token i in [s, end-1): the item of a positive token drawn uniformly
        from (i, min(i + future, last - 1)], or -1 where that span holds no positive."""
        pos = s + 1 + np.flatnonzero(self.positive[s + 1:last])  # positive token indices
        inputs = np.arange(s, end - 1)
        lo = np.searchsorted(pos, inputs, side="right")
        hi = np.searchsorted(pos, np.minimum(inputs + future, last - 1), side="right")
        count = hi - lo
        pick = lo + np.floor(rng.random(len(inputs)) * count).astype(np.int64)
        out = np.full(len(inputs), -1, dtype=np.int64)
        has = count > 0
        out[has] = self.item[pos[pick[has]]]
        return out

    def window(self, users: np.ndarray, max_len: int, ends: np.ndarray | None = None,
               with_targets: bool = True, future: int = 1, reach: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> tuple[HistoryInputs, torch.Tensor | None]:
        """Left-padded inputs for each user's tokens before ``ends`` (default: all of them);
        with targets, position p's target is the next token's item if it is positive, else -1.
        With ``future`` > 1 it is a positive drawn (with ``rng``) from the next ``future``
        tokens before ``reach`` (per user, counted from their first token; default ``ends``),
        -1 where they hold none."""
        B = len(users)
        items = np.full((B, max_len), -1, dtype=np.int64)
        view = np.zeros((B, max_len), dtype=np.int64)
        flags = np.zeros((B, max_len, self.flags.shape[1]), dtype=np.float32)
        gap = np.zeros((B, max_len), dtype=np.int64)
        targets = np.full((B, max_len), -1, dtype=np.int64) if with_targets else None
        for b, u in enumerate(users):
            start, stop = self.offsets[u], self.offsets[u + 1]
            end = stop if ends is None else start + ends[b]
            if with_targets:
                # Inputs are tokens [s, end-1), targets the tokens [s+1, end).
                s = max(start, end - 1 - max_len)
                n = end - 1 - s
                if n <= 0:
                    continue
                if future > 1:
                    last = end if reach is None else start + reach[b]
                    targets[b, max_len - n:] = self._future_targets(s, end, last, future, rng)
                else:
                    nxt = slice(s + 1, end)
                    targets[b, max_len - n:] = np.where(self.positive[nxt], self.item[nxt], -1)
                src = slice(s, end - 1)
            else:
                s = max(start, end - max_len)
                n = end - s
                if n <= 0:
                    continue
                src = slice(s, end)
            items[b, max_len - n:] = self.item[src]
            view[b, max_len - n:] = self.view[src]
            flags[b, max_len - n:] = self.flags[src]
            gap[b, max_len - n:] = self.gap[src]
        h = HistoryInputs(torch.from_numpy(items), torch.from_numpy(view),
                          torch.from_numpy(flags), torch.from_numpy(gap))
        return h, (torch.from_numpy(targets) if with_targets else None)


TrainReport = EpochReport  # what train_retrieval returns


def encode_catalog(model: TwoTower, items: Sequence[Item]) -> ItemInputs:
    """Admit the catalog's ids into the model's tables, then encode every item."""
    model.items.observe(items)
    return model.items.encode_items(items)


def item_matrix(model: TwoTower, catalog: ItemInputs, chunk: int = 65536) -> torch.Tensor:
    """(I, D) vectors of the whole catalog, in inference mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model.item_vectors(catalog[torch.arange(s, min(s + chunk, len(catalog)))])
                         for s in range(0, len(catalog), chunk)])
    model.train(was_training)
    return out


def user_matrix(model: TwoTower, table: SequenceTable, users: np.ndarray, items: torch.Tensor,
                max_len: int, chunk: int = 1024) -> torch.Tensor:
    """(len(users), D) vectors after each user's whole history, in inference mode."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(users), chunk):
            h, _ = table.window(users[s:s + chunk], max_len, with_targets=False)
            out.append(model.user_vectors(h, items))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, items.shape[1]))


def train_retrieval(model: TwoTower, catalog: ItemInputs, table: SequenceTable,
                    cfg: RetrievalConfig, *, progress: bool = True,
                    evaluate: Callable[[TwoTower, int], dict] | None = None,
                    on_progress: Callable[[float], None] | None = None) -> TrainReport:
    """Train in place; ``evaluate(model, epoch)`` runs after each epoch when given (else, with
    ``cfg.validation_users``, the held-out last positives are measured and drive early
    stopping)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_items = len(catalog)
    ends = np.diff(table.offsets).copy()  # per user: tokens used for training
    monitor = None
    if evaluate is None and cfg.validation_users > 0:
        held = hold_out_last_positives(table, cfg.validation_users, rng, cfg.validation_tail)
        if len(held[0]):
            ends[held[0]] = held[1]
            evaluate = lambda m, _epoch: validation_metrics(m, catalog, table, held, cfg.max_len)
            monitor = "ndcg@10"
    counts = np.bincount(table.item[table.positive], minlength=n_items).astype(np.float64)
    q = (counts + 1.0) ** cfg.negative_power
    q /= q.sum()
    log_q = torch.from_numpy(np.log(q)).float()
    users, stops = _windows(ends, cfg.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def loss(batch: np.ndarray) -> torch.Tensor | None:
        width = int(min(cfg.max_len, stops[batch].max() - 1))
        h, targets = table.window(users[batch], width, ends=stops[batch],
                                  future=cfg.future_targets, reach=ends[users[batch]], rng=rng)
        valid = targets >= 0
        if not valid.any():
            return None
        if (n_items <= cfg.full_softmax_items
                and int(valid.sum()) * n_items <= cfg.full_softmax_logits):
            return _full_loss(model, catalog, h, targets, valid)
        negs = torch.from_numpy(rng.choice(n_items, size=cfg.negatives, p=q))
        return _step_loss(model, catalog, h, targets, valid, negs, log_q, n_items)

    lengths = np.minimum(stops, cfg.max_len + 1)
    report = run_epochs(model, opt, epochs=cfg.epochs,
                        steps_per_epoch=max(1, math.ceil(len(users) / cfg.batch_size)),
                        batches=lambda epoch: _length_buckets(np.arange(len(users)), lengths,
                                                              cfg.batch_size, rng),
                        loss=loss, report=TrainReport(config=asdict(cfg)),
                        time_budget_s=cfg.time_budget_s, name="retrieval", progress=progress,
                        on_progress=on_progress, evaluate=evaluate, monitor=monitor,
                        patience=cfg.patience, average=cfg.average)
    if monitor is not None:
        # Popularity as the training part knew it: without the held-out positives.
        log_pop = np.log1p(counts - np.bincount(held_positives(table, held), minlength=n_items))
        graph = CoEngagementGraph(table, ends, n_items) if cfg.co_engagement else None
        chosen = prior_weights(model, catalog, table, held, cfg.max_len, log_pop,
                               RecentEngagement(table, ends, n_items), graph,
                               {"weight": cfg.popularity_criterion, "weight@50": "tail_recall@50"},
                               trending=cfg.trending, cache={})
        report.popularity = chosen["popularity"]
        report.co_engagement = chosen.get("co_engagement")
        report.trending = chosen.get("trending")
    return report


def _windows(ends: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(user, end) of every training window, ``end`` counted in tokens from the start of the
    user's history: each history's first ``ends[u]`` tokens cut from the newest backwards into
    windows of ``max_len`` targets (plus one input token before them), so every token is a
    target once per epoch."""
    users, stops = [], []
    for u, n in enumerate(ends.tolist()):
        end = n
        while end >= 2:
            users.append(u)
            stops.append(end)
            end -= max_len
    users_arr = np.asarray(users, dtype=np.int64)
    return users_arr, np.asarray(stops, dtype=np.int64)


def _full_loss(model: TwoTower, catalog: ItemInputs, h: HistoryInputs, targets: torch.Tensor,
               valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each target over the whole catalog."""
    vec = model.item_vectors(catalog)  # (I, D)
    out = model.users(h, vec)  # (B, L, D)
    return full_softmax_loss(model.scaled(out[valid]), vec, targets[valid])


def _length_buckets(users: np.ndarray, lengths: np.ndarray, batch_size: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of users with similar history lengths, in random order: most histories are
    short, and padding every batch to the longest one would multiply the transformer's work."""
    order = users[np.lexsort((rng.random(len(users)), lengths[users]))]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _step_loss(model: TwoTower, catalog: ItemInputs, h: HistoryInputs, targets: torch.Tensor,
               valid: torch.Tensor, negs: torch.Tensor, log_q: torch.Tensor,
               n_items: int) -> torch.Tensor:
    """Encode only the items this batch touches, then the sampled softmax over
    [the batch's positives, the sampled negatives]."""
    hist_items = h.items[h.items >= 0]
    positives = torch.unique(targets[valid])  # (P,)
    need = torch.unique(torch.cat([hist_items, positives, negs]))  # (K,)
    where = torch.full((n_items,), -1, dtype=torch.long)
    where[need] = torch.arange(len(need))
    vec = model.item_vectors(catalog[need])  # (K, D)
    local = HistoryInputs(torch.where(h.items >= 0, where[h.items.clamp(min=0)], h.items),
                          h.view, h.flags, h.gap)
    out = model.users(local, vec)  # (B, L, D)
    u = model.scaled(out[valid])  # (N, D)
    cand_ids = torch.cat([positives, negs])  # (C,)
    cand_vec = vec[where[cand_ids]]  # (C, D)
    target_idx = torch.searchsorted(positives, targets[valid])  # (N,) index into positives
    return sampled_softmax_loss(u, target_idx, cand_vec, cand_ids, log_q[cand_ids])
